//! A small circuit breaker in front of Redis. When Redis is down every call would wait
//! out its timeout; after `failures` consecutive failures the breaker opens, and for the
//! cool-off every call fails at once without touching the network, so requests are
//! answered (by their failure mode) in microseconds instead of stacking up. After the
//! cool-off one call goes through as a probe: its success closes the breaker, its failure
//! opens it for another cool-off.
//!
//! It logs once when it opens and once when it closes (not on every refused call), and
//! counts what it did for the metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker, unless the policy says otherwise.
pub const DEFAULT_FAILURES: u32 = 5;
/// How long an open breaker refuses calls before it lets a probe through.
pub const DEFAULT_COOL_OFF: Duration = Duration::from_secs(1);

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failed calls that open it (at least 1).
    pub failures: u32,
    /// How long it stays open before a probe.
    pub cool_off: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: DEFAULT_FAILURES,
            cool_off: DEFAULT_COOL_OFF,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Calls go through; this many have failed in a row.
    Closed { failing: u32 },
    /// Calls fail at once until `until`.
    Open { until: Instant },
    /// One probe is out; other calls fail at once until it answers.
    Probing,
}

/// What a call may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead (report the outcome with [`CircuitBreaker::record`]).
    Call,
    /// The breaker is open: fail now, without a network call.
    Refused,
}

/// What the breaker has done, for the metrics. Every field only grows, except `open`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerStats {
    /// 1 while the breaker is open or probing, else 0.
    pub open: u64,
    /// Times it opened (from closed).
    pub opened: u64,
    /// Calls refused without a network call.
    pub refused: u64,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    /// For the log lines: which Redis this breaker guards (redacted URL).
    target: String,
    state: Mutex<State>,
    opened: AtomicU64,
    refused: AtomicU64,
}

impl CircuitBreaker {
    #[must_use]
    pub fn new(settings: BreakerSettings, target: &str) -> CircuitBreaker {
        CircuitBreaker {
            settings: BreakerSettings {
                failures: settings.failures.max(1),
                ..settings
            },
            target: target.to_owned(),
            state: Mutex::new(State::Closed { failing: 0 }),
            opened: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a call may go out now.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Admission::Call,
            State::Open { until } if now >= until => {
                *state = State::Probing;
                Admission::Call
            }
            State::Open { .. } | State::Probing => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Admission::Refused
            }
        }
    }

    /// The outcome of an admitted call. `failure` is why it failed (for the log line when
    /// this opens the breaker); `None` is a success.
    pub fn record(&self, failure: Option<&str>, now: Instant) {
        let mut state = self.lock();
        match (failure, *state) {
            (None, State::Closed { .. }) => *state = State::Closed { failing: 0 },
            (None, State::Open { .. } | State::Probing) => {
                *state = State::Closed { failing: 0 };
                log::warn!("redis {}: answering again; circuit closed", self.target);
            }
            (Some(why), State::Closed { failing }) => {
                let failing = failing + 1;
                if failing >= self.settings.failures {
                    *state = State::Open {
                        until: now + self.settings.cool_off,
                    };
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    log::error!(
                        "redis {}: {failing} calls failed in a row (last: {why}); circuit open: \
                         calls fail at once for {:?} between probes",
                        self.target,
                        self.settings.cool_off
                    );
                } else {
                    *state = State::Closed { failing };
                }
            }
            // A probe failed (or a call admitted before the breaker opened): another
            // cool-off, without another log line.
            (Some(_), State::Open { .. } | State::Probing) => {
                *state = State::Open {
                    until: now + self.settings.cool_off,
                };
            }
        }
    }

    #[must_use]
    pub fn stats(&self) -> BreakerStats {
        let open = !matches!(*self.lock(), State::Closed { .. });
        BreakerStats {
            open: u64::from(open),
            opened: self.opened.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Admission, BreakerSettings, CircuitBreaker};

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(
            BreakerSettings {
                failures: 3,
                cool_off: Duration::from_secs(2),
            },
            "redis://test:6379",
        )
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let breaker = breaker();
        let now = Instant::now();
        breaker.record(Some("timeout"), now);
        breaker.record(Some("timeout"), now);
        breaker.record(None, now);
        breaker.record(Some("timeout"), now);
        breaker.record(Some("timeout"), now);
        assert_eq!(
            breaker.admit(now),
            Admission::Call,
            "a success reset the run"
        );
        breaker.record(Some("timeout"), now);
        assert_eq!(breaker.admit(now), Admission::Refused);
        let stats = breaker.stats();
        assert_eq!((stats.open, stats.opened, stats.refused), (1, 1, 1));
    }

    #[test]
    fn one_probe_after_the_cool_off_closes_or_reopens_it() {
        let breaker = breaker();
        let start = Instant::now();
        for _ in 0..3 {
            breaker.record(Some("refused"), start);
        }
        let later = start + Duration::from_secs(2);
        assert_eq!(breaker.admit(later), Admission::Call, "the probe");
        assert_eq!(breaker.admit(later), Admission::Refused, "only one probe");
        breaker.record(Some("refused"), later);
        assert_eq!(
            breaker.admit(later + Duration::from_secs(1)),
            Admission::Refused,
            "a failed probe starts another cool-off"
        );
        let again = later + Duration::from_secs(2);
        assert_eq!(breaker.admit(again), Admission::Call);
        breaker.record(None, again);
        assert_eq!(breaker.admit(again), Admission::Call, "closed");
        let stats = breaker.stats();
        assert_eq!(
            (stats.open, stats.opened),
            (0, 1),
            "reopening is not opening"
        );
    }
}
