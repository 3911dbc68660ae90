//! The `Content-Length` a request head declares, read one way for every listener.

/// The body length a request head declares (`Content-Length`), when it holds a number:
/// what is refused before any of the body is read.
#[must_use]
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}
