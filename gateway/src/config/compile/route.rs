//! A service's `match:` → its route ([`crate::router::Entry`]), and the checks across
//! routes: two services that could take the same request at the same precedence are an
//! error naming both, since one of them would never be used.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};
use portcullis_assertions::VarRegistry;

use crate::config::context::CompileContext;
use crate::config::spec::{MatchSpec, PathCaseSpec, PathMatchSpec, ServiceSpec};
use crate::config::yaml::Location;
use crate::config::Diagnostic;
use crate::path::{canonicalize, PathCase, PathForms};
use crate::router::{Conditions, Entry, Pattern, Segment, Tail};

/// What a service's `match:` compiles to.
pub(super) struct CompiledRoute {
    /// Normalised host or `*.suffix`; `None` for any host.
    pub(super) host: Option<String>,
    /// The route, with `service` still to be set.
    pub(super) entry: Entry,
    pub(super) path_forms: PathForms,
}

/// The variable a path parameter sets.
fn param_variable(name: &str) -> String {
    format!("path.{name}")
}

/// Declares `${path.NAME}` for every parameter of a service's path, before steps compile.
pub(super) fn define_path_variables(spec: &ServiceSpec, registry: &mut VarRegistry) {
    if let Some(pattern) = spec
        .matcher
        .get()
        .and_then(|m| m.path.as_ref())
        .and_then(|p| Pattern::parse(&p.value, false, PathCase::Sensitive).ok())
    {
        for name in pattern.params() {
            registry.define(&param_variable(name));
        }
    }
}

pub(super) fn compile_route(
    spec: &ServiceSpec,
    path: &str,
    service_methods: &[Method],
    context: &mut CompileContext<'_>,
) -> Option<CompiledRoute> {
    let default = MatchSpec::default();
    let matcher = spec.matcher.get().unwrap_or(&default);
    let case = match matcher.path_case.as_ref().map(|c| c.value) {
        Some(PathCaseSpec::Insensitive) => PathCase::Insensitive,
        Some(PathCaseSpec::Sensitive) | None => PathCase::Sensitive,
    };
    let exact = matcher
        .path_match
        .as_ref()
        .is_some_and(|m| m.value == PathMatchSpec::Exact);
    let pattern = compile_pattern(matcher, exact, case, path, context)?;
    let params = pattern
        .segments
        .iter()
        .enumerate()
        .filter_map(|(index, segment)| match segment {
            Segment::Param(name) => Some((index, &**name)),
            Segment::Literal(_) => None,
        })
        .filter_map(|(index, name)| {
            context
                .registry
                .lookup(&param_variable(name))
                .map(|var| (index, var))
        })
        .collect();
    check_path_variables(spec, &pattern, path, context);
    let conditions = compile_conditions(matcher, service_methods, path, context);
    let host = compile_host(matcher, path, context);
    let mut path_forms = PathForms::default();
    for form in &matcher.allow_path_forms {
        match form {
            crate::config::spec::PathFormSpec::Parameters => path_forms.parameters = true,
            crate::config::spec::PathFormSpec::EmptySegments => path_forms.empty_segments = true,
            crate::config::spec::PathFormSpec::TrailingDots => path_forms.trailing_dots = true,
        }
    }
    Some(CompiledRoute {
        host,
        entry: Entry {
            service: usize::MAX,
            pattern,
            conditions: conditions?,
            params,
        },
        path_forms,
    })
}

fn compile_pattern(
    matcher: &MatchSpec,
    exact: bool,
    case: PathCase,
    path: &str,
    context: &mut CompileContext<'_>,
) -> Option<Pattern> {
    let Some(written) = matcher.path.as_ref() else {
        return Pattern::parse("/", exact, case).ok();
    };
    let at = format!("{path}.match.path");
    let text = &written.value;
    if !text.starts_with('/') {
        context.err(
            written.loc,
            &at,
            format!("path \"{text}\" must start with /"),
        );
        return None;
    }
    let canonical = match canonicalize(text) {
        Ok(canonical) if canonical.forms == PathForms::default() => canonical,
        Ok(canonical) => {
            context.err(
                written.loc,
                &at,
                format!(
                    "path \"{text}\" holds {}, which upstreams read differently: write the path without them",
                    canonical.forms.describe()
                ),
            );
            return None;
        }
        Err(why) => {
            context.err(
                written.loc,
                &at,
                format!("path \"{text}\" is refused: {}", why.detail()),
            );
            return None;
        }
    };
    Pattern::parse(&canonical.forwarded, exact, case)
        .map_err(|why| context.err(written.loc, &at, why))
        .ok()
}

/// A `${path.NAME}` in a service whose path has no `{NAME}` would render empty on every
/// request, which is never what was meant: refused.
fn check_path_variables(
    spec: &ServiceSpec,
    pattern: &Pattern,
    path: &str,
    context: &mut CompileContext<'_>,
) {
    // The spec as written, steps included; only the variable names are looked at.
    let Ok(written) = serde_json::to_string(spec) else {
        return;
    };
    let mut rest = written.as_str();
    while let Some(start) = rest.find("${path.") {
        let escaped = start > 0 && rest.as_bytes()[start - 1] == b'$';
        let after = &rest[start + "${path.".len()..];
        let Some(end) = after.find('}') else {
            break;
        };
        let name = &after[..end];
        if !escaped && !pattern.params().any(|param| param == name) {
            let known: Vec<String> = pattern.params().map(|p| format!("{{{p}}}")).collect();
            let has = if known.is_empty() {
                "no parameters".to_owned()
            } else {
                known.join(", ")
            };
            context.err(
                spec.name.loc,
                &format!("{path}.match.path"),
                format!(
                    "${{path.{name}}} is used in this service, but its path \"{}\" has {has}",
                    pattern.display()
                ),
            );
        }
        rest = &after[end..];
    }
}

