//! Cluster-scope rate-limit decisions: the GCRA of `portcullis_assertions::gcra` run as
//! one Lua script in Redis, so every gateway of a fleet counts against the same buckets.
//!
//! One call decides a group of limits (a request's `per-second` and `per-hour`) together:
//! every limit is decided first, and the new arrival times are stored only when all allow,
//! so a refusal consumes nothing. The keys of one group must share one hash tag (`{...}`),
//! so a Cluster keeps them on one master and the script can touch them all.
//!
//! **One clock.** The script reads the server's `TIME`, not the gateways' clocks, so
//! gateways whose clocks drift apart still share one timeline.
//!
//! **Exact arithmetic in Lua.** Lua numbers in Redis are doubles, exact only below 2^53,
//! and a Unix time in nanoseconds is past that. So a stored arrival time is two numbers
//! (`seconds:nanoseconds`) and the script works in nanoseconds *relative to now*, which are
//! bounded by a limit's tolerance (`interval × burst`). Limits whose tolerance passes
//! [`MAX_TOLERANCE_NANOS`] (about 52 days) are refused for cluster scope.
//!
//! Each bucket key expires when its bucket would be full again: a key nobody uses goes.

use std::sync::LazyLock;
use std::time::Duration;

use ::redis::Script;
use portcullis_assertions::gcra::{Decision, Limit};
use portcullis_assertions::rate_limit::shared::SharedDecision;
use portcullis_assertions::rate_limit::{SharedCharge, SharedLimiter, SharedUnavailable};

use super::{RedisClient, RedisUnavailable};

/// The longest tolerance (`interval × burst`, in nanoseconds) the script computes exactly
/// (2^52: headroom below 2^53 for adding the nanoseconds of the current second).
pub const MAX_TOLERANCE_NANOS: u64 = 1 << 52;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// One bucket of a decision.
#[derive(Debug, Clone, Copy)]
pub struct ClusterCharge<'a> {
    /// The Redis key of the bucket; every key of one call shares one hash tag.
    pub key: &'a str,
    pub limit: Limit,
    pub cost: u64,
}

/// Decides rate limits in Redis. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisLimiter {
    client: RedisClient,
    /// Put before every key the step names (the policy's `redis.key_prefix`), so two fleets
    /// on one Redis with different prefixes keep their buckets apart. Empty: keys as named.
    key_prefix: std::sync::Arc<str>,
}

/// KEYS: the buckets. ARGV: now seconds, now nanoseconds ('' and '': the server's TIME),
/// then per key: interval, burst, cost (nanoseconds and counts, each below 2^53). Returns
/// per key `{allowed, remaining, reset_after, retry_after (-1: none), tat_s, tat_n}`
/// (`tat_*`: the new arrival time when allowed).
static DECIDE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local BILLION = 1000000000
local now_s, now_n
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now_s, now_n = tonumber(t[1]), tonumber(t[2]) * 1000
else
  now_s, now_n = tonumber(ARGV[1]), tonumber(ARGV[2])
end
-- floor(a / b) for non-negative integers below 2^53, exact whatever the rounding.
local function div(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local out, all_allowed, fresh = {}, true, {}
for i = 1, #KEYS do
  local interval, burst, cost = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  local tolerance = interval * burst
  -- The stored arrival time, relative to now (0 when it is in the past or absent).
  local tat = 0
  local held = redis.call('GET', KEYS[i])
  if held then
    local s, n = string.match(held, '^(%d+):(%d+)$')
    if s then
      local delta = (tonumber(s) - now_s) * BILLION + (tonumber(n) - now_n)
      if delta > 0 then tat = delta end
    end
  end
  local new_tat = tat + cost * interval
  if new_tat <= tolerance then
    local absolute = now_n + new_tat
    fresh[i] = {now_s + div(absolute, BILLION), absolute % BILLION, new_tat}
    out[i] = {1, div(tolerance - new_tat, interval), new_tat, -1, fresh[i][1], fresh[i][2]}
  else
    all_allowed = false
    local level = tolerance - tat
    if level < 0 then level = 0 end
    local full_in = tolerance
    if tat > full_in then full_in = tat end
    local retry = new_tat - tolerance
    if full_in < retry then retry = full_in end
    out[i] = {0, div(level, interval), tat, retry, 0, 0}
  end
end
if all_allowed then
  for i = 1, #KEYS do
    local ttl_ms = math.ceil(fresh[i][3] / 1000000)
    if ttl_ms < 1 then ttl_ms = 1 end
    redis.call('SET', KEYS[i], string.format('%d:%d', fresh[i][1], fresh[i][2]), 'PX', ttl_ms)
  end
else
  -- Nothing is stored; allowed answers of a refused group must not claim a new TAT.
  for i = 1, #KEYS do
    if out[i][1] == 1 then out[i][5], out[i][6] = 0, 0 end
  end
end
return out
",
    )
});

impl RedisLimiter {
    #[must_use]
    pub fn new(client: RedisClient) -> RedisLimiter {
        RedisLimiter {
            client,
            key_prefix: std::sync::Arc::from(""),
        }
    }

    /// A limiter whose keys start with `prefix:` (the state store's key prefix).
    #[must_use]
    pub fn with_prefix(client: RedisClient, prefix: &str) -> RedisLimiter {
        RedisLimiter {
            client,
            key_prefix: std::sync::Arc::from(format!("{prefix}:")),
        }
    }

