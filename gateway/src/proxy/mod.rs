//! The Pingora proxy: routes each request to a service, runs its request pipeline before
//! the upstream is contacted, proxies, runs the response pipeline on the way back, and logs.
//!
//! One concern per file: [`context`] (per-request state), [`routing`] (canonical path,
//! service), [`heads`] (Pingora's heads as assertions see them), [`upstream`] (target, peer,
//! forwarding headers), [`phases`] (upstream and response pipelines), [`refusal`] (every
//! answer the gateway writes itself), [`forward`] (bodies past Pingora's replay buffer),
//! [`log`].

mod admission;
mod balance;
mod context;
mod forward;
mod guarded;
mod heads;
mod log;
mod phases;
mod refusal;
mod routing;
mod service;
mod upstream;

pub use admission::{
    admit_request, check_body_size, run_request_pipeline, Admitted, STANDARD_METHODS,
};
pub use context::{RequestCtx, Routed};
pub use guarded::GuardedProxy;
pub use heads::{PingoraRequest, PingoraRequestView, PingoraResponse};
pub use log::log_request;
pub use phases::{apply_response_pipeline, run_response_phase, upstream_verdict, ResponseBody};
pub use refusal::{ambiguous_path, respond, with_response_headers};
pub use routing::{request_host, route_request, RouteDecision};
pub use service::Gateway;
pub use upstream::{peer_for, prepare_upstream_request, upstream_path, Arrival};

use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::ErrorType;
use portcullis_assertions::{Exchange, Rejection, Verdict};

use crate::connection::control_of;
use crate::credentials::CredentialPlan;
use crate::oauth;
use crate::oauth::endpoint::Endpoint;
use crate::runtime::{Runtime, Service};
use refusal::{client_timeout, refuse, upstream_failure};
use routing::peer_ip;

