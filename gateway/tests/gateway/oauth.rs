//! The OAuth 2.0 token service and `require_bearer` through the real gateway: assertions
//! signed by an independent JOSE implementation (`jwt-simple`) with their keys served by a
//! real local HTTP server, key rotation without a restart, the issue → call → revoke →
//! refuse cycle, introspection, a restart that loses nothing (SQLite), attacks, and the
//! token management admin API.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jwt_simple::prelude::*;
use sha2::Digest as _;

use crate::common::{client, problem_code, Backend, TestGateway, ADMIN_TOKEN};

pub const ISSUER: &str = "https://gateway.test";
pub const TOKEN_ENDPOINT: &str = "https://gateway.test/oauth2/token";
pub const CLOUD: &str = "https://cloud.example/";
const GOOGLE_LIKE: &str = "https://accounts.google-like.example";
pub const BILLING_SECRET: &str = "billing-app-secret-0f3c9a";

/// A real HTTP server publishing key documents that a test can change, break and count.
pub struct KeyServer {
    pub addr: SocketAddr,
    docs: Arc<Mutex<Vec<(String, u16, String)>>>,
    /// Requests served, to see the gateway fetch again.
    pub hits: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl KeyServer {
    pub fn start() -> KeyServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let docs: Arc<Mutex<Vec<(String, u16, String)>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (docs.clone(), hits.clone());
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (d, h) = (d.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (d, h) = (d.clone(), h.clone());
                        async move {
                            h.fetch_add(1, Ordering::SeqCst);
                            let path = req.uri().path().to_owned();
                            let found = d
                                .lock()
                                .expect("lock")
                                .iter()
                                .find(|(p, _, _)| *p == path)
                                .map(|(_, s, b)| (*s, b.clone()));
                            let (status, body) = found.unwrap_or((404, String::new()));
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .header("cache-control", "public, max-age=3600")
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        KeyServer {
            addr,
            docs,
            hits,
            _rt: rt,
        }
    }

    /// Serves `body` with `status` at `path` from now on.
    pub fn publish(&self, path: &str, status: u16, body: &str) {
        let mut d = self.docs.lock().expect("lock");
        d.retain(|(p, _, _)| p != path);
        d.push((path.to_owned(), status, body.to_owned()));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/oauth")
}

pub fn pem(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).expect("fixture")
}

pub fn rsa_key(name: &str, kid: &str) -> RS256KeyPair {
    RS256KeyPair::from_pem(&pem(name))
        .expect("rsa key")
        .with_key_id(kid)
}

/// The JWK of an RSA key, built from its components.
pub fn rsa_jwk(key: &RS256KeyPair, kid: &str) -> serde_json::Value {
    let c = key.public_key().to_components();
    serde_json::json!({
        "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(c.n), "e": URL_SAFE_NO_PAD.encode(c.e),
    })
}

fn ec_jwk(key: &ES256KeyPair, kid: &str) -> serde_json::Value {
    let point = key.public_key().public_key().to_bytes_uncompressed();
    serde_json::json!({
        "kty": "EC", "kid": kid, "use": "sig", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    })
}

pub fn jwks(keys: &[serde_json::Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

fn unique() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "jti-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Claims of a jwt-bearer assertion from `iss` for role account `sub`.
pub fn assertion_claims(iss: &str, sub: &str) -> JWTClaims<NoCustomClaims> {
    Claims::create(Duration::from_mins(5))
        .with_issuer(iss)
        .with_subject(sub)
        .with_audience(TOKEN_ENDPOINT)
        .with_jwt_id(unique())
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// The token service part of a test policy; `{keys}` is the key server, `{state}` the state.
pub fn token_service(keys: &KeyServer, extra_service: &str) -> String {
    format!(
        r#"state: "{{state}}"
trusted_proxies: [127.0.0.1]
token_service:
  issuer: {ISSUER}
  access_token_ttl: 10m
  signing_keys:
    - {{kid: gw-2026a, file: {fx}/gateway-es256-2026a.pem}}
  clients:
    - id: billing-app
      secret_sha256: {billing}
      grants: [client_credentials, refresh_token]
      scopes: [widgets.read, widgets.write]
      refresh_tokens: true
    - id: opaque-app
      secret_sha256: {billing}
      scopes: [widgets.read]
      token_format: opaque
    - id: resource-server
      secret_sha256: {billing}
      grants: []
      scopes: []
      introspect: any
  trusted_issuers:
    - issuer: {CLOUD}
      keys_url: {jwks}
      client: cloud-apps
      min_refresh_interval: 1s
      accounts:
        role-account-x: {{scopes: [widgets.read]}}
        role-account-y: {{scopes: [widgets.read, widgets.write]}}
    - issuer: {GOOGLE_LIKE}
      keys_url: {certs}
      keys_format: x509_map
      algorithms: [RS256]
      client: gcp-apps
      accounts:
        builder@project.iam: {{scopes: [widgets.read]}}
  usage:
    flush_interval: 100ms
services:
  - name: widgets
    match: {{path: /widgets}}
    upstream: "{{backend}}"
    request:
      - require_bearer: {{scopes: [widgets.read]}}
      - set_header: {{name: X-Client-Id, value: "${{client.id}}"}}
      - set_header: {{name: X-Token-Sub, value: "${{token.sub}}"}}
      - set_header: {{name: X-Token-Scope, value: "${{token.scope}}"}}
      - remove_header: [Authorization]
  - name: widgets-admin
    match: {{path: /admin-widgets}}
    upstream: "{{backend}}"
    request:
      - require_bearer: {{scopes: [widgets.write]}}
{extra_service}"#,
        fx = fixtures().display(),
        billing = sha256_hex(BILLING_SECRET),
        jwks = keys.url("/jwks"),
        certs = keys.url("/certs"),
    )
}

/// Starts the gateway with the token-service policy, its `state:` line replaced by
/// `state_lines` (e.g. a Redis URL and its `redis:` block).
pub fn start_with_state(
    keys: &KeyServer,
    backend: &Backend,
    state_lines: &str,
    extra: &str,
) -> TestGateway {
    let text = token_service(keys, extra).replace("state: \"{state}\"", state_lines);
    TestGateway::start(&text, &backend.url())
}

/// Starts the gateway with the token-service policy; its state in `state`.
pub fn start(keys: &KeyServer, backend: &Backend, state: &Path, extra: &str) -> TestGateway {
    let text =
        token_service(keys, extra).replace("{state}", &format!("sqlite://{}", state.display()));
    TestGateway::start(&text, &backend.url())
}

fn token_request(
    gw: &TestGateway,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let mut req = client().post(gw.url("/oauth2/token")).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().expect("token endpoint");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().unwrap_or(serde_json::Value::Null);
    (status, body, headers)
}

fn jwt_bearer(gw: &TestGateway, assertion: &str, scope: Option<&str>) -> (u16, serde_json::Value) {
    let mut form = vec![
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", assertion),
    ];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    let (s, b, _) = token_request(gw, &form, None);
    (s, b)
}

/// A token-service gateway whose trusted issuers publish no keys, with its key server,
/// backend and state folder.
fn plain_gateway() -> (KeyServer, Backend, tempfile::TempDir, TestGateway) {
    gateway_with_keys(r#"{"keys":[]}"#)
}

/// The same, with the cloud issuer publishing `jwks_doc`.
fn gateway_with_keys(jwks_doc: &str) -> (KeyServer, Backend, tempfile::TempDir, TestGateway) {
    let keys = KeyServer::start();
    keys.publish("/jwks", 200, jwks_doc);
    keys.publish("/certs", 200, "{}");
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let gw = start(&keys, &backend, &dir.path().join("state.db"), "");
    (keys, backend, dir, gw)
}

pub fn client_credentials(
    gw: &TestGateway,
    client_id: &str,
    scope: Option<&str>,
) -> serde_json::Value {
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    let (status, body, headers) = token_request(gw, &form, Some((client_id, BILLING_SECRET)));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers
            .get("cache-control")
            .map(|v| v.to_str().expect("ascii")),
        Some("no-store")
    );
    body
}

pub fn call(gw: &TestGateway, path: &str, token: &str) -> reqwest::blocking::Response {
    client()
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .expect("call")
}

pub fn challenge(resp: &reqwest::blocking::Response) -> String {
    resp.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default()
}

pub fn form_post(
    gw: &TestGateway,
    path: &str,
    form: &[(&str, &str)],
    who: (&str, &str),
) -> (u16, serde_json::Value) {
    let resp = client()
        .post(gw.url(path))
        .basic_auth(who.0, Some(who.1))
        .form(form)
        .send()
        .expect("post");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(serde_json::Value::Null))
}

fn admin(gw: &TestGateway) -> (reqwest::blocking::Client, impl Fn(&str) -> String + '_) {
    (client(), move |p: &str| gw.admin_url(p))
}

#[test]
fn jwt_bearer_from_an_independent_signer_with_key_rotation_and_policy() {
    let keys = KeyServer::start();
    let key_a = rsa_key("cloud-rs256-a.key.pem", "key-a");
    let key_c = ES256KeyPair::from_pem(&pem("cloud-es256-c.key.pem"))
        .expect("ec")
        .with_key_id("key-c");
    keys.publish(
        "/jwks",
        200,
        &jwks(&[rsa_jwk(&key_a, "key-a"), ec_jwk(&key_c, "key-c")]),
    );
    let certs = serde_json::json!({"g-1": pem("cloud-rs256-a.cert.pem")});
    keys.publish("/certs", 200, &certs.to_string());
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let gw = start(&keys, &backend, &dir.path().join("state.db"), "");

    // RS256 assertion signed by jwt-simple, key published as a JWKS.
    let assertion = key_a
        .sign(assertion_claims(CLOUD, "role-account-x"))
        .expect("sign");
    let (status, body) = jwt_bearer(&gw, &assertion, Some("widgets.read"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "widgets.read");
    assert!(body.get("refresh_token").is_none());
    let token = body["access_token"].as_str().expect("token").to_owned();
    let resp = call(&gw, "/widgets/1", &token);
    assert_eq!(resp.status(), 200);
    let seen = backend.seen();
    let last = seen.last().expect("reached the backend");
    assert_eq!(last.headers["x-client-id"], "cloud-apps");
    assert_eq!(last.headers["x-token-sub"], "role-account-x");
    assert_eq!(last.headers["x-token-scope"], "widgets.read");
    assert!(last.headers.get("authorization").is_none());

    // ES256 from the same issuer.
    let es = key_c
        .sign(assertion_claims(CLOUD, "role-account-y"))
        .expect("sign");
    let (status, body) = jwt_bearer(&gw, &es, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "widgets.read widgets.write");

    // The Google form: a map of key id to X.509 certificate.
    let g = rsa_key("cloud-rs256-a.key.pem", "g-1")
        .sign(assertion_claims(GOOGLE_LIKE, "builder@project.iam"))
        .expect("sign");
    let (status, body) = jwt_bearer(&gw, &g, None);
    assert_eq!(status, 200, "{body}");

    // Rotation: the platform publishes key B and signs with it; no restart.
    let fetched = keys.hits.load(Ordering::SeqCst);
    let key_b = rsa_key("cloud-rs256-b.key.pem", "key-b");
    keys.publish("/jwks", 200, &jwks(&[rsa_jwk(&key_b, "key-b")]));
    std::thread::sleep(StdDuration::from_millis(1100)); // past min_refresh_interval
    let rotated = key_b
        .sign(assertion_claims(CLOUD, "role-account-x"))
        .expect("sign");
    let (status, body) = jwt_bearer(&gw, &rotated, None);
    assert_eq!(status, 200, "rotated key accepted: {body}");
    assert!(
        keys.hits.load(Ordering::SeqCst) > fetched,
        "the unknown kid caused a fetch"
    );

    // Policy: an account that is not listed, a scope the account may not have.
    let stranger = key_b
        .sign(assertion_claims(CLOUD, "role-account-z"))
        .expect("sign");
    let (status, body) = jwt_bearer(&gw, &stranger, None);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let greedy = key_b
        .sign(assertion_claims(CLOUD, "role-account-x"))
        .expect("sign");
    let (status, body) = jwt_bearer(&gw, &greedy, Some("widgets.read widgets.write"));
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope")),
        "{body}"
    );

    // A read-only token cannot reach the write API: 403 insufficient_scope.
    let resp = call(&gw, "/admin-widgets/1", &token);
    assert_eq!(resp.status(), 403);
    assert!(
        challenge(&resp).contains("error=\"insufficient_scope\""),
        "{}",
        challenge(&resp)
    );
}

#[test]
fn jwt_bearer_attacks_are_refused() {
    let key_a = rsa_key("cloud-rs256-a.key.pem", "key-a");
    let (_keys, _backend, _dir, gw) = gateway_with_keys(&jwks(&[rsa_jwk(&key_a, "key-a")]));
    let refused = |assertion: &str, why: &str| {
        let (status, body) = jwt_bearer(&gw, assertion, None);
        assert_eq!(status, 400, "{why}: {body}");
        assert_eq!(body["error"], "invalid_grant", "{why}: {body}");
        assert!(body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
    };
    let good_claims = || assertion_claims(CLOUD, "role-account-x");

    // alg none: header and payload, no signature.
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good_claims()).expect("json"));
    let none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)
    );
    refused(&none, "alg none");

    // HS256 "signed" with the issuer's RSA public key as the shared secret.
    let public_pem = pem("cloud-rs256-a.pub.pem");
    let hs = HS256Key::from_bytes(public_pem.as_bytes()).with_key_id("key-a");
    refused(
        &hs.authenticate(good_claims()).expect("mac"),
        "HS256 with the public key",
    );

    // Expired (beyond the leeway), wrong audience, from a key that is not published.
    let mut expired = good_claims();
    let past = Clock::now_since_epoch() - Duration::from_mins(30);
    expired.issued_at = Some(past - Duration::from_mins(5));
    expired.invalid_before = Some(past - Duration::from_mins(5));
    expired.expires_at = Some(past);
    refused(&key_a.sign(expired).expect("sign"), "expired");
    let wrong_aud = good_claims().with_audience("https://someone-else.example/token");
    refused(&key_a.sign(wrong_aud).expect("sign"), "wrong audience");
    let attacker = rsa_key("attacker-rs256.key.pem", "key-a");
    refused(
        &attacker.sign(good_claims()).expect("sign"),
        "signed by another key with a known kid",
    );

    // Tampered payload: the signature is over the original.
    let genuine = key_a.sign(good_claims()).expect("sign");
    let parts: Vec<&str> = genuine.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    claims["sub"] = serde_json::json!("role-account-y");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    refused(&tampered, "tampered payload");

    // Replay: the same assertion (same jti) twice.
    let once = key_a.sign(good_claims()).expect("sign");
    assert_eq!(jwt_bearer(&gw, &once, None).0, 200);
    refused(&once, "replayed jti");

    // No jti at all (replay protection needs one).
    let mut no_jti = good_claims();
    no_jti.jwt_id = None;
    refused(&key_a.sign(no_jti).expect("sign"), "no jti");

    // An issuer nobody trusts.
    refused(
        &key_a
            .sign(assertion_claims("https://evil.example/", "role-account-x"))
            .expect("sign"),
        "untrusted issuer",
    );

    // Garbage.
    refused("not-a-jwt", "garbage");
}

#[test]
fn a_key_set_that_cannot_be_had_is_unavailable_not_an_invalid_token() {
    let keys = KeyServer::start();
    keys.publish("/jwks", 500, "oops");
    keys.publish("/certs", 500, "oops");
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let gw = start(&keys, &backend, &dir.path().join("state.db"), "");
    let key_a = rsa_key("cloud-rs256-a.key.pem", "key-a");
    let assertion = key_a
        .sign(assertion_claims(CLOUD, "role-account-x"))
        .expect("sign");
    let (status, body, headers) = token_request(
        &gw,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &assertion),
        ],
        None,
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{body}"
    );
    assert!(headers.get("retry-after").is_some());
    let health = client()
        .get(gw.admin_url("/healthz"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("healthz");
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().expect("json");
    assert_eq!(health["status"], "degraded");
    let metrics = client()
        .get(gw.admin_url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains(&format!(
            "portcullis_key_set_up{{url=\"{}\"}} 0",
            keys.url("/jwks")
        )),
        "{metrics}"
    );

    // Once the URL answers, the same assertion's kind goes through; and when it fails
    // again, the last good set keeps serving.
    keys.publish("/jwks", 200, &jwks(&[rsa_jwk(&key_a, "key-a")]));
    std::thread::sleep(StdDuration::from_millis(1100));
    let fresh = key_a
        .sign(assertion_claims(CLOUD, "role-account-x"))
        .expect("sign");
    assert_eq!(jwt_bearer(&gw, &fresh, None).0, 200);
    keys.publish("/jwks", 500, "down again");
    std::thread::sleep(StdDuration::from_millis(1100));
    let later = key_a
        .sign(assertion_claims(CLOUD, "role-account-x"))
        .expect("sign");
    assert_eq!(jwt_bearer(&gw, &later, None).0, 200, "last good set serves");
}

#[test]
fn issue_call_revoke_refuse_introspect_and_restart_without_loss() {
    let keys = KeyServer::start();
    keys.publish("/jwks", 200, r#"{"keys":[]}"#);
    keys.publish("/certs", 200, "{}");
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let state = dir.path().join("state.db");
    let (jwt, opaque, kept);
    {
        let gw = start(&keys, &backend, &state, "");
        let body = client_credentials(&gw, "billing-app", Some("widgets.read"));
        jwt = body["access_token"].as_str().expect("jwt").to_owned();
        assert_eq!(jwt.split('.').count(), 3, "a JWT");
        assert_eq!(body["expires_in"], 600);
        let body = client_credentials(&gw, "opaque-app", None);
        opaque = body["access_token"].as_str().expect("opaque").to_owned();
        assert_eq!(opaque.split('.').count(), 1, "opaque");
        kept = client_credentials(&gw, "billing-app", None)["access_token"]
            .as_str()
            .expect("t")
            .to_owned();

        for t in [&jwt, &opaque, &kept] {
            for _ in 0..3 {
                assert_eq!(call(&gw, "/widgets/x", t).status(), 200);
            }
        }
        // Our JWT verifies against our published JWKS with another library.
        let jwks_doc: serde_json::Value = client()
            .get(gw.url("/.well-known/jwks.json"))
            .send()
            .expect("jwks")
            .json()
            .expect("json");
        assert_eq!(jwks_doc["keys"][0]["kid"], "gw-2026a");
        let meta: serde_json::Value = client()
            .get(gw.url("/.well-known/oauth-authorization-server"))
            .send()
            .expect("meta")
            .json()
            .expect("json");
        assert_eq!(meta["issuer"], ISSUER);
        assert_eq!(meta["token_endpoint"], TOKEN_ENDPOINT);
        assert!(meta["grant_types_supported"]
            .as_array()
            .expect("grants")
            .iter()
            .any(|g| g == "urn:ietf:params:oauth:grant-type:jwt-bearer"));

        // Introspection by the resource server: active.
        let rs = ("resource-server", BILLING_SECRET);
        let (status, body) = form_post(&gw, "/oauth2/introspect", &[("token", &jwt)], rs);
        assert_eq!(status, 200);
        assert_eq!(body["active"], true, "{body}");
        assert_eq!(body["client_id"], "billing-app");
        assert_eq!(body["scope"], "widgets.read");

        // The owner revokes (RFC 7009); the very next call is refused.
        let owner = ("billing-app", BILLING_SECRET);
        assert_eq!(
            form_post(&gw, "/oauth2/revoke", &[("token", &jwt)], owner).0,
            200
        );
        let resp = call(&gw, "/widgets/x", &jwt);
        assert_eq!(resp.status(), 401);
        let ch = challenge(&resp);
        assert!(ch.contains("error=\"invalid_token\""), "{ch}");
        assert!(ch.contains("revoked"), "{ch}");
        let (_, body) = form_post(&gw, "/oauth2/introspect", &[("token", &jwt)], rs);
        assert_eq!(body, serde_json::json!({"active": false}));
        // Another client cannot revoke someone else's token; an unknown token is fine.
        let other = ("opaque-app", BILLING_SECRET);
        assert_eq!(
            form_post(&gw, "/oauth2/revoke", &[("token", &kept)], other).0,
            400
        );
        assert_eq!(
            form_post(
                &gw,
                "/oauth2/revoke",
                &[("token", "nothing-like-it")],
                other
            )
            .0,
            200
        );
        // A client without introspect: any sees only its own tokens.
        let (_, body) = form_post(&gw, "/oauth2/introspect", &[("token", &kept)], other);
        assert_eq!(body["active"], false);
        // Revoke the opaque token through the admin API, as the subscriber.
        let admin_list: serde_json::Value = client()
            .get(gw.admin_url("/api/tokens?client=opaque-app"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .expect("list")
            .json()
            .expect("json");
        let id = admin_list["tokens"][0]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        assert_ne!(id, opaque, "the store keeps a digest, not the token");
        let r: serde_json::Value = client()
            .post(gw.admin_url(&format!("/api/tokens/{id}/revoke")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"by": "subscriber"}))
            .send()
            .expect("revoke")
            .json()
            .expect("json");
        assert_eq!(r["revoked"], 1);
        assert_eq!(call(&gw, "/widgets/x", &opaque).status(), 401);
    }
    // Restart on the same file: nothing lost.
    let gw = start(&keys, &backend, &state, "");
    assert_eq!(
        call(&gw, "/widgets/x", &jwt).status(),
        401,
        "revocation survived"
    );
    assert_eq!(
        call(&gw, "/widgets/x", &opaque).status(),
        401,
        "revocation survived"
    );
    assert_eq!(
        call(&gw, "/widgets/x", &kept).status(),
        200,
        "the token survived"
    );
    let list: serde_json::Value = client()
        .get(gw.admin_url("/api/tokens?client=billing-app&status=active&kind=access"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("list")
        .json()
        .expect("json");
    let tokens = list["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 1, "{list}");
    assert_eq!(
        tokens[0]["usage"]["count"], 4,
        "3 calls before the restart, 1 after: {list}"
    );
    assert_eq!(tokens[0]["usage"]["distinct_ips"], 1);
    assert_eq!(tokens[0]["usage"]["last_ip"], "127.0.0.1");
}

/// Two gateways on one SQLite file: a revocation made through one reaches the other's
/// verified-token cache through the store's revocation epoch (its upkeep looks at it every
/// flush interval, 100ms here), not only at the token's next first sight.
#[test]
fn a_revocation_through_one_gateway_reaches_another_sharing_the_store() {
    let keys = KeyServer::start();
    keys.publish("/jwks", 200, r#"{"keys":[]}"#);
    keys.publish("/certs", 200, "{}");
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let state = dir.path().join("shared.db");
    let revoking = start(&keys, &backend, &state, "");
    let serving = start(&keys, &backend, &state, "");
    let token = client_credentials(&revoking, "opaque-app", None)["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    // The serving gateway reads the record once and answers from its cache from then on.
    for _ in 0..3 {
        assert_eq!(call(&serving, "/widgets/x", &token).status(), 200);
    }
    let owner = ("opaque-app", BILLING_SECRET);
    assert_eq!(
        form_post(&revoking, "/oauth2/revoke", &[("token", &token)], owner).0,
        200
    );
    assert_eq!(call(&revoking, "/widgets/x", &token).status(), 401);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let resp = call(&serving, "/widgets/x", &token);
        if resp.status() == 401 {
            assert!(challenge(&resp).contains("revoked"), "{}", challenge(&resp));
            break;
        }
        assert_eq!(resp.status(), 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the other gateway still accepts a token revoked through the shared store"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn bearer_failures_follow_rfc_6750() {
    let (_keys, backend, _dir, gw) = plain_gateway();
    let token = client_credentials(&gw, "billing-app", Some("widgets.read"))["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    let resp = client().get(gw.url("/widgets/1")).send().expect("call");
    assert_eq!(resp.status(), 401);
    assert_eq!(challenge(&resp), "Bearer realm=\"widgets\"");

    let resp = client()
        .get(gw.url(&format!("/widgets/1?access_token={token}")))
        .send()
        .expect("call");
    assert_eq!(resp.status(), 400);
    assert!(challenge(&resp).contains("error=\"invalid_request\""));

    for bad in ["garbage", "a.b.c", &format!("{token}x")] {
        let resp = call(&gw, "/widgets/1", bad);
        assert_eq!(resp.status(), 401, "{bad}");
        assert!(challenge(&resp).contains("error=\"invalid_token\""));
    }
    // A refresh token is not an access token.
    let body = client_credentials(&gw, "billing-app", None);
    let refresh = body["refresh_token"].as_str().expect("refresh");
    assert_eq!(call(&gw, "/widgets/1", refresh).status(), 401);
    let before = backend.count();
    assert_eq!(call(&gw, "/admin-widgets/1", &token).status(), 403);
    assert_eq!(
        backend.count(),
        before,
        "nothing refused reached the upstream"
    );

    // Token endpoint errors (RFC 6749 §5.2).
    let cc = ("grant_type", "client_credentials");
    type Form<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Form, (&str, &str), u16, &str); 5] = [
        (&[cc], ("billing-app", "wrong"), 401, "invalid_client"),
        (
            &[("grant_type", "password")],
            ("billing-app", BILLING_SECRET),
            400,
            "unsupported_grant_type",
        ),
        (
            &[("scope", "x")],
            ("billing-app", BILLING_SECRET),
            400,
            "invalid_request",
        ),
        (
            &[cc, ("scope", "widgets.delete")],
            ("billing-app", BILLING_SECRET),
            400,
            "invalid_scope",
        ),
        (
            &[cc],
            ("resource-server", BILLING_SECRET),
            400,
            "unauthorized_client",
        ),
    ];
    for (form, who, status, error) in cases {
        let (got, body, headers) = token_request(&gw, form, Some(who));
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{form:?}"
        );
        assert!(body["error_description"].is_string());
        if error == "invalid_client" {
            assert!(headers.get("www-authenticate").is_some(), "Basic challenge");
        }
    }
    // The access log never holds a token.
    let log = gw.access_log();
    assert!(!log.contains(&token), "token in the access log");
    assert!(!log.contains(refresh));
}

#[test]
fn refresh_tokens_rotate_and_reuse_kills_the_family() {
    let (_keys, _backend, _dir, gw) = plain_gateway();
    let first = client_credentials(&gw, "billing-app", None);
    let r1 = first["refresh_token"].as_str().expect("refresh").to_owned();
    let who = Some(("billing-app", BILLING_SECRET));
    let (status, second, _) = token_request(
        &gw,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &r1),
            ("scope", "widgets.read"),
        ],
        who,
    );
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["scope"], "widgets.read");
    let a2 = second["access_token"].as_str().expect("access").to_owned();
    assert_eq!(call(&gw, "/widgets/1", &a2).status(), 200);
    // The old refresh token is dead; presenting it again revokes everything of the grant.
    let (status, body, _) = token_request(
        &gw,
        &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
        who,
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(call(&gw, "/widgets/1", &a2).status(), 401);
    let r2 = second["refresh_token"].as_str().expect("refresh");
    let (status, _, _) = token_request(
        &gw,
        &[("grant_type", "refresh_token"), ("refresh_token", r2)],
        who,
    );
    assert_eq!(status, 400);
    let list: serde_json::Value = client()
        .get(gw.admin_url("/api/tokens?client=billing-app&status=revoked"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("list")
        .json()
        .expect("json");
    let by: HashSet<&str> = list["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t["revoked_by"].as_str())
        .collect();
    assert_eq!(by, HashSet::from(["reuse"]), "{list}");
    assert_eq!(
        list["count"], 4,
        "both refresh tokens and both access tokens: {list}"
    );
}

#[test]
fn token_management_admin_api() {
    let key_a = rsa_key("cloud-rs256-a.key.pem", "key-a");
    let (_keys, _backend, _dir, gw) = gateway_with_keys(&jwks(&[rsa_jwk(&key_a, "key-a")]));
    let (http, url) = admin(&gw);
    let mut tokens = Vec::new();
    for sub in ["role-account-x", "role-account-x", "role-account-y"] {
        let a = key_a.sign(assertion_claims(CLOUD, sub)).expect("sign");
        let (status, body) = jwt_bearer(&gw, &a, Some("widgets.read"));
        assert_eq!(status, 200, "{body}");
        tokens.push(body["access_token"].as_str().expect("t").to_owned());
    }
    let cc = client_credentials(&gw, "billing-app", None)["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    for t in &tokens {
        assert_eq!(call(&gw, "/widgets/1", t).status(), 200);
    }
    let get = |p: &str| -> serde_json::Value {
        http.get(url(p))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .expect("admin")
            .json()
            .expect("json")
    };
    let by_client = get("/api/tokens?client=cloud-apps");
    assert_eq!(by_client["count"], 3);
    let t0 = &by_client["tokens"][0];
    assert_eq!(
        t0["grant_type"],
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    assert!(
        t0["source"].as_str().expect("source").starts_with(CLOUD),
        "{t0}"
    );
    assert_eq!(t0["usage"]["count"], 1);
    assert_eq!(get("/api/tokens?subject=role-account-x")["count"], 2);
    assert_eq!(
        get("/api/tokens?grant=client_credentials")["count"],
        2,
        "access and refresh"
    );

    // Revoke what one subscriber holds with one client (the pair).
    let r: serde_json::Value = http
        .post(url("/api/tokens/revoke"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"client": "cloud-apps", "subject": "role-account-x", "by": "app_owner", "reason": "device lost"}))
        .send()
        .expect("revoke")
        .json()
        .expect("json");
    assert_eq!(r["revoked"], 2);
    assert_eq!(call(&gw, "/widgets/1", &tokens[0]).status(), 401);
    assert_eq!(call(&gw, "/widgets/1", &tokens[1]).status(), 401);
    assert_eq!(call(&gw, "/widgets/1", &tokens[2]).status(), 200);
    assert_eq!(call(&gw, "/widgets/1", &cc).status(), 200);
    // An empty bulk revocation is refused.
    let resp = http
        .post(url("/api/tokens/revoke"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .expect("revoke");
    assert_eq!(resp.status(), 400);
    // Everything of one client, as the provider.
    let r: serde_json::Value = http
        .post(url("/api/tokens/revoke"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"client": "billing-app"}))
        .send()
        .expect("revoke")
        .json()
        .expect("json");
    assert_eq!(r["revoked"], 2);
    assert_eq!(call(&gw, "/widgets/1", &cc).status(), 401);

    let stats = get("/api/stats/clients");
    let cloud = stats["clients"]
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["client_id"] == "cloud-apps")
        .expect("cloud")
        .clone();
    assert_eq!(
        (
            cloud["tokens"].as_u64(),
            cloud["revoked"].as_u64(),
            cloud["uses"].as_u64()
        ),
        (Some(3), Some(2), Some(4)),
        "{cloud}"
    );
    assert_eq!(get("/api/clients/cloud-apps/stats")["active"], 1);
    let clients = get("/api/clients");
    assert!(clients.to_string().contains("billing-app"));
    assert!(
        !clients.to_string().contains(&sha256_hex(BILLING_SECRET)),
        "no secret digests shown"
    );

    let csv = http
        .get(url("/api/tokens/export?format=csv&client=cloud-apps"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("csv");
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().expect("text");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("id,kind,format,client_id,subject"));
    assert_eq!(lines.len(), 4, "{csv}");
    let jsonl = http
        .get(url("/api/tokens/export?format=jsonl"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("jsonl")
        .text()
        .expect("text");
    assert_eq!(jsonl.lines().count(), 5);
    for line in jsonl.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert!(v["id"].is_string());
    }
    for t in tokens.iter().chain([&cc]) {
        assert!(
            !csv.contains(t.as_str()) && !jsonl.contains(t.as_str()),
            "exports never hold tokens"
        );
    }
}

#[test]
fn unusual_usage_is_flagged_and_can_revoke() {
    let keys = KeyServer::start();
    keys.publish("/jwks", 200, r#"{"keys":[]}"#);
    keys.publish("/certs", 200, "{}");
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let state = dir.path().join("state.db");
    let text = token_service(&keys, "")
        .replace("{state}", &format!("sqlite://{}", state.display()))
        .replace(
            "    flush_interval: 100ms",
            "    flush_interval: 100ms\n    max_distinct_ips: 2\n    auto_revoke: true",
        );
    let gw = TestGateway::start(&text, &backend.url());
    let token = client_credentials(&gw, "billing-app", Some("widgets.read"))["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    for ip in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        let resp = client()
            .get(gw.url("/widgets/1"))
            .bearer_auth(&token)
            .header("x-forwarded-for", ip)
            .send()
            .expect("call");
        assert_eq!(resp.status(), 200);
    }
    let deadline = std::time::Instant::now() + StdDuration::from_secs(5);
    loop {
        if call(&gw, "/widgets/1", &token).status() == 401 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never revoked");
        std::thread::sleep(StdDuration::from_millis(100));
    }
    let list: serde_json::Value = client()
        .get(gw.admin_url("/api/tokens?flagged=true"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("list")
        .json()
        .expect("json");
    assert_eq!(list["count"], 1, "{list}");
    let t = &list["tokens"][0];
    assert_eq!(t["revoked_by"], "anomaly");
    assert!(
        t["flagged"]
            .as_str()
            .expect("reason")
            .contains("client addresses (limit 2)"),
        "{t}"
    );
}

#[test]
fn another_issuers_tokens_are_checked_against_its_jwks() {
    let keys = KeyServer::start();
    let idp = rsa_key("cloud-rs256-b.key.pem", "idp-1");
    keys.publish("/jwks", 200, r#"{"keys":[]}"#);
    keys.publish("/certs", 200, "{}");
    keys.publish("/idp-keys", 200, &jwks(&[rsa_jwk(&idp, "idp-1")]));
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let extra = format!(
        r#"  - name: partner-api
    match: {{path: /partner}}
    upstream: "{{backend}}"
    request:
      - require_bearer:
          scopes: [orders.read]
          issuer: {{issuer: "https://idp.example", keys_url: "{url}", audience: "api://orders", min_refresh_interval: 1s}}
      - set_header: {{name: X-Client-Id, value: "${{client.id}}"}}
"#,
        url = keys.url("/idp-keys")
    );
    let gw = start(&keys, &backend, &dir.path().join("state.db"), &extra);
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Extra {
        scope: String,
        client_id: String,
    }
    let claims = |aud: &str, scope: &str| {
        Claims::with_custom_claims(
            Extra {
                scope: scope.into(),
                client_id: "partner-7".into(),
            },
            Duration::from_mins(5),
        )
        .with_issuer("https://idp.example")
        .with_subject("user-42")
        .with_audience(aud)
    };
    let good = idp
        .sign(claims("api://orders", "orders.read"))
        .expect("sign");
    assert_eq!(call(&gw, "/partner/1", &good).status(), 200);
    assert_eq!(
        backend.seen().last().expect("seen").headers["x-client-id"],
        "partner-7"
    );
    assert_eq!(
        call(
            &gw,
            "/partner/1",
            &idp.sign(claims("api://other", "orders.read"))
                .expect("sign")
        )
        .status(),
        401
    );
    assert_eq!(
        call(
            &gw,
            "/partner/1",
            &idp.sign(claims("api://orders", "orders.write"))
                .expect("sign")
        )
        .status(),
        403
    );
    // The issuer rotates: a token from a new kid triggers a refresh and passes.
    let next = rsa_key("cloud-rs256-a.key.pem", "idp-2");
    keys.publish(
        "/idp-keys",
        200,
        &jwks(&[rsa_jwk(&idp, "idp-1"), rsa_jwk(&next, "idp-2")]),
    );
    std::thread::sleep(StdDuration::from_millis(1100));
    let resp = call(
        &gw,
        "/partner/1",
        &next
            .sign(claims("api://orders", "orders.read"))
            .expect("sign"),
    );
    assert_eq!(resp.status(), 200, "{}", challenge(&resp));
}

#[test]
fn the_shipped_token_service_policy_works_end_to_end() {
    let keys = KeyServer::start();
    let cloud = rsa_key("cloud-rs256-b.key.pem", "2026-12-01");
    keys.publish("/jwks", 200, &jwks(&[rsa_jwk(&cloud, "2026-12-01")]));
    let backend = Backend::start();
    let gw = TestGateway::from_policy_with(
        "oauth-token-service.yaml",
        &backend.url(),
        &[("http://127.0.0.1:9093", format!("http://{}", keys.addr))],
    );
    assert!(
        gw.dir.path().join("portcullis-tokens.db").exists(),
        "SQLite state beside the policy"
    );
    let secret = pem_text("reporting-app.secret");
    let (status, body, _) = token_request(
        &gw,
        &[("grant_type", "client_credentials")],
        Some(("reporting-app", &secret)),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "customers.read invoices.read");
    let token = body["access_token"].as_str().expect("token");
    assert!(body["refresh_token"].is_string());
    assert_eq!(call(&gw, "/customers/42", token).status(), 200);
    assert_eq!(call(&gw, "/invoices/7", token).status(), 200);
    assert_eq!(
        backend.seen().last().expect("seen").headers["x-client-id"],
        "reporting-app"
    );
    // The JWT names the signing key, and the JWKS publishes both keys.
    let header = jsonwebtoken_header(token);
    assert_eq!(header["kid"], "gw-2026a");
    assert_eq!(header["typ"], "at+jwt");
    let jwks_doc: serde_json::Value = client()
        .get(gw.url("/.well-known/jwks.json"))
        .send()
        .expect("jwks")
        .json()
        .expect("json");
    assert_eq!(jwks_doc["keys"].as_array().expect("keys").len(), 2);
    // A role account: only customers.
    let mut claims = assertion_claims("https://cloud.example.com", "role-account-x");
    claims.audiences = Some(Audiences::AsString(
        "https://gateway.example.com/oauth2/token".into(),
    ));
    let (status, body) = jwt_bearer(&gw, &cloud.sign(claims).expect("sign"), None);
    assert_eq!(status, 200, "{body}");
    let role = body["access_token"].as_str().expect("token");
    assert_eq!(call(&gw, "/customers/42", role).status(), 200);
    assert_eq!(call(&gw, "/invoices/7", role).status(), 403);
    // The resource server introspects it.
    let (status, body) = form_post(
        &gw,
        "/oauth2/introspect",
        &[("token", role)],
        ("customers-resource-server", "customers-rs-demo-secret"),
    );
    assert_eq!(
        (status, &body["active"], &body["sub"]),
        (
            200,
            &serde_json::json!(true),
            &serde_json::json!("role-account-x")
        )
    );
}

#[test]
fn the_shipped_bearer_protected_api_policy_works_end_to_end() {
    let keys = KeyServer::start();
    let idp = rsa_key("cloud-rs256-a.key.pem", "partner-idp-1");
    keys.publish(
        "/.well-known/jwks.json",
        200,
        &jwks(&[rsa_jwk(&idp, "partner-idp-1")]),
    );
    let backend = Backend::start();
    let gw = TestGateway::from_policy_with(
        "bearer-protected-api.yaml",
        &backend.url(),
        &[("http://127.0.0.1:9094", format!("http://{}", keys.addr))],
    );
    let mobile = pem_text("mobile-app.secret");
    let (status, body, _) = token_request(
        &gw,
        &[("grant_type", "client_credentials")],
        Some(("mobile-app", &mobile)),
    );
    assert_eq!(status, 200, "{body}");
    let opaque = body["access_token"].as_str().expect("token").to_owned();
    assert!(!opaque.contains('.'), "opaque");
    assert_eq!(call(&gw, "/widgets/1", &opaque).status(), 200);
    let resp = call(&gw, "/widgets/admin/1", &opaque);
    assert_eq!(resp.status(), 403);
    assert!(challenge(&resp).starts_with("Bearer realm=\"widgets\", error=\"insufficient_scope\""));
    // The admin prefix cannot be escaped by writing the path another way: an escaped
    // letter routes to the write service (and is refused for this token), the forms an
    // upstream may read differently are refused outright. None reaches the backend.
    let reached = backend.count();
    let resp = call(&gw, "/widgets/%61dmin/1", &opaque);
    assert_eq!(resp.status(), 403, "escaped letter");
    assert!(challenge(&resp).contains("insufficient_scope"));
    for variant in [
        "/widgets//admin/1",
        "/widgets;x/admin/1",
        "/widgets/admin;x/1",
        "/widgets/admin./1",
        "/widgets/admin%20/1",
        "/widgets/%2561dmin/1",
    ] {
        let (status, code, _) = problem_code(call(&gw, variant, &opaque));
        assert_eq!(
            (status, code.as_str()),
            (400, "ambiguous-path"),
            "{variant}"
        );
    }
    assert_eq!(backend.count(), reached, "no variant reached the backend");
    // What is allowed goes upstream in canonical form: the upstream reads what was routed.
    assert_eq!(call(&gw, "/widgets/%31", &opaque).status(), 200);
    assert_eq!(backend.seen().last().expect("seen").uri, "/widgets/1");
    let (status, body, _) = token_request(
        &gw,
        &[("grant_type", "client_credentials")],
        Some(("batch-job", "batch-job-demo-secret")),
    );
    assert_eq!(status, 200, "{body}");
    let jwt = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(call(&gw, "/widgets/admin/1", &jwt).status(), 200);
    let resp = client()
        .get(gw.url(&format!("/widgets/1?access_token={opaque}")))
        .send()
        .expect("call");
    assert_eq!(resp.status(), 400);

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Scoped {
        scope: String,
        azp: String,
    }
    let claims = Claims::with_custom_claims(
        Scoped {
            scope: "orders.read".into(),
            azp: "partner-portal".into(),
        },
        Duration::from_mins(5),
    )
    .with_issuer("https://idp.partner.example")
    .with_subject("alice@partner.example")
    .with_audience("https://api.example.com/partner");
    let partner = idp.sign(claims).expect("sign");
    assert_eq!(call(&gw, "/partner/orders", &partner).status(), 200);
    let seen = backend.seen();
    let last = seen.last().expect("seen");
    assert_eq!(last.headers["x-partner-client"], "partner-portal");
    assert_eq!(last.headers["x-partner-user"], "alice@partner.example");
    assert!(last.headers.get("authorization").is_none());
    // Our own tokens are not the partner IdP's.
    assert_eq!(call(&gw, "/partner/orders", &jwt).status(), 401);
}

fn pem_text(name: &str) -> String {
    pem(name).trim_end().to_owned()
}

/// The decoded header of a JWT.
fn jsonwebtoken_header(token: &str) -> serde_json::Value {
    let head = token.split('.').next().expect("header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).expect("b64")).expect("json")
}

#[test]
fn tokens_are_checked_at_a_remote_introspection_endpoint() {
    // The authorization server: another gateway with a token service (its RFC 7662 endpoint).
    let keys = KeyServer::start();
    keys.publish("/jwks", 200, r#"{"keys":[]}"#);
    keys.publish("/certs", 200, "{}");
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let auth = start(&keys, &backend, &dir.path().join("as.db"), "");
    // The resource gateway: no token service of its own, introspects every new token there.
    let secret_file = dir.path().join("rs-secret");
    std::fs::write(&secret_file, BILLING_SECRET).expect("secret");
    let policy = |ttl: &str| {
        format!(
            r#"  rs_secret: {{file: {secret}}}
services:
  - name: reports
    match: {{path: /reports}}
    upstream: "{{backend}}"
    request:
      - require_bearer:
          scopes: [widgets.read]
          introspection:
            url: {url}
            client_id: resource-server
            client_secret: rs_secret
            cache_ttl: {ttl}
      - set_header: {{name: X-Client-Id, value: "${{client.id}}"}}
"#,
            secret = secret_file.display(),
            url = auth.url("/oauth2/introspect"),
        )
    };
    let rs = TestGateway::start(&policy("0s"), &backend.url());
    let opaque = client_credentials(&auth, "opaque-app", None)["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    assert_eq!(call(&rs, "/reports/1", &opaque).status(), 200);
    assert_eq!(
        backend.seen().last().expect("seen").headers["x-client-id"],
        "opaque-app"
    );
    assert_eq!(call(&rs, "/reports/1", "never-issued").status(), 401);
    // Revoked at the issuer: with cache_ttl 0 the next call asks again and is refused.
    let owner = ("opaque-app", BILLING_SECRET);
    assert_eq!(
        form_post(&auth, "/oauth2/revoke", &[("token", &opaque)], owner).0,
        200
    );
    let resp = call(&rs, "/reports/1", &opaque);
    assert_eq!(resp.status(), 401);
    assert!(
        challenge(&resp).contains("not active"),
        "{}",
        challenge(&resp)
    );
    // A token without the scope, and an issuer that cannot be reached (503, fail closed).
    let narrow = client_credentials(&auth, "billing-app", Some("widgets.write"))["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    assert_eq!(call(&rs, "/reports/1", &narrow).status(), 403);
    let fresh = client_credentials(&auth, "opaque-app", None)["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    drop(auth);
    assert_eq!(call(&rs, "/reports/1", &fresh).status(), 503);
}
