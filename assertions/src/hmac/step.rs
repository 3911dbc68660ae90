//! What a `require_hmac` step holds (its scheme, keys, clock, caches) and the parts of the
//! decision every scheme shares once it has found a claimed signature: key lookup and
//! constant-time comparison, replay protection, the refusal for an unsigned request. The
//! step's run, which dispatches to the schemes, is in `require.rs`.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use super::clock::Clock;
use super::custom::CustomScheme;
use super::keys::{HmacKey, KeySet};
use super::replay::{ReplayCache, Seen};
use super::signing_key_cache::SigningKeyCache;
use crate::exchange::VarId;
use crate::once::SharedOnce;
use crate::verdict::Rejection;

/// The scheme-specific part of a `require_hmac` step.
#[derive(Debug)]
pub enum Scheme {
    SigV4 {
        region: String,
        service: String,
        allow_presigned: bool,
        normalize_path: bool,
    },
    SigV2 {
        allow_query: bool,
    },
    Custom(CustomScheme),
}

impl Scheme {
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Scheme::SigV4 { .. } => "aws-sigv4",
            Scheme::SigV2 { .. } => "aws-sigv2",
            Scheme::Custom(_) => "template",
        }
    }

    fn challenge(&self) -> &'static str {
        match self {
            Scheme::SigV4 { .. } => "AWS4-HMAC-SHA256",
            Scheme::SigV2 { .. } => "AWS",
            Scheme::Custom(_) => "HMAC",
        }
    }
}

/// Where a `require_hmac` step remembers the signatures it accepted.
#[derive(Debug)]
pub enum Replay {
    /// No replay protection.
    Off,
    /// In this process: a signature replayed to another gateway of a fleet passes there.
    Local(Arc<ReplayCache>),
    /// In the state store every gateway shares: a signature used on one node is refused on
    /// all. One store round trip per accepted request.
    Shared(SharedReplay),
}

/// Replay markers in the shared state store.
#[derive(Debug)]
pub struct SharedReplay {
    pub markers: Arc<dyn SharedOnce>,
    /// Keeps the markers of different key sets apart (the key set's name).
    pub namespace: String,
    /// When the store cannot answer in time: `None` refuses the request (503
    /// `state-store-unavailable`); a cache lets this process decide alone meanwhile.
    pub fallback: Option<Arc<ReplayCache>>,
}

impl SharedReplay {
    /// The marker of a signature: its SHA-256 (one length whatever the scheme), by key set.
    pub(crate) fn marker(&self, signature: &[u8]) -> String {
        format!(
            "hmac:{}:{}",
            self.namespace,
            hex::encode(Sha256::digest(signature))
        )
    }
}

/// The compiled `require_hmac` step.
#[derive(Debug)]
pub struct RequireHmac {
    pub scheme: Scheme,
    pub keys: Arc<KeySet>,
    /// Largest accepted distance between the request's time and ours.
    pub max_skew: Duration,
    /// Where accepted signatures are remembered, so each is used once.
    pub replay: Replay,
    /// SigV4 `UNSIGNED-PAYLOAD` accepted.
    pub allow_unsigned_payload: bool,
    pub clock: Arc<dyn Clock>,
    pub client_id: VarId,
    /// Where the access key id goes (`${hmac.key_id}`).
    pub key_id_var: VarId,
    /// Derived SigV4 signing keys (four HMACs each), per secret and scope date.
    pub sigv4_keys: SigningKeyCache,
}

/// A failure with an AWS-style code (the problem `type` ends with it).
pub(crate) fn fail(
    status: StatusCode,
    code: &'static str,
    detail: impl Into<std::borrow::Cow<'static, str>>,
) -> Rejection {
    Rejection::new(status, code, detail)
}

/// What a scheme found in the request, before the signature is checked.
pub(crate) struct Claim {
    pub access_key: String,
    /// The request's own time.
    pub time: u64,
    /// For presigned forms: seconds the signature stays valid after `time`.
    pub expires: Option<u64>,
    pub signature: Vec<u8>,
}

/// What a scheme's check returns: `Ok(None)` when the request carries no signature of
/// that scheme at all, else the claim and the key whose secret verified it.
pub(crate) type SchemeOutcome = Result<Option<(Claim, Arc<HmacKey>)>, Rejection>;

impl RequireHmac {
    pub(super) fn missing(&self) -> Rejection {
        let refusal = fail(
            StatusCode::UNAUTHORIZED,
            "MissingAuthenticationToken",
            format!(
                "the request is not signed: sign it with {}",
                self.scheme.name()
            ),
        );
        refusal.with_header(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(self.scheme.challenge()),
        )
    }
}

/// Refuses a signature `cache` has seen inside its window (`until`), and remembers it.
pub(super) fn check_replay_locally(
    cache: &ReplayCache,
    claim: &Claim,
    now: u64,
    until: u64,
) -> Result<(), Rejection> {
    let id: [u8; 32] = Sha256::digest(&claim.signature).into();
    match cache.check_and_insert(id, now, until) {
        Seen::New => Ok(()),
        Seen::Replayed => Err(replayed()),
        Seen::Full => Err(fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "ReplayCacheFull",
            "the gateway cannot check for replays right now; retry shortly",
        )),
    }
}

pub(super) fn replayed() -> Rejection {
    fail(
        StatusCode::FORBIDDEN,
        "ReplayedRequest",
        "this signature was already used; sign every request afresh",
    )
}

/// The shared store could not say whether a signature was used before, and the step fails
/// closed.
pub(super) fn store_unavailable() -> Rejection {
    fail(
        StatusCode::SERVICE_UNAVAILABLE,
        "state-store-unavailable",
        "the gateway cannot check for replayed signatures right now; retry shortly",
    )
    .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"))
}

/// Looks the key up and checks `compute(secret)` against the claimed signature for every
/// active secret, in constant time.
pub(crate) fn verify_with_key(
    step: &RequireHmac,
    claim: &Claim,
    compute: impl Fn(&[u8]) -> Vec<u8>,
) -> Result<Arc<HmacKey>, Rejection> {
    let Some(key) = step.keys.get(&claim.access_key) else {
        return Err(fail(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            "the access key id is not known to this service",
        ));
    };
    let mut matched = subtle::Choice::from(0);
    for secret in &key.secrets {
        let expected = compute(&secret.0);
        matched |= constant_time_eq(&expected, &claim.signature);
    }
    if bool::from(matched) {
        Ok(key.clone())
    } else {
        Err(fail(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "the signature does not match: check the secret, and that the canonical request and string to sign are built as the scheme says (portcullis eval shows the gateway's)",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    if a.len() == b.len() {
        a.ct_eq(b)
    } else {
        subtle::Choice::from(0)
    }
}

/// Hex SHA-256 of a body.
#[must_use]
pub fn sha256_hex(body: &[u8]) -> String {
    if body.is_empty() {
        // Most signed requests (GETs) have no body: no need to hash nothing every time.
        return EMPTY_SHA256.to_owned();
    }
    hex::encode(Sha256::digest(body))
}

/// Hex SHA-256 of zero bytes.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_body_hash_is_sha256_of_nothing() {
        assert_eq!(sha256_hex(b""), EMPTY_SHA256);
        assert_eq!(sha256_hex(b""), hex::encode(Sha256::digest(b"")));
        assert_eq!(sha256_hex(b"abc"), hex::encode(Sha256::digest(b"abc")));
    }
}
