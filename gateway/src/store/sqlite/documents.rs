//! [`DocumentStore`] on SQLite: one row per document; a replacement is one `UPDATE ...
//! WHERE version = ?` (or an `INSERT` that fails on an existing key), so the check and the
//! write are one statement on the single writer connection.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::db::lock;
use super::SqliteStore;
use crate::store::{DocumentStore, StoreResult, StoredDocument, MAX_LISTED_DOCUMENTS};

#[async_trait]
impl DocumentStore for SqliteStore {
    async fn document(&self, kind: &str, key: &str) -> StoreResult<Option<StoredDocument>> {
        let (kind, key) = (kind.to_owned(), key.to_owned());
        self.off_runtime(move |db| {
            Ok(db
                .reader()
                .query_row(
                    "SELECT version, body FROM documents WHERE kind = ?1 AND key = ?2",
                    params![kind, key],
                    |row| {
                        Ok(StoredDocument {
                            version: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                            body: row.get(1)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn documents(&self, kind: &str) -> StoreResult<Vec<(String, StoredDocument)>> {
        let kind = kind.to_owned();
        self.off_runtime(move |db| {
            let conn = db.reader();
            let mut statement = conn.prepare(
                "SELECT key, version, body FROM documents WHERE kind = ?1 ORDER BY key LIMIT ?2",
            )?;
            let rows = statement.query_map(
                params![
                    kind,
                    i64::try_from(MAX_LISTED_DOCUMENTS).unwrap_or(i64::MAX)
                ],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        StoredDocument {
                            version: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                            body: row.get(2)?,
                        },
                    ))
                },
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn put_document(
        &self,
        kind: &str,
        key: &str,
        expected_version: u64,
        body: &str,
    ) -> StoreResult<Option<u64>> {
        let (kind, key, body) = (kind.to_owned(), key.to_owned(), body.to_owned());
        let expected = i64::try_from(expected_version).unwrap_or(i64::MAX);
        self.off_runtime(move |db| {
            let conn = lock(&db.writer);
            let changed = if expected == 0 {
                conn.execute(
                    "INSERT INTO documents (kind, key, version, body) VALUES (?1, ?2, 1, ?3)
                     ON CONFLICT(kind, key) DO NOTHING",
                    params![kind, key, body],
                )?
            } else {
                conn.execute(
                    "UPDATE documents SET version = version + 1, body = ?4
                     WHERE kind = ?1 AND key = ?2 AND version = ?3",
                    params![kind, key, expected, body],
                )?
            };
            Ok((changed == 1).then_some(expected_version + 1))
        })
        .await
    }

    async fn delete_document(&self, kind: &str, key: &str) -> StoreResult<bool> {
        let (kind, key) = (kind.to_owned(), key.to_owned());
        self.off_runtime(move |db| {
            let gone = lock(&db.writer).execute(
                "DELETE FROM documents WHERE kind = ?1 AND key = ?2",
                params![kind, key],
            )?;
            Ok(gone == 1)
        })
        .await
    }
}
