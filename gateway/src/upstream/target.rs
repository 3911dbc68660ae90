//! One backend instance of a pool: its address and what the gateway knows of it (health from
//! active checks, ejection after passive failures, requests in flight, counters).
//!
//! Everything here is an atomic: the request path reads and updates it without a lock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http::HeaderValue;

/// A target's place in its pool.
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// Share of the traffic relative to the pool's other targets (round robin, hashing,
    /// least connections).
    pub weight: u32,
    /// `Host` sent to this target unless the service preserves the client's.
    pub host_header: HeaderValue,
    /// TLS server name for this target.
    pub sni: String,
    /// `host:port` as the policy wrote it (or the name and the address it resolved to), for
    /// metrics, logs and the admin API.
    pub label: Box<str>,
    pub state: TargetState,
}

/// Why a target takes no requests right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// The active health check failed `unhealthy_after` times in a row.
    Unhealthy,
    /// Passive checks: `failures` connect errors or 5xx answers in a row; taken out until
    /// the ejection ends.
    Ejected,
}

impl Availability {
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Availability::Available => "healthy",
            Availability::Unhealthy => "unhealthy",
            Availability::Ejected => "ejected",
        }
    }
}

/// What a request's outcome says of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer below 500.
    Answered,
    /// A 5xx answer.
    ServerError,
    /// The connection could not be made.
    ConnectFailed,
    /// Connected, then the exchange failed (reset, timeout, broken answer).
    ExchangeFailed,
}

/// The live state of a target.
#[derive(Debug, Default)]
pub struct TargetState {
    /// Result of the active checks (true until a check says otherwise).
    unhealthy: AtomicBool,
    /// Active checks in a row with the same result, counting towards a flip.
    check_streak: AtomicU32,
    /// Passive failures in a row.
    failures: AtomicU32,
    /// Ejected until this many milliseconds after the pool's epoch (0: not ejected).
    ejected_until_ms: AtomicU64,
    /// Set when an ejection ends: the next failure ejects again at once.
    probation: AtomicBool,
    /// Requests sent to this target and not finished.
    pub in_flight: AtomicU32,
    pub requests: AtomicU64,
    pub connect_errors: AtomicU64,
    pub exchange_errors: AtomicU64,
    pub server_errors: AtomicU64,
    pub ejections: AtomicU64,
    /// Time to the answer's head, summed (microseconds), over `requests` that got one.
    pub latency_micros: AtomicU64,
    pub answered: AtomicU64,
}

impl Target {
    #[must_use]
    pub fn new(addr: SocketAddr, weight: u32, host_header: HeaderValue, sni: String) -> Self {
        let label = match host_header.to_str() {
            Ok(host) if host.parse::<SocketAddr>().ok() == Some(addr) => host.into(),
            Ok(host) => format!("{host} ({addr})").into(),
            Err(_) => addr.to_string().into(),
        };
        Target {
            addr,
            weight: weight.max(1),
            host_header,
            sni,
            label,
            state: TargetState::default(),
        }
    }

    /// Whether the target takes requests at `now_ms` (pool epoch milliseconds).
    #[must_use]
    pub fn availability(&self, now_ms: u64) -> Availability {
        if self.state.unhealthy.load(Relaxed) {
            return Availability::Unhealthy;
        }
        let until = self.state.ejected_until_ms.load(Relaxed);
        if until == 0 {
            return Availability::Available;
        }
        if now_ms < until {
            return Availability::Ejected;
        }
        // The ejection is over: one request may find out whether the target is back.
        if self
            .state
            .ejected_until_ms
            .compare_exchange(until, 0, Relaxed, Relaxed)
            .is_ok()
        {
            self.state.probation.store(true, Relaxed);
        }
        Availability::Available
    }

    /// Takes a slot under the per-target limit (`None`: no limit); false when it is full.
    #[must_use]
    pub fn try_acquire(&self, limit: Option<u32>) -> bool {
        match limit {
            None => {
                self.state.in_flight.fetch_add(1, Relaxed);
                true
            }
            Some(limit) => self
                .state
                .in_flight
                .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
                .is_ok(),
        }
    }

