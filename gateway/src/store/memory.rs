//! The in-memory store: everything in one mutex-guarded map set, gone on exit. For tests and
//! demos; production uses [`super::sqlite`]. Every call holds the lock only for in-memory
//! work and never across an await, so it is safe to call from the runtime directly.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    ClientRecord, ClientStats, CounterCharge, CounterStore, CounterWindow, IdentityEntry,
    IdentityStore, IdentityTouch, OnceStore, Revocation, RevocationStore, Revoked, StoreError,
    StoreResult, TokenFilter, TokenRecord, TokenStore, UsageDelta, MAX_LISTED_COUNTERS,
};

#[derive(Debug, Default)]
struct Inner {
    clients: HashMap<String, ClientRecord>,
    tokens: HashMap<String, TokenRecord>,
    /// Insertion order, for a stable newest-first listing.
    seq: HashMap<String, u64>,
    next_seq: u64,
    ips: HashMap<String, HashSet<IpAddr>>,
    once: HashMap<String, i64>,
    revocation_epoch: u64,
    counters: HashMap<String, CounterWindow>,
    identities: HashMap<IpAddr, IdentityEntry>,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// Versioned documents (their own lock: nothing else reads them).
    pub(super) documents: super::documents::MemoryDocuments,
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn put_client(&self, client: &ClientRecord) -> StoreResult<()> {
        self.lock()
            .clients
            .insert(client.id.clone(), client.clone());
        Ok(())
    }

    async fn client(&self, id: &str) -> StoreResult<Option<ClientRecord>> {
        Ok(self.lock().clients.get(id).cloned())
    }

    async fn clients(&self) -> StoreResult<Vec<ClientRecord>> {
        let mut all: Vec<ClientRecord> = self.lock().clients.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn insert_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let mut inner = self.lock();
        if inner.tokens.contains_key(&token.id) {
            return Err(StoreError::Corrupt(format!(
                "token id {} already exists",
                token.id
            )));
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.seq.insert(token.id.clone(), seq);
        inner.tokens.insert(token.id.clone(), token.clone());
        Ok(())
    }

    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        Ok(self.lock().tokens.get(id).cloned())
    }

    async fn find_tokens(&self, filter: &TokenFilter) -> StoreResult<Vec<TokenRecord>> {
        let inner = self.lock();
        let mut found: Vec<(&TokenRecord, u64)> = inner
            .tokens
            .values()
            .filter(|t| filter.matches(t))
            .map(|t| (t, inner.seq.get(&t.id).copied().unwrap_or(0)))
            .collect();
        found.sort_by(|a, b| b.0.issued_at.cmp(&a.0.issued_at).then(b.1.cmp(&a.1)));
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        Ok(found
            .into_iter()
            .skip(filter.offset)
            .take(limit)
            .map(|(t, _)| t.clone())
            .collect())
    }

