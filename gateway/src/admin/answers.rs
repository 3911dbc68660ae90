//! How the admin API answers: sized bodies, JSON, and refusals through the one renderer.

use http::{header, Response, StatusCode};
use portcullis_assertions::Rejection;

/// A response with an exact `Content-Length`, so clients can keep the connection.
pub fn sized(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let len = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    resp
}

pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Vec<u8>> {
    let mut resp = sized(
        status,
        "application/json",
        serde_json::to_vec_pretty(body).unwrap_or_default(),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

/// A refusal from the admin API, as [`crate::problem::render`] makes every refusal.
pub fn problem(
    status: StatusCode,
    code: &'static str,
    detail: impl Into<std::borrow::Cow<'static, str>>,
) -> Response<Vec<u8>> {
    refusal(&Rejection::new(status, code, detail))
}

/// Any rejection as an admin API answer.
pub fn refusal(rejection: &Rejection) -> Response<Vec<u8>> {
    let answer = crate::problem::render(rejection);
    let mut resp = Response::new(answer.body.to_vec());
    *resp.status_mut() = answer.status;
    for (name, value) in answer.headers {
        resp.headers_mut().append(name, value);
    }
    resp
}
