//! [`DocumentStore`] on Redis: the documents of one kind in two hashes under one hash tag
//! (`{P:docs:KIND}:body` and `:version`), replaced by a Lua script that checks the version
//! and writes in one step on the server.

use std::sync::LazyLock;

use ::redis::Script;
use async_trait::async_trait;

use super::{arg, RedisStore};
use crate::store::{DocumentStore, StoreResult, StoredDocument, MAX_LISTED_DOCUMENTS};

/// KEYS: bodies, versions. ARGV: key, expected version, body. The new version, or -1 when
/// the current version is not the expected one.
static PUT_DOCUMENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if current ~= tonumber(ARGV[2]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], current + 1)
return current + 1
",
    )
});

/// KEYS: bodies, versions. ARGV: key. `{body, version}`, or nil.
static GET_DOCUMENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local body = redis.call('HGET', KEYS[1], ARGV[1])
if not body then return nil end
return {body, tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '1')}
",
    )
});

/// KEYS: bodies, versions. `{bodies, versions}` as two flat field/value lists, read at once.
static ALL_DOCUMENTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
",
    )
});

/// KEYS: bodies, versions. ARGV: key. 1 when a document went.
static DELETE_DOCUMENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
",
    )
});

impl RedisStore {
    fn document_keys(&self, kind: &str) -> Vec<String> {
        let tag = format!("{{{}:docs:{kind}}}", self.prefix);
        vec![format!("{tag}:body"), format!("{tag}:version")]
    }
}

#[async_trait]
impl DocumentStore for RedisStore {
    async fn document(&self, kind: &str, key: &str) -> StoreResult<Option<StoredDocument>> {
        let found: Option<(String, u64)> = self
            .client
            .run_script(&GET_DOCUMENT, self.document_keys(kind), vec![arg(key)])
            .await?;
        Ok(found.map(|(body, version)| StoredDocument { version, body }))
    }

    async fn documents(&self, kind: &str) -> StoreResult<Vec<(String, StoredDocument)>> {
        let (bodies, versions): (
            std::collections::BTreeMap<String, String>,
            std::collections::HashMap<String, u64>,
        ) = self
            .client
            .run_script(&ALL_DOCUMENTS, self.document_keys(kind), Vec::new())
            .await?;
        Ok(bodies
            .into_iter()
            .take(MAX_LISTED_DOCUMENTS)
            .map(|(key, body)| {
                let version = versions.get(&key).copied().unwrap_or(1);
                (key, StoredDocument { version, body })
            })
            .collect())
    }

    async fn put_document(
        &self,
        kind: &str,
        key: &str,
        expected_version: u64,
        body: &str,
    ) -> StoreResult<Option<u64>> {
        let version: i64 = self
            .client
            .run_script(
                &PUT_DOCUMENT,
                self.document_keys(kind),
                vec![arg(key), arg(expected_version), arg(body)],
            )
            .await?;
        Ok(u64::try_from(version).ok())
    }

    async fn delete_document(&self, kind: &str, key: &str) -> StoreResult<bool> {
        let gone: i64 = self
            .client
            .run_script(&DELETE_DOCUMENT, self.document_keys(kind), vec![arg(key)])
            .await?;
        Ok(gone == 1)
    }
}
