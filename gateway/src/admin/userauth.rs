//! The userauth API on the admin listener (`/api/oper/userauth`): access control, then the
//! protocol of [`crate::identity::userauth`].
//!
//! Access to the API, in order: the caller's address must be in `identity_api.allow_from`
//! (403); an address with too many failed attempts waits (429, [`crate::auth_failures`]);
//! then HTTP Basic credentials of the users file (checked on the blocking pool, at most
//! one per core at once) or the admin bearer token (constant time). Users not listed as
//! writers may only `GET` (403 on `POST` and `DELETE`). Every refusal has the API's own
//! JSON error shape. Nothing here logs a password, a token or a user name of the file.

use std::sync::Arc;

use http::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Response, StatusCode};
use pingora::protocols::http::ServerSession;
use portcullis_assertions::ip::canonical_ip;

use crate::auth_failures::{retry_after_secs, Gate, Surface};
use crate::basic_auth::{basic_credentials, Credentials};
use crate::identity::api::IdentityApi;
use crate::identity::userauth::{self, Answer, Refusal};
use crate::state::GatewayState;

/// How long a Basic verification may wait for a free core before the API answers 503.
const VERIFY_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What an authenticated caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Reader,
    Writer,
}

/// Answers a request to [`userauth::PATH`] on the admin listener.
pub async fn serve(state: &GatewayState, session: &mut ServerSession) -> Response<Vec<u8>> {
    match answer(state, session).await {
        Ok(answer) | Err(Refused::Answer(answer)) => respond(answer),
        Err(Refused::Response(response)) => response,
    }
}

/// A refusal before the operation: a plain answer, or a response with headers of its own.
enum Refused {
    Answer(Answer),
    Response(Response<Vec<u8>>),
}

impl From<Answer> for Refused {
    fn from(answer: Answer) -> Refused {
        Refused::Answer(answer)
    }
}

async fn answer(state: &GatewayState, session: &mut ServerSession) -> Result<Answer, Refused> {
    let rt = state.current();
    let Some(api) = rt.identity_api.clone() else {
        return Err(userauth::refused(&Refusal(
            StatusCode::NOT_FOUND,
            "the userauth API is not enabled (identity_api: in the policy)".to_owned(),
        ))
        .into());
    };
    let peer = session
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |addr| {
            canonical_ip(addr.ip())
        });
    if !api.allow_from.contains(peer) {
        return Err(userauth::refused(&Refusal(
            StatusCode::FORBIDDEN,
            "this source address may not use the API".to_owned(),
        ))
        .into());
    }
    let req = session.req_header();
    let method = req.method.clone();
    let query = req.uri.query().unwrap_or_default().to_owned();
    let content_type = req.headers.get(CONTENT_TYPE).cloned();
    let authorization = req.headers.get(AUTHORIZATION).cloned();
    let gate = Gate {
        failures: &state.auth_failures,
        limits: &rt.client_limits,
        surface: Surface::Userauth,
        ip: peer,
    };
    let role = authenticate(&api, rt.admin_token.as_ref(), authorization, &gate).await?;
    if !matches!(method, Method::GET | Method::POST | Method::DELETE) {
        return Err(userauth::refused(&Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET, POST or DELETE".to_owned(),
        ))
        .into());
    }
    if method != Method::GET && role != Role::Writer {
        return Err(userauth::refused(&Refusal(
            StatusCode::FORBIDDEN,
            "this user may only list (GET)".to_owned(),
        ))
        .into());
    }
    let body = match read_body(session).await {
        Ok(body) => body,
        Err(refusal) => return Err(userauth::refused(&refusal).into()),
    };
    let store = rt.store.identities().clone();
    let directory = state.carry().identity_directory_for(&store);
    let directory = directory.as_ref();
    Ok(match method {
        Method::GET => match userauth::parse_list(&query, &api.interfaces) {
            Ok(list) => userauth::list(&store, &list).await,
            Err(refusal) => userauth::refused(&refusal),
        },
        Method::DELETE => match userauth::parse_delete(&query, &api.interfaces) {
            Ok((ip, interface)) => {
                userauth::delete(&store, directory, ip, interface.as_deref()).await
            }
            Err(refusal) => userauth::refused(&refusal),
        },
        _ => match form(&query, content_type.as_ref(), &body)
            .and_then(|form| userauth::parse_add(form, &api.interfaces, crate::store::now_secs()))
        {
            Ok(entry) => userauth::add(&store, directory, &entry).await,
            Err(refusal) => userauth::refused(&refusal),
        },
    })
}

