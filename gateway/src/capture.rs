//! Captured requests: the JSON-lines format `portcullis replay` reads, and what the access
//! log's `capture` mode writes (docs/policy-testing.md, "Replay").
//!
//! A captured request is the client's request as the gateway received it, before any step
//! changed it, with what must not be kept taken out: every credential value (the
//! `Authorization` and `Proxy-Authorization` headers past their scheme, cookies' values, API
//! keys, tokens, signatures, in headers and in the query string) is replaced by a keyed hash
//! (HMAC-SHA256 under the capture key, `portcullis-hmac:` and 32 hex digits), so equal values
//! still match and `replay --credentials` can restore the ones the operator knows; and every
//! card number (in the target, header values and the body) is masked as in the access log.

use std::net::IpAddr;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a keyed hash starts with.
pub const HASH_PREFIX: &str = "portcullis-hmac:";

/// Largest body kept in a captured request; a larger one is cut and marked.
pub const MAX_CAPTURED_BODY: usize = 64 * 1024;

/// One request, as a line of a capture file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapturedRequest {
    /// When the request arrived, seconds since the Unix epoch.
    pub time: u64,
    /// The TCP peer's address.
    pub peer: IpAddr,
    pub method: String,
    /// Path and query, as sent (credential parameters hashed, card numbers masked).
    pub target: String,
    /// Header fields in order, as `[name, value]` pairs.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The request came in over HTTPS (absent: plain).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https: bool,
    /// The body, when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body in standard base64, when it is not text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// The body was longer than the capture keeps: replayed as cut, it may be judged
    /// differently from the original.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_truncated: bool,
    /// The service that took it and the status it got, when captured by the gateway (for
    /// the reader; replay recomputes both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl CapturedRequest {
    /// The body's bytes.
    ///
    /// # Errors
    /// `body_base64` that is not base64.
    pub fn body_bytes(&self) -> Result<Vec<u8>, String> {
        match (&self.body, &self.body_base64) {
            (Some(text), _) => Ok(text.as_bytes().to_vec()),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| format!("body_base64: {e}")),
            (None, None) => Ok(Vec::new()),
        }
    }
}

/// The key of the capture's keyed hashes. Never printed.
#[derive(Clone)]
pub struct CaptureKey {
    key: Vec<u8>,
    /// Header and query parameter names (lower-case) the policy's steps read credentials
    /// from, hashed whatever they are called (`X-Partner-Code`).
    policy_headers: Vec<String>,
    policy_params: Vec<String>,
}

impl std::fmt::Debug for CaptureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaptureKey([redacted])")
    }
}

impl CaptureKey {
    #[must_use]
    pub fn new(key: &[u8]) -> Self {
        CaptureKey {
            key: key.to_vec(),
            policy_headers: Vec::new(),
            policy_params: Vec::new(),
        }
    }

    /// Also treats these header and query parameter names as credentials: the places the
    /// policy's authenticating steps read.
    #[must_use]
    pub fn with_policy_places<'a>(
        mut self,
        headers: impl IntoIterator<Item = &'a str>,
        params: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        self.policy_headers = headers.into_iter().map(str::to_ascii_lowercase).collect();
        self.policy_params = params.into_iter().map(str::to_ascii_lowercase).collect();
        self
    }

    fn is_credential_header(&self, name: &str) -> bool {
        is_credential_header(name)
            || self
                .policy_headers
                .iter()
                .any(|header| header.eq_ignore_ascii_case(name))
    }

    /// Names are compared form-decoded, so `ap%69_key` is hashed like `api_key`.
    fn is_credential_param(&self, name: &str) -> bool {
        let decoded = crate::router::form_decode(name);
        is_credential_param(&decoded)
            || self
                .policy_params
                .iter()
                .any(|param| param.eq_ignore_ascii_case(&decoded))
    }

    /// `portcullis-hmac:` and the first 16 bytes of HMAC-SHA256(key, value), in hex.
    #[must_use]
    pub fn hash(&self, value: &str) -> String {
        // HMAC accepts keys of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return format!("{HASH_PREFIX}unavailable");
        };
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("{HASH_PREFIX}{}", hex::encode(&digest[..16]))
    }
}

