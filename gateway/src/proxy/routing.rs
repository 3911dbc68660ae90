//! Which service a request goes to, on its canonical path, and who sent it.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use http::header::HOST;
use http::StatusCode;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use portcullis_assertions::{Exchange, Rejection, VarId};

use super::refusal::ambiguous_path;
use crate::router::{path_segments, RouteRequest};
use crate::runtime::Runtime;

/// Where a request goes: the service, the path to forward when it is not the raw one, and
/// the values of its route's path parameters.
pub struct RouteDecision {
    pub service: usize,
    /// The canonical path, when it differs from the raw path.
    pub forwarded: Option<String>,
    /// `${path.NAME}` values: each parameter's segment of the routing key (escapes of
    /// unreserved characters decoded, others kept). Empty, and not allocated, for a route
    /// without parameters.
    pub params: Vec<(VarId, Arc<str>)>,
}

impl RouteDecision {
    /// Sets the route's path parameters in a request's exchange.
    pub fn set_params(&self, exchange: &mut Exchange) {
        for (var, value) in &self.params {
            exchange.set(*var, value.clone());
        }
    }
}

/// Routes a request on its canonical path ([`crate::path`]), host, method, headers and
/// query: the service the router selects, provided the path holds no form that service's
/// upstream could read otherwise.
///
/// # Errors
/// `400 ambiguous-path` or `404 no-route`.
pub fn route_request(
    rt: &Runtime,
    head: &RequestHeader,
) -> std::result::Result<RouteDecision, Rejection> {
    let canonical =
        crate::path::canonicalize(head.uri.path()).map_err(|why| ambiguous_path(why.detail()))?;
    let request = RouteRequest {
        host: request_host(head),
        path: &canonical.routing,
        method: &head.method,
        headers: &head.headers,
        query: head.uri.query(),
    };
    let Some(found) = rt.router.route(&request) else {
        return Err(Rejection::new(
            StatusCode::NOT_FOUND,
            "no-route",
            "no service matches this host and path",
        ));
    };
    let service = found.service;
    let allowed = rt
        .services
        .get(service)
        .map_or_else(crate::path::PathForms::default, |s| s.path_forms);
    if canonical.forms.exceeds(allowed) {
        return Err(ambiguous_path(format!(
            "the request path holds {}, which upstreams read differently; this service does not accept them",
            canonical.forms.describe()
        )));
    }
    let params = if found.entry.params.is_empty() {
        Vec::new()
    } else {
        let segments: Vec<&str> = path_segments(&canonical.routing).collect();
        found
            .entry
            .params
            .iter()
            .filter_map(|(index, var)| segments.get(*index).map(|value| (*var, Arc::from(*value))))
            .collect()
    };
    let forwarded = match canonical.forwarded {
        std::borrow::Cow::Owned(path) => Some(path),
        std::borrow::Cow::Borrowed(_) => None,
    };
    Ok(RouteDecision {
        service,
        forwarded,
        params,
    })
}

pub(super) fn peer_ip(session: &Session) -> IpAddr {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), std::net::SocketAddr::ip)
}

/// The host a request is for: an absolute-form target's authority wins over `Host`
/// (RFC 9112 §3.2.2), as the upstream will be told.
pub fn request_host(req: &RequestHeader) -> Option<&str> {
    req.uri
        .host()
        .or_else(|| req.headers.get(HOST).and_then(|h| h.to_str().ok()))
}
