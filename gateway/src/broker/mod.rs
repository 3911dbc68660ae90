//! The outbound OAuth broker's shared parts: third-party providers (`providers:`) and the
//! gateway's client of their token endpoints ([`provider`]), and the cryptography the
//! brokers use ([`sealing`]). The OProxy-compatible token broker (`crate::oproxy`) is
//! built on them.

pub mod provider;
pub mod sealing;
