//! The SQLite store: one file in WAL mode with `synchronous=FULL`, so a committed token,
//! revocation or usage batch survives a crash or a restart. Writes go through one
//! connection; reads use a small pool of their own, which WAL lets run beside a write.
//!
//! SQLite's API blocks (a commit waits for the disk), so every trait call here moves its
//! statement to tokio's blocking pool and awaits it: a proxy thread never waits on the disk.
//! A call whose caller gave up (a client went away) still runs to its end, so a write is
//! never half-done.

mod db;
mod documents;
mod ephemeral;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{
    ClientRecord, ClientStats, CounterCharge, CounterStore, CounterWindow, IdentityEntry,
    IdentityStore, IdentityTouch, OnceStore, Revocation, RevocationStore, Revoked, StoreError,
    StoreResult, TokenFilter, TokenRecord, TokenStore, UsageDelta,
};
use db::SqliteDb;

#[derive(Debug)]
pub struct SqliteStore {
    db: Arc<SqliteDb>,
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `path` and its schema. Synchronous:
    /// it runs once, when a policy is first loaded.
    ///
    /// # Errors
    /// The file cannot be opened or written.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        Ok(SqliteStore {
            db: Arc::new(SqliteDb::open(path)?),
        })
    }

    /// Runs `work` on the blocking pool with the database.
    async fn off_runtime<T: Send + 'static>(
        &self,
        work: impl FnOnce(&SqliteDb) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|error| {
                StoreError::Unavailable(format!("the store's task stopped: {error}"))
            })?
    }
}

/// `check --connect`: opens the file read-only (never creating or changing it) and checks
/// that it is a database whose tables have the columns this version uses. Returns a
/// one-line summary.
///
/// # Errors
/// The file is missing or unreadable, is not a database, or its tables are not ours.
pub fn verify_read_only(path: &Path) -> StoreResult<String> {
    let unavailable = |cause: &dyn std::fmt::Display| {
        StoreError::Unavailable(format!("cannot open {} read-only: {cause}", path.display()))
    };
    if !path.exists() {
        return Err(StoreError::Unavailable(format!(
            "{} does not exist (run would create it; check --connect does not)",
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|error| unavailable(&error))?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|error| match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => {
                StoreError::Corrupt(format!("{} is not a SQLite database", path.display()))
            }
            _ => unavailable(&error),
        })?;
    if !tables.iter().any(|name| name == "tokens") {
        return Err(StoreError::Corrupt(format!(
            "{} has no tokens table: it is not a portcullis state store",
            path.display()
        )));
    }
    let mut missing = Vec::new();
    for (table, columns) in db::EXPECTED_TABLES {
        if !tables.iter().any(|name| name == table) {
            // A file from an older version: run adds the table; nothing is wrong with it.
            missing.push(*table);
            continue;
        }
        let present: Vec<String> = conn
            .prepare(&format!("PRAGMA table_info({table})"))
            .and_then(|mut stmt| {
                stmt.query_map([], |row| row.get::<_, String>(1))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|error| unavailable(&error))?;
        if let Some(column) = columns
            .iter()
            .find(|column| !present.iter().any(|name| name == *column))
        {
            return Err(StoreError::Corrupt(format!(
                "{}: table {table} has no column {column}: the schema is not this version's",
                path.display()
            )));
        }
    }
    let tokens: Option<i64> = conn
        .query_row("SELECT COUNT(*) FROM tokens", [], |row| row.get(0))
        .optional()
        .map_err(|error| unavailable(&error))?;
    let mut summary = format!(
        "opened read-only, schema ok, {} token record(s)",
        tokens.unwrap_or(0)
    );
    if !missing.is_empty() {
        summary.push_str(&format!(
            " (tables {} will be created at start)",
            missing.join(", ")
        ));
    }
    Ok(summary)
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn put_client(&self, client: &ClientRecord) -> StoreResult<()> {
        let client = client.clone();
        self.off_runtime(move |db| db.put_client(&client)).await
    }

    async fn client(&self, id: &str) -> StoreResult<Option<ClientRecord>> {
        let id = id.to_owned();
        self.off_runtime(move |db| db.client(&id)).await
    }

    async fn clients(&self) -> StoreResult<Vec<ClientRecord>> {
        self.off_runtime(SqliteDb::clients).await
    }

    async fn insert_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let token = token.clone();
        self.off_runtime(move |db| db.insert_token(&token)).await
    }

    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        let id = id.to_owned();
        self.off_runtime(move |db| db.token(&id)).await
    }

    async fn find_tokens(&self, filter: &TokenFilter) -> StoreResult<Vec<TokenRecord>> {
        let filter = filter.clone();
        self.off_runtime(move |db| db.find_tokens(&filter)).await
    }

    async fn mark_rotated(&self, id: &str, at: i64) -> StoreResult<bool> {
        let id = id.to_owned();
        self.off_runtime(move |db| db.mark_rotated(&id, at)).await
    }

    async fn record_usage(&self, batch_id: &str, batch: &[UsageDelta]) -> StoreResult<()> {
        let batch_id = batch_id.to_owned();
        let batch = batch.to_vec();
        self.off_runtime(move |db| db.record_usage(&batch_id, &batch))
            .await
    }

    async fn flag(&self, id: &str, reason: &str) -> StoreResult<()> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.off_runtime(move |db| db.flag(&id, &reason)).await
    }

    async fn client_stats(&self, now: i64) -> StoreResult<Vec<ClientStats>> {
        self.off_runtime(move |db| db.client_stats(now)).await
    }

    async fn purge_expired_tokens(&self, before: i64) -> StoreResult<u64> {
        self.off_runtime(move |db| db.purge_expired_tokens(before))
            .await
    }
}

