//! The front gates every request passes before its service's pipeline, shared by the proxy
//! and `portcullis eval` so a dry run answers what the gateway would ([`admit_request`],
//! [`check_body_size`], [`run_request_pipeline`]), and the head's checks and clean-up:
//!
//! - Headers the client names in `Connection` are hop-by-hop: they are removed here, before
//!   the pipeline runs, and `Connection` keeps only `close`, `keep-alive` and `upgrade`.
//!   Otherwise a client could name a header the policy sets (`Connection: X-Client-Id`) and
//!   have the next hop delete it after the gateway wrote it. Naming a framing header
//!   (`Content-Length`, `Transfer-Encoding`, `Host`) is refused.
//! - `Content-Length` goes upstream as one value (`5, 5` and repeated identical headers are
//!   folded; different values or anything but digits are refused; beside
//!   `Transfer-Encoding` it is removed, as RFC 9112 §6.3 says).
//! - HTTP/1.1 needs exactly one `Host` (RFC 9112 §3.2).
//! - Methods: a service takes the standard methods unless it lists its own; `TRACE` is
//!   never proxied (it echoes credentials back), `CONNECT` is refused by Pingora.

use std::net::IpAddr;

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, HeaderValue, Method, StatusCode, Version};
use pingora::http::RequestHeader;
use portcullis_assertions::ip::client_ip;
use portcullis_assertions::{Exchange, Rejection, Verdict};

use super::heads::{PingoraRequest, PingoraRequestView};
use super::refusal::body_too_large;
use super::routing::{route_request, RouteDecision};
use crate::credentials::CredentialPlan;
use crate::oauth::endpoint::Endpoint;
use crate::runtime::{Runtime, Service};

/// Where the front gates send a request.
pub enum Admitted {
    /// One of the token service's own endpoints, answered by the gateway itself.
    TokenEndpoint(Endpoint),
    /// The SAML issuer's endpoint, answered by the gateway itself.
    SamlIssuer,
    /// One of the OProxy broker's routes, answered by the gateway itself.
    OProxy(crate::oproxy::Route),
    /// A service route.
    Service(RouteDecision),
}

/// The front gates, in the order the gateway applies them: the head's clean-up and checks
/// ([`admit_head`]), who the client is (`X-Forwarded-For` from trusted proxies only, read
/// after hop-by-hop headers are gone), the SAML issuer's and the token service's endpoints,
/// routing on the canonical path, the service's methods, and a declared body size. Returns
/// the client's address (the peer's when the head is refused) and where the request goes.
pub fn admit_request(
    runtime: &Runtime,
    head: &mut RequestHeader,
    (peer, https): (IpAddr, bool),
) -> (IpAddr, Result<Admitted, Rejection>) {
    if let Err(rejection) = admit_head(head) {
        return (peer, Err(rejection));
    }
    let client = client_ip(
        peer,
        head.headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok()),
        &runtime.trusted_proxies,
    );
    (client, route_admitted(runtime, head, https))
}

fn route_admitted(
    runtime: &Runtime,
    head: &RequestHeader,
    https: bool,
) -> Result<Admitted, Rejection> {
    if let Some(broker) = &runtime.oproxy {
        if let Ok(canonical) = crate::path::canonicalize(head.uri.path()) {
            if let Some(route) = broker.route(&canonical.routing) {
                return Ok(Admitted::OProxy(route));
            }
        }
    }
    if runtime.token_service.is_some() || runtime.saml_issuer.is_some() {
        if let Ok(canonical) = crate::path::canonicalize(head.uri.path()) {
            if runtime
                .saml_issuer
                .as_ref()
                .is_some_and(|issuer| issuer.users.is_some() && issuer.path == canonical.routing)
            {
                return Ok(Admitted::SamlIssuer);
            }
            let endpoint = runtime
                .token_service
                .as_ref()
                .and_then(|_| Endpoint::for_path(&canonical.routing));
            if let Some(endpoint) = endpoint {
                return Ok(Admitted::TokenEndpoint(endpoint));
            }
        }
    }
    let decision = route_request(runtime, head)?;
    let Some(service) = runtime.services.get(decision.service) else {
        return Err(Rejection::new(
            StatusCode::NOT_FOUND,
            "no-route",
            "no service matches this host and path",
        ));
    };
    if service.https_only && !https {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "https-required",
            "this service is served over HTTPS only",
        ));
    }
    if !service.methods.contains(&head.method) {
        return Err(method_not_allowed(&head.method, &service.methods));
    }
    // A declared oversize body is refused before any of it is read.
    let declared = crate::content_length::declared_length(&head.headers);
    if let Some(length) = declared {
        check_body_size(service, length)?;
    }
    Ok(Admitted::Service(decision))
}

