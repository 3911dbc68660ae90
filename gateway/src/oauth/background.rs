//! Background work for the token machinery: writing usage to the store in batches (and
//! flagging, optionally revoking, tokens whose usage looks unusual), watching the store's
//! revocation epoch (revocations made by another process sharing the store), purging
//! expired records, and refreshing remote key sets before they expire.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::state::GatewayState;
use crate::store::{now_secs, TokenFilter};

/// How often expired tokens and one-time markers are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Records are kept this long after they expire (for statistics and audits).
const KEEP_EXPIRED_SECS: i64 = 7 * 24 * 3600;

/// Writes pending usage now; flags and (when the policy says so) revokes tokens past the
/// usage thresholds. Returns how many tokens' usage was written. A batch covers at most one
/// flush interval, so rates are judged over it (an early flush can only under-count).
pub async fn flush_usage(state: &GatewayState) -> usize {
    match try_flush_usage(state).await {
        Ok(n) => n,
        Err(e) => {
            log::error!("usage statistics: {e}; will retry");
            0
        }
    }
}

/// [`flush_usage`], saying when the store refused the batch (kept for the next flush).
///
/// # Errors
/// The store's error.
pub async fn try_flush_usage(state: &GatewayState) -> Result<usize, String> {
    let rt = state.current();
    let live = &state.carry().live;
    let batch = live.drain();
    if batch.is_empty() {
        return Ok(0);
    }
    let n = batch.len();
    if let Err(e) = rt.store.tokens().record_usage(&batch).await {
        live.restore(batch);
        return Err(e.to_string());
    }
    let Some(ts) = rt.token_service.as_ref() else {
        return Ok(n);
    };
    let policy = &ts.usage;
    if policy.max_distinct_ips.is_none() && policy.max_per_minute.is_none() {
        return Ok(n);
    }
    let minutes = policy.flush_interval.as_secs_f64().max(1.0) / 60.0;
    for d in &batch {
        let rate = (d.count as f64 / minutes).round() as u64;
        let mut reason = policy
            .max_per_minute
            .filter(|&max| rate > max)
            .map(|max| format!("used {rate} times a minute (limit {max})"));
        if reason.is_none() {
            if let Some(max) = policy.max_distinct_ips {
                if let Ok(Some(t)) = rt.store.tokens().token(&d.token_id).await {
                    if t.usage.distinct_ips > max {
                        reason = Some(format!(
                            "used from {} client addresses (limit {max})",
                            t.usage.distinct_ips
                        ));
                    }
                }
            }
        }
        let Some(reason) = reason else { continue };
        if let Err(e) = rt.store.tokens().flag(&d.token_id, &reason).await {
            log::error!("usage statistics: cannot flag a token: {e}");
            continue;
        }
        log::warn!("token {} flagged: {reason}", d.token_id);
        if policy.auto_revoke {
            let filter = TokenFilter {
                id: Some(d.token_id.clone()),
                now: now_secs(),
                ..TokenFilter::default()
            };
            match ts.revoke(&filter, "anomaly", Some(reason)).await {
                Ok(k) if k > 0 => log::warn!("token {} revoked automatically", d.token_id),
                Ok(_) => {}
                Err(e) => log::error!("cannot revoke flagged token {}: {e}", d.token_id),
            }
        }
    }
    Ok(n)
}

/// Looks at the store's revocation epoch; when another process revoked something, the
/// verified-token cache is dropped.
async fn watch_revocations(state: &GatewayState) {
    let store = state.current().store.clone();
    match store.revocations().revocation_epoch().await {
        Ok(epoch) => {
            if state.carry().live.observe_store_epoch(epoch) {
                log::debug!("state store: revocation epoch {epoch}; verified tokens dropped");
            }
        }
        Err(error) => log::error!("state store: cannot read the revocation epoch: {error}"),
    }
}

/// Flushes usage on its interval and once more at shutdown; watches the revocation epoch
/// on the same beat; purges old records hourly.
pub struct TokenUpkeep {
    pub state: Arc<GatewayState>,
}

#[async_trait]
impl BackgroundService for TokenUpkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last_purge = std::time::Instant::now();
        loop {
            let interval = self
                .state
                .current()
                .token_service
                .as_ref()
                .map_or(Duration::from_secs(1), |t| t.usage.flush_interval);
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => {
                    flush_usage(&self.state).await;
                    return;
                }
            }
            flush_usage(&self.state).await;
            watch_revocations(&self.state).await;
            if last_purge.elapsed() >= PURGE_EVERY {
                last_purge = std::time::Instant::now();
                let store = self.state.current().store.clone();
                match store.purge_expired(now_secs() - KEEP_EXPIRED_SECS).await {
                    Ok(n) if n > 0 => log::info!("state store: purged {n} expired record(s)"),
                    Ok(_) => {}
                    Err(e) => log::error!("state store: purge failed: {e}"),
                }
            }
        }
    }
}

/// Fetches every remote key set when it is due (at start, then before it expires).
pub struct KeyRefresher {
    pub state: Arc<GatewayState>,
}

#[async_trait]
impl BackgroundService for KeyRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let rt = self.state.current();
            let now = now_secs();
            for set in rt.key_sets.iter().filter(|s| s.due(now)) {
                set.refresh().await;
                self.state.metrics.key_set_up(&set.url, set.is_ready());
            }
            drop(rt);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
