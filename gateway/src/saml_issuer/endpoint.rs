//! `POST /saml/token`: HTTP Basic against the users file, then a signed assertion.
//!
//! In order: the method (`405` but for `POST`); the body, read and dropped (`413` past
//! [`MAX_BODY`]); the Basic credentials (`401` with the challenge when missing or
//! malformed); the brute-force gate ([`crate::auth_failures`], surface `saml`: per address
//! and per user name, `429` with `Retry-After` before the password is even looked at);
//! the password, verified on the blocking pool, at most one per core at once (`503` when
//! none frees up in time); a wrong password or unknown user counts as a failure and gets
//! `401`. Refusals are problem+json; the success answer is JSON with `Cache-Control:
//! no-store`. Nothing here logs a password or a user name.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, PRAGMA, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use http::{HeaderValue, Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use portcullis_assertions::Rejection;

use super::SamlIssuer;
use crate::auth_failures::{retry_after_secs, Gate};
use crate::basic_auth::{basic_credentials, Credentials};

/// Largest request body read (and dropped): the request carries nothing in it.
pub const MAX_BODY: usize = 8 * 1024;

pub use super::Outcome;

/// Serves one request; the head is known, the body is read here.
///
/// # Errors
/// Reading the body failed (the client went away or broke its framing).
pub async fn serve(
    issuer: &Arc<SamlIssuer>,
    session: &mut Session,
    gate: Gate<'_>,
) -> Result<Outcome> {
    let head = session.req_header();
    if head.method != Method::POST {
        return Ok(Err(Rejection::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "the SAML issuer takes POST",
        )
        .with_header(ALLOW, HeaderValue::from_static("POST"))));
    }
    let credentials = basic_credentials(head.headers.get(AUTHORIZATION));
    if let Err(too_large) = drain_body(session).await? {
        return Ok(Err(too_large));
    }
    Ok(authenticate_and_issue(issuer, credentials, gate).await)
}

/// Reads the request body and drops it: an issuer takes nothing in it. Past [`MAX_BODY`]
/// the connection is not kept (the rest is never read) and the answer is `413`.
///
/// # Errors
/// Reading the body failed (the client went away or broke its framing).
pub async fn drain_body(session: &mut Session) -> Result<std::result::Result<(), Rejection>> {
    let declared = crate::content_length::declared_length(&session.req_header().headers);
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        session.set_keepalive(None);
        return Ok(Err(body_too_large()));
    }
    let mut seen = 0usize;
    while let Some(chunk) = session.read_request_body().await? {
        seen += chunk.len();
        if seen > MAX_BODY {
            session.set_keepalive(None);
            return Ok(Err(body_too_large()));
        }
    }
    Ok(Ok(()))
}

async fn authenticate_and_issue(
    issuer: &Arc<SamlIssuer>,
    credentials: Credentials,
    gate: Gate<'_>,
) -> Outcome {
    let (name, password) = match credentials {
        Credentials::Given { name, password } => (name, password),
        Credentials::Missing => {
            return Err(unauthorized(issuer, "HTTP Basic credentials are required"));
        }
        Credentials::Malformed => {
            gate.failed(None);
            return Err(unauthorized(issuer, "the Basic credentials are malformed"));
        }
    };
    if let Some(wait) = gate.locked(Some(&name)) {
        let seconds = retry_after_secs(wait);
        return Err(Rejection::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-failed-authentications",
            format!("too many failed authentications from this address or for this user; retry in {seconds} s"),
        )
        .with_header(RETRY_AFTER, HeaderValue::from(seconds)));
    }
    let _permit = super::signing_slot(issuer).await?;
    let work = issuer.clone();
    let user = name.clone();
    let verified = tokio::task::spawn_blocking(move || {
        work.users
            .as_ref()
            .and_then(|users| users.verify(&user, &password))
            .map(|u| work.issue(u, jiff::Timestamp::now()))
    })
    .await;
    match verified {
        Ok(Some(Ok(issued))) => Ok(serde_json::to_vec(&issued).unwrap_or_default()),
        Ok(None) => {
            gate.failed(Some(&name));
            Err(unauthorized(issuer, "the user name or password is wrong"))
        }
        Ok(Some(Err(e))) => {
            log::error!("saml issuer: cannot sign an assertion: {e}");
            Err(Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "assertion-not-signed",
                "the assertion could not be signed",
            ))
        }
        Err(e) => {
            log::error!("saml issuer: verification task failed: {e}");
            Err(Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "assertion-not-signed",
                "the credentials could not be checked",
            ))
        }
    }
}

fn unauthorized(issuer: &SamlIssuer, detail: &'static str) -> Rejection {
    Rejection::new(StatusCode::UNAUTHORIZED, "authentication-failed", detail)
        .with_header(WWW_AUTHENTICATE, issuer.challenge.clone())
}

fn body_too_large() -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        format!("the SAML issuer reads no body; at most {MAX_BODY} bytes are accepted"),
    )
}

/// Writes the success answer: JSON, never cached.
///
/// # Errors
/// The client went away.
pub async fn write_issued(session: &mut Session, json: Vec<u8>) -> Result<()> {
    let mut resp = ResponseHeader::build(StatusCode::OK, Some(4))?;
    resp.insert_header(CONTENT_TYPE, "application/json")?;
    resp.insert_header(CONTENT_LENGTH, json.len().to_string())?;
    resp.insert_header(CACHE_CONTROL, "no-store")?;
    resp.insert_header(PRAGMA, "no-cache")?;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(json)), true)
        .await?;
    Ok(())
}