/// Pingora keeps this much of a request body for replay; larger pre-read bodies are
/// forwarded by [`forward`].
pub const RETRY_BUFFER_BYTES: usize = 64 * 1024;

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            runtime: None,
            routed: None,
            exchange: Exchange::default(),
            start: Instant::now(),
            body_seen: 0,
            reason: None,
            replace_body: None,
            body: None,
            processors: Vec::new(),
            replay_rewritten: None,
            forwarded_path: None,
            pending_refusal: None,
            stream_permit: None,
            stream_refused: None,
            connection: None,
            credentials: CredentialPlan::default(),
            credential_outcome: None,
            captured: None,
            attempt: None,
            tried: 0,
            tries: 0,
            in_flight: false,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.state
            .requests_in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        ctx.in_flight = true;
        // The head is in: from here the body deadline (if any) applies, not the head's.
        ctx.connection = control_of(session);
        if let Some(connection) = &ctx.connection {
            connection.head_read(!session.is_body_empty());
        }
        // Requests sent before the previous answer are answered in order (RFC 9112 §9.3.2),
        // not dropped with the connection.
        session.as_downstream_mut().set_pipelining_enabled(true);
        if session.is_http2() {
            self.count_stream(session, ctx);
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let runtime = self.state.current();
        ctx.runtime = Some(runtime.clone());
        if let Some(refusal) = ctx.stream_refused {
            return refuse(session, ctx, &refusal.rejection(), false).await;
        }

        let peer = peer_ip(session);
        let https = arrived_over_tls(session);
        if let Some(key) = &runtime.capture {
            ctx.captured = Some(log::capture_request(
                key,
                session.req_header(),
                (peer, https),
            ));
        }
        let (client, admitted) = admit_request(&runtime, session.req_header_mut(), (peer, https));
        ctx.exchange = Exchange::new(runtime.registry.len(), client, peer);
        let decision = match admitted {
            Ok(Admitted::Service(decision)) => decision,
            Ok(Admitted::TokenEndpoint(endpoint)) => {
                return self.serve_token_endpoint(session, ctx, endpoint).await;
            }
            Ok(Admitted::SamlIssuer) => return self.serve_saml_issuer(session, ctx).await,
            Ok(Admitted::OProxy(route)) => return self.serve_oproxy(session, ctx, route).await,
            Err(rejection) => return refuse(session, ctx, &rejection, false).await,
        };
        decision.set_params(&mut ctx.exchange);
        ctx.forwarded_path = decision.forwarded;
        let Some(routed) = Routed::new(runtime.clone(), decision.service) else {
            return Ok(false);
        };
        ctx.routed = Some(routed.clone());
        let service = routed.service();

        let body = match read_request_body(session, ctx, service).await {
            Ok(body) => body,
            Err(rejection) => return refuse(session, ctx, &rejection, false).await,
        };
        let verdict = run_request_pipeline(
            service,
            session.req_header_mut(),
            body.as_deref(),
            &mut ctx.exchange,
            &mut ctx.credentials,
        )
        .await;
        if let Verdict::Reject(rejection) = verdict {
            return refuse(session, ctx, &rejection, body.is_some()).await;
        }
        if let Err(rejection) = self.record_usage_durably(&runtime).await {
            return refuse(session, ctx, &rejection, body.is_some()).await;
        }
        if let Some(issuing) = service.issue_saml.clone() {
            return self
                .issue_for_pipeline(session, ctx, &issuing, body.is_some())
                .await;
        }

        if let Some(mut body) = body {
            if let Some(rewritten) = service.rewrite_request_body(&body, &mut ctx.exchange) {
                // Same length: Pingora's replay of the original is swapped for this copy
                // piece by piece in request_body_filter.
                body = Bytes::from(rewritten);
                ctx.replay_rewritten = Some(0);
            }
            ctx.body = Some(body.clone());
            if body.len() > RETRY_BUFFER_BYTES || service.needs.whole_response {
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
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        balance::choose_target(ctx, session.req_header()).map(Box::new)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retry = balance::after_failure(ctx, balance::Failure::Connect, false);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // Safe to send again: nothing of the answer went to the client, and the method is
        // idempotent or the whole body is held (read by the pipeline, within the replay buffer).
        let replayable = session.response_written().is_none()
            && !session.as_ref().retry_buffer_truncated()
            && (session.req_header().method.is_idempotent() || ctx.body.is_some());
        let stale = matches!(e.retry, pingora::RetryType::ReusedOnly) && client_reused;
        let failure = if stale {
            balance::Failure::StaleConnection
        } else {
            balance::Failure::Exchange
        };
        let retry = balance::after_failure(ctx, failure, replayable);
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(routed) = ctx.routed() else {
            return Ok(());
        };
        let (rt, svc) = (routed.runtime(), routed.service());
        let trusted = rt.trusted_proxies.contains(ctx.exchange.peer_ip);
        let Some(host) = ctx.attempt.as_ref().map(|a| a.target.host_header.clone()) else {
            return Err(Error::explain(ErrorType::InternalError, "no target chosen"));
        };
        ctx.credential_outcome = prepare_upstream_request(
            svc,
            &host,
            ctx.forwarded_path.as_deref(),
            upstream_request,
            &ctx.exchange,
            (
                rt.forwarded_headers,
                Arrival {
                    trusted_peer: trusted,
                    https: arrived_over_tls(session),
                },
            ),
            &ctx.credentials,
        )?;
        let body = ctx.body.clone();
        let verdict = svc.run_upstream(
            &mut PingoraRequest(upstream_request),
            body.as_deref(),
            &mut ctx.exchange,
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
        let Some(routed) = ctx.routed() else {
            return Ok(());
        };
        balance::record_answer(ctx, upstream_response.status.as_u16());
        apply_response_pipeline(
            routed.service(),
            session.req_header(),
            upstream_response,
            ctx,
        )
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
        if std::mem::take(&mut ctx.in_flight) {
            self.state
                .requests_in_flight
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        // Never the query string: it may hold credentials.
        let req = session.req_header();
        format!("{} {}", req.method, req.uri.path())
    }
}

impl Gateway {
    /// Answers one of the token service's own endpoints.
    async fn serve_token_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        endpoint: Endpoint,
    ) -> Result<bool> {
        let Some(runtime) = ctx.runtime.clone() else {
            return Ok(false);
        };
        let Some(token_service) = runtime.token_service.as_ref() else {
            return Ok(false);
        };
        let gate = crate::auth_failures::Gate {
            failures: &self.state.auth_failures,
            limits: &runtime.client_limits,
            surface: crate::auth_failures::Surface::TokenEndpoint,
            ip: ctx.exchange.client_ip,
        };
        let answer = oauth::endpoint::serve(token_service, session, endpoint, gate).await?;
        self.state
            .metrics
            .token_answer(endpoint.name(), answer.reason.unwrap_or("ok"));
        ctx.reason = answer.reason;
        oauth::endpoint::write(session, &answer).await?;
        Ok(true)
    }

    /// Answers one of the OProxy broker's routes.
    async fn serve_oproxy(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: crate::oproxy::Route,
    ) -> Result<bool> {
        let Some(broker) = ctx.runtime.as_ref().and_then(|rt| rt.oproxy.clone()) else {
            return Ok(false);
        };
        let Some(runtime) = ctx.runtime.clone() else {
            return Ok(false);
        };
        let gate = crate::auth_failures::Gate {
            failures: &self.state.auth_failures,
            limits: &runtime.client_limits,
            surface: crate::auth_failures::Surface::OProxy,
            ip: ctx.exchange.client_ip,
        };
        let answer = crate::oproxy::endpoint::serve(&broker, session, route, gate).await?;
        self.state
            .metrics
            .token_answer("oproxy", answer.reason.unwrap_or("ok"));
        ctx.reason = answer.reason;
        oauth::endpoint::write(session, &answer).await?;
        Ok(true)
    }

    /// Answers the SAML issuer's endpoint.
    async fn serve_saml_issuer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(runtime) = ctx.runtime.clone() else {
            return Ok(false);
        };
        let Some(issuer) = runtime.saml_issuer.clone() else {
            return Ok(false);
        };
        let gate = crate::auth_failures::Gate {
            failures: &self.state.auth_failures,
            limits: &runtime.client_limits,
            surface: crate::auth_failures::Surface::SamlIssuer,
            ip: ctx.exchange.client_ip,
        };
        let outcome = crate::saml_issuer::endpoint::serve(&issuer, session, gate).await?;
        // Every refusal but 405 comes after the body was read.
        let body_read = outcome
            .as_ref()
            .err()
            .is_none_or(|rejection| rejection.status != http::StatusCode::METHOD_NOT_ALLOWED);
        self.answer_issued(session, ctx, outcome, body_read).await
    }

    /// Writes what an issuer decided: the assertion's JSON, or the refusal.
    async fn answer_issued(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        outcome: crate::saml_issuer::endpoint::Outcome,
        body_read: bool,
    ) -> Result<bool> {
        match outcome {
            Ok(json) => {
                self.state.metrics.token_answer("saml", "ok");
                crate::saml_issuer::endpoint::write_issued(session, json).await?;
                Ok(true)
            }
            Err(rejection) => {
                self.state.metrics.token_answer("saml", rejection.code);
                refuse(session, ctx, &rejection, body_read).await
            }
        }
    }

    /// A service with `issue_saml`: its pipeline let the caller through, so the answer is an
    /// assertion for the caller (signed off the async threads: an RSA signature takes a
    /// millisecond or two).
    async fn issue_for_pipeline(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        issuing: &std::sync::Arc<crate::saml_issuer::pipeline::PipelineIssuance>,
        body_read: bool,
    ) -> Result<bool> {
        let claims = issuing.claims(&PingoraRequestView(session.req_header()), &ctx.exchange);
        // A step that read the body (an HMAC signature over it) kept it within the
        // service's limit; otherwise it is read here and dropped.
        let drained = if body_read {
            Ok(())
        } else {
            crate::saml_issuer::endpoint::drain_body(session).await?
        };
        let outcome = match claims.and_then(|claims| drained.map(|()| claims)) {
            Ok(claims) => issuing.sign(claims).await,
            Err(rejection) => Err(rejection),
        };
        self.answer_issued(session, ctx, outcome, true).await
    }

    /// With durable usage, this request's use is in the store before it goes upstream.
    async fn record_usage_durably(&self, runtime: &Runtime) -> std::result::Result<(), Rejection> {
        if !runtime
            .token_service
            .as_ref()
            .is_some_and(|service| service.usage.durable)
        {
            return Ok(());
        }
        let written = self
            .state
            .carry()
            .live
            .flush_usage(&runtime.store, runtime.token_service.as_deref())
            .await;
        if written.is_ok() {
            return Ok(());
        }
        Err(Rejection::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "usage-not-recorded",
            "the token's use could not be recorded, and this gateway records every use before forwarding",
        ))
    }
}

