//! The SAML issuer through the real gateway: HTTP Basic against a users file, a signed
//! assertion the SAML library (and, with `PORTCULLIS_XMLSEC1=1`, xmlsec1) verifies, `401`
//! with the Basic challenge for a wrong password or an unknown user, then `429` once the
//! failures are used up; `405` for other methods.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use portcullis_assertions::saml::{Expectations, Verifier, VerifyOptions};

use crate::common::{client, problem_code, Backend, TestGateway};

pub const SAML_ENTITY: &str = "https://gateway.test/saml";
pub const ALICE_PASSWORD: &str = "alice-correct-horse";

pub fn saml_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/saml/xmlsec1")
        .join(name)
}

/// A users file with alice (groups admins and ops, an email) and bob.
pub fn write_users(dir: &Path) -> PathBuf {
    let alice = portcullis::basic_auth::users::hash_password(ALICE_PASSWORD).expect("hash");
    let bob = portcullis::basic_auth::users::hash_password("bob-pw").expect("hash");
    let path = dir.join("users.yaml");
    std::fs::write(
        &path,
        format!(
            "users:\n  - name: alice\n    password_argon2id: \"{alice}\"\n    attributes:\n      group: [admins, ops]\n      email: alice@example.com\n  - name: bob\n    password_argon2id: \"{bob}\"\n"
        ),
    )
    .expect("users");
    path
}

/// The `saml_issuer:` section with the P-256 fixture key, for `audience` (and `recipient`).
pub fn issuer_section(users: &Path, audience: &str, recipient: Option<&str>) -> String {
    format!(
        "saml_issuer:\n  entity_id: {SAML_ENTITY}\n  signing_key: {{file: {key}}}\n  certificate: {{file: {cert}}}\n  users_file: {users}\n  audience: {audience}\n  validity: 2m\n  realm: partners\n{recipient}",
        key = saml_fixture("p256.key.pem").display(),
        cert = saml_fixture("p256.cert.pem").display(),
        users = users.display(),
        recipient = recipient.map(|r| format!("  recipient: {r}\n")).unwrap_or_default(),
    )
}

fn gateway(limits: &str) -> (tempfile::TempDir, Backend, TestGateway) {
    let dir = tempfile::tempdir().expect("dir");
    let users = write_users(dir.path());
    let backend = Backend::start();
    let text = format!(
        "trusted_proxies: [127.0.0.1]\nclient_limits: {limits}\n{}services:\n  - name: api\n    upstream: \"{{backend}}\"\n",
        issuer_section(&users, "https://api.test", None)
    );
    let gw = TestGateway::start(&text, &backend.url());
    (dir, backend, gw)
}

pub fn saml_token(
    gw: &TestGateway,
    user: &str,
    password: &str,
    from: &str,
) -> reqwest::blocking::Response {
    client()
        .post(gw.url("/saml/token"))
        .header("x-forwarded-for", from)
        .basic_auth(user, Some(password))
        .send()
        .expect("saml issuer")
}

/// The assertion XML inside header credentials.
pub fn inflate(token: &str) -> Vec<u8> {
    let raw = STANDARD.decode(token).expect("base64");
    let mut xml = Vec::new();
    flate2::read::DeflateDecoder::new(raw.as_slice())
        .read_to_end(&mut xml)
        .expect("deflate");
    xml
}

#[test]
fn basic_credentials_get_an_assertion_the_library_verifies() {
    let (_dir, backend, gw) = gateway("{failed_auth_per_ip: 20/min}");
    let resp = saml_token(&gw, "alice", ALICE_PASSWORD, "198.51.100.1");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().expect("json");
    assert_eq!(body["token_type"], "SAML");
    assert_eq!(body["expires_in"], 120);
    let token = body["token"].as_str().expect("token");
    let cert = std::fs::read_to_string(saml_fixture("p256.cert.pem")).expect("cert");
    let verifier =
        Verifier::from_certificates_pem(&cert, VerifyOptions::default()).expect("verifier");
    let assertion = verifier.verify_token(token).expect("verifies");
    assert_eq!(body["assertion_id"].as_str(), Some(assertion.id.as_str()));
    assert_eq!(
        body["expires_at"].as_i64(),
        assertion.not_on_or_after().map(|t| t.as_second())
    );
    assert_eq!(assertion.issuer, SAML_ENTITY);
    assert_eq!(assertion.subject.name_id, "alice");
    assert_eq!(
        assertion.attribute("group"),
        Some(&["admins".to_owned(), "ops".to_owned()][..])
    );
    assert_eq!(
        assertion.attribute("email"),
        Some(&["alice@example.com".to_owned()][..])
    );
    let issuers = vec![SAML_ENTITY.to_owned()];
    assertion
        .validate(&Expectations {
            issuers: &issuers,
            audience: "https://api.test",
            recipient: None,
            now: jiff::Timestamp::now(),
            skew: Duration::from_secs(5),
            require_audience: true,
        })
        .expect("valid for the audience");
    // Each assertion is new.
    let again: serde_json::Value = saml_token(&gw, "alice", ALICE_PASSWORD, "198.51.100.1")
        .json()
        .expect("json");
    assert_ne!(again["assertion_id"], body["assertion_id"]);
    assert_eq!(backend.count(), 0, "the issuer is answered by the gateway");
    // Neither the password nor the token lands in the access log.
    let log = gw.access_log();
    assert!(
        !log.contains(ALICE_PASSWORD) && !log.contains(token),
        "{log}"
    );
}

