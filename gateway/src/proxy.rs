//! The Pingora proxy: routes each request to a service, runs its request pipeline before
//! the upstream is contacted, proxies, runs the response pipeline on the way back, and logs.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{ErrorSource, ErrorType};
use portcullis_assertions::ip::client_ip;
use portcullis_assertions::{
    process_body, BodyProcessor, Exchange, Rejection, RequestHead, RequestView, ResponseHead,
    Verdict,
};

use crate::access_log::{now_rfc3339, AccessRecord};
use crate::connection::{control_of, ConnectionControl};
use crate::forward;
use crate::oauth;
use crate::oauth::endpoint::Endpoint;
use crate::runtime::{Runtime, Service, Upstream};
use crate::state::GatewayState;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Pingora keeps this much of a request body for replay; larger pre-read bodies are
/// forwarded by [`forward`].
pub const RETRY_BUFFER_BYTES: usize = 64 * 1024;

/// The proxy service.
pub struct Gateway {
    pub state: Arc<GatewayState>,
    pub connector: pingora::connectors::http::Connector,
}

impl Gateway {
    #[must_use]
    pub fn new(state: Arc<GatewayState>) -> Self {
        Gateway {
            state,
            connector: pingora::connectors::http::Connector::new(None),
        }
    }
}

/// Per-request state.
pub struct RequestCtx {
    runtime: Option<Arc<Runtime>>,
    service: Option<usize>,
    pub x: Exchange,
    start: Instant,
    /// Body bytes seen while streaming (for the size limit).
    body_seen: u64,
    /// The refusal code, for the log.
    reason: Option<&'static str>,
    /// A response-side refusal replaces the upstream body with this.
    replace_body: Option<Bytes>,
    /// The request body, when the pipeline read it (outbound signing hashes it).
    body: Option<Bytes>,
    /// What the response pipeline does to this response's body (masking, recompression).
    processors: Vec<Box<dyn BodyProcessor>>,
    /// When the request body was rewritten: how much of the replay has been swapped so far.
    replay_rewritten: Option<usize>,
    /// The canonical path to forward, when it differs from the one the client sent.
    pub forwarded_path: Option<String>,
    /// The connection's deadlines, moved on as the request is read and answered.
    connection: Option<Arc<ConnectionControl>>,
}

impl RequestCtx {
    fn service(&self) -> Option<&Service> {
        let rt = self.runtime.as_ref()?;
        rt.services.get(self.service?)
    }

    /// The policy this request runs on.
    #[must_use]
    pub fn runtime_arc(&self) -> Option<Arc<Runtime>> {
        self.runtime.clone()
    }

    #[must_use]
    pub fn service_index(&self) -> Option<usize> {
        self.service
    }

    /// Like [`RequestCtx::process_chunk`], masking Pingora's own buffer when it is not
    /// shared and a single processor can work in place (no copy of the chunk).
    pub fn process_owned_chunk(&mut self, chunk: Option<Bytes>, end: bool) -> Option<Bytes> {
        let chunk = match chunk {
            Some(bytes) if !bytes.is_empty() && self.processors.len() == 1 => {
                match bytes.try_into_mut() {
                    Ok(mut owned) => {
                        let done = self
                            .processors
                            .first_mut()
                            .and_then(|p| p.process_in_place(&mut owned, end));
                        if let Some((emit, changed)) = done {
                            self.count_changed(changed);
                            owned.truncate(emit);
                            return (emit > 0 || end).then(|| owned.freeze());
                        }
                        Some(owned.freeze())
                    }
                    Err(shared) => Some(shared),
                }
            }
            other => other,
        };
        self.process_chunk(chunk.as_deref(), end)
    }

    /// Runs a response body chunk through this response's processors; `None` when nothing
    /// is to be sent yet.
    pub fn process_chunk(&mut self, chunk: Option<&[u8]>, end: bool) -> Option<Bytes> {
        let (out, changed) = process_body(&mut self.processors, chunk.unwrap_or_default(), end);
        self.count_changed(changed);
        (!out.is_empty() || end).then(|| Bytes::from(out))
    }

    /// Counts items (card numbers) a body processor changed, for the service's metric.
    fn count_changed(&self, changed: usize) {
        if changed > 0 {
            if let Some(svc) = self.service() {
                svc.metrics.body_items_changed(changed);
            }
        }
    }

    /// A refusal a body processor reached after seeing the whole body.
    #[must_use]
    pub fn body_refusal(&self) -> Option<Rejection> {
        self.processors.iter().find_map(|p| p.refusal())
    }

