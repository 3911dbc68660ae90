//! `require_hmac`: the request must carry a valid HMAC signature, by AWS Signature Version 4,
//! Version 2, or an operator-defined template. Options are tagged by scheme, so an option
//! of another scheme is refused where it is written.

use std::sync::Arc;
use std::time::Duration;

use portcullis_assertions::hmac::{Replay, RequireHmac, Scheme, SharedReplay};
use portcullis_assertions::{Assertion, VarRegistry};

use super::rate_limit::{ScopeSpec, StoreFailureSpec};
use super::{CompileStep, StepSite};
use crate::config::context::CompileContext;
use crate::config::values::{
    DurationSpec, HeaderNameSpec, HmacAlgorithmSpec, SignatureEncodingSpec,
};
use crate::config::yaml::Spanned;
use crate::store::once_markers::StoreOnceMarkers;
use crate::store::StoreUrl;

/// Largest request-time difference accepted when the policy says nothing.
const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(300);
/// Largest `max_skew` a policy may set: a longer window remembers too many signatures.
const MAX_SKEW_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Signatures remembered at once per key set, when the policy says nothing.
const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

scheme_tagged_enum! {
    /// Verify an HMAC signature. `scheme` chooses the options that apply.
    RequireHmacSpec {
        /// AWS Signature Version 4 (HMAC-SHA256, Authorization header or presigned URL).
        "aws-sigv4" => AwsSigv4(Sigv4VerifySpec),
        /// AWS Signature Version 2 (S3 REST, HMAC-SHA1, header or query form).
        "aws-sigv2" => AwsSigv2(Sigv2VerifySpec),
        /// An operator-defined string to sign.
        "template" => Template(TemplateVerifySpec),
    }
}

hmac_scheme_options! {
    Sigv4VerifySpec {
        /// Name of a key set under `keys:`.
        pub keys: Spanned<String>,
        /// The region the credential scope must name.
        pub region: String,
        /// The service the credential scope must name.
        pub service: String,
        /// Accept presigned URLs (X-Amz-Signature in the query). Default `true`.
        #[serde(default)]
        pub allow_presigned: Option<bool>,
        /// Sign the path as every AWS service but S3 does (dot segments and duplicate slashes
        /// normalised, the path as sent encoded once more). `false`: S3 style (kept as sent,
        /// encoded once). Default `true`.
        #[serde(default)]
        pub normalize_path: Option<bool>,
        /// Accept `x-amz-content-sha256: UNSIGNED-PAYLOAD`. Default `false`.
        #[serde(default)]
        pub allow_unsigned_payload: Option<bool>,
    } [replay]
}

hmac_scheme_options! {
    Sigv2VerifySpec {
        /// Name of a key set under `keys:`.
        pub keys: Spanned<String>,
        /// Accept the query form (AWSAccessKeyId, Expires, Signature). Default `true`.
        #[serde(default)]
        pub allow_query: Option<bool>,
    } [replay]
}

hmac_scheme_options! {
    TemplateVerifySpec {
        /// Name of a key set under `keys:`.
        pub keys: Spanned<String>,
    } [template replay]
}

/// The options every scheme has.
struct SharedOptions<'s> {
    keys: &'s Spanned<String>,
    max_skew: Option<&'s DurationSpec>,
    replay_protection: Option<bool>,
    replay_capacity: Option<usize>,
    replay_scope: Option<ScopeSpec>,
    replay_on_store_failure: Option<StoreFailureSpec>,
}

