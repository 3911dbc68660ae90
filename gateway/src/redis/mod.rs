//! Redis: the connection the shared state of a fleet of gateways goes through.
//!
//! - [`url`]: the four URL forms a policy writes (`redis://`, `rediss://`,
//!   `redis+cluster://`, `rediss+cluster://`), passwords redacted whenever shown;
//! - [`client`]: [`RedisClient`], one multiplexed connection (or the Cluster client) on a
//!   runtime of its own, every call under a deadline, behind a [`breaker`];
//! - [`limiter`]: cluster-scope rate-limit decisions (GCRA in one Lua script);
//! - [`metrics`]: the client's counters as Prometheus families;
//! - [`pubsub`]: following a channel (revocation notices between gateways);
//! - `test_servers`: real `redis-server`s for tests and benches.

pub mod breaker;
pub mod client;
mod connection;
pub mod limiter;
mod local;
pub mod metrics;
pub mod pubsub;
#[doc(hidden)]
pub mod test_servers;
pub mod url;

use std::time::Duration;

pub use breaker::{BreakerSettings, BreakerStats};
pub use client::{RedisClient, RedisStats};
pub use url::RedisUrl;

use crate::runtime::Secret;

/// A call's deadline unless the policy sets `redis.timeout`: a request that needs Redis
/// waits at most this long for it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// How long one attempt to connect may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything needed to reach a Redis deployment.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub url: RedisUrl,
    /// The password, from a policy secret; when set it wins over one in the URL.
    pub password: Option<Secret>,
    /// Deadline of each call.
    pub timeout: Duration,
    /// Deadline of each connection attempt.
    pub connect_timeout: Duration,
    /// Trusted CA certificates (PEM) for `rediss`; none: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub breaker: BreakerSettings,
}

impl RedisSettings {
    /// Default settings for a URL (tests, benches, the CLI).
    #[must_use]
    pub fn new(url: RedisUrl) -> RedisSettings {
        RedisSettings {
            url,
            password: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ca_pem: None,
            breaker: BreakerSettings::default(),
        }
    }
}

impl PartialEq for RedisSettings {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
            && self.password.as_ref().map(Secret::expose)
                == other.password.as_ref().map(Secret::expose)
            && self.timeout == other.timeout
            && self.connect_timeout == other.connect_timeout
            && self.ca_pem == other.ca_pem
            && self.breaker == other.breaker
    }
}

impl Eq for RedisSettings {}

/// Redis could not answer a call. Callers follow their failure mode (closed by default).
/// The message names the target by its redacted URL only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisUnavailable {
    #[error("redis {target}: no answer within {timeout:?}")]
    Timeout { target: String, timeout: Duration },
    #[error("redis {target}: circuit open after repeated failures; not calling")]
    CircuitOpen { target: String },
    #[error("redis {target}: {message}")]
    Failed { target: String, message: String },
}

#[cfg(test)]
mod tests;
