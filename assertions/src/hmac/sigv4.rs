//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`): parsing and canonicalisation as pure
//! functions over `http` types, checked against the AWS test suites in `fixtures/sigv4`.
//!
//! The gateway is the verifier: it parses the `Authorization` header (or the presigned
//! query), rebuilds the canonical request from what it received, derives the signing key
//! from the secret it holds, and compares signatures with [`verify`] (constant time).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm this module implements.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Last element of every credential scope.
pub const TERMINATOR: &str = "aws4_request";
/// Largest `X-Amz-Expires` AWS accepts (7 days).
pub const MAX_EXPIRES: u64 = 604_800;

/// What the signature covers, as received (raw path and query exactly as on the wire).
#[derive(Debug, Clone, Copy)]
pub struct SignedParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// Hex SHA-256 of the body, or a literal such as `UNSIGNED-PAYLOAD`.
    pub payload_hash: &'a str,
}

impl<'a> SignedParts<'a> {
    /// The parts of a request head as it stands, with the given payload hash.
    #[must_use]
    pub fn of(head: &'a dyn crate::head::RequestView, payload_hash: &'a str) -> Self {
        SignedParts {
            method: head.method().as_str(),
            path: head.path(),
            query: head.query(),
            headers: head.headers(),
            payload_hash,
        }
    }
}

/// `date/region/service/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `YYYYMMDD`.
    pub date: String,
    pub region: String,
    pub service: String,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.date, self.region, self.service, TERMINATOR
        )
    }
}

/// `AKID/20150830/us-east-1/service/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_key: String,
    pub scope: Scope,
}

impl Credential {
    /// Parses `AKID/YYYYMMDD/region/service/aws4_request`.
    pub fn parse(value: &str) -> Result<Credential, SigV4Error> {
        let mut parts = value.split('/');
        let (Some(access_key), Some(date), Some(region), Some(service), Some(term), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SigV4Error::MalformedCredential(
                "expected AKID/date/region/service/aws4_request",
            ));
        };
        if access_key.is_empty() {
            return Err(SigV4Error::MalformedCredential("empty access key"));
        }
        if region.is_empty() {
            return Err(SigV4Error::MalformedCredential("empty region"));
        }
        if service.is_empty() {
            return Err(SigV4Error::MalformedCredential("empty service"));
        }
        if term != TERMINATOR {
            return Err(SigV4Error::MalformedCredential(
                "scope must end with aws4_request",
            ));
        }
        if !valid_date(date) {
            return Err(SigV4Error::BadDate);
        }
        Ok(Credential {
            access_key: access_key.to_owned(),
            scope: Scope {
                date: date.to_owned(),
                region: region.to_owned(),
                service: service.to_owned(),
            },
        })
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.access_key, self.scope)
    }
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    pub credential: Credential,
    pub signed_headers: Vec<String>,
    pub signature: [u8; 32],
}

/// The `X-Amz-*` parameters of a presigned URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    pub credential: Credential,
    /// `YYYYMMDDTHHMMSSZ`, its date equal to the scope's date.
    pub amz_date: String,
    /// Seconds, `1..=604800`.
    pub expires: u64,
    pub signed_headers: Vec<String>,
    pub signature: [u8; 32],
}

