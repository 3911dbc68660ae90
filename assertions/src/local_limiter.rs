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
//! and a client cannot choose keys that collide.
//!
//! Not yet on the request path: before it is, `charge` should work without its four small
//! vectors (a fixed capacity for the few limits a service has), so a request allocates
//! nothing here.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::gcra::{decide, Decision, Limit};

const SHARDS: usize = 64;

/// One limit a request is counted against.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    pub limit: Limit,
    /// The bucket: the limit's name and the rendered key (`per-second/acme`).
    pub key: &'a str,
    pub cost: u64,
}

/// What a request got from all its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every limit allowed it; each decision in the order the charges were given.
    Allowed(Vec<Decision>),
    /// The limit at `index` refused it; nothing was counted against any limit.
    Refused {
        index: usize,
        decisions: Vec<Decision>,
    },
    /// A shard holds as many live keys as it may: nothing was counted.
    Full,
}

#[derive(Debug)]
pub struct LocalLimiter {
    seed: RandomState,
    shards: Vec<Mutex<HashMap<u64, u64>>>,
    keys_per_shard: usize,
}

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

    /// Keys held now (live or not yet dropped).
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts a request against every charge, or against none: all are decided first, and
    /// the arrival times are stored only when every limit allows it. Time `now` is in
    /// nanoseconds on the caller's monotonic scale.
    pub fn charge(&self, charges: &[Charge<'_>], now: u64) -> Outcome {
        let hashes: Vec<u64> = charges
            .iter()
            .map(|charge| self.seed.hash_one(charge.key))
            .collect();
        // Locks taken in shard order, each once, so two requests never wait on each other.
        let mut shard_indexes: Vec<usize> = hashes.iter().map(|hash| shard_of(*hash)).collect();
        shard_indexes.sort_unstable();
        shard_indexes.dedup();
        let mut guards: Vec<(usize, MutexGuard<'_, HashMap<u64, u64>>)> = shard_indexes
            .iter()
            .map(|index| (*index, lock(&self.shards[*index])))
            .collect();
        let mut decisions = Vec::with_capacity(charges.len());
        for (index, (charge, hash)) in charges.iter().zip(&hashes).enumerate() {
            let map = shard_map(&mut guards, shard_of(*hash));
            let decision = decide(charge.limit, map.get(hash).copied(), now, charge.cost);
            decisions.push(decision);
            if !decision.allowed {
                return Outcome::Refused { index, decisions };
            }
        }
        // Room first, so a full shard refuses before anything is stored.
        for hash in &hashes {
            let map = shard_map(&mut guards, shard_of(*hash));
            if !map.contains_key(hash) && map.len() >= self.keys_per_shard {
                map.retain(|_, tat| *tat > now);
                if map.len() >= self.keys_per_shard {
                    return Outcome::Full;
                }
            }
        }
        for (hash, decision) in hashes.iter().zip(&decisions) {
            if let Some(tat) = decision.new_tat {
                shard_map(&mut guards, shard_of(*hash)).insert(*hash, tat);
            }
        }
        Outcome::Allowed(decisions)
    }
}

fn shard_of(hash: u64) -> usize {
    (hash % SHARDS as u64) as usize
}

fn shard_map<'g, 'm>(
    guards: &'g mut [(usize, MutexGuard<'m, HashMap<u64, u64>>)],
    shard: usize,
) -> &'g mut HashMap<u64, u64> {
    let position = guards
        .iter()
        .position(|(index, _)| *index == shard)
        .unwrap_or_default();
    &mut guards[position].1
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
                key: "wide/acme",
                cost: 1,
            },
            Charge {
                limit: narrow,
                key: "narrow/acme",
                cost: 1,
            },
        ];
        assert!(matches!(limiter.charge(&charges, 0), Outcome::Allowed(_)));
        match limiter.charge(&charges, 0) {
            Outcome::Refused { index, decisions } => {
                assert_eq!(index, 1);
                assert_eq!(
                    decisions[0].remaining, 98,
                    "the wide limit was not charged again"
                );
            }
            other => panic!("{other:?}"),
        }
        // The wide limit still holds 99 minus the one allowed request.
        let only_wide = [Charge {
            limit: wide,
            key: "wide/acme",
            cost: 1,
        }];
        match limiter.charge(&only_wide, 0) {
            Outcome::Allowed(decisions) => assert_eq!(decisions[0].remaining, 98),
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
                    key: &key,
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
                    key: &key,
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
                                key: "hot",
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
                let outcome = limiter.charge(&[Charge { limit, key: &name, cost }], now);
                if let Some(tat) = expected.new_tat {
                    model.insert(key, tat);
                    prop_assert_eq!(outcome, Outcome::Allowed(vec![expected]));
                } else {
                    prop_assert_eq!(outcome, Outcome::Refused { index: 0, decisions: vec![expected] });
                }
            }
        }
    }
}
