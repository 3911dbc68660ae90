//! One-time markers in the state store every gateway of a fleet shares: a signature, or a
//! token's id, used on one node is refused on all of them. A step only knows this interface;
//! the gateway implements it over its state store (SQLite for one host, Redis for a fleet).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::rate_limit::SharedUnavailable;

/// A marker's answer in flight: `Ok(true)` when this call recorded it first, `Ok(false)` when
/// it was already recorded and has not expired (a replay).
pub type OnceDecision = Pin<Box<dyn Future<Output = Result<bool, SharedUnavailable>> + Send>>;

/// Records keys once until they expire. Of concurrent calls with one key, on any node,
/// exactly one gets `true`; every call answers within the store's timeout.
pub trait SharedOnce: Send + Sync + fmt::Debug {
    /// Records `key` until `expires_at` (seconds since the epoch), at time `now`.
    fn use_once(&self, key: String, expires_at: u64, now: u64) -> OnceDecision;
}