/// Header fields whose values are credentials whatever else a policy says.
const CREDENTIAL_HEADERS: [&str; 8] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-amz-security-token",
    "x-csrf-token",
    "x-access-token",
];

/// Parts of a header or parameter name that say its value is a credential.
const CREDENTIAL_WORDS: [&str; 9] = [
    "token",
    "secret",
    "password",
    "passwd",
    "api-key",
    "apikey",
    "api_key",
    "signature",
    "credential",
];

/// More parts of a header name that may mean a credential: in headers, a value hashed for
/// nothing costs less than a credential kept (`Idempotency-Key` is hashed too).
const CREDENTIAL_HEADER_WORDS: [&str; 3] = ["auth", "key", "session"];

/// True when a header's value is a credential (names without regard to case).
#[must_use]
pub fn is_credential_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    CREDENTIAL_HEADERS.contains(&lower.as_str())
        || CREDENTIAL_WORDS.iter().any(|word| lower.contains(word))
        || CREDENTIAL_HEADER_WORDS
            .iter()
            .any(|word| lower.contains(word))
}

/// True when a query parameter's value is a credential.
#[must_use]
pub fn is_credential_param(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "key" | "sig" | "code" | "auth" | "session" | "sessionid"
    ) || lower.starts_with("x-amz-")
        || CREDENTIAL_WORDS.iter().any(|word| lower.contains(word))
}

fn mask_pans(text: &str) -> String {
    portcullis_assertions::pan::mask_str(text, portcullis_assertions::pan::MaskStyle::default())
        .into_owned()
}

/// A header value with its credential parts hashed.
fn header_value(key: &CaptureKey, name: &str, value: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower == "cookie" {
        return value
            .split(';')
            .map(|pair| match pair.split_once('=') {
                Some((cookie, v)) => format!("{cookie}={}", key.hash(v.trim())),
                None => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(";");
    }
    if lower == "authorization" || lower == "proxy-authorization" {
        // The scheme stays readable (`Bearer`, `Basic`, `AWS4-HMAC-SHA256`).
        return match value.split_once(' ') {
            Some((scheme, credential)) => format!("{scheme} {}", key.hash(credential.trim())),
            None => key.hash(value),
        };
    }
    if key.is_credential_header(name) {
        return key.hash(value);
    }
    mask_pans(value)
}

/// A request target with credential parameters hashed and card numbers masked.
fn target(key: &CaptureKey, target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return mask_pans(target);
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if key.is_credential_param(name) => {
                format!("{name}={}", key.hash(value))
            }
            _ => pair.to_owned(),
        })
        .collect();
    mask_pans(&format!("{path}?{}", params.join("&")))
}

/// Captures a request as the client sent it: `headers` in order, the `body` when it was
/// read (up to [`MAX_CAPTURED_BODY`]).
#[must_use]
pub fn capture<'h>(
    key: &CaptureKey,
    (time, peer, https): (u64, IpAddr, bool),
    (method, raw_target): (&str, &str),
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    body: Option<&[u8]>,
) -> CapturedRequest {
    let headers = headers
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value);
            (name.to_owned(), header_value(key, name, &value))
        })
        .collect();
    let captured = CapturedRequest {
        time,
        peer,
        method: method.to_owned(),
        target: target(key, raw_target),
        headers,
        https,
        body: None,
        body_base64: None,
        body_truncated: false,
        service: None,
        status: None,
    };
    match body {
        Some(bytes) => captured.with_body(bytes),
        None => captured,
    }
}

