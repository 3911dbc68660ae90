//! The outcome of an assertion: carry on, or refuse with a prepared HTTP answer.

use std::borrow::Cow;

use http::{HeaderName, HeaderValue, StatusCode};

/// What an assertion decided.
#[must_use]
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The request (or response) may go on to the next step.
    Continue,
    /// Stop here and answer with this rejection.
    Reject(Rejection),
}

impl Verdict {
    #[must_use]
    pub fn is_continue(&self) -> bool {
        matches!(self, Verdict::Continue)
    }
}

/// A refusal: the status, a stable machine-readable code, a human reason and any extra
/// headers (`WWW-Authenticate`, `Retry-After`). The gateway renders it as
/// `application/problem+json` (RFC 9457) in exactly one place. The reason never holds a
/// secret: it names what is wrong, not the value that was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    /// Short kebab-case code, becomes the problem `type` (`urn:portcullis:problem:<code>`).
    pub code: &'static str,
    /// Human-readable detail.
    pub detail: Cow<'static, str>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Rejection {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Rejection {
            status,
            code,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The problem title: the status's canonical reason.
    #[must_use]
    pub fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    /// `application/problem+json` body.
    #[must_use]
    pub fn problem_json(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "type": format!("urn:portcullis:problem:{}", self.code),
            "title": self.title(),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        serde_json::to_vec(&body).unwrap_or_default()
    }
}
