//! `require_saml`: the request carries a signed SAML 2.0 assertion in a header
//! (`Authorization: SAML <base64(deflate(xml))>` by default); it must verify against the
//! trusted certificates, come from a trusted issuer, be addressed to this audience and be
//! valid now. Its subject, issuer, session index and chosen attributes become variables.
//!
//! A verified assertion is cached under the SHA-256 of the token until its `NotOnOrAfter`,
//! so a client re-sending the same token pays a hash and the time checks, not an RSA
//! verification. With one-time use, the assertion's ID is recorded in the state store every
//! gateway shares (one round trip, after the signature verified), so it is accepted once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use super::{Expectations, SamlError, VerifiedAssertion, Verifier};
use crate::exchange::{Exchange, VarId};
use crate::hmac::Clock;
use crate::once::SharedOnce;
use crate::rate_limit::SharedUnavailable;
use crate::verdict::{Rejection, Verdict};
use crate::{Assertion, AwaitedWork, Phases, Request, RequestView};

/// When an assertion may be used only once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneTime {
    /// Never checked: a bearer assertion may be re-sent until it expires.
    Off,
    /// When the assertion carries `<OneTimeUse/>`.
    WhenMarked,
    /// Every assertion: its ID is accepted once.
    Always,
}

/// The variables a verified assertion sets.
#[derive(Debug, Clone)]
pub struct SamlOutputs {
    pub subject: VarId,
    pub issuer: VarId,
    pub session_index: VarId,
    /// `${client.id}`: the subject, so later steps (rate limits, quotas) key on it.
    pub client_id: VarId,
    /// `${saml.attr.NAME}` for each exposed attribute (values joined with `,`).
    pub attributes: Vec<(String, VarId)>,
}

/// The compiled `require_saml` step.
#[derive(Debug)]
pub struct RequireSaml {
    /// The header carrying the token (`Authorization`).
    pub header: HeaderName,
    /// The scheme word before the token (`SAML`), compared without regard to case.
    pub scheme: String,
    pub verifier: Verifier,
    pub issuers: Vec<String>,
    /// Our entity ID: every `AudienceRestriction` must name it.
    pub audience: String,
    /// When set, the bearer confirmation's `Recipient` must be this.
    pub recipient: Option<String>,
    pub skew: Duration,
    pub one_time: OneTime,
    /// Where one-time markers go (required unless `one_time` is `Off`).
    pub markers: Option<Arc<dyn SharedOnce>>,
    /// Attributes that must hold one of the listed values (e.g. `groups: [payments]`).
    pub required_attributes: Vec<(String, Vec<String>)>,
    pub outputs: SamlOutputs,
    pub cache: VerifiedCache,
    pub clock: Arc<dyn Clock>,
}

/// What the one-time marker's round trip hands back to `on_request`.
struct MarkerAnswer {
    verified: Result<Arc<VerifiedAssertion>, Rejection>,
    first_use: Option<Result<bool, SharedUnavailable>>,
}

impl RequireSaml {
    fn refuse(
        &self,
        code: &'static str,
        detail: impl Into<std::borrow::Cow<'static, str>>,
    ) -> Rejection {
        let challenge = HeaderValue::from_str(&self.scheme)
            .unwrap_or_else(|_| HeaderValue::from_static("SAML"));
        Rejection::new(StatusCode::UNAUTHORIZED, code, detail)
            .with_header(http::header::WWW_AUTHENTICATE, challenge)
    }

    /// The token after the scheme word.
    fn credentials<'a>(&self, req: &'a dyn RequestView) -> Result<&'a str, Rejection> {
        let mut values = req.headers().get_all(&self.header).iter();
        let Some(value) = values.next() else {
            return Err(self.refuse(
                "saml-missing",
                format!(
                    "send the assertion as `{}: {} <token>`",
                    self.header, self.scheme
                ),
            ));
        };
        if values.next().is_some() {
            return Err(self.refuse(
                "saml-token-malformed",
                format!("the request carries more than one {} header", self.header),
            ));
        }
        let text = value.to_str().unwrap_or_default();
        let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case(&self.scheme) {
            return Err(self.refuse(
                "saml-missing",
                format!(
                    "the {} header does not use the {} scheme",
                    self.header, self.scheme
                ),
            ));
        }
        Ok(token.trim())
    }

    /// Verifies the token (from the cache when it was verified before) and validates it
    /// for this request's time.
    fn verify(&self, req: &dyn RequestView) -> Result<Arc<VerifiedAssertion>, Rejection> {
        let token = self.credentials(req)?;
        let now = self.clock.now();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let assertion = match self.cache.get(&digest, now) {
            Some(hit) => hit,
            None => {
                let verified = self
                    .verifier
                    .verify_token(token)
                    .map_err(|error| self.refuse(error.code(), error.to_string()))?;
                let verified = Arc::new(verified);
                if let Some(until) = verified.not_on_or_after() {
                    let until = u64::try_from(until.as_second()).unwrap_or(0);
                    self.cache
                        .put(digest, verified.clone(), until + self.skew.as_secs(), now);
                }
                verified
            }
        };
        let expectations = Expectations {
            issuers: &self.issuers,
            audience: &self.audience,
            recipient: self.recipient.as_deref(),
            now: jiff::Timestamp::from_second(i64::try_from(now).unwrap_or(i64::MAX))
                .unwrap_or(jiff::Timestamp::MAX),
            skew: self.skew,
            require_audience: true,
        };
        assertion.validate(&expectations).map_err(|error| {
            let error = SamlError::from(error);
            self.refuse(error.code(), error.to_string())
        })?;
        for (name, accepted) in &self.required_attributes {
            let held = assertion.attribute(name).unwrap_or_default();
            if !held.iter().any(|value| accepted.contains(value)) {
                return Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "saml-attribute-required",
                    format!("the assertion's \"{name}\" attribute has none of the values this service requires"),
                ));
            }
        }
        Ok(assertion)
    }

    fn needs_marker(&self, assertion: &VerifiedAssertion) -> bool {
        match self.one_time {
            OneTime::Off => false,
            OneTime::WhenMarked => assertion.one_time_use(),
            OneTime::Always => true,
        }
    }

    fn conclude(&self, answer: MarkerAnswer) -> Result<Arc<VerifiedAssertion>, Rejection> {
        let assertion = answer.verified?;
        match answer.first_use {
            None | Some(Ok(true)) => Ok(assertion),
            Some(Ok(false)) => Err(self.refuse(
                "saml-replayed",
                "this assertion may be used once and has been used before",
            )),
            Some(Err(SharedUnavailable)) => Err(Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "state-store-unavailable",
                "the gateway cannot check whether this assertion was used before; retry shortly",
            )
            .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"))),
        }
    }

    fn admit(&self, assertion: &VerifiedAssertion, x: &mut Exchange) {
        let outputs = &self.outputs;
        let subject: Arc<str> = Arc::from(assertion.subject.name_id.as_str());
        x.set(outputs.subject, subject.clone());
        x.set(outputs.client_id, subject);
        x.set(outputs.issuer, Arc::from(assertion.issuer.as_str()));
        if let Some(index) = &assertion.session_index {
            x.set(outputs.session_index, Arc::from(index.as_str()));
        }
        for (name, var) in &outputs.attributes {
            if let Some(values) = assertion.attribute(name) {
                x.set(*var, Arc::from(values.join(",").as_str()));
            }
        }
        x.note(|| {
            format!(
                "assertion {} from {} for \"{}\"",
                assertion.id, assertion.issuer, assertion.subject.name_id
            )
        });
    }
}

