//! The rate-limit state of one process: each key's GCRA arrival time ([`crate::gcra`]) in a
//! sharded map, so requests for different keys rarely wait on the same lock, and bounded, so
//! a flood of distinct keys cannot grow memory without end.
//!
//! A key whose arrival time has passed has a full bucket, exactly as a key never seen: such
//! entries are dropped when a shard needs room, which loses nothing. A shard full of live
//! keys refuses to take a new one ([`Outcome::Full`]) rather than forget a key that is
//! limited; the caller counts and answers that.
//!
//! Keys are stored as 64-bit hashes under a per-process random seed: no key text is kept,
//! and a client cannot choose keys that collide. A decision allocates nothing: the few
//! limits of one request ([`MAX_CHARGES`]) are decided in fixed arrays.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::gcra::{decide, Decision, Limit};

const SHARDS: usize = 64;

/// A shard's buckets: arrival times by key hash. The keys are already seeded 64-bit hashes,
/// so the map uses them as they are instead of hashing them again.
type Buckets = HashMap<u64, u64, BuildHasherDefault<KeyIsHash>>;

/// A hasher for keys that are hashes already: passes the `u64` through.
#[derive(Debug, Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the key type is u64); fold anything else in anyway.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// The most limits one request is counted against at once (a policy names a few).
pub const MAX_CHARGES: usize = 8;

/// A bucket, as the limiter knows it: the seeded hash of its name and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(u64);

/// One limit a request is counted against.
#[derive(Debug, Clone, Copy)]
pub struct Charge {
    pub limit: Limit,
    /// The bucket ([`LocalLimiter::key`]).
    pub key: KeyHash,
    pub cost: u64,
}

/// The decisions of one request's limits, in the order the charges were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decisions {
    items: [Decision; MAX_CHARGES],
    len: usize,
}

impl Decisions {
    const EMPTY: Decisions = Decisions {
        items: [Decision::NONE; MAX_CHARGES],
        len: 0,
    };

    /// Decisions from a list (a shared store's answer); at most [`MAX_CHARGES`] are kept.
    #[must_use]
    pub fn from_slice(decisions: &[Decision]) -> Decisions {
        let mut out = Decisions::EMPTY;
        for decision in decisions.iter().take(MAX_CHARGES) {
            out.push(*decision);
        }
        out
    }

    fn push(&mut self, decision: Decision) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = decision;
            self.len += 1;
        }
    }

    #[must_use]
    pub fn as_slice(&self) -> &[Decision] {
        &self.items[..self.len]
    }
}

/// What a request got from all its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every limit allowed it.
    Allowed(Decisions),
    /// The limit at `index` refused it; nothing was counted against any limit.
    Refused { index: usize, decisions: Decisions },
    /// A shard holds as many live keys as it may (or more than [`MAX_CHARGES`] limits
    /// were given): nothing was counted.
    Full,
}

#[derive(Debug)]
pub struct LocalLimiter {
    seed: RandomState,
    shards: Vec<Mutex<Buckets>>,
    keys_per_shard: usize,
}

type ShardGuard<'m> = MutexGuard<'m, Buckets>;