/// Whether the client's connection is TLS (it came in on a `tls:` listener).
fn arrived_over_tls(session: &Session) -> bool {
    session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some())
}

/// Reads the request body when the service's steps need it (up to its limit, against the
/// connection's body deadline); `None` when it streams to the upstream unread.
async fn read_request_body(
    session: &mut Session,
    ctx: &RequestCtx,
    service: &Service,
) -> std::result::Result<Option<Bytes>, Rejection> {
    if !service.needs.request_body {
        return Ok(None);
    }
    if session.is_body_empty() {
        // Nothing to read or replay (a GET without a body): the steps see an empty body.
        return Ok(Some(Bytes::new()));
    }
    session.enable_retry_buffering();
    let mut buffer = bytes::BytesMut::new();
    // An HTTP/2 stream has no guard of its own (the guard watches the whole connection):
    // the body deadline is kept here, by the same rule.
    let started = tokio::time::Instant::now();
    let limits = ctx
        .runtime
        .as_ref()
        .map_or_else(crate::runtime::ClientLimits::default, |rt| rt.client_limits);
    loop {
        let read = session.read_request_body();
        let read = if ctx.connection.is_none() {
            let earned = (buffer.len() as u64)
                .checked_div(limits.body_min_rate)
                .unwrap_or(0);
            let deadline = started + limits.body_timeout + std::time::Duration::from_secs(earned);
            match tokio::time::timeout_at(deadline, read).await {
                Ok(read) => read,
                Err(_) => {
                    ::log::debug!("request body too slow on a stream");
                    return Err(client_timeout());
                }
            }
        } else {
            read.await
        };
        let chunk = match read {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) if ctx.body_timed_out() => {
                ::log::debug!("request body too slow: {e}");
                return Err(client_timeout());
            }
            Err(e) => {
                // A body that cannot be read (bad chunk framing, cut short) ends here: its
                // head never went upstream.
                ::log::debug!("request body unreadable: {e}");
                return Err(Rejection::new(
                    http::StatusCode::BAD_REQUEST,
                    "malformed-body",
                    "the request body could not be read: its framing is broken or it ended early",
                ));
            }
        };
        check_body_size(service, (buffer.len() + chunk.len()) as u64)?;
        buffer.extend_from_slice(&chunk);
    }
    if let Some(connection) = &ctx.connection {
        connection.body_read();
    }
    Ok(Some(buffer.freeze()))
}
