//! A service's `credentials:` section: its options as YAML reads them and how they compile
//! into a [`CredentialPolicy`]: every place a caller's credential can be, and strip, forward
//! (with conditions) or, when nothing authenticates callers and the section is absent, pass
//! through.

use std::fmt;

use portcullis_assertions::ip::IpList;
use portcullis_assertions::template::{resolve, Source};
use portcullis_assertions::CredentialPlaces;
use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::config::context::CompileContext;
use crate::config::values::{Cidr, HeaderNameSpec};
use crate::config::yaml::{Lenient, Location, Spanned};
use crate::credentials::{Condition, CredentialPolicy, Mode, Place, Rule, Test, MAX_PLACES};

/// What happens to the caller's credentials on the way to the upstream: `strip`, or a
/// mapping with `mode` (`strip` or `forward`), `when` (forward's conditions, or `always`)
/// and more places credentials travel in (`headers`, `cookies`, `query_params`). Default:
/// `strip` when a step authenticates callers, else everything passes through.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(untagged)]
pub enum CredentialsSpec {
    /// `strip` (`forward` needs conditions: use the mapping form).
    Mode(CredentialModeSpec),
    Detailed(Box<CredentialsDetail>),
}

/// Strip the caller's credentials, or forward them when every condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialModeSpec {
    Strip,
    Forward,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsDetail {
    /// `strip`: the caller's credentials never reach the upstream. `forward`: they do when
    /// every `when` condition holds, and are stripped otherwise.
    pub mode: Spanned<CredentialModeSpec>,
    /// With `forward` (required there): conditions that must all hold, or `always`.
    #[serde(default)]
    pub when: Option<Spanned<WhenSpec>>,
    /// More headers that carry the caller's credentials, besides `Authorization`,
    /// `Proxy-Authorization` and those an authenticating step reads.
    #[serde(default)]
    pub headers: Vec<HeaderNameSpec>,
    /// Cookies that carry the caller's credentials (names, matched without regard to case).
    #[serde(default)]
    pub cookies: Vec<Spanned<String>>,
    /// Query parameters that carry the caller's credentials (names, matched form-decoded and
    /// without regard to case), besides those an authenticating step reads.
    #[serde(default)]
    pub query_params: Vec<Spanned<String>>,
}

/// `always`, or conditions that must all hold.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(untagged)]
pub enum WhenSpec {
    /// `always`: forward every caller's credentials to this upstream.
    Always(AlwaysSpec),
    Conditions(ConditionsSpec),
}

/// The word `always`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlwaysSpec {
    Always,
}

/// Conditions for forwarding; every one given must hold.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionsSpec {
    /// The service's upstream host (from its URL) is one of these: a name, or `*.example.com`.
    #[serde(default)]
    pub upstream_hosts: Lenient<Option<Spanned<Vec<Spanned<String>>>>>,
    /// The client address (after `trusted_proxies`) is in one of these CIDR blocks.
    #[serde(default)]
    pub client_cidrs: Lenient<Option<Spanned<Vec<Cidr>>>>,
    /// The caller is in one of these groups.
    #[serde(default)]
    pub groups: Lenient<Option<Spanned<GroupsSpec>>>,
    /// Variables that must have one of the given values.
    #[serde(default)]
    pub variables: Vec<Lenient<Spanned<VariableConditionSpec>>>,
}

impl ConditionsSpec {
    /// Whether any condition is written (a broken one too: it was reported already).
    fn any_written(&self) -> bool {
        // An absent field reads as `Lenient(Some(None))`; a broken one as `Lenient(None)`.
        !matches!(self.upstream_hosts.0, Some(None))
            || !matches!(self.client_cidrs.0, Some(None))
            || !matches!(self.groups.0, Some(None))
            || !self.variables.is_empty()
    }
}

/// Group membership: a variable holding a comma-separated group list.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupsSpec {
    /// The variable with the caller's groups, e.g. `${saml.attr.groups}`. Default
    /// `${identity.groups}` (set by `require_ip_identity`).
    #[serde(default)]
    pub variable: Option<Spanned<String>>,
    /// The list must name at least one of these groups (compared exactly).
    pub any_of: Spanned<Vec<String>>,
}

/// A variable compared with values.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VariableConditionSpec {
    /// One variable reference, e.g. `${client.tier}`. Unset, it fails the condition.
    pub variable: Spanned<String>,
    /// The value it must have. Exactly one of `equals` and `one_of`.
    #[serde(default)]
    pub equals: Option<String>,
    /// The values it may have.
    #[serde(default)]
    pub one_of: Option<Vec<String>>,
}

