//! `rate_limit`: requests per key, as GCRA buckets ([`crate::gcra`]), counted in this process
//! ([`LocalLimiter`]) or across the fleet in a shared store ([`SharedLimiter`]).
//!
//! A step holds a few named limits (`per-second`, `per-hour`), each with a key template
//! (`${client.id}`); a request is counted against all of them or none: a refusal by any
//! limit, or by a step before this one, consumes nothing. A refused request gets `429` with
//! `Retry-After` and the IETF RateLimit fields; allowed ones may carry them too.
//!
//! The local path allocates nothing: keys are rendered into a per-thread buffer and kept
//! only as seeded hashes.

pub mod headers;
pub mod shared;

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, StatusCode};

use crate::exchange::Exchange;
use crate::gcra::{Decision, Limit};
use crate::head::RequestView;
use crate::local_limiter::{Charge, LocalLimiter, Outcome, MAX_CHARGES};
use crate::template::Template;
use crate::verdict::{Rejection, Verdict};
use crate::{Assertion, AwaitedWork, Needs, Phases, Request};

pub use shared::{RateLimitCounters, SharedCharge, SharedLimiter, SharedUnavailable};

/// One named limit of a step.
#[derive(Debug, Clone)]
pub struct LimitRule {
    /// The policy name (`per-second`), checked with [`headers::valid_policy_name`].
    pub name: Arc<str>,
    pub limit: Limit,
    /// As written: `count` per `period`, for `RateLimit-Policy`.
    pub count: u64,
    pub period: Duration,
    pub key: Template,
    /// The key template as written, for the refusal that says which variable was unset.
    pub key_text: Arc<str>,
}

/// What one request costs.
#[derive(Debug, Clone)]
pub enum Cost {
    Fixed(u64),
    /// The length of the request body, at least 1 (the step then needs the body buffered, so
    /// a chunked upload cannot hide its size).
    BodyBytes,
    /// A number from a variable; unset or empty costs 1, anything but digits is refused.
    Template(Template),
}

/// A request whose key variable is unset.
#[derive(Debug, Clone)]
pub enum MissingKey {
    /// `403 rate-limit-key-missing`.
    Refuse,
    /// Counted in this shared bucket instead (e.g. `anonymous`).
    Default(Arc<str>),
}

/// Where the buckets live.
#[derive(Debug, Clone)]
pub enum Scope {
    /// In this process.
    Local,
    /// In the shared store, with what to do when it cannot answer in time.
    Cluster {
        store: Arc<dyn SharedLimiter>,
        on_failure: StoreFailure,
    },
}

/// What a cluster-scope step does when its store cannot decide in time.
#[derive(Debug, Clone)]
pub enum StoreFailure {
    /// `503 rate-limit-unavailable`: nothing passes uncounted.
    FailClosed,
    /// Decide in this process with these limits (a share of each rule's rate, in order).
    FailOpen { fallback: Vec<Limit> },
}

