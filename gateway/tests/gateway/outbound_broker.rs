//! The broker for the outbound proxy end to end, against the local OAuth provider: the
//! administrator's handshake on the admin listener (HTTP Basic with the admin token, the
//! Connect button, consent at the provider, the callback bound to the browser's cookie),
//! then calls through the gateway that reach the upstream with the provider's access
//! token instead of the caller's credentials; expiry refreshed without the caller
//! noticing; 20 concurrent requests at expiry causing exactly one refresh; a restart on
//! SQLite keeping the session; `invalid_grant` breaking it (`503 broker-session-invalid`,
//! and the admin page says so); a client-credentials provider without a handshake; no
//! token of the provider's anywhere in the database file.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::common::{demo_admin_token, problem_code, Backend, TestGateway, ADMIN_TOKEN};
use super::oauth_provider::{OAuthProvider, CLIENT_SECRET};

const GOLD: &str = "a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873";
/// SHA-256 of "silver-key".
const SILVER: &str = "c29da44495d672e10d7817d1b0b33e52b7278e18607091121cb215d0cc4060ec";

fn browser() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub(super) fn policy(provider: &OAuthProvider, dir: &Path) -> String {
    std::fs::write(dir.join("provider-secret"), CLIENT_SECRET).expect("secret");
    std::fs::write(
        dir.join("broker-key"),
        "outbound-broker-test-master-secret-0123456789",
    )
    .expect("secret");
    [
        "  provider_secret: {file: {dir}/provider-secret}",
        "  broker_key: {file: {dir}/broker-key}",
        "state: sqlite://{dir}/broker.db",
        "providers:",
        "  crm:",
        "    authorize_url: {authorize}",
        "    token_url: {token}",
        "    client_id: gateway-client",
        "    client_secret: provider_secret",
        "    scopes: [offline_access, crm.read]",
        "  billing:",
        "    token_url: {billing_token}",
        "    client_id: gateway-client",
        "    client_secret: provider_secret",
        "    token_auth: client_secret_post",
        "    scopes: [billing.read]",
        "outbound_broker:",
        "  public_url: http://{admin}",
        "  key_secret: broker_key",
        "  refresh_before: 1s",
        "  sessions:",
        "    crm: handshake",
        "    billing: client_credentials",
        "services:",
        "  - name: crm",
        "    match: {path: /crm}",
        "    upstream: {backend}",
        "    request:",
        "      - require_api_key:",
        "          keys: [{client: gold, sha256: GOLD}]",
        "      - inject_oauth_token: {provider: crm}",
        "  - name: billing",
        "    match: {path: /billing}",
        "    upstream: {backend}",
        "    request:",
        "      - inject_oauth_token: {provider: billing}",
        "",
    ]
    .join("\n")
    .replace("{dir}", &dir.display().to_string())
    .replace("{authorize}", &provider.url("/authorize"))
    .replace("{token}", &provider.url("/token"))
    .replace("{billing_token}", &provider.url("/billing-tenant/token"))
    .replace("GOLD", GOLD)
}

fn admin_page(gw: &TestGateway, provider: &str) -> String {
    let response = browser()
        .get(gw.admin_url(&format!("/broker/{provider}")))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .send()
        .expect("page");
    assert_eq!(response.status().as_u16(), 200);
    response.text().expect("html")
}

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

/// The administrator clicks "Connect", consents at the provider and lands on the page.
fn handshake(gw: &TestGateway, provider: &OAuthProvider) {
    handshake_with(gw, provider, ADMIN_TOKEN);
}

fn handshake_with(gw: &TestGateway, provider: &OAuthProvider, admin_token: &str) {
    handshake_session(gw, provider, admin_token, None);
}