/// Reads `word` or a mapping: the two untagged forms above.
macro_rules! word_or_mapping {
    ($spec:ident, $word:ident, $word_ty:ty, $mapping:ident, $map_ty:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $spec {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $spec;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$spec, E> {
                        <$word_ty>::deserialize(de::value::StrDeserializer::<E>::new(v))
                            .map($spec::$word)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$spec, A::Error> {
                        <$map_ty>::deserialize(de::value::MapAccessDeserializer::new(map))
                            .map(|options| $spec::$mapping(options.into()))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

word_or_mapping!(
    CredentialsSpec,
    Mode,
    CredentialModeSpec,
    Detailed,
    CredentialsDetail,
    "`strip`, or a mapping with `mode` (strip or forward) and, for forward, `when`"
);
word_or_mapping!(
    WhenSpec,
    Always,
    AlwaysSpec,
    Conditions,
    ConditionsSpec,
    "`always`, or a mapping of conditions (upstream_hosts, client_cidrs, groups, variables)"
);

/// Compiles a service's `credentials:` (`spec`, absent when the service has none) with what
/// its authenticating steps read and the host of its upstream URL.
pub(crate) fn compile_credentials(
    spec: Option<&Spanned<CredentialsSpec>>,
    path: &str,
    authenticating: Option<CredentialPlaces>,
    upstream_urls: &[&str],
    context: &mut CompileContext<'_>,
) -> CredentialPolicy {
    let detail = match spec.map(|s| &s.value) {
        Some(CredentialsSpec::Detailed(detail)) => Some(&**detail),
        _ => None,
    };
    let places = collect_places(authenticating.as_ref(), detail, spec, path, context);
    let mode = match spec {
        None => match &authenticating {
            Some(found) => Mode::Strip(Rule::new(
                "authenticated",
                &format!(
                    "{} authenticated the caller and the service has no `credentials:` setting, so the caller's credentials stay at the gateway",
                    found.steps.join(", ")
                ),
            )),
            None => Mode::PassThrough,
        },
        Some(spec) => match &spec.value {
            CredentialsSpec::Mode(CredentialModeSpec::Strip) => strip_rule(),
            CredentialsSpec::Mode(CredentialModeSpec::Forward) => {
                context.err(spec.loc, path, forward_needs_when());
                strip_rule()
            }
            CredentialsSpec::Detailed(detail) => compile_mode(detail, path, upstream_urls, context),
        },
    };
    CredentialPolicy::new(mode, places)
}

fn strip_rule() -> Mode {
    Mode::Strip(Rule::new("strip", "the service says `credentials: strip`"))
}

fn forward_needs_when() -> &'static str {
    "`credentials: forward` needs `when:`: conditions that must all hold (upstream_hosts, client_cidrs, groups, variables), or `when: always` to forward every caller's credentials to this upstream"
}

/// `Authorization`, `Proxy-Authorization`, what the steps read, then the configured places.
fn collect_places(
    authenticating: Option<&CredentialPlaces>,
    detail: Option<&CredentialsDetail>,
    spec: Option<&Spanned<CredentialsSpec>>,
    path: &str,
    context: &mut CompileContext<'_>,
) -> Vec<Place> {
    let mut places = vec![
        Place::Header(http::header::AUTHORIZATION),
        Place::Header(http::header::PROXY_AUTHORIZATION),
    ];
    let mut add = |place: Place| {
        let duplicate = places.iter().any(|known| match (known, &place) {
            (Place::Header(a), Place::Header(b)) => a == b,
            (Place::Cookie(a), Place::Cookie(b)) | (Place::QueryParam(a), Place::QueryParam(b)) => {
                a.eq_ignore_ascii_case(b)
            }
            _ => false,
        });
        if !duplicate {
            places.push(place);
        }
    };
    if let Some(found) = authenticating {
        found
            .headers
            .iter()
            .cloned()
            .for_each(|h| add(Place::Header(h)));
        found
            .query_params
            .iter()
            .for_each(|p| add(Place::QueryParam(p.clone())));
    }
    if let Some(detail) = detail {
        detail
            .headers
            .iter()
            .for_each(|h| add(Place::Header(h.0.clone())));
        for (list, option, make) in [
            (
                &detail.cookies,
                "cookies",
                Place::Cookie as fn(String) -> Place,
            ),
            (&detail.query_params, "query_params", Place::QueryParam),
        ] {
            for (index, name) in list.iter().enumerate() {
                let trimmed = name.value.trim();
                if trimmed.is_empty() || trimmed.contains([';', '=', '&', ',']) {
                    context.err(
                        name.loc,
                        &format!("{path}.{option}[{index}]"),
                        format!(
                            "\"{}\" is not a {} name",
                            name.value,
                            &option[..option.len() - 1]
                        ),
                    );
                    continue;
                }
                add(make(trimmed.to_owned()));
            }
        }
    }
    if places.len() > MAX_PLACES {
        let loc = spec.map_or(Location::default(), |s| s.loc);
        context.err(
            loc,
            path,
            format!("at most {MAX_PLACES} headers, cookies and query parameters can be credentials of one service"),
        );
        places.truncate(MAX_PLACES);
    }
    places
}

fn compile_mode(
    detail: &CredentialsDetail,
    path: &str,
    upstream_urls: &[&str],
    context: &mut CompileContext<'_>,
) -> Mode {
    match (detail.mode.value, &detail.when) {
        (CredentialModeSpec::Strip, None) => strip_rule(),
        (CredentialModeSpec::Strip, Some(when)) => {
            context.err(
                when.loc,
                &format!("{path}.when"),
                "`when:` belongs to `mode: forward`; with `strip` the caller's credentials are always removed",
            );
            strip_rule()
        }
        (CredentialModeSpec::Forward, None) => {
            context.err(
                detail.mode.loc,
                &format!("{path}.mode"),
                forward_needs_when(),
            );
            strip_rule()
        }
        (CredentialModeSpec::Forward, Some(when)) => match &when.value {
            WhenSpec::Always(AlwaysSpec::Always) => Mode::Forward {
                conditions: Vec::new(),
                rule: Rule::new(
                    "always",
                    "`when: always`: every caller's credentials go to this upstream",
                ),
            },
            WhenSpec::Conditions(conditions) => {
                let at = format!("{path}.when");
                let compiled = compile_conditions(conditions, &at, upstream_urls, context);
                if !conditions.any_written() {
                    context.err(when.loc, &at, forward_needs_when());
                }
                if compiled.is_empty() {
                    // Never forward for want of a condition (the load fails anyway).
                    return strip_rule();
                }
                Mode::Forward {
                    conditions: compiled,
                    rule: Rule::new("forward", "every `when:` condition held"),
                }
            }
        },
    }
}

fn compile_conditions(
    spec: &ConditionsSpec,
    path: &str,
    upstream_urls: &[&str],
    context: &mut CompileContext<'_>,
) -> Vec<Condition> {
    let mut conditions = Vec::new();
    if let Some(hosts) = spec.upstream_hosts.present() {
        conditions.push(upstream_hosts(hosts, path, upstream_urls, context));
    }
    if let Some(blocks) = spec.client_cidrs.present() {
        if blocks.value.is_empty() {
            context.err(
                blocks.loc,
                &format!("{path}.client_cidrs"),
                "client_cidrs needs at least one CIDR block",
            );
        }
        let shown: Vec<String> = blocks.value.iter().map(|b| b.0.to_string()).collect();
        conditions.push(Condition {
            rule: Rule::new(
                "when.client_cidrs",
                &format!("the client address must be in {}", shown.join(", ")),
            ),
            test: Test::ClientCidr(IpList::new(blocks.value.iter().map(|b| b.0).collect())),
        });
    }
    if let Some(groups) = spec.groups.present() {
        let at = format!("{path}.groups");
        if let Some((source, shown)) = group_source(groups, &at, context) {
            if groups.value.any_of.value.is_empty() {
                context.err(
                    groups.value.any_of.loc,
                    &format!("{at}.any_of"),
                    "any_of needs at least one group",
                );
            }
            conditions.push(Condition {
                rule: Rule::new(
                    "when.groups",
                    &format!(
                        "{shown} must name one of the groups {}",
                        groups.value.any_of.value.join(", ")
                    ),
                ),
                test: Test::Groups {
                    source,
                    any_of: groups.value.any_of.value.clone(),
                },
            });
        }
    }
    for (index, condition) in spec.variables.iter().enumerate() {
        let Some(condition) = condition.get() else {
            continue;
        };
        let at = format!("{path}.variables[{index}]");
        if let Some(compiled) = variable_condition(condition, &at, index, context) {
            conditions.push(compiled);
        }
    }
    conditions
}

fn upstream_hosts(
    hosts: &Spanned<Vec<Spanned<String>>>,
    path: &str,
    upstream_urls: &[&str],
    context: &mut CompileContext<'_>,
) -> Condition {
    let at = format!("{path}.upstream_hosts");
    if hosts.value.is_empty() {
        context.err(hosts.loc, &at, "upstream_hosts needs at least one host");
    }
    // Every target's host: with several, each must be one the credentials may go to.
    let upstreams: Vec<String> = upstream_urls
        .iter()
        .filter_map(|url| url.parse::<http::Uri>().ok())
        .filter_map(|uri| {
            uri.host()
                .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
        })
        .collect();
    let upstream = upstreams.join(", ");
    let mut patterns = Vec::new();
    for (index, host) in hosts.value.iter().enumerate() {
        let pattern = host.value.trim().to_ascii_lowercase();
        let bare = pattern.strip_prefix("*.").unwrap_or(&pattern);
        if bare.is_empty() || bare.contains(['/', ' ', '*', ':']) {
            context.err(
                host.loc,
                &format!("{at}[{index}]"),
                format!("\"{}\" is not a host name or *.domain pattern", host.value),
            );
            continue;
        }
        patterns.push(pattern);
    }
    let matches = |upstream: &str, pattern: &str| match pattern.strip_prefix("*.") {
        Some(suffix) => upstream
            .strip_suffix(suffix)
            .is_some_and(|label| label.len() > 1 && label.ends_with('.')),
        None => upstream == pattern,
    };
    let holds = !upstreams.is_empty()
        && upstreams
            .iter()
            .all(|upstream| patterns.iter().any(|pattern| matches(upstream, pattern)));
    let listed: Vec<&str> = hosts.value.iter().map(|h| h.value.as_str()).collect();
    if !holds && !upstream.is_empty() {
        context.warnings.push(format!(
            "{at}: the upstream host {upstream} is not one of {}, so this service always strips the caller's credentials",
            listed.join(", ")
        ));
    }
    Condition {
        rule: Rule::new(
            "when.upstream_hosts",
            &format!(
                "the upstream host ({upstream}) must be one of {}",
                listed.join(", ")
            ),
        ),
        test: Test::UpstreamHost { holds },
    }
}

/// The variable of a `groups` condition, and how it is written for messages.
fn group_source(
    groups: &Spanned<GroupsSpec>,
    path: &str,
    context: &mut CompileContext<'_>,
) -> Option<(Source, String)> {
    match &groups.value.variable {
        Some(variable) => variable_source(variable, &format!("{path}.variable"), context)
            .map(|s| (s, variable.value.trim().to_owned())),
        None => match context.registry.lookup("identity.groups") {
            Some(id) => Some((Source::Var(id), "${identity.groups}".to_owned())),
            None => {
                context.err(
                    groups.loc,
                    path,
                    "groups needs `variable:`, the variable with the caller's groups (e.g. \"${saml.attr.groups}\"): no step of this policy sets ${identity.groups}",
                );
                None
            }
        },
    }
}

/// One `${name}` reference, resolved against the policy's variables.
fn variable_source(
    variable: &Spanned<String>,
    path: &str,
    context: &mut CompileContext<'_>,
) -> Option<Source> {
    let text = variable.value.trim();
    let Some(name) = text
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.contains(['$', '{', '}']))
    else {
        context.err(
            variable.loc,
            path,
            format!(
                "\"{}\" is not one variable reference such as \"${{client.tier}}\"",
                variable.value
            ),
        );
        return None;
    };
    match resolve(name, &context.registry) {
        Ok(source) => Some(source),
        Err(e) => {
            context.err(variable.loc, path, e.0);
            None
        }
    }
}

fn variable_condition(
    condition: &Spanned<VariableConditionSpec>,
    path: &str,
    index: usize,
    context: &mut CompileContext<'_>,
) -> Option<Condition> {
    let spec = &condition.value;
    let source = variable_source(&spec.variable, &format!("{path}.variable"), context);
    let one_of = match (&spec.equals, &spec.one_of) {
        (Some(value), None) => vec![value.clone()],
        (None, Some(values)) if !values.is_empty() => values.clone(),
        _ => {
            context.err(
                condition.loc,
                path,
                "a variable condition needs exactly one of `equals` (a value) and `one_of` (a non-empty list)",
            );
            return None;
        }
    };
    let written = spec.variable.value.trim();
    let why = match one_of.as_slice() {
        [only] => format!("{written} must equal \"{only}\""),
        many => format!("{written} must be one of {}", many.join(", ")),
    };
    Some(Condition {
        rule: Rule::new(&format!("when.variables[{index}]"), &why),
        test: Test::Equals {
            source: source?,
            one_of,
        },
    })
}
