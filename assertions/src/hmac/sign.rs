//! Outbound signing: the same schemes, applied to a request the gateway sends on, so an
//! internal app can call an HMAC-protected API without holding the secret. Also used by
//! `portcullis sign` and by the tests.

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};

use super::custom::CustomScheme;
use super::{sha256_hex, sigv2, sigv4};
use crate::exchange::Exchange;
use crate::head::RequestHead;

/// `20150830T123600Z` for seconds since the epoch.
#[must_use]
pub fn amz_date(secs: u64) -> String {
    let rfc = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string();
    rfc.chars().filter(|c| *c != '-' && *c != ':').collect()
}

/// An HTTP date (`Sun, 30 Aug 2015 12:36:00 GMT`) for seconds since the epoch.
#[must_use]
pub fn http_date(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

fn set(head: &mut dyn RequestHead, name: &'static str, value: &str) -> Result<(), String> {
    let value = HeaderValue::from_str(value)
        .map_err(|_| format!("{name} would not be a valid header value"))?;
    head.set_header(HeaderName::from_static(name), value);
    Ok(())
}

/// What a SigV4 signature is made with.
#[derive(Debug, Clone)]
pub struct SigV4Params<'a> {
    pub access_key: &'a str,
    pub secret: &'a [u8],
    pub region: &'a str,
    pub service: &'a str,
    /// Add `x-amz-content-sha256` (the body's hash) and sign it.
    pub content_sha256_header: bool,
    pub normalize_path: bool,
}

/// Signs with AWS SigV4 in the Authorization header: sets `x-amz-date`, optionally
/// `x-amz-content-sha256`, and `Authorization`. Signs `host`, `content-type`,
/// `content-md5` and every `x-amz-*` header present. Returns the canonical request and the
/// string to sign, for traces.
///
/// # Errors
/// When the request has no `Host` header, or a header cannot be canonicalised.
pub fn sign_sigv4(
    head: &mut dyn RequestHead,
    body: &[u8],
    p: &SigV4Params<'_>,
    now: u64,
) -> Result<(String, String), String> {
    if head.header(&http::header::HOST).is_none() {
        return Err("the request has no Host header to sign".to_owned());
    }
    let date = amz_date(now);
    set(head, "x-amz-date", &date)?;
    let payload_hash = sha256_hex(body);
    if p.content_sha256_header {
        set(head, "x-amz-content-sha256", &payload_hash)?;
    }
    head.remove_header(&http::header::AUTHORIZATION);
    let mut signed: Vec<String> = head
        .headers()
        .keys()
        .map(|n| n.as_str())
        .filter(|n| {
            matches!(*n, "host" | "content-type" | "content-md5") || n.starts_with("x-amz-")
        })
        .map(str::to_owned)
        .collect();
    signed.sort();
    signed.dedup();
    let scope = sigv4::Scope {
        date: date[..8].to_owned(),
        region: p.region.to_owned(),
        service: p.service.to_owned(),
    };
    let parts = sigv4::SignedParts::of(&*head, &payload_hash);
    let creq = sigv4::canonical_request(&parts, &signed, p.normalize_path, false)
        .map_err(|e| e.to_string())?;
    let sts = sigv4::string_to_sign(&date, &scope, &creq);
    let signature = sigv4::signature(&sigv4::signing_key(p.secret, &scope), &sts);
    set(
        head,
        "authorization",
        &sigv4::authorization_value(p.access_key, &scope, &signed, &signature),
    )?;
    Ok((creq, sts))
}

