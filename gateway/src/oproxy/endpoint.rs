//! The broker's routes on the proxy listener: reads what each needs of the request
//! (bounded), applies the failed-attempt limits to the token endpoint (per client address
//! and per registration, `client_limits.failed_auth_per_ip` / `_per_client`), and logs
//! every refusal with the registration id masked.

use std::net::IpAddr;

use http::header::{ACCEPT, COOKIE};
use http::{Method, StatusCode};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::token::{self, Refusal, MAX_BODY};
use super::{masked, registration, OProxy, Route};
use crate::auth_failures::{retry_after_secs, Gate};
use crate::oauth::endpoint::Answer;
use crate::store::now_secs;

fn json_answer(status: StatusCode, body: Vec<u8>, reason: Option<&'static str>) -> Answer {
    Answer {
        status,
        body,
        content_type: "application/json",
        headers: Vec::new(),
        reason,
    }
}

fn refusal_answer(refusal: &Refusal) -> Answer {
    json_answer(refusal.status, refusal.body(), Some(refusal.reason))
}

fn method_not_allowed(allow: &'static str) -> Answer {
    let mut answer = json_answer(
        StatusCode::METHOD_NOT_ALLOWED,
        serde_json::to_vec(&serde_json::json!({
            "error": "invalid_request",
            "error_description": format!("this route takes {allow}"),
        }))
        .unwrap_or_default(),
        Some("method-not-allowed"),
    );
    answer.headers.push(("allow", allow.to_owned()));
    answer
}

/// Serves one of the broker's routes.
///
/// # Errors
/// The request body could not be read.
pub async fn serve(
    broker: &OProxy,
    session: &mut Session,
    route: Route,
    gate: Gate<'_>,
) -> Result<Answer> {
    let head = session.req_header();
    let method = head.method.clone();
    let now = now_secs();
    match route {
        Route::Start(app) => {
            if method != Method::GET {
                return Ok(method_not_allowed("GET"));
            }
            Ok(registration::start(broker, &app, now).await)
        }
        Route::Callback => {
            if method != Method::GET {
                return Ok(method_not_allowed("GET"));
            }
            let query = head.uri.query().unwrap_or("").to_owned();
            let cookie = head
                .headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join("; ");
            let wants_json = head
                .headers
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/json"));
            Ok(registration::callback(broker, &query, Some(&cookie), wants_json, now).await)
        }
        Route::Token => {
            if method != Method::POST {
                return Ok(method_not_allowed("POST"));
            }
            serve_token(broker, session, gate, now).await
        }
    }
}

async fn serve_token(
    broker: &OProxy,
    session: &mut Session,
    gate: Gate<'_>,
    now: i64,
) -> Result<Answer> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > MAX_BODY {
            session.set_keepalive(None);
            return Ok(json_answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::to_vec(&serde_json::json!({
                    "error": "invalid_request",
                    "error_description": "the request body is too large",
                }))
                .unwrap_or_default(),
                Some("body-too-large"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let request = match token::parse(&body) {
        Ok(request) => request,
        Err(refusal) => {
            log_refusal(&refusal, None, gate.ip);
            return Ok(refusal_answer(&refusal));
        }
    };
    let id = request.registration_id.as_str();
    if let Some(wait) = gate.locked(Some(id)) {
        let seconds = retry_after_secs(wait);
        let mut answer = json_answer(
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::to_vec(&serde_json::json!({
                "error": "too_many_attempts",
                "error_description": format!("too many failed attempts from this address or for this registration; retry in {seconds} s"),
            }))
            .unwrap_or_default(),
            Some("too-many-failed-attempts"),
        );
        answer.headers.push(("retry-after", seconds.to_string()));
        log::warn!(
            "oproxy token refused: too-many-failed-attempts registration {} from {}",
            masked(id),
            gate.ip
        );
        return Ok(answer);
    }
    match token::exchange(broker, &request, now).await {
        Ok(granted) => {
            log::info!(
                "oproxy token issued: registration {} app {} from {}{}",
                masked(id),
                request.app_name,
                gate.ip,
                if granted.refresh_token.is_some() {
                    " (Token rotated)"
                } else {
                    ""
                }
            );
            Ok(json_answer(StatusCode::OK, granted.body(), None))
        }
        Err(refusal) => {
            if refusal.failed_attempt {
                gate.failed(Some(id));
            }
            log_refusal(&refusal, Some(id), gate.ip);
            Ok(refusal_answer(&refusal))
        }
    }
}

/// One masked line per refusal: the reason, the registration's first characters, the
/// client address; never the Token, the key or the encrypted token.
fn log_refusal(refusal: &Refusal, id: Option<&str>, ip: IpAddr) {
    log::warn!(
        "oproxy token refused: {} ({}) registration {} from {ip}",
        refusal.reason,
        refusal.status.as_u16(),
        id.map_or_else(|| "-".to_owned(), masked),
    );
}
