//! Pingora's HTTP proxy behind the connection guards ([`crate::connection`]): each accepted
//! connection is counted against the caps, wrapped in a [`GuardedStream`], and handed to
//! Pingora only once its first request head is in.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{Shutdown, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use super::Gateway;
use crate::connection::{ConnectionCounts, GuardedStream};
use crate::state::GatewayState;

/// Pingora's HTTP proxy behind the connection guards.
pub struct GuardedProxy {
    pub proxy: Arc<HttpProxy<Gateway>>,
    pub state: Arc<GatewayState>,
    pub counts: Arc<ConnectionCounts>,
}

#[async_trait]
impl ServerApp for GuardedProxy {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let rt = self.state.current();
        let limits = rt.client_limits;
        let client = stream
            .get_socket_digest()
            .and_then(|digest| digest.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
            // Connections from a trusted proxy carry many clients: not counted per address.
            .filter(|ip| !rt.trusted_proxies.contains(*ip));
        let permit = match self.counts.admit(client, &limits) {
            Ok(permit) => permit,
            Err(refusal) => {
                self.state.metrics.connection_refused(refusal.label());
                let _ = stream.write_all(refusal.answer()).await;
                let _ = stream.flush().await;
                Shutdown::shutdown(stream.as_mut()).await;
                return None;
            }
        };
        let cutoffs = self.state.metrics.client_cutoffs();
        let mut guarded = GuardedStream::new(stream, permit, limits, cutoffs);
        let mut watch = shutdown.clone();
        let head_in = tokio::select! {
            complete = guarded.read_first_head() => complete,
            _ = watch.changed() => false,
        };
        if !head_in {
            return None;
        }
        // Boxed: Pingora's request future is tens of KiB, allocated only from here on.
        Box::pin(ServerApp::process_new(
            &self.proxy,
            Box::new(guarded) as Stream,
            shutdown,
        ))
        .await
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.proxy.as_ref()).await;
    }
}
