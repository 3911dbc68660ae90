//! `mask_pan`: masks card numbers in response bodies, streaming, chunk by chunk.
//!
//! Only textual content types are scanned (JSON, XML, text, forms by default); binary bodies
//! pass untouched. The step asks the upstream for an uncompressed answer; an upstream that
//! gzips anyway is decompressed, masked and recompressed on the fly (the length then changes,
//! so `Content-Length` gives way to chunked framing). Any other content coding of a scanned
//! type is refused with a 502 rather than let through unscanned.

use std::io::Write as _;

use flate2::write::{GzDecoder, GzEncoder};
use http::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING,
};
use http::{HeaderValue, StatusCode};

use super::{MaskStyle, StreamMasker};
use crate::exchange::Exchange;
use crate::head::{RequestHead, RequestView, ResponseHead};
use crate::verdict::{Rejection, Verdict};
use crate::{Assertion, BodyProcessor};

/// Content types scanned when the policy does not say.
pub const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/xml",
    "application/x-www-form-urlencoded",
    "text/",
    "+json",
    "+xml",
];

/// What `mask_pan` does with a card number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Mask it and send the response on.
    Mask,
    /// Replace the whole response with a 502 (the gateway then sees the whole response
    /// before sending any of it).
    Block,
}

/// The compiled `mask_pan` step.
#[derive(Debug)]
pub struct MaskPan {
    style: MaskStyle,
    mode: Mode,
    /// On the request list: masks the request body instead of responses.
    request_side: bool,
    /// Lower-case prefixes (`text/`), exact types, or suffixes starting with `+` (`+json`).
    content_types: Vec<String>,
}

impl MaskPan {
    #[must_use]
    pub fn new(style: MaskStyle, mode: Mode, content_types: Vec<String>) -> Self {
        MaskPan {
            style,
            mode,
            request_side: false,
            content_types: content_types
                .into_iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
        }
    }

    /// The same step for a request list: masks the buffered request body before it goes up.
    #[must_use]
    pub fn for_requests(style: MaskStyle) -> Self {
        MaskPan {
            style,
            mode: Mode::Mask,
            request_side: true,
            content_types: Vec::new(),
        }
    }

    fn scans(&self, resp: &dyn ResponseHead) -> bool {
        let Some(ctype) = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        else {
            // No type: could be anything, including text; scan it.
            return true;
        };
        let essence = ctype
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.content_types.iter().any(|c| {
            if let Some(suffix) = c.strip_prefix('+') {
                essence.ends_with(&format!("+{suffix}"))
            } else if c.ends_with('/') {
                essence.starts_with(c.as_str())
            } else {
                essence == *c
            }
        })
    }
}

fn coding(resp: &dyn ResponseHead) -> String {
    resp.headers()
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase()
}

impl Assertion for MaskPan {
    fn kind(&self) -> &'static str {
        "mask_pan"
    }

    fn phases(&self) -> crate::Phases {
        if self.request_side {
            crate::Phases {
                request_body: true,
                ..crate::Phases::REQUEST
            }
        } else {
            // Upstream: asks for an uncompressed answer; response: refuses unscannable codings.
            crate::Phases {
                request: false,
                request_body: false,
                upstream_request: true,
                response: true,
                response_body: true,
                awaits_io: false,
                charges: false,
            }
        }
    }

    fn needs(&self) -> crate::Needs {
        if self.request_side {
            return crate::Needs::BODY;
        }
        match self.mode {
            Mode::Mask => crate::Needs::HEADERS,
            // The request goes through the gateway's buffering forwarder, which reads it first.
            Mode::Block => crate::Needs {
                request_body: true,
                whole_response: true,
            },
        }
    }

    fn on_upstream_request(
        &self,
        head: &mut dyn RequestHead,
        _body: Option<&[u8]>,
        _x: &mut Exchange,
    ) -> Verdict {
        if !self.request_side {
            head.set_header(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        }
        Verdict::Continue
    }

    fn on_request(&self, req: &mut crate::Request<'_>, x: &mut Exchange) -> Verdict {
        // A compressed request body cannot be masked in place: refuse rather than pass it on.
        let coded = req
            .head
            .headers()
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| !c.trim().eq_ignore_ascii_case("identity"));
        if self.request_side && coded && req.body.is_some_and(|b| !b.is_empty()) {
            return Verdict::Reject(Rejection::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unscannable-encoding",
                "the request body is compressed; send it uncompressed so card numbers can be masked",
            ));
        }
        x.note(|| "masks card numbers in the request body".to_owned());
        Verdict::Continue
    }

    fn rewrite_request_body(&self, body: &mut [u8], _x: &mut Exchange) -> usize {
        if self.request_side {
            super::mask_in_place(body, self.style)
        } else {
            0
        }
    }

    fn on_response(
        &self,
        _req: &dyn RequestView,
        resp: &mut dyn ResponseHead,
        _x: &mut Exchange,
    ) -> Verdict {
        if self.scans(resp) && !matches!(coding(resp).as_str(), "identity" | "" | "gzip" | "x-gzip")
        {
            return Verdict::Reject(Rejection::new(
                StatusCode::BAD_GATEWAY,
                "unscannable-encoding",
                "the upstream answered with a content coding the gateway cannot scan for card numbers",
            ));
        }
        Verdict::Continue
    }

    fn response_body(
        &self,
        _req: &dyn RequestView,
        resp: &mut dyn ResponseHead,
        x: &mut Exchange,
    ) -> Option<Box<dyn BodyProcessor>> {
        if !self.scans(resp) {
            x.note(|| "content type not scanned".to_owned());
            return None;
        }
        let gzip = coding(resp).contains("gzip");
        if self.mode == Mode::Block {
            return Some(Box::new(BlockPan {
                decoder: gzip.then(|| GzDecoder::new(Vec::new())),
                plain: Vec::new(),
                found: 0,
                unreadable: false,
            }));
        }
        let masker = StreamMasker::new(self.style);
        if gzip {
            resp.remove_header(&CONTENT_LENGTH);
            resp.set_header(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            return Some(Box::new(GzipMask {
                decoder: GzDecoder::new(Vec::new()),
                masker,
                encoder: Some(GzEncoder::new(Vec::new(), flate2::Compression::fast())),
                failed: false,
            }));
        }
        Some(Box::new(PlainMask { masker }))
    }
}

