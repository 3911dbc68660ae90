//! What the token machinery keeps in memory across reloads: the verified-token cache, the
//! refusals the store taught it, the revocation epoch that invalidates the cache, and usage
//! waiting to be written.
//!
//! A token verified once is cached under the SHA-256 of its text, so neither the signature
//! check nor the store read is paid on every call. Any revocation bumps the epoch; a cached
//! entry from an older epoch is checked against the store again (in the next request's
//! prefetch) before it is trusted, so a revocation takes effect on the very next request.
//! The store keeps its own revocation epoch; when the upkeep task sees it move (another
//! process sharing the store revoked something) the epoch here moves too.
//! Usage is counted here per token and written to the store in batches by the flusher (and
//! once more at shutdown).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use portcullis_assertions::bearer::ValidToken;

use crate::store::UsageDelta;

const SHARDS: usize = 16;
/// Entries per cache shard; a full shard is emptied (the cheapest fair eviction).
const SHARD_CAPACITY: usize = 8192;
/// How long a refusal read from the store is remembered. A revoked, expired or unknown
/// token never becomes valid, so this only bounds how long the entry takes memory.
const REFUSAL_SECS: i64 = 300;
/// Tokens whose usage may wait unwritten, per shard (so 16 × this in all): bounds the
/// memory a long store outage can take.
const PENDING_TOKENS_PER_SHARD: usize = 8192;
/// Distinct addresses remembered per token between two flushes.
const IPS_PER_BATCH: usize = 32;

/// A validated token and the revocation epoch it was checked in.
#[derive(Debug)]
pub struct CachedToken {
    pub token: Arc<ValidToken>,
    pub epoch: u64,
}

#[derive(Debug, Default)]
struct Pending {
    count: u64,
    first: i64,
    last: i64,
    last_ip: Option<IpAddr>,
    ips: Vec<IpAddr>,
}

/// Why the store refused a token, and until when that is remembered.
#[derive(Debug)]
struct Refusal {
    why: Cow<'static, str>,
    until: i64,
}

#[derive(Debug)]
pub struct LiveTokens {
    epoch: AtomicU64,
    /// The store's revocation epoch when last looked at.
    store_epoch: AtomicU64,
    /// Until when (seconds since the epoch) cached validations may be trusted without a
    /// fresh look at the store's epoch: the watcher moves it forward each time it reads the
    /// epoch. When the store stops answering, cached tokens stop being trusted once it
    /// passes, and requests go to the store (which fails closed) rather than honour a token
    /// another gateway may have revoked meanwhile.
    trusted_until: AtomicI64,
    /// Uses dropped because the buffer of unwritten usage was full (the store was down).
    usage_dropped: AtomicU64,
    /// Tokens of the batch a flush is writing right now (not in the shards meanwhile).
    pub(super) usage_in_flight: AtomicU64,
    /// Batches the store did not confirm, oldest first, each retried as it was.
    unsent: Mutex<VecDeque<UnsentBatch>>,
    /// Names this process's batches (random), and counts them.
    instance: String,
    batch_sequence: AtomicU64,
    cache: Vec<Mutex<HashMap<[u8; 32], Arc<CachedToken>>>>,
    refusals: Vec<Mutex<HashMap<[u8; 32], Refusal>>>,
    usage: Vec<Mutex<HashMap<Arc<str>, Pending>>>,
    /// Held across a usage flush's drain and write (see `oauth/usage.rs`): a durable request
    /// that finds nothing left to write waits until the write holding its use has ended.
    pub(super) flushing: tokio::sync::Mutex<()>,
}

impl Default for LiveTokens {
    fn default() -> Self {
        LiveTokens {
            epoch: AtomicU64::new(1),
            store_epoch: AtomicU64::new(0),
            trusted_until: AtomicI64::new(i64::MAX),
            usage_dropped: AtomicU64::new(0),
            usage_in_flight: AtomicU64::new(0),
            unsent: Mutex::default(),
            instance: instance_id(),
            batch_sequence: AtomicU64::new(0),
            cache: (0..SHARDS).map(|_| Mutex::default()).collect(),
            refusals: (0..SHARDS).map(|_| Mutex::default()).collect(),
            usage: (0..SHARDS).map(|_| Mutex::default()).collect(),
            flushing: tokio::sync::Mutex::new(()),
        }
    }
}

