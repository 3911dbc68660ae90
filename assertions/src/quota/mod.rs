//! `quota`: calls per hour, day, week or month per key, counted in the state store so a
//! restart (or another gateway on the same store) does not reset them. Over the quota:
//! `429 quota-exhausted` with `Retry-After` until the window ends and the RateLimit fields.
//!
//! The count is one store round trip at the step's place in the pipeline
//! ([`crate::Assertion::awaits`]): after the steps before it passed (a request they refuse
//! consumes nothing), and an atomic check-and-add there (a request over the quota consumes
//! nothing either).

pub mod period;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::exchange::Exchange;
use crate::gcra::Decision;
use crate::head::RequestView;
use crate::hmac::Clock;
use crate::rate_limit::headers;
use crate::rate_limit::MissingKey;
use crate::template::Template;
use crate::verdict::{Rejection, Verdict};
use crate::{Assertion, AwaitedWork, Phases, Request};

pub use period::{Period, Reset};

/// What the store answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaCharge {
    pub allowed: bool,
    /// Calls counted in the window (after this one, when allowed).
    pub used: u64,
    /// Unix seconds when the window ends.
    pub resets_at: i64,
}

/// The store did not answer (or failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUnavailable;

/// A charge in flight.
pub type QuotaDecision =
    Pin<Box<dyn Future<Output = Result<QuotaCharge, QuotaUnavailable>> + Send + 'static>>;

/// The counters behind quotas (the gateway's state store).
pub trait QuotaCounter: Send + Sync + fmt::Debug {
    /// Adds `cost` to `key` unless that passes `limit`; a window that ended starts afresh,
    /// ending at `window_end`.
    fn charge(
        &self,
        key: String,
        cost: u64,
        limit: u64,
        window_end: i64,
        now: i64,
    ) -> QuotaDecision;
}

/// Characters escaped in the parts of a store key: `/` separates them, `%` escapes.
const KEY_PART: &AsciiSet = &CONTROLS.add(b'/').add(b'%').add(b' ');

/// The store key of a quota: `quota/KEY/SERVICE/NAME`, each part escaped, so the admin API
/// can list one client's quotas by the prefix [`key_prefix`].
#[must_use]
pub fn store_key(key: &str, service: &str, name: &str) -> String {
    format!(
        "{}{}/{}",
        key_prefix(key),
        utf8_percent_encode(service, KEY_PART),
        utf8_percent_encode(name, KEY_PART)
    )
}

/// The prefix of every quota counted for `key`.
#[must_use]
pub fn key_prefix(key: &str) -> String {
    format!("quota/{}/", utf8_percent_encode(key, KEY_PART))
}

/// The service and quota name of a store key listed under [`key_prefix`]`(key)`.
#[must_use]
pub fn split_store_key(store_key: &str, key: &str) -> Option<(String, String)> {
    let rest = store_key.strip_prefix(&key_prefix(key))?;
    let (service, name) = rest.split_once('/')?;
    let decode = |part: &str| {
        percent_decode_str(part)
            .decode_utf8()
            .ok()
            .map(|text| text.into_owned())
    };
    Some((decode(service)?, decode(name)?))
}

/// Everything a `quota` step is made of.
pub struct QuotaParts {
    pub name: Arc<str>,
    pub service: Arc<str>,
    pub limit: u64,
    pub period: Period,
    pub reset: Reset,
    pub key: Template,
    pub key_text: Arc<str>,
    pub missing: MissingKey,
    pub cost: u64,
    pub headers_on_allowed: bool,
    /// When the store fails: let the call through (`true`) or `503 quota-unavailable`.
    pub fail_open: bool,
    pub counter: Arc<dyn QuotaCounter>,
    pub clock: Arc<dyn Clock>,
}

/// The compiled `quota` step.
pub struct Quota {
    parts: QuotaParts,
    policy_header: Option<HeaderValue>,
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("name", &self.parts.name)
            .field("limit", &self.parts.limit)
            .field("period", &self.parts.period)
            .finish_non_exhaustive()
    }
}

/// What the round trip brought back.
enum QuotaAnswer {
    Charged(QuotaCharge),
    Unavailable,
}

impl Quota {
    /// # Errors
    /// A name that cannot be a RateLimit policy name, or a zero limit.
    pub fn new(parts: QuotaParts) -> Result<Quota, String> {
        if !headers::valid_policy_name(&parts.name) {
            return Err(format!(
                "\"{}\" is not a quota name: use letters, digits, '-', '_' or '.'",
                parts.name
            ));
        }
        if parts.limit == 0 {
            return Err("a quota of 0 calls refuses everything: use at least 1".to_owned());
        }
        let item = headers::policy_item(
            &parts.name,
            parts.limit,
            parts.period.nominal(),
            parts.limit,
        );
        Ok(Quota {
            policy_header: headers::policy_field(&[item]),
            parts,
        })
    }

    /// The quota's name, limit and service (for the admin API).
    #[must_use]
    pub fn describe(&self) -> (&str, u64, &str) {
        (&self.parts.name, self.parts.limit, &self.parts.service)
    }

