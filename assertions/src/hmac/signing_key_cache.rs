//! The SigV4 signing-key cache: a signing key costs four chained HMACs and changes only
//! with the secret and the scope's date, so each is derived once per secret and day.
//!
//! Sharded so concurrent requests for different keys take different locks, and each
//! shard is an `RwLock` so concurrent requests for the same (hot) key share a read lock.
//! The key is derived outside any lock. Bounded: a full shard evicts its oldest scope
//! date first, and never evicts a newer date to make room for an older one.

use std::collections::HashMap;
use std::fmt;
use std::sync::{OnceLock, PoisonError, RwLock};

use super::sigv4::{self, Scope};

/// Number of shards; a power of two so the shard index is the hash's top bits.
const SHARDS: usize = 16;
/// Entries one shard holds: 4096 signing keys in all, e.g. 1000 access keys with two
/// secrets each (during rotation) over two scope dates (around midnight UTC).
const ENTRIES_PER_SHARD: usize = 256;

/// SigV4 signing keys already derived by one `require_hmac` step, keyed by the secret's
/// address and length and the scope date.
///
/// The address stands for the secret because secrets live in the step's key set, behind
/// an `Arc` that lives as long as the step (and this cache): two different secrets cannot
/// share an address while the cache exists. A step accepts one region and service, so
/// they are not part of the key: the cache serves the first region and service it is
/// asked for, and derives keys for any other afresh, uncached.
#[derive(Default)]
pub struct SigningKeyCache {
    region_and_service: OnceLock<(Box<str>, Box<str>)>,
    shards: [RwLock<HashMap<SecretAndDay, [u8; 32]>>; SHARDS],
}

/// A secret's address and length, and a scope date (`YYYYMMDD`, which orders by time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SecretAndDay {
    secret_address: usize,
    secret_len: usize,
    date: [u8; 8],
}

impl SecretAndDay {
    /// The shard this entry lives in: a multiplicative hash of the address and date.
    fn shard(&self) -> usize {
        let mixed = (self.secret_address as u64)
            ^ (self.secret_len as u64).rotate_left(32)
            ^ u64::from_le_bytes(self.date);
        // Fibonacci hashing: the top bits of the product depend on every input bit.
        let hashed = mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (hashed >> (64 - SHARDS.trailing_zeros())) as usize
    }
}

impl fmt::Debug for SigningKeyCache {
    /// Never the keys: they stand in for the secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyCache")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl SigningKeyCache {
    /// The signing key of `secret` for `scope`, derived once per day and secret.
    pub fn get(&self, secret: &[u8], scope: &Scope) -> [u8; 32] {
        let Ok(date) = <[u8; 8]>::try_from(scope.date.as_bytes()) else {
            return sigv4::signing_key(secret, scope);
        };
        let (region, service) = self
            .region_and_service
            .get_or_init(|| (scope.region.as_str().into(), scope.service.as_str().into()));
        if **region != *scope.region || **service != *scope.service {
            return sigv4::signing_key(secret, scope);
        }
        let id = SecretAndDay {
            secret_address: secret.as_ptr() as usize,
            secret_len: secret.len(),
            date,
        };
        let shard = &self.shards[id.shard()];
        if let Some(key) = shard
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return *key;
        }
        // Derived without holding the lock; two requests racing here derive the same key.
        let key = sigv4::signing_key(secret, scope);
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= ENTRIES_PER_SHARD && !map.contains_key(&id) {
            let Some(oldest) = map.keys().min_by_key(|entry| entry.date).copied() else {
                return key;
            };
            if oldest.date > id.date {
                // Older than everything kept: not worth a newer day's place.
                return key;
            }
            map.remove(&oldest);
        }
        map.insert(id, key);
        key
    }

    /// How many signing keys are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn scope(date: String) -> Scope {
        Scope {
            date,
            region: "eu-west-1".into(),
            service: "execute-api".into(),
        }
    }

    /// Day `n` after 2026-01-01 as `YYYYMMDD` (months of 28 days are enough here).
    fn date(n: usize) -> String {
        format!("2026{:02}{:02}", 1 + n / 28 % 12, 1 + n % 28)
    }

    fn secrets(count: usize) -> Vec<Arc<[u8]>> {
        (0..count)
            .map(|i| Arc::from(format!("secret-number-{i}").into_bytes()))
            .collect()
    }

    #[test]
    fn threads_hammering_it_get_the_keys_a_fresh_derivation_gives() {
        let cache = SigningKeyCache::default();
        let secrets = secrets(24);
        let scopes: Vec<Scope> = (0..6).map(|n| scope(date(n))).collect();
        let expected: Vec<Vec<[u8; 32]>> = secrets
            .iter()
            .map(|s| scopes.iter().map(|sc| sigv4::signing_key(s, sc)).collect())
            .collect();
        std::thread::scope(|threads| {
            for thread in 0..4 {
                let (cache, secrets, scopes, expected) = (&cache, &secrets, &scopes, &expected);
                threads.spawn(move || {
                    for round in 0..4000 {
                        let s = (round * 7 + thread * 5) % secrets.len();
                        let d = (round / 3 + thread) % scopes.len();
                        assert_eq!(cache.get(&secrets[s], &scopes[d]), expected[s][d]);
                    }
                });
            }
        });
        assert_eq!(cache.len(), secrets.len() * scopes.len());
    }

    #[test]
    fn past_its_bound_it_evicts_the_oldest_dates_and_still_answers_right() {
        let cache = SigningKeyCache::default();
        let secrets = secrets(40);
        let days = 2 * SHARDS * ENTRIES_PER_SHARD / secrets.len();
        std::thread::scope(|threads| {
            for thread in 0..2 {
                let (cache, secrets) = (&cache, &secrets);
                threads.spawn(move || {
                    for day in 0..days {
                        let scope = scope(date(day));
                        for s in (thread..secrets.len()).step_by(2) {
                            let key = cache.get(&secrets[s], &scope);
                            if s % 9 == 0 {
                                assert_eq!(key, sigv4::signing_key(&secrets[s], &scope));
                            }
                        }
                    }
                });
            }
        });
        assert!(cache.len() <= SHARDS * ENTRIES_PER_SHARD, "{}", cache.len());
        // The newest day is kept for every secret; the first day is gone.
        let newest = scope(date(days - 1));
        let first = scope(date(0));
        for shard in &cache.shards {
            let map = shard.read().expect("lock");
            assert!(map.keys().all(|id| id.date != *first.date.as_bytes()));
        }
        let held = |scope: &Scope| {
            secrets
                .iter()
                .filter(|s| {
                    let id = SecretAndDay {
                        secret_address: s.as_ptr() as usize,
                        secret_len: s.len(),
                        date: scope.date.as_bytes().try_into().expect("8 bytes"),
                    };
                    cache.shards[id.shard()]
                        .read()
                        .expect("lock")
                        .contains_key(&id)
                })
                .count()
        };
        assert_eq!(held(&newest), secrets.len());
    }

    #[test]
    fn other_regions_and_services_are_derived_afresh() {
        let cache = SigningKeyCache::default();
        let secret = b"secret".as_slice();
        let home = scope("20260101".into());
        let away = Scope {
            region: "us-east-1".into(),
            ..home.clone()
        };
        assert_eq!(cache.get(secret, &home), sigv4::signing_key(secret, &home));
        assert_eq!(cache.get(secret, &away), sigv4::signing_key(secret, &away));
        assert_eq!(cache.get(secret, &home), sigv4::signing_key(secret, &home));
        assert_eq!(cache.len(), 1);
        assert!(format!("{cache:?}").contains("entries: 1"));
    }
}
