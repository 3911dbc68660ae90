//! The saml2-bearer grant (RFC 7522) through the real gateway: an assertion from
//! `/saml/token` exchanged for a bearer token that reaches a `require_bearer` service, the
//! token's record naming the assertion it was mapped from; the same assertion again, an
//! expired one, one for another audience, one signed by an untrusted key, a Response
//! instead of an Assertion and an unknown subject: all `invalid_grant`; an assertion used
//! on one gateway is refused on another sharing its Redis; and the shipped
//! `policies/saml-rest.yaml` end to end.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use portcullis_assertions::saml::sign::sign_assertion;
use portcullis_assertions::saml::{AssertionSpec, SamlSigningKey};

use crate::common::{client, problem_code, Backend, TestGateway, ADMIN_TOKEN};
use crate::oauth::{fixtures, ISSUER, TOKEN_ENDPOINT};
use crate::saml_issuer::{
    inflate, issuer_section, saml_fixture, saml_token, write_users, ALICE_PASSWORD, SAML_ENTITY,
};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:saml2-bearer";

fn gateway() -> (tempfile::TempDir, Backend, TestGateway) {
    gateway_on("memory")
}

/// The issuer and the token service trusting it, with state in `state`.
fn gateway_on(state: &str) -> (tempfile::TempDir, Backend, TestGateway) {
    let dir = tempfile::tempdir().expect("dir");
    let users = write_users(dir.path());
    let backend = Backend::start();
    let text = format!(
        r#"state: "{state}"
trusted_proxies: [127.0.0.1]
{issuer}token_service:
  issuer: {ISSUER}
  signing_keys:
    - {{kid: gw-2026a, file: {fx}/gateway-es256-2026a.pem}}
  saml_issuers:
    - entity_id: {SAML_ENTITY}
      certificates: {cert}
      client: saml-apps
      subjects:
        alice: {{scopes: [widgets.read, widgets.write]}}
        bob: {{scopes: [widgets.read]}}
    - entity_id: https://idp.example.com/metadata
      metadata: {metadata}
      client: idp-apps
      subjects:
        carol: {{scopes: [widgets.read]}}
services:
  - name: widgets
    match: {{path: /widgets}}
    upstream: "{{backend}}"
    request:
      - require_bearer: {{scopes: [widgets.read]}}
      - set_header: {{name: X-Token-Sub, value: "${{token.sub}}"}}
"#,
        issuer = issuer_section(&users, TOKEN_ENDPOINT, Some(TOKEN_ENDPOINT)),
        fx = fixtures().display(),
        cert = saml_fixture("p256.cert.pem").display(),
        metadata = saml_fixture("../metadata/idp-metadata.xml").display(),
    );
    let gw = TestGateway::start(&text, &backend.url());
    (dir, backend, gw)
}

fn exchange(gw: &TestGateway, assertion: &str, scope: Option<&str>) -> (u16, serde_json::Value) {
    let mut form = vec![("grant_type", GRANT), ("assertion", assertion)];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    let resp = client()
        .post(gw.url("/oauth2/token"))
        .form(&form)
        .send()
        .expect("token endpoint");
    (
        resp.status().as_u16(),
        resp.json().unwrap_or(serde_json::Value::Null),
    )
}

/// An assertion signed by the library with `key`, as `/saml/token` would make it, changed
/// by `change`; base64url for the grant.
fn signed(key: &str, change: impl FnOnce(&mut AssertionSpec)) -> String {
    let mut spec = AssertionSpec {
        issuer: SAML_ENTITY.to_owned(),
        subject: "alice".to_owned(),
        name_id_format: None,
        audience: TOKEN_ENDPOINT.to_owned(),
        recipient: Some(TOKEN_ENDPOINT.to_owned()),
        session_index: None,
        attributes: Vec::new(),
        issued_at: jiff::Timestamp::now(),
        valid_for: Duration::from_secs(120),
        one_time_use: false,
    };
    change(&mut spec);
    let pem = std::fs::read_to_string(saml_fixture(key)).expect("key");
    let key = SamlSigningKey::from_pem(&pem).expect("key");
    URL_SAFE_NO_PAD.encode(sign_assertion(&spec, &key, None).expect("signed"))
}

fn refused(gw: &TestGateway, assertion: &str, why: &str) {
    let (status, body) = exchange(gw, assertion, None);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let description = body["error_description"].as_str().expect("description");
    assert!(description.contains(why), "{description}");
}