/// A body (declared or read so far) within the service's limit.
///
/// # Errors
/// `413 body-too-large`.
pub fn check_body_size(service: &Service, length: u64) -> Result<(), Rejection> {
    if length > service.max_request_body {
        return Err(body_too_large(service.max_request_body));
    }
    Ok(())
}

/// Runs a service's request pipeline as the gateway does: the I/O its steps need first (a
/// key set to fetch for an unknown key id, a token's record in the state store), awaited,
/// then the steps themselves, which do no I/O. When they pass, `credentials` gets what to
/// do with the caller's credentials upstream (their header values are taken before any
/// step runs, so stripping them later never removes a value a step wrote).
pub async fn run_request_pipeline(
    service: &Service,
    head: &mut RequestHeader,
    body: Option<&[u8]>,
    exchange: &mut Exchange,
    credentials: &mut CredentialPlan,
) -> Verdict {
    let caller = service.credentials.capture(&PingoraRequestView(head));
    if let Some(work) = service.request.prefetch(&PingoraRequestView(head)) {
        work.await;
    }
    let verdict = service
        .run_request(&mut PingoraRequest(head), body, exchange)
        .await;
    if matches!(verdict, Verdict::Continue) {
        *credentials = service
            .credentials
            .decide(caller, &PingoraRequestView(head), exchange);
    }
    verdict
}

/// Hop-by-hop headers removed whether or not `Connection` names them (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 3] = ["keep-alive", "proxy-connection", "te"];

fn bad_request(code: &'static str, detail: &'static str) -> Rejection {
    Rejection::new(StatusCode::BAD_REQUEST, code, detail)
}

/// Checks and cleans the head; a rejection says what is wrong.
///
/// # Errors
/// `400` with the reason.
pub fn admit_head(req: &mut RequestHeader) -> Result<(), Rejection> {
    check_host(req)?;
    refuse_h2c_upgrade(req)?;
    fold_content_length(req)?;
    drop_hop_by_hop(req)
}

/// `Upgrade: h2c` asks the next hop to turn the connection into cleartext HTTP/2. Passed
/// on, an upstream that agrees answers 101 and the gateway tunnels the connection from then
/// on: every later request on it (any path, any method) reaches that upstream unrouted and
/// unchecked ("h2c smuggling"). No client needs it through a gateway (RFC 9113 §3.1 retired
/// the upgrade), so it is refused; `HTTP2-Settings` belongs to it and never goes upstream.
fn refuse_h2c_upgrade(req: &mut RequestHeader) -> Result<(), Rejection> {
    let asks_h2c = req
        .headers
        .get_all(UPGRADE)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("h2c").split(','))
        .any(|token| {
            let protocol = token.trim();
            protocol.eq_ignore_ascii_case("h2c")
                || protocol.to_ascii_lowercase().starts_with("h2c/")
        });
    if asks_h2c {
        return Err(bad_request(
            "h2c-upgrade-refused",
            "the gateway does not upgrade a connection to cleartext HTTP/2 (Upgrade: h2c)",
        ));
    }
    req.remove_header("http2-settings");
    Ok(())
}

fn check_host(req: &mut RequestHeader) -> Result<(), Rejection> {
    let hosts = req.headers.get_all(HOST).iter().count();
    if hosts > 1 {
        return Err(bad_request(
            "invalid-host",
            "the request has more than one Host header",
        ));
    }
    let needs_host = req.version == Version::HTTP_11 || req.version == Version::HTTP_2;
    let Some(authority) = req.uri.authority().cloned() else {
        if hosts == 0 && needs_host {
            return Err(bad_request(
                "invalid-host",
                "the request names no host (Host header or :authority)",
            ));
        }
        return Ok(());
    };
    // The router reads the target's authority, a step or the upstream may read Host: they
    // must name the same host (RFC 9113 §8.3.1, RFC 9112 §3.2.2).
    match req.headers.get(HOST) {
        Some(host) => {
            let same = host
                .to_str()
                .ok()
                .and_then(|host| host.parse::<http::uri::Authority>().ok())
                .is_some_and(|host| host.host().eq_ignore_ascii_case(authority.host()));
            if same {
                Ok(())
            } else {
                Err(bad_request(
                    "invalid-host",
                    "the Host header and the request target name different hosts",
                ))
            }
        }
        // An HTTP/2 request carries its host in :authority; the steps and an HTTP/1.1
        // upstream read it in Host.
        None => {
            let host = HeaderValue::from_str(authority.as_str()).map_err(|_| {
                bad_request(
                    "invalid-host",
                    "the request's authority is not a valid host",
                )
            })?;
            req.insert_header(HOST, host)
                .map_err(|_| bad_request("invalid-host", "the request's host cannot be kept"))
        }
    }
}

