//! What the token machinery keeps in memory across reloads: the verified-token cache, the
//! revocation epoch that invalidates it, and usage waiting to be written.
//!
//! A token verified once is cached under the SHA-256 of its text, so neither the signature
//! check nor the store read is paid on every call. Any revocation bumps the epoch; a cached
//! entry from an older epoch is checked against the store again before it is trusted, so a
//! revocation takes effect on the very next request. Usage is counted here per token and
//! written to the store in batches by the flusher (and once more at shutdown).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use portcullis_assertions::bearer::ValidToken;

use crate::store::UsageDelta;

const SHARDS: usize = 16;
/// Entries per cache shard; a full shard is emptied (the cheapest fair eviction).
const SHARD_CAPACITY: usize = 8192;
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

#[derive(Debug)]
pub struct LiveTokens {
    epoch: AtomicU64,
    cache: Vec<Mutex<HashMap<[u8; 32], Arc<CachedToken>>>>,
    usage: Vec<Mutex<HashMap<Arc<str>, Pending>>>,
}

impl Default for LiveTokens {
    fn default() -> Self {
        LiveTokens {
            epoch: AtomicU64::new(1),
            cache: (0..SHARDS).map(|_| Mutex::default()).collect(),
            usage: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
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

    /// The cached validation of the token with this digest, if it is still good at `now`
    /// and no revocation happened since.
    #[must_use]
    pub fn cached(&self, digest: &[u8; 32], now: i64) -> Option<Arc<ValidToken>> {
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

    /// Counts one use of a token.
    pub fn used(&self, id: &Arc<str>, ip: IpAddr, now: i64) {
        let mut shard = self.usage_shard(id);
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

    /// Puts a batch back after the store refused it, so a later flush writes it.
    pub fn restore(&self, batch: Vec<UsageDelta>) {
        for d in batch {
            let id: Arc<str> = Arc::from(d.token_id.as_str());
            let mut shard = self.usage_shard(&id);
            let p = shard.entry(id).or_insert_with(|| Pending {
                first: d.first_used_at,
                ..Pending::default()
            });
            p.count += d.count;
            p.first = p.first.min(d.first_used_at);
            if d.last_used_at >= p.last {
                p.last = d.last_used_at;
                p.last_ip = Some(d.last_ip);
            }
            for ip in d.ips {
                if p.ips.len() < IPS_PER_BATCH && !p.ips.contains(&ip) {
                    p.ips.push(ip);
                }
            }
        }
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
        live.restore(batch);
        assert_eq!(live.drain()[0].count, 3);
    }
}
