//! Forwarding of requests whose body the pipeline read in full and that are larger than
//! Pingora's 64 KiB replay buffer.
//!
//! Pingora replays a body read in `request_filter` only from its retry buffer; past 64 KiB
//! it would send the head and no body. Such requests are forwarded here instead, over
//! Pingora's own connector and connection pool: the buffered body goes up with an exact
//! `Content-Length`, the response head runs through the service's response pipeline, and
//! the response body streams back.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

use portcullis_assertions::Rejection;

use super::balance::{after_failure, choose_target, record_answer, Failure};
use super::context::RequestCtx;
use super::heads::PingoraRequest;
use super::phases::{apply_response_pipeline, upstream_verdict};
use super::refusal::respond;
use super::service::Gateway;
use super::upstream::prepare_upstream_request;

/// How long a connection released to the pool may stay idle.
const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Largest response a whole-response step (e.g. `mask_pan` in block mode) inspects.
const MAX_WHOLE_RESPONSE: usize = 32 * 1024 * 1024;

/// Reads the whole response, runs it through the body processors, and sends it, or the
/// refusal one of them reached, in its place.
async fn whole_response(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut up: pingora::protocols::http::client::HttpSession,
    peer: &HttpPeer,
    mut resp: ResponseHeader,
    service: &str,
) -> Result<()> {
    let mut body = Vec::new();
    while let Some(chunk) = up.read_response_body().await.map_err(Error::into_up)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_WHOLE_RESPONSE {
            let r = Rejection::new(
                http::StatusCode::BAD_GATEWAY,
                "response-too-large-to-inspect",
                "the upstream's answer is larger than the gateway inspects",
            );
            ctx.refused(r.code);
            return respond(session, &r).await;
        }
    }
    gw.connector
        .release_http_session(up, peer, Some(POOL_IDLE))
        .await;
    let out = match ctx.take_replacement(true) {
        Some(replaced) => replaced.unwrap_or_default(),
        None => ctx.process_chunk(Some(&body), true).unwrap_or_default(),
    };
    if let Some(r) = ctx.body_refusal() {
        // The audit record says what and where, never the data.
        log::warn!(
            "audit: service {service}: response to {} {} withheld: {}",
            session.req_header().method,
            session.req_header().uri.path(),
            r.code
        );
        ctx.refused(r.code);
        return respond(session, &r).await;
    }
    resp.remove_header(&TRANSFER_ENCODING);
    resp.insert_header(CONTENT_LENGTH, out.len().to_string())?;
    session
        .write_response_header(Box::new(resp), false)
        .await
        .map_err(Error::into_down)?;
    session
        .write_response_body(Some(out), true)
        .await
        .map_err(Error::into_down)
}

/// Connections tried to one target before giving up on it: pooled ones the upstream may
/// have closed while idle, then a fresh one.
const MAX_STALE: usize = 3;

/// Writes the request and reads the response head.
async fn send(
    up: &mut pingora::protocols::http::client::HttpSession,
    req: &RequestHeader,
    body: &Bytes,
) -> Result<()> {
    up.write_request_header(Box::new(req.clone())).await?;
    up.write_request_body(body.clone(), true).await?;
    up.finish_request_body().await?;
    up.read_response_header().await
}

/// The head for one attempt: rewritten for the chosen target, through the upstream phase.
fn head_for_attempt(
    session: &Session,
    ctx: &mut RequestCtx,
    body: &Bytes,
) -> Result<RequestHeader> {
    let routed = ctx
        .routed()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no service selected"))?;
    let (rt, svc) = (routed.runtime(), routed.service());
    let host = ctx
        .attempt
        .as_ref()
        .map(|a| a.target.host_header.clone())
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no target chosen"))?;
    let mut req = session.req_header().clone();
    let trusted = rt.trusted_proxies.contains(ctx.exchange.peer_ip);
    ctx.credential_outcome = prepare_upstream_request(
        svc,
        &host,
        ctx.forwarded_path.as_deref(),
        &mut req,
        &ctx.exchange,
        (
            rt.forwarded_headers,
            super::upstream::Arrival {
                trusted_peer: trusted,
                https: super::arrived_over_tls(session),
            },
        ),
        &ctx.credentials,
    )?;
    let verdict = svc.run_upstream(&mut PingoraRequest(&mut req), Some(body), &mut ctx.exchange);
    upstream_verdict(verdict, ctx)?;
    req.remove_header(&TRANSFER_ENCODING);
    req.remove_header(&EXPECT);
    req.insert_header(CONTENT_LENGTH, body.len().to_string())?;
    Ok(req)
}

/// Sends the request with its buffered `body` upstream and relays the response.
///
/// # Errors
/// Upstream failures come back marked as upstream errors (so they answer 502/504) and
/// client-side failures as downstream errors.
pub async fn forward_buffered(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    body: Bytes,
) -> Result<()> {
    let routed = ctx
        .routed()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no service selected"))?;
    let svc = routed.service();

    // The body is held whole, so any failure before the answer is retried as the pool
    // allows; a pooled connection the upstream closed while idle is retried at once.
    let (mut up, peer) = 'attempts: loop {
        let peer = choose_target(ctx, session.req_header())?;
        let req = head_for_attempt(session, ctx, &body)?;
        let mut stale = 0;
        loop {
            let (mut up, reused) = match gw.connector.get_http_session(&peer).await {
                Ok(connected) => connected,
                Err(e) => {
                    if after_failure(ctx, Failure::Connect, true) {
                        continue 'attempts;
                    }
                    return Err(e.into_up());
                }
            };
            match send(&mut up, &req, &body).await {
                Ok(()) => break 'attempts (up, peer),
                Err(_) if reused && stale + 1 < MAX_STALE => stale += 1,
                Err(e) => {
                    if after_failure(ctx, Failure::Exchange, true) {
                        continue 'attempts;
                    }
                    return Err(e.into_up());
                }
            }
        }
    };
    let mut resp = up.response_header().cloned().ok_or_else(|| {
        Error::explain(ErrorType::InvalidHTTPHeader, "no response header").into_up()
    })?;
    record_answer(ctx, resp.status.as_u16());
    apply_response_pipeline(svc, session.req_header(), &mut resp, ctx)?;
    if svc.needs.whole_response {
        return whole_response(gw, session, ctx, up, &peer, resp, &svc.name).await;
    }
    session
        .write_response_header(Box::new(resp), false)
        .await
        .map_err(Error::into_down)?;
    loop {
        let chunk = up.read_response_body().await.map_err(Error::into_up)?;
        let end = chunk.is_none();
        let chunk = match ctx.take_replacement(end) {
            Some(replaced) => replaced,
            None => ctx.process_chunk(chunk.as_deref(), end),
        };
        if chunk.is_some() || end {
            session
                .write_response_body(chunk, end)
                .await
                .map_err(Error::into_down)?;
        }
        if end {
            break;
        }
    }
    gw.connector
        .release_http_session(up, &peer, Some(POOL_IDLE))
        .await;
    Ok(())
}
