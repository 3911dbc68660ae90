//! The end of a request: metrics and the access log.

use pingora::http::RequestHeader;

use super::context::RequestCtx;
use crate::access_log::{now_rfc3339, AccessRecord, ShadowEntry};
use crate::state::GatewayState;

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
        Some(s) => {
            s.metrics.finished(status, elapsed);
            s.metrics.count_shadow(ctx.exchange.shadow_records());
        }
        None => state.metrics.unrouted(status),
    }
    // Counted once per request here, not where the head is built (Pingora may retry that).
    if let Some(outcome) = ctx.credential_outcome.as_ref().filter(|o| o.stripped) {
        if let Some(counter) = &outcome.rule.stripped {
            counter.inc();
        }
    }
    if !state.log.enabled() {
        return;
    }
    let client_id = ctx.exchange.get(portcullis_assertions::exchange::CLIENT_ID);
    // Only an answer the upstream gave (no refusal of the gateway's own) earns the hint.
    let credentials = ctx.credential_outcome.as_ref().zip(svc);
    let hint = credentials
        .filter(|_| ctx.reason.is_none())
        .and_then(|(outcome, s)| outcome.hint(status, &s.credentials));
    state.log.write(&AccessRecord {
        timestamp: now_rfc3339(),
        service: svc.map_or("", |s| &s.name),
        route: svc.map_or("", |s| &s.route),
        method: req.method.as_str(),
        path: req.uri.path(),
        status,
        latency_ms: (elapsed * 1_000_000.0).round() / 1000.0,
        client_ip: ctx.exchange.client_ip.to_string(),
        client_id,
        denied_by: ctx.exchange.denied_by,
        reason: ctx.reason,
        credentials: credentials.map(|(o, _)| if o.stripped { "stripped" } else { "forwarded" }),
        credentials_rule: credentials.map(|(o, _)| &*o.rule.name),
        credentials_places: credentials
            .map(|(o, s)| s.credentials.labels(o.places))
            .unwrap_or_default(),
        hint,
        shadow: ctx
            .exchange
            .shadow_records()
            .iter()
            .map(ShadowEntry::of)
            .collect(),
        generation: ctx.runtime.as_ref().map_or(0, |r| r.generation),
        request: captured(ctx, svc, status).as_ref(),
    });
}

/// The request as the client sent it, for the access log's capture mode (the body is added
/// when the pipeline reads it).
pub(super) fn capture_request(
    key: &crate::capture::CaptureKey,
    head: &RequestHeader,
    (peer, https): (std::net::IpAddr, bool),
) -> crate::capture::CapturedRequest {
    let target = head
        .uri
        .path_and_query()
        .map_or_else(|| head.uri.path(), http::uri::PathAndQuery::as_str);
    let now = u64::try_from(crate::store::now_secs()).unwrap_or(0);
    crate::capture::capture(
        key,
        (now, peer, https),
        (head.method.as_str(), target),
        head.headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes())),
        None,
    )
}

/// The captured request with what became of it: its body (when read), service and status.
fn captured(
    ctx: &RequestCtx,
    svc: Option<&crate::runtime::Service>,
    status: u16,
) -> Option<crate::capture::CapturedRequest> {
    let mut captured = ctx.captured.clone()?;
    if let Some(body) = ctx.body.as_deref() {
        captured = captured.with_body(body);
    }
    captured.service = svc.map(|s| s.name.to_string());
    captured.status = Some(status);
    Some(captured)
}
