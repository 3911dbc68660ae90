//! The token service's HTTP endpoints on the proxy listener: `POST /oauth2/token`,
//! `POST /oauth2/introspect`, `POST /oauth2/revoke`, `GET /.well-known/jwks.json` and
//! `GET /.well-known/oauth-authorization-server`. Form-encoded requests, client
//! authentication by `client_secret_basic` or `client_secret_post`, errors in the RFC 6749
//! §5.2 form, answers marked `Cache-Control: no-store`.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, PRAGMA};
use http::{Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::error::ErrorCode;
use super::{
    Grant, OAuthError, TokenService, GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER,
    GRANT_REFRESH_TOKEN,
};
use crate::auth_failures::{retry_after_secs, Gate};
use crate::store::{now_secs, TokenFilter, TokenKind};

/// Largest form accepted.
const MAX_FORM: usize = 64 * 1024;

/// Which endpoint a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Token,
    Introspect,
    Revoke,
    Jwks,
    Metadata,
}

impl Endpoint {
    #[must_use]
    pub fn for_path(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/oauth2/token" => Endpoint::Token,
            "/oauth2/introspect" => Endpoint::Introspect,
            "/oauth2/revoke" => Endpoint::Revoke,
            "/.well-known/jwks.json" => Endpoint::Jwks,
            "/.well-known/oauth-authorization-server" => Endpoint::Metadata,
            _ => return None,
        })
    }

    /// For metrics.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::Introspect => "introspect",
            Endpoint::Revoke => "revoke",
            Endpoint::Jwks => "jwks",
            Endpoint::Metadata => "metadata",
        }
    }

    fn is_post(self) -> bool {
        matches!(
            self,
            Endpoint::Token | Endpoint::Introspect | Endpoint::Revoke
        )
    }
}

/// An answer, before it is written.
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// Extra headers (`WWW-Authenticate`, `Allow`).
    pub headers: Vec<(&'static str, String)>,
    /// For the access log: the OAuth error code, if any.
    pub reason: Option<&'static str>,
}

impl Answer {
    fn json(status: StatusCode, body: &serde_json::Value) -> Answer {
        Answer {
            status,
            body: serde_json::to_vec(body).unwrap_or_default(),
            content_type: "application/json",
            headers: Vec::new(),
            reason: None,
        }
    }

    fn error(e: &OAuthError, used_authorization: bool) -> Answer {
        let code = e.code;
        let mut a = Answer {
            status: code.status(),
            body: e.body(),
            content_type: "application/json",
            headers: Vec::new(),
            reason: Some(code.as_str()),
        };
        if let Some(challenge) = code.challenge(used_authorization) {
            a.headers.push(("www-authenticate", challenge.to_owned()));
        }
        if code == ErrorCode::TemporarilyUnavailable {
            a.headers.push(("retry-after", "5".to_owned()));
        }
        a
    }
}

/// The parsed form; a parameter given twice is an error (RFC 6749 §3.2).
struct Form(HashMap<String, String>);

