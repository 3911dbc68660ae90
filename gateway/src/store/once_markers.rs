//! Steps that refuse a second use across the fleet (`require_hmac` with `replay_scope:
//! cluster`) record their markers in the state store's one-time markers
//! ([`OnceStore::use_once`]): SQLite for the processes of one host, Redis for a fleet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use portcullis_assertions::once::{OnceDecision, SharedOnce};
use portcullis_assertions::rate_limit::SharedUnavailable;

use super::OnceStore;

/// The steps' view of the state store's one-time markers.
#[derive(Debug)]
pub struct StoreOnceMarkers {
    once: Arc<dyn OnceStore>,
    /// Set while the store fails, so an outage is logged when it starts and when it ends,
    /// not once per request.
    failing: Arc<AtomicBool>,
}

impl StoreOnceMarkers {
    #[must_use]
    pub fn new(once: Arc<dyn OnceStore>) -> StoreOnceMarkers {
        StoreOnceMarkers {
            once,
            failing: Arc::default(),
        }
    }
}

impl SharedOnce for StoreOnceMarkers {
    fn use_once(&self, key: String, expires_at: u64, now: u64) -> OnceDecision {
        let once = Arc::clone(&self.once);
        let failing = Arc::clone(&self.failing);
        let expires_at = i64::try_from(expires_at).unwrap_or(i64::MAX);
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        Box::pin(async move {
            match once.use_once(&key, expires_at, now).await {
                Ok(first) => {
                    if failing.swap(false, Ordering::Relaxed) {
                        log::info!("replay markers work again: the state store answers");
                    }
                    Ok(first)
                }
                Err(error) => {
                    if !failing.swap(true, Ordering::Relaxed) {
                        log::warn!("replay markers cannot be recorded: {error}");
                    }
                    Err(SharedUnavailable)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn a_marker_is_first_used_once_until_it_expires() {
        let markers = StoreOnceMarkers::new(Arc::new(MemoryStore::default()));
        assert_eq!(markers.use_once("m".into(), 200, 100).await, Ok(true));
        assert_eq!(markers.use_once("m".into(), 300, 150).await, Ok(false));
        assert_eq!(markers.use_once("m".into(), 400, 200).await, Ok(true));
    }
}
