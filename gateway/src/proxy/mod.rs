//! The Pingora proxy: routes each request to a service, runs its request pipeline before
//! the upstream is contacted, proxies, runs the response pipeline on the way back, and logs.
//!
//! One concern per file: [`context`] (per-request state), [`routing`] (canonical path,
//! service), [`heads`] (Pingora's heads as assertions see them), [`upstream`] (target, peer,
//! forwarding headers), [`phases`] (upstream and response pipelines), [`refusal`] (every
//! answer the gateway writes itself), [`forward`] (bodies past Pingora's replay buffer),
//! [`log`].

mod admission;
mod context;
mod forward;
mod heads;
mod log;
mod phases;
mod refusal;
mod routing;
mod service;
mod upstream;

pub use admission::STANDARD_METHODS;
pub use context::RequestCtx;
pub use heads::{PingoraRequest, PingoraRequestView, PingoraResponse};
pub use log::log_request;
pub use phases::{apply_response_pipeline, upstream_verdict};
pub use refusal::{ambiguous_path, respond};
pub use routing::{route_request, RouteDecision};
pub use service::Gateway;
pub use upstream::{peer_for, prepare_upstream_request, upstream_path, ForwardedHeaders};

use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::ErrorType;
use portcullis_assertions::ip::client_ip;
use portcullis_assertions::{Exchange, Verdict};

use crate::connection::control_of;
use crate::oauth;
use crate::oauth::endpoint::Endpoint;
use refusal::{body_too_large, client_timeout, refuse, upstream_failure};
use routing::{peer_ip, request_host};

/// Pingora keeps this much of a request body for replay; larger pre-read bodies are
/// forwarded by [`forward`].
pub const RETRY_BUFFER_BYTES: usize = 64 * 1024;

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
            pending_refusal: None,
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
        // Requests sent before the previous answer are answered in order (RFC 9112 §9.3.2),
        // not dropped with the connection.
        session.as_downstream_mut().set_pipelining_enabled(true);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let rt = self.state.current();
        ctx.runtime = Some(rt.clone());

        let peer = peer_ip(session);
        // Before anything reads the head: hop-by-hop headers out, framing made unambiguous.
        if let Err(r) = admission::admit_head(session.req_header_mut()) {
            ctx.x = Exchange::new(rt.registry.len(), peer, peer);
            return refuse(session, ctx, &r, false).await;
        }
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
        if !svc.methods.contains(&req.method) {
            let r = admission::method_not_allowed(&req.method, &svc.methods);
            return refuse(session, ctx, &r, false).await;
        }

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
                        ::log::debug!("request body too slow: {e}");
                        return refuse(session, ctx, &client_timeout(), false).await;
                    }
                    Err(e) => {
                        // A body that cannot be read (bad chunk framing, cut short) ends here:
                        // its head never went upstream.
                        ::log::debug!("request body unreadable: {e}");
                        let r = portcullis_assertions::Rejection::new(
                            http::StatusCode::BAD_REQUEST,
                            "malformed-body",
                            "the request body could not be read: its framing is broken or it ended early",
                        );
                        return refuse(session, ctx, &r, false).await;
                    }
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

        // I/O some step needs first (a key set to fetch for an unknown key id, a token's
        // record in the state store), awaited here so the steps themselves never do I/O.
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
        if rt.token_service.as_ref().is_some_and(|ts| ts.usage.durable) {
            // Durable usage: this request's use is in the store before it goes upstream.
            if oauth::background::try_flush_usage(&self.state)
                .await
                .is_err()
            {
                let r = portcullis_assertions::Rejection::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "usage-not-recorded",
                    "the token's use could not be recorded, and this gateway records every use before forwarding",
                );
                return refuse(session, ctx, &r, body.is_some()).await;
            }
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
        let Some((rt, index)) = ctx.routed() else {
            return Ok(());
        };
        let svc = &rt.services[index];
        let trusted = rt.trusted_proxies.contains(ctx.x.peer_ip);
        prepare_upstream_request(
            svc,
            ctx.forwarded_path.as_deref(),
            upstream_request,
            &ctx.x,
            (rt.forwarded_headers, trusted),
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
        let Some((rt, index)) = ctx.routed() else {
            return Ok(());
        };
        let svc = &rt.services[index];
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
        let rejection = if let Some(refusal) = ctx.pending_refusal.take() {
            Some(refusal)
        } else if ctx.body_timed_out() {
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