impl Form {
    fn parse(body: &[u8]) -> Result<Form, OAuthError> {
        let mut out = HashMap::new();
        for (k, v) in form_urlencoded::parse(body) {
            if out.insert(k.clone().into_owned(), v.into_owned()).is_some() {
                return Err(ErrorCode::InvalidRequest.error(format!(
                    "parameter {} is given more than once",
                    super::printable(&k)
                )));
            }
        }
        Ok(Form(out))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn require(&self, k: &'static str) -> Result<&str, OAuthError> {
        self.get(k)
            .ok_or_else(|| ErrorCode::InvalidRequest.error(format!("the {k} parameter is missing")))
    }
}

/// Client credentials from `Authorization: Basic` (form-encoded id and secret, RFC 6749
/// §2.3.1) or the form; both at once is refused.
struct Credentials {
    id: Option<String>,
    secret: Option<String>,
    basic: bool,
}

fn credentials(auth: Option<&[u8]>, form: &Form) -> Result<Credentials, OAuthError> {
    let basic = auth.and_then(|v| {
        let v = std::str::from_utf8(v).ok()?;
        let (scheme, rest) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("basic")
            .then(|| rest.trim().to_owned())
    });
    let in_form = form.get("client_secret").is_some();
    match basic {
        Some(_) if in_form => Err(ErrorCode::InvalidRequest
            .error("use one client authentication method, not Basic and the form together")),
        Some(b64) => {
            let bad = || ErrorCode::InvalidClient.error("malformed Basic credentials");
            let raw = STANDARD.decode(b64).map_err(|_| bad())?;
            let raw = String::from_utf8(raw).map_err(|_| bad())?;
            let (id, secret) = raw.split_once(':').ok_or_else(bad)?;
            let decode = |s: &str| -> String {
                form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            let id = decode(id);
            if form.get("client_id").is_some_and(|f| f != id) {
                return Err(ErrorCode::InvalidRequest
                    .error("client_id in the form differs from the Basic credentials"));
            }
            Ok(Credentials {
                id: Some(id),
                secret: Some(decode(secret)),
                basic: true,
            })
        }
        None => Ok(Credentials {
            id: form.get("client_id").map(str::to_owned),
            secret: form.get("client_secret").map(str::to_owned),
            basic: false,
        }),
    }
}

/// Runs store work as a task of its own: when the client goes away mid-request, a refresh
/// token already spent still gets its successor written, and a revocation completes.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, OAuthError>> + Send + 'static,
) -> Result<T, OAuthError> {
    tokio::spawn(work)
        .await
        .unwrap_or_else(|_| Err(ErrorCode::ServerError.error("the request could not be completed")))
}

/// Serves one endpoint. The request head is already known; the body is read here.
pub async fn serve(
    token_service: &Arc<TokenService>,
    session: &mut Session,
    endpoint: Endpoint,
    gate: Gate<'_>,
) -> Result<Answer> {
    let method = session.req_header().method.clone();
    let wrong_method = if endpoint.is_post() {
        method != Method::POST
    } else {
        method != Method::GET && method != Method::HEAD
    };
    if wrong_method {
        let mut a = Answer::json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({
                "error": ErrorCode::InvalidRequest.as_str(),
                "error_description": "method not allowed here",
            }),
        );
        a.headers.push((
            "allow",
            if endpoint.is_post() {
                "POST"
            } else {
                "GET, HEAD"
            }
            .to_owned(),
        ));
        a.reason = Some("method-not-allowed");
        return Ok(a);
    }
    match endpoint {
        Endpoint::Jwks => {
            let mut a = Answer::json(StatusCode::OK, &serde_json::Value::Null);
            a.body.clone_from(&token_service.keys.jwks_json);
            a.content_type = "application/jwk-set+json";
            return Ok(a);
        }
        Endpoint::Metadata => {
            let mut a = Answer::json(StatusCode::OK, &serde_json::Value::Null);
            a.body.clone_from(&token_service.metadata_json);
            return Ok(a);
        }
        _ => {}
    }
    let form_type = session
        .req_header()
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let auth = session
        .req_header()
        .headers
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_FORM {
            let e = ErrorCode::InvalidRequest.error("the request body is too large");
            let mut a = Answer::error(&e, false);
            a.status = StatusCode::PAYLOAD_TOO_LARGE;
            session.set_keepalive(None);
            return Ok(a);
        }
    }
    if !form_type {
        return Ok(Answer::error(
            &ErrorCode::InvalidRequest
                .error("send the parameters as application/x-www-form-urlencoded"),
            false,
        ));
    }
    let form = match Form::parse(&body) {
        Ok(f) => f,
        Err(e) => return Ok(Answer::error(&e, false)),
    };
    let creds = match credentials(auth.as_deref(), &form) {
        Ok(c) => c,
        Err(e) => return Ok(Answer::error(&e, auth.is_some())),
    };
    let basic = creds.basic;
    // Brute-force protection: an address or client id that failed too often waits, whatever
    // it sends now (its credentials are not even checked).
    if let Some(wait) = gate.locked(creds.id.as_deref()) {
        return Ok(locked_out(wait));
    }
    let result = match endpoint {
        Endpoint::Token => token(token_service, &form, &creds).await,
        Endpoint::Introspect => introspect(token_service, &form, &creds).await,
        Endpoint::Revoke => revoke(token_service, &form, &creds).await,
        Endpoint::Jwks | Endpoint::Metadata => {
            Err(ErrorCode::ServerError.error("no such endpoint"))
        }
    };
    if let Err(error) = &result {
        if error.code == ErrorCode::InvalidClient {
            gate.failed(creds.id.as_deref());
        }
    }
    Ok(result.unwrap_or_else(|e| Answer::error(&e, basic)))
}

