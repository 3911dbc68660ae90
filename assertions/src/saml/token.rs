//! From the credentials of an `Authorization: SAML …` header to XML bytes: strict base64,
//! then, per an allow-list, raw DEFLATE, gzip or nothing, inflated under a hard output
//! cap so a compression bomb stops as soon as the cap is passed.

use std::io::Read;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The encodings a token may use after base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedEncodings {
    /// Raw DEFLATE (RFC 1951), as the SAML HTTP-Redirect binding uses.
    pub deflate: bool,
    /// gzip (RFC 1952), recognised by its magic bytes.
    pub gzip: bool,
    /// Plain XML.
    pub none: bool,
}

impl Default for AllowedEncodings {
    fn default() -> Self {
        AllowedEncodings {
            deflate: true,
            gzip: true,
            none: true,
        }
    }
}

/// Which encoding a token turned out to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Deflate,
    Gzip,
    None,
}

/// Why a token could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is empty")]
    Empty,
    #[error("the token is not strict base64 (standard alphabet, padded)")]
    Base64,
    #[error("the token is longer than {0} bytes")]
    TooLong(usize),
    #[error("the token uses {0:?}, which is not allowed")]
    EncodingNotAllowed(Encoding),
    #[error("the token's compressed data is invalid")]
    Inflate,
    #[error("the token inflates past the limit of {0} bytes")]
    InflatedTooLarge(usize),
}

/// Decodes the credentials part of the header into XML bytes of at most `max_xml` bytes.
///
/// Detection: gzip magic (`1f 8b`) means gzip; a first byte `<` (after optional
/// whitespace or a UTF-8 BOM) means plain XML when plain is allowed; anything else is
/// raw DEFLATE when that is allowed.
///
/// # Errors
/// A [`TokenError`] naming the failure.
pub fn decode_token(
    credentials: &str,
    allowed: AllowedEncodings,
    max_xml: usize,
) -> Result<(Vec<u8>, Encoding), TokenError> {
    if credentials.is_empty() {
        return Err(TokenError::Empty);
    }
    // Base64 of max_xml bytes of plain XML, compressed data is smaller in practice.
    let max_encoded = max_xml.div_ceil(3).saturating_mul(4);
    if credentials.len() > max_encoded {
        return Err(TokenError::TooLong(max_encoded));
    }
    let raw = STANDARD
        .decode(credentials)
        .map_err(|_| TokenError::Base64)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        if !allowed.gzip {
            return Err(TokenError::EncodingNotAllowed(Encoding::Gzip));
        }
        let out = bounded_read(flate2::read::GzDecoder::new(raw.as_slice()), max_xml)?;
        return Ok((out, Encoding::Gzip));
    }
    if looks_like_xml(&raw) && allowed.none {
        return Ok((raw, Encoding::None));
    }
    if allowed.deflate {
        let out = bounded_read(flate2::read::DeflateDecoder::new(raw.as_slice()), max_xml)?;
        return Ok((out, Encoding::Deflate));
    }
    if looks_like_xml(&raw) {
        Err(TokenError::EncodingNotAllowed(Encoding::None))
    } else {
        Err(TokenError::EncodingNotAllowed(Encoding::Deflate))
    }
}

fn looks_like_xml(raw: &[u8]) -> bool {
    let raw = raw.strip_prefix(b"\xef\xbb\xbf").unwrap_or(raw);
    raw.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'<')
}