    /// True when the client was cut off for sending its body too slowly.
    fn body_timed_out(&self) -> bool {
        self.connection.as_ref().is_some_and(|c| c.body_timed_out())
    }

    /// Records why a request was refused, for the log.
    pub fn refused(&mut self, code: &'static str) {
        self.reason = Some(code);
    }

    /// When a response-side refusal replaced the body: `Some(None)` for a chunk to drop,
    /// `Some(Some(problem))` at the end. `None` when the body passes unchanged.
    pub fn take_replacement(&mut self, end: bool) -> Option<Option<Bytes>> {
        self.replace_body.as_ref()?;
        Some(if end { self.replace_body.take() } else { None })
    }
}

/// Pingora's request head as an assertion sees it.
pub struct PingoraRequest<'a>(pub &'a mut RequestHeader);

impl RequestView for PingoraRequest<'_> {
    fn method(&self) -> &Method {
        &self.0.method
    }
    fn uri(&self) -> &Uri {
        &self.0.uri
    }
    fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }
}

impl RequestHead for PingoraRequest<'_> {
    fn set_header(&mut self, name: HeaderName, value: HeaderValue) {
        let _ = self.0.insert_header(name, value);
    }
    fn remove_header(&mut self, name: &HeaderName) {
        self.0.remove_header(name);
    }
}

/// A read-only view, for response-side templates.
pub struct PingoraRequestView<'a>(pub &'a RequestHeader);

impl RequestView for PingoraRequestView<'_> {
    fn method(&self) -> &Method {
        &self.0.method
    }
    fn uri(&self) -> &Uri {
        &self.0.uri
    }
    fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }
}

/// Pingora's response head as an assertion sees it.
pub struct PingoraResponse<'a>(pub &'a mut ResponseHeader);

impl ResponseHead for PingoraResponse<'_> {
    fn status(&self) -> StatusCode {
        self.0.status
    }
    fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }
    fn set_header(&mut self, name: HeaderName, value: HeaderValue) {
        let _ = self.0.insert_header(name, value);
    }
    fn remove_header(&mut self, name: &HeaderName) {
        self.0.remove_header(name);
    }
}

/// Writes a problem+json answer. The one place a refusal becomes bytes on the wire.
pub async fn respond(session: &mut Session, r: &Rejection) -> Result<()> {
    let body = Bytes::from(r.problem_json());
    let mut resp = ResponseHeader::build(r.status, Some(4 + r.headers.len()))?;
    resp.insert_header(CONTENT_TYPE, "application/problem+json")?;
    resp.insert_header(CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(CACHE_CONTROL, "no-store")?;
    for (name, value) in &r.headers {
        resp.insert_header(name.clone(), value.clone())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// The refusal for a path an upstream could read differently from the router.
#[must_use]
pub fn ambiguous_path(detail: impl Into<std::borrow::Cow<'static, str>>) -> Rejection {
    Rejection::new(StatusCode::BAD_REQUEST, "ambiguous-path", detail)
}

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

/// Answers a refusal; closes the connection when the request body was not read, since
/// what follows on the connection would be that body, not a request.
async fn refuse(
    session: &mut Session,
    ctx: &mut RequestCtx,
    r: &Rejection,
    body_read: bool,
) -> Result<bool> {
    ctx.reason = Some(r.code);
    if !body_read && !session.is_body_empty() {
        session.set_keepalive(None);
    }
    respond(session, r).await?;
    Ok(true)
}

fn peer_ip(session: &Session) -> IpAddr {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), std::net::SocketAddr::ip)
}

fn request_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())
}

