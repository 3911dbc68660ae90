//! The proxy service: what Pingora's hooks (in the parent module) run on.

use std::sync::Arc;

use pingora::proxy::Session;

use super::RequestCtx;
use crate::connection::ConnectionCounts;
use crate::state::GatewayState;

/// The proxy service.
pub struct Gateway {
    pub state: Arc<GatewayState>,
    pub connector: pingora::connectors::http::Connector,
    /// The connection caps the listeners count against: an HTTP/2 stream counts as one
    /// connection more (each holds its own upstream connection).
    pub counts: Arc<ConnectionCounts>,
}

impl Gateway {
    /// A gateway whose HTTP/2 streams count against `counts`, the listeners' caps.
    #[must_use]
    pub fn new(state: Arc<GatewayState>, counts: Arc<ConnectionCounts>) -> Self {
        Gateway {
            state,
            connector: pingora::connectors::http::Connector::new(None),
            counts,
        }
    }

    /// Counts an HTTP/2 stream against the connection caps, as a connection of its client:
    /// each stream holds an upstream connection of its own, so without this one client
    /// connection could hold a hundred upstream sockets and a client address 100 times its
    /// connection cap. Past a cap the stream is refused like a connection would be.
    pub(super) fn count_stream(&self, session: &Session, ctx: &mut RequestCtx) {
        let peer = super::routing::peer_ip(session);
        match self
            .counts
            .admit_peer(Some(peer), &self.state.current(), &self.state.metrics)
        {
            Ok(permit) => ctx.stream_permit = Some(permit),
            Err(refusal) => ctx.stream_refused = Some(refusal),
        }
    }
}
