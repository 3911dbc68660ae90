//! Shared gateway state, behind narrow async traits by purpose:
//!
//! - [`TokenStore`]: registered clients, issued tokens (with rotation, usage, flags,
//!   statistics and purging);
//! - [`RevocationStore`]: revoking tokens, and the revocation epoch that tells every cache
//!   of verified tokens to drop what it holds;
//! - [`OnceStore`]: one-time markers with an expiry (jwt-bearer `jti`, SigV4 replay);
//! - [`CounterStore`]: counters that grow by n within a window (rate limits, quotas);
//! - [`IdentityStore`]: who is behind a client address, until when;
//! - [`DocumentStore`]: small versioned JSON documents replaced by compare-and-swap (the
//!   OAuth brokers' registrations and provider sessions).
//!
//! A [`StateStore`] hands out one object per trait, all from the same backend, opened from
//! the policy's `state:` URL. Backends: [`memory::MemoryStore`] (tests, throw-away demos)
//! and [`sqlite::SqliteStore`] (the default: one WAL-mode file; its calls run on tokio's
//! blocking pool, so a disk commit never stalls a proxy thread). Every backend passes the
//! conformance suite of each trait (`conformance/`).
//!
//! The traits are async because a network backend (Redis) would do I/O in every call. So
//! no assertion calls them: the request path reads the store in `prefetch`, before the
//! pipeline runs, and the steps answer from what that left in memory.

#[cfg(test)]
pub mod conformance;
pub mod documents;
pub mod memory;
pub mod once_markers;
pub mod quota_counter;
pub mod redis;
pub mod sqlite;
mod types;

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

pub use types::{
    ClientRecord, ClientStats, CounterCharge, CounterWindow, IdentityEntry, IdentityTouch,
    Revocation, TokenFilter, TokenFormat, TokenKind, TokenRecord, Usage, UsageDelta,
};

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

/// Clients and tokens. Every method is atomic on its own.
#[async_trait]
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// Creates or replaces a client registration.
    async fn put_client(&self, client: &ClientRecord) -> StoreResult<()>;
    async fn client(&self, id: &str) -> StoreResult<Option<ClientRecord>>;
    async fn clients(&self) -> StoreResult<Vec<ClientRecord>>;

    /// Stores a new token. An existing id is an error (ids are random).
    async fn insert_token(&self, token: &TokenRecord) -> StoreResult<()>;
    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>>;
    /// Tokens passing the filter, newest first, `limit` (0: no limit) after `offset`.
    async fn find_tokens(&self, filter: &TokenFilter) -> StoreResult<Vec<TokenRecord>>;

    /// Marks a refresh token as exchanged, only if it is still live (neither rotated nor
    /// revoked): true when this call did it. Two concurrent exchanges: exactly one wins.
    async fn mark_rotated(&self, id: &str, at: i64) -> StoreResult<bool>;

    /// Adds a batch of usage, once: a batch whose id was recorded before (in the last
    /// [`USAGE_BATCH_MEMORY_SECS`]) changes nothing. A write whose answer was lost (a
    /// timeout while the store did apply it) is retried with the same id, so it never
    /// counts twice.
    async fn record_usage(&self, batch_id: &str, batch: &[UsageDelta]) -> StoreResult<()>;

    /// Sets the flag of a token (the first reason stays).
    async fn flag(&self, id: &str, reason: &str) -> StoreResult<()>;

    async fn client_stats(&self, now: i64) -> StoreResult<Vec<ClientStats>>;

    /// Deletes tokens that expired before `before`; returns how many went.
    async fn purge_expired_tokens(&self, before: i64) -> StoreResult<u64>;
}

/// What a revocation did: the ids it revoked and the epoch it moved the store to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub ids: Vec<String>,
    pub epoch: u64,
}

/// Revoking tokens, and the signal that a revocation happened.
///
/// The epoch only ever grows, by at least one per [`RevocationStore::revoke`] call (even
/// one that matched nothing: a validation racing with it must not keep its answer). A cache
/// of verified tokens remembers the epoch it last saw and drops everything when it changes;
/// that is how a revocation made by another process sharing the store reaches this one.
#[async_trait]
pub trait RevocationStore: Send + Sync + fmt::Debug {
    /// Revokes every not-yet-revoked token passing the filter (`limit`/`offset` ignored)
    /// and advances the epoch, atomically.
    async fn revoke(&self, filter: &TokenFilter, how: &Revocation) -> StoreResult<Revoked>;

