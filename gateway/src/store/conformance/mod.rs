//! The behaviour every state-store backend must show, one suite per trait, run by each
//! backend's tests with a fresh store per check. The concurrency checks race tasks on a
//! multi-threaded runtime: the tests that call these suites must use one.

pub mod counters;
pub mod documents;
pub mod identities;
pub mod once;
pub mod revocations;
pub mod tokens;

use std::net::IpAddr;

use super::{TokenFilter, TokenFormat, TokenKind, TokenRecord};

const NOW: i64 = 1_800_000_000;

/// Tasks racing each other in the concurrency checks.
const RACERS: usize = 32;

/// A token with the given id, client and subject, issued at `NOW` for an hour.
#[must_use]
pub fn sample(id: &str, client: &str, subject: &str) -> TokenRecord {
    TokenRecord {
        id: id.to_owned(),
        kind: TokenKind::Access,
        format: TokenFormat::Jwt,
        client_id: client.to_owned(),
        subject: subject.to_owned(),
        scope: "widgets.read widgets.write".to_owned(),
        grant_type: "client_credentials".to_owned(),
        refresh_id: None,
        family_id: None,
        source: None,
        issued_at: NOW,
        expires_at: NOW + 3600,
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
        rotated_at: None,
        usage: super::Usage::default(),
        flagged: None,
    }
}

fn filter() -> TokenFilter {
    TokenFilter {
        now: NOW + 10,
        ..TokenFilter::default()
    }
}

fn ip(store: &str) -> IpAddr {
    store.parse().expect("ip")
}
