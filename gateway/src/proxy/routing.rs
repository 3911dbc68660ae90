//! Which service a request goes to, on its canonical path, and who sent it.

use std::net::{IpAddr, Ipv4Addr};

use http::header::HOST;
use http::StatusCode;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use portcullis_assertions::Rejection;

use super::refusal::ambiguous_path;
use crate::runtime::Runtime;

/// Where a request goes: the service, and the path to forward when it is not the raw one.
pub struct RouteDecision {
    pub service: usize,
    /// The canonical path, when it differs from the raw path.
    pub forwarded: Option<String>,
}

/// Routes a request on its canonical path ([`crate::path`]): the service the routing key
/// selects, provided the path holds no form that service's upstream could read otherwise.
///
/// # Errors
/// `400 ambiguous-path` or `404 no-route`.
pub fn route_request(
    rt: &Runtime,
    host: Option<&str>,
    raw_path: &str,
) -> std::result::Result<RouteDecision, Rejection> {
    let canonical =
        crate::path::canonicalize(raw_path).map_err(|why| ambiguous_path(why.detail()))?;
    let Some(service) = rt.router.route(host, &canonical.routing) else {
        return Err(Rejection::new(
            StatusCode::NOT_FOUND,
            "no-route",
            "no service matches this host and path",
        ));
    };
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
    let forwarded = match canonical.forwarded {
        std::borrow::Cow::Owned(path) => Some(path),
        std::borrow::Cow::Borrowed(_) => None,
    };
    Ok(RouteDecision { service, forwarded })
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
