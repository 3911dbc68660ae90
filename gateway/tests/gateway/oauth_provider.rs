//! A local OAuth 2.0 provider for the broker tests, a real HTTP server (hyper) on an
//! ephemeral loopback port: an authorization page with a consent form
//! (`GET /authorize` → `POST /authorize` → redirect with `code` and `state`), a token
//! endpoint (`POST /token`, or `/{tenant}/token`) with the authorization-code grant (PKCE
//! S256 checked), refresh with rotation (the old refresh token dies), client credentials,
//! client authentication by Basic or the form, and a switch that answers `invalid_grant`
//! to every refresh. An admin-consent page (`/adminconsent`) redirects with `tenant`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "gateway-client";
/// The demo client secret the shipped policy reads (`fixtures/oproxy/demo-client-secret`).
pub const CLIENT_SECRET: &str = "demo-provider-client-secret";

#[derive(Debug, Clone)]
struct IssuedCode {
    redirect_uri: String,
    challenge: Option<String>,
    scope: String,
}

#[derive(Debug, Default)]
pub struct ProviderState {
    codes: Mutex<HashMap<String, IssuedCode>>,
    /// Live refresh tokens → scope.
    refresh_tokens: Mutex<HashMap<String, String>>,
    /// Every access token issued.
    pub access_tokens: Mutex<Vec<String>>,
    /// Every refresh token issued.
    pub issued_refresh: Mutex<Vec<String>>,
    /// Refresh tokens rotated on each refresh (default on).
    pub keep_refresh_tokens: AtomicBool,
    /// Answer `invalid_grant` to every refresh.
    pub refuse_refresh: AtomicBool,
    /// `expires_in` of access tokens.
    pub expires_in: AtomicU64,
    pub token_calls: AtomicUsize,
    pub refresh_calls: AtomicUsize,
    pub client_credentials_calls: AtomicUsize,
    /// Form fields of the last token request (to check what the gateway sent).
    pub last_form: Mutex<HashMap<String, String>>,
    /// `jti`s of the client assertions accepted (`private_key_jwt`): each is accepted once.
    pub assertion_ids: Mutex<Vec<String>>,
    counter: AtomicU64,
}

impl ProviderState {
    fn fresh(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).expect("random");
        format!("{prefix}-{n}-{}", URL_SAFE_NO_PAD.encode(random))
    }

    /// The last access token issued.
    pub fn last_access_token(&self) -> Option<String> {
        self.access_tokens.lock().expect("lock").last().cloned()
    }

    /// A refresh token the provider considers live.
    pub fn is_live(&self, refresh: &str) -> bool {
        self.refresh_tokens
            .lock()
            .expect("lock")
            .contains_key(refresh)
    }
}

pub struct OAuthProvider {
    pub addr: SocketAddr,
    pub state: Arc<ProviderState>,
    _rt: tokio::runtime::Runtime,
}