fn fold_content_length(req: &mut RequestHeader) -> Result<(), Rejection> {
    let mut lengths = req
        .headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("x").split(','))
        .map(|v| digits_only(v.trim()));
    let Some(first) = lengths.next() else {
        return Ok(());
    };
    let invalid = || {
        bad_request(
            "invalid-content-length",
            "the Content-Length header is not one number",
        )
    };
    let first = first.map_err(|_| invalid())?;
    let mut repeated = false;
    for other in lengths {
        if other.map_err(|_| invalid())? != first {
            return Err(invalid());
        }
        repeated = true;
    }
    if req.headers.contains_key(TRANSFER_ENCODING) {
        // RFC 9112 §6.3: Transfer-Encoding frames the body, and an intermediary removes the
        // length (Pingora has, before the gateway sees the head; `eval` gets here). The
        // connection closes after the answer.
        req.remove_header(&CONTENT_LENGTH);
        return Ok(());
    }
    if repeated {
        req.insert_header(CONTENT_LENGTH, first.to_string())
            .map_err(|_| invalid())?;
    }
    Ok(())
}

/// A length is decimal digits only (`+2` and `0x2` are not lengths, though Rust parses the
/// first).
fn digits_only(text: &str) -> Result<u64, ()> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(());
    }
    text.parse().map_err(|_| ())
}

fn drop_hop_by_hop(req: &mut RequestHeader) -> Result<(), Rejection> {
    let mut nominated: Vec<HeaderName> = Vec::new();
    let mut kept: Vec<&'static str> = Vec::new();
    for token in req
        .headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or_default().split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let lower = token.to_ascii_lowercase();
        match lower.as_str() {
            "close" => kept.push("close"),
            "keep-alive" => kept.push("keep-alive"),
            "upgrade" if req.headers.contains_key(UPGRADE) => kept.push("upgrade"),
            "content-length" | "transfer-encoding" | "host" => {
                return Err(bad_request(
                    "invalid-connection-header",
                    "the Connection header names a header that frames or routes the request",
                ));
            }
            _ => {
                if let Ok(name) = HeaderName::from_bytes(lower.as_bytes()) {
                    nominated.push(name);
                }
            }
        }
    }
    if nominated.is_empty() && !HOP_BY_HOP.iter().any(|h| req.headers.contains_key(*h)) {
        return Ok(());
    }
    for name in &nominated {
        req.remove_header(name);
    }
    for name in HOP_BY_HOP {
        req.remove_header(name);
    }
    req.remove_header(&CONNECTION);
    kept.dedup();
    if !kept.is_empty() {
        let value = HeaderValue::from_str(&kept.join(", "))
            .unwrap_or_else(|_| HeaderValue::from_static("close"));
        let _ = req.insert_header(CONNECTION, value);
    }
    Ok(())
}