/// The handshake for one session (`None`: the provider's one session).
fn handshake_session(
    gw: &TestGateway,
    provider: &OAuthProvider,
    admin_token: &str,
    session: Option<&str>,
) {
    let query = session.map_or_else(String::new, |key| format!("?session={key}"));
    let browser = browser();
    let connect = browser
        .post(gw.admin_url(&format!("/broker/crm/connect{query}")))
        .basic_auth("admin", Some(admin_token))
        .send()
        .expect("connect");
    assert_eq!(connect.status().as_u16(), 303);
    let cookie = connect.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let location = connect.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        location.starts_with(&provider.url("/authorize")) && location.contains("code_challenge=")
    );
    let html = browser
        .get(&location)
        .send()
        .expect("consent page")
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
    fields.push(("consent".into(), "allow".into()));
    let consented = browser
        .post(provider.url("/authorize"))
        .form(&fields)
        .send()
        .expect("allow");
    let back = consented.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        back.starts_with(&gw.admin_url("/broker/callback")),
        "{back}"
    );
    // The callback, in the browser that started the handshake.
    let landed = browser
        .get(&back)
        .basic_auth("admin", Some(admin_token))
        .header("cookie", &cookie)
        .send()
        .expect("callback");
    assert_eq!(landed.status().as_u16(), 303, "{:?}", landed.text());
    assert_eq!(
        landed.headers()["location"].to_str().expect("location"),
        format!("/broker/crm{query}")
    );
    let replayed = browser
        .get(&back)
        .basic_auth("admin", Some(admin_token))
        .header("cookie", &cookie)
        .send()
        .expect("callback");
    assert_eq!(replayed.status().as_u16(), 400, "a state is used once");
}

pub(super) fn call(gw: &TestGateway, path: &str) -> reqwest::blocking::Response {
    browser()
        .get(gw.url(path))
        .header("x-api-key", "demo-key-123")
        .send()
        .expect("call")
}

fn db_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with("broker.db") {
            all.extend(std::fs::read(entry.path()).expect("read"));
        }
    }
    all
}