/// `429` in the token endpoint's own error format, with `Retry-After`.
fn locked_out(wait: std::time::Duration) -> Answer {
    let seconds = retry_after_secs(wait);
    let mut answer = Answer::json(
        StatusCode::TOO_MANY_REQUESTS,
        &serde_json::json!({
            "error": ErrorCode::InvalidClient.as_str(),
            "error_description": format!("too many failed client authentications from this address or for this client; retry in {seconds} s"),
        }),
    );
    answer.headers.push(("retry-after", seconds.to_string()));
    answer.reason = Some("too-many-failed-authentications");
    answer
}

fn authenticated<'t>(
    token_service: &'t TokenService,
    c: &Credentials,
) -> Result<&'t super::Client, OAuthError> {
    token_service
        .authenticate(c.id.as_deref(), c.secret.as_deref())?
        .ok_or_else(|| ErrorCode::InvalidClient.error("client authentication is required"))
}

async fn token(
    token_service: &Arc<TokenService>,
    form: &Form,
    creds: &Credentials,
) -> Result<Answer, OAuthError> {
    let grant_type = form.require("grant_type")?;
    let scope = form.get("scope");
    let grant = match grant_type {
        GRANT_CLIENT_CREDENTIALS => {
            let client = authenticated(token_service, creds)?;
            if !client.may(GRANT_CLIENT_CREDENTIALS) {
                return Err(ErrorCode::UnauthorizedClient
                    .error("this client may not use the client_credentials grant"));
            }
            let scope = TokenService::grant_scope(scope, &client.scopes, "this client")?;
            Grant {
                client_id: client.id.clone(),
                subject: client.id.clone(),
                scope,
                grant_type: GRANT_CLIENT_CREDENTIALS,
                format: client.token_format,
                refresh: client.refresh_tokens && client.may(GRANT_REFRESH_TOKEN),
                family_id: None,
                previous_refresh: None,
                source: None,
                once: None,
            }
        }
        GRANT_REFRESH_TOKEN => {
            let client = authenticated(token_service, creds)?.clone();
            if !client.may(GRANT_REFRESH_TOKEN) {
                return Err(
                    ErrorCode::UnauthorizedClient.error("this client may not use refresh tokens")
                );
            }
            let presented = form.require("refresh_token")?.to_owned();
            let scope = scope.map(str::to_owned);
            let svc = token_service.clone();
            let issued =
                detached(async move { svc.refresh(&client, &presented, scope.as_deref()).await })
                    .await?;
            return Ok(issued_answer(&issued));
        }
        GRANT_JWT_BEARER => {
            // Client authentication is optional for this grant; when it is sent it must hold.
            token_service.authenticate(creds.id.as_deref(), creds.secret.as_deref())?;
            let assertion = form.require("assertion")?;
            token_service.jwt_bearer(assertion, scope).await?
        }
        super::saml_bearer::GRANT_SAML2_BEARER if !token_service.saml_trusted.is_empty() => {
            // As for jwt-bearer (RFC 7522 section 3.2): optional, but checked when sent.
            token_service.authenticate(creds.id.as_deref(), creds.secret.as_deref())?;
            let assertion = form.require("assertion")?;
            token_service.saml_bearer(assertion, scope)?
        }
        other => {
            return Err(ErrorCode::UnsupportedGrantType.error(format!(
                "grant type {} is not supported",
                super::printable(other)
            )))
        }
    };
    let svc = token_service.clone();
    let issued = detached(async move { svc.issue(&grant).await }).await?;
    Ok(issued_answer(&issued))
}

fn issued_answer(issued: &super::Issued) -> Answer {
    Answer::json(
        StatusCode::OK,
        &serde_json::to_value(issued).unwrap_or_default(),
    )
}

async fn introspect(
    token_service: &Arc<TokenService>,
    form: &Form,
    creds: &Credentials,
) -> Result<Answer, OAuthError> {
    let client = authenticated(token_service, creds)?.clone();
    let token = form.require("token")?.to_owned();
    let svc = token_service.clone();
    let rec = detached(async move { Ok(svc.find_presented(&token).await?) }).await?;
    let now = now_secs();
    let inactive = || Answer::json(StatusCode::OK, &serde_json::json!({"active": false}));
    let Some(rec) = rec else {
        return Ok(inactive());
    };
    // A client sees its own tokens; a resource server (introspect: any) sees all.
    if rec.client_id != client.id && !client.introspect_any {
        return Ok(inactive());
    }
    if !rec.is_active(now) {
        return Ok(inactive());
    }
    let token_type = match rec.kind {
        TokenKind::Access => "Bearer",
        TokenKind::Refresh => "refresh_token",
    };
    Ok(Answer::json(
        StatusCode::OK,
        &serde_json::json!({
            "active": true,
            "scope": rec.scope,
            "client_id": rec.client_id,
            "sub": rec.subject,
            "token_type": token_type,
            "exp": rec.expires_at,
            "iat": rec.issued_at,
            "iss": token_service.issuer,
            "aud": token_service.audience,
            "jti": rec.id,
            "grant_type": rec.grant_type,
        }),
    ))
}

