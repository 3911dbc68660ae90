//! One service: its route, methods, upstream and pipelines.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use portcullis_assertions::{credential_places, Pipeline};

use crate::config::spec::ServiceSpec;
use crate::config::yaml::{Location, Spanned};
use crate::metrics::{Metrics, ServiceMetrics};
use crate::runtime::{Service, Upstream};

use crate::config::context::{CompileContext, Side};
use crate::config::credentials::compile_credentials;
use crate::config::gather::upstream_target;
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
        (Some(u), None) => compile_upstream(u, &format!("{path}.upstream"), context),
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
        upstream.as_ref().map(|u| u.url.as_str()),
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
        metrics,
        credentials,
    };
    (Some(service), Some(route))
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

pub(super) fn compile_upstream(
    spec: &Spanned<crate::config::spec::UpstreamSpec>,
    path: &str,
    context: &mut CompileContext<'_>,
) -> Option<Upstream> {
    let d = spec.value.detail();
    let loc = spec.loc;
    let uri: http::Uri = match d.url.parse() {
        Ok(u) => u,
        Err(_) => {
            context.err(
                loc,
                path,
                format!("\"{}\" is not a URL (e.g. http://127.0.0.1:9000)", d.url),
            );
            return None;
        }
    };
    let tls = uri.scheme_str() == Some("https");
    let Some((bare_host, port)) = upstream_target(&uri) else {
        let problem = if uri.host().is_none() && matches!(uri.scheme_str(), Some("http" | "https"))
        {
            format!("upstream \"{}\" has no host", d.url)
        } else {
            format!("upstream \"{}\" must start with http:// or https://", d.url)
        };
        context.err(loc, path, problem);
        return None;
    };
    let host = uri.host().unwrap_or(bare_host);
    if uri.query().is_some() {
        context.err(loc, path, "an upstream URL cannot have a query string");
    }
    let Some(addr) = context.gathered.address(bare_host, port) else {
        context.err(
            loc,
            path,
            format!("cannot resolve upstream host \"{host}\""),
        );
        return None;
    };
    let authority = uri.authority().map_or(host, http::uri::Authority::as_str);
    let host_header = HeaderValue::from_str(authority).ok()?;
    let base_path = uri.path().trim_end_matches('/').to_owned();
    let mut pool_group = 0;
    let ca = match &d.ca_file {
        Some(file) => match parse_ca_file(
            &context.base.join(file),
            context.gathered.file(&context.base.join(file)),
        ) {
            Ok((ca, group)) => {
                pool_group = group;
                Some(ca)
            }
            Err(message) => {
                context.err(loc, path, message);
                None
            }
        },
        None => None,
    };
    Some(Upstream {
        url: d.url.clone(),
        addr,
        tls,
        sni: d.sni.clone().unwrap_or_else(|| bare_host.to_owned()),
        verify_tls: d.verify_tls.unwrap_or(true),
        host_header,
        preserve_host: d.preserve_host.unwrap_or(false),
        base_path,
        strip_prefix: d.strip_prefix.unwrap_or(false),
        connect_timeout: d.connect_timeout.map_or(Duration::from_secs(5), |t| t.0),
        read_timeout: d.read_timeout.map_or(Duration::from_secs(60), |t| t.0),
        ca,
        pool_group,
    })
}

/// Parses PEM CA certificates (read by gathering), checking each parses as X.509.
/// Also returns a digest of the certificates, to keep connection pools apart.
pub(super) fn parse_ca_file(
    path: &Path,
    pem: Result<&[u8], String>,
) -> Result<(Arc<[pingora::utils::tls::WrappedX509]>, u64), String> {
    let mut pem = pem?;
    let mut out = Vec::new();
    let mut digest = <sha2::Sha256 as sha2::Digest>::new();
    for der in rustls_pemfile::certs(&mut pem) {
        let der = der.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        if x509_parser::parse_x509_certificate(&der).is_err() {
            return Err(format!(
                "ca_file {} holds a certificate that does not parse",
                path.display()
            ));
        }
        sha2::Digest::update(&mut digest, &der);
        out.push(pingora::utils::tls::WrappedX509::new(
            der.to_vec(),
            pingora::utils::tls::parse_x509,
        ));
    }
    if out.is_empty() {
        return Err(format!(
            "ca_file {} holds no PEM certificate",
            path.display()
        ));
    }
    let digest = sha2::Digest::finalize(digest);
    let mut group = [0u8; 8];
    group.copy_from_slice(&digest[..8]);
    Ok((Arc::from(out), u64::from_le_bytes(group).max(1)))
}