#[test]
fn wrong_passwords_and_unknown_users_are_401_until_the_limit_then_429() {
    let (_dir, _backend, gw) =
        gateway("{failed_auth_per_ip: 3/min, failed_auth_per_client: 100/min}");
    let from = "203.0.113.5";
    for (user, password) in [
        ("alice", "guess"),
        ("mallory", "guess"),
        ("bob", ALICE_PASSWORD),
    ] {
        let resp = saml_token(&gw, user, password, from);
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Basic realm=\"partners\", charset=\"UTF-8\""
        );
        let (status, code, _) = problem_code(resp);
        assert_eq!(
            (status, code.as_str()),
            (401, "authentication-failed"),
            "{user}"
        );
    }
    // The address has used its failures: even the right password waits.
    let locked = saml_token(&gw, "alice", ALICE_PASSWORD, from);
    let retry: u64 = locked.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=20).contains(&retry), "{retry}");
    let (status, code, _) = problem_code(locked);
    assert_eq!(
        (status, code.as_str()),
        (429, "too-many-failed-authentications")
    );
    // Another address is not affected.
    assert_eq!(
        saml_token(&gw, "alice", ALICE_PASSWORD, "198.51.100.7").status(),
        200
    );

    // No credentials: the challenge, not a counted failure.
    let resp = client()
        .post(gw.url("/saml/token"))
        .header("x-forwarded-for", "198.51.100.8")
        .send()
        .expect("post");
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
}

#[test]
fn a_user_name_guessed_from_many_addresses_waits() {
    let (_dir, _backend, gw) =
        gateway("{failed_auth_per_ip: 100/min, failed_auth_per_client: 2/min}");
    for n in 0..2 {
        assert_eq!(
            saml_token(&gw, "alice", "guess", &format!("203.0.113.{n}")).status(),
            401
        );
    }
    assert_eq!(
        saml_token(&gw, "alice", ALICE_PASSWORD, "198.51.100.1").status(),
        429
    );
    assert_eq!(
        saml_token(&gw, "bob", "bob-pw", "198.51.100.1").status(),
        200
    );
}

#[test]
fn only_post_is_answered_and_bodies_are_bounded() {
    let (_dir, _backend, gw) = gateway("{failed_auth_per_ip: 20/min}");
    let resp = client()
        .get(gw.url("/saml/token"))
        .basic_auth("alice", Some(ALICE_PASSWORD))
        .send()
        .expect("get");
    assert_eq!(resp.headers()["allow"], "POST");
    let (status, code, _) = problem_code(resp);
    assert_eq!((status, code.as_str()), (405, "method-not-allowed"));
    let resp = client()
        .post(gw.url("/saml/token"))
        .basic_auth("alice", Some(ALICE_PASSWORD))
        .body(vec![b'x'; 64 * 1024])
        .send()
        .expect("post");
    assert_eq!(resp.status(), 413);
}