fn compile_host(
    matcher: &MatchSpec,
    path: &str,
    context: &mut CompileContext<'_>,
) -> Option<String> {
    let written = matcher.host.as_ref()?;
    let host = written.value.trim();
    let bare = host.strip_prefix("*.").unwrap_or(host);
    if bare.is_empty() || bare.contains(['/', ' ', '*']) {
        context.err(
            written.loc,
            &format!("{path}.match.host"),
            format!("\"{host}\" is not a host name or *.domain pattern"),
        );
    }
    Some(crate::router::normalize_host(host))
}

/// The method, header and query conditions; `None` when one is wrong (reported).
fn compile_conditions(
    matcher: &MatchSpec,
    service_methods: &[Method],
    path: &str,
    context: &mut CompileContext<'_>,
) -> Option<Conditions> {
    let mut ok = true;
    let methods = matcher.methods.as_ref().map(|written| {
        let mut methods = Vec::new();
        for (index, method) in written.iter().enumerate() {
            let at = format!("{path}.match.methods[{index}]");
            let parsed = Method::from_bytes(method.value.as_bytes())
                .ok()
                .filter(|_| method.value.bytes().all(|b| b.is_ascii_uppercase() || b == b'-'));
            match parsed {
                Some(parsed) if service_methods.contains(&parsed) => methods.push(parsed),
                Some(parsed) => {
                    ok = false;
                    context.err(
                        method.loc,
                        &at,
                        format!("{parsed} is routed to this service, but its methods refuse it: add it to the service's `methods:` or remove it here"),
                    );
                }
                None => {
                    ok = false;
                    context.err(
                        method.loc,
                        &at,
                        format!("\"{}\" is not an HTTP method (upper-case, like GET)", method.value),
                    );
                }
            }
        }
        methods.into_boxed_slice()
    });
    let mut headers = Vec::new();
    for (name, value) in &matcher.headers {
        let at = format!("{path}.match.headers.{name}");
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value.value),
        ) {
            (Ok(name), Ok(value)) => headers.push((name, value)),
            (Err(_), _) => {
                ok = false;
                context.err(value.loc, &at, format!("\"{name}\" is not a header name"));
            }
            (_, Err(_)) => {
                ok = false;
                context.err(value.loc, &at, "not a valid header value");
            }
        }
    }
    let query = matcher
        .query
        .iter()
        .map(|(name, value)| (name.as_str().into(), value.value.as_str().into()))
        .collect();
    ok.then(|| Conditions {
        methods,
        headers: headers.into_boxed_slice(),
        query,
    })
}

/// A route already added, for the checks across routes.
struct SeenRoute {
    service: String,
    file: Arc<Path>,
    loc: Location,
    pattern: Pattern,
    conditions: Conditions,
}

/// A route's host and the shape of its path ([`Pattern::shape`]).
type RouteShape = (Option<String>, (Tail, Vec<Option<String>>));

/// Every route added so far, grouped by host and shape (see [`Pattern::shape`]).
#[derive(Default)]
pub(super) struct RouteTable {
    seen: HashMap<RouteShape, Vec<SeenRoute>>,
}

impl RouteTable {
    /// Adds a route; a route that could take the same requests as an earlier one at the
    /// same precedence is an error, one that differs from it only by letter case a warning.
    pub(super) fn add(
        &mut self,
        route: &CompiledRoute,
        service: &str,
        loc: Location,
        path: &str,
        context: &mut CompileContext<'_>,
    ) {
        let key = (route.host.clone(), route.entry.pattern.shape());
        let earlier = self.seen.entry(key).or_default();
        let conditions = &route.entry.conditions;
        for other in earlier.iter() {
            let where_other = format!(
                "\"{}\" (at {}:{})",
                other.service,
                other.file.display(),
                other.loc
            );
            let same_precedence = other.conditions.specificity() == conditions.specificity();
            if route.entry.pattern.overlaps(&other.pattern) {
                if same_precedence && other.conditions.can_both_hold(conditions) {
                    context.err(
                        loc,
                        &format!("{path}.match"),
                        format!(
                            "service \"{service}\" matches the same host and path as {where_other}, with conditions as specific, so one of them would never be used: make a path, host or condition more specific"
                        ),
                    );
                }
            } else {
                context.warnings.push(
                    Diagnostic {
                        file: context.file.clone(),
                        loc: Some(loc),
                        path: format!("{path}.match"),
                        message: format!(
                            "service \"{service}\" has a path that differs only by letter case from {where_other}: behind a case-insensitive upstream both reach the same resources (set path_case: insensitive on the one that must win)"
                        ),
                    }
                    .to_string(),
                );
            }
        }
        earlier.push(SeenRoute {
            service: service.to_owned(),
            file: context.file.clone(),
            loc,
            pattern: route.entry.pattern.clone(),
            conditions: conditions.clone(),
        });
    }
}
