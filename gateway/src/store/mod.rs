//! Shared gateway state behind one trait: tokens (with their usage), registered clients,
//! revocations, one-time markers (assertion `jti` replay) — everything that must outlive a
//! request and, with a durable backend, a restart.
//!
//! Backends: [`memory::MemoryStore`] (tests, throw-away demos) and [`sqlite::SqliteStore`]
//! (the default: one WAL-mode file). Every backend passes the same [`conformance`] suite.
//!
//! Calls are synchronous and short; callers on an async runtime that may hit the disk with
//! a commit (issuing, revoking) run them on a blocking thread.

#[cfg(test)]
pub mod conformance;
pub mod memory;
pub mod sqlite;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

/// What went wrong inside a backend. Callers fail closed on it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("state store data is corrupt: {0}")]
    Corrupt(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Access token or refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "access" => Some(TokenKind::Access),
            "refresh" => Some(TokenKind::Refresh),
            _ => None,
        }
    }
}

/// How a token travels: a JWT signed by the gateway, or a random string stored hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenFormat {
    Jwt,
    Opaque,
}

impl TokenFormat {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TokenFormat::Jwt => "jwt",
            TokenFormat::Opaque => "opaque",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jwt" => Some(TokenFormat::Jwt),
            "opaque" => Some(TokenFormat::Opaque),
            _ => None,
        }
    }
}

/// How a token has been used so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub count: u64,
    pub first_used_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub last_ip: Option<String>,
    pub distinct_ips: u64,
}

/// One issued token. `id` is the JWT's `jti`, or the hex SHA-256 of an opaque token (the
/// token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub kind: TokenKind,
    pub format: TokenFormat,
    pub client_id: String,
    /// The resource owner: the role account of a jwt-bearer grant, or the client itself.
    pub subject: String,
    /// Space-separated, as in OAuth.
    pub scope: String,
    pub grant_type: String,
    /// The refresh token issued with this access token (or, for a refresh token, the one it
    /// replaced).
    pub refresh_id: Option<String>,
    /// Refresh rotation family: every token descended from one grant.
    pub family_id: Option<String>,
    /// What the token was exchanged for: `iss` and `jti` of the assertion.
    pub source: Option<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// Who revoked it: `provider`, `app_owner`, `subscriber`, `client`, `reuse`, `anomaly`.
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    /// A refresh token that has been exchanged (it is dead from then on).
    pub rotated_at: Option<i64>,
    pub usage: Usage,
    /// Why its usage looks unusual, once it does.
    pub flagged: Option<String>,
}

impl TokenRecord {
    /// Not revoked, not rotated, not expired at `now`.
    #[must_use]
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.rotated_at.is_none() && now < self.expires_at
    }

    /// `active`, `revoked`, `rotated` or `expired`.
    #[must_use]
    pub fn status(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.rotated_at.is_some() {
            "rotated"
        } else if now >= self.expires_at {
            "expired"
        } else {
            "active"
        }
    }
}

/// A registered client as the store keeps it (the secret only as a digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientRecord {
    pub id: String,
    #[serde(skip)]
    pub secret_sha256: Option<[u8; 32]>,
    pub grants: Vec<String>,
    pub scopes: Vec<String>,
    pub token_format: TokenFormat,
}

/// Which tokens a listing, export or bulk revocation is about. Empty fields match all.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    pub id: Option<String>,
    pub client_id: Option<String>,
    pub subject: Option<String>,
    pub grant_type: Option<String>,
    pub family_id: Option<String>,
    pub kind: Option<TokenKind>,
    /// `active`, `revoked`, `rotated` or `expired`, judged at `now`.
    pub status: Option<String>,
    pub flagged: Option<bool>,
    pub now: i64,
    pub limit: usize,
    pub offset: usize,
}

impl TokenFilter {
    /// True when a record passes the filter (backends that cannot query use this).
    #[must_use]
    pub fn matches(&self, t: &TokenRecord) -> bool {
        self.id.as_ref().is_none_or(|v| *v == t.id)
            && self.client_id.as_ref().is_none_or(|v| *v == t.client_id)
            && self.subject.as_ref().is_none_or(|v| *v == t.subject)
            && self.grant_type.as_ref().is_none_or(|v| *v == t.grant_type)
            && self
                .family_id
                .as_ref()
                .is_none_or(|v| t.family_id.as_deref() == Some(v.as_str()))
            && self.kind.is_none_or(|k| k == t.kind)
            && self.status.as_ref().is_none_or(|s| s == t.status(self.now))
            && self.flagged.is_none_or(|f| f == t.flagged.is_some())
    }