/// The methods a service takes when its policy lists none.
pub const STANDARD_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// `405` with `Allow`, for a method the service does not take.
#[must_use]
pub fn method_not_allowed(method: &Method, allowed: &[Method]) -> Rejection {
    let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    let rejection = Rejection::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("this service does not take {method} requests"),
    );
    match HeaderValue::from_str(&allow.join(", ")) {
        Ok(value) => rejection.with_header(http::header::ALLOW, value),
        Err(_) => rejection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/x", None).expect("head");
        for (name, value) in lines {
            req.append_header(name.to_string(), *value).expect("header");
        }
        req
    }

    #[test]
    fn an_http2_request_gets_its_host_from_authority_and_the_two_must_agree() {
        let h2 = |host: Option<&str>| {
            let mut req = RequestHeader::build("GET", b"/x", None).expect("head");
            req.set_version(Version::HTTP_2);
            req.set_uri("https://api.example.test:8443/x".parse().expect("uri"));
            if let Some(host) = host {
                req.insert_header("host", host).expect("header");
            }
            req
        };
        let mut req = h2(None);
        admit_head(&mut req).expect("admitted");
        assert_eq!(req.headers["host"], "api.example.test:8443");
        let mut req = h2(Some("API.example.test"));
        admit_head(&mut req).expect("same host, any case, any port");
        let mut req = h2(Some("admin.example.test"));
        assert_eq!(
            admit_head(&mut req).expect_err("mismatch").code,
            "invalid-host"
        );
        let mut req = RequestHeader::build("GET", b"/x", None).expect("head");
        req.set_version(Version::HTTP_2);
        assert_eq!(
            admit_head(&mut req).expect_err("no host").code,
            "invalid-host"
        );
    }

    #[test]
    fn an_upgrade_to_cleartext_http2_is_refused_whatever_its_spelling() {
        for upgrade in ["h2c", "H2C", "websocket, h2c", " h2c/1 ", "\u{e9}"] {
            let mut req = head(&[("host", "a"), ("connection", "Upgrade, HTTP2-Settings")]);
            req.insert_header("upgrade", upgrade.as_bytes())
                .expect("header");
            assert_eq!(
                admit_head(&mut req).expect_err(upgrade).code,
                "h2c-upgrade-refused"
            );
        }
        let mut req = head(&[
            ("host", "a"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
        ]);
        admit_head(&mut req).expect("a websocket upgrade passes");
        assert!(!req.headers.contains_key("http2-settings"));
        assert_eq!(req.headers["upgrade"], "websocket");
    }

    #[test]
    fn nominated_headers_go_and_connection_keeps_only_its_own_tokens() {
        let mut req = head(&[
            ("host", "a"),
            ("connection", "X-Client-Id, keep-alive"),
            ("x-client-id", "forged"),
            ("keep-alive", "timeout=5"),
            ("x-other", "stays"),
        ]);
        admit_head(&mut req).expect("admitted");
        assert!(!req.headers.contains_key("x-client-id"));
        assert!(!req.headers.contains_key("keep-alive"));
        assert_eq!(req.headers["connection"], "keep-alive");
        assert_eq!(req.headers["x-other"], "stays");
        let mut req = head(&[("host", "a"), ("connection", "content-length")]);
        assert_eq!(
            admit_head(&mut req).expect_err("framing").code,
            "invalid-connection-header"
        );
    }

    #[test]
    fn content_length_is_folded_dropped_or_refused() {
        let mut req = head(&[("host", "a"), ("content-length", "5, 5")]);
        admit_head(&mut req).expect("folded");
        assert_eq!(req.headers.get_all("content-length").iter().count(), 1);
        assert_eq!(req.headers["content-length"], "5");
        let mut req = head(&[
            ("host", "a"),
            ("content-length", "5"),
            ("content-length", "5"),
        ]);
        admit_head(&mut req).expect("folded");
        assert_eq!(req.headers.get_all("content-length").iter().count(), 1);
        // Beside Transfer-Encoding the length goes (RFC 9112 §6.3), as Pingora drops it.
        let mut req = head(&[
            ("host", "a"),
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
        ]);
        admit_head(&mut req).expect("framed by Transfer-Encoding");
        assert!(!req.headers.contains_key("content-length"));
        for bad in [
            &[("content-length", "5, 6")][..],
            &[("content-length", "x")],
            &[("content-length", "+5")],
            &[("content-length", "0x5")],
            &[("content-length", "")],
        ] {
            let mut lines = vec![("host", "a")];
            lines.extend_from_slice(bad);
            let mut req = head(&lines);
            assert_eq!(
                admit_head(&mut req).expect_err("refused").code,
                "invalid-content-length",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn http_1_1_needs_exactly_one_host() {
        let mut req = head(&[]);
        assert_eq!(
            admit_head(&mut req).expect_err("no host").code,
            "invalid-host"
        );
        let mut req = head(&[("host", "a"), ("host", "b")]);
        assert_eq!(admit_head(&mut req).expect_err("two").code, "invalid-host");
    }
}