#[test]
fn xmlsec1_verifies_what_the_issuer_signs() {
    if std::env::var("PORTCULLIS_XMLSEC1").as_deref() != Ok("1") {
        eprintln!("PORTCULLIS_XMLSEC1 is not 1: xmlsec1 interop not checked");
        return;
    }
    let (dir, _backend, gw) = gateway("{failed_auth_per_ip: 20/min}");
    let body: serde_json::Value = saml_token(&gw, "alice", ALICE_PASSWORD, "198.51.100.1")
        .json()
        .expect("json");
    let path = dir.path().join("issued.xml");
    std::fs::write(&path, inflate(body["token"].as_str().expect("token"))).expect("write");
    let out = std::process::Command::new("xmlsec1")
        .arg("--verify")
        .arg("--pubkey-cert-pem")
        .arg(saml_fixture("p256.cert.pem"))
        .args([
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
        ])
        .arg(&path)
        .output()
        .expect("PORTCULLIS_XMLSEC1=1 but xmlsec1 cannot run");
    assert!(
        out.status.success(),
        "xmlsec1 refused the issuer's signature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An issuer without a users file, and two services that issue for callers their own
/// pipeline authenticated (an API key, a bearer token of the token service would work the
/// same), beside an API that takes the assertions.
fn pipeline_issuer_gateway() -> (Backend, TestGateway) {
    let backend = Backend::start();
    let key_hash = crate::oauth::sha256_hex("partner-key-456");
    let text = format!(
        r#"saml_issuer:
  entity_id: {SAML_ENTITY}
  signing_key: {{file: {key}}}
  audience: https://api.test
  validity: 2m
services:
  - name: partner-saml
    match: {{path: /partners/saml/token}}
    methods: [POST]
    issue_saml:
      attributes: {{tier: "${{client.tier}}", roles: "reader, writer"}}
    request:
      - require_api_key:
          keys: [{{client: partner-7, sha256: {key_hash}, attributes: {{tier: gold}}}}]
  - name: api
    match: {{path: /api}}
    upstream: "{{backend}}"
    request:
      - require_saml:
          certificates: {cert}
          issuers: [{SAML_ENTITY}]
          audience: https://api.test
          attributes: [tier, roles]
      - set_header: {{name: X-Subject, value: "${{saml.subject}}"}}
      - set_header: {{name: X-Roles, value: "${{saml.attr.roles}}"}}
"#,
        key = saml_fixture("rsa2048.key.pem").display(),
        cert = saml_fixture("rsa2048.cert.pem").display(),
    );
    let gw = TestGateway::start(&text, &backend.url());
    (backend, gw)
}

#[test]
fn a_caller_authenticated_by_the_pipeline_gets_an_assertion_for_its_identity() {
    let (backend, gw) = pipeline_issuer_gateway();
    let resp = client()
        .post(gw.url("/partners/saml/token"))
        .header("x-api-key", "partner-key-456")
        .body("ignored")
        .send()
        .expect("issue");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: serde_json::Value = resp.json().expect("json");
    assert_eq!(body["token_type"], "SAML");
    let token = body["token"].as_str().expect("token");
    let cert = std::fs::read_to_string(saml_fixture("rsa2048.cert.pem")).expect("cert");
    let verifier =
        Verifier::from_certificates_pem(&cert, VerifyOptions::default()).expect("verifier");
    let assertion = verifier.verify_token(token).expect("verifies");
    assert_eq!(assertion.subject.name_id, "partner-7");
    assert_eq!(assertion.attribute("tier"), Some(&["gold".to_owned()][..]));
    assert_eq!(
        assertion.attribute("roles"),
        Some(&["reader, writer".to_owned()][..]),
        "one value, commas kept"
    );
    // Nothing went upstream to get it; the assertion opens the API.
    assert_eq!(backend.count(), 0);
    let resp = client()
        .get(gw.url("/api/orders"))
        .header("authorization", format!("SAML {token}"))
        .send()
        .expect("api");
    assert_eq!(resp.status(), 200);
    let seen = &backend.seen()[0];
    assert_eq!(seen.headers["x-subject"], "partner-7");
    assert_eq!(seen.headers["x-roles"], "reader, writer");

    // Without the key, with a wrong one, or with GET: no assertion.
    let cases = [
        (None, "POST", 401, "missing-api-key"),
        (Some("partner-key-000"), "POST", 401, "invalid-api-key"),
        (Some("partner-key-456"), "GET", 405, "method-not-allowed"),
    ];
    for (key, method, status, code) in cases {
        let mut request = client().request(
            method.parse().expect("method"),
            gw.url("/partners/saml/token"),
        );
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let (got_status, got_code, body) = problem_code(request.send().expect("send"));
        assert_eq!((got_status, got_code.as_str()), (status, code), "{body}");
    }
    // The Basic endpoint is not served without a users file: /saml/token is just a path
    // no service matches.
    let resp = client()
        .post(gw.url("/saml/token"))
        .basic_auth("alice", Some("x"))
        .send()
        .expect("send");
    assert_eq!(resp.status(), 404);
    assert_eq!(backend.count(), 1);
}
