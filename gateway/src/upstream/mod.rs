//! Upstream pools: the targets a service forwards to, how one is chosen for each request, and
//! what is known of their health.
//!
//! A pool's members sit behind an [`ArcSwap`] so a DNS re-resolution replaces them without a
//! lock on the request path; each target's state is atomics ([`target`]). Choosing a target
//! takes no lock and allocates nothing: round robin walks a precomputed smooth-weighted
//! schedule, least connections scans the (at most 64) targets, consistent hashing walks
//! Pingora's Ketama ring (`pingora-ketama`, the same ring nginx and memcached clients use).
//! Active checks and re-resolution run off the request path ([`upkeep`]).

pub mod report;
pub mod resolve;
mod retry;
mod target;
pub mod upkeep;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use portcullis_assertions::template::Template;

pub use retry::{RetryBudget, RetryPolicy};
pub use target::{Availability, Outcome, Passive, Target};

/// Targets a pool may hold: the set of tried targets is a 64-bit mask.
pub const MAX_TARGETS: usize = 64;
/// Largest weight of one target (the round-robin schedule holds the sum of the weights).
pub const MAX_WEIGHT: u32 = 100;

/// How a pool spreads requests over its targets.
#[derive(Debug)]
pub enum Balance {
    /// In turn, in proportion to the weights (smooth: no target gets a burst).
    RoundRobin,
    /// To the target with the fewest requests in flight for its weight.
    LeastConnections,
    /// By a hash of the rendered template (e.g. `${client.id}`): the same key goes to the
    /// same target while it is available; requests without the key go round robin.
    ConsistentHash(Template),
}

impl Balance {
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConnections => "least_connections",
            Balance::ConsistentHash(_) => "consistent_hash",
        }
    }
}

/// The active health check: an HTTP request to each target, off the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCheck {
    /// Path (and query) requested; any 2xx or 3xx answer passes.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Passes in a row that bring an unhealthy target back.
    pub healthy_after: u32,
    /// Failures in a row that take a healthy target out.
    pub unhealthy_after: u32,
}

/// A pool whose members are a DNS name's addresses, looked up again every `every`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    pub host: String,
    pub port: u16,
    pub every: Duration,
    /// `Host` and TLS server name of the targets found.
    pub host_header: http::HeaderValue,
    pub sni: String,
}

/// How a pool behaves, as the policy set it.
#[derive(Debug)]
pub struct PoolSettings {
    pub balance: Balance,
    /// Requests in flight per target; past it the next target is tried.
    pub max_connections: Option<u32>,
    pub passive: Passive,
    pub health_check: Option<ActiveCheck>,
    pub resolve: Option<Resolve>,
}

/// The pool's members at one time.
pub struct Members {
    pub targets: Box<[Arc<Target>]>,
    /// Smooth weighted round robin: target indices in the order they take requests.
    schedule: Box<[u8]>,
    /// The Ketama ring, for consistent hashing.
    ring: Option<pingora_ketama::Continuum>,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members")
            .field("targets", &self.targets)
            .field("schedule", &self.schedule)
            .field("ring", &self.ring.is_some())
            .finish()
    }
}

impl Members {
    /// Builds the schedule (and the ring, when hashing) for `targets` (at most
    /// [`MAX_TARGETS`], weights at most [`MAX_WEIGHT`]: the compiler enforces both).
    #[must_use]
    pub fn new(targets: Vec<Arc<Target>>, hashing: bool) -> Self {
        let ring = hashing.then(|| {
            let buckets: Vec<pingora_ketama::Bucket> = targets
                .iter()
                .map(|t| pingora_ketama::Bucket::new(t.addr, t.weight))
                .collect();
            pingora_ketama::Continuum::new(&buckets)
        });
        Members {
            schedule: smooth_schedule(&targets),
            targets: targets.into_boxed_slice(),
            ring,
        }
    }
}

/// nginx's smooth weighted round robin, unrolled once over the sum of the weights: with
/// weights 5, 1, 1 the order is a a b a c a a, not a a a a a b c.
fn smooth_schedule(targets: &[Arc<Target>]) -> Box<[u8]> {
    let weights: Vec<i64> = targets
        .iter()
        .take(MAX_TARGETS)
        .map(|t| i64::from(t.weight.clamp(1, MAX_WEIGHT)))
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (index, weight) in weights.iter().enumerate() {
            current[index] += weight;
            if current[index] > current[best] {
                best = index;
            }
        }
        current[best] -= total;
        schedule.push(u8::try_from(best).unwrap_or(0));
    }
    schedule.into_boxed_slice()
}

/// What [`Pool::choose`] found.
#[derive(Debug)]
pub enum Choice {
    Chosen(Lease),
    /// No target is available (health checks failing, ejected): 503 `no-healthy-upstream`.
    NoHealthy,
    /// Available targets are all at their connection limit or were tried already.
    AllBusy,
}