impl RequireHmacSpec {
    fn shared(&self) -> SharedOptions<'_> {
        let (RequireHmacSpec::AwsSigv4(Sigv4VerifySpec {
            keys,
            max_skew,
            replay_protection,
            replay_capacity,
            replay_scope,
            replay_on_store_failure,
            ..
        })
        | RequireHmacSpec::AwsSigv2(Sigv2VerifySpec {
            keys,
            max_skew,
            replay_protection,
            replay_capacity,
            replay_scope,
            replay_on_store_failure,
            ..
        })
        | RequireHmacSpec::Template(TemplateVerifySpec {
            keys,
            max_skew,
            replay_protection,
            replay_capacity,
            replay_scope,
            replay_on_store_failure,
            ..
        })) = self;
        SharedOptions {
            keys,
            max_skew: max_skew.as_ref(),
            replay_protection: *replay_protection,
            replay_capacity: *replay_capacity,
            replay_scope: *replay_scope,
            replay_on_store_failure: *replay_on_store_failure,
        }
    }

    fn scheme(&self, site: &StepSite<'_>, context: &mut CompileContext<'_>) -> Option<Scheme> {
        Some(match self {
            RequireHmacSpec::AwsSigv4(options) => Scheme::SigV4 {
                region: options.region.clone(),
                service: options.service.clone(),
                allow_presigned: options.allow_presigned.unwrap_or(true),
                normalize_path: options.normalize_path.unwrap_or(true),
            },
            RequireHmacSpec::AwsSigv2(options) => Scheme::SigV2 {
                allow_query: options.allow_query.unwrap_or(true),
            },
            RequireHmacSpec::Template(options) => {
                Scheme::Custom(options.template().compile(site, context)?)
            }
        })
    }
}

impl CompileStep for RequireHmacSpec {
    fn define_outputs(&self, registry: &mut VarRegistry) {
        registry.define("client.id");
        registry.define("hmac.key_id");
    }

    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        let shared = self.shared();
        let keys = context.hmac_key_set(shared.keys, &site.option_path("keys"))?;
        let scheme = self.scheme(site, context)?;
        let capacity = shared.replay_capacity.unwrap_or(DEFAULT_REPLAY_CAPACITY);
        if capacity == 0 {
            context.err(site.loc, site.path, "replay_capacity must be at least 1");
        }
        let max_skew = shared.max_skew.map_or(DEFAULT_MAX_SKEW, |skew| skew.0);
        if max_skew > MAX_SKEW_LIMIT {
            context.err(site.loc, site.path, "max_skew may be at most 7 days");
        }
        let replay = compile_replay(&shared, capacity.max(1), site, context)?;
        let allow_unsigned_payload = match self {
            RequireHmacSpec::AwsSigv4(options) => options.allow_unsigned_payload.unwrap_or(false),
            _ => false,
        };
        Some(Box::new(RequireHmac {
            scheme,
            keys,
            max_skew,
            replay,
            allow_unsigned_payload,
            clock: context.carry.wall_clock(),
            client_id: context.registry.define("client.id"),
            key_id_var: context.registry.define("hmac.key_id"),
            sigv4_keys: Default::default(),
        }))
    }
}

/// Where the step remembers signatures: this process's cache (kept across reloads), or the
/// state store's one-time markers (`replay_scope: cluster`).
fn compile_replay(
    shared: &SharedOptions<'_>,
    capacity: usize,
    site: &StepSite<'_>,
    context: &mut CompileContext<'_>,
) -> Option<Replay> {
    let protected = shared.replay_protection.unwrap_or(true);
    let names_redis = matches!(context.state_url, Some(StoreUrl::Redis(_)));
    let scope = shared.replay_scope.unwrap_or(if names_redis {
        ScopeSpec::Cluster
    } else {
        ScopeSpec::Local
    });
    let carry = context.carry;
    let local = || carry.replay_cache(&shared.keys.value, capacity);
    if !protected || scope == ScopeSpec::Local {
        if shared.replay_on_store_failure.is_some() {
            context.err(
                site.loc,
                &site.option_path("replay_on_store_failure"),
                "`replay_on_store_failure` applies to `replay_scope: cluster` only",
            );
        }
        return Some(if protected {
            Replay::Local(local())
        } else {
            Replay::Off
        });
    }
    let store = match (&context.state_url, &context.state_store) {
        (Some(_), Some(store)) => store.clone(),
        _ => {
            context.err(
                site.loc,
                &site.option_path("replay_scope"),
                "`replay_scope: cluster` keeps signatures in the state store: set `state: redis://HOST:PORT` (or `sqlite://FILE` for the processes of one host)",
            );
            return None;
        }
    };
    let fallback = (shared.replay_on_store_failure == Some(StoreFailureSpec::FailOpen)).then(local);
    Some(Replay::Shared(SharedReplay {
        markers: Arc::new(StoreOnceMarkers::new(store.once().clone())),
        namespace: shared.keys.value.clone(),
        fallback,
    }))
}
