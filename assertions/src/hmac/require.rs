//! The `require_hmac` step's run: the scheme finds and checks the claimed signature
//! (`verify_sigv4.rs`, `verify_sigv2.rs`, `custom.rs`), then what every scheme shares
//! (`step.rs`): the time window, replay protection, and the client's variables.
//!
//! With replay markers in the shared store the check is split around the round trip: the
//! signature is verified first (in [`Assertion::awaits`], so a forged request never writes
//! to the store), the marker is recorded while the pipeline waits, and `on_request` reads
//! the store's answer.

use std::sync::Arc;

use super::clock::check_request_time;
use super::keys::HmacKey;
use super::step::{
    check_replay_locally, replayed, store_unavailable, Claim, Replay, RequireHmac, Scheme,
};
use super::{verify_sigv2, verify_sigv4};
use crate::exchange::Exchange;
use crate::rate_limit::SharedUnavailable;
use crate::verdict::{Rejection, Verdict};
use crate::{Assertion, AwaitedWork, Needs, Request};

/// A signature that verified and is inside its time window.
struct Verified {
    claim: Claim,
    key: Arc<HmacKey>,
    now: u64,
    /// Until when the signature could pass the time check again: how long its marker lives.
    until: u64,
}

/// What the awaited round trip hands back to `on_request`.
struct SharedAnswer {
    verified: Result<Verified, Rejection>,
    /// The store's answer for the marker (`None` when verification already failed).
    first_use: Option<Result<bool, SharedUnavailable>>,
}

impl RequireHmac {
    /// Finds the scheme's signature, checks it and the request's time.
    fn verify(&self, req: &Request<'_>, x: &mut Exchange) -> Result<Verified, Rejection> {
        let body = req.body.unwrap_or_default();
        let outcome = match &self.scheme {
            Scheme::SigV4 { .. } => verify_sigv4::check(self, req, body, x),
            Scheme::SigV2 { .. } => verify_sigv2::check(self, req, body, x),
            Scheme::Custom(custom) => custom.check(self, req, body, x),
        };
        let (claim, key) = match outcome {
            Ok(Some(found)) => found,
            Ok(None) => return Err(self.missing()),
            Err(refusal) => return Err(refusal),
        };
        let now = self.clock.now();
        let until = check_request_time(claim.time, claim.expires, now, self.max_skew)?;
        Ok(Verified {
            claim,
            key,
            now,
            until,
        })
    }

    /// The store's answer about a verified signature's marker.
    fn conclude_shared(&self, answer: SharedAnswer) -> Result<Verified, Rejection> {
        let verified = answer.verified?;
        match answer.first_use {
            Some(Ok(true)) => Ok(verified),
            Some(Ok(false)) => Err(replayed()),
            Some(Err(SharedUnavailable)) | None => {
                let fallback = match &self.replay {
                    Replay::Shared(shared) => shared.fallback.as_ref(),
                    _ => None,
                };
                let Some(cache) = fallback else {
                    return Err(store_unavailable());
                };
                check_replay_locally(cache, &verified.claim, verified.now, verified.until)?;
                Ok(verified)
            }
        }
    }

    /// Sets the client's variables for the steps after this one.
    fn admit(&self, verified: &Verified, x: &mut Exchange) {
        let key = &verified.key;
        x.set(self.client_id, key.client.clone());
        x.set(self.key_id_var, key.access_key.clone());
        for (var, value) in &key.attributes {
            x.set(*var, value.clone());
        }
        x.note(|| {
            format!(
                "key {} of client \"{}\"",
                verified.claim.access_key, key.client
            )
        });
    }
}

impl Assertion for RequireHmac {
    fn kind(&self) -> &'static str {
        "require_hmac"
    }

    /// The signature's header and, for the AWS schemes, the query parameters of a
    /// presigned URL (its signature and credential) and the session token.
    fn credential_places(&self) -> Option<crate::CredentialPlaces> {
        let places = crate::CredentialPlaces::of(self.kind());
        Some(match &self.scheme {
            Scheme::SigV4 { .. } => places
                .header(http::header::AUTHORIZATION)
                .header(http::HeaderName::from_static("x-amz-security-token"))
                .query_params(super::sigv4::PRESIGNED_PARAMS)
                .query_params(["X-Amz-Security-Token"]),
            Scheme::SigV2 { .. } => places
                .header(http::header::AUTHORIZATION)
                .header(http::HeaderName::from_static("x-amz-security-token"))
                .query_params([
                    "AWSAccessKeyId",
                    "Signature",
                    "Expires",
                    "x-amz-security-token",
                ]),
            Scheme::Custom(custom) => places.header(custom.header.clone()),
        })
    }

    fn phases(&self) -> crate::Phases {
        crate::Phases {
            awaits_io: matches!(self.replay, Replay::Shared(_)),
            ..crate::Phases::REQUEST
        }
    }

    fn needs(&self) -> Needs {
        Needs::BODY
    }

    fn awaits(&self, req: &Request<'_>, x: &mut Exchange) -> Option<AwaitedWork> {
        let Replay::Shared(shared) = &self.replay else {
            return None;
        };
        let verified = self.verify(req, x);
        let marker = verified.as_ref().ok().map(|verified| {
            shared.markers.use_once(
                shared.marker(&verified.claim.signature),
                verified.until,
                verified.now,
            )
        });
        Some(Box::pin(async move {
            let first_use = match marker {
                Some(marker) => Some(marker.await),
                None => None,
            };
            Box::new(SharedAnswer {
                verified,
                first_use,
            }) as crate::Awaited
        }))
    }

    fn on_request(&self, req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        let verified = match (&self.replay, x.take_awaited::<SharedAnswer>()) {
            (_, Some(answer)) => self.conclude_shared(answer),
            // Shared markers but no round trip made: nothing says the signature is fresh.
            (Replay::Shared(_), None) => Err(store_unavailable()),
            (Replay::Local(cache), None) => self.verify(req, x).and_then(|verified| {
                check_replay_locally(cache, &verified.claim, verified.now, verified.until)
                    .map(|()| verified)
            }),
            (Replay::Off, None) => self.verify(req, x),
        };
        match verified {
            Ok(verified) => {
                self.admit(&verified, x);
                Verdict::Continue
            }
            Err(refusal) => Verdict::Reject(refusal),
        }
    }
}
