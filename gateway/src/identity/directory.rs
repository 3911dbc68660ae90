//! The gateway's [`IdentityDirectory`]: who is behind a client address, from the state
//! store's identity table, through a small local cache; and the traffic it sees, written
//! behind in batches so the idle timeout moves without one store write per request.
//!
//! **How stale an answer may be.** An answer (active or unknown) is kept [`CACHE_TTL`];
//! the userauth API of this gateway drops the entry of an address it changes at once, so
//! a user deleted here stops passing with the next request, and one deleted through
//! another gateway sharing the store within [`CACHE_TTL`]. Expiry is judged on every
//! request against the clock, not only when the cache is refreshed.
//!
//! **Idle timeout.** Each request from an active user notes the second it came (at most
//! one note per address and second); [`StoreIdentityDirectory::flush`] writes the notes
//! with [`IdentityStore::touch_identities`] every [`FLUSH_EVERY`]. Until then this gateway
//! reckons the idle deadline from its own last note too, so a user with traffic here is
//! not dropped while the touch is on its way.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use portcullis_assertions::ip_identity::{
    ActiveIdentity, IdentityDirectory, IdentityFetch, IdentityLookup,
};

use crate::store::{now_secs, IdentityEntry, IdentityStore, IdentityTouch};

/// How long a cached answer is believed (see the module's doc).
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Most addresses cached; past it, stale and expired answers are dropped, then all.
pub const MAX_CACHED: usize = 200_000;
/// Most addresses with traffic waiting to be written; past it new ones wait for the flush.
pub const MAX_PENDING: usize = 200_000;
/// How often noted traffic is written to the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One cached answer.
#[derive(Debug)]
struct Cached {
    answer: CachedAnswer,
    fetched: Instant,
}

#[derive(Debug)]
enum CachedAnswer {
    Active(ActiveEntry),
    Unknown,
}

#[derive(Debug)]
struct ActiveEntry {
    identity: Arc<ActiveIdentity>,
    /// The store's expiry when read.
    expires_at: i64,
    session_ends_at: i64,
    idle_timeout_secs: Option<i64>,
    /// The last second this gateway noted traffic from the address (0: none yet).
    last_seen: i64,
}

impl ActiveEntry {
    fn from_store(entry: &IdentityEntry) -> ActiveEntry {
        ActiveEntry {
            identity: Arc::new(ActiveIdentity::new(
                &entry.username,
                &entry.groups,
                entry.interface.as_deref(),
            )),
            expires_at: entry.expires_at,
            session_ends_at: entry.session_ends_at,
            idle_timeout_secs: entry.idle_timeout_secs,
            last_seen: 0,
        }
    }

    /// The expiry with the traffic this gateway saw and has not seen written back yet.
    fn expires_at(&self) -> i64 {
        match self.idle_timeout_secs {
            Some(idle) if self.last_seen > 0 && self.last_seen < self.expires_at => {
                self.expires_at.max(
                    self.last_seen
                        .saturating_add(idle)
                        .min(self.session_ends_at),
                )
            }
            _ => self.expires_at,
        }
    }
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn IdentityStore>,
    cache: Mutex<HashMap<IpAddr, Cached>>,
    pending: Mutex<HashMap<IpAddr, IdentityTouch>>,
}

/// The directory over one state store; shared by every `require_ip_identity` step and the
/// userauth API, and kept across reloads.
#[derive(Debug, Clone)]
pub struct StoreIdentityDirectory {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StoreIdentityDirectory {
    #[must_use]
    pub fn new(store: Arc<dyn IdentityStore>) -> StoreIdentityDirectory {
        StoreIdentityDirectory {
            inner: Arc::new(Inner {
                store,
                cache: Mutex::default(),
                pending: Mutex::default(),
            }),
        }
    }

    /// True when this directory reads `store` (a reload that opened another keeps none).
    #[must_use]
    pub fn reads(&self, store: &Arc<dyn IdentityStore>) -> bool {
        Arc::ptr_eq(&self.inner.store, store)
    }

    /// Forgets what is cached for `ip`: the userauth API changed it.
    pub fn forget(&self, ip: IpAddr) {
        lock(&self.inner.cache).remove(&ip);
    }

    /// Remembers an answer read from the store now.
    pub fn remember(&self, ip: IpAddr, entry: Option<&IdentityEntry>) {
        let mut answer = entry.map_or(CachedAnswer::Unknown, |e| {
            CachedAnswer::Active(ActiveEntry::from_store(e))
        });
        let mut cache = lock(&self.inner.cache);
        // Traffic noted before this read may not have been written yet: keep counting it.
        if let (
            CachedAnswer::Active(fresh),
            Some(Cached {
                answer: CachedAnswer::Active(old),
                ..
            }),
        ) = (&mut answer, cache.get(&ip))
        {
            if old.identity.user == fresh.identity.user {
                fresh.last_seen = old.last_seen;
            }
        }
        if cache.len() >= MAX_CACHED && !cache.contains_key(&ip) {
            let now = now_secs();
            cache.retain(|_, c| {
                c.fetched.elapsed() < CACHE_TTL
                    && !matches!(&c.answer, CachedAnswer::Active(a) if a.expires_at() <= now)
            });
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            ip,
            Cached {
                answer,
                fetched: Instant::now(),
            },
        );
    }

    /// How many addresses have traffic waiting to be written.
    #[must_use]
    pub fn pending(&self) -> usize {
        lock(&self.inner.pending).len()
    }

