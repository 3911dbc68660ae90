//! Pingora's request and response heads as assertions see them.

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use pingora::http::{RequestHeader, ResponseHeader};
use portcullis_assertions::{RequestHead, RequestView, ResponseHead};

/// Pingora's request head as an assertion sees it.
pub struct PingoraRequest<'a>(pub &'a mut RequestHeader);

impl RequestView for PingoraRequest<'_> {
    fn method(&self) -> &Method {
        &self.0.method
    }
    fn uri(&self) -> &Uri {
        &self.0.uri
    }
    fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }
}

impl RequestHead for PingoraRequest<'_> {
    fn set_header(&mut self, name: HeaderName, value: HeaderValue) {
        let _ = self.0.insert_header(name, value);
    }
    fn remove_header(&mut self, name: &HeaderName) {
        self.0.remove_header(name);
    }
}

/// A read-only view, for response-side templates.
pub struct PingoraRequestView<'a>(pub &'a RequestHeader);

impl RequestView for PingoraRequestView<'_> {
    fn method(&self) -> &Method {
        &self.0.method
    }
    fn uri(&self) -> &Uri {
        &self.0.uri
    }
    fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }
}

/// Pingora's response head as an assertion sees it.
pub struct PingoraResponse<'a>(pub &'a mut ResponseHeader);

impl ResponseHead for PingoraResponse<'_> {
    fn status(&self) -> StatusCode {
        self.0.status
    }
    fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }
    fn set_header(&mut self, name: HeaderName, value: HeaderValue) {
        let _ = self.0.insert_header(name, value);
    }
    fn remove_header(&mut self, name: &HeaderName) {
        self.0.remove_header(name);
    }
}
