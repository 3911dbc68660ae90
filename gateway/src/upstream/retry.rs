//! Retries on another target, and the budget that keeps them from multiplying load.
//!
//! Each first attempt adds `percent`/100 of a retry to the budget; each retry spends one.
//! A floor of `min_per_second` retries refills with time, so a quiet service can still retry
//! once in a while. When backends fail in numbers, retries stop at that share of the traffic
//! instead of adding to it (the approach of Finagle's and Linkerd's retry budgets).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Retries are counted in thousandths so a percentage deposits a whole number.
const MILLI: i64 = 1000;

/// How a pool retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Further tries on other targets after the first (0: none).
    pub attempts: u32,
    /// Retries at most this percentage of first attempts, over time.
    pub percent: u32,
    /// Retries always allowed per second, whatever the traffic.
    pub min_per_second: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            percent: 20,
            min_per_second: 3,
        }
    }
}

/// The budget's balance.
#[derive(Debug)]
pub struct RetryBudget {
    policy: RetryPolicy,
    /// Thousandths of a retry available.
    balance: AtomicI64,
    /// Milliseconds since `epoch` of the last time-based refill.
    refilled_ms: AtomicU64,
    epoch: Instant,
    pub retried: AtomicU64,
    pub refused: AtomicU64,
}

impl RetryBudget {
    #[must_use]
    pub fn new(policy: RetryPolicy) -> Self {
        RetryBudget {
            policy,
            balance: AtomicI64::new(Self::cap(policy)),
            refilled_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            retried: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    #[must_use]
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// At most ten seconds' worth of the floor, and at least ten retries, may be saved up.
    fn cap(policy: RetryPolicy) -> i64 {
        (i64::from(policy.min_per_second) * 10).max(10) * MILLI
    }

    /// A first attempt: adds its share to the budget.
    pub fn deposit(&self) {
        let share = i64::from(self.policy.percent) * MILLI / 100;
        if share == 0 {
            return;
        }
        let cap = Self::cap(self.policy);
        let _ = self
            .balance
            .fetch_update(Relaxed, Relaxed, |b| Some((b + share).min(cap)));
    }

    /// Spends one retry; false when the budget is spent (the retry must not happen).
    pub fn withdraw(&self) -> bool {
        self.withdraw_at(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn withdraw_at(&self, now_ms: u64) -> bool {
        self.refill(now_ms);
        let spent = self
            .balance
            .fetch_update(Relaxed, Relaxed, |b| (b >= MILLI).then_some(b - MILLI))
            .is_ok();
        if spent {
            self.retried.fetch_add(1, Relaxed);
        } else {
            self.refused.fetch_add(1, Relaxed);
        }
        spent
    }

    /// Adds the floor's retries for the time since the last refill.
    fn refill(&self, now_ms: u64) {
        let last = self.refilled_ms.load(Relaxed);
        let elapsed = now_ms.saturating_sub(last);
        let earned =
            i64::try_from(elapsed).unwrap_or(i64::MAX / 2) * i64::from(self.policy.min_per_second);
        // Whole thousandths only, and one thread credits a given stretch of time.
        if earned < MILLI / 10
            || self
                .refilled_ms
                .compare_exchange(last, now_ms, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        let cap = Self::cap(self.policy);
        let _ = self
            .balance
            .fetch_update(Relaxed, Relaxed, |b| Some((b + earned).min(cap)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stop_at_the_budget_and_come_back_with_traffic_and_time() {
        let policy = RetryPolicy {
            attempts: 2,
            percent: 20,
            min_per_second: 1,
        };
        let budget = RetryBudget::new(policy);
        // Ten saved up at the start.
        let mut allowed = 0;
        for _ in 0..100 {
            allowed += u32::from(budget.withdraw_at(0));
        }
        assert_eq!(allowed, 10);
        // 100 first attempts at 20 % earn 20 retries, capped at 10.
        for _ in 0..100 {
            budget.deposit();
        }
        let mut allowed = 0;
        for _ in 0..100 {
            allowed += u32::from(budget.withdraw_at(0));
        }
        assert_eq!(allowed, 10);
        // 10 first attempts: 2 retries.
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(budget.withdraw_at(0));
        assert!(budget.withdraw_at(0));
        assert!(!budget.withdraw_at(0));
        // Three seconds of the floor: three more.
        let mut allowed = 0;
        for _ in 0..10 {
            allowed += u32::from(budget.withdraw_at(3_000));
        }
        assert_eq!(allowed, 3);
        assert_eq!(budget.retried.load(Relaxed), 25);
    }
}