async fn revoke(
    token_service: &Arc<TokenService>,
    form: &Form,
    creds: &Credentials,
) -> Result<Answer, OAuthError> {
    let client = authenticated(token_service, creds)?.clone();
    let token = form.require("token")?.to_owned();
    let svc = token_service.clone();
    detached(async move {
        let Some(rec) = svc.find_presented(&token).await? else {
            // RFC 7009 §2.2: an unknown token is answered 200 all the same.
            return Ok(());
        };
        if rec.client_id != client.id {
            return Err(
                ErrorCode::UnauthorizedClient.error("the token was not issued to this client")
            );
        }
        let filter = match (&rec.kind, &rec.family_id) {
            // A refresh token takes its whole grant with it.
            (TokenKind::Refresh, Some(family)) => TokenFilter {
                family_id: Some(family.clone()),
                ..TokenFilter::default()
            },
            _ => TokenFilter {
                id: Some(rec.id.clone()),
                ..TokenFilter::default()
            },
        };
        svc.revoke(
            &filter,
            "client",
            Some("revoked by the client (RFC 7009)".to_owned()),
        )
        .await?;
        Ok(())
    })
    .await?;
    Ok(Answer {
        status: StatusCode::OK,
        body: Vec::new(),
        content_type: "application/json",
        headers: Vec::new(),
        reason: None,
    })
}

/// Writes an answer with the no-store headers every token response carries.
pub async fn write(session: &mut Session, a: &Answer) -> Result<()> {
    let mut resp = ResponseHeader::build(a.status, Some(5 + a.headers.len()))?;
    resp.insert_header(CONTENT_TYPE, a.content_type)?;
    resp.insert_header(CONTENT_LENGTH, a.body.len().to_string())?;
    resp.insert_header(CACHE_CONTROL, "no-store")?;
    resp.insert_header(PRAGMA, "no-cache")?;
    for (name, value) in &a.headers {
        resp.insert_header(*name, value.as_str())?;
    }
    let head_only = session.req_header().method == Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(Bytes::from(a.body.clone())), true)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(Form::parse(b"grant_type=a&grant_type=b").is_err());
        let f = Form::parse(b"grant_type=client_credentials&scope=a+b").expect("form");
        assert_eq!(f.get("scope"), Some("a b"));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let form = Form::parse(b"").expect("form");
        let v = format!("Basic {}", STANDARD.encode("my%20app:s%3Acret"));
        let c = credentials(Some(v.as_bytes()), &form).expect("creds");
        assert_eq!(c.id.as_deref(), Some("my app"));
        assert_eq!(c.secret.as_deref(), Some("s:cret"));
        let both = Form::parse(b"client_secret=x").expect("form");
        assert!(credentials(Some(v.as_bytes()), &both).is_err());
        assert!(credentials(Some(b"Basic !!!"), &form).is_err());
    }
}

/// The token endpoint's parsers over any input: never a panic, and a parameter given twice
/// is always refused (a stable stand-in for a fuzz target; see `docs` on fuzzing).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::test_cases(2048)))]

        #[test]
        fn form_and_basic_parsing_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), auth in prop::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(form) = Form::parse(&body) {
                let _ = credentials(Some(&auth), &form);
                let _ = credentials(None, &form);
            }
            let mut basic = b"Basic ".to_vec();
            basic.extend_from_slice(STANDARD.encode(&auth).as_bytes());
            if let Ok(form) = Form::parse(b"") {
                let _ = credentials(Some(&basic), &form);
            }
        }

        #[test]
        fn repeated_names_are_always_refused(name in "[a-z_]{1,12}", a in "[a-z0-9]{0,8}", b in "[a-z0-9]{0,8}") {
            let body = format!("{name}={a}&x=1&{name}={b}");
            prop_assert!(Form::parse(body.as_bytes()).is_err());
        }
    }
}
