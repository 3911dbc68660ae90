//! The SQLite statements for state that expires: the revocation epoch, one-time markers,
//! counters and identity entries. Synchronous, like the rest of `db.rs`; only ever called
//! on a blocking thread.

use std::net::IpAddr;

use rusqlite::{params, OptionalExtension, Row};

use super::db::{lock, SqliteDb};
use crate::store::{
    CounterCharge, CounterWindow, IdentityEntry, IdentityTouch, StoreError, StoreResult,
    MAX_LISTED_COUNTERS,
};

const IDENTITY_COLUMNS: &str = "ip, username, groups, interface, session_timeout_secs, \
    idle_timeout_secs, expires_at, session_ends_at";

fn count_from(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn identity_from_row(row: &Row<'_>) -> rusqlite::Result<IdentityEntry> {
    let ip: String = row.get(0)?;
    let groups: String = row.get(2)?;
    Ok(IdentityEntry {
        ip: ip.parse().map_err(|e: std::net::AddrParseError| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?,
        username: row.get(1)?,
        // Groups are kept one per line: a group name may hold spaces, not line breaks.
        groups: groups.lines().map(str::to_owned).collect(),
        interface: row.get(3)?,
        session_timeout_secs: row.get(4)?,
        idle_timeout_secs: row.get(5)?,
        expires_at: row.get(6)?,
        // A row written before the column existed: its expiry was the session's end.
        session_ends_at: row.get::<_, Option<i64>>(7)?.unwrap_or(row.get(6)?),
    })
}

impl SqliteDb {
    pub(super) fn revocation_epoch(&self) -> StoreResult<u64> {
        let epoch: Option<i64> = self
            .reader()
            .query_row(
                "SELECT value FROM meta WHERE name = 'revocation_epoch'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        Ok(epoch.map_or(0, count_from))
    }

    pub(super) fn use_once(&self, key: &str, expires_at: i64, now: i64) -> StoreResult<bool> {
        let changed = lock(&self.writer).execute(
            "INSERT INTO once (key, expires_at) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET expires_at = excluded.expires_at
             WHERE once.expires_at <= ?3",
            params![key, expires_at, now],
        )?;
        Ok(changed == 1)
    }

    pub(super) fn purge_expired_markers(&self, before: i64) -> StoreResult<u64> {
        let deleted =
            lock(&self.writer).execute("DELETE FROM once WHERE expires_at < ?1", [before])?;
        Ok(deleted as u64)
    }

    /// One statement, so the check and the addition are atomic even with several processes
    /// on the file: the upsert only writes when the new count stays within the limit, and
    /// returns nothing when it would not (then the window as it stands is read).
    pub(super) fn charge(
        &self,
        key: &str,
        by: u64,
        limit: u64,
        window_end: i64,
        now: i64,
    ) -> StoreResult<CounterCharge> {
        let too_large = || StoreError::Corrupt(format!("a charge of {key} is too large"));
        let by = i64::try_from(by).map_err(|_| too_large())?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let writer = lock(&self.writer);
        let charged: Option<(i64, i64)> = writer
            .query_row(
                "INSERT INTO counters (key, count, resets_at) SELECT ?1, ?2, ?4 WHERE ?2 <= ?3
                 ON CONFLICT(key) DO UPDATE SET
                    count = CASE WHEN resets_at <= ?5 THEN ?2 ELSE count + ?2 END,
                    resets_at = CASE WHEN resets_at <= ?5 THEN ?4 ELSE resets_at END
                 WHERE (CASE WHEN resets_at <= ?5 THEN 0 ELSE count END) + ?2 <= ?3
                 RETURNING count, resets_at",
                params![key, by, limit, window_end, now],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        if let Some((count, resets_at)) = charged {
            return Ok(CounterCharge {
                allowed: true,
                window: CounterWindow {
                    count: count_from(count),
                    resets_at,
                },
            });
        }
        let standing: Option<(i64, i64)> = writer
            .query_row(
                "SELECT count, resets_at FROM counters WHERE key = ?1 AND resets_at > ?2",
                params![key, now],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let (count, resets_at) = standing.unwrap_or((0, window_end));
        Ok(CounterCharge {
            allowed: false,
            window: CounterWindow {
                count: count_from(count),
                resets_at,
            },
        })
    }

    pub(super) fn counter(&self, key: &str, now: i64) -> StoreResult<Option<CounterWindow>> {
        Ok(self
            .reader()
            .query_row(
                "SELECT count, resets_at FROM counters WHERE key = ?1 AND resets_at > ?2",
                params![key, now],
                |row| {
                    Ok(CounterWindow {
                        count: count_from(row.get(0)?),
                        resets_at: row.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    pub(super) fn counters(
        &self,
        prefix: &str,
        now: i64,
    ) -> StoreResult<Vec<(String, CounterWindow)>> {
        let reader = self.reader();
        let mut statement = reader.prepare(
            "SELECT key, count, resets_at FROM counters
             WHERE substr(key, 1, length(?1)) = ?1 AND resets_at > ?2
             ORDER BY key LIMIT ?3",
        )?;
        let rows =
            statement.query_map(params![prefix, now, MAX_LISTED_COUNTERS as i64], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    CounterWindow {
                        count: count_from(row.get(1)?),
                        resets_at: row.get(2)?,
                    },
                ))
            })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(super) fn reset_counter(&self, key: &str, now: i64) -> StoreResult<bool> {
        let deleted = lock(&self.writer).execute(
            "DELETE FROM counters WHERE key = ?1 AND resets_at > ?2",
            params![key, now],
        )?;
        Ok(deleted > 0)
    }

    pub(super) fn purge_expired_counters(&self, before: i64) -> StoreResult<u64> {
        let deleted =
            lock(&self.writer).execute("DELETE FROM counters WHERE resets_at < ?1", [before])?;
        Ok(deleted as u64)
    }

    pub(super) fn put_identity(&self, entry: &IdentityEntry) -> StoreResult<()> {
        lock(&self.writer).execute(
            &format!(
                "INSERT OR REPLACE INTO identities ({IDENTITY_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ),
            params![
                entry.ip.to_string(),
                entry.username,
                entry.groups.join("\n"),
                entry.interface,
                entry.session_timeout_secs,
                entry.idle_timeout_secs,
                entry.expires_at,
                entry.session_ends_at
            ],
        )?;
        Ok(())
    }

    pub(super) fn identity(&self, ip: IpAddr, now: i64) -> StoreResult<Option<IdentityEntry>> {
        Ok(self
            .reader()
            .query_row(
                &format!(
                    "SELECT {IDENTITY_COLUMNS} FROM identities WHERE ip = ?1 AND expires_at > ?2"
                ),
                params![ip.to_string(), now],
                identity_from_row,
            )
            .optional()?)
    }

    pub(super) fn remove_identity(&self, ip: IpAddr) -> StoreResult<bool> {
        let deleted =
            lock(&self.writer).execute("DELETE FROM identities WHERE ip = ?1", [ip.to_string()])?;
        Ok(deleted == 1)
    }

    pub(super) fn identities(&self, now: i64) -> StoreResult<Vec<IdentityEntry>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {IDENTITY_COLUMNS} FROM identities WHERE expires_at > ?1"
        ))?;
        let rows = stmt.query_map([now], identity_from_row)?;
        let mut live = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        // By address, not by text: 10.0.0.9 before 10.0.0.10.
        live.sort_by_key(|entry| entry.ip);
        Ok(live)
    }

    pub(super) fn touch_identities(&self, touches: &[IdentityTouch]) -> StoreResult<u64> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let mut moved = 0;
        {
            // One statement per touch, each the whole read-modify-write of its row, in one
            // transaction: one disk commit per batch.
            let mut stmt = tx.prepare_cached(
                "UPDATE identities
                 SET expires_at = MAX(expires_at,
                     MIN(?3 + idle_timeout_secs, COALESCE(session_ends_at, expires_at)))
                 WHERE ip = ?1 AND username = ?2 AND expires_at > ?3
                   AND idle_timeout_secs IS NOT NULL
                   AND MAX(expires_at,
                       MIN(?3 + idle_timeout_secs, COALESCE(session_ends_at, expires_at)))
                       != expires_at",
            )?;
            for touch in touches {
                moved +=
                    stmt.execute(params![touch.ip.to_string(), touch.username, touch.seen_at])?;
            }
        }
        tx.commit()?;
        Ok(moved as u64)
    }

    pub(super) fn purge_expired_identities(&self, before: i64) -> StoreResult<u64> {
        let deleted =
            lock(&self.writer).execute("DELETE FROM identities WHERE expires_at < ?1", [before])?;
        Ok(deleted as u64)
    }
}