#[test]
fn handshake_injection_refresh_single_flight_restart_and_invalid_grant() {
    let provider = OAuthProvider::start();
    // Tokens live 4 s and are refreshed 1 s ahead: stale after 3 s.
    provider.state.expires_in.store(4, Ordering::Relaxed);
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let text = policy(&provider, dir.path());
    {
        let gw = TestGateway::start(&text, &backend.url());
        // No handshake yet.
        let (status, code, _) = problem_code(call(&gw, "/crm/accounts"));
        assert_eq!((status, code.as_str()), (503, "broker-session-invalid"));
        assert!(admin_page(&gw, "crm").contains("not connected"));
        // The page is behind the admin token.
        let anonymous = browser()
            .get(gw.admin_url("/broker/crm"))
            .send()
            .expect("page");
        assert_eq!(anonymous.status().as_u16(), 401);
        assert!(anonymous.headers()["www-authenticate"]
            .to_str()
            .expect("h")
            .starts_with("Basic"));
        let wrong = browser()
            .get(gw.admin_url("/broker/crm"))
            .basic_auth("admin", Some("wrong"))
            .send()
            .expect("page");
        assert_eq!(wrong.status().as_u16(), 401);

        handshake(&gw, &provider);
        assert!(admin_page(&gw, "crm").contains("<td id=\"state\">connected</td>"));

        // A call reaches the upstream with the provider's token, not the caller's key.
        let response = call(&gw, "/crm/accounts");
        assert_eq!(response.status().as_u16(), 200);
        let seen = backend.seen().last().expect("seen").clone();
        let first = provider.state.last_access_token().expect("issued");
        assert_eq!(
            seen.headers["authorization"],
            format!("Bearer {first}").as_str()
        );
        assert!(
            seen.headers.get("x-api-key").is_none(),
            "the caller's credential was stripped"
        );
        // A caller's own Authorization never reaches the upstream either.
        let response = browser()
            .get(gw.url("/crm/accounts"))
            .header("x-api-key", "demo-key-123")
            .header("authorization", "Bearer caller-token")
            .send()
            .expect("call");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            backend.seen().last().expect("seen").headers["authorization"],
            format!("Bearer {first}").as_str()
        );

        // Expiry: refreshed without the caller noticing.
        let refreshes = provider.state.refresh_calls.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(3300));
        assert_eq!(call(&gw, "/crm/accounts").status().as_u16(), 200);
        assert_eq!(
            provider.state.refresh_calls.load(Ordering::Relaxed),
            refreshes + 1
        );
        let second = provider.state.last_access_token().expect("issued");
        assert_ne!(second, first);
        assert_eq!(
            backend.seen().last().expect("seen").headers["authorization"],
            format!("Bearer {second}").as_str()
        );

        // 20 concurrent requests at expiry: exactly one refresh.
        std::thread::sleep(Duration::from_millis(3300));
        let refreshes = provider.state.refresh_calls.load(Ordering::Relaxed);
        let gw = Arc::new(gw);
        let callers: Vec<_> = (0..20)
            .map(|_| {
                let gw = gw.clone();
                std::thread::spawn(move || call(&gw, "/crm/accounts").status().as_u16())
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.join().expect("thread"), 200);
        }
        assert_eq!(
            provider.state.refresh_calls.load(Ordering::Relaxed),
            refreshes + 1,
            "one refresh for 20 concurrent requests"
        );
    }

    // A restart keeps the session (SQLite): no new handshake.
    let gw = TestGateway::start(&text, &backend.url());
    assert_eq!(call(&gw, "/crm/accounts").status().as_u16(), 200);
    let last = provider.state.last_access_token().expect("issued");
    assert_eq!(
        backend.seen().last().expect("seen").headers["authorization"],
        format!("Bearer {last}").as_str()
    );

    // The provider refuses the refresh token: the session breaks.
    provider.state.refuse_refresh.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(3300));
    let (status, code, _) = problem_code(call(&gw, "/crm/accounts"));
    assert_eq!((status, code.as_str()), (503, "broker-session-invalid"));
    let page = admin_page(&gw, "crm");
    assert!(page.contains("A new handshake is needed"), "{page}");
    assert!(page.contains("invalid_grant"), "{page}");
    // Still broken on the next call, without asking the provider again.
    let asked = provider.state.refresh_calls.load(Ordering::Relaxed);
    let (status, code, _) = problem_code(call(&gw, "/crm/accounts"));
    assert_eq!((status, code.as_str()), (503, "broker-session-invalid"));
    assert_eq!(provider.state.refresh_calls.load(Ordering::Relaxed), asked);
    // A new handshake mends it.
    provider
        .state
        .refuse_refresh
        .store(false, Ordering::Relaxed);
    handshake(&gw, &provider);
    assert_eq!(call(&gw, "/crm/accounts").status().as_u16(), 200);
    drop(gw);

    // No token of the provider's is in the database file.
    let bytes = db_bytes(dir.path());
    assert!(
        bytes
            .windows(b"broker-session".len())
            .any(|w| w == b"broker-session"),
        "the scan reads the data"
    );
    let issued: Vec<String> = provider.state.issued_refresh.lock().expect("lock").clone();
    let access: Vec<String> = provider.state.access_tokens.lock().expect("lock").clone();
    assert!(!issued.is_empty() && !access.is_empty());
    for token in issued.iter().chain(access.iter()) {
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "a provider token is in the database"
        );
    }
}

#[test]
fn a_client_credentials_provider_needs_no_handshake() {
    let provider = OAuthProvider::start();
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let gw = TestGateway::start(&policy(&provider, dir.path()), &backend.url());
    for _ in 0..3 {
        assert_eq!(
            browser()
                .get(gw.url("/billing/invoices"))
                .send()
                .expect("call")
                .status()
                .as_u16(),
            200
        );
    }
    let token = provider.state.last_access_token().expect("issued");
    assert_eq!(
        backend.seen().last().expect("seen").headers["authorization"],
        format!("Bearer {token}").as_str()
    );
    assert_eq!(
        provider
            .state
            .client_credentials_calls
            .load(Ordering::Relaxed),
        1,
        "the token is reused until it nears expiry"
    );
    let form = provider.state.last_form.lock().expect("lock").clone();
    assert_eq!(form["scope"], "billing.read");
}