/// A batch of usage the store has not confirmed yet.
#[derive(Debug)]
pub struct UnsentBatch {
    pub id: String,
    pub deltas: Vec<UsageDelta>,
}

/// A random name for this process's usage batches (the clock, should randomness fail: ids
/// then still differ between processes started at different times).
fn instance_id() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        bytes.copy_from_slice(&nanos.to_le_bytes()[..12]);
    }
    hex::encode(bytes)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn shard_of(bytes: &[u8]) -> usize {
    usize::from(bytes.first().copied().unwrap_or(0)) % SHARDS
}

impl LiveTokens {
    /// The current revocation epoch.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// After any revocation: every cached token is checked again before it is trusted.
    pub fn revoked(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// After a revocation made here, which moved the store's epoch to `store_epoch`.
    pub fn revoked_here(&self, store_epoch: u64) {
        self.store_epoch.store(store_epoch, Ordering::Release);
        self.revoked();
    }

    /// The store's revocation epoch as just read: when it moved since the last look, a
    /// revocation happened elsewhere and every cached token is checked again. True then.
    pub fn observe_store_epoch(&self, store_epoch: u64) -> bool {
        let moved = self.store_epoch.swap(store_epoch, Ordering::AcqRel) != store_epoch;
        if moved {
            self.revoked();
        }
        moved
    }

    /// Remembers that the store refused the token with this digest (unknown, revoked,
    /// expired, not an access token), so the request path can answer without the store.
    pub fn remember_refusal(&self, digest: [u8; 32], why: Cow<'static, str>, now: i64) {
        let mut shard = lock(&self.refusals[shard_of(&digest)]);
        if shard.len() >= SHARD_CAPACITY && !shard.contains_key(&digest) {
            shard.clear();
        }
        shard.insert(
            digest,
            Refusal {
                why,
                until: now + REFUSAL_SECS,
            },
        );
    }

    /// Why the store refused the token with this digest, when that is remembered at `now`.
    #[must_use]
    pub fn refusal(&self, digest: &[u8; 32], now: i64) -> Option<Cow<'static, str>> {
        let shard = lock(&self.refusals[shard_of(digest)]);
        shard
            .get(digest)
            .filter(|r| now < r.until)
            .map(|r| r.why.clone())
    }

    /// Cached validations may be trusted until `until` (seconds since the epoch), unless a
    /// later look at the store's epoch moves it on.
    pub fn trust_until(&self, until: i64) {
        self.trusted_until.store(until, Ordering::Release);
    }

    /// The store's epoch could not be read: cached validations are trusted until `until`
    /// at the latest.
    pub fn trust_at_most_until(&self, until: i64) {
        self.trusted_until.fetch_min(until, Ordering::AcqRel);
    }

    /// The cached validation of the token with this digest, if it is still good at `now`,
    /// no revocation happened since, and the store's epoch was looked at recently enough.
    #[must_use]
    pub fn cached(&self, digest: &[u8; 32], now: i64) -> Option<Arc<ValidToken>> {
        if now > self.trusted_until.load(Ordering::Acquire) {
            return None;
        }
        let epoch = self.epoch();
        let shard = lock(&self.cache[shard_of(digest)]);
        let hit = shard.get(digest)?;
        (hit.epoch == epoch && now < hit.token.expires_at).then(|| hit.token.clone())
    }

    /// Caches a validation made in `epoch` (read before the store was consulted, so a
    /// revocation racing with the check leaves a stale epoch behind).
    pub fn remember(&self, digest: [u8; 32], token: Arc<ValidToken>, epoch: u64) {
        let mut shard = lock(&self.cache[shard_of(&digest)]);
        if shard.len() >= SHARD_CAPACITY && !shard.contains_key(&digest) {
            shard.clear();
        }
        shard.insert(digest, Arc::new(CachedToken { token, epoch }));
    }

