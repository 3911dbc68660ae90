//! The OProxy-compatible token broker end to end, against the local OAuth provider: the
//! registration flow through the real gateway as a browser makes it (redirects followed
//! by hand, the binding cookie carried, the consent form submitted), then token requests
//! as an integration makes them — rotation over several calls, the lost-rotation grace,
//! every error case, rate limiting, the admin API — and a restart on SQLite after which
//! the registrations work and no Token is anywhere in the database files.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use portcullis::broker::sealing::{random_nonce, seal_wire};

use super::common::{Backend, TestGateway, ADMIN_TOKEN};
use super::oauth_provider::{OAuthProvider, CLIENT_SECRET};

const KEY_SECRET: &str = "oproxy-test-master-secret-0123456789abcdef";

/// A browser-like client: no automatic redirects (each hop is checked), cookies by hand.
fn browser() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub(super) fn policy(provider: &OAuthProvider, dir: &Path, rotation_grace: &str) -> String {
    std::fs::write(dir.join("provider-secret"), CLIENT_SECRET).expect("secret");
    std::fs::write(dir.join("oproxy-key"), KEY_SECRET).expect("secret");
    let lines = [
        "  provider_secret: {file: {dir}/provider-secret}",
        "  oproxy_key: {file: {dir}/oproxy-key}",
        "state: sqlite://{dir}/oproxy.db",
        "client_limits:",
        "  failed_auth_per_ip: 1000/min",
        "  failed_auth_per_client: 12/min",
        "providers:",
        "  local:",
        "    authorize_url: {authorize}",
        "    token_url: {token}",
        "    client_id: gateway-client",
        "    client_secret: provider_secret",
        "    scopes: [offline_access, mail.read]",
        "    authorize_params: {prompt: consent}",
        "    timeout: 5s",
        "  local_post:",
        "    authorize_url: {admin_consent}",
        "    token_url: {tenant_token}",
        "    client_id: gateway-client",
        "    client_secret: provider_secret",
        "    token_auth: client_secret_post",
        "    scopes: [https://graph.example/.default]",
        "oproxy:",
        "  public_url: http://{listen}",
        "  key_secret: oproxy_key",
        "  window: 5m",
        "  rotation_grace: {rotation_grace}",
        "  apps:",
        "    mail-listener:",
        "      provider: local",
        "    tenant-app:",
        "      provider: local_post",
        "      grant: client_credentials",
        "services:",
        "  - name: api",
        "    upstream: {backend}",
        "",
    ];
    lines
        .join("\n")
        .replace("{dir}", &dir.display().to_string())
        .replace("{authorize}", &provider.url("/authorize"))
        .replace("{token}", &provider.url("/token"))
        .replace("{admin_consent}", &provider.url("/adminconsent"))
        .replace("{tenant_token}", &provider.url("/{tenant}/token"))
        .replace("{rotation_grace}", rotation_grace)
}

/// The value of `name="NAME" value="..."` in a form.
fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&quot;", "\"")
            .replace("&amp;", "&"),
    )
}

