//! Token usage, written behind: requests count their token's use in the live-token cache
//! ([`LiveTokens`]); the cache writes the counts to the store in batches (on the upkeep's
//! interval, at shutdown, or before each request with `usage.durable`) and flags, or when the
//! policy says so revokes, tokens whose use looks unusual.

use std::sync::atomic::Ordering;

use super::live::{LiveTokens, UnsentBatch};
use super::TokenService;
use crate::store::{now_secs, StateStore, TokenFilter, UsageDelta};

impl LiveTokens {
    /// Writes one batch; on failure keeps it (first in line) for the next flush.
    async fn write_batch(
        &self,
        store: &StateStore,
        batch: UnsentBatch,
    ) -> Result<Vec<UsageDelta>, String> {
        self.usage_in_flight
            .store(batch.deltas.len() as u64, Ordering::Relaxed);
        let recorded = store.tokens().record_usage(&batch.id, &batch.deltas).await;
        self.usage_in_flight.store(0, Ordering::Relaxed);
        match recorded {
            Ok(()) => Ok(batch.deltas),
            Err(error) => {
                self.keep_unsent(batch);
                Err(error.to_string())
            }
        }
    }

    /// Writes the usage counted since the last flush; flags and (when the policy says so)
    /// revokes tokens past the usage thresholds. Returns how many tokens' usage was written.
    /// A batch covers at most one flush interval, so rates are judged over it (an early flush
    /// can only under-count).
    ///
    /// # Errors
    /// The store's error; the batch is kept for the next flush.
    pub async fn flush_usage(
        &self,
        store: &StateStore,
        token_service: Option<&TokenService>,
    ) -> Result<usize, String> {
        // One flush at a time, from drain to the end of the write. A request that counted its
        // use while another flush was writing finds its use either written (that flush
        // succeeded) or put back (it failed, and this flush tries again and reports it): so
        // with `usage.durable` no request goes upstream before its own use is stored.
        let _flushing = self.flushing.lock().await;
        // First what earlier flushes could not confirm, as it was (same batch id: if the
        // store did apply it and only the answer was lost, it is not counted twice).
        let mut written = 0;
        while let Some(unsent) = self.take_unsent() {
            written += self.write_batch(store, unsent).await?.len();
        }
        let batch = self.drain();
        if batch.is_empty() {
            return Ok(written);
        }
        let batch = self.write_batch(store, self.new_batch(batch)).await?;
        written += batch.len();
        let Some(token_service) = token_service else {
            return Ok(written);
        };
        let policy = &token_service.usage;
        if policy.max_distinct_ips.is_none() && policy.max_per_minute.is_none() {
            return Ok(written);
        }
        let minutes = policy.flush_interval.as_secs_f64().max(1.0) / 60.0;
        for delta in &batch {
            let rate = (delta.count as f64 / minutes).round() as u64;
            let mut reason = policy
                .max_per_minute
                .filter(|&max| rate > max)
                .map(|max| format!("used {rate} times a minute (limit {max})"));
            if reason.is_none() {
                if let Some(max) = policy.max_distinct_ips {
                    if let Ok(Some(token)) = store.tokens().token(&delta.token_id).await {
                        if token.usage.distinct_ips > max {
                            reason = Some(format!(
                                "used from {} client addresses (limit {max})",
                                token.usage.distinct_ips
                            ));
                        }
                    }
                }
            }
            let Some(reason) = reason else { continue };
            if let Err(e) = store.tokens().flag(&delta.token_id, &reason).await {
                log::error!("usage statistics: cannot flag a token: {e}");
                continue;
            }
            log::warn!("token {} flagged: {reason}", delta.token_id);
            if policy.auto_revoke {
                let filter = TokenFilter {
                    id: Some(delta.token_id.clone()),
                    now: now_secs(),
                    ..TokenFilter::default()
                };
                match token_service.revoke(&filter, "anomaly", Some(reason)).await {
                    Ok(revoked) if revoked > 0 => {
                        log::warn!("token {} revoked automatically", delta.token_id);
                    }
                    Ok(_) => {}
                    Err(e) => log::error!("cannot revoke flagged token {}: {e}", delta.token_id),
                }
            }
        }
        Ok(written)
    }
}
