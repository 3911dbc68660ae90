//! A clock `portcullis test` sets by hand, so golden cases with signatures, assertions,
//! rate limits and quotas answer the same on every run. The gateway itself never uses it:
//! a policy loaded to serve keeps the system's clocks (see [`crate::config::Carry::clock`]).

use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_assertions::hmac::Clock;
use portcullis_assertions::rate_limit::MonotonicClock;

/// Seconds since the Unix epoch, as set; the same instant in nanoseconds for the rate
/// limiters' monotonic scale (tests only move it forward).
#[derive(Debug, Default)]
pub struct SettableClock(AtomicU64);

impl SettableClock {
    #[must_use]
    pub fn at(epoch_seconds: u64) -> Self {
        SettableClock(AtomicU64::new(epoch_seconds))
    }

    pub fn set(&self, epoch_seconds: u64) {
        self.0.store(epoch_seconds, Ordering::Relaxed);
    }
}

impl Clock for SettableClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl MonotonicClock for SettableClock {
    fn now_nanos(&self) -> u64 {
        self.0.load(Ordering::Relaxed).saturating_mul(1_000_000_000)
    }
}
