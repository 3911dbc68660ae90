//! `require_hmac`: the caller signs the request with a shared secret instead of sending it.
//!
//! Schemes: AWS Signature Version 4 (Authorization header or presigned URL), AWS Signature
//! Version 2 (S3 REST: header or query form), and `template`, an operator-defined
//! string-to-sign for APIs with their own HMAC scheme. Every scheme checks the key, the
//! signature (constant time, every active secret of the key), the request time against a
//! clock-skew window, and refuses a signature already seen inside that window.

pub mod custom;
pub mod keys;
pub mod outbound;
pub mod replay;
pub mod sign;
pub mod sigv2;
pub mod sigv4;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use crate::exchange::{Exchange, VarId};
use crate::verdict::{Rejection, Verdict};
use crate::{Assertion, Needs, Request};

pub use keys::{HmacKey, KeySet, SecretBytes};
pub use replay::{ReplayCache, Seen};

/// The time source, so tests can move it.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that stays where it is put.
#[derive(Debug, Default)]
pub struct FixedClock(pub AtomicU64);

impl FixedClock {
    #[must_use]
    pub fn at(secs: u64) -> Self {
        FixedClock(AtomicU64::new(secs))
    }

    pub fn set(&self, secs: u64) {
        self.0.store(secs, Ordering::Relaxed);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// `20150830T123600Z` (the X-Amz-Date form) as seconds since the epoch.
#[must_use]
pub fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16
        || b[8] != b'T'
        || b[15] != b'Z'
        || !b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
    {
        return None;
    }
    // Digits only from here: plain arithmetic, no string building on the request path.
    let num =
        |r: std::ops::Range<usize>| b[r].iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    let (year, month, day) = (num(0..4), num(4..6), num(6..8));
    let (hour, minute, second) = (num(9..11), num(11..13), num(13..15));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if year < 1970 || day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a date of 1970 or later (the proleptic Gregorian calendar).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    // Years start in March so the leap day is the last day of the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `Sun, 30 Aug 2015 12:36:00 GMT` (an HTTP date) as seconds since the epoch.
#[must_use]
pub fn parse_http_date(s: &str) -> Option<u64> {
    to_secs(httpdate::parse_http_date(s.trim()).ok()?)
}

/// Any date a custom scheme may send: X-Amz-Date form, RFC 3339, an HTTP date, or epoch seconds.
#[must_use]
pub fn parse_any_date(s: &str) -> Option<u64> {
    let s = s.trim();
    if !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    parse_amz_date(s)
        .or_else(|| humantime::parse_rfc3339_weak(s).ok().and_then(to_secs))
        .or_else(|| parse_http_date(s))
}

fn to_secs(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
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
    Custom(custom::CustomScheme),
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

/// The compiled `require_hmac` step.
#[derive(Debug)]
pub struct RequireHmac {
    pub scheme: Scheme,
    pub keys: Arc<KeySet>,
    /// Largest accepted distance between the request's time and ours.
    pub max_skew: Duration,
    /// `None` turns replay protection off.
    pub replay: Option<Arc<ReplayCache>>,
    /// SigV4 `UNSIGNED-PAYLOAD` accepted.
    pub allow_unsigned_payload: bool,
    pub clock: Arc<dyn Clock>,
    pub client_id: VarId,
    /// Where the access key id goes (`${hmac.key_id}`).
    pub key_id_var: VarId,
    /// Derived SigV4 signing keys (four HMACs each), per secret and scope date.
    pub sigv4_keys: SigningKeyCache,
}

/// SigV4 signing keys already derived, keyed by the secret's address and length (secrets
/// live in the step's key set as long as the step) and the scope date. Bounded: emptied
/// when full.
#[derive(Debug, Default)]
pub struct SigningKeyCache(std::sync::Mutex<std::collections::HashMap<SecretAndDay, [u8; 32]>>);

/// A secret's address and length, and a scope date (`YYYYMMDD`).
type SecretAndDay = (usize, usize, [u8; 8]);

const SIGNING_KEY_CACHE: usize = 4096;

impl SigningKeyCache {
    /// The signing key of `secret` for `scope`, derived once per day and secret.
    pub fn get(&self, secret: &[u8], scope: &sigv4::Scope) -> [u8; 32] {
        let mut date = [0u8; 8];
        let d = scope.date.as_bytes();
        if d.len() != date.len() {
            return sigv4::signing_key(secret, scope);
        }
        date.copy_from_slice(d);
        let id = (secret.as_ptr() as usize, secret.len(), date);
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(k) = map.get(&id) {
            return *k;
        }
        let k = sigv4::signing_key(secret, scope);
        if map.len() >= SIGNING_KEY_CACHE {
            map.clear();
        }
        map.insert(id, k);
        k
    }
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

impl RequireHmac {
    fn missing(&self) -> Rejection {
        let r = fail(
            StatusCode::UNAUTHORIZED,
            "MissingAuthenticationToken",
            format!(
                "the request is not signed: sign it with {}",
                self.scheme.name()
            ),
        );
        r.with_header(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(self.scheme.challenge()),
        )
    }

    /// Time checks shared by every scheme.
    fn check_time(&self, claim: &Claim, now: u64) -> Result<u64, Rejection> {
        let skew = self.max_skew.as_secs();
        match claim.expires {
            Some(expires) => {
                if claim.time > now + skew {
                    return Err(fail(
                        StatusCode::FORBIDDEN,
                        "RequestTimeTooSkewed",
                        "the signed request is dated in the future",
                    ));
                }
                if now > claim.time + expires {
                    return Err(fail(
                        StatusCode::FORBIDDEN,
                        "RequestExpired",
                        "the presigned request has expired",
                    ));
                }
                Ok(claim.time + expires)
            }
            None => {
                if claim.time.abs_diff(now) > skew {
                    return Err(fail(
                        StatusCode::FORBIDDEN,
                        "RequestTimeTooSkewed",
                        format!("the request time differs from the gateway's by more than {skew} seconds"),
                    ));
                }
                Ok(claim.time + skew)
            }
        }
    }
}

impl Assertion for RequireHmac {
    fn kind(&self) -> &'static str {
        "require_hmac"
    }

    fn phases(&self) -> crate::Phases {
        crate::Phases::REQUEST
    }

    fn needs(&self) -> Needs {
        Needs::BODY
    }

    fn on_request(&self, req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        let body = req.body.unwrap_or_default();
        let outcome = match &self.scheme {
            Scheme::SigV4 { .. } => sigv4_check(self, req, body, x),
            Scheme::SigV2 { .. } => sigv2_check(self, req, body, x),
            Scheme::Custom(c) => c.check(self, req, body, x),
        };
        let (claim, key) = match outcome {
            Ok(Some(found)) => found,
            Ok(None) => return Verdict::Reject(self.missing()),
            Err(r) => return Verdict::Reject(r),
        };
        let now = self.clock.now();
        let until = match self.check_time(&claim, now) {
            Ok(u) => u,
            Err(r) => return Verdict::Reject(r),
        };
        if let Some(replay) = &self.replay {
            let id: [u8; 32] = Sha256::digest(&claim.signature).into();
            match replay.check_and_insert(id, now, until) {
                Seen::New => {}
                Seen::Replayed => {
                    return Verdict::Reject(fail(
                        StatusCode::FORBIDDEN,
                        "ReplayedRequest",
                        "this signature was already used; sign every request afresh",
                    ))
                }
                Seen::Full => {
                    return Verdict::Reject(fail(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ReplayCacheFull",
                        "the gateway cannot check for replays right now; retry shortly",
                    ))
                }
            }
        }
        x.set(self.client_id, key.client.clone());
        x.set(self.key_id_var, key.access_key.clone());
        for (var, value) in &key.attributes {
            x.set(*var, value.clone());
        }
        x.note(|| format!("key {} of client \"{}\"", claim.access_key, key.client));
        Verdict::Continue
    }
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
    let mut ok = subtle::Choice::from(0);
    for secret in &key.secrets {
        let expected = compute(&secret.0);
        ok |= ct_eq(&expected, &claim.signature);
    }
    if bool::from(ok) {
        Ok(key.clone())
    } else {
        Err(fail(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "the signature does not match: check the secret, and that the canonical request and string to sign are built as the scheme says (portcullis eval shows the gateway's)",
        ))
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    if a.len() == b.len() {
        a.ct_eq(b)
    } else {
        subtle::Choice::from(0)
    }
}

fn sigv4_check(
    step: &RequireHmac,
    req: &Request<'_>,
    body: &[u8],
    x: &mut Exchange,
) -> Result<Option<(Claim, Arc<HmacKey>)>, Rejection> {
    let Scheme::SigV4 {
        region,
        service,
        allow_presigned,
        normalize_path,
    } = &step.scheme
    else {
        return Ok(None);
    };
    let head = &*req.head;
    let malformed = |e: sigv4::SigV4Error| {
        fail(
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
            e.to_string(),
        )
    };
    let auth = head
        .header(&http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (credential, signed, signature, amz_date, expires, presigned) =
        match auth {
            Some(value) if value.starts_with("AWS4-HMAC-SHA256") => {
                let a = sigv4::parse_authorization(value).map_err(malformed)?;
                let date = head
                    .headers()
                    .get("x-amz-date")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        fail(
                            StatusCode::BAD_REQUEST,
                            "IncompleteSignature",
                            "the X-Amz-Date header is missing",
                        )
                    })?
                    .to_owned();
                (
                    a.credential,
                    a.signed_headers,
                    a.signature,
                    date,
                    None,
                    false,
                )
            }
            Some(_) => {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "IncompleteSignature",
                    "the Authorization header is not AWS4-HMAC-SHA256",
                ))
            }
            None => match head
                .query()
                .map(sigv4::parse_presigned)
                .transpose()
                .map_err(malformed)?
                .flatten()
            {
                Some(p) if *allow_presigned => (
                    p.credential,
                    p.signed_headers,
                    p.signature,
                    p.amz_date,
                    Some(p.expires),
                    true,
                ),
                Some(_) => return Err(fail(
                    StatusCode::FORBIDDEN,
                    "PresignedNotAllowed",
                    "this service does not accept presigned URLs; sign the Authorization header",
                )),
                None => return Ok(None),
            },
        };
    let scope = &credential.scope;
    if scope.region != *region || scope.service != *service {
        return Err(fail(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            format!("the credential scope must be for region {region} and service {service}"),
        ));
    }
    if !amz_date.starts_with(&scope.date) {
        return Err(fail(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "the credential scope date does not match X-Amz-Date",
        ));
    }
    if !signed.iter().any(|h| h == "host") {
        return Err(fail(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "the host header must be signed",
        ));
    }
    let time = parse_amz_date(&amz_date).ok_or_else(|| {
        fail(
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
            "X-Amz-Date is not of the form 20150830T123600Z",
        )
    })?;

    // The payload hash: the one the client declared (checked against the body), else the body's.
    let body_hash = sha256_hex(body);
    let declared = head
        .headers()
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok());
    let payload_hash = match declared {
        Some("UNSIGNED-PAYLOAD") if step.allow_unsigned_payload => "UNSIGNED-PAYLOAD".to_owned(),
        Some("UNSIGNED-PAYLOAD") => {
            return Err(fail(
                StatusCode::FORBIDDEN,
                "UnsignedPayloadNotAllowed",
                "this service requires the payload to be signed (x-amz-content-sha256 of the body)",
            ))
        }
        Some(h) if !h.eq_ignore_ascii_case(&body_hash) => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "XAmzContentSHA256Mismatch",
                "x-amz-content-sha256 does not match the body",
            ))
        }
        Some(_) | None if presigned && step.allow_unsigned_payload => "UNSIGNED-PAYLOAD".to_owned(),
        Some(_) | None => body_hash,
    };
    let parts = sigv4::SignedParts::of(head, &payload_hash);
    let creq =
        sigv4::canonical_request(&parts, &signed, *normalize_path, presigned).map_err(|e| {
            fail(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                e.to_string(),
            )
        })?;
    let sts = sigv4::string_to_sign(&amz_date, scope, &creq);
    x.note(|| format!("canonical request:\n{creq}"));
    x.note(|| format!("string to sign:\n{sts}"));
    let claim = Claim {
        access_key: credential.access_key.clone(),
        time,
        expires,
        signature: signature.to_vec(),
    };
    let key = verify_with_key(step, &claim, |secret| {
        sigv4::signature(&step.sigv4_keys.get(secret, scope), &sts).to_vec()
    })?;
    Ok(Some((claim, key)))
}