impl CapturedRequest {
    /// The request with its body (card numbers masked, cut at [`MAX_CAPTURED_BODY`]).
    #[must_use]
    pub fn with_body(mut self, bytes: &[u8]) -> CapturedRequest {
        if bytes.is_empty() {
            return self;
        }
        let cut = &bytes[..bytes.len().min(MAX_CAPTURED_BODY)];
        let mut masked = cut.to_vec();
        portcullis_assertions::pan::mask_in_place(
            &mut masked,
            portcullis_assertions::pan::MaskStyle::default(),
        );
        self.body_truncated = cut.len() < bytes.len();
        match String::from_utf8(masked) {
            Ok(text) => self.body = Some(text),
            Err(e) => {
                self.body_base64 =
                    Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes()));
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(
        headers: &[(&str, &str)],
        target_text: &str,
        body: Option<&[u8]>,
    ) -> CapturedRequest {
        let key = CaptureKey::new(b"capture-key");
        capture(
            &key,
            (1_780_000_000, IpAddr::from([203, 0, 113, 9]), false),
            ("POST", target_text),
            headers.iter().map(|(n, v)| (*n, v.as_bytes())),
            body,
        )
    }

    #[test]
    fn credentials_are_hashed_and_equal_values_still_match() {
        let one = captured(
            &[
                ("Authorization", "Bearer abc.def.ghi"),
                ("X-Api-Key", "demo-key-123"),
                ("Cookie", "session=s3cr3t; theme=dark"),
                ("Accept", "application/json"),
            ],
            "/a?api_key=k1&page=2",
            None,
        );
        let text = serde_json::to_string(&one).expect("json");
        for secret in ["abc.def.ghi", "demo-key-123", "s3cr3t", "k1&"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(one.headers[0].1.starts_with("Bearer portcullis-hmac:"));
        assert_eq!(one.headers[3].1, "application/json");
        assert!(one.target.ends_with("&page=2"));
        assert!(one.headers[2].1.contains("theme="));
        let again = captured(&[("X-Api-Key", "demo-key-123")], "/a", None);
        assert_eq!(again.headers[0].1, one.headers[1].1);
        let other = captured(&[("X-Api-Key", "demo-key-124")], "/a", None);
        assert_ne!(other.headers[0].1, one.headers[1].1);
        // Another key, another hash: a capture file does not let anyone test guesses
        // without the key.
        let other_key = CaptureKey::new(b"another").hash("demo-key-123");
        assert_ne!(other_key, one.headers[1].1);
    }

    #[test]
    fn places_the_policy_reads_are_hashed_whatever_their_names() {
        let key = CaptureKey::new(b"capture-test-key")
            .with_policy_places(["X-Partner-Code"], ["partner"]);
        let one = capture(
            &key,
            (0, IpAddr::from([127, 0, 0, 1]), false),
            ("GET", "/a?partner=p4ss&page=2&ap%69_key=k1"),
            [
                ("x-partner-code", b"c0de".as_slice()),
                ("accept", b"text/plain".as_slice()),
            ]
            .into_iter(),
            None,
        );
        let text = serde_json::to_string(&one).expect("json");
        for secret in ["c0de", "p4ss", "k1"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains("page=2") && text.contains("text/plain"),
            "{text}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::test_cases(256)))]

        /// Whatever a credential header, cookie or credential parameter holds, the capture
        /// holds only its keyed hash: the value never appears in the line.
        #[test]
        fn credential_values_never_reach_the_capture(
            value in "[A-Za-z0-9._~+/-]{12,40}",
            name in proptest::sample::select(vec!["Authorization", "X-Api-Key", "X-Auth-Token", "Proxy-Authorization", "X-Session-Token", "Client-Secret", "X-Partner-Auth", "X-Session", "Partner-Key"]),
        ) {
            let line = serde_json::to_string(&captured(
                &[(name, &format!("Bearer {value}")), ("Cookie", &format!("sid={value}"))],
                &format!("/p?access_token={value}&client_secret={value}"),
                None,
            ))
            .expect("json");
            proptest::prop_assert!(!line.contains(&value), "{}", line);
        }
    }

    #[test]
    fn card_numbers_are_masked_everywhere() {
        let pan = "4111111111111111";
        let one = captured(
            &[("X-Note", pan)],
            &format!("/cards/{pan}?n={pan}"),
            Some(format!("{{\"pan\":\"{pan}\"}}").as_bytes()),
        );
        let text = serde_json::to_string(&one).expect("json");
        assert!(!text.contains(pan), "{text}");
        assert!(text.contains("1111"));
    }

    #[test]
    fn long_and_binary_bodies_round_trip_as_marked() {
        let body = vec![0xffu8; MAX_CAPTURED_BODY + 10];
        let one = captured(&[], "/x", Some(&body));
        assert!(one.body_truncated);
        assert_eq!(one.body_bytes().expect("base64").len(), MAX_CAPTURED_BODY);
        let line = serde_json::to_string(&one).expect("json");
        let back: CapturedRequest = serde_json::from_str(&line).expect("parses");
        assert_eq!(back, one);
    }
}
