//! Portcullis: an API gateway for the DMZ on Pingora, running a compiled YAML pipeline of
//! assertions for every service it fronts.
//!
//! The binary (`portcullis`) is a thin CLI over this library; integration tests drive the
//! same library to start real servers on ephemeral ports.

pub mod access_log;
pub mod admin;
pub mod auth_failures;
pub mod basic_auth;
pub mod broker;
pub mod capture;
pub mod clock;
pub mod config;
pub mod connection;
pub mod content_length;
pub mod credentials;
pub mod echo;
pub mod eval;
pub mod files;
pub mod identity;
pub mod metrics;
pub mod oauth;
pub mod oproxy;
pub mod path;
pub mod policy_test;
pub mod privileges;
pub mod problem;
pub mod proxy;
pub mod redis;
pub mod replay;
pub mod router;
pub mod runtime;
pub mod saml_issuer;
pub mod server;
pub mod sign_cli;
pub mod sign_jwt;
pub mod sign_saml;
pub mod state;
pub mod store;
pub mod tls_termination;
pub mod upstream;

/// The JSON Schema of the policy language.
#[must_use]
pub fn schema() -> serde_json::Value {
    let schema = schemars::schema_for!(config::spec::ConfigSpec);
    serde_json::to_value(schema).unwrap_or_default()
}

/// The JSON Schema of `portcullis test` files.
#[must_use]
pub fn test_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(policy_test::spec::TestFileSpec);
    serde_json::to_value(schema).unwrap_or_default()
}

/// Cases for a property test: `PROPTEST_CASES` when set (long local fuzzing runs), else
/// the test's own count.
#[cfg(test)]
pub(crate) fn test_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