#[async_trait]
impl RevocationStore for SqliteStore {
    async fn revoke(&self, filter: &TokenFilter, how: &Revocation) -> StoreResult<Revoked> {
        let (filter, how) = (filter.clone(), how.clone());
        self.off_runtime(move |db| db.revoke(&filter, &how)).await
    }

    async fn revocation_epoch(&self) -> StoreResult<u64> {
        self.off_runtime(SqliteDb::revocation_epoch).await
    }
}

#[async_trait]
impl OnceStore for SqliteStore {
    async fn use_once(&self, key: &str, expires_at: i64, now: i64) -> StoreResult<bool> {
        let key = key.to_owned();
        self.off_runtime(move |db| db.use_once(&key, expires_at, now))
            .await
    }

    async fn purge_expired_markers(&self, before: i64) -> StoreResult<u64> {
        self.off_runtime(move |db| db.purge_expired_markers(before))
            .await
    }
}

#[async_trait]
impl CounterStore for SqliteStore {
    async fn charge(
        &self,
        key: &str,
        by: u64,
        limit: u64,
        window_end: i64,
        now: i64,
    ) -> StoreResult<CounterCharge> {
        let key = key.to_owned();
        self.off_runtime(move |db| db.charge(&key, by, limit, window_end, now))
            .await
    }

    async fn counter(&self, key: &str, now: i64) -> StoreResult<Option<CounterWindow>> {
        let key = key.to_owned();
        self.off_runtime(move |db| db.counter(&key, now)).await
    }

    async fn counters(&self, prefix: &str, now: i64) -> StoreResult<Vec<(String, CounterWindow)>> {
        let prefix = prefix.to_owned();
        self.off_runtime(move |db| db.counters(&prefix, now)).await
    }

    async fn reset_counter(&self, key: &str, now: i64) -> StoreResult<bool> {
        let key = key.to_owned();
        self.off_runtime(move |db| db.reset_counter(&key, now))
            .await
    }

    async fn purge_expired_counters(&self, before: i64) -> StoreResult<u64> {
        self.off_runtime(move |db| db.purge_expired_counters(before))
            .await
    }
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn put_identity(&self, entry: &IdentityEntry) -> StoreResult<()> {
        let entry = entry.clone();
        self.off_runtime(move |db| db.put_identity(&entry)).await
    }

    async fn identity(&self, ip: IpAddr, now: i64) -> StoreResult<Option<IdentityEntry>> {
        self.off_runtime(move |db| db.identity(ip, now)).await
    }

    async fn remove_identity(&self, ip: IpAddr) -> StoreResult<bool> {
        self.off_runtime(move |db| db.remove_identity(ip)).await
    }

    async fn identities(&self, now: i64) -> StoreResult<Vec<IdentityEntry>> {
        self.off_runtime(move |db| db.identities(now)).await
    }

    async fn touch_identities(&self, touches: &[IdentityTouch]) -> StoreResult<u64> {
        let touches = touches.to_vec();
        self.off_runtime(move |db| db.touch_identities(&touches))
            .await
    }

    async fn purge_expired_identities(&self, before: i64) -> StoreResult<u64> {
        self.off_runtime(move |db| db.purge_expired_identities(before))
            .await
    }
}

#[cfg(test)]
mod tests;
