//! Background work for the token machinery: writing usage to the store in batches (and
//! flagging, optionally revoking, tokens whose usage looks unusual), purging expired
//! records, and refreshing remote key sets before they expire.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::state::GatewayState;
use crate::store::now_secs;

/// How often expired tokens and one-time markers are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Records are kept this long after they expire (for statistics and audits).
const KEEP_EXPIRED_SECS: i64 = 7 * 24 * 3600;

/// Flushes usage on its interval and once more at shutdown; purges old records hourly.
/// (The revocation epoch is watched by `revocation_watch.rs`.)
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
                    self.state.flush_usage_now().await;
                    return;
                }
            }
            self.state.flush_usage_now().await;
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
