//! The brokers' browser flows in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, spoken to as the W3C protocol: JSON over HTTP). It clicks what a person
//! clicks: the provider's Allow button, the admin page's Connect button. Runs when
//! `PORTCULLIS_CHROMIUM=1` (`scripts/test.sh` installs Debian's chromium and
//! chromium-driver and sets it); otherwise it says so and checks nothing.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::common::{free_port, wait_for_port, Backend, TestGateway, ADMIN_TOKEN};
use super::oauth_provider::OAuthProvider;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver on a free port, stopped on drop, with one browser session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("PORTCULLIS_CHROMIUM=1 but chromedriver cannot run");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        wait_for_port(addr);
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let base = format!("http://{addr}");
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
                },
            }}}))
            .send()
            .expect("new session")
            .json()
            .expect("json");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            http,
        }
    }

    fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().expect("webdriver").json().expect("json");
        answer["value"].clone()
    }

    fn open(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element `css` selects, waiting for it up to 10 s.
    fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            );
            if let Some(id) = found[ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no {css} on {}", self.url());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        );
    }

    fn value(&self, css: &str) -> String {
        let id = self.find(css);
        self.command(
            reqwest::Method::GET,
            &format!("/element/{id}/property/value"),
            None,
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.command(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn enabled() -> bool {
    if std::env::var("PORTCULLIS_CHROMIUM").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("PORTCULLIS_CHROMIUM is not 1: the browser flows are not driven in Chromium");
    false
}

/// OProxy registration: start, the provider's consent page, Allow, the Configuration
/// Settings page; the values read from its fields work at the token endpoint.
#[test]
fn an_oproxy_registration_in_chromium() {
    if !enabled() {
        return;
    }
    let provider = OAuthProvider::start();
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let gw = TestGateway::start(
        &super::oproxy::policy(&provider, dir.path(), "1h"),
        &backend.url(),
    );
    let browser = Browser::start();
    browser.open(&gw.url("/oproxy/mail-listener/start"));
    browser.click("#allow");
    let id = browser.value("#id");
    let token = browser.value("#token");
    let key = browser.value("#key");
    assert!(browser.url().starts_with(&gw.url("/oproxy/callback")));
    assert!(provider.state.is_live(&token));
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(key)
        .expect("key");
    let (status, body) = super::oproxy::token_request(
        &gw,
        "mail-listener",
        &id,
        &super::oproxy::encrypt(&key, super::oproxy::now(), &token),
    );
    assert_eq!(status, 200, "{body}");
}

/// The administrator's handshake: the admin page (HTTP Basic), Connect, Allow at the
/// provider, back on the admin page showing the session; then calls through the gateway
/// carry the provider's token.
#[test]
fn an_outbound_handshake_in_chromium() {
    if !enabled() {
        return;
    }
    let provider = OAuthProvider::start();
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let gw = TestGateway::start(
        &super::outbound_broker::policy(&provider, dir.path()),
        &backend.url(),
    );
    let browser = Browser::start();
    browser.open(&format!(
        "http://admin:{ADMIN_TOKEN}@{}/broker/crm",
        gw.admin
    ));
    assert!(browser.text("#state").contains("not connected"));
    browser.click("#connect");
    browser.click("#allow");
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser.text("#state") != "connected" {
        assert!(
            Instant::now() < deadline,
            "not connected: {}",
            browser.url()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(browser.url().ends_with("/broker/crm"));
    assert_eq!(
        super::outbound_broker::call(&gw, "/crm/accounts")
            .status()
            .as_u16(),
        200
    );
    let token = provider.state.last_access_token().expect("issued");
    assert_eq!(
        backend.seen().last().expect("seen").headers["authorization"],
        format!("Bearer {token}").as_str()
    );
}