/// A target chosen for one attempt, holding a slot under its connection limit until dropped.
#[derive(Debug)]
pub struct Lease {
    pub target: Arc<Target>,
    /// The target's index in the members it was chosen from (for the tried-set).
    pub index: usize,
    pub started: Instant,
    /// Whether the attempt's outcome was counted (an answer is counted once).
    pub recorded: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.target.release();
    }
}

/// A service's upstream pool.
#[derive(Debug)]
pub struct Pool {
    pub settings: PoolSettings,
    members: ArcSwap<Members>,
    pub budget: RetryBudget,
    /// Time origin of the targets' ejection deadlines.
    epoch: Instant,
    cursor: AtomicUsize,
    /// Set while a check round or a resolution of this pool runs.
    pub(crate) upkeep_running: std::sync::atomic::AtomicBool,
    /// When the next check round and resolution are due (milliseconds since `epoch`).
    pub(crate) next_check_ms: std::sync::atomic::AtomicU64,
    pub(crate) next_resolve_ms: std::sync::atomic::AtomicU64,
}

impl Pool {
    #[must_use]
    pub fn new(settings: PoolSettings, retries: RetryPolicy, targets: Vec<Arc<Target>>) -> Self {
        let hashing = matches!(settings.balance, Balance::ConsistentHash(_));
        let next_resolve = settings
            .resolve
            .as_ref()
            .map_or(u64::MAX, |r| millis(r.every));
        Pool {
            settings,
            members: ArcSwap::from_pointee(Members::new(targets, hashing)),
            budget: RetryBudget::new(retries),
            epoch: Instant::now(),
            cursor: AtomicUsize::new(0),
            upkeep_running: std::sync::atomic::AtomicBool::new(false),
            next_check_ms: std::sync::atomic::AtomicU64::new(0),
            next_resolve_ms: std::sync::atomic::AtomicU64::new(next_resolve),
        }
    }

    /// Milliseconds since the pool was built (the clock of ejections).
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    #[must_use]
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// Chooses a target for one attempt, skipping those in `tried` (a mask of member
    /// indices) and those that are unavailable or full. `hash_key` is the rendered
    /// `hash_on` template (consistent hashing only; `None` goes round robin).
    #[must_use]
    pub fn choose(&self, hash_key: Option<&[u8]>, tried: u64) -> Choice {
        let members = self.members.load();
        let now = self.now_ms();
        let count = members.targets.len().min(MAX_TARGETS);
        let all = if count == MAX_TARGETS {
            u64::MAX
        } else {
            (1u64 << count) - 1
        };
        // Targets looked at and not taken; `available` notes whether any was available.
        let mut passed = tried & all;
        let mut available = false;
        let limit = self.settings.max_connections;
        let mut take = |index: usize, passed: &mut u64| -> Option<Lease> {
            let bit = 1u64 << index;
            if *passed & bit != 0 {
                return None;
            }
            *passed |= bit;
            let target = &members.targets[index];
            if target.availability(now) != Availability::Available {
                return None;
            }
            available = true;
            target.try_acquire(limit).then(|| Lease {
                target: target.clone(),
                index,
                started: Instant::now(),
                recorded: false,
            })
        };
        // A retry starts where the first try's turn left off without taking another turn:
        // otherwise every retry would shift the rotation onto the target that just failed.
        let turn = || {
            if tried == 0 {
                self.cursor.fetch_add(1, Relaxed)
            } else {
                self.cursor.load(Relaxed)
            }
        };
        let chosen = match (&self.settings.balance, hash_key, &members.ring) {
            (Balance::LeastConnections, ..) => {
                let mut found = None;
                // Each pass takes the least loaded target not yet passed over; a pass fails
                // only if that target filled up meanwhile.
                for _ in 0..count {
                    // Ties go in the weighted rotation's order, so idle targets share by weight.
                    let start = match members.schedule.len() {
                        0 => 0,
                        len => usize::from(members.schedule[turn() % len]),
                    };
                    let Some(best) = least_loaded(&members.targets[..count], passed, now, start)
                    else {
                        break;
                    };
                    if let Some(lease) = take(best, &mut passed) {
                        found = Some(lease);
                        break;
                    }
                }
                found
            }
            (Balance::ConsistentHash(_), Some(key), Some(ring)) => {
                let mut found = None;
                for addr in ring.node_iter(key).take(ring_walk(count)) {
                    if passed == all {
                        break;
                    }
                    let Some(index) = members.targets[..count]
                        .iter()
                        .position(|t| t.addr == *addr)
                    else {
                        continue;
                    };
                    if let Some(lease) = take(index, &mut passed) {
                        found = Some(lease);
                        break;
                    }
                }
                found
            }
            _ => {
                let schedule = &members.schedule;
                let mut found = None;
                if !schedule.is_empty() {
                    let start = turn() % schedule.len();
                    for step in 0..schedule.len() {
                        if passed == all {
                            break;
                        }
                        let index = usize::from(schedule[(start + step) % schedule.len()]);
                        if let Some(lease) = take(index, &mut passed) {
                            found = Some(lease);
                            break;
                        }
                    }
                }
                found
            }
        };
        match chosen {
            Some(lease) => Choice::Chosen(lease),
            None if available => Choice::AllBusy,
            // Everything left was tried already: the retry has nowhere to go.
            None if tried & all != 0
                && members.targets[..count]
                    .iter()
                    .enumerate()
                    .any(|(index, t)| {
                        tried & (1 << index) != 0 && t.availability(now) == Availability::Available
                    }) =>
            {
                Choice::AllBusy
            }
            None => Choice::NoHealthy,
        }
    }

