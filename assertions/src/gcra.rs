//! The generic cell rate algorithm (GCRA), the arithmetic under the coming `rate_limit`
//! step: one number per key (its theoretical arrival time, TAT) instead of a token count and
//! a timestamp, the same answers as a token bucket, and the same arithmetic whether the TAT
//! lives in this process or in a shared store.
//!
//! A limit is `count` requests per `period` with a bucket of `burst` requests: a request of
//! cost `c` is allowed when a bucket refilled at one request per `period / count`, holding at
//! most `burst`, holds `c` now. Time is in nanoseconds on any monotonic scale.
//!
//! [`decide`] is pure: it says what the request would get and the TAT to store if it is
//! allowed. A refused request stores nothing, so it consumes nothing, and several limits on
//! one request can all be decided before any is committed.

use std::time::Duration;

/// A limit: `count` per `period`, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Nanoseconds between two requests at the sustained rate (`period / count`).
    interval: u64,
    /// Requests the bucket holds when full.
    burst: u64,
}

/// Why a limit cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLimit(pub &'static str);

impl Limit {
    /// # Errors
    /// A count or burst of zero, or a rate finer than one request per nanosecond.
    pub fn new(count: u64, period: Duration, burst: u64) -> Result<Limit, InvalidLimit> {
        if count == 0 {
            return Err(InvalidLimit("a rate needs at least one request per period"));
        }
        if burst == 0 {
            return Err(InvalidLimit("burst must be at least 1"));
        }
        let period =
            u64::try_from(period.as_nanos()).map_err(|_| InvalidLimit("the period is too long"))?;
        let interval = period / count;
        if interval == 0 {
            return Err(InvalidLimit(
                "the rate is finer than one request per nanosecond",
            ));
        }
        if interval.checked_mul(burst).is_none() {
            return Err(InvalidLimit("burst times the interval overflows"));
        }
        Ok(Limit { interval, burst })
    }

    /// `count` per minute in bursts of `count`: always a valid limit (built without the
    /// checks of [`Limit::new`], which it cannot fail).
    #[must_use]
    pub fn per_minute(count: u64) -> Limit {
        const MINUTE: u64 = 60_000_000_000;
        let count = count.clamp(1, MINUTE);
        Limit {
            interval: MINUTE / count,
            burst: count,
        }
    }

    /// Requests the bucket holds when full.
    #[must_use]
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Nanoseconds between two requests at the sustained rate.
    #[must_use]
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// Time the bucket takes to refill from empty.
    fn tolerance(&self) -> u64 {
        self.interval * self.burst
    }
}

/// What a request gets from one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests (of cost 1) the bucket still holds after this one (or now, when refused).
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset_after: Duration,
    /// When refused: until a request of this cost would be allowed.
    pub retry_after: Option<Duration>,
    /// When allowed: the theoretical arrival time to store for the key.
    pub new_tat: Option<u64>,
}

impl Decision {
    /// A placeholder for fixed-size lists of decisions.
    pub const NONE: Decision = Decision {
        allowed: false,
        remaining: 0,
        reset_after: Duration::ZERO,
        retry_after: None,
        new_tat: None,
    };
}

/// The decision for a request of `cost` at `now`, given the key's stored TAT (`None` for a
/// key never seen, or forgotten: the same as a full bucket).
#[must_use]
pub fn decide(limit: Limit, stored_tat: Option<u64>, now: u64, cost: u64) -> Decision {
    let tat = stored_tat.map_or(now, |tat| tat.max(now));
    let tolerance = limit.tolerance();
    let increment = cost.saturating_mul(limit.interval);
    let new_tat = tat.saturating_add(increment);
    // The bucket, now: `tolerance - (tat - now)` nanoseconds of refill, i.e. requests.
    let level_after = tolerance.checked_sub(new_tat - now);
    match level_after {
        Some(level) => Decision {
            allowed: true,
            remaining: level / limit.interval,
            reset_after: Duration::from_nanos(new_tat - now),
            retry_after: None,
            new_tat: Some(new_tat),
        },
        None => Decision {
            allowed: false,
            remaining: tolerance.saturating_sub(tat - now) / limit.interval,
            reset_after: Duration::from_nanos(tat - now),
            // A cost beyond the whole bucket never fits; say when the bucket is full.
            retry_after: Some(Duration::from_nanos(
                (new_tat - now - tolerance).min(tolerance.max(tat - now)),
            )),
            new_tat: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_full_bucket_takes_its_burst_then_one_per_interval() {
        let limit = Limit::new(10, Duration::from_secs(1), 3).expect("limit");
        let mut tat = None;
        for expected_remaining in [2, 1, 0] {
            let decision = decide(limit, tat, 0, 1);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
            tat = decision.new_tat;
        }
        let refused = decide(limit, tat, 0, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Some(Duration::from_millis(100)));
        assert_eq!(refused.new_tat, None, "a refusal stores nothing");
        assert!(decide(limit, tat, SECOND / 10, 1).allowed);
    }

    #[test]
    fn limits_are_checked_when_built() {
        assert!(Limit::new(0, Duration::from_secs(1), 1).is_err());
        assert!(Limit::new(1, Duration::from_secs(1), 0).is_err());
        assert!(Limit::new(2_000_000_000, Duration::from_secs(1), 1).is_err());
        assert!(Limit::new(1, Duration::from_secs(3600), u64::MAX).is_err());
    }

    /// A plain token bucket, written independently: the level in nanoseconds of refill.
    struct Bucket {
        level: u64,
        capacity: u64,
        interval: u64,
        last: u64,
    }

    impl Bucket {
        fn take(&mut self, now: u64, cost: u64) -> bool {
            self.level = (self.level + (now - self.last)).min(self.capacity);
            self.last = now;
            let needed = cost * self.interval;
            if self.level >= needed {
                self.level -= needed;
                true
            } else {
                false
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::test_cases(512)))]

        /// Over any sequence of arrivals and costs, GCRA allows exactly what the bucket
        /// allows, reports the bucket's level, and a refused request changes nothing.
        #[test]
        fn gcra_answers_as_a_token_bucket(
            count in 1u64..50,
            period_ms in 1u64..5_000,
            burst in 1u64..20,
            steps in proptest::collection::vec((0u64..2_000_000_000, 0u64..5), 1..60),
        ) {
            let limit = Limit::new(count, Duration::from_millis(period_ms), burst).expect("limit");
            let mut bucket = Bucket {
                level: limit.tolerance(),
                capacity: limit.tolerance(),
                interval: limit.interval,
                last: 0,
            };
            let (mut now, mut tat) = (0u64, None);
            for (gap, cost) in steps {
                now += gap;
                let decision = decide(limit, tat, now, cost);
                let allowed = bucket.take(now, cost);
                prop_assert_eq!(decision.allowed, allowed);
                prop_assert_eq!(decision.remaining, bucket.level / limit.interval);
                if allowed {
                    tat = decision.new_tat;
                } else {
                    let wait = decision.retry_after.expect("retry").as_nanos() as u64;
                    if cost <= limit.burst {
                        // Exactly then, and not a nanosecond before, the request fits.
                        prop_assert!(decide(limit, tat, now + wait, cost).allowed);
                        prop_assert!(wait == 0 || !decide(limit, tat, now + wait - 1, cost).allowed);
                    }
                }
            }
        }
    }
}
