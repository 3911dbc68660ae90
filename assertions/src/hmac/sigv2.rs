//! AWS Signature Version 2 for S3 REST requests (`Authorization: AWS AKID:base64sig`,
//! HMAC-SHA1), path-style only. Checked against `fixtures/sigv2/sigv2_vectors.json`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Query parameters that are part of the CanonicalizedResource (sorted).
const SUB_RESOURCES: &[&str] = &[
    "acl",
    "cors",
    "delete",
    "lifecycle",
    "location",
    "logging",
    "notification",
    "partNumber",
    "policy",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// The S3 SigV2 string to sign:
/// `METHOD\nContent-MD5\nContent-Type\nDate\nCanonicalizedAmzHeaders CanonicalizedResource`.
///
/// `date` is the `Date` header, `""` when `x-amz-date` is sent (it then appears among
/// the amz headers), or the `Expires` value for a presigned URL. `path` is the raw
/// request path (path-style: `/bucket/key`); the sub-resources present in `query` are
/// appended sorted, as `?a&b=c`, their values as they appear in the query.
pub fn string_to_sign(
    method: &str,
    content_md5: &str,
    content_type: &str,
    date: &str,
    headers: &http::HeaderMap,
    path: &str,
    query: Option<&str>,
) -> String {
    let mut out = String::with_capacity(128 + path.len());
    for field in [method, content_md5, content_type, date] {
        out.push_str(field);
        out.push('\n');
    }

    // CanonicalizedAmzHeaders. HeaderMap names are already lowercase.
    let mut amz: Vec<&str> = headers
        .keys()
        .map(http::HeaderName::as_str)
        .filter(|n| n.starts_with("x-amz-"))
        .collect();
    amz.sort_unstable();
    amz.dedup();
    for name in amz {
        out.push_str(name);
        out.push(':');
        for (i, value) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let value = String::from_utf8_lossy(value.as_bytes());
            out.push_str(value.trim_matches(|c| c == ' ' || c == '\t'));
        }
        out.push('\n');
    }

    // CanonicalizedResource.
    out.push_str(path);
    let mut subs: Vec<(&str, Option<&str>)> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (p, None),
        })
        .filter(|(n, _)| SUB_RESOURCES.contains(n))
        .collect();
    subs.sort_by(|a, b| a.0.cmp(b.0));
    for (i, (name, value)) in subs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(name);
        if let Some(value) = value {
            out.push('=');
            out.push_str(value);
        }
    }
    out
}

/// `base64(HMAC-SHA1(secret, string_to_sign))`.
pub fn sign(secret: &[u8], string_to_sign: &str) -> String {
    STANDARD.encode(raw_signature(secret, string_to_sign))
}

/// `HMAC-SHA1(secret, string_to_sign)`, for constant-time comparison with a decoded one.
pub fn raw_signature(secret: &[u8], string_to_sign: &str) -> [u8; 20] {
    let mut mac = match HmacSha1::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(string_to_sign.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Parses `AWS AKID:base64sig` into the access key and the decoded 20-byte signature.
pub fn parse_authorization(value: &str) -> Option<(String, Vec<u8>)> {
    let rest = value
        .trim_matches(|c| c == ' ' || c == '\t')
        .strip_prefix("AWS ")?;
    let (access_key, sig) = rest.trim_start_matches(' ').split_once(':')?;
    if access_key.is_empty() || access_key.contains([' ', '\t']) {
        return None;
    }
    let sig = STANDARD.decode(sig).ok()?;
    if sig.len() != 20 {
        return None;
    }
    Some((access_key.to_owned(), sig))
}

/// Constant-time equality of a computed and a presented signature.
pub fn verify(expected: &[u8; 20], given: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.len() == expected.len() && bool::from(expected.as_slice().ct_eq(given))
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::*;

    #[test]
    fn resource_and_amz_date() {
        let mut h = HeaderMap::new();
        h.append(
            "x-amz-date",
            HeaderValue::from_static("Tue, 27 Mar 2007 21:20:26 +0000"),
        );
        h.append("x-amz-meta-a", HeaderValue::from_static("1"));
        h.append("x-amz-meta-a", HeaderValue::from_static(" 2"));
        h.append("date", HeaderValue::from_static("ignored"));
        let sts = string_to_sign(
            "DELETE",
            "",
            "",
            "",
            &h,
            "/johnsmith/photos/puppy.jpg",
            Some("versionId=3&prefix=x&acl&response-content-type=text%2Fplain"),
        );
        assert_eq!(
            sts,
            "DELETE\n\n\n\nx-amz-date:Tue, 27 Mar 2007 21:20:26 +0000\nx-amz-meta-a:1,2\n/johnsmith/photos/puppy.jpg?acl&response-content-type=text%2Fplain&versionId=3"
        );
    }

    #[test]
    fn authorization_rejections() {
        let sig = "bWq2s1WEIj+Ydj0vQ697zp+IXMU=";
        assert!(parse_authorization(&format!("AWS AKID:{sig}")).is_some());
        for bad in [
            format!("AWS4 AKID:{sig}"),
            format!("AWS :{sig}"),
            format!("AWS AKID {sig}"),
            "AWS AKID:bm90IDIwIGJ5dGVz".to_owned(),
            "AWS AKID:***".to_owned(),
            format!("Bearer AKID:{sig}"),
        ] {
            assert_eq!(parse_authorization(&bad), None, "{bad}");
        }
    }
}
