//! Which target of the service's pool an attempt goes to, what its outcome says of the
//! target (passive health, per-target metrics), and whether a failed attempt is retried on
//! another target.
//!
//! Retry rules: a connection that could not be made is retried (nothing reached the
//! upstream); a failure after the request went out is retried only for an idempotent method
//! or a body the gateway holds whole, and never once the answer has started. Every retry
//! spends from the pool's budget and goes to a target not tried yet.

use http::StatusCode;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::ErrorType;
use portcullis_assertions::Rejection;

use super::context::RequestCtx;
use super::heads::PingoraRequestView;
use super::upstream::peer_for;
use crate::upstream::{Balance, Choice, Outcome};

/// Chooses the target of the next attempt and builds its peer. With no target to take it,
/// the refusal is left in `ctx` for `fail_to_proxy` and an error returned.
pub(super) fn choose_target(ctx: &mut RequestCtx, req: &RequestHeader) -> Result<HttpPeer> {
    let Some(routed) = ctx.routed() else {
        return Err(Error::explain(
            ErrorType::InternalError,
            "no service selected",
        ));
    };
    let upstream = &routed.service().upstream;
    let pool = &upstream.pool;
    if ctx.tries == 0 {
        pool.budget.deposit();
    }
    // The slot of a failed attempt is given back before the next is taken.
    ctx.attempt = None;
    let mut key = String::new();
    let hash_key = match &pool.settings.balance {
        Balance::ConsistentHash(template) => template
            .render_into(&PingoraRequestView(req), &ctx.exchange, &mut key)
            .then_some(key.as_bytes()),
        _ => None,
    };
    match pool.choose(hash_key, ctx.tried) {
        Choice::Chosen(lease) => {
            let peer = peer_for(upstream, &lease.target);
            ctx.attempt = Some(lease);
            ctx.tries += 1;
            Ok(peer)
        }
        Choice::NoHealthy => Err(refuse(
            ctx,
            "no-healthy-upstream",
            "no target of this service's upstream is healthy",
        )),
        Choice::AllBusy => Err(refuse(
            ctx,
            "upstream-busy",
            "every target of this service's upstream is at its connection limit",
        )),
    }
}

fn refuse(ctx: &mut RequestCtx, code: &'static str, detail: &'static str) -> Box<Error> {
    ctx.pending_refusal = Some(Rejection::new(
        StatusCode::SERVICE_UNAVAILABLE,
        code,
        detail,
    ));
    Error::explain(ErrorType::HTTPStatus(503), detail)
}

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The connection could not be made: nothing reached the upstream.
    Connect,
    /// A pooled connection the upstream had closed: the request did not reach it either,
    /// and the target is not to blame.
    StaleConnection,
    /// The request (or part of it) went out, then the exchange broke.
    Exchange,
}

/// Records a failed attempt against its target and says whether to retry it.
/// `replayable`: the request may be sent again (an idempotent method or a body held whole,
/// and no part of the answer sent to the client).
pub(super) fn after_failure(ctx: &mut RequestCtx, failure: Failure, replayable: bool) -> bool {
    let Some(routed) = ctx.routed() else {
        return false;
    };
    let pool = &routed.service().upstream.pool;
    let Some(lease) = ctx.attempt.take() else {
        return false;
    };
    if failure == Failure::StaleConnection {
        // Another connection (possibly to the same target) is not a retry of the target.
        return replayable;
    }
    let outcome = match failure {
        Failure::Connect => Outcome::ConnectFailed,
        _ => Outcome::ExchangeFailed,
    };
    record(&routed, &lease, outcome, None);
    ctx.tried |= 1u64 << lease.index;
    let may = (failure == Failure::Connect || replayable)
        && ctx.tries <= pool.budget.policy().attempts
        && pool.has_untried(ctx.tried);
    may && pool.budget.withdraw()
}

/// Records the answer's head against the attempt's target (a 5xx counts towards ejection).
pub(super) fn record_answer(ctx: &mut RequestCtx, status: u16) {
    let Some(routed) = ctx.routed() else {
        return;
    };
    let Some(lease) = ctx.attempt.as_mut() else {
        return;
    };
    if lease.recorded {
        return;
    }
    lease.recorded = true;
    let outcome = if status >= 500 {
        Outcome::ServerError
    } else {
        Outcome::Answered
    };
    let latency = lease.started.elapsed();
    record(&routed, lease, outcome, Some(latency));
}

/// Counts an outcome against the lease's target, ejecting it when passive health says so and
/// another target can take over.
fn record(
    routed: &super::context::Routed,
    lease: &crate::upstream::Lease,
    outcome: Outcome,
    latency: Option<std::time::Duration>,
) {
    let pool = &routed.service().upstream.pool;
    // Only a failure needs to know whether another target could take over.
    let may_eject = outcome != Outcome::Answered && pool.available_besides(lease.index);
    let ejected = lease.target.record(
        outcome,
        latency,
        &pool.settings.passive,
        (pool.now_ms(), may_eject),
    );
    if ejected {
        log::warn!(
            "service {}: upstream target {} ejected after {} failures in a row",
            routed.service().name,
            lease.target.label,
            pool.settings.passive.failures
        );
    }
}