    /// The current epoch (0 before the first revocation).
    async fn revocation_epoch(&self) -> StoreResult<u64>;
}

/// One-time markers: a key may be used once until it expires.
#[async_trait]
pub trait OnceStore: Send + Sync + fmt::Debug {
    /// Records `key` until `expires_at`; false when it is already recorded and not expired
    /// at `now` (a replay). Of concurrent calls with one key, exactly one gets true.
    async fn use_once(&self, key: &str, expires_at: i64, now: i64) -> StoreResult<bool>;

    /// Deletes markers that expired before `before`; returns how many went.
    async fn purge_expired_markers(&self, before: i64) -> StoreResult<u64>;
}

/// Counters in windows, for quotas: a count that may not pass a limit until the window ends.
#[async_trait]
pub trait CounterStore: Send + Sync + fmt::Debug {
    /// Adds `by` to the counter `key` unless that would take it past `limit`; then nothing
    /// changes and the charge is refused (a refused call consumes nothing). A counter whose
    /// window ended at or before `now` (or a new one) starts afresh at zero, its window
    /// ending at `window_end`. Concurrent charges are never lost and never pass the limit
    /// together: the check and the addition are one atomic step in the store.
    async fn charge(
        &self,
        key: &str,
        by: u64,
        limit: u64,
        window_end: i64,
        now: i64,
    ) -> StoreResult<CounterCharge>;

    /// The counter's running window at `now`, if it has one.
    async fn counter(&self, key: &str, now: i64) -> StoreResult<Option<CounterWindow>>;

    /// Every counter whose key starts with `prefix` and whose window runs at `now`, by key
    /// (at most [`MAX_LISTED_COUNTERS`]).
    async fn counters(&self, prefix: &str, now: i64) -> StoreResult<Vec<(String, CounterWindow)>>;

    /// Ends the counter's window now: true when it had a running one.
    async fn reset_counter(&self, key: &str, now: i64) -> StoreResult<bool>;

    /// Deletes counters whose window ended before `before`; returns how many went.
    async fn purge_expired_counters(&self, before: i64) -> StoreResult<u64>;
}

/// How long a usage batch's id is remembered, so a retried batch is not counted twice.
pub const USAGE_BATCH_MEMORY_SECS: i64 = 24 * 3600;

/// The one-time marker that says a usage batch was recorded.
#[must_use]
pub fn usage_batch_marker(batch_id: &str) -> String {
    format!("usage-batch:{batch_id}")
}

/// The most counters one [`CounterStore::counters`] call lists.
pub const MAX_LISTED_COUNTERS: usize = 1000;

/// Identities by client address.
#[async_trait]
pub trait IdentityStore: Send + Sync + fmt::Debug {
    /// Creates or replaces the entry for `entry.ip`.
    async fn put_identity(&self, entry: &IdentityEntry) -> StoreResult<()>;
    /// The entry for `ip`, unless it has expired at `now`.
    async fn identity(&self, ip: IpAddr, now: i64) -> StoreResult<Option<IdentityEntry>>;
    /// Removes the entry for `ip`: true when there was one.
    async fn remove_identity(&self, ip: IpAddr) -> StoreResult<bool>;
    /// Every entry not expired at `now`, by address.
    async fn identities(&self, now: i64) -> StoreResult<Vec<IdentityEntry>>;
    /// Moves the idle deadline of each touched entry on ([`IdentityEntry::touched_expiry`]),
    /// atomically per entry, and only when the entry is still the touched user's and was
    /// live when the traffic was seen: a deleted or replaced entry is never brought back.
    /// Returns how many entries moved.
    async fn touch_identities(&self, touches: &[IdentityTouch]) -> StoreResult<u64>;
    /// Deletes entries that expired before `before`; returns how many went.
    async fn purge_expired_identities(&self, before: i64) -> StoreResult<u64>;
}

/// One stored document and the version a replacement must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    /// 1 for the first write, one more for each replacement.
    pub version: u64,
    pub body: String,
}

/// The most documents one [`DocumentStore::documents`] call lists.
pub const MAX_LISTED_DOCUMENTS: usize = 10_000;