#[test]
fn the_shipped_policy_connects_and_injects() {
    let provider = OAuthProvider::start();
    let backend = Backend::start();
    let gw = TestGateway::from_policy_with(
        "outbound-broker.yaml",
        &backend.url(),
        &[
            (
                "https://login.crm.example.com/services/oauth2/authorize",
                provider.url("/authorize"),
            ),
            (
                "https://login.crm.example.com/services/oauth2/token",
                provider.url("/token"),
            ),
            (
                "https://auth.reporting.example.com/tenant-demo/token",
                provider.url("/tenant-demo/token"),
            ),
            ("3MVG9-gateway-demo", "gateway-client".to_owned()),
        ],
    );
    handshake_with(&gw, &provider, &demo_admin_token());
    assert_eq!(call(&gw, "/crm/accounts").status().as_u16(), 200);
    let crm_token = provider.state.last_access_token().expect("issued");
    assert_eq!(
        backend.seen().last().expect("seen").headers["authorization"],
        format!("Bearer {crm_token}").as_str()
    );
    assert_eq!(call(&gw, "/reports/q1").status().as_u16(), 200);
    assert_eq!(
        provider
            .state
            .client_credentials_calls
            .load(Ordering::Relaxed),
        1
    );
    let (status, _, _) = problem_code(browser().get(gw.url("/crm/accounts")).send().expect("call"));
    assert_eq!(status, 401, "callers still need their API key");
}

/// Two gateways sharing one state store: 20 requests at expiry, half to each, cause one
/// refresh at the provider (the refresh of a session version is claimed once in the store).
fn two_gateways_refresh_once(state: Option<&str>) {
    let provider = OAuthProvider::start();
    provider.state.expires_in.store(4, Ordering::Relaxed);
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    // `None`: the policy's SQLite file; else a Redis URL.
    let text = match state {
        None => policy(&provider, dir.path()),
        Some(url) => policy(&provider, dir.path()).replace(
            &format!("state: sqlite://{}/broker.db", dir.path().display()),
            &format!("state: {url}\nredis: {{timeout: 2s}}"),
        ),
    };
    let first = Arc::new(TestGateway::start(&text, &backend.url()));
    let second = Arc::new(TestGateway::start(&text, &backend.url()));
    handshake(&first, &provider);
    assert_eq!(
        call(&second, "/crm/accounts").status().as_u16(),
        200,
        "the session is shared"
    );
    std::thread::sleep(Duration::from_millis(3300));
    let refreshes = provider.state.refresh_calls.load(Ordering::Relaxed);
    let callers: Vec<_> = (0..20)
        .map(|n| {
            let gw = if n % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            std::thread::spawn(move || call(&gw, "/crm/accounts").status().as_u16())
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.join().expect("thread"), 200);
    }
    assert_eq!(
        provider.state.refresh_calls.load(Ordering::Relaxed),
        refreshes + 1,
        "one refresh across both gateways"
    );
}

#[test]
fn two_gateways_on_one_sqlite_file_refresh_once() {
    two_gateways_refresh_once(None);
}

#[test]
fn a_fleet_on_redis_refreshes_once() {
    let redis = portcullis::redis::test_servers::RedisServer::start();
    two_gateways_refresh_once(Some(&redis.url()));
}

/// `session_key: "${client.id}"`: one session per calling identity, each with its own
/// handshake; a caller whose session was never connected is refused.
#[test]
fn one_session_per_calling_identity() {
    let provider = OAuthProvider::start();
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let text = policy(&provider, dir.path());
    let text = text.replace(
        &format!("          keys: [{{client: gold, sha256: {GOLD}}}]\n      - inject_oauth_token: {{provider: crm}}"),
        &format!("          keys: [{{client: gold, sha256: {GOLD}}}, {{client: silver, sha256: {SILVER}}}]\n      - inject_oauth_token: {{provider: crm, session_key: \"${{client.id}}\"}}"),
    );
    assert!(text.contains("session_key"), "{text}");
    let gw = TestGateway::start(&text, &backend.url());
    handshake_session(&gw, &provider, ADMIN_TOKEN, Some("gold"));
    let gold_token = provider.state.last_access_token().expect("issued");
    assert_eq!(call(&gw, "/crm/accounts").status().as_u16(), 200);
    assert_eq!(
        backend.seen().last().expect("seen").headers["authorization"],
        format!("Bearer {gold_token}").as_str()
    );
    let silver = browser()
        .get(gw.url("/crm/accounts"))
        .header("x-api-key", "silver-key")
        .send()
        .expect("call");
    let (status, code, _) = problem_code(silver);
    assert_eq!((status, code.as_str()), (503, "broker-session-invalid"));
    handshake_session(&gw, &provider, ADMIN_TOKEN, Some("silver"));
    let silver_token = provider.state.last_access_token().expect("issued");
    assert_ne!(silver_token, gold_token);
    let silver = browser()
        .get(gw.url("/crm/accounts"))
        .header("x-api-key", "silver-key")
        .send()
        .expect("call");
    assert_eq!(silver.status().as_u16(), 200);
    assert_eq!(
        backend.seen().last().expect("seen").headers["authorization"],
        format!("Bearer {silver_token}").as_str()
    );
    assert!(admin_page_session(&gw, "gold").contains("<td id=\"state\">connected</td>"));
}

