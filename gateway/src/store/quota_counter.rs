//! Quotas count in the state store's counters ([`CounterStore::charge`]): whatever backend the
//! policy names (SQLite, memory, Redis), so a restart or another gateway on the same store
//! sees the same counts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use portcullis_assertions::quota::{QuotaCharge, QuotaCounter, QuotaDecision, QuotaUnavailable};

use super::CounterStore;

/// The `quota` steps' view of the state store.
#[derive(Debug)]
pub struct StoreQuotaCounter {
    counters: Arc<dyn CounterStore>,
    /// Set while the store fails, so an outage is logged once when it starts and once when
    /// it ends, not once per request.
    failing: Arc<AtomicBool>,
}

impl StoreQuotaCounter {
    #[must_use]
    pub fn new(counters: Arc<dyn CounterStore>) -> StoreQuotaCounter {
        StoreQuotaCounter {
            counters,
            failing: Arc::default(),
        }
    }
}

impl QuotaCounter for StoreQuotaCounter {
    fn charge(
        &self,
        key: String,
        cost: u64,
        limit: u64,
        window_end: i64,
        now: i64,
    ) -> QuotaDecision {
        let counters = Arc::clone(&self.counters);
        let failing = Arc::clone(&self.failing);
        Box::pin(async move {
            match counters.charge(&key, cost, limit, window_end, now).await {
                Ok(charged) => {
                    if failing.swap(false, Ordering::Relaxed) {
                        log::info!("quota counting works again: the state store answers");
                    }
                    Ok(QuotaCharge {
                        allowed: charged.allowed,
                        used: charged.window.count,
                        resets_at: charged.window.resets_at,
                    })
                }
                Err(error) => {
                    if !failing.swap(true, Ordering::Relaxed) {
                        log::warn!("quotas cannot be counted: {error}");
                    }
                    Err(QuotaUnavailable)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StateStore;

    #[tokio::test]
    async fn charges_go_to_the_stores_counters() {
        let store = StateStore::memory();
        let counter = StoreQuotaCounter::new(store.counters().clone());
        let first = counter.charge("quota/a/s/q".into(), 1, 1, 100, 0).await;
        assert_eq!(
            first,
            Ok(QuotaCharge {
                allowed: true,
                used: 1,
                resets_at: 100
            })
        );
        let second = counter.charge("quota/a/s/q".into(), 1, 1, 100, 1).await;
        assert!(!second.expect("answered").allowed);
        let window = store
            .counters()
            .counter("quota/a/s/q", 2)
            .await
            .expect("read");
        assert_eq!(window.map(|w| w.count), Some(1));
    }
}