/// The compiled `rate_limit` step.
pub struct RateLimit {
    /// Distinguishes this step's buckets from every other step's (`service/request[2]`).
    bucket_prefix: Arc<str>,
    rules: Vec<LimitRule>,
    cost: Cost,
    missing: MissingKey,
    /// Send `RateLimit` and `RateLimit-Policy` on allowed responses too.
    headers_on_allowed: bool,
    policy_header: Option<HeaderValue>,
    local: Arc<LocalLimiter>,
    scope: Scope,
    clock: Arc<dyn MonotonicClock>,
    counters: Arc<RateLimitCounters>,
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("bucket_prefix", &self.bucket_prefix)
            .field("rules", &self.rules.len())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Why a step cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRateLimit(pub String);

/// Everything a `rate_limit` step is made of (the compiler fills it from the policy).
pub struct RateLimitParts {
    pub bucket_prefix: Arc<str>,
    pub rules: Vec<LimitRule>,
    pub cost: Cost,
    pub missing: MissingKey,
    pub headers_on_allowed: bool,
    /// Shared across reloads, so a reload does not hand every client a fresh bucket.
    pub local: Arc<LocalLimiter>,
    pub scope: Scope,
    pub clock: Arc<dyn MonotonicClock>,
    pub counters: Arc<RateLimitCounters>,
}

impl RateLimit {
    /// # Errors
    /// No limit, more than [`MAX_CHARGES`], a name that cannot be a RateLimit policy name,
    /// or (cluster scope) limits on different keys or a fallback list of the wrong length.
    pub fn new(parts: RateLimitParts) -> Result<RateLimit, InvalidRateLimit> {
        if parts.rules.is_empty() || parts.rules.len() > MAX_CHARGES {
            return Err(InvalidRateLimit(format!(
                "a rate_limit step holds 1 to {MAX_CHARGES} limits"
            )));
        }
        if let Some(bad) = parts
            .rules
            .iter()
            .find(|rule| !headers::valid_policy_name(&rule.name))
        {
            return Err(InvalidRateLimit(format!(
                "\"{}\" is not a limit name: use letters, digits, '-', '_' or '.'",
                bad.name
            )));
        }
        if let Scope::Cluster { on_failure, .. } = &parts.scope {
            let first = &parts.rules[0].key;
            if parts.rules.iter().any(|rule| &rule.key != first) {
                return Err(InvalidRateLimit(
                    "in cluster scope every limit of one step counts the same key (one atomic round trip); put a limit on another key in a second rate_limit step".to_owned(),
                ));
            }
            if let StoreFailure::FailOpen { fallback } = on_failure {
                if fallback.len() != parts.rules.len() {
                    return Err(InvalidRateLimit("one fallback limit per rule".to_owned()));
                }
            }
        }
        let items: Vec<String> = parts
            .rules
            .iter()
            .map(|rule| {
                headers::policy_item(&rule.name, rule.count, rule.period, rule.limit.burst())
            })
            .collect();
        Ok(RateLimit {
            bucket_prefix: parts.bucket_prefix,
            policy_header: headers::policy_field(&items),
            rules: parts.rules,
            cost: parts.cost,
            missing: parts.missing,
            headers_on_allowed: parts.headers_on_allowed,
            local: parts.local,
            scope: parts.scope,
            clock: parts.clock,
            counters: parts.counters,
        })
    }

    /// This step's counters, for `/metrics`.
    #[must_use]
    pub fn counters(&self) -> &Arc<RateLimitCounters> {
        &self.counters
    }