/// The path and query to send upstream: the canonical `path` with the route's segments
/// taken off under `strip_prefix`, behind the upstream's base path.
#[must_use]
pub fn upstream_path(svc: &Service, path: &str, query: Option<&str>) -> String {
    let up = &svc.upstream;
    let rest = if up.strip_prefix {
        crate::path::strip_segments(path, svc.route_segments)
    } else {
        path
    };
    let mut out = String::with_capacity(up.base_path.len() + rest.len() + 1);
    out.push_str(&up.base_path);
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Builds the Pingora peer for an upstream.
#[must_use]
pub fn peer_for(up: &Upstream) -> HttpPeer {
    let mut peer = HttpPeer::new(up.addr, up.tls, up.sni.clone());
    peer.options.connection_timeout = Some(up.connect_timeout);
    peer.options.read_timeout = Some(up.read_timeout);
    peer.options.verify_cert = up.verify_tls;
    peer.options.verify_hostname = up.verify_tls;
    peer.options.ca.clone_from(&up.ca);
    peer.group_key = up.pool_group;
    peer
}

/// Rewrites the head that goes upstream: path (the canonical one the router matched, so
/// the upstream reads what was routed), `Host`, `X-Forwarded-*`.
pub fn prepare_upstream_request(
    svc: &Service,
    forwarded_path: Option<&str>,
    req: &mut RequestHeader,
    x: &Exchange,
    trusted_peer: bool,
) -> Result<()> {
    let up = &svc.upstream;
    let original_host = req.headers.get(HOST).cloned();
    if up.strip_prefix || !up.base_path.is_empty() || forwarded_path.is_some() {
        let path = forwarded_path.unwrap_or_else(|| req.uri.path());
        let target = upstream_path(svc, path, req.uri.query());
        req.set_uri(
            target
                .parse::<Uri>()
                .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "bad upstream path"))?,
        );
    }
    if !up.preserve_host {
        req.insert_header(HOST, up.host_header.clone())?;
        // The upstream sees its own name in Host; tell it which one the client used.
        if let Some(host) = original_host {
            req.insert_header(X_FORWARDED_HOST, host)?;
        }
    }
    // From a trusted proxy the chain so far is kept (every header line, in order) and the
    // peer appended; from anyone else the client's claims are dropped.
    let mut forwarded = String::new();
    if trusted_peer {
        for prior in req
            .headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            forwarded.push_str(prior);
            forwarded.push_str(", ");
        }
    }
    let _ = write!(forwarded, "{}", x.peer_ip);
    let forwarded = HeaderValue::from_str(&forwarded)
        .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "bad X-Forwarded-For"))?;
    req.insert_header(X_FORWARDED_FOR, forwarded)?;
    let proto = req
        .headers
        .get(&X_FORWARDED_PROTO)
        .filter(|_| trusted_peer)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("http"));
    req.insert_header(X_FORWARDED_PROTO, proto)?;
    Ok(())
}

fn client_timeout() -> Rejection {
    Rejection::new(
        StatusCode::REQUEST_TIMEOUT,
        "client-timeout",
        "the request was not received in time",
    )
}

fn body_too_large(limit: u64) -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        format!("the request body is larger than this service accepts ({limit} bytes)"),
    )
}