/// Reads at most `cap + 1` bytes: one byte past the cap is enough to know it is too much,
/// and memory never holds more.
fn bounded_read(reader: impl Read, cap: usize) -> Result<Vec<u8>, TokenError> {
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::with_capacity(cap.min(16 * 1024));
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| TokenError::Inflate)?;
    if out.len() > cap {
        return Err(TokenError::InflatedTooLarge(cap));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn b64(b: &[u8]) -> String {
        STANDARD.encode(b)
    }

    fn deflate(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(b).expect("valid test input");
        e.finish().expect("valid test input")
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(b).expect("valid test input");
        e.finish().expect("valid test input")
    }

    const XML: &[u8] = b"<saml:Assertion/>";
    const ALL: AllowedEncodings = AllowedEncodings {
        deflate: true,
        gzip: true,
        none: true,
    };

    #[test]
    fn each_encoding_decodes_when_allowed() {
        assert_eq!(
            decode_token(&b64(XML), ALL, 1024),
            Ok((XML.to_vec(), Encoding::None))
        );
        assert_eq!(
            decode_token(&b64(&deflate(XML)), ALL, 1024),
            Ok((XML.to_vec(), Encoding::Deflate))
        );
        assert_eq!(
            decode_token(&b64(&gzip(XML)), ALL, 1024),
            Ok((XML.to_vec(), Encoding::Gzip))
        );
        let only_plain = AllowedEncodings {
            deflate: false,
            gzip: false,
            none: true,
        };
        assert_eq!(
            decode_token(&b64(&gzip(XML)), only_plain, 1024),
            Err(TokenError::EncodingNotAllowed(Encoding::Gzip))
        );
        assert_eq!(
            decode_token(&b64(&deflate(XML)), only_plain, 1024),
            Err(TokenError::EncodingNotAllowed(Encoding::Deflate))
        );
        let only_deflate = AllowedEncodings {
            deflate: true,
            gzip: false,
            none: false,
        };
        // Plain XML is not valid DEFLATE.
        assert_eq!(
            decode_token(&b64(XML), only_deflate, 1024),
            Err(TokenError::Inflate)
        );
    }

    #[test]
    fn base64_is_strict() {
        let good = b64(XML);
        for bad in [
            good.trim_end_matches('='), // padding missing
            &format!("{good} "),        // whitespace
            &format!(" {good}"),
            &good.replace('+', "-"),  // URL-safe alphabet
            "PHNhbWw+\nPC9zYW1sPg==", // line break
            "PHNhbWw+PC9zYW1sPh==",   // non-canonical trailing bits
            "%3Csaml",
        ] {
            if bad == good {
                continue;
            }
            assert_eq!(
                decode_token(bad, ALL, 1024),
                Err(TokenError::Base64),
                "{bad}"
            );
        }
        assert_eq!(decode_token("", ALL, 1024), Err(TokenError::Empty));
        assert!(matches!(
            decode_token(&"A".repeat(2000), ALL, 1024),
            Err(TokenError::TooLong(_))
        ));
    }

    #[test]
    fn a_compression_bomb_stops_at_the_cap() {
        // 16 MiB of zeros deflates to about 16 KiB; the cap is 128 KiB of output.
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..16 {
            e.write_all(&zeros).expect("valid test input");
        }
        let bomb = e.finish().expect("valid test input");
        assert!(bomb.len() < 32 * 1024, "{}", bomb.len());
        let cap = 64 * 1024;
        let token = b64(&bomb);
        let started = std::time::Instant::now();
        assert_eq!(
            decode_token(&token, ALL, 2 * cap).map(|(v, _)| v.len()),
            Err(TokenError::InflatedTooLarge(2 * cap))
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..16 {
            g.write_all(&zeros).expect("valid test input");
        }
        assert_eq!(
            decode_token(&b64(&g.finish().expect("valid test input")), ALL, 2 * cap)
                .map(|(v, _)| v.len()),
            Err(TokenError::InflatedTooLarge(2 * cap))
        );
        // Exactly at the cap is fine.
        let exact = vec![b'<'; 1000];
        assert_eq!(
            decode_token(&b64(&deflate(&exact)), ALL, 1000).map(|(v, _)| v.len()),
            Ok(1000)
        );
        assert_eq!(
            decode_token(&b64(&deflate(&exact)), ALL, 999),
            Err(TokenError::InflatedTooLarge(999))
        );
    }
}