    /// The rendered key, or the refusal for an unset one.
    fn key(&self, req: &dyn RequestView, x: &Exchange) -> Result<String, Rejection> {
        let mut key = String::new();
        if self.parts.key.render_into(req, x, &mut key) {
            return Ok(key);
        }
        match &self.parts.missing {
            MissingKey::Default(default) => Ok(format!("\0default\0{default}")),
            MissingKey::Refuse => Err(Rejection::new(
                StatusCode::FORBIDDEN,
                "quota-key-missing",
                format!(
                    "this service counts calls by {}, which this request does not set",
                    self.parts.key_text
                ),
            )),
        }
    }

    fn fields(&self, charge: &QuotaCharge, now: i64) -> [(HeaderName, Option<HeaderValue>); 2] {
        let left = self.parts.limit.saturating_sub(charge.used);
        let until_reset = u64::try_from(charge.resets_at.saturating_sub(now)).unwrap_or(0);
        let decision = Decision {
            allowed: charge.allowed,
            remaining: left,
            reset_after: Duration::from_secs(until_reset),
            retry_after: None,
            new_tat: None,
        };
        let mut buffer = String::new();
        [
            (
                HeaderName::from_static(headers::RATELIMIT_POLICY),
                self.policy_header.clone(),
            ),
            (
                HeaderName::from_static(headers::RATELIMIT),
                headers::limit_field(std::iter::once((&*self.parts.name, &decision)), &mut buffer),
            ),
        ]
    }

    fn decide(&self, answer: QuotaAnswer, x: &mut Exchange) -> Verdict {
        let now = i64::try_from(self.parts.clock.now()).unwrap_or(i64::MAX);
        let charge = match answer {
            QuotaAnswer::Charged(charge) => charge,
            QuotaAnswer::Unavailable if self.parts.fail_open => {
                x.note(|| "the state store did not answer: let through (fail_open)".to_owned());
                return Verdict::Continue;
            }
            QuotaAnswer::Unavailable => {
                return Verdict::Reject(
                    Rejection::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "quota-unavailable",
                        "the quota could not be counted (the state store did not answer)",
                    )
                    .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1")),
                )
            }
        };
        x.note(|| {
            format!(
                "{} of {} calls used in this {:?} window",
                charge.used, self.parts.limit, self.parts.period
            )
        });
        if charge.allowed {
            if self.parts.headers_on_allowed {
                for (name, value) in self.fields(&charge, now) {
                    if let Some(value) = value {
                        x.add_response_header(name, value);
                    }
                }
            }
            return Verdict::Continue;
        }
        let wait = charge.resets_at.saturating_sub(now).max(1);
        let mut rejection = Rejection::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota-exhausted",
            format!(
                "quota \"{}\" of {} calls per {} is used up; it resets in {wait} s",
                self.parts.name,
                self.parts.limit,
                period_word(self.parts.period)
            ),
        )
        .with_header(http::header::RETRY_AFTER, HeaderValue::from(wait));
        for (name, value) in self.fields(&charge, now) {
            if let Some(value) = value {
                rejection = rejection.with_header(name, value);
            }
        }
        Verdict::Reject(rejection)
    }
}

fn period_word(period: Period) -> &'static str {
    match period {
        Period::Hour => "hour",
        Period::Day => "day",
        Period::Week => "week",
        Period::Month => "month",
    }
}

impl Assertion for Quota {
    fn kind(&self) -> &'static str {
        "quota"
    }

    fn phases(&self) -> Phases {
        Phases {
            awaits_io: true,
            charges: true,
            ..Phases::REQUEST
        }
    }

    fn awaits(&self, req: &Request<'_>, x: &mut Exchange) -> Option<AwaitedWork> {
        // An unset key is refused by on_request, without a round trip.
        let key = self.key(&*req.head, x).ok()?;
        let now = i64::try_from(self.parts.clock.now()).unwrap_or(i64::MAX);
        let window_end = period::window_end(self.parts.period, &self.parts.reset, now);
        let charge = self.parts.counter.charge(
            store_key(&key, &self.parts.service, &self.parts.name),
            self.parts.cost,
            self.parts.limit,
            window_end,
            now,
        );
        Some(Box::pin(async move {
            let answer = match charge.await {
                Ok(charge) => QuotaAnswer::Charged(charge),
                Err(QuotaUnavailable) => QuotaAnswer::Unavailable,
            };
            Box::new(answer) as crate::Awaited
        }))
    }

    fn on_request(&self, req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        match x.take_awaited::<QuotaAnswer>() {
            Some(answer) => self.decide(answer, x),
            None => match self.key(&*req.head, x) {
                Err(rejection) => Verdict::Reject(rejection),
                // No round trip although the key is set: fail as the store failing does.
                Ok(_) => self.decide(QuotaAnswer::Unavailable, x),
            },
        }
    }
}

#[cfg(test)]
mod tests;