/// Block mode: passes the body through unchanged, and refuses the response at the end when
/// it holds a card number (or cannot be read).
struct BlockPan {
    decoder: Option<GzDecoder<Vec<u8>>>,
    plain: Vec<u8>,
    found: usize,
    unreadable: bool,
}

impl BodyProcessor for BlockPan {
    fn process(&mut self, chunk: &[u8], end: bool, out: &mut Vec<u8>) -> usize {
        out.extend_from_slice(chunk);
        match self.decoder.as_mut() {
            Some(d) => {
                if d.write_all(chunk).is_err() || (end && d.try_finish().is_err()) {
                    self.unreadable = true;
                }
                self.plain.append(d.get_mut());
            }
            None => self.plain.extend_from_slice(chunk),
        }
        if end {
            let mut copy = std::mem::take(&mut self.plain);
            self.found = super::mask_in_place(&mut copy, MaskStyle::default());
        }
        self.found
    }

    fn refusal(&self) -> Option<Rejection> {
        if self.unreadable {
            return Some(Rejection::new(
                StatusCode::BAD_GATEWAY,
                "unscannable-body",
                "the upstream's answer could not be decoded to check it for card numbers",
            ));
        }
        (self.found > 0).then(|| {
            Rejection::new(
                StatusCode::BAD_GATEWAY,
                "cardholder-data-blocked",
                "the upstream's answer held cardholder data and was withheld",
            )
        })
    }
}

/// Masks an identity-coded body; keeps its length.
struct PlainMask {
    masker: StreamMasker,
}

impl BodyProcessor for PlainMask {
    fn process(&mut self, chunk: &[u8], end: bool, out: &mut Vec<u8>) -> usize {
        let before = self.masker.masked();
        self.masker.push(chunk, out);
        if end {
            self.masker.finish(out);
        }
        self.masker.masked() - before
    }

    fn process_in_place(&mut self, chunk: &mut [u8], end: bool) -> Option<(usize, usize)> {
        self.masker.push_in_place(chunk, end)
    }
}

/// Decompresses a gzip body, masks it, and compresses it again, chunk by chunk.
struct GzipMask {
    decoder: GzDecoder<Vec<u8>>,
    masker: StreamMasker,
    encoder: Option<GzEncoder<Vec<u8>>>,
    /// A corrupt stream: nothing more is sent (fail closed).
    failed: bool,
}

impl BodyProcessor for GzipMask {
    fn process(&mut self, chunk: &[u8], end: bool, out: &mut Vec<u8>) -> usize {
        if self.failed {
            return 0;
        }
        let before = self.masker.masked();
        let ok =
            self.decoder.write_all(chunk).is_ok() && (!end || self.decoder.try_finish().is_ok());
        if !ok {
            // Never pass on bytes we could not scan.
            self.failed = true;
            return 0;
        }
        let plain = std::mem::take(self.decoder.get_mut());
        let mut masked = Vec::with_capacity(plain.len());
        self.masker.push(&plain, &mut masked);
        if end {
            self.masker.finish(&mut masked);
        }
        if let Some(enc) = self.encoder.as_mut() {
            let _ = enc.write_all(&masked);
            if end {
                if let Some(enc) = self.encoder.take() {
                    if let Ok(rest) = enc.finish() {
                        out.extend_from_slice(&rest);
                    }
                }
            } else {
                out.append(enc.get_mut());
            }
        }
        self.masker.masked() - before
    }
}
