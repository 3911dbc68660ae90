//! Versioned documents: small JSON records by kind and key, replaced only by a writer that
//! read the version it replaces (compare-and-swap). The OAuth brokers keep their
//! registrations and provider sessions here; a rotation of a refresh token is one such
//! swap, so of two gateways rotating at once exactly one wins and the other re-reads
//! instead of overwriting the winner's successor.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{DocumentStore, StoreResult, StoredDocument, MAX_LISTED_DOCUMENTS};

/// The memory backend's documents: kind → key → document.
#[derive(Debug, Default)]
pub struct MemoryDocuments {
    kinds: Mutex<HashMap<String, BTreeMap<String, StoredDocument>>>,
}

impl MemoryDocuments {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<String, StoredDocument>>> {
        self.kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl DocumentStore for MemoryDocuments {
    async fn document(&self, kind: &str, key: &str) -> StoreResult<Option<StoredDocument>> {
        Ok(self.lock().get(kind).and_then(|all| all.get(key)).cloned())
    }

    async fn documents(&self, kind: &str) -> StoreResult<Vec<(String, StoredDocument)>> {
        Ok(self
            .lock()
            .get(kind)
            .map(|all| {
                all.iter()
                    .take(MAX_LISTED_DOCUMENTS)
                    .map(|(key, document)| (key.clone(), document.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn put_document(
        &self,
        kind: &str,
        key: &str,
        expected_version: u64,
        body: &str,
    ) -> StoreResult<Option<u64>> {
        let mut kinds = self.lock();
        let all = kinds.entry(kind.to_owned()).or_default();
        let current = all.get(key).map_or(0, |document| document.version);
        if current != expected_version {
            return Ok(None);
        }
        let version = current + 1;
        all.insert(
            key.to_owned(),
            StoredDocument {
                version,
                body: body.to_owned(),
            },
        );
        Ok(Some(version))
    }

    async fn delete_document(&self, kind: &str, key: &str) -> StoreResult<bool> {
        Ok(self
            .lock()
            .get_mut(kind)
            .is_some_and(|all| all.remove(key).is_some()))
    }
}
