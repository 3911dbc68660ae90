//! The request and response heads as assertions see them.
//!
//! Small object-safe traits so the same assertion code runs over Pingora's header types in
//! the gateway and over `http::request::Parts` in `eval`, tests and benchmarks.

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

/// A request head as far as reading goes (templates render from this, also on the way back).
pub trait RequestView {
    fn method(&self) -> &Method;
    fn uri(&self) -> &Uri;
    fn headers(&self) -> &HeaderMap;

    fn path(&self) -> &str {
        self.uri().path()
    }

    fn query(&self) -> Option<&str> {
        self.uri().query()
    }

    fn header(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.headers().get(name)
    }
}

/// A request head that steps can read and edit; edits flow to the upstream request.
pub trait RequestHead: RequestView {
    /// Replaces every value of `name` with `value`.
    fn set_header(&mut self, name: HeaderName, value: HeaderValue);
    fn remove_header(&mut self, name: &HeaderName);
}

/// A response head that steps can read and edit before it goes to the client.
pub trait ResponseHead {
    fn status(&self) -> StatusCode;
    fn headers(&self) -> &HeaderMap;
    fn set_header(&mut self, name: HeaderName, value: HeaderValue);
    fn remove_header(&mut self, name: &HeaderName);
}

impl RequestView for http::request::Parts {
    fn method(&self) -> &Method {
        &self.method
    }
    fn uri(&self) -> &Uri {
        &self.uri
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl RequestHead for http::request::Parts {
    fn set_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.headers.insert(name, value);
    }
    fn remove_header(&mut self, name: &HeaderName) {
        self.headers.remove(name);
    }
}

impl ResponseHead for http::response::Parts {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    fn set_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.headers.insert(name, value);
    }
    fn remove_header(&mut self, name: &HeaderName) {
        self.headers.remove(name);
    }
}
