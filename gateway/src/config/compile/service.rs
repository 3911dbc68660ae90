//! One service: its route, methods, upstream and pipelines.

use std::sync::Arc;

use portcullis_assertions::{credential_places, Pipeline};

use crate::config::spec::ServiceSpec;
use crate::config::yaml::{Location, Spanned};
use crate::metrics::{Metrics, ServiceMetrics};
use crate::runtime::{Service, Upstream};

use crate::config::context::{CompileContext, Side};
use crate::config::credentials::compile_credentials;
use crate::config::steps::compile_steps;

use super::route::{compile_route, CompiledRoute};

/// Compiles a service; its route is returned even when the rest fails, so ties between
/// routes are still reported.
pub(super) fn compile_service(
    spec: &ServiceSpec,
    path: &str,
    metrics: &Metrics,
    context: &mut CompileContext<'_>,
) -> (Option<Service>, Option<CompiledRoute>) {
    let name = spec.name.value.trim();
    context.service_name = name.to_owned();
    if name.is_empty() {
        context.err(
            spec.name.loc,
            &format!("{path}.name"),
            "a service needs a non-empty name",
        );
    }
    let upstream = match (spec.upstream.present(), &spec.issue_saml) {
        (Some(u), None) => {
            super::upstream::compile_upstream(u, &format!("{path}.upstream"), context)
        }
        (None, Some(_)) => Some(Upstream::answered_by_the_gateway()),
        (Some(u), Some(_)) => {
            context.err(
                u.loc,
                &format!("{path}.upstream"),
                "a service with issue_saml answers itself: remove its upstream",
            );
            None
        }
        (None, None) => {
            // `upstream:` written but unreadable was reported where it is.
            if spec.upstream.get().is_some() {
                context.err(
                    spec.name.loc,
                    &format!("{path}.upstream"),
                    "a service needs an upstream (`upstream: http://host:port`)",
                );
            }
            None
        }
    };

    context.shadow = crate::config::context::ShadowScope {
        service: spec.shadow.as_ref().is_some_and(|shadow| shadow.value),
        ..Default::default()
    };
    let request = compile_steps(
        &spec.request,
        &format!("{path}.request"),
        Side::Request,
        context,
    );
    let response = compile_steps(
        &spec.response,
        &format!("{path}.response"),
        Side::Response,
        context,
    );
    let issue_saml = spec.issue_saml.as_ref().and_then(|issuing| {
        crate::config::issue_saml::compile_issuance(issuing, spec, path, context)
    });
    let methods = match (&spec.methods, &spec.issue_saml) {
        // An issuer answers POST unless told otherwise (never GET: see compile_issuance).
        (None, Some(_)) => vec![http::Method::POST],
        _ => compile_methods(spec.methods.as_deref(), spec.name.loc, path, context),
    };
    let route = compile_route(spec, path, &methods, context);
    let mut credentials = compile_credentials(
        spec.credentials.present(),
        &format!("{path}.credentials"),
        credential_places::of_steps(&request),
        &spec
            .upstream
            .present()
            .map(|u| super::upstream::target_urls(&u.value))
            .unwrap_or_default()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        context,
    );
    credentials.count_in(metrics, name);
    let request = Pipeline::new(request);
    let response = Pipeline::new(response);
    let needs = request.needs().union(response.needs());
    let shadowed = std::mem::take(&mut context.shadow.steps);
    let metrics = ServiceMetrics::new(metrics, name, request.steps(), response.steps())
        .with_shadow(metrics, &shadowed);
    let Some(route) = route else {
        return (None, None);
    };
    let Some(upstream) = upstream else {
        return (None, Some(route));
    };
    let issue_saml = match (&spec.issue_saml, issue_saml) {
        (Some(_), None) => return (None, Some(route)),
        (_, issue_saml) => issue_saml,
    };
    let service = Service {
        name: Arc::from(name),
        methods: shared_methods(methods),
        route_segments: route.entry.pattern.segment_count(),
        route: Arc::from(route.entry.pattern.display()),
        path_forms: route.path_forms,
        upstream,
        issue_saml,
        request,
        response,
        needs,
        max_request_body: spec
            .max_request_body
            .present()
            .map_or(super::DEFAULT_MAX_REQUEST_BODY, |b| b.0),
        https_only: https_only(spec, path, context),
        metrics,
        credentials,
    };
    (Some(service), Some(route))
}

/// `https_only`, refused where no request could ever meet it (no `tls:` listener).
fn https_only(spec: &ServiceSpec, path: &str, context: &mut CompileContext<'_>) -> bool {
    let Some(https_only) = spec.https_only.as_ref().filter(|flag| flag.value) else {
        return false;
    };
    if !context.https_listeners {
        context.err(
            https_only.loc,
            &format!("{path}.https_only"),
            "https_only needs an HTTPS listener (`tls:`): every request would be refused",
        );
    }
    true
}

/// The standard methods as one list every service taking them points to.
fn shared_methods(methods: Vec<http::Method>) -> Arc<[http::Method]> {
    static STANDARD: std::sync::OnceLock<Arc<[http::Method]>> = std::sync::OnceLock::new();
    if methods == crate::proxy::STANDARD_METHODS {
        STANDARD
            .get_or_init(|| Arc::from(crate::proxy::STANDARD_METHODS.as_slice()))
            .clone()
    } else {
        Arc::from(methods)
    }
}

/// A service's methods, upper-case tokens; `TRACE` and `CONNECT` refused.
pub(super) fn compile_methods(
    given: Option<&[Spanned<String>]>,
    service_loc: Location,
    path: &str,
    context: &mut CompileContext<'_>,
) -> Vec<http::Method> {
    let Some(given) = given else {
        return crate::proxy::STANDARD_METHODS.to_vec();
    };
    let mut methods = Vec::new();
    for (i, m) in given.iter().enumerate() {
        let at = format!("{path}.methods[{i}]");
        match http::Method::from_bytes(m.value.as_bytes()) {
            Ok(method) if method == http::Method::TRACE || method == http::Method::CONNECT => {
                context.err(m.loc, &at, format!("{method} is never proxied (TRACE echoes credentials back, CONNECT opens tunnels)"));
            }
            Ok(method) if m.value.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') => {
                methods.push(method)
            }
            _ => context.err(
                m.loc,
                &at,
                format!(
                    "\"{}\" is not an upper-case method name such as GET or POST",
                    m.value
                ),
            ),
        }
    }
    if methods.is_empty() && given.is_empty() {
        context.err(
            service_loc,
            &format!("{path}.methods"),
            "methods needs at least one method",
        );
    }
    methods
}
