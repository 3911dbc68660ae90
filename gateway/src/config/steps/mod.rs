//! Pipeline steps, one file per assertion kind. Each file holds the kind's policy options
//! (the spec type serde reads), the variables it sets and how it is built ([`CompileStep`]).
//! The registry below ties a kind's name to its options: adding an assertion is one new
//! file here, one registry line, its runtime module in `portcullis_assertions`, docs and
//! tests (see `docs/architecture.md`, "Adding an assertion").
//!
//! This module also compiles the request and response lists themselves: a top-level `all`
//! is flattened, composites may only hold steps that decide on heads, and a step placed on
//! a side it cannot run on is refused.

/// Declares an enum of options tagged by `scheme` (`scheme: aws-sigv4` beside the options
/// of that scheme), so an option of another scheme is refused where it is written. Serde
/// reads it through the YAML deserializer's positioned tagging (`TAGGED_PREFIX`); it is
/// written and described as serde's internally tagged form.
macro_rules! scheme_tagged_enum {
    ($(#[$meta:meta])* $name:ident { $( $(#[$doc:meta])* $scheme:literal => $variant:ident($options:ty), )* }) => {
        $(#[$meta])*
        #[derive(Debug, serde::Deserialize)]
        #[serde(rename = "$portcullis::tagged:scheme")]
        pub enum $name {
            $( $(#[$doc])* #[serde(rename = $scheme)] $variant($options), )*
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                #[derive(serde::Serialize)]
                #[serde(tag = "scheme")]
                enum Tagged<'a> {
                    $( #[serde(rename = $scheme)] $variant(&'a $options), )*
                }
                match self {
                    $( Self::$variant(options) => Tagged::$variant(options), )*
                }
                .serialize(serializer)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }

            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                #[derive(schemars::JsonSchema)]
                #[serde(tag = "scheme")]
                #[allow(dead_code)]
                enum Tagged {
                    $( $(#[$doc])* #[serde(rename = $scheme)] $variant($options), )*
                }
                Tagged::json_schema(generator)
            }
        }
    };
}

mod composite;
mod headers;
mod inject_oauth_token;
#[macro_use]
mod hmac_template;
mod ip;
mod mask_pan;
mod quota;
mod rate_limit;
mod require_api_key;
mod require_bearer;
mod require_hmac;
mod require_ip_identity;
mod require_saml;
mod shadow;
mod sign_hmac;
mod validate_json;

use std::sync::Arc;

use portcullis_assertions::shadow::Shadow;
use portcullis_assertions::{Assertion, VarRegistry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::context::{CompileContext, Side};
use crate::config::yaml::{Lenient, Location, Spanned};

pub(crate) use require_bearer::{DEFAULT_LEEWAY, DEFAULT_MIN_REFRESH};
pub use shadow::{StepModeSpec, StepSpec};

/// What each assertion kind's options provide.
pub(crate) trait CompileStep {
    /// The lists the kind may sit in.
    fn sides(&self) -> Sides {
        Sides::RequestOnly
    }

    /// Declares the variables the step can set. Runs for every step of every service before
    /// any step is built, so a template anywhere may name a variable set anywhere.
    fn define_outputs(&self, _registry: &mut VarRegistry) {}

    /// Builds the step. Every problem goes to `context` with its position; `None` when the
    /// step could not be built (already reported).
    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>>;
}

/// The lists a kind may be placed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sides {
    /// It checks or changes requests only.
    RequestOnly,
    /// It works on requests and responses alike.
    Both,
}

/// Where a step is being built: for its messages.
pub(crate) struct StepSite<'a> {
    pub(crate) kind: &'static str,
    pub(crate) loc: Location,
    /// The step in the document: `services[0].request[2]`.
    pub(crate) path: &'a str,
    pub(crate) side: Side,
}

impl StepSite<'_> {
    /// The document path of the step's own options: `services[0].request[2].require_hmac`.
    pub(crate) fn options_path(&self) -> String {
        format!("{}.{}", self.path, self.kind)
    }

    /// The document path of one option: `services[0].request[2].require_hmac.keys`.
    pub(crate) fn option_path(&self, option: &str) -> String {
        format!("{}.{}.{option}", self.path, self.kind)
    }
}

/// Declares [`AssertionSpec`], the kinds a step can be, from one line per kind.
macro_rules! assertion_kinds {
    ($( $(#[$doc:meta])* $name:literal => $variant:ident($spec:ty), )*) => {
        /// One step of a pipeline, written `- name: options`.
        #[derive(Debug, Deserialize, Serialize, JsonSchema)]
        pub enum AssertionSpec {
            $( $(#[$doc])* #[serde(rename = $name)] $variant($spec), )*
        }

        impl AssertionSpec {

            /// The kind's name as a policy writes it.
            pub(crate) fn kind(&self) -> &'static str {
                match self { $( Self::$variant(_) => $name, )* }
            }

            /// The kind's options, which know how to build the step.
            pub(crate) fn options(&self) -> &dyn CompileStep {
                match self { $( Self::$variant(options) => options, )* }
            }
        }
    };
}

assertion_kinds! {
    /// Require an API key in a header.
    "require_api_key" => RequireApiKey(require_api_key::RequireApiKeySpec),
    /// Only these client addresses (CIDR list) pass.
    "allow_ip" => AllowIp(ip::AllowIpSpec),
    /// These client addresses (CIDR list) are refused.
    "deny_ip" => DenyIp(ip::DenyIpSpec),
    /// Set a header (request side: to the upstream; response side: to the client).
    "set_header" => SetHeader(headers::SetHeaderSpec),
    /// Remove headers (list of names).
    "remove_header" => RemoveHeader(headers::RemoveHeaderSpec),
    /// The request body must be well-formed JSON.
    "validate_json" => ValidateJson(validate_json::ValidateJsonSpec),
    /// The request must carry a valid HMAC signature (AWS SigV4, SigV2, or a custom template).
    "require_hmac" => RequireHmac(require_hmac::RequireHmacSpec),
    /// Require a signed SAML 2.0 assertion (`Authorization: SAML <base64(deflate(xml))>`) from a trusted issuer.
    "require_saml" => RequireSaml(require_saml::RequireSamlSpec),
    /// Sign the request going upstream with a key of a key set.
    "sign_hmac" => SignHmac(sign_hmac::SignHmacSpec),
    /// Mask card numbers (PANs) in response bodies.
    "mask_pan" => MaskPan(mask_pan::MaskPanSpec),
    /// Require an OAuth 2.0 bearer token (RFC 6750) with the given scopes.
    "require_bearer" => RequireBearer(require_bearer::RequireBearerSpec),
    /// Count requests per key against named rates (GCRA); over a limit: 429 with Retry-After and the RateLimit fields.
    "rate_limit" => RateLimit(rate_limit::RateLimitSpec),
    /// Calls per hour/day/week/month per key, counted in the state store; used up: 429 quota-exhausted.
    "quota" => Quota(quota::QuotaSpec),
    /// The client address must belong to an active user of the identity table (the userauth API), optionally in one of `groups` and on one of `interfaces`.
    "require_ip_identity" => RequireIpIdentity(require_ip_identity::RequireIpIdentitySpec),
    /// Send the request upstream with the access token of a provider session the gateway holds (`outbound_broker:`), after the caller's own credentials were removed.
    "inject_oauth_token" => InjectOAuthToken(inject_oauth_token::InjectOAuthTokenSpec),
    /// Every step must pass, in order.
    "all" => All(composite::AllSpec),
    /// At least one step must pass; the failure lists every branch's reason.
    "any" => Any(composite::AnySpec),
}

/// A request or response list as written: each step positioned, a broken one kept as `None`
/// (already reported) so the rest are still checked.
pub(crate) type StepList = [Lenient<Spanned<StepSpec>>];

/// Declares the variables every step of `steps` (and the steps inside composites) can set.
pub(crate) fn define_outputs(steps: &StepList, registry: &mut VarRegistry) {
    for step in steps.iter().filter_map(|step| step.0.as_ref()) {
        step.value.step.options().define_outputs(registry);
    }
}

/// Whether a list holds a step that counts in or reads the state store (`quota`,
/// `require_ip_identity`), anywhere in it: the store is then opened even if the policy has
/// no `state:` or token service.
pub(crate) fn counts_in_store(steps: &StepList) -> bool {
    steps
        .iter()
        .filter_map(|step| step.0.as_ref())
        .any(|step| match &step.value.step {
            AssertionSpec::Quota(_)
            | AssertionSpec::RequireIpIdentity(_)
            | AssertionSpec::InjectOAuthToken(_) => true,
            AssertionSpec::All(inner) => counts_in_store(&inner.0),
            AssertionSpec::Any(inner) => counts_in_store(&inner.0),
            _ => false,
        })
}

/// The files the steps of `steps` read (certificate bundles, SAML metadata), anywhere in the list: the
/// gatherer reads them before anything is compiled.
pub(crate) fn named_files<'s>(
    steps: &'s StepList,
    out: &mut Vec<(&'s str, crate::files::FileKind)>,
) {
    for step in steps.iter().filter_map(|step| step.0.as_ref()) {
        match &step.value.step {
            AssertionSpec::RequireSaml(options) => out.extend(options.files()),
            AssertionSpec::RequireApiKey(options) => out.extend(options.files()),
            AssertionSpec::All(inner) => named_files(&inner.0, out),
            AssertionSpec::Any(inner) => named_files(&inner.0, out),
            _ => {}
        }
    }
}

/// Compiles a pipeline's list. An `all` outside any `any` is flattened into the list: the
/// pipeline runs every phase of every step, which a composite does not.
pub(crate) fn compile_steps(
    steps: &StepList,
    path: &str,
    side: Side,
    context: &mut CompileContext<'_>,
) -> Vec<Box<dyn Assertion>> {
    compile_list(steps, path, side, None, context)
}

/// Compiles a list; `composite` names the `all` or `any` it sits in, whose steps must
/// decide on heads only (see `portcullis_assertions::composite`).
pub(super) fn compile_list(
    steps: &StepList,
    path: &str,
    side: Side,
    composite: Option<&str>,
    context: &mut CompileContext<'_>,
) -> Vec<Box<dyn Assertion>> {
    let mut compiled_steps = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let Some(step) = step.0.as_ref() else {
            continue;
        };
        let step_path = format!("{path}[{index}]");
        let shadowed = shadow::is_shadowed(&step.value, &step_path, composite, context);
        if let (AssertionSpec::All(inner), None) = (&step.value.step, composite) {
            if context.any_depth == 0 && !inner.0.is_empty() {
                // Flattened: a shadowed `all` shadows each of its steps.
                let outer = std::mem::replace(&mut context.shadow.inherited, shadowed);
                compiled_steps.extend(compile_list(
                    &inner.0,
                    &format!("{step_path}.all"),
                    side,
                    None,
                    context,
                ));
                context.shadow.inherited = outer;
                continue;
            }
        }
        let Some(compiled) = compile_step(&step.value.step, step.loc, &step_path, side, context)
        else {
            continue;
        };
        let beyond = compiled.phases().beyond_heads();
        match composite {
            Some(kind) if !beyond.is_empty() => {
                let list = side.list_name();
                context.err(
                    step.loc,
                    &step_path,
                    format!(
                        "{} cannot sit inside `{kind}`: it {}, and `{kind}` decides on request and response heads only (which branch's work would apply?); put it in the {list} list itself",
                        compiled.kind(),
                        beyond.join(" and ")
                    ),
                );
            }
            _ if shadowed => compiled_steps.push(shadow_of(compiled, &step_path, context)),
            _ => compiled_steps.push(compiled),
        }
    }
    compiled_steps
}

/// Wraps a compiled step in shadow mode, named for metrics and logs by its place in the
/// service (`request[1].require_api_key`).
fn shadow_of(
    compiled: Box<dyn Assertion>,
    step_path: &str,
    context: &mut CompileContext<'_>,
) -> Box<dyn Assertion> {
    let in_service = step_path
        .split_once('.')
        .map_or(step_path, |(_, rest)| rest);
    let label: Arc<str> = Arc::from(format!("{in_service}.{}", compiled.kind()));
    let slot = u16::try_from(context.shadow.steps.len()).unwrap_or(u16::MAX);
    context.shadow.steps.push(label.clone());
    Box::new(Shadow::new(compiled, label, slot))
}

/// Builds one step after checking it sits on a side it can run on.
fn compile_step(
    step: &AssertionSpec,
    loc: Location,
    path: &str,
    side: Side,
    context: &mut CompileContext<'_>,
) -> Option<Box<dyn Assertion>> {
    let options = step.options();
    let kind = step.kind();
    if side == Side::Response && options.sides() == Sides::RequestOnly {
        context.err(
            loc,
            path,
            format!("{kind} checks requests; move it to the service's request: list"),
        );
        return None;
    }
    let site = StepSite {
        kind,
        loc,
        path,
        side,
    };
    options.compile(&site, context)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::config::spec::ConfigSpec;
    use crate::config::{parse_text, Diagnostic};

    fn problems(steps: &str) -> Vec<String> {
        let text = format!(
            "services:\n  - name: s\n    match: {{ path: / }}\n    upstream: 127.0.0.1:1\n    request:\n{steps}"
        );
        let mut errors: Vec<Diagnostic> = Vec::new();
        let file: Arc<Path> = Arc::from(Path::new("p.yaml"));
        let _ = parse_text::<ConfigSpec>(file, &text, &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn an_option_of_another_scheme_is_refused_where_it_is_written() {
        let found = problems(
            "      - require_hmac:\n          scheme: aws-sigv4\n          keys: k\n          region: r\n          service: s\n          allow_query: false\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("p.yaml:11:11: unknown field \"allow_query\""),
            "{found:?}"
        );
    }

    #[test]
    fn the_scheme_is_not_reported_after_a_misspelt_option() {
        let found = problems("      - require_hmac: {bogus: 1, scheme: aws-sigv2, keys: k}\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("unknown field \"bogus\""), "{found:?}");
    }

    #[test]
    fn a_scheme_is_required_and_must_be_known() {
        let missing = problems("      - require_hmac:\n          keys: k\n");
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].contains("missing field \"scheme\""),
            "{missing:?}"
        );
        let unknown = problems("      - sign_hmac:\n          scheme: aws-sigv5\n          keys: k\n          access_key: a\n");
        assert_eq!(unknown.len(), 1, "{unknown:?}");
        assert!(unknown[0].starts_with("p.yaml:7:19: "), "{unknown:?}");
        assert!(
            unknown[0].contains("aws-sigv4"),
            "suggests the near scheme: {unknown:?}"
        );
    }

    #[test]
    fn each_scheme_names_its_own_required_options() {
        let found = problems(
            "      - require_hmac:\n          scheme: template\n          keys: k\n      - sign_hmac:\n          scheme: aws-sigv4\n          keys: k\n          access_key: a\n",
        );
        let joined = found.join("\n");
        assert!(
            joined.contains("missing field \"string_to_sign\""),
            "{joined}"
        );
        assert!(joined.contains("missing field \"region\""), "{joined}");
        let fine = problems(
            "      - sign_hmac:\n          scheme: aws-sigv2\n          keys: k\n          access_key: a\n",
        );
        assert!(fine.is_empty(), "{fine:?}");
    }

    #[test]
    fn tagged_options_are_shown_with_their_scheme() {
        let text = "services:\n  - name: s\n    match: { path: / }\n    upstream: 127.0.0.1:1\n    request:\n      - require_hmac: { scheme: aws-sigv2, keys: k, allow_query: false }\n";
        let mut errors: Vec<Diagnostic> = Vec::new();
        let parsed = parse_text::<ConfigSpec>(Arc::from(Path::new("p.yaml")), text, &mut errors)
            .expect("parsed");
        assert!(errors.is_empty(), "{errors:?}");
        let shown = serde_json::to_value(
            &parsed.spec.services[0]
                .0
                .as_ref()
                .expect("service")
                .value
                .request,
        )
        .expect("json");
        assert_eq!(
            shown,
            serde_json::json!([{ "require_hmac": { "scheme": "aws-sigv2", "keys": "k", "allow_query": false, "max_skew": null, "replay_protection": null, "replay_capacity": null, "replay_scope": null, "replay_on_store_failure": null } }])
        );
    }
}