/// Small JSON documents by kind and key, each replaced only by a writer that names the
/// version it read (compare-and-swap), so concurrent updates are never lost.
#[async_trait]
pub trait DocumentStore: Send + Sync + fmt::Debug {
    /// The document `key` of `kind`, if there is one.
    async fn document(&self, kind: &str, key: &str) -> StoreResult<Option<StoredDocument>>;
    /// Every document of `kind`, by key (at most [`MAX_LISTED_DOCUMENTS`]).
    async fn documents(&self, kind: &str) -> StoreResult<Vec<(String, StoredDocument)>>;
    /// Writes `body` as `key` when its current version is `expected_version` (0: there is
    /// none yet) and returns the new version; `None` when another write came first (then
    /// nothing changed). Of concurrent writers naming one version, exactly one wins.
    async fn put_document(
        &self,
        kind: &str,
        key: &str,
        expected_version: u64,
        body: &str,
    ) -> StoreResult<Option<u64>>;
    /// Deletes the document: true when there was one.
    async fn delete_document(&self, kind: &str, key: &str) -> StoreResult<bool>;
}

/// A backend that keeps every kind of state.
pub trait Backend:
    TokenStore + RevocationStore + OnceStore + CounterStore + IdentityStore + DocumentStore + 'static
{
}

impl<B> Backend for B where
    B: TokenStore
        + RevocationStore
        + OnceStore
        + CounterStore
        + IdentityStore
        + DocumentStore
        + 'static
{
}

/// The opened state store: one object per purpose, all over the same backend. Cheap to
/// clone; every clone talks to the same data.
#[derive(Clone)]
pub struct StateStore {
    description: Arc<str>,
    tokens: Arc<dyn TokenStore>,
    revocations: Arc<dyn RevocationStore>,
    once: Arc<dyn OnceStore>,
    counters: Arc<dyn CounterStore>,
    identities: Arc<dyn IdentityStore>,
    documents: Arc<dyn DocumentStore>,
    /// The Redis connection, when the backend is Redis (for its metrics), and the key prefix
    /// the policy gave its keys (cluster rate limits use it too).
    redis: Option<(crate::redis::RedisClient, Arc<str>)>,
}

impl fmt::Debug for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StateStore")
            .field(&self.description)
            .finish()
    }
}

impl StateStore {
    /// Hands out `backend` under each of its purposes; `description` names it for
    /// `/healthz` and logs (`memory`, `sqlite:///var/lib/...`).
    pub fn from_backend<B: Backend>(backend: Arc<B>, description: &str) -> StateStore {
        StateStore {
            description: Arc::from(description),
            tokens: backend.clone(),
            revocations: backend.clone(),
            once: backend.clone(),
            counters: backend.clone(),
            identities: backend.clone(),
            documents: backend,
            redis: None,
        }
    }

    /// The Redis connection behind this store, when it is a Redis store.
    #[must_use]
    pub fn redis_client(&self) -> Option<&crate::redis::RedisClient> {
        self.redis.as_ref().map(|(client, _)| client)
    }

    /// The prefix of every key this store writes in Redis, when it is a Redis store.
    #[must_use]
    pub fn redis_key_prefix(&self) -> Option<&str> {
        self.redis.as_ref().map(|(_, prefix)| &**prefix)
    }

    /// The Redis pub/sub channel revocations are announced on, when this is a Redis store
    /// (with the client to follow it through).
    #[must_use]
    pub fn revocation_channel(&self) -> Option<(&crate::redis::RedisClient, String)> {
        self.redis
            .as_ref()
            .map(|(client, prefix)| (client, redis::revocation_channel(prefix)))
    }

    /// A fresh, empty memory store.
    #[must_use]
    pub fn memory() -> StateStore {
        StateStore::from_backend(Arc::new(memory::MemoryStore::default()), "memory")
    }

    #[must_use]
    pub fn describe(&self) -> &str {
        &self.description
    }

    #[must_use]
    pub fn tokens(&self) -> &Arc<dyn TokenStore> {
        &self.tokens
    }

    #[must_use]
    pub fn revocations(&self) -> &Arc<dyn RevocationStore> {
        &self.revocations
    }

    #[must_use]
    pub fn once(&self) -> &Arc<dyn OnceStore> {
        &self.once
    }

    #[must_use]
    pub fn counters(&self) -> &Arc<dyn CounterStore> {
        &self.counters
    }

    #[must_use]
    pub fn identities(&self) -> &Arc<dyn IdentityStore> {
        &self.identities
    }

    #[must_use]
    pub fn documents(&self) -> &Arc<dyn DocumentStore> {
        &self.documents
    }