/// Runs the registration in a "browser": start → provider consent page → submit → the
/// gateway's callback. Returns the callback's response.
fn register(gw: &TestGateway, app: &str, accept_json: bool) -> reqwest::blocking::Response {
    let browser = browser();
    let start = browser
        .get(gw.url(&format!("/oproxy/{app}/start")))
        .send()
        .expect("start");
    assert_eq!(start.status().as_u16(), 302);
    let cookie = start
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("binding cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().expect("pair").to_owned();
    let location = start.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let callback_url = follow_provider(&browser, &location);
    let mut callback = browser.get(&callback_url).header("cookie", &cookie);
    if accept_json {
        callback = callback.header("accept", "application/json");
    }
    callback.send().expect("callback")
}

/// At the provider: the consent page (for an authorization request) or the admin-consent
/// redirect; returns where the provider sends the browser back.
fn follow_provider(browser: &reqwest::blocking::Client, location: &str) -> String {
    let page = browser.get(location).send().expect("provider");
    if page.status().as_u16() == 302 {
        return page.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
    }
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().expect("html");
    assert!(html.contains("<button id=\"allow\""), "{html}");
    let action = location
        .split("/authorize")
        .next()
        .expect("base")
        .to_owned()
        + "/authorize";
    let mut fields: Vec<(String, String)> = [
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
    ]
    .iter()
    .filter_map(|name| hidden(&html, name).map(|v| ((*name).to_owned(), v)))
    .collect();
    fields.push(("consent".into(), "allow".into()));
    let consented = browser.post(action).form(&fields).send().expect("consent");
    assert_eq!(consented.status().as_u16(), 302);
    consented.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned()
}

struct Settings {
    id: String,
    token: String,
    key: Vec<u8>,
}

fn settings_from_json(response: reqwest::blocking::Response) -> Settings {
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().expect("json");
    Settings {
        id: body["ID"].as_str().expect("ID").to_owned(),
        token: body["Token"].as_str().expect("Token").to_owned(),
        key: STANDARD
            .decode(body["Key"].as_str().expect("Key"))
            .expect("key b64"),
    }
}

pub(super) fn now() -> i64 {
    portcullis::store::now_secs()
}

/// `encrypted_token` as integrations make it.
pub(super) fn encrypt(key: &[u8], timestamp: i64, token: &str) -> String {
    seal_wire(
        key,
        &random_nonce().expect("nonce"),
        format!("{timestamp}:{token}").as_bytes(),
    )
    .expect("seal")
}

pub(super) fn token_request(
    gw: &TestGateway,
    app: &str,
    id: &str,
    encrypted: &str,
) -> (u16, serde_json::Value) {
    let response = browser()
        .post(gw.url("/oproxy/token"))
        .json(&serde_json::json!({
            "app_name": app,
            "registration_id": id,
            "encrypted_token": encrypted,
            "scope": "mail.read",
        }))
        .send()
        .expect("token");
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"].to_str().expect("ctype"),
        "application/json"
    );
    (status, response.json().expect("json"))
}

