//! `require_bearer`: an OAuth 2.0 bearer token (RFC 6750) with the given scopes, checked
//! against this gateway's token service, another issuer's published keys, or another
//! issuer's introspection endpoint (RFC 7662).

use std::sync::Arc;
use std::time::Duration;

use portcullis_assertions::bearer::{BearerVars, RequireBearer, ScopeMatch, TokenResolver};
use portcullis_assertions::{Assertion, VarRegistry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CompileStep, StepSite};
use crate::config::context::{is_http_url, CompileContext};
use crate::config::values::{algorithms, DurationSpec, JwtAlgorithmSpec, KeysFormatSpec};
use crate::config::yaml::Spanned;
use crate::oauth::introspection::IntrospectionResolver;
use crate::oauth::live::LiveTokens;
use crate::oauth::resolver::{LocalResolver, RemoteJwtResolver};

/// How long an active introspection answer is reused when the policy says nothing.
const DEFAULT_INTROSPECTION_CACHE: Duration = Duration::from_secs(30);
/// Least time between key fetches caused by unknown key ids, when the policy says nothing.
pub(crate) const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(10);
/// Clock skew allowed on another issuer's tokens when the policy says nothing.
pub(crate) const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeMatchSpec {
    All,
    Any,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequireBearerSpec {
    /// The realm named in `WWW-Authenticate`. Default: the service name.
    #[serde(default)]
    pub realm: Option<Spanned<String>>,
    /// Scopes the token must carry.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `all` (default): every listed scope; `any`: one of them.
    #[serde(default)]
    pub scope_match: Option<ScopeMatchSpec>,
    /// Accept `?access_token=` when there is no Authorization header (RFC 6750 §2.3; it leaks
    /// into logs). Default `false`: refused with 400 invalid_request.
    #[serde(default)]
    pub allow_query_token: Option<bool>,
    /// Validate another issuer's JWTs against its published keys instead of this gateway's tokens.
    #[serde(default)]
    pub issuer: Option<RemoteIssuerSpec>,
    /// Validate tokens at another issuer's RFC 7662 introspection endpoint instead.
    #[serde(default)]
    pub introspection: Option<IntrospectionSpec>,
}

/// A remote RFC 7662 introspection endpoint.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionSpec {
    /// The endpoint URL (http or https).
    pub url: Spanned<String>,
    /// The gateway's client id at that issuer.
    pub client_id: String,
    /// Name of the secret holding the gateway's client secret there.
    pub client_secret: Spanned<String>,
    /// Longest time an active answer is reused without asking again (never past the token's
    /// `exp`). A revocation at the issuer is seen after at most this long. Default `30s`; `0s`
    /// asks on every request.
    #[serde(default)]
    pub cache_ttl: Option<DurationSpec>,
}

/// Another issuer's JWT access tokens.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteIssuerSpec {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// Where it publishes its keys.
    pub keys_url: Spanned<String>,
    /// `jwks` (default) or `x509_map`.
    #[serde(default)]
    pub keys_format: Option<KeysFormatSpec>,
    /// The `aud` the tokens must name; absent: not checked.
    #[serde(default)]
    pub audience: Option<String>,
    /// Default `[RS256, ES256]`.
    #[serde(default)]
    pub algorithms: Option<Vec<JwtAlgorithmSpec>>,
    /// Clock skew allowed. Default `60s`.
    #[serde(default)]
    pub leeway: Option<DurationSpec>,
    /// Least time between two fetches caused by unknown key ids. Default `10s`.
    #[serde(default)]
    pub min_refresh_interval: Option<DurationSpec>,
}

impl CompileStep for RequireBearerSpec {
    fn define_outputs(&self, registry: &mut VarRegistry) {
        for variable in ["client.id", "token.sub", "token.scope"] {
            registry.define(variable);
        }
    }

    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        let path = site.options_path();
        let resolver: Arc<dyn TokenResolver> = match (&self.issuer, &self.introspection) {
            (Some(_), Some(_)) => {
                context.err(
                    site.loc,
                    &path,
                    "give `issuer:` (JWTs checked with its keys) or `introspection:` (RFC 7662), not both",
                );
                return None;
            }
            (None, Some(introspection)) => introspection.resolver(&path, context)?,
            (Some(remote), None) => remote.resolver(&path, context)?,
            (None, None) => match &context.token_service {
                Some(service) => Arc::new(LocalResolver {
                    service: service.clone(),
                }),
                // A token service that failed to compile has reported why already.
                None if context.token_service_declared => return None,
                None => {
                    context.err(
                        site.loc,
                        &path,
                        "require_bearer checks tokens of this gateway's token_service, and there is none: add `token_service:`, or give `issuer:` to check another issuer's JWTs",
                    );
                    return None;
                }
            },
        };
        let vars = BearerVars {
            client_id: context.registry.define("client.id"),
            subject: context.registry.define("token.sub"),
            scope: context.registry.define("token.scope"),
        };
        let realm = self
            .realm
            .as_ref()
            .map_or(context.service_name.as_str(), |realm| realm.value.as_str());
        let scope_match = match self.scope_match {
            Some(ScopeMatchSpec::Any) => ScopeMatch::Any,
            _ => ScopeMatch::All,
        };
        match RequireBearer::new(
            realm,
            self.scopes.clone(),
            scope_match,
            self.allow_query_token.unwrap_or(false),
            resolver,
            vars,
        ) {
            Ok(step) => Some(Box::new(step)),
            Err(e) => {
                let loc = self.realm.as_ref().map_or(site.loc, |realm| realm.loc);
                context.err(loc, &path, e);
                None
            }
        }
    }
}

impl IntrospectionSpec {
    fn resolver(
        &self,
        path: &str,
        context: &mut CompileContext<'_>,
    ) -> Option<Arc<dyn TokenResolver>> {
        if !is_http_url(&self.url.value) {
            context.err(
                self.url.loc,
                &format!("{path}.introspection.url"),
                format!("\"{}\" is not an http(s) URL", self.url.value),
            );
            return None;
        }
        let secret = context.secret(
            &self.client_secret,
            &format!("{path}.introspection.client_secret"),
        )?;
        let ttl = self
            .cache_ttl
            .as_ref()
            .map_or(DEFAULT_INTROSPECTION_CACHE, |ttl| ttl.0);
        Some(IntrospectionResolver::new(
            &self.url.value,
            &self.client_id,
            secret,
            ttl,
        ))
    }
}

impl RemoteIssuerSpec {
    fn resolver(
        &self,
        path: &str,
        context: &mut CompileContext<'_>,
    ) -> Option<Arc<dyn TokenResolver>> {
        let keys = context.remote_key_set(
            &self.keys_url,
            self.keys_format,
            self.min_refresh_interval
                .as_ref()
                .map_or(DEFAULT_MIN_REFRESH, |interval| interval.0),
            &format!("{path}.issuer.keys_url"),
        )?;
        Some(Arc::new(RemoteJwtResolver {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            algorithms: algorithms(self.algorithms.as_ref()),
            keys,
            leeway: self
                .leeway
                .as_ref()
                .map_or(DEFAULT_LEEWAY, |leeway| leeway.0)
                .as_secs(),
            cache: LiveTokens::default(),
        }))
    }
}
