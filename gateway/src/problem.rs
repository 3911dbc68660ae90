//! How every refusal the gateway writes looks on the wire. [`render`] is the one function
//! that turns a [`Rejection`] into an answer: its status, an `application/problem+json` body
//! (RFC 9457), the headers every refusal carries and the rejection's own (`WWW-Authenticate`,
//! `Allow`, `Retry-After`...). The proxy (before and after the upstream), the connection
//! guards and the admin API all write what it returns, so a refusal reads the same wherever
//! it comes from.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, StatusCode};
use portcullis_assertions::Rejection;

/// A refusal ready to be written.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    /// Content type, length and caching first, then the rejection's own headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// The answer for `rejection`.
#[must_use]
pub fn render(rejection: &Rejection) -> Answer {
    let body = Bytes::from(rejection.problem_json());
    let mut headers = Vec::with_capacity(3 + rejection.headers.len());
    headers.push((
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    ));
    headers.push((CONTENT_LENGTH, HeaderValue::from(body.len())));
    // A refusal is about this request; no cache should answer the next one with it.
    headers.push((CACHE_CONTROL, HeaderValue::from_static("no-store")));
    headers.extend(rejection.headers.iter().cloned());
    Answer {
        status: rejection.status,
        headers,
        body,
    }
}

impl Answer {
    /// The answer as HTTP/1.1 bytes that close the connection: for the connection guards,
    /// which answer before (or instead of) Pingora's session.
    #[must_use]
    pub fn to_closing_http1(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or("Error")
        )
        .into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_carries_type_length_caching_and_its_own_headers() {
        let rejection = Rejection::new(StatusCode::TOO_MANY_REQUESTS, "slow-down", "wait")
            .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        let answer = render(&rejection);
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        let names: Vec<&str> = answer.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "content-length",
                "cache-control",
                "retry-after"
            ]
        );
        let body: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
        assert_eq!(body["type"], "urn:portcullis:problem:slow-down");
        assert_eq!(body["status"], 429);
        let wire = String::from_utf8(answer.to_closing_http1()).expect("utf8");
        assert!(wire.starts_with(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/problem+json\r\n"
        ));
        assert!(wire.contains(&format!("content-length: {}\r\n", answer.body.len())));
        assert!(wire.ends_with(
            &format!(
                "connection: close\r\n\r\n{}",
                String::from_utf8_lossy(&answer.body)
            )
            .replace("connection: close", "Connection: close")
        ));
    }
}