/// A presigned URL query for AWS SigV4: the request's query plus `X-Amz-Algorithm`,
/// `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders` (`host`) and
/// `X-Amz-Signature`. The payload hash signed is the body's.
///
/// # Errors
/// When the request has no `Host` header, or `expires` is outside 1..=604800.
pub fn presign_sigv4(
    head: &dyn RequestHead,
    body: &[u8],
    p: &SigV4Params<'_>,
    now: u64,
    expires: u64,
) -> Result<String, String> {
    if !(1..=sigv4::MAX_EXPIRES).contains(&expires) {
        return Err(format!(
            "expires must be between 1 and {} seconds",
            sigv4::MAX_EXPIRES
        ));
    }
    if head.header(&http::header::HOST).is_none() {
        return Err("the request has no Host header to sign".to_owned());
    }
    let date = amz_date(now);
    let scope = sigv4::Scope {
        date: date[..8].to_owned(),
        region: p.region.to_owned(),
        service: p.service.to_owned(),
    };
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, AWS_QUERY).to_string();
    let mut query = head.query().unwrap_or("").to_owned();
    for (k, v) in [
        ("X-Amz-Algorithm", sigv4::ALGORITHM.to_owned()),
        ("X-Amz-Credential", format!("{}/{scope}", p.access_key)),
        ("X-Amz-Date", date.clone()),
        ("X-Amz-Expires", expires.to_string()),
        ("X-Amz-SignedHeaders", "host".to_owned()),
    ] {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(k);
        query.push('=');
        query.push_str(&enc(&v));
    }
    let payload_hash = sha256_hex(body);
    let parts = sigv4::SignedParts {
        query: Some(&query),
        ..sigv4::SignedParts::of(head, &payload_hash)
    };
    let signed = ["host".to_owned()];
    let creq = sigv4::canonical_request(&parts, &signed, p.normalize_path, true)
        .map_err(|e| e.to_string())?;
    let sts = sigv4::string_to_sign(&date, &scope, &creq);
    let signature = sigv4::signature(&sigv4::signing_key(p.secret, &scope), &sts);
    Ok(format!(
        "{query}&X-Amz-Signature={}",
        hex::encode(signature)
    ))
}

/// Everything but the RFC 3986 unreserved characters is encoded, as SigV4 requires.
const AWS_QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Signs with AWS SigV2 (S3 REST) in the Authorization header, setting `Date` when absent.
/// Returns the string to sign.
///
/// # Errors
/// When a header value cannot be built.
pub fn sign_sigv2(
    head: &mut dyn RequestHead,
    access_key: &str,
    secret: &[u8],
    now: u64,
) -> Result<String, String> {
    if head.header(&http::header::DATE).is_none() && head.headers().get("x-amz-date").is_none() {
        set(head, "date", &http_date(now))?;
    }
    let text = |head: &dyn RequestHead, name: &str| {
        head.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let date = if head.headers().contains_key("x-amz-date") {
        String::new()
    } else {
        text(head, "date")
    };
    let sts = sigv2::string_to_sign(
        head.method().as_str(),
        &text(head, "content-md5"),
        &text(head, "content-type"),
        &date,
        head.headers(),
        head.path(),
        head.query(),
    );
    let signature = sigv2::sign(secret, &sts);
    set(
        head,
        "authorization",
        &format!("AWS {access_key}:{signature}"),
    )?;
    Ok(sts)
}

/// Signs with a custom template scheme, setting its date header when absent. Returns the
/// string to sign.
///
/// # Errors
/// When a header value cannot be built.
pub fn sign_custom(
    head: &mut dyn RequestHead,
    body: &[u8],
    scheme: &CustomScheme,
    key_id: &str,
    secret: &[u8],
    now: u64,
    x: &mut Exchange,
) -> Result<String, String> {
    if head.header(&scheme.date_header).is_none() {
        let value = HeaderValue::from_str(&http_date(now)).map_err(|e| e.to_string())?;
        head.set_header(scheme.date_header.clone(), value);
    }
    x.set_body_sha256(sha256_hex(body));
    let sts = scheme.string_to_sign.render(&*head, x);
    let signature = scheme.encoding.encode(&super::custom::hmac(
        scheme.algorithm,
        secret,
        sts.as_bytes(),
    ));
    let value = HeaderValue::from_str(&scheme.format.join(key_id, &signature))
        .map_err(|e| e.to_string())?;
    head.set_header(scheme.header.clone(), value);
    Ok(sts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_both_ways() {
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(http_date(1_440_938_160), "Sun, 30 Aug 2015 12:36:00 GMT");
        // The parsers (clock.rs) read back what the formatters write.
        assert_eq!(
            crate::hmac::parse_amz_date(&amz_date(1_440_938_160)),
            Some(1_440_938_160)
        );
        assert_eq!(
            crate::hmac::parse_http_date(&http_date(1_440_938_160)),
            Some(1_440_938_160)
        );
    }
}
