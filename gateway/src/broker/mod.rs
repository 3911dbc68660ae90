//! The OAuth brokers' shared parts: third-party providers (`providers:`) and the
//! gateway's client of their token endpoints ([`provider`]), and the cryptography the
//! brokers use ([`sealing`]); the broker for the outbound proxy ([`outbound`]: provider
//! sessions, handshakes, single-flight refresh) and its step ([`inject`]). The
//! OProxy-compatible token broker (`crate::oproxy`) is built on the shared parts.

pub mod client_assertion;
pub mod inject;
pub mod outbound;
pub mod provider;
pub mod sealing;