    /// What this request costs.
    fn cost(
        &self,
        req: &dyn RequestView,
        body: Option<&[u8]>,
        x: &Exchange,
    ) -> Result<u64, Rejection> {
        match &self.cost {
            Cost::Fixed(cost) => Ok(*cost),
            // At least 1: an empty body is still a request (else empty POSTs would be free).
            Cost::BodyBytes => Ok(body.map_or(1, |body| (body.len() as u64).max(1))),
            Cost::Template(template) => with_buffer(|buffer| {
                template.render_into(req, x, buffer);
                let text = buffer.trim();
                if text.is_empty() {
                    return Ok(1);
                }
                if !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Rejection::new(
                        StatusCode::BAD_REQUEST,
                        "invalid-rate-limit-cost",
                        "the value this service counts requests by is not a whole number",
                    ));
                }
                text.parse().map_err(|_| {
                    Rejection::new(
                        StatusCode::BAD_REQUEST,
                        "invalid-rate-limit-cost",
                        "the value this service counts requests by is too large",
                    )
                })
            }),
        }
    }

    /// Renders each rule's bucket name (`prefix\0rule\0key`) into `buffer` and hands it to
    /// `each`; an unset key takes the default or refuses.
    fn each_bucket(
        &self,
        req: &dyn RequestView,
        x: &Exchange,
        buffer: &mut String,
        mut each: impl FnMut(usize, &str),
    ) -> Result<(), Rejection> {
        for (index, rule) in self.rules.iter().enumerate() {
            buffer.clear();
            buffer.push_str(&self.bucket_prefix);
            buffer.push('\0');
            buffer.push_str(&rule.name);
            buffer.push('\0');
            let key_start = buffer.len();
            if !rule.key.render_into(req, x, buffer) {
                match &self.missing {
                    MissingKey::Default(default) => {
                        buffer.truncate(key_start);
                        buffer.push_str("\0default\0");
                        buffer.push_str(default);
                    }
                    MissingKey::Refuse => {
                        return Err(Rejection::new(
                            StatusCode::FORBIDDEN,
                            "rate-limit-key-missing",
                            format!(
                                "this service counts requests by {}, which this request does not set",
                                rule.key_text
                            ),
                        ));
                    }
                }
            }
            each(index, buffer);
        }
        Ok(())
    }

    fn decide_locally(
        &self,
        limits: &mut dyn Iterator<Item = Limit>,
        req: &dyn RequestView,
        body: Option<&[u8]>,
        x: &mut Exchange,
    ) -> Verdict {
        let cost = match self.cost(req, body, x) {
            Ok(cost) => cost,
            Err(rejection) => return Verdict::Reject(rejection),
        };
        let mut given = [Charge {
            limit: self.rules[0].limit,
            key: self.local.key(""),
            cost: 0,
        }; MAX_CHARGES];
        let mut count = 0;
        let rendered = with_buffer(|buffer| {
            self.each_bucket(req, x, buffer, |index, bucket| {
                if let (Some(slot), Some(limit)) = (given.get_mut(index), limits.next()) {
                    *slot = Charge {
                        limit,
                        key: self.local.key(bucket),
                        cost,
                    };
                    count = index + 1;
                }
            })
        });
        if let Err(rejection) = rendered {
            return Verdict::Reject(rejection);
        }
        match self.local.charge(&given[..count], self.clock.now_nanos()) {
            Outcome::Allowed(decisions) => self.allowed(decisions.as_slice(), x),
            Outcome::Refused { index, decisions } => self.refused(index, decisions.as_slice()),
            Outcome::Full => {
                RateLimitCounters::count(&self.counters.keys_full);
                Verdict::Reject(
                    Rejection::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "rate-limit-capacity",
                        "the rate limiter is tracking as many clients as it may; try again shortly",
                    )
                    .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1")),
                )
            }
        }
    }

    /// An allowed request: the RateLimit fields for the response when asked for.
    fn allowed(&self, decisions: &[Decision], x: &mut Exchange) -> Verdict {
        x.note(|| {
            let left: Vec<String> = self
                .rules
                .iter()
                .zip(decisions)
                .map(|(rule, decision)| format!("{} {} left", rule.name, decision.remaining))
                .collect();
            left.join(", ")
        });
        if self.headers_on_allowed {
            for (name, value) in self.fields(&self.rules, decisions) {
                x.add_response_header(name, value);
            }
        }
        Verdict::Continue
    }

    /// `429` naming the limit, with `Retry-After` and the RateLimit fields.
    fn refused(&self, index: usize, decisions: &[Decision]) -> Verdict {
        RateLimitCounters::count(&self.counters.refused);
        let (Some(rule), Some(decision)) = (self.rules.get(index), decisions.get(index)) else {
            return Verdict::Reject(Rejection::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many requests",
            ));
        };
        let wait =
            headers::whole_seconds(decision.retry_after.unwrap_or(decision.reset_after)).max(1);
        let mut rejection = Rejection::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("rate limit \"{}\" reached: retry in {wait} s", rule.name),
        )
        .with_header(http::header::RETRY_AFTER, HeaderValue::from(wait));
        // Only the limit that refused: the others were not charged, and what they would
        // have had left after this request is not what they have.
        let violated = std::slice::from_ref(decision);
        for (name, value) in self.fields(std::slice::from_ref(rule), violated) {
            rejection = rejection.with_header(name, value);
        }
        Verdict::Reject(rejection)
    }

    fn fields(
        &self,
        rules: &[LimitRule],
        decisions: &[Decision],
    ) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
        let policy = self
            .policy_header
            .clone()
            .map(|value| (HeaderName::from_static(headers::RATELIMIT_POLICY), value));
        let limit = with_buffer(|buffer| {
            headers::limit_field(rules.iter().map(|rule| &*rule.name).zip(decisions), buffer)
        })
        .map(|value| (HeaderName::from_static(headers::RATELIMIT), value));
        policy.into_iter().chain(limit)
    }

    /// Cluster scope, the store's answer in hand.
    fn decide_shared(
        &self,
        answer: SharedAnswer,
        req: &dyn RequestView,
        body: Option<&[u8]>,
        x: &mut Exchange,
        on_failure: &StoreFailure,
    ) -> Verdict {
        match answer {
            SharedAnswer::Decided(decisions) => match decisions.iter().position(|d| !d.allowed) {
                None => self.allowed(&decisions, x),
                Some(index) => self.refused(index, &decisions),
            },
            SharedAnswer::Unavailable => {
                RateLimitCounters::count(&self.counters.store_unavailable);
                match on_failure {
                    StoreFailure::FailClosed => Verdict::Reject(
                        Rejection::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "rate-limit-unavailable",
                            "the shared rate-limit store did not answer in time",
                        )
                        .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1")),
                    ),
                    StoreFailure::FailOpen { fallback } => {
                        RateLimitCounters::count(&self.counters.decided_locally);
                        x.note(|| {
                            "shared store unavailable: decided by the local fallback".to_owned()
                        });
                        self.decide_locally(&mut fallback.iter().copied(), req, body, x)
                    }
                }
            }
        }
    }
}

