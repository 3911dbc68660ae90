//! Refusals: how a rejection becomes an answer on the wire, and the gateway's own ones.

use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::{ErrorSource, ErrorType};
use std::borrow::Cow;

use portcullis_assertions::{Exchange, Rejection};

use super::context::RequestCtx;

/// Writes a refusal as [`crate::problem::render`] makes it.
pub async fn respond(session: &mut Session, r: &Rejection) -> Result<()> {
    let answer = crate::problem::render(r);
    let mut resp = ResponseHeader::build(answer.status, Some(answer.headers.len()))?;
    for (name, value) in answer.headers {
        resp.append_header(name, value)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(answer.body), true).await?;
    Ok(())
}

/// Answers a refusal; closes the connection when the request body was not read, since
/// what follows on the connection would be that body, not a request.
pub(super) async fn refuse(
    session: &mut Session,
    ctx: &mut RequestCtx,
    r: &Rejection,
    body_read: bool,
) -> Result<bool> {
    ctx.reason = Some(r.code);
    if !body_read && !session.is_body_empty() {
        session.set_keepalive(None);
    }
    respond(session, &with_response_headers(r, &ctx.exchange)).await?;
    Ok(true)
}

/// A refusal with the headers earlier steps asked for on the answer (a rate limit's
/// remaining quota, when a later step refused), as the client gets it.
#[must_use]
pub fn with_response_headers<'r>(r: &'r Rejection, exchange: &Exchange) -> Cow<'r, Rejection> {
    if exchange.response_headers().is_empty() {
        return Cow::Borrowed(r);
    }
    let mut with_headers = r.clone();
    with_headers
        .headers
        .extend(exchange.response_headers().iter().cloned());
    Cow::Owned(with_headers)
}

pub(super) fn client_timeout() -> Rejection {
    Rejection::new(
        StatusCode::REQUEST_TIMEOUT,
        "client-timeout",
        "the request was not received in time",
    )
}

pub(super) fn body_too_large(limit: u64) -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        format!("the request body is larger than this service accepts ({limit} bytes)"),
    )
}

/// Why the upstream exchange failed, as the client should hear it.
pub(super) fn upstream_failure(e: &Error) -> Option<Rejection> {
    use ErrorType::{ConnectTimedout, HTTPStatus, ReadTimedout, WriteTimedout};
    match (e.etype(), e.esource()) {
        (HTTPStatus(413), _) => Some(Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "the request body is larger than this service accepts",
        )),
        (HTTPStatus(code), _) => StatusCode::from_u16(*code)
            .ok()
            .map(|s| Rejection::new(s, "request-failed", s.canonical_reason().unwrap_or("error"))),
        (ConnectTimedout | ReadTimedout | WriteTimedout, ErrorSource::Upstream) => {
            Some(Rejection::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                "the upstream service did not answer in time",
            ))
        }
        (_, ErrorSource::Upstream) => Some(Rejection::new(
            StatusCode::BAD_GATEWAY,
            "upstream-unavailable",
            "the upstream service could not be reached or failed",
        )),
        (ReadTimedout, ErrorSource::Downstream) => Some(client_timeout()),
        (_, ErrorSource::Downstream) => None,
        _ => Some(Rejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "the gateway could not process the request",
        )),
    }
}

/// The refusal for a path an upstream could read differently from the router.
#[must_use]
pub fn ambiguous_path(detail: impl Into<std::borrow::Cow<'static, str>>) -> Rejection {
    Rejection::new(StatusCode::BAD_REQUEST, "ambiguous-path", detail)
}