#[test]
fn an_assertion_from_the_issuer_is_exchanged_once_and_the_token_names_it() {
    let (_dir, backend, gw) = gateway();
    let issued: serde_json::Value = saml_token(&gw, "alice", ALICE_PASSWORD, "198.51.100.1")
        .json()
        .expect("json");
    let id = issued["assertion_id"].as_str().expect("id").to_owned();
    let xml = inflate(issued["token"].as_str().expect("token"));
    let assertion = URL_SAFE_NO_PAD.encode(&xml);

    let (status, body) = exchange(&gw, &assertion, Some("widgets.read"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "widgets.read");
    let token = body["access_token"].as_str().expect("token");
    let resp = client()
        .get(gw.url("/widgets/1"))
        .bearer_auth(token)
        .send()
        .expect("call");
    assert_eq!(resp.status(), 200);
    assert_eq!(backend.seen()[0].headers["x-token-sub"], "alice");

    // Token management shows what the token was mapped from.
    let listed: serde_json::Value = client()
        .get(gw.admin_url("/api/tokens?client=saml-apps"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("admin")
        .json()
        .expect("json");
    assert_eq!(listed["count"], 1, "{listed}");
    let record = &listed["tokens"][0];
    assert_eq!(record["grant_type"], GRANT);
    assert_eq!(record["subject"], "alice");
    assert_eq!(record["source"], format!("{SAML_ENTITY} {id}"));

    // The same assertion again is a replay, padded or not.
    refused(&gw, &assertion, "used before");
    let padded = base64::engine::general_purpose::URL_SAFE.encode(&xml);
    refused(&gw, &padded, "used before");

    // The metadata lists the grant.
    let metadata: serde_json::Value = client()
        .get(gw.url("/.well-known/oauth-authorization-server"))
        .send()
        .expect("metadata")
        .json()
        .expect("json");
    assert!(metadata["grant_types_supported"]
        .as_array()
        .expect("grants")
        .iter()
        .any(|g| g == GRANT));
}

#[test]
fn an_assertion_exchanged_on_one_gateway_is_refused_on_another_sharing_redis() {
    let redis = portcullis::redis::test_servers::RedisServer::start();
    let (_dir_a, _backend_a, a) = gateway_on(&redis.url());
    let (_dir_b, _backend_b, b) = gateway_on(&redis.url());
    let assertion = signed("p256.key.pem", |_| {});
    assert_eq!(exchange(&a, &assertion, None).0, 200);
    let (status, body) = exchange(&b, &assertion, None);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("used before")),
        "{body}"
    );
    // Another assertion is fine on either.
    assert_eq!(exchange(&b, &signed("p256.key.pem", |_| {}), None).0, 200);
}

#[test]
fn bad_assertions_are_invalid_grants_with_a_precise_reason() {
    let (_dir, _backend, gw) = gateway();
    // A fresh, well-made one passes (so the refusals below are about their one defect).
    assert_eq!(exchange(&gw, &signed("p256.key.pem", |_| {}), None).0, 200);

    refused(
        &gw,
        &signed("p256.key.pem", |s| {
            s.issued_at = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600);
        }),
        "expired",
    );
    refused(
        &gw,
        &signed("p256.key.pem", |s| {
            s.audience = "https://other.test".to_owned()
        }),
        "Audience",
    );
    refused(
        &gw,
        &signed("p256.key.pem", |s| {
            s.recipient = Some("https://other.test/token".to_owned())
        }),
        "Recipient",
    );
    // Signed by a key the issuer's certificates do not hold.
    refused(
        &gw,
        &signed("attacker.key.pem", |_| {}),
        "saml-signature-invalid",
    );
    refused(
        &gw,
        &signed("rsa2048.key.pem", |_| {}),
        "saml-signature-invalid",
    );
    refused(
        &gw,
        &signed("p256.key.pem", |s| {
            s.issuer = "https://idp.other".to_owned()
        }),
        "not accepted",
    );
    refused(
        &gw,
        &signed("p256.key.pem", |s| s.subject = "mallory".to_owned()),
        "may not obtain tokens",
    );
    refused(
        &gw,
        &signed("p256.key.pem", |s| s.valid_for = Duration::from_secs(7200)),
        "lives longer",
    );
    // bob may not have widgets.write.
    let (status, body) = exchange(
        &gw,
        &signed("p256.key.pem", |s| s.subject = "bob".to_owned()),
        Some("widgets.write"),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope")),
        "{body}"
    );
    // Not base64url, and a Response around the assertion.
    refused(&gw, "PHNhbWw+Cg==+/", "base64url");
    let response = format!(
        "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"r\" Version=\"2.0\"><samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>{}</samlp:Response>",
        String::from_utf8(URL_SAFE_NO_PAD.decode(signed("p256.key.pem", |_| {})).expect("b64")).expect("utf8")
    );
    refused(&gw, &URL_SAFE_NO_PAD.encode(response), "not a Response");
}