fn sigv2_check(
    step: &RequireHmac,
    req: &Request<'_>,
    body: &[u8],
    x: &mut Exchange,
) -> Result<Option<(Claim, Arc<HmacKey>)>, Rejection> {
    let Scheme::SigV2 { allow_query } = &step.scheme else {
        return Ok(None);
    };
    let head = &*req.head;
    let header = |name: &str| {
        head.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let content_md5 = header("content-md5");
    if !content_md5.is_empty() {
        use base64::Engine as _;
        let actual = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body));
        if actual != content_md5.trim() {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "BadDigest",
                "Content-MD5 does not match the body",
            ));
        }
    }
    let auth = head
        .header(&http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (access_key, signature, date_for_sts, time, expires) = match auth {
        Some(value) => {
            let (key, sig) = sigv2::parse_authorization(value).ok_or_else(|| {
                fail(
                    StatusCode::BAD_REQUEST,
                    "IncompleteSignature",
                    "the Authorization header is not \"AWS AccessKeyId:Signature\"",
                )
            })?;
            let amz_date = header("x-amz-date");
            let (date_text, date_for_sts) = if amz_date.is_empty() {
                (header("date"), header("date"))
            } else {
                (amz_date, "")
            };
            let time = parse_http_date(date_text).ok_or_else(|| {
                fail(
                    StatusCode::FORBIDDEN,
                    "AccessDenied",
                    "the request needs a valid Date or x-amz-date header",
                )
            })?;
            (key, sig, date_for_sts.to_owned(), time, None)
        }
        None => {
            let Some(q) = head.query().filter(|q| q.contains("Signature=")) else {
                return Ok(None);
            };
            if !*allow_query {
                return Err(fail(
                    StatusCode::FORBIDDEN,
                    "PresignedNotAllowed",
                    "this service does not accept signatures in the query string",
                ));
            }
            let param = |name: &str| {
                q.split('&')
                    .filter_map(|p| p.split_once('='))
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| percent_decode(v))
            };
            let (Some(key), Some(sig), Some(exp)) = (
                param("AWSAccessKeyId"),
                param("Signature"),
                param("Expires"),
            ) else {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "IncompleteSignature",
                    "a query signature needs AWSAccessKeyId, Signature and Expires",
                ));
            };
            use base64::Engine as _;
            let sig = base64::engine::general_purpose::STANDARD
                .decode(sig.as_bytes())
                .map_err(|_| {
                    fail(
                        StatusCode::BAD_REQUEST,
                        "IncompleteSignature",
                        "the signature is not base64",
                    )
                })?;
            let exp: u64 = exp.parse().map_err(|_| {
                fail(
                    StatusCode::BAD_REQUEST,
                    "IncompleteSignature",
                    "Expires is not a number",
                )
            })?;
            let now = step.clock.now();
            // Expires is an absolute time: model it as "valid from now until Expires".
            (
                key,
                sig,
                exp.to_string(),
                now.min(exp),
                Some(exp.saturating_sub(now.min(exp))),
            )
        }
    };
    let query_for_resource = head.query().map(strip_sigv2_params);
    let sts = sigv2::string_to_sign(
        head.method().as_str(),
        content_md5,
        header("content-type"),
        &date_for_sts,
        head.headers(),
        head.path(),
        query_for_resource.as_deref().filter(|q| !q.is_empty()),
    );
    x.note(|| format!("string to sign:\n{sts}"));
    let claim = Claim {
        access_key,
        time,
        expires,
        signature,
    };
    let key = verify_with_key(step, &claim, |secret| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(sigv2::sign(secret, &sts))
            .unwrap_or_default()
    })?;
    Ok(Some((claim, key)))
}

/// The query without the SigV2 authentication parameters.
fn strip_sigv2_params(q: &str) -> String {
    q.split('&')
        .filter(|p| {
            let name = p.split('=').next().unwrap_or("");
            !matches!(name, "AWSAccessKeyId" | "Signature" | "Expires")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `%XX` decoding for query parameter values (`+` stays `+`, as S3 signs it).
#[must_use]
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod verify_tests;