impl OAuthProvider {
    pub fn start() -> OAuthProvider {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(ProviderState {
            expires_in: AtomicU64::new(3600),
            ..ProviderState::default()
        });
        let shared = state.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        OAuthProvider {
            addr,
            state,
            _rt: rt,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn respond(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

fn oauth_error(status: u16, error: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "application/json",
        serde_json::json!({"error": error, "error_description": format!("provider says {error}")})
            .to_string(),
    )
}

fn redirect(location: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(302)
        .header("location", location)
        .body(Full::new(Bytes::new()))
        .expect("response")
}

fn form(text: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(text).into_owned().collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

async fn handle(
    state: Arc<ProviderState>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let query = form(parts.uri.query().unwrap_or("").as_bytes());
    let path = parts.uri.path().to_owned();
    Ok(match (parts.method.as_str(), path.as_str()) {
        ("GET", "/authorize") => consent_page(&query),
        ("POST", "/authorize") => consent_given(&state, &form(&body)),
        ("GET", "/adminconsent") => {
            let redirect_uri = query.get("redirect_uri").cloned().unwrap_or_default();
            let state_value = query.get("state").cloned().unwrap_or_default();
            redirect(&format!(
                "{redirect_uri}?admin_consent=True&tenant=7a2c8b1e-4d3f-4b2a-9c1d-0e5f6a7b8c9d&state={}",
                form_urlencoded::byte_serialize(state_value.as_bytes()).collect::<String>()
            ))
        }
        ("POST", p) if p == "/token" || p.ends_with("/token") => {
            let tenant = p
                .strip_suffix("/token")
                .and_then(|t| t.strip_prefix('/'))
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            token(&state, &parts.headers, &form(&body), tenant)
        }
        _ => respond(404, "text/plain", "not found".into()),
    })
}

fn consent_page(query: &HashMap<String, String>) -> Response<Full<Bytes>> {
    if query.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || query.get("response_type").map(String::as_str) != Some("code")
    {
        return respond(400, "text/plain", "unknown client or response type".into());
    }
    let hidden: String = [
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
    ]
    .iter()
    .filter_map(|name| {
        query.get(*name).map(|value| {
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                escape(value)
            )
        })
    })
    .collect();
    respond(
        200,
        "text/html",
        format!(
            "<!doctype html><html><body><h1>Allow the gateway?</h1>\
             <form method=\"post\" action=\"/authorize\">{hidden}\
             <button id=\"allow\" type=\"submit\" name=\"consent\" value=\"allow\">Allow</button>\
             <button id=\"deny\" type=\"submit\" name=\"consent\" value=\"deny\">Deny</button>\
             </form></body></html>"
        ),
    )
}

fn consent_given(state: &ProviderState, fields: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let redirect_uri = fields.get("redirect_uri").cloned().unwrap_or_default();
    let state_value = fields.get("state").cloned().unwrap_or_default();
    let state_param: String = form_urlencoded::byte_serialize(state_value.as_bytes()).collect();
    if fields.get("consent").map(String::as_str) != Some("allow") {
        return redirect(&format!(
            "{redirect_uri}?error=access_denied&state={state_param}"
        ));
    }
    if fields
        .get("code_challenge_method")
        .is_some_and(|m| m != "S256")
    {
        return respond(400, "text/plain", "only S256".into());
    }
    let code = state.fresh("code");
    state.codes.lock().expect("lock").insert(
        code.clone(),
        IssuedCode {
            redirect_uri: redirect_uri.clone(),
            challenge: fields.get("code_challenge").cloned(),
            scope: fields.get("scope").cloned().unwrap_or_default(),
        },
    );
    redirect(&format!("{redirect_uri}?code={code}&state={state_param}"))
}

/// The public key the gateway's `private_key_jwt` assertions verify with.
pub const CLIENT_ASSERTION_PUBLIC_KEY: &str = "fixtures/oauth/cloud-rs256-a.pub.pem";

/// A `private_key_jwt` client assertion (RFC 7523 §3): signed by the registered key, issuer
/// and subject the client id, for a token endpoint, unexpired, its `jti` never seen before.
fn assertion_ok(state: &ProviderState, fields: &HashMap<String, String>) -> bool {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let public = std::fs::read(root.join(CLIENT_ASSERTION_PUBLIC_KEY)).expect("public key");
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(&public) else {
        return false;
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.set_issuer(&[CLIENT_ID]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let Some(claims) = fields.get("client_assertion").and_then(|jwt| {
        jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &validation)
            .ok()
            .map(|data| data.claims)
    }) else {
        return false;
    };
    let for_a_token_endpoint = claims["aud"]
        .as_str()
        .is_some_and(|aud| aud.starts_with("http://127.0.0.1:") && aud.ends_with("/token"));
    let jti = claims["jti"].as_str().unwrap_or_default().to_owned();
    let mut seen = state.assertion_ids.lock().expect("lock");
    let fresh = !jti.is_empty() && !seen.contains(&jti);
    seen.push(jti);
    claims["sub"] == CLIENT_ID
        && fields.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && for_a_token_endpoint
        && fresh
        && !fields.contains_key("client_secret")
}

/// The client's credentials from Basic or the form.
fn client_ok(
    state: &ProviderState,
    headers: &http::HeaderMap,
    fields: &HashMap<String, String>,
) -> bool {
    if fields.get("client_assertion_type").map(String::as_str)
        == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return assertion_ok(state, fields);
    }
    if let Some(basic) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = STANDARD.decode(basic).unwrap_or_default();
        let text = String::from_utf8(decoded).unwrap_or_default();
        let Some((id, secret)) = text.split_once(':') else {
            return false;
        };
        let id: String = form_urlencoded::parse(format!("x={id}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let secret: String = form_urlencoded::parse(format!("x={secret}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        return id == CLIENT_ID && secret == CLIENT_SECRET && !fields.contains_key("client_secret");
    }
    fields.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && fields.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
}

fn tokens(state: &ProviderState, refresh: Option<String>, scope: &str) -> Response<Full<Bytes>> {
    let access = state.fresh("access");
    state
        .access_tokens
        .lock()
        .expect("lock")
        .push(access.clone());
    let mut body = serde_json::json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": state.expires_in.load(Ordering::Relaxed),
        "scope": scope,
    });
    if let Some(refresh) = refresh {
        state
            .issued_refresh
            .lock()
            .expect("lock")
            .push(refresh.clone());
        body["refresh_token"] = refresh.into();
    }
    respond(200, "application/json", body.to_string())
}

fn token(
    state: &ProviderState,
    headers: &http::HeaderMap,
    fields: &HashMap<String, String>,
    tenant: Option<String>,
) -> Response<Full<Bytes>> {
    state.token_calls.fetch_add(1, Ordering::Relaxed);
    *state.last_form.lock().expect("lock") = fields.clone();
    if !client_ok(state, headers, fields) {
        return oauth_error(401, "invalid_client");
    }
    match fields.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = fields.get("code").cloned().unwrap_or_default();
            let Some(issued) = state.codes.lock().expect("lock").remove(&code) else {
                return oauth_error(400, "invalid_grant");
            };
            if fields.get("redirect_uri") != Some(&issued.redirect_uri) {
                return oauth_error(400, "invalid_grant");
            }
            if let Some(challenge) = &issued.challenge {
                let verifier = fields.get("code_verifier").cloned().unwrap_or_default();
                if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != *challenge {
                    return oauth_error(400, "invalid_grant");
                }
            }
            let refresh = state.fresh("refresh");
            state
                .refresh_tokens
                .lock()
                .expect("lock")
                .insert(refresh.clone(), issued.scope.clone());
            tokens(state, Some(refresh), &issued.scope)
        }
        Some("refresh_token") => {
            state.refresh_calls.fetch_add(1, Ordering::Relaxed);
            if state.refuse_refresh.load(Ordering::Relaxed) {
                return oauth_error(400, "invalid_grant");
            }
            let presented = fields.get("refresh_token").cloned().unwrap_or_default();
            let mut live = state.refresh_tokens.lock().expect("lock");
            let Some(scope) = live.get(&presented).cloned() else {
                return oauth_error(400, "invalid_grant");
            };
            let scope = fields.get("scope").cloned().unwrap_or(scope);
            if state.keep_refresh_tokens.load(Ordering::Relaxed) {
                drop(live);
                return tokens(state, None, &scope);
            }
            // Rotation: the presented refresh token dies, a new one is issued.
            live.remove(&presented);
            let next = state.fresh("refresh");
            live.insert(next.clone(), scope.clone());
            drop(live);
            tokens(state, Some(next), &scope)
        }
        Some("client_credentials") => {
            state
                .client_credentials_calls
                .fetch_add(1, Ordering::Relaxed);
            if tenant.is_none() {
                return oauth_error(400, "invalid_request");
            }
            tokens(state, None, fields.get("scope").map_or("", String::as_str))
        }
        _ => oauth_error(400, "unsupported_grant_type"),
    }
}
