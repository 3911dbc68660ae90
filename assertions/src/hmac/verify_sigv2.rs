//! Verifying an AWS SigV2 (S3 REST) request, in either of its two forms: the
//! `Authorization: AWS AccessKeyId:Signature` header dated by `Date` or `x-amz-date`, or
//! a query signature (`AWSAccessKeyId`, `Signature`, `Expires`). The string to sign and
//! the HMAC live in `sigv2.rs`.

use base64::Engine as _;
use http::StatusCode;
use sha2::Digest as _;

use super::clock::parse_http_date;
use super::sigv2;
use super::step::{fail, verify_with_key, Claim, RequireHmac, Scheme, SchemeOutcome};
use crate::exchange::Exchange;
use crate::head::RequestView;
use crate::verdict::Rejection;
use crate::Request;

/// What a SigV2 request claims, and the date line its string to sign carries.
struct SignedClaim {
    claim: Claim,
    /// `Date` when it dates the request, nothing when `x-amz-date` does (it is then signed
    /// among the `x-amz-*` headers), `Expires` for a query signature.
    date_for_string_to_sign: String,
}

fn incomplete(detail: &'static str) -> Rejection {
    fail(StatusCode::BAD_REQUEST, "IncompleteSignature", detail)
}

/// A header's value as text, `""` when absent or not text.
fn header<'h>(head: &'h dyn RequestView, name: &str) -> &'h str {
    head.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The `require_hmac` check for `Scheme::SigV2`.
pub(crate) fn check(
    step: &RequireHmac,
    req: &Request<'_>,
    body: &[u8],
    x: &mut Exchange,
) -> SchemeOutcome {
    let Scheme::SigV2 { allow_query } = &step.scheme else {
        return Ok(None);
    };
    let head = &*req.head;
    let content_md5 = header(head, "content-md5");
    if !content_md5.is_empty() {
        let actual = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body));
        if actual != content_md5.trim() {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "BadDigest",
                "Content-MD5 does not match the body",
            ));
        }
    }
    let authorization = head
        .header(&http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let signed = match authorization {
        Some(value) => from_authorization_header(head, value)?,
        None => match from_query(head, *allow_query, step.clock.now())? {
            Some(signed) => signed,
            None => return Ok(None),
        },
    };
    let query_for_resource = head.query().map(strip_sigv2_params);
    let string_to_sign = sigv2::string_to_sign(
        head.method().as_str(),
        content_md5,
        header(head, "content-type"),
        &signed.date_for_string_to_sign,
        head.headers(),
        head.path(),
        query_for_resource.as_deref().filter(|q| !q.is_empty()),
    );
    x.note(|| format!("string to sign:\n{string_to_sign}"));
    let claim = signed.claim;
    let key = verify_with_key(step, &claim, |secret| {
        base64::engine::general_purpose::STANDARD
            .decode(sigv2::sign(secret, &string_to_sign))
            .unwrap_or_default()
    })?;
    Ok(Some((claim, key)))
}

fn from_authorization_header(
    head: &dyn RequestView,
    value: &str,
) -> Result<SignedClaim, Rejection> {
    let (access_key, signature) = sigv2::parse_authorization(value).ok_or_else(|| {
        incomplete("the Authorization header is not \"AWS AccessKeyId:Signature\"")
    })?;
    let amz_date = header(head, "x-amz-date");
    let (date_text, date_for_string_to_sign) = if amz_date.is_empty() {
        (header(head, "date"), header(head, "date"))
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
    Ok(SignedClaim {
        claim: Claim {
            access_key,
            time,
            expires: None,
            signature,
        },
        date_for_string_to_sign: date_for_string_to_sign.to_owned(),
    })
}

/// The query signature; `Ok(None)` when the query has no `Signature=`.
fn from_query(
    head: &dyn RequestView,
    allow_query: bool,
    now: u64,
) -> Result<Option<SignedClaim>, Rejection> {
    let Some(query) = head.query().filter(|q| q.contains("Signature=")) else {
        return Ok(None);
    };
    if !allow_query {
        return Err(fail(
            StatusCode::FORBIDDEN,
            "PresignedNotAllowed",
            "this service does not accept signatures in the query string",
        ));
    }
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
    };
    let (Some(access_key), Some(signature), Some(expires_at)) = (
        param("AWSAccessKeyId"),
        param("Signature"),
        param("Expires"),
    ) else {
        return Err(incomplete(
            "a query signature needs AWSAccessKeyId, Signature and Expires",
        ));
    };
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature.as_bytes())
        .map_err(|_| incomplete("the signature is not base64"))?;
    let expires_at: u64 = expires_at
        .parse()
        .map_err(|_| incomplete("Expires is not a number"))?;
    // Expires is an absolute time: model it as "valid from now until Expires".
    let time = now.min(expires_at);
    Ok(Some(SignedClaim {
        claim: Claim {
            access_key,
            time,
            expires: Some(expires_at.saturating_sub(time)),
            signature,
        },
        date_for_string_to_sign: expires_at.to_string(),
    }))
}

/// The query without the SigV2 authentication parameters.
fn strip_sigv2_params(query: &str) -> String {
    query
        .split('&')
        .filter(|p| {
            let name = p.split('=').next().unwrap_or("");
            !matches!(name, "AWSAccessKeyId" | "Signature" | "Expires")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `%XX` decoding for query parameter values (`+` stays `+`, as S3 signs it).
#[must_use]
pub fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}