    /// True when the filter names at least one of client, subject, family or id: bulk
    /// revocation refuses an empty filter (it would revoke everything).
    #[must_use]
    pub fn is_targeted(&self) -> bool {
        self.id.is_some()
            || self.client_id.is_some()
            || self.subject.is_some()
            || self.family_id.is_some()
    }
}

/// Who revokes and why.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub at: i64,
    pub by: String,
    pub reason: Option<String>,
}

/// Usage seen for one token since the last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDelta {
    pub token_id: String,
    pub count: u64,
    pub first_used_at: i64,
    pub last_used_at: i64,
    pub last_ip: IpAddr,
    /// Addresses seen in this batch (deduplicated; the store counts the new ones).
    pub ips: Vec<IpAddr>,
}

/// Per-client totals for the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClientStats {
    pub client_id: String,
    pub tokens: u64,
    pub active: u64,
    pub revoked: u64,
    pub uses: u64,
    pub last_used_at: Option<i64>,
    pub flagged: u64,
}

/// The state store. Every method is atomic on its own.
pub trait Store: Send + Sync + fmt::Debug {
    /// A short name for `/healthz` and logs (`memory`, `sqlite:/var/lib/...`).
    fn describe(&self) -> String;

    /// Creates or replaces a client registration.
    fn put_client(&self, client: &ClientRecord) -> StoreResult<()>;
    fn client(&self, id: &str) -> StoreResult<Option<ClientRecord>>;
    fn clients(&self) -> StoreResult<Vec<ClientRecord>>;

    /// Stores a new token. An existing id is an error (ids are random).
    fn insert_token(&self, token: &TokenRecord) -> StoreResult<()>;
    fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>>;
    /// Tokens passing the filter, newest first, `limit` (0: no limit) after `offset`.
    fn find_tokens(&self, filter: &TokenFilter) -> StoreResult<Vec<TokenRecord>>;

    /// Revokes every not-yet-revoked token passing the filter (`limit`/`offset` ignored);
    /// returns the ids revoked.
    fn revoke(&self, filter: &TokenFilter, how: &Revocation) -> StoreResult<Vec<String>>;

    /// Marks a refresh token as exchanged, only if it is still live (neither rotated nor
    /// revoked): true when this call did it. Two concurrent exchanges: exactly one wins.
    fn mark_rotated(&self, id: &str, at: i64) -> StoreResult<bool>;

    /// Adds a batch of usage.
    fn record_usage(&self, batch: &[UsageDelta]) -> StoreResult<()>;

    /// Sets the flag of a token (the first reason stays).
    fn flag(&self, id: &str, reason: &str) -> StoreResult<()>;

    /// Records `key` until `expires_at`; false when it is already recorded and not expired
    /// (a replay).
    fn use_once(&self, key: &str, expires_at: i64, now: i64) -> StoreResult<bool>;

    fn client_stats(&self, now: i64) -> StoreResult<Vec<ClientStats>>;

    /// Deletes one-time markers and tokens that expired before `before`. Returns how many
    /// rows went.
    fn purge_expired(&self, before: i64) -> StoreResult<u64>;
}

/// Which backend a policy's `state:` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Memory,
    Sqlite(std::path::PathBuf),
}

impl StoreUrl {
    /// Parses `memory` or `sqlite://PATH` (relative paths are taken from `base`).
    ///
    /// # Errors
    /// A message naming the accepted forms.
    pub fn parse(s: &str, base: &std::path::Path) -> Result<StoreUrl, String> {
        let s = s.trim();
        if s == "memory" || s == "memory://" {
            return Ok(StoreUrl::Memory);
        }
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file path, e.g. sqlite://portcullis.db".to_owned());
            }
            return Ok(StoreUrl::Sqlite(base.join(path)));
        }
        if s.starts_with("redis://") {
            return Err("the redis state backend is not available in this build; use memory or sqlite://PATH".to_owned());
        }
        Err(format!(
            "\"{s}\" is not a state store: use memory or sqlite://PATH"
        ))
    }

    /// Opens the store.
    ///
    /// # Errors
    /// The file cannot be opened or its schema created.
    pub fn open(&self) -> StoreResult<Arc<dyn Store>> {
        Ok(match self {
            StoreUrl::Memory => Arc::new(memory::MemoryStore::default()),
            StoreUrl::Sqlite(p) => Arc::new(sqlite::SqliteStore::open(p)?),
        })
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Memory => f.write_str("memory"),
            StoreUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
        }
    }
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