    /// Decides every charge at the server's time, storing the new arrival times only
    /// when all are allowed. The decisions are in the order of `charges`; an allowed one's
    /// `new_tat` is the stored arrival time in Unix nanoseconds (`None` when another
    /// charge refused, so nothing was stored).
    ///
    /// # Errors
    /// Redis did not answer in time (or the breaker is open), the keys do not share a
    /// hash tag, or a limit is too long for exact arithmetic.
    pub async fn charge(
        &self,
        charges: &[ClusterCharge<'_>],
    ) -> Result<Vec<Decision>, RedisUnavailable> {
        self.decide(charges, None).await
    }

    /// [`RedisLimiter::charge`] at an explicit time (Unix nanoseconds) instead of the
    /// server's: for tests that need determinism.
    ///
    /// # Errors
    /// As [`RedisLimiter::charge`].
    pub async fn charge_at(
        &self,
        charges: &[ClusterCharge<'_>],
        now_nanos: u64,
    ) -> Result<Vec<Decision>, RedisUnavailable> {
        self.decide(charges, Some(now_nanos)).await
    }

    async fn decide(
        &self,
        charges: &[ClusterCharge<'_>],
        now: Option<u64>,
    ) -> Result<Vec<Decision>, RedisUnavailable> {
        if charges.is_empty() {
            return Ok(Vec::new());
        }
        self.check(charges)?;
        let keys = charges.iter().map(|c| c.key.to_owned()).collect();
        let mut args = match now {
            Some(now) => vec![
                (now / NANOS_PER_SECOND).to_string().into_bytes(),
                (now % NANOS_PER_SECOND).to_string().into_bytes(),
            ],
            None => vec![Vec::new(), Vec::new()],
        };
        for charge in charges {
            args.push(charge.limit.interval().to_string().into_bytes());
            args.push(charge.limit.burst().to_string().into_bytes());
            args.push(charge.cost.to_string().into_bytes());
        }
        let replies: Vec<(u8, u64, u64, i64, u64, u64)> =
            self.client.run_script(&DECIDE, keys, args).await?;
        Ok(replies
            .into_iter()
            .map(
                |(allowed, remaining, reset_after, retry_after, tat_s, tat_n)| {
                    let allowed = allowed == 1;
                    Decision {
                        allowed,
                        remaining,
                        reset_after: Duration::from_nanos(reset_after),
                        retry_after: u64::try_from(retry_after).ok().map(Duration::from_nanos),
                        new_tat: (allowed && tat_s > 0)
                            .then(|| tat_s.saturating_mul(NANOS_PER_SECOND).saturating_add(tat_n)),
                    }
                },
            )
            .collect())
    }

    /// Refuses what the script could not do right: keys in different slots, a limit
    /// past exact arithmetic, a cost that would overflow it.
    fn check(&self, charges: &[ClusterCharge<'_>]) -> Result<(), RedisUnavailable> {
        let refuse = |message: String| RedisUnavailable::Failed {
            target: self.client.target().to_owned(),
            message,
        };
        let tag = hash_tag(charges[0].key);
        if let Some(other) = charges.iter().find(|c| hash_tag(c.key) != tag) {
            return Err(refuse(format!(
                "the keys of one decision must share a hash tag: {} and {}",
                charges[0].key, other.key
            )));
        }
        for charge in charges {
            let tolerance = charge.limit.interval().saturating_mul(charge.limit.burst());
            let increment = charge.limit.interval().saturating_mul(charge.cost);
            if tolerance >= MAX_TOLERANCE_NANOS || increment >= MAX_TOLERANCE_NANOS {
                return Err(refuse(format!(
                    "limit of {} is too long for cluster scope (interval × burst or × cost \
                     past about 52 days)",
                    charge.key
                )));
            }
        }
        Ok(())
    }
}

/// The part of a key Redis Cluster hashes: the text between the first `{` and the next
/// `}` when it is not empty, else the whole key.
fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.find('}')
                .filter(|close| *close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key)
}

impl SharedLimiter for RedisLimiter {
    fn charge(&self, charges: Vec<SharedCharge>) -> SharedDecision {
        let limiter = self.clone();
        Box::pin(async move {
            let keys: Vec<String> = charges
                .iter()
                .map(|c| format!("{}{}", limiter.key_prefix, c.key))
                .collect();
            let borrowed: Vec<ClusterCharge<'_>> = charges
                .iter()
                .zip(&keys)
                .map(|(c, key)| ClusterCharge {
                    key,
                    limit: c.limit,
                    cost: c.cost,
                })
                .collect();
            limiter
                .decide(&borrowed, None)
                .await
                .map_err(|_| SharedUnavailable)
        })
    }
}

/// What `check` and `eval` use for a cluster-scope limit instead of Redis, as they use a
/// memory store instead of the real one: the same decisions (all or nothing, `gcra::decide`)
/// over arrival times held in this process, on this process's clock.
#[derive(Debug, Default)]
pub struct StandInLimiter {
    arrivals: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    started: std::sync::OnceLock<std::time::Instant>,
}

impl SharedLimiter for StandInLimiter {
    fn charge(&self, charges: Vec<SharedCharge>) -> SharedDecision {
        let started = *self.started.get_or_init(std::time::Instant::now);
        let now = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut arrivals = self
            .arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut decisions: Vec<Decision> = charges
            .iter()
            .map(|c| {
                portcullis_assertions::gcra::decide(
                    c.limit,
                    arrivals.get(&c.key).copied(),
                    now,
                    c.cost,
                )
            })
            .collect();
        if decisions.iter().all(|d| d.allowed) {
            for (charge, decision) in charges.iter().zip(&decisions) {
                if let Some(tat) = decision.new_tat {
                    arrivals.insert(charge.key.clone(), tat);
                }
            }
        } else {
            for decision in &mut decisions {
                decision.new_tat = None;
            }
        }
        Box::pin(std::future::ready(Ok(decisions)))
    }
}

#[cfg(test)]
mod tests;