    /// Writes the noted traffic to the store. A batch the store refused is kept for the
    /// next flush (newer notes win), within [`MAX_PENDING`].
    ///
    /// # Errors
    /// The store's.
    pub async fn flush(&self) -> crate::store::StoreResult<u64> {
        let batch: Vec<IdentityTouch> = {
            let mut pending = lock(&self.inner.pending);
            if pending.is_empty() {
                return Ok(0);
            }
            std::mem::take(&mut *pending).into_values().collect()
        };
        match self.inner.store.touch_identities(&batch).await {
            Ok(moved) => Ok(moved),
            Err(error) => {
                let mut pending = lock(&self.inner.pending);
                for touch in batch {
                    if pending.len() >= MAX_PENDING {
                        break;
                    }
                    pending.entry(touch.ip).or_insert(touch);
                }
                Err(error)
            }
        }
    }
}

impl IdentityDirectory for StoreIdentityDirectory {
    fn cached(&self, ip: IpAddr) -> Option<IdentityLookup> {
        let cache = lock(&self.inner.cache);
        let cached = cache.get(&ip)?;
        if cached.fetched.elapsed() >= CACHE_TTL {
            return None;
        }
        Some(match &cached.answer {
            CachedAnswer::Active(active) if active.expires_at() > now_secs() => {
                IdentityLookup::Active(active.identity.clone())
            }
            CachedAnswer::Active(_) | CachedAnswer::Unknown => IdentityLookup::Unknown,
        })
    }

    fn fetch(&self, ip: IpAddr) -> IdentityFetch {
        let directory = self.clone();
        Box::pin(async move {
            match directory.inner.store.identity(ip, now_secs()).await {
                Ok(entry) => {
                    directory.remember(ip, entry.as_ref());
                    entry.map_or(IdentityLookup::Unknown, |e| {
                        IdentityLookup::Active(Arc::new(ActiveIdentity::new(
                            &e.username,
                            &e.groups,
                            e.interface.as_deref(),
                        )))
                    })
                }
                Err(error) => {
                    log::warn!("require_ip_identity: the identity table cannot be read: {error}");
                    IdentityLookup::Unavailable
                }
            }
        })
    }

    fn seen(&self, ip: IpAddr, identity: &ActiveIdentity) {
        let now = now_secs();
        {
            let mut cache = lock(&self.inner.cache);
            let Some(Cached {
                answer: CachedAnswer::Active(active),
                ..
            }) = cache.get_mut(&ip)
            else {
                return;
            };
            // Once per address and second: the rest of that second's requests stop here.
            if active.last_seen >= now || active.identity.user != identity.user {
                return;
            }
            active.last_seen = now;
        }
        let mut pending = lock(&self.inner.pending);
        if pending.len() < MAX_PENDING || pending.contains_key(&ip) {
            pending.insert(
                ip,
                IdentityTouch {
                    ip,
                    username: identity.user.to_string(),
                    seen_at: now,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StateStore;

    fn entry(ip: &str, user: &str, expires_in: i64, idle: Option<i64>) -> IdentityEntry {
        let now = now_secs();
        IdentityEntry {
            ip: ip.parse().expect("ip"),
            username: user.to_owned(),
            groups: vec!["wifi".to_owned()],
            interface: None,
            session_timeout_secs: Some(3600),
            idle_timeout_secs: idle,
            expires_at: now + expires_in,
            session_ends_at: now + 3600,
        }
    }

    #[tokio::test]
    async fn answers_are_cached_forgotten_and_traffic_is_written_behind() {
        let store = StateStore::memory();
        let directory = StoreIdentityDirectory::new(store.identities().clone());
        let alice = entry("10.0.0.1", "alice", 30, Some(60));
        store.identities().put_identity(&alice).await.expect("put");
        let ip = alice.ip;
        assert_eq!(directory.cached(ip), None, "nothing read yet");
        let IdentityLookup::Active(found) = directory.fetch(ip).await else {
            panic!("alice is active");
        };
        assert_eq!(&*found.user, "alice");
        assert!(matches!(
            directory.cached(ip),
            Some(IdentityLookup::Active(_))
        ));
        // Two requests in one second: one note, one touch written.
        directory.seen(ip, &found);
        directory.seen(ip, &found);
        assert_eq!(directory.pending(), 1);
        assert_eq!(directory.flush().await.expect("flush"), 1);
        assert_eq!(directory.pending(), 0);
        let stored = store
            .identities()
            .identity(ip, now_secs())
            .await
            .expect("get")
            .expect("live");
        assert!(
            stored.expires_at > alice.expires_at,
            "the idle deadline moved"
        );
        // Deleted through the API of this gateway: forgotten at once.
        store
            .identities()
            .remove_identity(ip)
            .await
            .expect("remove");
        directory.forget(ip);
        assert_eq!(directory.cached(ip), None);
        assert_eq!(directory.fetch(ip).await, IdentityLookup::Unknown);
        assert_eq!(directory.cached(ip), Some(IdentityLookup::Unknown));
    }

    #[tokio::test]
    async fn an_expired_entry_is_refused_from_the_cache_too() {
        let store = StateStore::memory();
        let directory = StoreIdentityDirectory::new(store.identities().clone());
        let mut bob = entry("10.0.0.2", "bob", 60, None);
        store.identities().put_identity(&bob).await.expect("put");
        let _ = directory.fetch(bob.ip).await;
        bob.expires_at = now_secs() - 1;
        directory.remember(bob.ip, Some(&bob));
        assert_eq!(directory.cached(bob.ip), Some(IdentityLookup::Unknown));
    }
}