    /// Drops one token's cached validation.
    pub fn forget(&self, digest: &[u8; 32]) {
        lock(&self.cache[shard_of(digest)]).remove(digest);
    }

    /// The usage shard of a token id (by its last byte: ids are random or digests).
    fn usage_shard(&self, id: &str) -> MutexGuard<'_, HashMap<Arc<str>, Pending>> {
        let last = id.as_bytes().last().copied().unwrap_or(0);
        lock(&self.usage[usize::from(last) % SHARDS])
    }

    /// Counts one use of a token. While the store cannot take usage, the counts wait here:
    /// at most [`PENDING_TOKENS_PER_SHARD`] tokens per shard; a use of another token past
    /// that is dropped and counted ([`LiveTokens::usage_dropped`]).
    pub fn used(&self, id: &Arc<str>, ip: IpAddr, now: i64) {
        let mut shard = self.usage_shard(id);
        if shard.len() >= PENDING_TOKENS_PER_SHARD && !shard.contains_key(id) {
            self.usage_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let p = shard.entry(id.clone()).or_insert_with(|| Pending {
            first: now,
            ..Pending::default()
        });
        p.count += 1;
        p.last = now;
        p.last_ip = Some(ip);
        if p.ips.len() < IPS_PER_BATCH && !p.ips.contains(&ip) {
            p.ips.push(ip);
        }
    }

    /// Takes every pending use, for the store.
    pub fn drain(&self) -> Vec<UsageDelta> {
        let mut out = Vec::new();
        for shard in &self.usage {
            let taken = std::mem::take(&mut *lock(shard));
            out.extend(taken.into_iter().filter_map(|(id, p)| {
                Some(UsageDelta {
                    token_id: id.to_string(),
                    count: p.count,
                    first_used_at: p.first,
                    last_used_at: p.last,
                    last_ip: p.last_ip?,
                    ips: p.ips,
                })
            }));
        }
        out
    }

    /// Uses dropped so far because the buffer was full.
    #[must_use]
    pub fn usage_dropped(&self) -> u64 {
        self.usage_dropped.load(Ordering::Relaxed)
    }

    /// Token entries whose usage waits to be written: counted since the last flush, in
    /// batches the store has not confirmed, and in the batch being written.
    #[must_use]
    pub fn usage_buffered(&self) -> usize {
        let in_flight = usize::try_from(self.usage_in_flight.load(Ordering::Relaxed)).unwrap_or(0);
        let unsent: usize = lock(&self.unsent).iter().map(|b| b.deltas.len()).sum();
        let counted: usize = self.usage.iter().map(|shard| lock(shard).len()).sum();
        in_flight + unsent + counted
    }

    /// Names a batch of drained usage (unique to this process and this batch).
    pub(super) fn new_batch(&self, deltas: Vec<UsageDelta>) -> UnsentBatch {
        let sequence = self.batch_sequence.fetch_add(1, Ordering::Relaxed);
        UnsentBatch {
            id: format!("{}-{sequence}", self.instance),
            deltas,
        }
    }

    /// The oldest batch the store has not confirmed, if any.
    pub(super) fn take_unsent(&self) -> Option<UnsentBatch> {
        lock(&self.unsent).pop_front()
    }

    /// Keeps a batch the store did not confirm, first in line for the next flush. Past the
    /// bound (the store has been down long) it is dropped, and its uses counted as such.
    pub(super) fn keep_unsent(&self, batch: UnsentBatch) {
        let mut unsent = lock(&self.unsent);
        let held: usize = unsent.iter().map(|b| b.deltas.len()).sum();
        if held + batch.deltas.len() > SHARDS * PENDING_TOKENS_PER_SHARD {
            let uses: u64 = batch.deltas.iter().map(|d| d.count).sum();
            self.usage_dropped.fetch_add(uses, Ordering::Relaxed);
            return;
        }
        unsent.push_front(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(exp: i64) -> Arc<ValidToken> {
        Arc::new(ValidToken {
            id: Arc::from("t"),
            client_id: Arc::from("c"),
            subject: Arc::from("s"),
            scope: Arc::from("a"),
            expires_at: exp,
        })
    }

    #[test]
    fn a_revocation_invalidates_the_cache() {
        let live = LiveTokens::default();
        let d = [1u8; 32];
        live.remember(d, token(100), live.epoch());
        assert!(live.cached(&d, 50).is_some());
        assert!(live.cached(&d, 100).is_none(), "expired");
        live.revoked();
        assert!(live.cached(&d, 50).is_none(), "older epoch");
    }

    #[test]
    fn a_move_of_the_store_epoch_invalidates_the_cache_once() {
        let live = LiveTokens::default();
        let d = [2u8; 32];
        live.revoked_here(4);
        live.remember(d, token(100), live.epoch());
        assert!(
            !live.observe_store_epoch(4),
            "our own revocation, already counted"
        );
        assert!(live.cached(&d, 50).is_some());
        assert!(live.observe_store_epoch(5), "another process revoked");
        assert!(live.cached(&d, 50).is_none());
    }

    #[test]
    fn cached_tokens_are_not_trusted_once_the_epoch_has_not_been_read_for_too_long() {
        let live = LiveTokens::default();
        let d = [4u8; 32];
        live.remember(d, token(100), live.epoch());
        live.trust_until(40);
        assert!(live.cached(&d, 40).is_some());
        assert!(live.cached(&d, 41).is_none(), "the store went quiet");
        live.trust_until(60);
        assert!(live.cached(&d, 41).is_some(), "the epoch was read again");
    }

    #[test]
    fn usage_waiting_for_the_store_is_bounded_and_what_is_dropped_is_counted() {
        let live = LiveTokens::default();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let ids: Vec<Arc<str>> = (0..SHARDS * PENDING_TOKENS_PER_SHARD + 50)
            .map(|n| Arc::from(format!("token-{n:08}").as_str()))
            .collect();
        for id in &ids {
            live.used(id, ip, 1);
        }
        assert!(live.usage_buffered() <= SHARDS * PENDING_TOKENS_PER_SHARD);
        let dropped = live.usage_dropped();
        assert_eq!(
            live.usage_buffered() as u64 + dropped,
            ids.len() as u64,
            "every use is either buffered or counted as dropped"
        );
        assert!(dropped >= 50);
        // A token already buffered keeps counting.
        let first = ids
            .iter()
            .find(|id| live.usage_shard(id).contains_key(*id))
            .expect("one");
        live.used(first, ip, 2);
        assert_eq!(live.usage_dropped(), dropped);
    }

    #[test]
    fn refusals_are_remembered_for_a_while() {
        let live = LiveTokens::default();
        let d = [3u8; 32];
        assert_eq!(live.refusal(&d, 10), None);
        live.remember_refusal(d, "the token has been revoked".into(), 10);
        assert_eq!(
            live.refusal(&d, 10 + REFUSAL_SECS - 1).as_deref(),
            Some("the token has been revoked")
        );
        assert_eq!(live.refusal(&d, 10 + REFUSAL_SECS), None);
    }

    #[test]
    fn usage_is_aggregated_then_drained() {
        let live = LiveTokens::default();
        let id: Arc<str> = Arc::from("tok");
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        live.used(&id, a, 10);
        live.used(&id, b, 11);
        live.used(&id, a, 12);
        let batch = live.drain();
        assert_eq!(batch.len(), 1);
        assert_eq!(
            (
                batch[0].count,
                batch[0].first_used_at,
                batch[0].last_used_at
            ),
            (3, 10, 12)
        );
        assert_eq!(batch[0].last_ip, a);
        assert_eq!(batch[0].ips, vec![a, b]);
        assert!(live.drain().is_empty());
        // A batch the store did not confirm is kept whole, with its id, for the next flush.
        let batch = live.new_batch(batch);
        let id = batch.id.clone();
        live.keep_unsent(batch);
        assert_eq!(live.usage_buffered(), 1);
        let again = live.take_unsent().expect("kept");
        assert_eq!((again.id, again.deltas[0].count), (id, 3));
        assert!(live.take_unsent().is_none());
        assert_ne!(live.new_batch(Vec::new()).id, live.new_batch(Vec::new()).id);
    }
}