#[test]
fn the_shipped_saml_rest_policy_works_end_to_end() {
    let backend = Backend::start();
    let gw = TestGateway::from_policy("saml-rest.yaml", &backend.url());
    let issued = client()
        .post(gw.url("/saml/token"))
        .basic_auth("alice", Some("alice-demo-password"))
        .send()
        .expect("issuer");
    assert_eq!(issued.status(), 200);
    let issued: serde_json::Value = issued.json().expect("json");
    let xml = inflate(issued["token"].as_str().expect("token"));
    let text = String::from_utf8(xml.clone()).expect("utf8");
    assert!(
        text.contains(">finance<") && !text.contains("alice@example.com"),
        "{text}"
    );
    // The API takes the token as issued, on every call, with no session.
    let token = issued["token"].as_str().expect("token");
    let payments = |credentials: &str| {
        client()
            .get(gw.url("/payments/9"))
            .header("authorization", format!("SAML {credentials}"))
            .send()
            .expect("call")
    };
    for _ in 0..2 {
        assert_eq!(payments(token).status(), 200);
    }
    let seen = backend.seen();
    assert_eq!(seen[0].headers["x-user"], "alice");
    assert_eq!(seen[0].headers["x-groups"], "reporting,finance");
    assert!(!seen[0].headers.contains_key("authorization"));
    // Tampered after signing: refused with its reason, the upstream never sees it.
    let tampered = {
        use base64::engine::general_purpose::STANDARD;
        use std::io::Write as _;
        let changed = text.replace(">finance<", ">finance-admins<");
        let mut deflater =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        deflater.write_all(changed.as_bytes()).expect("deflate");
        STANDARD.encode(deflater.finish().expect("deflate"))
    };
    let (status, code, _) = problem_code(payments(&tampered));
    assert_eq!((status, code.as_str()), (401, "saml-digest-mismatch"));
    assert_eq!(backend.count(), 2);
    // bob is not in finance.
    let bobs: serde_json::Value = client()
        .post(gw.url("/saml/token"))
        .basic_auth("bob", Some("bob-demo-password"))
        .send()
        .expect("issuer")
        .json()
        .expect("json");
    let (status, code, _) = problem_code(payments(bobs["token"].as_str().expect("token")));
    assert_eq!((status, code.as_str()), (403, "saml-attribute-required"));

    // A partner application's API key buys an assertion for it, which the API takes.
    let partner: serde_json::Value = client()
        .post(gw.url("/partners/saml/token"))
        .header("x-api-key", "partner-demo-key")
        .send()
        .expect("issue_saml")
        .json()
        .expect("json");
    assert_eq!(
        payments(partner["token"].as_str().expect("token")).status(),
        200
    );
    assert_eq!(backend.seen()[2].headers["x-user"], "partner-app");
    let (status, code, _) = problem_code(
        client()
            .post(gw.url("/partners/saml/token"))
            .header("x-api-key", "partner-demo-kez")
            .send()
            .expect("issue_saml"),
    );
    assert_eq!((status, code.as_str()), (401, "invalid-api-key"));

    let (status, body) = exchange(&gw, &URL_SAFE_NO_PAD.encode(&xml), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "reports.read reports.write");
    let resp = client()
        .get(gw.url("/reports/7"))
        .bearer_auth(body["access_token"].as_str().expect("token"))
        .send()
        .expect("call");
    assert_eq!(resp.status(), 200);
    assert_eq!(backend.seen()[3].headers["x-subject"], "alice");
    // bob's password is not alice's.
    let wrong = client()
        .post(gw.url("/saml/token"))
        .basic_auth("bob", Some("alice-demo-password"))
        .send()
        .expect("issuer");
    assert_eq!(wrong.status(), 401);
}

#[test]
fn an_issuer_trusted_through_its_metadata_file_exchanges_with_either_rotated_key() {
    let (_dir, _backend, gw) = gateway();
    let from_idp = |key: &str| {
        signed(key, |spec| {
            spec.issuer = "https://idp.example.com/metadata".to_owned();
            spec.subject = "carol".to_owned();
        })
    };
    for key in ["rsa2048.key.pem", "p256.key.pem"] {
        let (status, body) = exchange(&gw, &from_idp(key), None);
        assert_eq!(status, 200, "{key}: {body}");
    }
    // The metadata lists the attacker's certificate for encryption only: not a signing key.
    refused(&gw, &from_idp("attacker.key.pem"), "signature");
    // The metadata's keys are that entity's: they do not sign for the other issuer.
    let as_other = signed("rsa2048.key.pem", |_| {});
    refused(&gw, &as_other, "signature");
}