    /// Whether a retry would find a target: one that is available and not in `tried`.
    #[must_use]
    pub fn has_untried(&self, tried: u64) -> bool {
        let members = self.members.load();
        let now = self.now_ms();
        members
            .targets
            .iter()
            .take(MAX_TARGETS)
            .enumerate()
            .any(|(index, t)| {
                tried & (1 << index) == 0 && t.availability(now) == Availability::Available
            })
    }

    /// Whether a target other than the one at `index` takes requests now.
    #[must_use]
    pub fn available_besides(&self, index: usize) -> bool {
        self.has_untried(1u64 << index.min(MAX_TARGETS - 1))
    }

    /// Whether any target takes requests now (for `/healthz`).
    #[must_use]
    pub fn any_available(&self) -> bool {
        self.has_untried(0)
    }

    /// Replaces the members with targets at `addrs` (a re-resolution), keeping the state of
    /// those already there. Returns whether anything changed.
    pub fn replace_addresses(
        &self,
        mut addrs: Vec<SocketAddr>,
        make: impl Fn(SocketAddr) -> Target,
    ) -> bool {
        addrs.sort_unstable();
        addrs.dedup();
        addrs.truncate(MAX_TARGETS);
        let current = self.members.load();
        let mut now: Vec<SocketAddr> = current.targets.iter().map(|t| t.addr).collect();
        now.sort_unstable();
        if now == addrs {
            return false;
        }
        let targets = addrs
            .into_iter()
            .map(|addr| {
                current
                    .targets
                    .iter()
                    .find(|t| t.addr == addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(make(addr)))
            })
            .collect();
        let hashing = matches!(self.settings.balance, Balance::ConsistentHash(_));
        self.members.store(Arc::new(Members::new(targets, hashing)));
        true
    }

    /// Takes over what the previous policy's pool knew of targets at the same addresses.
    pub fn inherit(&self, earlier: &Pool) {
        let earlier_members = earlier.members.load();
        if self.settings.resolve.is_some() && self.settings.resolve == earlier.settings.resolve {
            // Keep the last resolution rather than the one made at load (rebuilt, in case the
            // balancing mode changed and the ring is wanted now).
            let hashing = matches!(self.settings.balance, Balance::ConsistentHash(_));
            self.members.store(Arc::new(Members::new(
                earlier_members.targets.to_vec(),
                hashing,
            )));
        }
        let shift =
            i64::try_from(self.epoch.duration_since(earlier.epoch).as_millis()).unwrap_or(i64::MAX);
        for target in self.members.load().targets.iter() {
            if let Some(old) = earlier_members
                .targets
                .iter()
                .find(|t| t.addr == target.addr)
            {
                if Arc::ptr_eq(old, target) {
                    continue;
                }
                target.inherit(old);
                target.inherit_ejection(old, shift);
            }
        }
    }
}

/// The index of the available target (not in `passed`) with the fewest requests in flight
/// for its weight; ties go to the first from `start`, so equal targets take turns.
fn least_loaded(targets: &[Arc<Target>], passed: u64, now: u64, start: usize) -> Option<usize> {
    let count = targets.len();
    let mut best: Option<(usize, u64, u64)> = None;
    for step in 0..count {
        let index = (start + step) % count;
        if passed & (1 << index) != 0 {
            continue;
        }
        let target = &targets[index];
        if target.availability(now) != Availability::Available {
            continue;
        }
        let load = u64::from(target.state.in_flight.load(Relaxed));
        let weight = u64::from(target.weight);
        // load / weight < best_load / best_weight, without division.
        if best.is_none_or(|(_, best_load, best_weight)| load * best_weight < best_load * weight) {
            best = Some((index, load, weight));
        }
    }
    best.map(|(index, ..)| index)
}

/// Points of the ring walked before giving up: enough to meet every target many times over.
fn ring_walk(targets: usize) -> usize {
    targets * 160 * usize::try_from(MAX_WEIGHT).unwrap_or(100)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
