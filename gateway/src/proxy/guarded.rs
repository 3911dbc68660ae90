//! Pingora's HTTP proxy behind the connection guards ([`crate::connection`]): each accepted
//! connection is counted against the caps, wrapped in a [`GuardedStream`], and handed to
//! Pingora only once a request head is in, for that request; between requests of a
//! kept-alive connection only the guard holds it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Shutdown, Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use super::Gateway;
use crate::connection::{ConnectionCounts, GuardedStream};
use crate::state::GatewayState;

/// Keep-alive Pingora asks of a reused connection (its default); our own `idle_timeout`
/// closes a quiet one first.
const KEEPALIVE_SECONDS: u64 = 60;

/// Whether Pingora holds bytes of the client's next request (pipelined behind the last
/// one). The settings say so only in their `Debug` form; anything but a plain "none"
/// counts as bytes held, so a change there costs memory, never a request.
fn holds_pipelined_bytes(settings: &HttpPersistentSettings) -> bool {
    !format!("{settings:?}").contains("pipelined_prefix: None")
}

/// Pingora's HTTP proxy behind the connection guards.
pub struct GuardedProxy {
    pub proxy: Arc<HttpProxy<Gateway>>,
    pub state: Arc<GatewayState>,
    pub counts: Arc<ConnectionCounts>,
    /// Connections of this listener open with a TLS handshake (`tls:`), run here once the
    /// connection is counted, under the head deadline.
    pub tls: bool,
}

impl GuardedProxy {
    /// The TLS handshake with the runtime's certificate (so a reload's renewed certificate
    /// serves the next connection), within `limit`. `None`: no certificate is loaded, the
    /// client was too slow, or the handshake failed.
    async fn accept_tls(&self, stream: Stream, limit: Duration) -> Option<Stream> {
        let termination = self.state.current().tls.clone()?;
        // The acceptor wants the socket's own type (the listener hands it over boxed).
        let socket = stream.into_any().downcast::<L4Stream>().ok()?;
        // Boxed: the handshake's state (rustls's connection) is large, and held inline it
        // would grow every connection's future, plain ones included, for their whole life.
        let handshake = Box::pin(termination.acceptor.tls_handshake(*socket));
        match tokio::time::timeout(limit, handshake).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                log::debug!("TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                self.state
                    .metrics
                    .client_cutoffs()
                    .with_label_values(&["tls_handshake"])
                    .inc();
                None
            }
        }
    }
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
        let peer = stream
            .get_socket_digest()
            .and_then(|digest| digest.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let permit = match self.counts.admit_peer(peer, &rt, &self.state.metrics) {
            Ok(permit) => permit,
            Err(refusal) => {
                let _ = stream.write_all(refusal.answer()).await;
                let _ = stream.flush().await;
                Shutdown::shutdown(stream.as_mut()).await;
                return None;
            }
        };
        let stream = if self.tls {
            self.accept_tls(stream, limits.header_timeout).await?
        } else {
            stream
        };
        let http2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let cutoffs = self.state.metrics.client_cutoffs();
        let mut guarded = GuardedStream::new(stream, permit, limits, cutoffs);
        if http2 {
            // One connection, many overlapping streams: Pingora's own HTTP/2 loop serves
            // it, once the opening is in within the head deadline.
            if !guarded.read_h2_preface().await {
                return None;
            }
            return ServerApp::process_new(&self.proxy, Box::new(guarded), shutdown).await;
        }
        // What Pingora carries from one request of the connection to the next.
        let mut carried: Option<HttpPersistentSettings> = None;
        loop {
            // Between requests the connection is only this guard and its socket: Pingora's
            // session and request future (tens of KiB) exist while a request is handled,
            // not while a kept-alive client is quiet. A next request the client pipelined
            // is already in Pingora's hands, so it goes straight back to Pingora.
            if !carried.as_ref().is_some_and(holds_pipelined_bytes) {
                let mut watch = shutdown.clone();
                let head_in = tokio::select! {
                    complete = guarded.read_first_head() => complete,
                    _ = watch.changed() => false,
                };
                if !head_in {
                    return None;
                }
            }
            let mut session = ServerSession::new_http1(Box::new(guarded) as Stream);
            match carried.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => {
                    session.set_keepalive(Some(KEEPALIVE_SECONDS));
                    session.set_keepalive_reuses_remaining(
                        self.proxy
                            .server_options()
                            .and_then(|options| options.keepalive_request_limit),
                    );
                }
            }
            if *shutdown.borrow() {
                // Draining: this answer is the connection's last.
                session.set_keepalive(None);
            }
            // Boxed: Pingora's request future is tens of KiB, allocated only from here on.
            let reused = Box::pin(HttpServerApp::process_new_http(
                &self.proxy,
                session,
                shutdown,
            ))
            .await?;
            let (stream, settings) = reused.consume();
            carried = settings;
            guarded = match stream.into_any().downcast::<GuardedStream>() {
                Ok(guarded) => *guarded,
                Err(_) => return None,
            };
        }
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.proxy.as_ref()).await;
    }
}