fn file_bytes_in(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("oproxy.db") {
            all.extend(std::fs::read(entry.path()).expect("read"));
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn registration_rotation_errors_and_a_restart_on_sqlite() {
    let provider = OAuthProvider::start();
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let text = policy(&provider, dir.path(), "1h");
    let mut held_tokens = Vec::new();
    let (id, key, mut token) = {
        let gw = TestGateway::start(&text, &backend.url());
        // The HTML page: the three values in read-only fields with copy buttons, under a
        // CSP that allows only its own script.
        let page = register(&gw, "mail-listener", false);
        assert_eq!(page.status().as_u16(), 200);
        let csp = page.headers()["content-security-policy"]
            .to_str()
            .expect("csp")
            .to_owned();
        assert!(
            csp.starts_with("default-src 'none'; script-src 'nonce-"),
            "{csp}"
        );
        assert_eq!(page.headers()["cache-control"], "no-store");
        let html = page.text().expect("html");
        let shown_token = html
            .split("id=\"token\" readonly size=\"70\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the Token field")
            .to_owned();
        assert!(provider.state.is_live(&shown_token));
        held_tokens.push(shown_token);
        for field in [
            "id=\"id\"",
            "id=\"token\"",
            "id=\"key\"",
            "data-copy=\"token\"",
        ] {
            assert!(html.contains(field), "{field} in {html}");
        }
        // The JSON form, as a script would ask for it.
        let settings = settings_from_json(register(&gw, "mail-listener", true));
        assert_eq!(settings.key.len(), 32, "a 256-bit key");
        assert!(provider.state.is_live(&settings.token));
        assert_eq!(
            provider.state.last_form.lock().expect("lock")["grant_type"],
            "authorization_code"
        );
        assert!(
            provider
                .state
                .last_form
                .lock()
                .expect("lock")
                .contains_key("code_verifier"),
            "PKCE"
        );
        held_tokens.push(settings.token.clone());

        // Rotation over several calls: each answer carries the next Token, which works.
        let mut token = settings.token.clone();
        for _ in 0..3 {
            let (status, body) = token_request(
                &gw,
                "mail-listener",
                &settings.id,
                &encrypt(&settings.key, now(), &token),
            );
            assert_eq!(status, 200, "{body}");
            assert!(body["access_token"]
                .as_str()
                .is_some_and(|t| t.starts_with("access-")));
            assert_eq!(body["expires_in"], 3600);
            let next = body["refresh_token"].as_str().expect("rotated").to_owned();
            assert_ne!(next, token);
            assert!(
                !provider.state.is_live(&token),
                "the provider retired the old one"
            );
            held_tokens.push(next.clone());
            token = next;
        }
        // The gateway asked with the integration's scope.
        assert_eq!(
            provider.state.last_form.lock().expect("lock")["scope"],
            "mail.read"
        );
        (settings.id, settings.key, token)
    };

    // Restart: registrations survive in SQLite.
    let gw = TestGateway::start(&text, &backend.url());
    let (status, body) = token_request(&gw, "mail-listener", &id, &encrypt(&key, now(), &token));
    assert_eq!(status, 200, "{body}");
    let lost = body["refresh_token"].as_str().expect("rotated").to_owned();
    held_tokens.push(lost.clone());

    // The integration lost that answer and sends the previous Token again: accepted once,
    // the gateway uses the successor at the provider and hands back the Token to hold.
    let (status, body) = token_request(&gw, "mail-listener", &id, &encrypt(&key, now(), &token));
    assert_eq!(status, 200, "{body}");
    let recovered = body["refresh_token"]
        .as_str()
        .expect("a Token to hold")
        .to_owned();
    assert!(provider.state.is_live(&recovered));
    held_tokens.push(recovered.clone());
    // Only once.
    let (status, body) = token_request(&gw, "mail-listener", &id, &encrypt(&key, now(), &token));
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_grant")),
        "{body}"
    );
    token = recovered;

    // Every error case.
    let replayed = encrypt(&key, now(), &token);
    let (status, body) = token_request(&gw, "mail-listener", &id, &replayed);
    assert_eq!(status, 200, "{body}");
    token = body["refresh_token"].as_str().expect("rotated").to_owned();
    held_tokens.push(token.clone());
    let (status, body) = token_request(&gw, "mail-listener", &id, &replayed);
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("invalid_grant")),
        "replay: {body}"
    );
    assert!(body["error_description"]
        .as_str()
        .expect("d")
        .contains("used before"));
    let (status, _) = token_request(
        &gw,
        "mail-listener",
        &id,
        &encrypt(&key, now() - 301, &token),
    );
    assert_eq!(status, 403, "too old");
    let (status, _) = token_request(
        &gw,
        "mail-listener",
        &id,
        &encrypt(&key, now() + 301, &token),
    );
    assert_eq!(status, 403, "from the future");
    let (status, body) =
        token_request(&gw, "mail-listener", &id, &encrypt(&[7; 32], now(), &token));
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_grant")),
        "wrong key"
    );
    let (status, _) = token_request(
        &gw,
        "mail-listener",
        &id,
        &encrypt(&key, now(), "not-the-token"),
    );
    assert_eq!(status, 401, "wrong Token");
    let (status, _) = token_request(&gw, "tenant-app", &id, &encrypt(&key, now(), &token));
    assert_eq!(status, 404, "another app's name");
    let (status, _) = token_request(
        &gw,
        "mail-listener",
        "2f1e0d3c-0000-4000-8000-000000000000",
        &encrypt(&key, now(), &token),
    );
    assert_eq!(status, 404, "unknown registration");
    let plain_no_colon =
        seal_wire(&key, &random_nonce().expect("nonce"), b"1764633600").expect("seal");
    let (status, _) = token_request(&gw, "mail-listener", &id, &plain_no_colon);
    assert_eq!(status, 400, "no timestamp separator");
    let (status, _) = token_request(&gw, "mail-listener", &id, "not base64!");
    assert_eq!(status, 401, "not base64");
    for body in [
        "{",
        "[]",
        "{\"app_name\":\"mail-listener\"}",
        "{\"app_name\":1,\"registration_id\":\"a\",\"encrypted_token\":\"b\",\"scope\":\"c\"}",
    ] {
        let response = browser()
            .post(gw.url("/oproxy/token"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("send");
        assert_eq!(response.status().as_u16(), 400, "{body}");
        let json: serde_json::Value = response.json().expect("json");
        assert_eq!(json["error"], "invalid_request");
    }
    let response = browser().get(gw.url("/oproxy/token")).send().expect("get");
    assert_eq!(response.status().as_u16(), 405);
    let huge = browser()
        .post(gw.url("/oproxy/token"))
        .body(vec![b'x'; 40 * 1024])
        .send()
        .expect("send");
    assert_eq!(huge.status().as_u16(), 413);

    // The provider refuses: 502 with its OAuth error code passed through.
    provider.state.refuse_refresh.store(true, Ordering::Relaxed);
    let (status, body) = token_request(&gw, "mail-listener", &id, &encrypt(&key, now(), &token));
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("invalid_grant")),
        "{body}"
    );
    provider
        .state
        .refuse_refresh
        .store(false, Ordering::Relaxed);

    // Failed attempts for one registration are limited (12/min in this policy; wrong key
    // and wrong Token above already counted): the next ones wait, the right Token too.
    let mut limited = false;
    for _ in 0..10 {
        let (status, body) =
            token_request(&gw, "mail-listener", &id, &encrypt(&[9; 32], now(), &token));
        if status == 429 {
            assert_eq!(body["error"], "too_many_attempts");
            limited = true;
            break;
        }
        assert_eq!(status, 401);
    }
    assert!(limited, "failed attempts are rate limited");
    let (status, _) = token_request(&gw, "mail-listener", &id, &encrypt(&key, now(), &token));
    assert_eq!(status, 429, "a locked registration waits whatever it sends");

    // Metrics count the outcomes; the access log and the gateway's logs never hold a Token.
    let metrics = browser()
        .get(gw.admin_url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    for reason in [
        "replayed",
        "timestamp-out-of-window",
        "decryption-failed",
        "token-mismatch",
        "provider-failure",
        "unknown-registration",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.contains("oproxy") && l.contains(reason)),
            "{reason} counted"
        );
    }
    let access_log = gw.access_log();
    for held in &held_tokens {
        assert!(
            !access_log.contains(held.as_str()),
            "a Token in the access log"
        );
    }

    // Admin API: list (no secrets), usage, revoke.
    let listed: serde_json::Value = browser()
        .get(gw.admin_url("/api/oproxy/registrations"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("list")
        .json()
        .expect("json");
    let registrations = listed["registrations"].as_array().expect("array");
    assert_eq!(registrations.len(), 2, "two registrations were made");
    let listed_text = listed.to_string();
    assert!(
        !listed_text.contains("key_sealed") && !listed_text.contains("hash"),
        "{listed_text}"
    );
    let usage: serde_json::Value = browser()
        .get(gw.admin_url(&format!("/api/oproxy/registrations/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("usage")
        .json()
        .expect("json");
    assert_eq!(usage["app_name"], "mail-listener");
    assert_eq!(usage["use_count"], 6, "{usage}");
    assert!(usage["last_used_at"].as_i64().is_some());
    let unauthenticated = browser()
        .get(gw.admin_url("/api/oproxy/registrations"))
        .send()
        .expect("list");
    assert_eq!(unauthenticated.status().as_u16(), 401);
    let revoked = browser()
        .delete(gw.admin_url(&format!("/api/oproxy/registrations/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("revoke");
    assert_eq!(revoked.status().as_u16(), 200);
    let again = browser()
        .delete(gw.admin_url(&format!("/api/oproxy/registrations/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("revoke");
    assert_eq!(again.status().as_u16(), 404);
    drop(gw);

    // No Token the integration ever held is anywhere in the database files.
    let bytes = file_bytes_in(dir.path());
    assert!(bytes.len() > 4096, "the database was written");
    assert!(
        contains(&bytes, &id) || contains(&bytes, "mail-listener"),
        "the scan reads the data"
    );
    for held in &held_tokens {
        assert!(!contains(&bytes, held), "a Token is in the database");
    }
    assert!(
        !contains(&bytes, &STANDARD.encode(&key)),
        "the Key is in the database"
    );
}

#[test]
fn a_flow_is_bound_to_its_browser_and_its_state_is_single_use() {
    let provider = OAuthProvider::start();
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let gw = TestGateway::start(&policy(&provider, dir.path(), "1h"), &backend.url());
    let browser = browser();
    let start = browser
        .get(gw.url("/oproxy/mail-listener/start"))
        .send()
        .expect("start");
    let cookie = start.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let location = start.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(location.contains("code_challenge_method=S256") && location.contains("prompt=consent"));
    let callback = follow_provider(&browser, &location);
    // Another browser (no cookie, or another one) is refused, and the state is spent.
    let other = browser
        .get(&callback)
        .header("cookie", "portcullis_oproxy=forged")
        .send()
        .expect("cb");
    assert_eq!(other.status().as_u16(), 403);
    let replay = browser
        .get(&callback)
        .header("cookie", &cookie)
        .send()
        .expect("cb");
    assert_eq!(
        replay.status().as_u16(),
        400,
        "the state was used by the refused attempt"
    );
    // A made-up state.
    let made_up = browser
        .get(gw.url("/oproxy/callback?state=made-up&code=x"))
        .header("cookie", &cookie)
        .send()
        .expect("cb");
    assert_eq!(made_up.status().as_u16(), 400);
    // The user denies at the provider: a clear page, no registration.
    let start = browser
        .get(gw.url("/oproxy/mail-listener/start"))
        .send()
        .expect("start");
    let cookie = start.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let location = start.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let html = browser
        .get(&location)
        .send()
        .expect("page")
        .text()
        .expect("html");
    let mut fields: Vec<(String, String)> = [
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
    ]
    .iter()
    .filter_map(|name| hidden(&html, name).map(|v| ((*name).to_owned(), v)))
    .collect();
    fields.push(("consent".into(), "deny".into()));
    let denied = browser
        .post(provider.url("/authorize"))
        .form(&fields)
        .send()
        .expect("deny");
    let back = denied.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let page = browser
        .get(&back)
        .header("cookie", &cookie)
        .send()
        .expect("cb");
    assert_eq!(page.status().as_u16(), 400);
    assert!(page.text().expect("html").contains("access_denied"));
    // An unknown app.
    let unknown = browser
        .get(gw.url("/oproxy/nope/start"))
        .send()
        .expect("start");
    assert_eq!(unknown.status().as_u16(), 404);
}

#[test]
fn an_admin_consent_app_registers_a_tenant_and_uses_client_credentials() {
    let provider = OAuthProvider::start();
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let gw = TestGateway::start(&policy(&provider, dir.path(), "0s"), &backend.url());
    let settings = settings_from_json(register(&gw, "tenant-app", true));
    assert_eq!(
        settings.token, "7a2c8b1e-4d3f-4b2a-9c1d-0e5f6a7b8c9d",
        "the Token is the tenant"
    );
    let before = provider
        .state
        .client_credentials_calls
        .load(Ordering::Relaxed);
    let (status, body) = token_request(
        &gw,
        "tenant-app",
        &settings.id,
        &encrypt(&settings.key, now(), &settings.token),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none(), "nothing to rotate");
    assert_eq!(
        provider
            .state
            .client_credentials_calls
            .load(Ordering::Relaxed),
        before + 1
    );
    let form = provider.state.last_form.lock().expect("lock").clone();
    assert_eq!(form["client_secret"], CLIENT_SECRET, "client_secret_post");
    assert_eq!(form["grant_type"], "client_credentials");
}

#[test]
fn the_shipped_policy_registers_and_serves_tokens() {
    let provider = OAuthProvider::start();
    let backend = Backend::start();
    let gw = TestGateway::from_policy_with(
        "oproxy-broker.yaml",
        &backend.url(),
        &[
            (
                "https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize",
                provider.url("/authorize"),
            ),
            (
                "https://login.microsoftonline.com/organizations/oauth2/v2.0/token",
                provider.url("/token"),
            ),
            (
                "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
                "gateway-client".to_owned(),
            ),
        ],
    );
    let settings = settings_from_json(register(&gw, "mail-listener", true));
    let (status, body) = token_request(
        &gw,
        "mail-listener",
        &settings.id,
        &encrypt(&settings.key, now(), &settings.token),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["refresh_token"]
        .as_str()
        .is_some_and(|t| provider.state.is_live(t)));
    // The service beside the broker still proxies.
    let proxied = browser().get(gw.url("/anything")).send().expect("proxied");
    assert_eq!(proxied.status().as_u16(), 200);
}