    pub fn release(&self) {
        let _ = self
            .state
            .in_flight
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    /// Records what a request found; returns true when this ejected the target.
    /// `may_eject`: another target of the pool is available, so ejecting this one leaves
    /// somewhere to go (passive checks never take a pool's last target out: its failures
    /// reach the client as they are, not as a pool that is closed for the ejection's length).
    pub fn record(
        &self,
        outcome: Outcome,
        latency: Option<Duration>,
        passive: &Passive,
        (now_ms, may_eject): (u64, bool),
    ) -> bool {
        let state = &self.state;
        state.requests.fetch_add(1, Relaxed);
        if let Some(latency) = latency {
            state.answered.fetch_add(1, Relaxed);
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            state.latency_micros.fetch_add(micros, Relaxed);
        }
        let counter = match outcome {
            Outcome::Answered => {
                state.failures.store(0, Relaxed);
                state.probation.store(false, Relaxed);
                return false;
            }
            Outcome::ServerError => &state.server_errors,
            Outcome::ConnectFailed => &state.connect_errors,
            Outcome::ExchangeFailed => &state.exchange_errors,
        };
        counter.fetch_add(1, Relaxed);
        if passive.failures == 0 {
            return false;
        }
        let in_a_row = state.failures.fetch_add(1, Relaxed) + 1;
        if !may_eject {
            return false;
        }
        let on_probation = state.probation.swap(false, Relaxed);
        if in_a_row < passive.failures && !on_probation {
            return false;
        }
        state.failures.store(0, Relaxed);
        let until = now_ms + u64::try_from(passive.ejection.as_millis()).unwrap_or(u64::MAX / 2);
        state.ejected_until_ms.store(until.max(1), Relaxed);
        state.ejections.fetch_add(1, Relaxed);
        true
    }

    /// Records an active check's result; returns the new health when it flipped.
    pub fn record_check(&self, passed: bool, thresholds: (u32, u32)) -> Option<bool> {
        let (healthy_after, unhealthy_after) = thresholds;
        let state = &self.state;
        let healthy = !state.unhealthy.load(Relaxed);
        if passed == healthy {
            state.check_streak.store(0, Relaxed);
            return None;
        }
        let streak = state.check_streak.fetch_add(1, Relaxed) + 1;
        let needed = if passed {
            healthy_after
        } else {
            unhealthy_after
        };
        if streak < needed {
            return None;
        }
        state.check_streak.store(0, Relaxed);
        state.unhealthy.store(!passed, Relaxed);
        if passed {
            // Back from an outage: passive counts start afresh.
            state.failures.store(0, Relaxed);
            state.ejected_until_ms.store(0, Relaxed);
        }
        Some(passed)
    }

    /// Takes over what an earlier copy of this target (same address, previous policy or
    /// resolution) knew of its health, so a reload does not send traffic to a target known
    /// to be down.
    pub fn inherit(&self, earlier: &Target) {
        let (from, to) = (&earlier.state, &self.state);
        to.unhealthy.store(from.unhealthy.load(Relaxed), Relaxed);
        to.check_streak
            .store(from.check_streak.load(Relaxed), Relaxed);
        to.failures.store(from.failures.load(Relaxed), Relaxed);
        to.probation.store(from.probation.load(Relaxed), Relaxed);
    }

    /// Carries an ejection over from an earlier copy whose pool started at a different time.
    pub fn inherit_ejection(&self, earlier: &Target, shift_ms: i64) {
        let until = earlier.state.ejected_until_ms.load(Relaxed);
        if until != 0 {
            let shifted = i64::try_from(until)
                .unwrap_or(i64::MAX)
                .saturating_sub(shift_ms);
            self.state
                .ejected_until_ms
                .store(u64::try_from(shifted.max(1)).unwrap_or(1), Relaxed);
        }
    }

    /// Whether the last active checks said the target is healthy.
    #[must_use]
    pub fn check_healthy(&self) -> bool {
        !self.state.unhealthy.load(Relaxed)
    }
}

/// Passive health: how many failures in a row eject a target, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passive {
    /// 0 turns passive ejection off.
    pub failures: u32,
    pub ejection: Duration,
}

impl Default for Passive {
    fn default() -> Self {
        Passive {
            failures: 5,
            ejection: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::new(
            SocketAddr::from(([127, 0, 0, 1], 9000)),
            1,
            HeaderValue::from_static("127.0.0.1:9000"),
            String::new(),
        )
    }

    const PASSIVE: Passive = Passive {
        failures: 3,
        ejection: Duration::from_secs(10),
    };

    #[test]
    fn failures_in_a_row_eject_until_the_ejection_ends_then_one_failure_ejects_again() {
        let t = target();
        assert!(!t.record(Outcome::ConnectFailed, None, &PASSIVE, (0, true)));
        assert!(!t.record(Outcome::ServerError, None, &PASSIVE, (0, true)));
        assert!(t.record(Outcome::ExchangeFailed, None, &PASSIVE, (100, true)));
        assert_eq!(t.availability(5_000), Availability::Ejected);
        assert_eq!(t.availability(10_100), Availability::Available);
        assert!(t.record(Outcome::ConnectFailed, None, &PASSIVE, (10_200, true)));
        assert_eq!(t.availability(10_300), Availability::Ejected);
    }

    #[test]
    fn the_last_available_target_is_not_ejected() {
        let t = target();
        for _ in 0..10 {
            assert!(!t.record(Outcome::ConnectFailed, None, &PASSIVE, (0, false)));
        }
        assert_eq!(t.availability(1), Availability::Available);
        // Once another target is back, the next failure ejects.
        assert!(t.record(Outcome::ConnectFailed, None, &PASSIVE, (2, true)));
    }

    #[test]
    fn an_answer_resets_the_count() {
        let t = target();
        t.record(Outcome::ConnectFailed, None, &PASSIVE, (0, true));
        t.record(Outcome::ConnectFailed, None, &PASSIVE, (0, true));
        t.record(
            Outcome::Answered,
            Some(Duration::from_millis(2)),
            &PASSIVE,
            (0, true),
        );
        assert!(!t.record(Outcome::ConnectFailed, None, &PASSIVE, (0, true)));
        assert_eq!(t.availability(1), Availability::Available);
        assert_eq!(t.state.requests.load(Relaxed), 4);
        assert_eq!(t.state.latency_micros.load(Relaxed), 2_000);
    }

    #[test]
    fn active_checks_flip_after_their_thresholds() {
        let t = target();
        assert_eq!(t.record_check(false, (2, 3)), None);
        assert_eq!(t.record_check(false, (2, 3)), None);
        assert_eq!(t.record_check(false, (2, 3)), Some(false));
        assert_eq!(t.availability(0), Availability::Unhealthy);
        assert_eq!(t.record_check(true, (2, 3)), None);
        assert_eq!(t.record_check(false, (2, 3)), None);
        assert_eq!(t.record_check(true, (2, 3)), None);
        assert_eq!(t.record_check(true, (2, 3)), Some(true));
        assert_eq!(t.availability(0), Availability::Available);
    }

    #[test]
    fn the_limit_holds_and_release_frees_a_slot() {
        let t = target();
        assert!(t.try_acquire(Some(2)));
        assert!(t.try_acquire(Some(2)));
        assert!(!t.try_acquire(Some(2)));
        t.release();
        assert!(t.try_acquire(Some(2)));
    }
}
