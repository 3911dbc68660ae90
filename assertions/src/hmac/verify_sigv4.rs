//! Verifying an AWS SigV4 request, in either of its two forms: the `Authorization:
//! AWS4-HMAC-SHA256 ...` header with `X-Amz-Date`, or a presigned URL (`X-Amz-*` query
//! parameters). The pure parsing and canonicalisation live in `sigv4.rs`; this file turns
//! a request into a [`Claim`] and checks it against the step's keys.

use http::StatusCode;

use super::clock::{check_request_time, parse_amz_date};
use super::sigv4::{self, Credential, SigV4Error};
use super::step::{fail, sha256_hex, verify_with_key, Claim, RequireHmac, Scheme, SchemeOutcome};
use crate::exchange::Exchange;
use crate::head::RequestView;
use crate::verdict::Rejection;
use crate::Request;

/// The signature fields of a request, from whichever form it used.
struct SignatureFields {
    credential: Credential,
    signed_headers: Vec<String>,
    signature: [u8; 32],
    /// `YYYYMMDDTHHMMSSZ`.
    amz_date: String,
    /// Presigned URLs only: seconds the URL stays valid after `amz_date`.
    expires: Option<u64>,
}

impl SignatureFields {
    fn presigned(&self) -> bool {
        self.expires.is_some()
    }
}

fn incomplete(detail: impl Into<std::borrow::Cow<'static, str>>) -> Rejection {
    fail(StatusCode::BAD_REQUEST, "IncompleteSignature", detail)
}

fn malformed(error: SigV4Error) -> Rejection {
    incomplete(error.to_string())
}

fn mismatch(detail: impl Into<std::borrow::Cow<'static, str>>) -> Rejection {
    fail(StatusCode::FORBIDDEN, "SignatureDoesNotMatch", detail)
}

/// The `require_hmac` check for `Scheme::SigV4`.
pub(crate) fn check(
    step: &RequireHmac,
    req: &Request<'_>,
    body: &[u8],
    x: &mut Exchange,
) -> SchemeOutcome {
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
    let Some(fields) = signature_fields(head, *allow_presigned)? else {
        return Ok(None);
    };
    let scope = &fields.credential.scope;
    check_scope(&fields, region, service)?;
    let time = parse_amz_date(&fields.amz_date)
        .ok_or_else(|| incomplete("X-Amz-Date is not of the form 20150830T123600Z"))?;

    let payload_hash = payload_hash(head, body, fields.presigned(), step.allow_unsigned_payload)?;
    let parts = sigv4::SignedParts::of(head, &payload_hash);
    let canonical_request = sigv4::canonical_request(
        &parts,
        &fields.signed_headers,
        *normalize_path,
        fields.presigned(),
    )
    .map_err(|e| mismatch(e.to_string()))?;
    let string_to_sign = sigv4::string_to_sign(&fields.amz_date, scope, &canonical_request);
    x.note(|| format!("canonical request:\n{canonical_request}"));
    x.note(|| format!("string to sign:\n{string_to_sign}"));
    let claim = Claim {
        access_key: fields.credential.access_key.clone(),
        time,
        expires: fields.expires,
        signature: fields.signature.to_vec(),
    };
    // A request outside its time window is refused once its signature is checked: derive
    // its key afresh rather than let arbitrary scope dates churn the cache.
    let in_window =
        check_request_time(time, fields.expires, step.clock.now(), step.max_skew).is_ok();
    let key = verify_with_key(step, &claim, |secret| {
        let signing_key = if in_window {
            step.sigv4_keys.get(secret, scope)
        } else {
            sigv4::signing_key(secret, scope)
        };
        sigv4::signature(&signing_key, &string_to_sign).to_vec()
    })?;
    Ok(Some((claim, key)))
}

/// The signature fields from the `Authorization` header, else from a presigned query;
/// `Ok(None)` when the request has neither.
fn signature_fields(
    head: &dyn RequestView,
    allow_presigned: bool,
) -> Result<Option<SignatureFields>, Rejection> {
    let authorization = head
        .header(&http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match authorization {
        Some(value) if value.starts_with(sigv4::ALGORITHM) => {
            from_authorization_header(head, value).map(Some)
        }
        Some(_) => Err(incomplete(
            "the Authorization header is not AWS4-HMAC-SHA256",
        )),
        None => from_presigned_query(head, allow_presigned),
    }
}

fn from_authorization_header(
    head: &dyn RequestView,
    value: &str,
) -> Result<SignatureFields, Rejection> {
    let parsed = sigv4::parse_authorization(value).map_err(malformed)?;
    let amz_date = head
        .headers()
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| incomplete("the X-Amz-Date header is missing"))?
        .to_owned();
    Ok(SignatureFields {
        credential: parsed.credential,
        signed_headers: parsed.signed_headers,
        signature: parsed.signature,
        amz_date,
        expires: None,
    })
}

fn from_presigned_query(
    head: &dyn RequestView,
    allow_presigned: bool,
) -> Result<Option<SignatureFields>, Rejection> {
    let presigned = head
        .query()
        .map(sigv4::parse_presigned)
        .transpose()
        .map_err(malformed)?
        .flatten();
    match presigned {
        Some(p) if allow_presigned => Ok(Some(SignatureFields {
            credential: p.credential,
            signed_headers: p.signed_headers,
            signature: p.signature,
            amz_date: p.amz_date,
            expires: Some(p.expires),
        })),
        Some(_) => Err(fail(
            StatusCode::FORBIDDEN,
            "PresignedNotAllowed",
            "this service does not accept presigned URLs; sign the Authorization header",
        )),
        None => Ok(None),
    }
}

/// The credential scope is the step's region and service, its date is X-Amz-Date's, and
/// `host` is signed.
fn check_scope(fields: &SignatureFields, region: &str, service: &str) -> Result<(), Rejection> {
    let scope = &fields.credential.scope;
    if scope.region != region || scope.service != service {
        return Err(mismatch(format!(
            "the credential scope must be for region {region} and service {service}"
        )));
    }
    if !fields.amz_date.starts_with(&scope.date) {
        return Err(mismatch(
            "the credential scope date does not match X-Amz-Date",
        ));
    }
    if !fields.signed_headers.iter().any(|h| h == "host") {
        return Err(mismatch("the host header must be signed"));
    }
    Ok(())
}

/// The payload hash to sign: the one the client declared (checked against the body),
/// else the body's.
fn payload_hash(
    head: &dyn RequestView,
    body: &[u8],
    presigned: bool,
    allow_unsigned_payload: bool,
) -> Result<String, Rejection> {
    let body_hash = sha256_hex(body);
    let declared = head
        .headers()
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok());
    match declared {
        Some("UNSIGNED-PAYLOAD") if allow_unsigned_payload => Ok("UNSIGNED-PAYLOAD".to_owned()),
        Some("UNSIGNED-PAYLOAD") => Err(fail(
            StatusCode::FORBIDDEN,
            "UnsignedPayloadNotAllowed",
            "this service requires the payload to be signed (x-amz-content-sha256 of the body)",
        )),
        Some(declared) if !declared.eq_ignore_ascii_case(&body_hash) => Err(fail(
            StatusCode::BAD_REQUEST,
            "XAmzContentSHA256Mismatch",
            "x-amz-content-sha256 does not match the body",
        )),
        Some(_) | None if presigned && allow_unsigned_payload => Ok("UNSIGNED-PAYLOAD".to_owned()),
        Some(_) | None => Ok(body_hash),
    }
}