/// Why a SigV4 header, query or request could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigV4Error {
    /// The `Authorization` value is not `AWS4-HMAC-SHA256 Credential=.., SignedHeaders=.., Signature=..`.
    MalformedAuthorization(&'static str),
    /// Another algorithm than `AWS4-HMAC-SHA256` (e.g. SigV4a, SigV2).
    UnsupportedAlgorithm,
    /// The credential is not `AKID/date/region/service/aws4_request`.
    MalformedCredential(&'static str),
    /// A date that is not `YYYYMMDD` / `YYYYMMDDTHHMMSSZ`.
    BadDate,
    /// The request date's day differs from the credential scope's date.
    DateScopeMismatch,
    /// The signature is not 64 hex digits.
    MalformedSignature,
    /// The signed-headers list is empty, has an empty, uppercase or repeated name.
    MalformedSignedHeaders(&'static str),
    /// `host` is not among the signed headers (AWS requires it).
    HostNotSigned,
    /// A header named in the signed headers is absent from the request.
    MissingSignedHeader(String),
    /// A signed header's value is not UTF-8.
    InvalidHeaderValue(String),
    /// A presigned URL lacks this parameter.
    MissingQueryParameter(&'static str),
    /// A presigned URL repeats this parameter.
    DuplicateQueryParameter(&'static str),
    /// `X-Amz-Expires` is not an integer in `1..=604800`.
    BadExpires,
}

impl fmt::Display for SigV4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigV4Error::MalformedAuthorization(why) => {
                write!(f, "malformed SigV4 authorization: {why}")
            }
            SigV4Error::UnsupportedAlgorithm => {
                write!(f, "unsupported signing algorithm (expected {ALGORITHM})")
            }
            SigV4Error::MalformedCredential(why) => write!(f, "malformed credential: {why}"),
            SigV4Error::BadDate => f.write_str("malformed date"),
            SigV4Error::DateScopeMismatch => {
                f.write_str("request date does not match the credential scope date")
            }
            SigV4Error::MalformedSignature => f.write_str("signature is not 64 hex digits"),
            SigV4Error::MalformedSignedHeaders(why) => {
                write!(f, "malformed signed headers: {why}")
            }
            SigV4Error::HostNotSigned => f.write_str("host must be a signed header"),
            SigV4Error::MissingSignedHeader(name) => {
                write!(f, "signed header {name} is missing from the request")
            }
            SigV4Error::InvalidHeaderValue(name) => {
                write!(f, "signed header {name} has a non-UTF-8 value")
            }
            SigV4Error::MissingQueryParameter(name) => {
                write!(f, "presigned URL lacks {name}")
            }
            SigV4Error::DuplicateQueryParameter(name) => {
                write!(f, "presigned URL repeats {name}")
            }
            SigV4Error::BadExpires => write!(f, "X-Amz-Expires must be 1..={MAX_EXPIRES}"),
        }
    }
}

impl std::error::Error for SigV4Error {}

/// `YYYYMMDD` with a plausible month and day.
fn valid_date(date: &str) -> bool {
    let b = date.as_bytes();
    if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let month = u32::from(b[4] - b'0') * 10 + u32::from(b[5] - b'0');
    let day = u32::from(b[6] - b'0') * 10 + u32::from(b[7] - b'0');
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// Checks `amz_date` is `YYYYMMDDTHHMMSSZ` and its day is the scope's date.
pub fn validate_amz_date(amz_date: &str, scope: &Scope) -> Result<(), SigV4Error> {
    let b = amz_date.as_bytes();
    let well_formed = b.len() == 16
        && valid_date(&amz_date[..8])
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z';
    if !well_formed {
        return Err(SigV4Error::BadDate);
    }
    let hh = u32::from(b[9] - b'0') * 10 + u32::from(b[10] - b'0');
    let mm = u32::from(b[11] - b'0') * 10 + u32::from(b[12] - b'0');
    let ss = u32::from(b[13] - b'0') * 10 + u32::from(b[14] - b'0');
    if hh > 23 || mm > 59 || ss > 60 {
        return Err(SigV4Error::BadDate);
    }
    if amz_date[..8] != scope.date {
        return Err(SigV4Error::DateScopeMismatch);
    }
    Ok(())
}

fn parse_signed_headers(value: &str) -> Result<Vec<String>, SigV4Error> {
    if value.is_empty() {
        return Err(SigV4Error::MalformedSignedHeaders("empty list"));
    }
    let mut out: Vec<String> = Vec::new();
    for name in value.split(';') {
        if name.is_empty() {
            return Err(SigV4Error::MalformedSignedHeaders("empty header name"));
        }
        if !name.bytes().all(is_lower_tchar) {
            return Err(SigV4Error::MalformedSignedHeaders(
                "header names must be lowercase tokens",
            ));
        }
        if out.iter().any(|n| n == name) {
            return Err(SigV4Error::MalformedSignedHeaders("repeated header name"));
        }
        out.push(name.to_owned());
    }
    if !out.iter().any(|n| n == "host") {
        return Err(SigV4Error::HostNotSigned);
    }
    Ok(out)
}

/// RFC 9110 token characters, uppercase letters excluded.
fn is_lower_tchar(b: u8) -> bool {
    b.is_ascii_lowercase()
        || b.is_ascii_digit()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn parse_signature(value: &str) -> Result<[u8; 32], SigV4Error> {
    let mut sig = [0u8; 32];
    if value.len() != 64 {
        return Err(SigV4Error::MalformedSignature);
    }
    hex::decode_to_slice(value, &mut sig).map_err(|_| SigV4Error::MalformedSignature)?;
    Ok(sig)
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/scope, SignedHeaders=a;b, Signature=hex`.
///
/// Accepted variations: any run of spaces after the algorithm, components separated by
/// `,` with optional spaces around it, components in any order. Rejected: another
/// algorithm, a missing, repeated, unknown or empty component, spaces around `=`.
pub fn parse_authorization(value: &str) -> Result<AuthHeader, SigV4Error> {
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let (algorithm, rest) = value
        .split_once([' ', '\t'])
        .ok_or(SigV4Error::MalformedAuthorization("no components"))?;
    if algorithm != ALGORITHM {
        return Err(SigV4Error::UnsupportedAlgorithm);
    }
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for component in rest.split(',') {
        let component = component.trim_matches(|c| c == ' ' || c == '\t');
        if component.is_empty() {
            return Err(SigV4Error::MalformedAuthorization("empty component"));
        }
        let (key, val) = component
            .split_once('=')
            .ok_or(SigV4Error::MalformedAuthorization("component without '='"))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(SigV4Error::MalformedAuthorization("unknown component")),
        };
        if slot.replace(val).is_some() {
            return Err(SigV4Error::MalformedAuthorization("repeated component"));
        }
    }
    let credential = credential.ok_or(SigV4Error::MalformedAuthorization("no Credential"))?;
    let signed = signed.ok_or(SigV4Error::MalformedAuthorization("no SignedHeaders"))?;
    let signature = signature.ok_or(SigV4Error::MalformedAuthorization("no Signature"))?;
    Ok(AuthHeader {
        credential: Credential::parse(credential)?,
        signed_headers: parse_signed_headers(signed)?,
        signature: parse_signature(signature)?,
    })
}

/// The query parameters of a presigned SigV4 URL (`X-Amz-Security-Token` may come too).
pub const PRESIGNED_PARAMS: [&str; 6] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
];

/// Parses the `X-Amz-*` parameters of a presigned URL's raw query.
///
/// `Ok(None)` when there is no `X-Amz-Algorithm`; an error when it is there but anything
/// else is missing, repeated or malformed.
pub fn parse_presigned(query: &str) -> Result<Option<Presigned>, SigV4Error> {
    const NAMES: [&str; 6] = PRESIGNED_PARAMS; // in this order in `found`
    let mut found: [Option<String>; 6] = Default::default();
    for (name, value) in query_pairs(query) {
        if let Some(i) = NAMES.iter().position(|n| n.as_bytes() == name.as_slice()) {
            let value = String::from_utf8(value).map_err(|_| {
                SigV4Error::MalformedAuthorization("presigned parameter is not UTF-8")
            })?;
            if found[i].replace(value).is_some() {
                return Err(SigV4Error::DuplicateQueryParameter(NAMES[i]));
            }
        }
    }
    let [algorithm, credential, amz_date, expires, signed, signature] = found;
    let Some(algorithm) = algorithm else {
        return Ok(None);
    };
    if algorithm != ALGORITHM {
        return Err(SigV4Error::UnsupportedAlgorithm);
    }
    let need = |v: Option<String>, i: usize| v.ok_or(SigV4Error::MissingQueryParameter(NAMES[i]));
    let credential = Credential::parse(&need(credential, 1)?)?;
    let amz_date = need(amz_date, 2)?;
    let expires = need(expires, 3)?;
    let signed = need(signed, 4)?;
    let signature = need(signature, 5)?;
    validate_amz_date(&amz_date, &credential.scope)?;
    if expires.is_empty() || expires.len() > 7 || !expires.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SigV4Error::BadExpires);
    }
    let expires: u64 = expires.parse().map_err(|_| SigV4Error::BadExpires)?;
    if !(1..=MAX_EXPIRES).contains(&expires) {
        return Err(SigV4Error::BadExpires);
    }
    Ok(Some(Presigned {
        credential,
        amz_date,
        expires,
        signed_headers: parse_signed_headers(&signed)?,
        signature: parse_signature(&signature)?,
    }))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays literal. `+` stays `+`.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Appends `bytes` with everything but the AWS unreserved set (`A-Za-z0-9-._~`) as `%XX`.
fn uri_encode_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// The decoded `(name, value)` pairs of a raw query, in order; empty pieces skipped.
fn query_pairs(query: &str) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(name), percent_decode(value))
    })
}

/// The canonical URI, in the two styles AWS signers use.
///
/// With `normalize` (every AWS service but S3, and what botocore and the AWS SDKs do by
/// default): empty and `.` segments are dropped and `..` removes the previous one (RFC 3986
/// dot-segment removal plus duplicate-slash collapsing; a trailing `/`, `/.` or `/..` leaves
/// a trailing slash), then the path **as sent** is encoded once more: each byte outside the
/// unreserved set, `%` included, becomes `%XX`, so `/items/a%20b` is signed as
/// `/items/a%2520b` (double encoding).
///
/// Without it (S3 style): segments are kept as given, each percent-decoded then encoded once
/// with the unreserved set (`/` kept as separator, so an encoded `%2F` stays `%2F`).
///
/// An empty path is `/`.
pub fn canonical_uri(path: &str, normalize: bool) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    if normalize {
        let mut kept: Vec<&str> = Vec::new();
        for seg in path.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    kept.pop();
                }
                s => kept.push(s),
            }
        }
        let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
        for seg in &kept {
            out.push('/');
            uri_encode_into(&mut out, seg.as_bytes());
        }
        if trailing || kept.is_empty() {
            out.push('/');
        }
    } else {
        if path.is_empty() {
            return "/".to_owned();
        }
        for (i, seg) in path.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            uri_encode_into(&mut out, &percent_decode(seg));
        }
    }
    out
}

/// The canonical query string: each name and value percent-decoded and re-encoded with
/// the unreserved set, pairs sorted by encoded name then value, joined with `&`; a name
/// without `=` gets an empty value. `exclude_signature` drops `X-Amz-Signature`.
pub fn canonical_query(query: Option<&str>, exclude_signature: bool) -> String {
    let Some(query) = query else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = query_pairs(query)
        .filter(|(name, _)| !(exclude_signature && name.as_slice() == b"X-Amz-Signature"))
        .map(|(name, value)| {
            let mut n = String::with_capacity(name.len());
            uri_encode_into(&mut n, &name);
            let mut v = String::with_capacity(value.len());
            uri_encode_into(&mut v, &value);
            (n, v)
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Trims spaces/tabs at both ends and collapses inner runs of them to one space.
fn push_collapsed(out: &mut String, value: &str) {
    let mut pending_space = false;
    let mut started = false;
    for c in value.chars() {
        if c == ' ' || c == '\t' {
            pending_space = started;
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
            started = true;
        }
    }
}

/// `name:value\n` for each signed header, in the order given: the name lowercased, its
/// values (all of them, in order, joined with `,`) trimmed with inner space runs collapsed.
pub fn canonical_headers(
    headers: &http::HeaderMap,
    signed: &[String],
) -> Result<String, SigV4Error> {
    let mut out = String::new();
    for name in signed {
        let lower = name.to_ascii_lowercase();
        let mut values = headers.get_all(lower.as_str()).iter().peekable();
        if values.peek().is_none() {
            return Err(SigV4Error::MissingSignedHeader(lower));
        }
        out.push_str(&lower);
        out.push(':');
        for (i, value) in values.enumerate() {
            let value = std::str::from_utf8(value.as_bytes())
                .map_err(|_| SigV4Error::InvalidHeaderValue(lower.clone()))?;
            if i > 0 {
                out.push(',');
            }
            push_collapsed(&mut out, value);
        }
        out.push('\n');
    }
    Ok(out)
}

/// The canonical request: method, canonical URI, canonical query (without
/// `X-Amz-Signature` when `presigned`), canonical headers, signed header list, payload hash.
pub fn canonical_request(
    parts: &SignedParts<'_>,
    signed: &[String],
    normalize_path: bool,
    presigned: bool,
) -> Result<String, SigV4Error> {
    let headers = canonical_headers(parts.headers, signed)?;
    let mut out = String::with_capacity(256 + headers.len());
    out.push_str(parts.method);
    out.push('\n');
    out.push_str(&canonical_uri(parts.path, normalize_path));
    out.push('\n');
    out.push_str(&canonical_query(parts.query, presigned));
    out.push('\n');
    out.push_str(&headers);
    out.push('\n');
    for (i, name) in signed.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(&name.to_ascii_lowercase());
    }
    out.push('\n');
    out.push_str(parts.payload_hash);
    Ok(out)
}

/// `AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hex sha256(canonical_request)}`.
pub fn string_to_sign(amz_date: &str, scope: &Scope, canonical_request: &str) -> String {
    let hash = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{hash}")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret: &[u8], scope: &Scope) -> [u8; 32] {
    let mut k_secret = Vec::with_capacity(4 + secret.len());
    k_secret.extend_from_slice(b"AWS4");
    k_secret.extend_from_slice(secret);
    let k_date = hmac_sha256(&k_secret, scope.date.as_bytes());
    let k_region = hmac_sha256(&k_date, scope.region.as_bytes());
    let k_service = hmac_sha256(&k_region, scope.service.as_bytes());
    hmac_sha256(&k_service, TERMINATOR.as_bytes())
}

/// `HMAC-SHA256(signing_key, string_to_sign)`.
pub fn signature(signing_key: &[u8; 32], string_to_sign: &str) -> [u8; 32] {
    hmac_sha256(signing_key, string_to_sign.as_bytes())
}

/// `AWS4-HMAC-SHA256 Credential=AKID/scope, SignedHeaders=a;b, Signature=hex`.
pub fn authorization_value(
    access_key: &str,
    scope: &Scope,
    signed: &[String],
    signature: &[u8; 32],
) -> String {
    format!(
        "{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={}, Signature={}",
        signed.join(";"),
        hex::encode(signature)
    )
}

/// Constant-time equality of two signatures.
pub fn verify(expected: &[u8; 32], given: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(expected.ct_eq(given))
}