fn admin_page_session(gw: &TestGateway, session: &str) -> String {
    browser()
        .get(gw.admin_url(&format!("/broker/crm?session={session}")))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .send()
        .expect("page")
        .text()
        .expect("html")
}

/// A shadowed `inject_oauth_token` fetches its token (that is what it would do) but the
/// request goes upstream without it, and the outcome is counted.
#[test]
fn a_shadowed_injection_sends_no_token_upstream() {
    let provider = OAuthProvider::start();
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let policy = policy(&provider, dir.path())
        + "  - name: billing-trial\n    match: {path: /billing-trial}\n    upstream: {backend}\n    request:\n      - inject_oauth_token: {provider: billing}\n        mode: shadow\n";
    let gw = TestGateway::start(&policy, &backend.url());
    let resp = browser()
        .get(gw.url("/billing-trial/invoices"))
        .send()
        .expect("call");
    assert_eq!(resp.status().as_u16(), 200);
    let seen = backend.seen().pop().expect("seen");
    assert!(
        seen.headers.get("authorization").is_none(),
        "a shadowed step injected {:?}",
        seen.headers.get("authorization")
    );
    let metrics = reqwest::blocking::Client::new()
        .get(gw.admin_url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("portcullis_shadow_outcomes_total")
                && line.contains("service=\"billing-trial\"")
                && line.contains("inject_oauth_token")),
        "{metrics}"
    );
}

/// `private_key_jwt`: the gateway authenticates at the token endpoint with an RFC 7523
/// assertion signed by its key (no client secret sent), a fresh one per call; with a key the
/// provider does not hold, the provider refuses and no token reaches the upstream.
#[test]
fn private_key_jwt_authenticates_the_gateway_without_a_secret() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let with_key = |key: &str| {
        let provider = OAuthProvider::start();
        let dir = tempfile::tempdir().expect("dir");
        let policy = policy(&provider, dir.path()).replace(
            "    token_auth: client_secret_post\n",
            &format!(
                "    token_auth: private_key_jwt\n    private_key: {{file: {}, key_id: gw-1}}\n",
                root.join(key).display()
            ),
        );
        assert!(policy.contains("private_key_jwt"));
        (provider, dir, policy)
    };

    let backend = Backend::start();
    let (provider, _dir, policy) = with_key("fixtures/oauth/cloud-rs256-a.key.pem");
    let gw = TestGateway::start(&policy, &backend.url());
    let resp = browser()
        .get(gw.url("/billing/invoices"))
        .send()
        .expect("call");
    assert_eq!(resp.status().as_u16(), 200);
    let token = provider.state.last_access_token().expect("issued");
    assert_eq!(
        backend.seen().last().expect("seen").headers["authorization"],
        format!("Bearer {token}").as_str()
    );
    let form = provider.state.last_form.lock().expect("lock").clone();
    assert_eq!(form["grant_type"], "client_credentials");
    assert!(!form.contains_key("client_secret"), "{form:?}");
    assert_eq!(provider.state.assertion_ids.lock().expect("lock").len(), 1);

    let (provider, _dir, policy) = with_key("fixtures/oauth/attacker-rs256.key.pem");
    let gw = TestGateway::start(&policy, &backend.url());
    let before = backend.count();
    let (status, code, _) = problem_code(
        browser()
            .get(gw.url("/billing/invoices"))
            .send()
            .expect("call"),
    );
    assert!(status == 502 || status == 503, "{status} {code}");
    assert_eq!(backend.count(), before, "nothing reaches the upstream");
    assert!(provider.state.last_access_token().is_none());
}