/// What a cluster-scope step's round trip brought back.
enum SharedAnswer {
    Decided(Vec<Decision>),
    Unavailable,
}

impl Assertion for RateLimit {
    fn kind(&self) -> &'static str {
        "rate_limit"
    }

    fn needs(&self) -> Needs {
        match self.cost {
            Cost::BodyBytes => Needs::BODY,
            _ => Needs::HEADERS,
        }
    }

    fn phases(&self) -> Phases {
        Phases {
            awaits_io: matches!(self.scope, Scope::Cluster { .. }),
            charges: true,
            ..Phases::REQUEST
        }
    }

    fn awaits(&self, request: &Request<'_>, x: &mut Exchange) -> Option<AwaitedWork> {
        let Scope::Cluster { store, .. } = &self.scope else {
            return None;
        };
        let req: &dyn RequestView = &*request.head;
        let cost = self.cost(req, request.body, x).ok()?;
        let mut charges = Vec::with_capacity(self.rules.len());
        let rendered = with_buffer(|buffer| {
            self.each_bucket(req, x, buffer, |index, bucket| {
                charges.push(SharedCharge {
                    key: cluster_key(bucket),
                    limit: self.rules[index].limit,
                    cost,
                });
            })
        });
        // A refusal (unset key, bad cost) is answered by on_request without a round trip.
        rendered.ok()?;
        let decision = store.charge(charges);
        Some(Box::pin(async move {
            let answer = match decision.await {
                Ok(decisions) => SharedAnswer::Decided(decisions),
                Err(SharedUnavailable) => SharedAnswer::Unavailable,
            };
            Box::new(answer) as crate::Awaited
        }))
    }

    fn on_request(&self, req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        let body = req.body;
        let view: &dyn RequestView = &*req.head;
        match &self.scope {
            Scope::Local => {
                self.decide_locally(&mut self.rules.iter().map(|rule| rule.limit), view, body, x)
            }
            Scope::Cluster { on_failure, .. } => match x.take_awaited::<SharedAnswer>() {
                Some(answer) => self.decide_shared(answer, view, body, x, on_failure),
                None => {
                    // No round trip was made: the key or the cost refused it.
                    if let Err(rejection) = self.cost(view, body, x) {
                        return Verdict::Reject(rejection);
                    }
                    let missing =
                        with_buffer(|buffer| self.each_bucket(view, x, buffer, |_, _| {}));
                    match missing {
                        Err(rejection) => Verdict::Reject(rejection),
                        Ok(()) => {
                            self.decide_shared(SharedAnswer::Unavailable, view, body, x, on_failure)
                        }
                    }
                }
            },
        }
    }
}

/// The store key of a bucket (the store adds its own key prefix): the whole bucket name inside one hash tag, so every limit of
/// a step (which counts one key) lands on one Cluster node. Hex keeps the tag free of the
/// `{`/`}` a client-supplied key could hold.
fn cluster_key(bucket: &str) -> String {
    let (scope, key) = bucket.rsplit_once('\0').unwrap_or(("", bucket));
    let (prefix, rule) = scope.split_once('\0').unwrap_or((scope, ""));
    format!("rl:{{{}}}:{rule}", hex::encode(format!("{prefix}\0{key}")))
}

thread_local! {
    static BUFFER: RefCell<String> = RefCell::new(String::with_capacity(128));
}

/// A per-thread scratch string, so rendering a key allocates nothing once warm.
fn with_buffer<T>(work: impl FnOnce(&mut String) -> T) -> T {
    BUFFER.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            work(&mut buffer)
        }
        Err(_) => work(&mut String::new()),
    })
}

/// Time for the local limiter: nanoseconds on a monotonic scale (a wall clock stepping
/// back would hand out a second burst).
pub trait MonotonicClock: Send + Sync + fmt::Debug {
    fn now_nanos(&self) -> u64;
}

/// Nanoseconds since this process first asked.
#[derive(Debug, Default)]
pub struct ProcessClock;

impl MonotonicClock for ProcessClock {
    fn now_nanos(&self) -> u64 {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let origin = ORIGIN.get_or_init(Instant::now);
        u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl MonotonicClock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
