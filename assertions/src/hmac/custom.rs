//! The `template` scheme: an operator-defined string to sign, HMAC algorithm and encoding,
//! read from any header in a given format, for APIs that define their own HMAC scheme.
//!
//! ```yaml
//! - require_hmac:
//!     scheme: template
//!     keys: partners
//!     header: X-Signature
//!     format: "HMAC ${key_id}:${signature}"
//!     algorithm: sha256            # sha1 | sha256 | sha512
//!     encoding: base64             # base64 | hex
//!     date_header: X-Date
//!     string_to_sign: "${request.method}\n${request.path}\n${request.header.x-date}\n${body.sha256}"
//! ```

use std::sync::Arc;

use ::hmac::{Hmac, Mac};
use base64::Engine as _;
use http::{HeaderName, StatusCode};

use super::{fail, parse_any_date, sha256_hex, verify_with_key, Claim, HmacKey, RequireHmac};
use crate::exchange::Exchange;
use crate::template::Template;
use crate::verdict::Rejection;
use crate::Request;

/// The HMAC hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

/// How the signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Base64,
    Hex,
}

/// HMAC of `data` with `secret`.
#[must_use]
pub fn hmac(algorithm: Algorithm, secret: &[u8], data: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(secret: &[u8], data: &[u8]) -> Vec<u8> {
        match <M as hmac::digest::KeyInit>::new_from_slice(secret) {
            Ok(mut mac) => {
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }
    match algorithm {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(secret, data),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(secret, data),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(secret, data),
    }
}

impl Encoding {
    #[must_use]
    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
            Encoding::Hex => hex::encode(bytes),
        }
    }

    #[must_use]
    pub fn decode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .ok(),
            Encoding::Hex => hex::decode(text.trim()).ok(),
        }
    }
}

/// Where the key id and the signature sit in the header value: the literal text around them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFormat {
    prefix: String,
    middle: String,
    suffix: String,
    /// True when `${key_id}` comes before `${signature}`.
    key_first: bool,
}

impl HeaderFormat {
    /// Parses a format such as `HMAC ${key_id}:${signature}`.
    ///
    /// # Errors
    /// When the format lacks one of the two placeholders or has nothing between them.
    pub fn parse(format: &str) -> Result<HeaderFormat, String> {
        let (k, s) = (format.find("${key_id}"), format.find("${signature}"));
        let (Some(k), Some(s)) = (k, s) else {
            return Err("format must contain ${key_id} and ${signature}".to_owned());
        };
        let key_first = k < s;
        let (first, first_len, second, second_len) = if key_first {
            (k, "${key_id}".len(), s, "${signature}".len())
        } else {
            (s, "${signature}".len(), k, "${key_id}".len())
        };
        let middle = &format[first + first_len..second];
        if middle.is_empty() {
            return Err(
                "format needs text between ${key_id} and ${signature} to tell them apart"
                    .to_owned(),
            );
        }
        Ok(HeaderFormat {
            prefix: format[..first].to_owned(),
            middle: middle.to_owned(),
            suffix: format[second + second_len..].to_owned(),
            key_first,
        })
    }

    /// `(key_id, signature)` from a header value.
    #[must_use]
    pub fn split<'v>(&self, value: &'v str) -> Option<(&'v str, &'v str)> {
        let rest = value
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())?;
        let (a, b) = rest.split_once(self.middle.as_str())?;
        if a.is_empty() || b.is_empty() {
            return None;
        }
        Some(if self.key_first { (a, b) } else { (b, a) })
    }

    /// The header value for a key id and signature (for signing).
    #[must_use]
    pub fn join(&self, key_id: &str, signature: &str) -> String {
        let (a, b) = if self.key_first {
            (key_id, signature)
        } else {
            (signature, key_id)
        };
        format!("{}{a}{}{b}{}", self.prefix, self.middle, self.suffix)
    }
}

/// The compiled `template` scheme.
#[derive(Debug)]
pub struct CustomScheme {
    pub header: HeaderName,
    pub format: HeaderFormat,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    pub string_to_sign: Template,
    /// The header holding the request time (checked against the skew window).
    pub date_header: HeaderName,
}

impl CustomScheme {
    pub(crate) fn check(
        &self,
        step: &RequireHmac,
        req: &Request<'_>,
        body: &[u8],
        x: &mut Exchange,
    ) -> Result<Option<(Claim, Arc<HmacKey>)>, Rejection> {
        let head = &*req.head;
        let Some(value) = head.header(&self.header).and_then(|v| v.to_str().ok()) else {
            return Ok(None);
        };
        let (key_id, sig_text) = self.format.split(value).ok_or_else(|| {
            fail(
                StatusCode::BAD_REQUEST,
                "IncompleteSignature",
                format!(
                    "the {} header does not have the expected format",
                    self.header
                ),
            )
        })?;
        let signature = self.encoding.decode(sig_text).ok_or_else(|| {
            fail(
                StatusCode::BAD_REQUEST,
                "IncompleteSignature",
                "the signature is not in the expected encoding",
            )
        })?;
        let time = head
            .headers()
            .get(&self.date_header)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_any_date)
            .ok_or_else(|| {
                fail(
                    StatusCode::BAD_REQUEST,
                    "IncompleteSignature",
                    format!(
                        "the {} header with the request time is missing or not a date",
                        self.date_header
                    ),
                )
            })?;
        x.set_body_sha256(sha256_hex(body));
        let sts = self.string_to_sign.render(head, x);
        x.note(|| format!("string to sign:\n{sts}"));
        let claim = Claim {
            access_key: key_id.to_owned(),
            time,
            expires: None,
            signature,
        };
        let key = verify_with_key(step, &claim, |secret| {
            hmac(self.algorithm, secret, sts.as_bytes())
        })?;
        Ok(Some((claim, key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_split_and_join_both_ways() {
        let f = HeaderFormat::parse("HMAC ${key_id}:${signature}").expect("format");
        assert_eq!(f.split("HMAC abc:c2ln"), Some(("abc", "c2ln")));
        assert_eq!(f.split("Bearer abc:c2ln"), None);
        assert_eq!(f.join("abc", "c2ln"), "HMAC abc:c2ln");
        let g = HeaderFormat::parse("sig=${signature}, key=${key_id}").expect("format");
        assert_eq!(g.split("sig=AAA, key=k1"), Some(("k1", "AAA")));
        assert!(HeaderFormat::parse("${key_id}${signature}").is_err());
        assert!(HeaderFormat::parse("${signature}").is_err());
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mac = hmac(Algorithm::Sha256, b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mac = hmac(Algorithm::Sha1, b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }
}