    /// Deletes every kind of record that expired before `before`; returns how many went.
    ///
    /// # Errors
    /// The first purge the backend refused.
    pub async fn purge_expired(&self, before: i64) -> StoreResult<u64> {
        Ok(self.tokens.purge_expired_tokens(before).await?
            + self.once.purge_expired_markers(before).await?
            + self.counters.purge_expired_counters(before).await?
            + self.identities.purge_expired_identities(before).await?)
    }
}

/// Runs store work to completion from synchronous code: the command line, policy loading
/// (also called from inside the server's runtime, on reload) and shutdown. It runs on a
/// runtime of its own on a scoped thread, because blocking on a future from inside a tokio
/// worker panics; the calling thread waits, as it did for the synchronous store before.
/// Not for the request path.
///
/// # Errors
/// The work's own error, or no runtime could be started for it.
pub fn wait<T: Send>(work: impl Future<Output = StoreResult<T>> + Send) -> StoreResult<T> {
    let run = move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| StoreError::Unavailable(format!("cannot start a runtime: {error}")))?
            .block_on(work)
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::scope(|scope| {
        scope
            .spawn(run)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Which backend a policy's `state:` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Memory,
    Sqlite(std::path::PathBuf),
    /// A Redis server or Cluster, with the options of the policy's `redis:` block.
    Redis(Box<redis::RedisStoreConfig>),
}

impl StoreUrl {
    /// Parses `memory`, `sqlite://PATH` (relative paths are taken from `base`) or a Redis
    /// URL (its options, from the policy's `redis:` block, are set on the result).
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
        if crate::redis::RedisUrl::is_redis(s) {
            let url = crate::redis::RedisUrl::parse(s)?;
            return Ok(StoreUrl::Redis(Box::new(redis::RedisStoreConfig::new(url))));
        }
        Err(format!(
            "\"{s}\" is not a state store: use memory, sqlite://PATH, redis://HOST:PORT, \
             rediss://HOST:PORT or redis+cluster://HOST:PORT,HOST:PORT"
        ))
    }

    /// Opens the store (creating a missing SQLite file and its schema; connecting to Redis
    /// and waiting for its `PING`).
    ///
    /// # Errors
    /// The file cannot be opened or its schema created; Redis does not answer.
    pub fn open(&self) -> StoreResult<StateStore> {
        Ok(match self {
            StoreUrl::Memory => StateStore::memory(),
            StoreUrl::Sqlite(p) => {
                StateStore::from_backend(Arc::new(sqlite::SqliteStore::open(p)?), &self.to_string())
            }
            StoreUrl::Redis(config) => {
                let store = config.open()?;
                let client = store.client().clone();
                StateStore {
                    redis: Some((client, Arc::from(config.key_prefix.as_str()))),
                    ..StateStore::from_backend(Arc::new(store), &self.to_string())
                }
            }
        })
    }

    /// `check --connect`: opens the store read-only, changing nothing, and says what it
    /// found. A memory store has nothing to open; Redis is asked `PING` and read, never
    /// written.
    ///
    /// # Errors
    /// The file is missing, unreadable, not a database, or its tables are not ours; Redis
    /// does not answer.
    pub fn verify(&self) -> StoreResult<String> {
        match self {
            StoreUrl::Memory => Ok("memory: nothing to open (state is lost on exit)".to_owned()),
            StoreUrl::Sqlite(p) => {
                sqlite::verify_read_only(p).map(|summary| format!("{self}: {summary}"))
            }
            StoreUrl::Redis(config) => config.verify().map(|summary| format!("{self}: {summary}")),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Memory => f.write_str("memory"),
            StoreUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            StoreUrl::Redis(config) => write!(f, "{}", config.settings.url),
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

#[cfg(test)]
mod tests {
    use super::{wait, StateStore};

    /// Synchronous code reaches the store from a plain thread (the CLI) and from inside a
    /// runtime (a reload, a drop at shutdown), where blocking on a future would panic.
    #[test]
    fn wait_works_outside_and_inside_a_runtime() {
        let store = StateStore::memory();
        assert!(wait(store.once().use_once("outside", 100, 0)).expect("outside"));
        for runtime in [
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime"),
        ] {
            let store = store.clone();
            let first = runtime.block_on(async move {
                wait(store.counters().charge("inside", 1, 10, 60, 0)).expect("inside")
            });
            assert!(first.window.count >= 1);
        }
        assert_eq!(
            wait(store.counters().charge("inside", 0, 10, 60, 1))
                .expect("read")
                .window
                .count,
            2,
            "both runtimes' increments landed in the same store"
        );
    }
}