impl LocalLimiter {
    /// A limiter holding at most about `max_keys` live keys.
    #[must_use]
    pub fn new(max_keys: usize) -> LocalLimiter {
        LocalLimiter {
            seed: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            keys_per_shard: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    /// The bucket for a rendered key (which names its limit, so two limits never share one).
    #[must_use]
    pub fn key(&self, text: &str) -> KeyHash {
        KeyHash(self.seed.hash_one(text))
    }

    /// Keys held now (live or not yet dropped).
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What `charge` would decide for one bucket now, storing nothing (a lockout check
    /// before the attempt it would count).
    #[must_use]
    pub fn peek(&self, charge: &Charge, now: u64) -> Decision {
        let shard = lock(&self.shards[shard_of(charge.key)]);
        decide(
            charge.limit,
            shard.get(&charge.key.0).copied(),
            now,
            charge.cost,
        )
    }

    /// Whether the bucket is held and not yet full again at `now` (a key never seen, or one
    /// whose bucket refilled, is not).
    #[must_use]
    pub fn tracks(&self, key: KeyHash, now: u64) -> bool {
        lock(&self.shards[shard_of(key)])
            .get(&key.0)
            .is_some_and(|tat| *tat > now)
    }

    /// Counts a request against every charge, or against none: all are decided first, and
    /// the arrival times are stored only when every limit allows it. Time `now` is in
    /// nanoseconds on the caller's monotonic scale.
    pub fn charge(&self, charges: &[Charge], now: u64) -> Outcome {
        if charges.len() > MAX_CHARGES {
            return Outcome::Full;
        }
        // Locks taken in shard order, each once, so two requests never wait on each other.
        let mut order = [usize::MAX; MAX_CHARGES];
        for (slot, charge) in order.iter_mut().zip(charges) {
            *slot = shard_of(charge.key);
        }
        let order = &mut order[..charges.len()];
        order.sort_unstable();
        let mut guards: [Option<(usize, ShardGuard<'_>)>; MAX_CHARGES] =
            std::array::from_fn(|_| None);
        let mut held = 0;
        for index in order.iter() {
            if held > 0 && matches!(&guards[held - 1], Some((last, _)) if last == index) {
                continue;
            }
            guards[held] = Some((*index, lock(&self.shards[*index])));
            held += 1;
        }
        let guards = &mut guards[..held];
        let mut decisions = Decisions::EMPTY;
        for (index, charge) in charges.iter().enumerate() {
            let Some(map) = shard_map(guards, shard_of(charge.key)) else {
                return Outcome::Full;
            };
            let decision = decide(
                charge.limit,
                map.get(&charge.key.0).copied(),
                now,
                charge.cost,
            );
            decisions.push(decision);
            if !decision.allowed {
                return Outcome::Refused { index, decisions };
            }
        }
        // Room first, so a full shard refuses before anything is stored.
        for charge in charges {
            let Some(map) = shard_map(guards, shard_of(charge.key)) else {
                return Outcome::Full;
            };
            if !map.contains_key(&charge.key.0) && map.len() >= self.keys_per_shard {
                map.retain(|_, tat| *tat > now);
                if map.len() >= self.keys_per_shard {
                    return Outcome::Full;
                }
            }
        }
        for (charge, decision) in charges.iter().zip(decisions.as_slice()) {
            if let (Some(tat), Some(map)) =
                (decision.new_tat, shard_map(guards, shard_of(charge.key)))
            {
                map.insert(charge.key.0, tat);
            }
        }
        Outcome::Allowed(decisions)
    }
}

/// The shard of a key: bits from the middle of the hash, so neither the low bits the map
/// indexes by nor the top bits it tags entries with are the same for every key of a shard.
fn shard_of(key: KeyHash) -> usize {
    ((key.0 >> 32) % SHARDS as u64) as usize
}

/// The map of `shard`, whose lock `guards` holds (the charge loop locked every shard its
/// keys fall in before deciding anything, so `None` never happens; it is answered as a full
/// limiter, a refusal, rather than a panic).
fn shard_map<'g, 'm>(
    guards: &'g mut [Option<(usize, ShardGuard<'m>)>],
    shard: usize,
) -> Option<&'g mut Buckets> {
    guards.iter_mut().find_map(|held| match held {
        Some((index, guard)) if *index == shard => Some(&mut **guard),
        _ => None,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn per_second(count: u64, burst: u64) -> Limit {
        Limit::new(count, Duration::from_secs(1), burst).expect("limit")
    }

    #[test]
    fn a_refusal_by_one_limit_counts_against_none() {
        let limiter = LocalLimiter::new(1000);
        let wide = per_second(100, 100);
        let narrow = per_second(1, 1);
        let charges = [
            Charge {
                limit: wide,
                key: limiter.key("wide/acme"),
                cost: 1,
            },
            Charge {
                limit: narrow,
                key: limiter.key("narrow/acme"),
                cost: 1,
            },
        ];
        assert!(matches!(limiter.charge(&charges, 0), Outcome::Allowed(_)));
        match limiter.charge(&charges, 0) {
            Outcome::Refused { index, decisions } => {
                assert_eq!(index, 1);
                assert_eq!(
                    decisions.as_slice()[0].remaining,
                    98,
                    "the wide limit was not charged again"
                );
            }
            other => panic!("{other:?}"),
        }
        // The wide limit still holds 99 minus the one allowed request.
        let only_wide = [Charge {
            limit: wide,
            key: limiter.key("wide/acme"),
            cost: 1,
        }];
        match limiter.charge(&only_wide, 0) {
            Outcome::Allowed(decisions) => assert_eq!(decisions.as_slice()[0].remaining, 98),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn idle_keys_make_room_and_live_ones_are_never_forgotten() {
        let limiter = LocalLimiter::new(SHARDS); // one key per shard
        let limit = per_second(1, 1);
        let mut keys = (0..10_000).map(|n| format!("k{n}"));
        // Fill shards with live keys until one refuses a newcomer.
        let full = keys.by_ref().any(|key| {
            limiter.charge(
                &[Charge {
                    limit,
                    key: limiter.key(&key),
                    cost: 1,
                }],
                0,
            ) == Outcome::Full
        });
        assert!(full, "a shard full of live keys refuses a new one");
        assert!(limiter.len() <= SHARDS);
        // A second later every bucket is full again: the same newcomers now fit.
        let later = 1_000_000_000;
        for key in (0..10_000).map(|n| format!("new{n}")).take(200) {
            let outcome = limiter.charge(
                &[Charge {
                    limit,
                    key: limiter.key(&key),
                    cost: 1,
                }],
                later,
            );
            assert!(
                matches!(outcome, Outcome::Allowed(_) | Outcome::Full),
                "{outcome:?}"
            );
        }
        assert!(limiter.len() <= SHARDS);
    }

    #[test]
    fn threads_racing_for_one_key_get_exactly_the_burst() {
        let limiter = Arc::new(LocalLimiter::new(1000));
        let allowed = Arc::new(AtomicU64::new(0));
        let limit = per_second(1, 50);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (limiter, allowed) = (limiter.clone(), allowed.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        let outcome = limiter.charge(
                            &[Charge {
                                limit,
                                key: limiter.key("hot"),
                                cost: 1,
                            }],
                            0,
                        );
                        if matches!(outcome, Outcome::Allowed(_)) {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        assert_eq!(allowed.load(Ordering::Relaxed), 50);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::test_cases(256)))]

        /// With room for every key, the limiter answers as the pure GCRA over one stored
        /// arrival time per key, whatever the interleaving of keys.
        #[test]
        fn the_limiter_answers_as_gcra_per_key(
            steps in proptest::collection::vec((0usize..4, 0u64..300_000_000, 0u64..3), 1..80),
        ) {
            let limiter = LocalLimiter::new(1000);
            let limit = per_second(5, 3);
            let mut model: HashMap<usize, u64> = HashMap::new();
            let mut now = 0;
            for (key, gap, cost) in steps {
                now += gap;
                let name = format!("key{key}");
                let expected = decide(limit, model.get(&key).copied(), now, cost);
                let outcome = limiter.charge(&[Charge { limit, key: limiter.key(&name), cost }], now);
                if let Some(tat) = expected.new_tat {
                    model.insert(key, tat);
                    prop_assert_eq!(outcome, Outcome::Allowed(Decisions::from_slice(&[expected])));
                } else {
                    prop_assert_eq!(outcome, Outcome::Refused { index: 0, decisions: Decisions::from_slice(&[expected]) });
                }
            }
        }
    }
}
