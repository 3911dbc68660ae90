//! The synchronous core of the SQLite store: connections, schema, and the token and client
//! statements. Only ever called on a blocking thread (see `super`).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use crate::store::{
    ClientRecord, ClientStats, Revocation, Revoked, StoreError, StoreResult, TokenFilter,
    TokenFormat, TokenKind, TokenRecord, Usage, UsageDelta,
};

const READERS: usize = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS clients (
    id TEXT PRIMARY KEY,
    secret_sha256 BLOB,
    grants TEXT NOT NULL,
    scopes TEXT NOT NULL,
    token_format TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    format TEXT NOT NULL,
    client_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    scope TEXT NOT NULL,
    grant_type TEXT NOT NULL,
    refresh_id TEXT,
    family_id TEXT,
    source TEXT,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    revoked_by TEXT,
    revoke_reason TEXT,
    rotated_at INTEGER,
    use_count INTEGER NOT NULL DEFAULT 0,
    first_used_at INTEGER,
    last_used_at INTEGER,
    last_ip TEXT,
    distinct_ips INTEGER NOT NULL DEFAULT 0,
    flagged TEXT
);
CREATE INDEX IF NOT EXISTS tokens_client ON tokens(client_id, subject);
CREATE INDEX IF NOT EXISTS tokens_subject ON tokens(subject);
CREATE INDEX IF NOT EXISTS tokens_family ON tokens(family_id);
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens(expires_at);
CREATE TABLE IF NOT EXISTS token_ips (
    token_id TEXT NOT NULL,
    ip TEXT NOT NULL,
    PRIMARY KEY (token_id, ip)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS once (
    key TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    resets_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS identities (
    ip TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    groups TEXT NOT NULL,
    interface TEXT,
    session_timeout_secs INTEGER,
    idle_timeout_secs INTEGER,
    expires_at INTEGER NOT NULL,
    session_ends_at INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
";

/// The tables and columns [`SCHEMA`] makes, for the read-only check of a file.
pub(super) const EXPECTED_TABLES: &[(&str, &[&str])] = &[
    (
        "clients",
        &["id", "secret_sha256", "grants", "scopes", "token_format"],
    ),
    (
        "tokens",
        &[
            "id",
            "kind",
            "format",
            "client_id",
            "subject",
            "scope",
            "grant_type",
            "refresh_id",
            "family_id",
            "source",
            "issued_at",
            "expires_at",
            "revoked_at",
            "revoked_by",
            "revoke_reason",
            "rotated_at",
            "use_count",
            "first_used_at",
            "last_used_at",
            "last_ip",
            "distinct_ips",
            "flagged",
        ],
    ),
    ("token_ips", &["token_id", "ip"]),
    ("once", &["key", "expires_at"]),
    ("meta", &["name", "value"]),
    ("counters", &["key", "count", "resets_at"]),
    (
        "identities",
        &[
            "ip",
            "username",
            "groups",
            "interface",
            "session_timeout_secs",
            "idle_timeout_secs",
            "expires_at",
            "session_ends_at",
        ],
    ),
    ("documents", &["kind", "key", "version", "body"]),
];

const TOKEN_COLUMNS: &str = "id, kind, format, client_id, subject, scope, grant_type, refresh_id, \
    family_id, source, issued_at, expires_at, revoked_at, revoked_by, revoke_reason, rotated_at, \
    use_count, first_used_at, last_used_at, last_ip, distinct_ips, flagged";

#[derive(Debug)]
pub(super) struct SqliteDb {
    pub(super) writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

fn connect(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

pub(super) fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let kind: String = row.get(1)?;
    let format: String = row.get(2)?;
    let bad = |what: &str, v: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown token {what} {v}").into(),
        )
    };
    Ok(TokenRecord {
        id: row.get(0)?,
        kind: TokenKind::parse(&kind).ok_or_else(|| bad("kind", &kind))?,
        format: TokenFormat::parse(&format).ok_or_else(|| bad("format", &format))?,
        client_id: row.get(3)?,
        subject: row.get(4)?,
        scope: row.get(5)?,
        grant_type: row.get(6)?,
        refresh_id: row.get(7)?,
        family_id: row.get(8)?,
        source: row.get(9)?,
        issued_at: row.get(10)?,
        expires_at: row.get(11)?,
        revoked_at: row.get(12)?,
        revoked_by: row.get(13)?,
        revoke_reason: row.get(14)?,
        rotated_at: row.get(15)?,
        usage: Usage {
            count: u64::try_from(row.get::<_, i64>(16)?).unwrap_or(0),
            first_used_at: row.get(17)?,
            last_used_at: row.get(18)?,
            last_ip: row.get(19)?,
            distinct_ips: u64::try_from(row.get::<_, i64>(20)?).unwrap_or(0),
        },
        flagged: row.get(21)?,
    })
}

/// The WHERE clause (without the keyword) and its parameters for a filter.
fn where_clause(f: &TokenFilter) -> (String, Vec<Value>) {
    let mut parts: Vec<String> = vec!["1=1".to_owned()];
    let mut values: Vec<Value> = Vec::new();
    let mut eq = |col: &str, v: &Option<String>| {
        if let Some(v) = v {
            values.push(Value::Text(v.clone()));
            parts.push(format!("{col} = ?{}", values.len()));
        }
    };
    eq("id", &f.id);
    eq("client_id", &f.client_id);
    eq("subject", &f.subject);
    eq("grant_type", &f.grant_type);
    eq("family_id", &f.family_id);
    eq("kind", &f.kind.map(|k| k.as_str().to_owned()));
    if let Some(status) = &f.status {
        let mut now = || {
            values.push(Value::Integer(f.now));
            values.len()
        };
        parts.push(match status.as_str() {
            "active" => format!(
                "revoked_at IS NULL AND rotated_at IS NULL AND expires_at > ?{}",
                now()
            ),
            "revoked" => "revoked_at IS NOT NULL".to_owned(),
            "rotated" => "revoked_at IS NULL AND rotated_at IS NOT NULL".to_owned(),
            "expired" => format!(
                "revoked_at IS NULL AND rotated_at IS NULL AND expires_at <= ?{}",
                now()
            ),
            _ => "0 = 1".to_owned(),
        });
    }
    if let Some(flagged) = f.flagged {
        parts.push(if flagged {
            "flagged IS NOT NULL".to_owned()
        } else {
            "flagged IS NULL".to_owned()
        });
    }
    (parts.join(" AND "), values)
}

impl SqliteDb {
    /// Opens (creating when missing) the database at `path` and its schema.
    ///
    /// # Errors
    /// The file cannot be opened or written.
    pub(super) fn open(path: &Path) -> StoreResult<SqliteDb> {
        let writer = connect(path)?;
        writer
            .execute_batch(SCHEMA)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        add_session_end_column(&writer)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        let readers = (0..READERS)
            .map(|_| connect(path).map(Mutex::new))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(SqliteDb {
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// A reader connection: the first free one, else wait for the next in turn.
    pub(super) fn reader(&self) -> MutexGuard<'_, Connection> {
        for r in &self.readers {
            if let Ok(g) = r.try_lock() {
                return g;
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        lock(&self.readers[i])
    }
}

/// A file made before identities had a session end (their idle deadline moves with
/// traffic, their session end does not) gets the column; its rows read it as their expiry.
fn add_session_end_column(conn: &Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('identities') WHERE name = 'session_ends_at'",
        [],
        |row| row.get(0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE identities ADD COLUMN session_ends_at INTEGER")?;
    }
    Ok(())
}

/// The token and client statements, one per [`crate::store::TokenStore`] method (and
/// [`crate::store::RevocationStore::revoke`]).
impl SqliteDb {
    pub(super) fn put_client(&self, c: &ClientRecord) -> StoreResult<()> {
        lock(&self.writer).execute(
            "INSERT INTO clients (id, secret_sha256, grants, scopes, token_format)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET secret_sha256 = excluded.secret_sha256,
                grants = excluded.grants, scopes = excluded.scopes,
                token_format = excluded.token_format",
            params![
                c.id,
                c.secret_sha256.map(|d| d.to_vec()),
                c.grants.join(" "),
                c.scopes.join(" "),
                c.token_format.as_str()
            ],
        )?;
        Ok(())
    }

    pub(super) fn client(&self, id: &str) -> StoreResult<Option<ClientRecord>> {
        Ok(self
            .reader()
            .query_row(
                "SELECT id, secret_sha256, grants, scopes, token_format FROM clients WHERE id = ?1",
                [id],
                client_from_row,
            )
            .optional()?)
    }

    pub(super) fn clients(&self) -> StoreResult<Vec<ClientRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT id, secret_sha256, grants, scopes, token_format FROM clients ORDER BY id",
        )?;
        let rows = stmt.query_map([], client_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub(super) fn insert_token(&self, t: &TokenRecord) -> StoreResult<()> {
        lock(&self.writer).execute(
            "INSERT INTO tokens (id, kind, format, client_id, subject, scope, grant_type,
                refresh_id, family_id, source, issued_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                t.id,
                t.kind.as_str(),
                t.format.as_str(),
                t.client_id,
                t.subject,
                t.scope,
                t.grant_type,
                t.refresh_id,
                t.family_id,
                t.source,
                t.issued_at,
                t.expires_at
            ],
        )?;
        Ok(())
    }

    pub(super) fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"))?;
        Ok(stmt.query_row([id], token_from_row).optional()?)
    }

    pub(super) fn find_tokens(&self, f: &TokenFilter) -> StoreResult<Vec<TokenRecord>> {
        let (clause, mut values) = where_clause(f);
        values.push(Value::Integer(if f.limit == 0 {
            -1
        } else {
            i64::try_from(f.limit).unwrap_or(i64::MAX)
        }));
        let limit_n = values.len();
        values.push(Value::Integer(i64::try_from(f.offset).unwrap_or(0)));
        let offset_n = values.len();
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE {clause}
             ORDER BY issued_at DESC, rowid DESC LIMIT ?{limit_n} OFFSET ?{offset_n}"
        );
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(values), token_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Revokes and advances the revocation epoch in one transaction, so a reader that sees
    /// the new epoch also sees the revoked rows.
    pub(super) fn revoke(&self, f: &TokenFilter, how: &Revocation) -> StoreResult<Revoked> {
        let (clause, mut values) = where_clause(f);
        values.push(Value::Integer(how.at));
        let at_n = values.len();
        values.push(Value::Text(how.by.clone()));
        let by_n = values.len();
        values.push(how.reason.clone().map_or(Value::Null, Value::Text));
        let reason_n = values.len();
        let sql = format!(
            "UPDATE tokens SET revoked_at = ?{at_n}, revoked_by = ?{by_n}, revoke_reason = ?{reason_n}
             WHERE revoked_at IS NULL AND {clause} RETURNING id"
        );
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let mut ids = {
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(values), |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let epoch: i64 = tx.query_row(
            "INSERT INTO meta (name, value) VALUES ('revocation_epoch', 1)
             ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
            [],
            |r| r.get(0),
        )?;
        tx.commit()?;
        ids.sort();
        Ok(Revoked {
            ids,
            epoch: u64::try_from(epoch).unwrap_or(0),
        })
    }

    pub(super) fn mark_rotated(&self, id: &str, at: i64) -> StoreResult<bool> {
        let n = lock(&self.writer).execute(
            "UPDATE tokens SET rotated_at = ?2
             WHERE id = ?1 AND rotated_at IS NULL AND revoked_at IS NULL",
            params![id, at],
        )?;
        Ok(n == 1)
    }

    pub(super) fn record_usage(&self, batch_id: &str, batch: &[UsageDelta]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        // The batch's marker and its counts commit together: a batch seen before is skipped.
        let now = crate::store::now_secs();
        let first_time = tx.execute(
            "INSERT INTO once (key, expires_at) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at
             WHERE once.expires_at <= ?3",
            params![
                crate::store::usage_batch_marker(batch_id),
                now + crate::store::USAGE_BATCH_MEMORY_SECS,
                now
            ],
        )? == 1;
        if !first_time {
            return Ok(());
        }
        {
            let mut ip_stmt = tx
                .prepare_cached("INSERT OR IGNORE INTO token_ips (token_id, ip) VALUES (?1, ?2)")?;
            let mut use_stmt = tx.prepare_cached(
                "UPDATE tokens SET
                    use_count = use_count + ?2,
                    first_used_at = CASE WHEN first_used_at IS NULL OR first_used_at > ?3
                                         THEN ?3 ELSE first_used_at END,
                    last_ip = CASE WHEN last_used_at IS NULL OR last_used_at <= ?4
                                   THEN ?5 ELSE last_ip END,
                    last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at <= ?4
                                        THEN ?4 ELSE last_used_at END,
                    distinct_ips = (SELECT COUNT(*) FROM token_ips WHERE token_id = ?1)
                 WHERE id = ?1",
            )?;
            for d in batch {
                for ip in &d.ips {
                    ip_stmt.execute(params![d.token_id, ip.to_string()])?;
                }
                use_stmt.execute(params![
                    d.token_id,
                    i64::try_from(d.count).unwrap_or(i64::MAX),
                    d.first_used_at,
                    d.last_used_at,
                    d.last_ip.to_string()
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(super) fn flag(&self, id: &str, reason: &str) -> StoreResult<()> {
        lock(&self.writer).execute(
            "UPDATE tokens SET flagged = ?2 WHERE id = ?1 AND flagged IS NULL",
            params![id, reason],
        )?;
        Ok(())
    }

    pub(super) fn client_stats(&self, now: i64) -> StoreResult<Vec<ClientStats>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT client_id, COUNT(*),
                SUM(CASE WHEN revoked_at IS NULL AND rotated_at IS NULL AND expires_at > ?1 THEN 1 ELSE 0 END),
                SUM(CASE WHEN revoked_at IS NOT NULL THEN 1 ELSE 0 END),
                SUM(use_count), MAX(last_used_at),
                SUM(CASE WHEN flagged IS NOT NULL THEN 1 ELSE 0 END)
             FROM tokens GROUP BY client_id ORDER BY client_id",
        )?;
        let rows = stmt.query_map([now], |r| {
            let n = |i: usize| -> rusqlite::Result<u64> {
                Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
            };
            Ok(ClientStats {
                client_id: r.get(0)?,
                tokens: n(1)?,
                active: n(2)?,
                revoked: n(3)?,
                uses: n(4)?,
                last_used_at: r.get(5)?,
                flagged: n(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub(super) fn purge_expired_tokens(&self, before: i64) -> StoreResult<u64> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM token_ips WHERE token_id IN (SELECT id FROM tokens WHERE expires_at < ?1)",
            [before],
        )?;
        let tokens = tx.execute("DELETE FROM tokens WHERE expires_at < ?1", [before])?;
        tx.commit()?;
        Ok(tokens as u64)
    }
}

fn client_from_row(r: &Row<'_>) -> rusqlite::Result<ClientRecord> {
    let digest: Option<Vec<u8>> = r.get(1)?;
    let split = |s: String| -> Vec<String> { s.split_whitespace().map(str::to_owned).collect() };
    let format: String = r.get(4)?;
    Ok(ClientRecord {
        id: r.get(0)?,
        secret_sha256: digest.and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok()),
        grants: split(r.get(2)?),
        scopes: split(r.get(3)?),
        token_format: TokenFormat::parse(&format).unwrap_or(TokenFormat::Jwt),
    })
}