/// Why the upstream exchange failed, as the client should hear it.
fn upstream_failure(e: &Error) -> Option<Rejection> {
    use ErrorType::{ConnectTimedout, HTTPStatus, ReadTimedout, WriteTimedout};
    match (e.etype(), e.esource()) {
        (HTTPStatus(413), _) => Some(Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "the request body is larger than this service accepts",
        )),
        (HTTPStatus(code), _) => StatusCode::from_u16(*code)
            .ok()
            .map(|s| Rejection::new(s, "request-failed", s.canonical_reason().unwrap_or("error"))),
        (ConnectTimedout | ReadTimedout | WriteTimedout, ErrorSource::Upstream) => {
            Some(Rejection::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                "the upstream service did not answer in time",
            ))
        }
        (_, ErrorSource::Upstream) => Some(Rejection::new(
            StatusCode::BAD_GATEWAY,
            "upstream-unavailable",
            "the upstream service could not be reached or failed",
        )),
        (ReadTimedout, ErrorSource::Downstream) => Some(client_timeout()),
        (_, ErrorSource::Downstream) => None,
        _ => Some(Rejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "the gateway could not process the request",
        )),
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            runtime: None,
            service: None,
            x: Exchange::default(),
            start: Instant::now(),
            body_seen: 0,
            reason: None,
            replace_body: None,
            body: None,
            processors: Vec::new(),
            replay_rewritten: None,
            forwarded_path: None,
            connection: None,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The head is in: from here the body deadline (if any) applies, not the head's.
        ctx.connection = control_of(session);
        if let Some(connection) = &ctx.connection {
            connection.head_read(!session.is_body_empty());
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let rt = self.state.current();
        ctx.runtime = Some(rt.clone());

        let peer = peer_ip(session);
        let client = client_ip(
            peer,
            session
                .req_header()
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok()),
            &rt.trusted_proxies,
        );
        ctx.x = Exchange::new(rt.registry.len(), client, peer);

        let req = session.req_header();
        if let Some(ts) = rt.token_service.as_ref() {
            let endpoint = crate::path::canonicalize(req.uri.path())
                .ok()
                .and_then(|c| Endpoint::for_path(&c.routing));
            if let Some(ep) = endpoint {
                // The token service's own endpoints, ahead of every service route.
                let answer = oauth::endpoint::serve(ts, session, ep).await?;
                self.state
                    .metrics
                    .token_answer(ep.name(), answer.reason.unwrap_or("ok"));
                ctx.reason = answer.reason;
                oauth::endpoint::write(session, &answer).await?;
                return Ok(true);
            }
        }
        let req = session.req_header();
        let index = match route_request(&rt, request_host(req), req.uri.path()) {
            Ok(decision) => {
                ctx.forwarded_path = decision.forwarded;
                decision.service
            }
            Err(r) => return refuse(session, ctx, &r, false).await,
        };
        ctx.service = Some(index);
        let Some(svc) = rt.services.get(index) else {
            return Ok(false);
        };

        // Refuse a declared oversize body before reading any of it.
        let declared = req
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > svc.max_request_body) {
            return refuse(session, ctx, &body_too_large(svc.max_request_body), false).await;
        }

        let body = if svc.needs.request_body && session.is_body_empty() {
            // Nothing to read or replay (a GET without a body): the steps see an empty body.
            Some(Bytes::new())
        } else if svc.needs.request_body {
            session.enable_retry_buffering();
            let mut buf = bytes::BytesMut::new();
            loop {
                let chunk = match session.read_request_body().await {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break,
                    Err(e) if ctx.body_timed_out() => {
                        log::debug!("request body too slow: {e}");
                        return refuse(session, ctx, &client_timeout(), false).await;
                    }
                    Err(e) => return Err(e.into_down()),
                };
                if (buf.len() + chunk.len()) as u64 > svc.max_request_body {
                    return refuse(session, ctx, &body_too_large(svc.max_request_body), false)
                        .await;
                }
                buf.extend_from_slice(&chunk);
            }
            if let Some(connection) = &ctx.connection {
                connection.body_read();
            }
            Some(buf.freeze())
        } else {
            None
        };

        // Remote work some step needs first (a key set to fetch for an unknown key id).
        if let Some(work) = svc
            .request
            .prefetch(&PingoraRequestView(session.req_header()))
        {
            work.await;
        }
        let verdict = svc.run_request(
            &mut PingoraRequest(session.req_header_mut()),
            body.as_deref(),
            &mut ctx.x,
        );
        if let Verdict::Reject(r) = verdict {
            return refuse(session, ctx, &r, body.is_some()).await;
        }

        if let Some(mut body) = body {
            if let Some(rewritten) = svc.rewrite_request_body(&body, &mut ctx.x) {
                // Same length: Pingora's replay of the original is swapped for this copy
                // piece by piece in request_body_filter.
                body = Bytes::from(rewritten);
                ctx.replay_rewritten = Some(0);
            }
            ctx.body = Some(body.clone());
            if body.len() > RETRY_BUFFER_BYTES || svc.needs.whole_response {
                // Pingora cannot replay more than its retry buffer, nor hold a response back
                // until all of it has been seen: forward it ourselves.
                ctx.body_seen = body.len() as u64;
                forward::forward_buffered(self, session, ctx, body).await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let svc = ctx
            .service()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no service selected"))?;
        Ok(Box::new(peer_for(&svc.upstream)))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(rt) = ctx.runtime.clone() else {
            return Ok(());
        };
        let Some(svc) = ctx.service.and_then(|i| rt.services.get(i)) else {
            return Ok(());
        };
        let trusted = rt.trusted_proxies.contains(ctx.x.peer_ip);
        prepare_upstream_request(
            svc,
            ctx.forwarded_path.as_deref(),
            upstream_request,
            &ctx.x,
            trusted,
        )?;
        let body = ctx.body.clone();
        let verdict = svc.run_upstream(
            &mut PingoraRequest(upstream_request),
            body.as_deref(),
            &mut ctx.x,
        );
        upstream_verdict(verdict, ctx)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if end_of_stream {
            if let Some(connection) = &ctx.connection {
                connection.body_read();
            }
        }
        if let (Some(chunk), Some(offset), Some(rewritten)) =
            (body.as_mut(), ctx.replay_rewritten, ctx.body.as_ref())
        {
            let end = (offset + chunk.len()).min(rewritten.len());
            *chunk = rewritten.slice(offset..end);
            ctx.replay_rewritten = Some(end);
        }
        if let Some(chunk) = body {
            ctx.body_seen += chunk.len() as u64;
            let limit = ctx.service().map_or(u64::MAX, |s| s.max_request_body);
            if ctx.body_seen > limit {
                ctx.reason = Some("body-too-large");
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body over the service limit",
                ));
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(rt) = ctx.runtime.clone() else {
            return Ok(());
        };
        let Some(svc) = ctx.service.and_then(|i| rt.services.get(i)) else {
            return Ok(());
        };
        apply_response_pipeline(svc, session.req_header(), upstream_response, ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(replaced) = ctx.take_replacement(end_of_stream) {
            *body = replaced;
        } else if !ctx.processors.is_empty() {
            let chunk = body.take();
            *body = ctx.process_owned_chunk(chunk, end_of_stream);
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let rejection = if ctx.body_timed_out() {
            Some(client_timeout())
        } else {
            upstream_failure(e)
        };
        let code = match &rejection {
            Some(r) if session.response_written().is_none() => {
                ctx.reason = Some(r.code);
                // Pingora does not reuse the connection after a failure: say so.
                session.set_keepalive(None);
                if respond(session, r).await.is_err() {
                    0
                } else {
                    r.status.as_u16()
                }
            }
            Some(r) => r.status.as_u16(),
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        // The exchange is over: the connection waits for its next request.
        if let Some(connection) = &ctx.connection {
            connection.response_sent();
        }
        log_request(
            &self.state,
            session.req_header(),
            session.response_written().map(|r| r.status.as_u16()),
            ctx,
        );
    }

    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        // Never the query string: it may hold credentials.
        let req = session.req_header();
        format!("{} {}", req.method, req.uri.path())
    }
}

/// A refusal in the upstream phase (outbound signing failed) becomes an error the client
/// hears as that status.
pub fn upstream_verdict(verdict: Verdict, ctx: &mut RequestCtx) -> Result<()> {
    match verdict {
        Verdict::Continue => Ok(()),
        Verdict::Reject(r) => {
            ctx.reason = Some(r.code);
            Err(Error::explain(
                ErrorType::HTTPStatus(r.status.as_u16()),
                "upstream phase refused the request",
            ))
        }
    }
}

/// Runs the response pipeline on an upstream response head; a refusal turns the response
/// into a problem+json answer whose body replaces the upstream's.
pub fn apply_response_pipeline(
    svc: &Service,
    req: &RequestHeader,
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if svc.response.is_empty() {
        return Ok(());
    }
    let verdict = svc.run_response(
        &PingoraRequestView(req),
        &mut PingoraResponse(resp),
        &mut ctx.x,
    );
    if let Verdict::Reject(r) = verdict {
        ctx.reason = Some(r.code);
        let body = Bytes::from(r.problem_json());
        resp.set_status(r.status)?;
        for name in [CONTENT_ENCODING, TRANSFER_ENCODING] {
            resp.remove_header(&name);
        }
        resp.insert_header(CONTENT_TYPE, "application/problem+json")?;
        resp.insert_header(CONTENT_LENGTH, body.len().to_string())?;
        for (name, value) in &r.headers {
            resp.insert_header(name.clone(), value.clone())?;
        }
        ctx.replace_body = Some(body);
        return Ok(());
    }
    ctx.processors = svc.response.response_bodies(
        &PingoraRequestView(req),
        &mut PingoraResponse(resp),
        &mut ctx.x,
    );
    Ok(())
}

/// Counts and logs a finished request.
pub fn log_request(
    state: &GatewayState,
    req: &RequestHeader,
    status: Option<u16>,
    ctx: &RequestCtx,
) {
    let status = status.unwrap_or(0);
    let elapsed = ctx.start.elapsed().as_secs_f64();
    let svc = ctx.service();
    match svc {
        Some(s) => s.metrics.finished(status, elapsed),
        None => state.metrics.unrouted(status),
    }
    if !state.log.enabled() {
        return;
    }
    let client_id = ctx.x.get(portcullis_assertions::exchange::CLIENT_ID);
    state.log.write(&AccessRecord {
        ts: now_rfc3339(),
        service: svc.map_or("", |s| &s.name),
        route: svc.map_or("", |s| &s.route),
        method: req.method.as_str(),
        path: req.uri.path(),
        status,
        latency_ms: (elapsed * 1_000_000.0).round() / 1000.0,
        client_ip: ctx.x.client_ip.to_string(),
        client_id,
        denied_by: ctx.x.denied_by,
        reason: ctx.reason,
        generation: ctx.runtime.as_ref().map_or(0, |r| r.generation),
    });
}
