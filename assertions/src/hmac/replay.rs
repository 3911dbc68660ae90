//! The seen-set behind replay protection: a signature accepted once is refused for as long
//! as its request could still pass the clock-skew check.
//!
//! Bounded in memory: entries expire with the window, and when the set is full of live
//! entries a new signature is refused (fail closed) rather than letting an old one be
//! forgotten and replayed. Sharded so concurrent requests rarely meet on one lock.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

const SHARDS: usize = 16;

#[derive(Debug, Default)]
struct Shard {
    seen: HashMap<[u8; 32], u64>,
    /// (expiry, signature) in insertion order; expiries are non-decreasing per window.
    order: VecDeque<(u64, [u8; 32])>,
}

/// What the seen-set said about a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: now remembered until its expiry.
    New,
    /// Already used inside the window.
    Replayed,
    /// The set is full of live entries; the request cannot be checked.
    Full,
}

/// Signatures seen recently, each remembered until an expiry (seconds since the epoch).
#[derive(Debug)]
pub struct ReplayCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl ReplayCache {
    /// A cache holding at most `capacity` live signatures.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        ReplayCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// Records `signature` (any 32-byte digest of it) as used until `expires`, at time `now`.
    pub fn check_and_insert(&self, signature: [u8; 32], now: u64, expires: u64) -> Seen {
        let shard = &self.shards[usize::from(signature[0]) % SHARDS];
        let mut s = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(&(expiry, sig)) = s.order.front() {
            if expiry > now {
                break;
            }
            s.order.pop_front();
            if s.seen.get(&sig) == Some(&expiry) {
                s.seen.remove(&sig);
            }
        }
        if let Some(&expiry) = s.seen.get(&signature) {
            if expiry > now {
                return Seen::Replayed;
            }
        }
        if s.seen.len() >= self.per_shard {
            return Seen::Full;
        }
        s.seen.insert(signature, expires);
        s.order.push_back((expires, signature));
        Seen::New
    }

    /// Live entries, for metrics and tests.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.seen.len()))
            .sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn a_signature_is_refused_until_it_expires() {
        let c = ReplayCache::new(100);
        assert_eq!(c.check_and_insert(sig(1), 1000, 1300), Seen::New);
        assert_eq!(c.check_and_insert(sig(1), 1299, 1599), Seen::Replayed);
        assert_eq!(c.check_and_insert(sig(2), 1299, 1599), Seen::New);
        // Expired: usable again (its timestamp check would refuse it anyway).
        assert_eq!(c.check_and_insert(sig(1), 1300, 1600), Seen::New);
    }

    #[test]
    fn a_full_set_fails_closed_and_frees_room_as_entries_expire() {
        let c = ReplayCache::new(16); // one per shard
        assert_eq!(c.check_and_insert(sig(1), 0, 100), Seen::New);
        // Same shard (first byte 17 % 16 == 1), still live: refused, not evicted.
        assert_eq!(c.check_and_insert(sig(17), 50, 150), Seen::Full);
        assert_eq!(c.check_and_insert(sig(1), 50, 150), Seen::Replayed);
        assert_eq!(c.check_and_insert(sig(17), 100, 200), Seen::New);
        assert_eq!(c.len(), 1);
    }
}
