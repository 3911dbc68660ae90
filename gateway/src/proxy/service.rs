//! The proxy service: what Pingora's hooks (in the parent module) run on.

use std::sync::Arc;

use crate::state::GatewayState;

/// The proxy service.
pub struct Gateway {
    pub state: Arc<GatewayState>,
    pub connector: pingora::connectors::http::Connector,
}

impl Gateway {
    #[must_use]
    pub fn new(state: Arc<GatewayState>) -> Self {
        Gateway {
            state,
            connector: pingora::connectors::http::Connector::new(None),
        }
    }
}