/// The `POST` form: the body, form-encoded UTF-8; parameters never in the URL.
fn form<'b>(
    query: &str,
    content_type: Option<&HeaderValue>,
    body: &'b [u8],
) -> Result<&'b str, Refusal> {
    let bad = |message: &str| Refusal(StatusCode::BAD_REQUEST, message.to_owned());
    if !query.is_empty() {
        return Err(bad(
            "parameters of a POST go in the form-encoded body, not in the URL",
        ));
    }
    let form_encoded = content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_encoded {
        return Err(bad(
            "the content type must be application/x-www-form-urlencoded",
        ));
    }
    std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Refusal> {
    let too_large = || {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("the body is larger than {} bytes", userauth::MAX_BODY),
        )
    };
    let declared = crate::content_length::declared_length(&session.req_header().headers);
    if declared.is_some_and(|n| n > userauth::MAX_BODY as u64) {
        session.set_keepalive(None);
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > userauth::MAX_BODY {
                    session.set_keepalive(None);
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(Refusal(
                    StatusCode::BAD_REQUEST,
                    "the body could not be read".to_owned(),
                ))
            }
        }
    }
}

/// Checks the credentials; an answer when they do not let the caller in.
async fn authenticate(
    api: &Arc<IdentityApi>,
    admin_token: Option<&crate::runtime::Secret>,
    authorization: Option<HeaderValue>,
    gate: &Gate<'_>,
) -> Result<Role, Refused> {
    let bearer = authorization.as_ref().is_some_and(|v| {
        v.as_bytes().len() > 7 && v.as_bytes()[..7].eq_ignore_ascii_case(b"bearer ")
    });
    let name = match basic_credentials(authorization.as_ref()) {
        Credentials::Given { name, .. } => Some(name),
        _ => None,
    };
    if let Some(wait) = gate.locked(name.as_deref()) {
        let seconds = retry_after_secs(wait);
        let mut response = respond(userauth::refused(&Refusal(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed authentications; retry in {seconds} s"),
        )));
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        return Err(Refused::Response(response));
    }
    if bearer {
        let matches = admin_token.is_some_and(|token| {
            super::token_matches(
                authorization.as_ref().map(HeaderValue::as_bytes),
                token.expose(),
            )
        });
        if matches {
            return Ok(Role::Writer);
        }
        gate.failed(None);
        return Err(unauthorized("the bearer token is not the admin token"));
    }
    let (name, password) = match basic_credentials(authorization.as_ref()) {
        Credentials::Given { name, password } => (name, password),
        Credentials::Missing => {
            return Err(unauthorized(
                "HTTP Basic credentials or the admin bearer token are required",
            ))
        }
        Credentials::Malformed => {
            gate.failed(None);
            return Err(unauthorized("the Basic credentials are malformed"));
        }
    };
    if api.users.is_none() {
        gate.failed(None);
        return Err(unauthorized("only the admin bearer token is accepted here"));
    }
    let Ok(Ok(_permit)) =
        tokio::time::timeout(VERIFY_QUEUE_WAIT, api.verifications.acquire()).await
    else {
        return Err(userauth::refused(&Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many authentications are being checked; try again shortly".to_owned(),
        ))
        .into());
    };
    let work = api.clone();
    let user = name.clone();
    let verified = tokio::task::spawn_blocking(move || {
        work.users
            .as_ref()
            .and_then(|users| users.verify(&user, &password))
            .map(|_| work.writers.contains(&user))
    })
    .await;
    match verified {
        Ok(Some(true)) => Ok(Role::Writer),
        Ok(Some(false)) => Ok(Role::Reader),
        Ok(None) | Err(_) => {
            gate.failed(Some(&name));
            Err(unauthorized("the user name or password is wrong"))
        }
    }
}

fn unauthorized(message: &str) -> Refused {
    userauth::refused(&Refusal(StatusCode::UNAUTHORIZED, message.to_owned())).into()
}

/// The answer as an HTTP response: compact JSON, never cached, with the challenge on 401
/// and the methods on 405.
fn respond((status, body): Answer) -> Response<Vec<u8>> {
    let mut resp = super::sized(status, "application/json", body);
    let headers = resp.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match status {
        StatusCode::UNAUTHORIZED => {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"portcullis-userauth\", charset=\"UTF-8\""),
            );
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            headers.insert(ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
        }
        _ => {}
    }
    resp
}
