//! Writes the traffic `require_ip_identity` noted to the identity table (the idle
//! timeout's write-behind), every [`FLUSH_EVERY`] and once more at shutdown.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::directory::FLUSH_EVERY;
use crate::state::GatewayState;

pub struct IdentityUpkeep {
    pub state: Arc<GatewayState>,
}

#[async_trait]
impl BackgroundService for IdentityUpkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(FLUSH_EVERY) => {}
                _ = shutdown.changed() => {
                    self.state.flush_identity_touches_now().await;
                    return;
                }
            }
            self.state.flush_identity_touches_now().await;
        }
    }
}