    async fn mark_rotated(&self, id: &str, at: i64) -> StoreResult<bool> {
        let mut inner = self.lock();
        match inner.tokens.get_mut(id) {
            Some(t) if t.rotated_at.is_none() && t.revoked_at.is_none() => {
                t.rotated_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn record_usage(&self, batch_id: &str, batch: &[UsageDelta]) -> StoreResult<()> {
        let mut inner = self.lock();
        let marker = super::usage_batch_marker(batch_id);
        let now = super::now_secs();
        if inner.once.get(&marker).is_some_and(|&until| until > now) {
            return Ok(());
        }
        inner
            .once
            .insert(marker, now + super::USAGE_BATCH_MEMORY_SECS);
        for d in batch {
            let distinct = {
                let set = inner.ips.entry(d.token_id.clone()).or_default();
                set.extend(d.ips.iter().copied());
                set.len() as u64
            };
            if let Some(t) = inner.tokens.get_mut(&d.token_id) {
                let u = &mut t.usage;
                u.count += d.count;
                u.first_used_at = Some(
                    u.first_used_at
                        .map_or(d.first_used_at, |f| f.min(d.first_used_at)),
                );
                if u.last_used_at.is_none_or(|l| l <= d.last_used_at) {
                    u.last_used_at = Some(d.last_used_at);
                    u.last_ip = Some(d.last_ip.to_string());
                }
                u.distinct_ips = distinct;
            }
        }
        Ok(())
    }

    async fn flag(&self, id: &str, reason: &str) -> StoreResult<()> {
        if let Some(t) = self.lock().tokens.get_mut(id) {
            if t.flagged.is_none() {
                t.flagged = Some(reason.to_owned());
            }
        }
        Ok(())
    }

    async fn client_stats(&self, now: i64) -> StoreResult<Vec<ClientStats>> {
        Ok(ClientStats::tally(self.lock().tokens.values(), now))
    }

    async fn purge_expired_tokens(&self, before: i64) -> StoreResult<u64> {
        let mut inner = self.lock();
        let gone: Vec<String> = inner
            .tokens
            .values()
            .filter(|t| t.expires_at < before)
            .map(|t| t.id.clone())
            .collect();
        for id in &gone {
            inner.tokens.remove(id);
            inner.seq.remove(id);
            inner.ips.remove(id);
        }
        Ok(gone.len() as u64)
    }
}

#[async_trait]
impl RevocationStore for MemoryStore {
    async fn revoke(&self, filter: &TokenFilter, how: &Revocation) -> StoreResult<Revoked> {
        let mut inner = self.lock();
        let mut ids = Vec::new();
        for t in inner.tokens.values_mut() {
            if t.revoked_at.is_none() && filter.matches(t) {
                t.revoked_at = Some(how.at);
                t.revoked_by = Some(how.by.clone());
                t.revoke_reason.clone_from(&how.reason);
                ids.push(t.id.clone());
            }
        }
        ids.sort();
        inner.revocation_epoch += 1;
        Ok(Revoked {
            ids,
            epoch: inner.revocation_epoch,
        })
    }

    async fn revocation_epoch(&self) -> StoreResult<u64> {
        Ok(self.lock().revocation_epoch)
    }
}

#[async_trait]
impl OnceStore for MemoryStore {
    async fn use_once(&self, key: &str, expires_at: i64, now: i64) -> StoreResult<bool> {
        let mut inner = self.lock();
        if inner.once.get(key).is_some_and(|&exp| exp > now) {
            return Ok(false);
        }
        inner.once.insert(key.to_owned(), expires_at);
        Ok(true)
    }

    async fn purge_expired_markers(&self, before: i64) -> StoreResult<u64> {
        let mut inner = self.lock();
        let held = inner.once.len();
        inner.once.retain(|_, expires_at| *expires_at >= before);
        Ok((held - inner.once.len()) as u64)
    }
}

#[async_trait]
impl CounterStore for MemoryStore {
    async fn charge(
        &self,
        key: &str,
        by: u64,
        limit: u64,
        window_end: i64,
        now: i64,
    ) -> StoreResult<CounterCharge> {
        let mut inner = self.lock();
        let running = inner
            .counters
            .get(key)
            .copied()
            .filter(|counter| counter.resets_at > now)
            .unwrap_or(CounterWindow {
                count: 0,
                resets_at: window_end,
            });
        let Some(count) = running
            .count
            .checked_add(by)
            .filter(|count| *count <= limit)
        else {
            return Ok(CounterCharge {
                allowed: false,
                window: running,
            });
        };
        let window = CounterWindow {
            count,
            resets_at: running.resets_at,
        };
        inner.counters.insert(key.to_owned(), window);
        Ok(CounterCharge {
            allowed: true,
            window,
        })
    }

    async fn counter(&self, key: &str, now: i64) -> StoreResult<Option<CounterWindow>> {
        Ok(self
            .lock()
            .counters
            .get(key)
            .copied()
            .filter(|counter| counter.resets_at > now))
    }

    async fn counters(&self, prefix: &str, now: i64) -> StoreResult<Vec<(String, CounterWindow)>> {
        let mut running: Vec<(String, CounterWindow)> = self
            .lock()
            .counters
            .iter()
            .filter(|(key, counter)| key.starts_with(prefix) && counter.resets_at > now)
            .map(|(key, counter)| (key.clone(), *counter))
            .collect();
        running.sort_by(|a, b| a.0.cmp(&b.0));
        running.truncate(MAX_LISTED_COUNTERS);
        Ok(running)
    }

    async fn reset_counter(&self, key: &str, now: i64) -> StoreResult<bool> {
        Ok(self
            .lock()
            .counters
            .remove(key)
            .is_some_and(|counter| counter.resets_at > now))
    }

    async fn purge_expired_counters(&self, before: i64) -> StoreResult<u64> {
        let mut inner = self.lock();
        let held = inner.counters.len();
        inner
            .counters
            .retain(|_, counter| counter.resets_at >= before);
        Ok((held - inner.counters.len()) as u64)
    }
}

#[async_trait]
impl IdentityStore for MemoryStore {
    async fn put_identity(&self, entry: &IdentityEntry) -> StoreResult<()> {
        self.lock().identities.insert(entry.ip, entry.clone());
        Ok(())
    }

    async fn identity(&self, ip: IpAddr, now: i64) -> StoreResult<Option<IdentityEntry>> {
        Ok(self
            .lock()
            .identities
            .get(&ip)
            .filter(|entry| entry.expires_at > now)
            .cloned())
    }

    async fn remove_identity(&self, ip: IpAddr) -> StoreResult<bool> {
        Ok(self.lock().identities.remove(&ip).is_some())
    }

    async fn identities(&self, now: i64) -> StoreResult<Vec<IdentityEntry>> {
        let mut live: Vec<IdentityEntry> = self
            .lock()
            .identities
            .values()
            .filter(|entry| entry.expires_at > now)
            .cloned()
            .collect();
        live.sort_by_key(|entry| entry.ip);
        Ok(live)
    }

    async fn touch_identities(&self, touches: &[IdentityTouch]) -> StoreResult<u64> {
        let mut inner = self.lock();
        let mut moved = 0;
        for touch in touches {
            let Some(entry) = inner.identities.get_mut(&touch.ip) else {
                continue;
            };
            if entry.username != touch.username || entry.expires_at <= touch.seen_at {
                continue;
            }
            let expires_at = entry.touched_expiry(touch.seen_at);
            if expires_at != entry.expires_at {
                entry.expires_at = expires_at;
                moved += 1;
            }
        }
        Ok(moved)
    }

    async fn purge_expired_identities(&self, before: i64) -> StoreResult<u64> {
        let mut inner = self.lock();
        let held = inner.identities.len();
        inner
            .identities
            .retain(|_, entry| entry.expires_at >= before);
        Ok((held - inner.identities.len()) as u64)
    }
}

#[async_trait]
impl super::DocumentStore for MemoryStore {
    async fn document(&self, kind: &str, key: &str) -> StoreResult<Option<super::StoredDocument>> {
        self.documents.document(kind, key).await
    }

    async fn documents(&self, kind: &str) -> StoreResult<Vec<(String, super::StoredDocument)>> {
        self.documents.documents(kind).await
    }

    async fn put_document(
        &self,
        kind: &str,
        key: &str,
        expected_version: u64,
        body: &str,
    ) -> StoreResult<Option<u64>> {
        self.documents
            .put_document(kind, key, expected_version, body)
            .await
    }

    async fn delete_document(&self, kind: &str, key: &str) -> StoreResult<bool> {
        self.documents.delete_document(kind, key).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::MemoryStore;
    use crate::store::conformance;
    use crate::store::StateStore;

    fn fresh() -> Arc<MemoryStore> {
        Arc::new(MemoryStore::default())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn passes_the_token_suite() {
        conformance::tokens::run_all(&StateStore::memory).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn passes_the_revocation_suite() {
        conformance::revocations::run_all(&StateStore::memory).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn passes_the_once_suite() {
        conformance::once::run_all(&|| fresh()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn passes_the_counter_suite() {
        conformance::counters::run_all(&|| fresh()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn passes_the_identity_suite() {
        conformance::identities::run_all(&|| fresh()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn passes_the_document_suite() {
        conformance::documents::run_all(&|| fresh()).await;
    }
}
