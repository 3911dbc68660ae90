//! Cluster scope: the limiter state lives in a store every gateway of the fleet shares
//! (Redis), decided there in one atomic round trip with the same GCRA arithmetic as the local
//! limiter. The step only knows this interface; the gateway implements it on its Redis client.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::gcra::{Decision, Limit};

/// One bucket of a shared decision.
#[derive(Debug, Clone)]
pub struct SharedCharge {
    /// The store key. Every charge of one decision shares one hash tag, so a clustered store
    /// keeps them on one node and decides them atomically.
    pub key: String,
    pub limit: Limit,
    pub cost: u64,
}

/// The shared store could not decide in time (unreachable, slower than its timeout, or its
/// circuit breaker is open): the step applies its failure mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedUnavailable;

/// A shared decision in flight.
pub type SharedDecision =
    Pin<Box<dyn Future<Output = Result<Vec<Decision>, SharedUnavailable>> + Send + 'static>>;

/// A store that decides a group of charges atomically: all allowed and stored, or none
/// stored. It answers within its own timeout, never later.
pub trait SharedLimiter: Send + Sync + fmt::Debug {
    fn charge(&self, charges: Vec<SharedCharge>) -> SharedDecision;
}

/// What one `rate_limit` step has seen, for `/metrics` (the gateway reads these).
#[derive(Debug, Default)]
pub struct RateLimitCounters {
    /// Requests refused because the limit was reached.
    pub refused: AtomicU64,
    /// Requests refused because the local limiter was full of live keys.
    pub keys_full: AtomicU64,
    /// Decisions the shared store could not make in time.
    pub store_unavailable: AtomicU64,
    /// Of those, the requests decided by the local fallback (`fail_open`).
    pub decided_locally: AtomicU64,
}

impl RateLimitCounters {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