impl Assertion for RequireSaml {
    fn kind(&self) -> &'static str {
        "require_saml"
    }

    /// The header that carries the assertion.
    fn credential_places(&self) -> Option<crate::CredentialPlaces> {
        Some(crate::CredentialPlaces::of(self.kind()).header(self.header.clone()))
    }

    fn phases(&self) -> Phases {
        Phases {
            awaits_io: self.one_time != OneTime::Off,
            ..Phases::REQUEST
        }
    }

    fn awaits(&self, req: &Request<'_>, _x: &mut Exchange) -> Option<AwaitedWork> {
        let markers = self
            .markers
            .as_ref()
            .filter(|_| self.one_time != OneTime::Off)?;
        let verified = self.verify(&*req.head);
        let marker = match &verified {
            Ok(assertion) if self.needs_marker(assertion) => {
                let until = assertion
                    .not_on_or_after()
                    .and_then(|t| u64::try_from(t.as_second()).ok())
                    .unwrap_or(0)
                    + self.skew.as_secs();
                Some(markers.use_once(
                    format!("saml:{}:{}", assertion.issuer, assertion.id),
                    until,
                    self.clock.now(),
                ))
            }
            _ => None,
        };
        Some(Box::pin(async move {
            let first_use = match marker {
                Some(marker) => Some(marker.await),
                None => None,
            };
            Box::new(MarkerAnswer {
                verified,
                first_use,
            }) as crate::Awaited
        }))
    }

    fn on_request(&self, req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        let verified = match x.take_awaited::<MarkerAnswer>() {
            Some(answer) => self.conclude(answer),
            None if self.one_time != OneTime::Off => Err(Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "state-store-unavailable",
                "the gateway cannot check whether this assertion was used before",
            )),
            None => self.verify(&*req.head),
        };
        match verified {
            Ok(assertion) => {
                self.admit(&assertion, x);
                Verdict::Continue
            }
            Err(refusal) => Verdict::Reject(refusal),
        }
    }
}

const SHARDS: usize = 16;

/// One shard of the cache: token digest → (until when, the verified assertion).
type CacheShard = HashMap<[u8; 32], (u64, Arc<VerifiedAssertion>)>;

/// Verified assertions by token digest, each until its `NotOnOrAfter` (plus skew). Bounded:
/// a full shard drops its expired entries, then everything (the cheapest fair eviction).
#[derive(Debug)]
pub struct VerifiedCache {
    shards: Vec<Mutex<CacheShard>>,
    per_shard: usize,
}

impl VerifiedCache {
    /// A cache of at most `capacity` assertions (0: nothing is cached).
    #[must_use]
    pub fn new(capacity: usize) -> VerifiedCache {
        VerifiedCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    fn shard(&self, digest: &[u8; 32]) -> std::sync::MutexGuard<'_, CacheShard> {
        self.shards[usize::from(digest[0]) % SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, digest: &[u8; 32], now: u64) -> Option<Arc<VerifiedAssertion>> {
        let shard = self.shard(digest);
        shard
            .get(digest)
            .filter(|(until, _)| now < *until)
            .map(|(_, assertion)| assertion.clone())
    }

    fn put(&self, digest: [u8; 32], assertion: Arc<VerifiedAssertion>, until: u64, now: u64) {
        if self.per_shard == 0 || until <= now {
            return;
        }
        let mut shard = self.shard(&digest);
        if shard.len() >= self.per_shard {
            shard.retain(|_, (expiry, _)| now < *expiry);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(digest, (until, assertion));
    }

    /// Assertions held, for tests and metrics.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |shard| shard.len()))
            .sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
