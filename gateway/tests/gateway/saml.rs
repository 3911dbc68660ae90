//! `require_saml` through the real gateway: an assertion signed by an independent signer
//! (the committed `xmlsec1` outputs) and by our own signer passes and the upstream gets
//! the subject; every attack is refused with its reason and never reaches the upstream.

use std::io::Write as _;
use std::path::PathBuf;

use base64::Engine as _;
use portcullis_assertions::saml::sign::sign_assertion;
use portcullis_assertions::saml::{AssertionSpec, SamlSigningKey};

use crate::common::{client, problem_code, Backend, TestGateway};

const ISSUER: &str = "https://idp.example.com/metadata";
const AUDIENCE: &str = "https://gateway.example.com";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/saml")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).expect("fixture")
}

/// `Authorization: SAML` credentials for `xml`: raw DEFLATE, then base64.
fn deflated(xml: &[u8]) -> String {
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(xml).expect("deflate");
    base64::engine::general_purpose::STANDARD.encode(encoder.finish().expect("deflate"))
}

fn spec(subject: &str) -> AssertionSpec {
    AssertionSpec {
        issuer: ISSUER.into(),
        subject: subject.into(),
        name_id_format: None,
        audience: AUDIENCE.into(),
        recipient: None,
        session_index: Some("_session-1".into()),
        attributes: vec![("groups".into(), vec!["payments".into(), "audit".into()])],
        issued_at: jiff::Timestamp::now(),
        valid_for: std::time::Duration::from_secs(300),
        one_time_use: false,
    }
}

fn signed(spec: &AssertionSpec, key: &str) -> String {
    let key = SamlSigningKey::from_pem(&read(key)).expect("key");
    sign_assertion(spec, &key, None).expect("signs")
}

fn start(backend: &Backend) -> TestGateway {
    let certificates = fixtures().join("xmlsec1/p256.cert.pem");
    let policy = format!(
        "services:\n  - name: payments\n    match: {{path: /payments}}\n    upstream: \"{{backend}}\"\n    request:\n      - require_saml:\n          certificates: {}\n          issuers: [\"{ISSUER}\"]\n          audience: \"{AUDIENCE}\"\n          attributes: [groups]\n          require_attributes: {{groups: [payments]}}\n      - set_header: {{name: X-Saml-Subject, value: \"${{saml.subject}}\"}}\n      - set_header: {{name: X-Saml-Groups, value: \"${{saml.attr.groups}}\"}}\n      - remove_header: [Authorization]\n",
        certificates.display()
    );
    TestGateway::start(&policy, &backend.url())
}

/// A gateway trusting the IdP through its metadata file alone: the keys and the issuer
/// come from the file.
fn start_with_metadata(backend: &Backend) -> TestGateway {
    let metadata = fixtures().join("metadata/idp-metadata.xml");
    let policy = format!(
        "services:\n  - name: payments\n    match: {{path: /payments}}\n    upstream: \"{{backend}}\"\n    request:\n      - require_saml:\n          metadata: {}\n          audience: \"{AUDIENCE}\"\n      - set_header: {{name: X-Saml-Subject, value: \"${{saml.subject}}\"}}\n",
        metadata.display()
    );
    TestGateway::start(&policy, &backend.url())
}

fn call(gateway: &TestGateway, credentials: &str) -> reqwest::blocking::Response {
    client()
        .get(gateway.url("/payments/1"))
        .header("authorization", format!("SAML {credentials}"))
        .send()
        .expect("call")
}

#[test]
fn a_signed_assertion_passes_and_the_upstream_gets_the_subject() {
    let backend = Backend::start();
    let gateway = start(&backend);
    let xml = signed(&spec("alice@example.com"), "xmlsec1/p256.key.pem");
    let resp = call(&gateway, &deflated(xml.as_bytes()));
    assert_eq!(resp.status(), 200);
    let seen = backend.seen();
    let last = seen.last().expect("reached the upstream");
    assert_eq!(last.headers["x-saml-subject"], "alice@example.com");
    assert_eq!(last.headers["x-saml-groups"], "payments,audit");
    assert!(
        !last.headers.contains_key("authorization"),
        "the token is not forwarded"
    );
    // gzip and plain base64 are accepted too (the policy allows all three by default).
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(xml.as_bytes()).expect("gzip");
    let gzipped = base64::engine::general_purpose::STANDARD.encode(gzip.finish().expect("gzip"));
    assert_eq!(call(&gateway, &gzipped).status(), 200);
    let plain = base64::engine::general_purpose::STANDARD.encode(xml.as_bytes());
    assert_eq!(call(&gateway, &plain).status(), 200);
}

#[test]
fn attacks_are_refused_with_their_reason_and_never_reach_the_upstream() {
    let backend = Backend::start();
    let gateway = start(&backend);
    let good = signed(&spec("alice@example.com"), "xmlsec1/p256.key.pem");
    let mut expired = spec("alice@example.com");
    expired.issued_at = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);
    let mut future = spec("alice@example.com");
    future.issued_at = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2);
    let mut audience = spec("alice@example.com");
    audience.audience = "https://another-gateway.example".into();
    let mut issuer = spec("alice@example.com");
    issuer.issuer = "https://idp.evil.example".into();
    let mut no_group = spec("alice@example.com");
    no_group.attributes = vec![("groups".into(), vec!["audit".into()])];
    // Signed by a key this gateway does not trust, its certificate embedded in KeyInfo.
    let attacker = read("xmlsec1/signed-attacker.xml");
    // 8 MiB of spaces deflate to about 8 KiB: a compression bomb that fits in a header.
    let bomb = deflated(&vec![b' '; 8 * 1024 * 1024]);
    let duplicated = format!(
        "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_r\" Version=\"2.0\" IssueInstant=\"2026-12-01T10:00:00Z\">{good}{good}</samlp:Response>"
    );
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "attribute changed after signing",
            deflated(good.replace("payments", "payment2").as_bytes()),
            401,
            "saml-digest-mismatch",
        ),
        (
            "subject changed after signing",
            deflated(
                good.replace("alice@example.com", "admin@example.com")
                    .as_bytes(),
            ),
            401,
            "saml-digest-mismatch",
        ),
        (
            "untrusted signer, own cert in KeyInfo",
            deflated(attacker.as_bytes()),
            401,
            "saml-signature-invalid",
        ),
        (
            "expired",
            deflated(signed(&expired, "xmlsec1/p256.key.pem").as_bytes()),
            401,
            "saml-expired",
        ),
        (
            "not yet valid",
            deflated(signed(&future, "xmlsec1/p256.key.pem").as_bytes()),
            401,
            "saml-not-yet-valid",
        ),
        (
            "wrong audience",
            deflated(signed(&audience, "xmlsec1/p256.key.pem").as_bytes()),
            401,
            "saml-audience",
        ),
        (
            "wrong issuer",
            deflated(signed(&issuer, "xmlsec1/p256.key.pem").as_bytes()),
            401,
            "saml-issuer",
        ),
        (
            "group missing",
            deflated(signed(&no_group, "xmlsec1/p256.key.pem").as_bytes()),
            403,
            "saml-attribute-required",
        ),
        (
            "DTD with an entity",
            deflated(format!("<!DOCTYPE a [<!ENTITY x \"y\">]>{good}").as_bytes()),
            401,
            "saml-xml-forbidden",
        ),
        (
            "the signed assertion twice in a response",
            deflated(duplicated.as_bytes()),
            401,
            "saml-duplicate-id",
        ),
        ("compression bomb", bomb, 401, "saml-token-too-large"),
        ("not base64", "!!!!".to_owned(), 401, "saml-token-malformed"),
        (
            "truncated",
            deflated(good.as_bytes())[..200].to_owned(),
            401,
            "saml-token-malformed",
        ),
    ];
    for (what, credentials, status, code) in cases {
        let (got_status, got_code, body) = problem_code(call(&gateway, &credentials));
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{what}: {body}"
        );
    }
    assert_eq!(backend.count(), 0, "no attack reached the upstream");

    // A token larger than the request head limit never reaches the step.
    let huge = "A".repeat(200 * 1024);
    let status = call(&gateway, &huge).status().as_u16();
    assert!(matches!(status, 400 | 431), "{status}");
    assert_eq!(backend.count(), 0);
}

#[test]
fn a_comment_inside_the_name_id_does_not_change_the_subject_read() {
    let backend = Backend::start();
    let gateway = start(&backend);
    let xml = signed(&spec("user@evil.com.example.com"), "xmlsec1/p256.key.pem");
    // Comments are not in the digest (exclusive c14n without comments): still verifies.
    let commented = xml.replace(
        "user@evil.com.example.com",
        "user@evil.com<!---->.example.com",
    );
    assert_ne!(xml, commented);
    assert_eq!(
        call(&gateway, &deflated(commented.as_bytes())).status(),
        200
    );
    let seen = backend.seen();
    assert_eq!(
        seen.last().expect("reached").headers["x-saml-subject"],
        "user@evil.com.example.com",
        "the whole NameID, never the part after the comment"
    );
}

#[test]
fn an_assertion_signed_by_xmlsec1_verifies_through_the_gateway() {
    let backend = Backend::start();
    let certificates = fixtures().join("xmlsec1/rsa2048.cert.pem");
    let xml = read("xmlsec1/signed-rsa.xml");
    // The committed assertion (fixtures/saml/xmlsec1/make.sh) names its own issuer and
    // audience: a policy that trusts them.
    let issuer = between(&xml, "Issuer>", "</").expect("issuer");
    let audience = between(&xml, "Audience>", "</").expect("audience");
    let policy = format!(
        "services:\n  - name: idp\n    match: {{path: /idp}}\n    upstream: \"{{backend}}\"\n    request:\n      - require_saml:\n          certificates: {}\n          issuers: [\"{issuer}\"]\n          audience: \"{audience}\"\n          one_time_use: off\n",
        certificates.display()
    );
    let gateway = TestGateway::start(&policy, &backend.url());
    let resp = client()
        .get(gateway.url("/idp"))
        .header(
            "authorization",
            format!("SAML {}", deflated(xml.as_bytes())),
        )
        .send()
        .expect("call");
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    assert_eq!(backend.count(), 1);
}

fn between<'a>(text: &'a str, after: &str, before: &str) -> Option<&'a str> {
    let start = text.find(after)? + after.len();
    let end = text[start..].find(before)? + start;
    Some(&text[start..end])
}

#[test]
fn an_idp_metadata_file_gives_the_keys_of_a_rotation_and_the_issuer() {
    let backend = Backend::start();
    let gateway = start_with_metadata(&backend);
    // Both signing certificates of the metadata are trusted: the old key and the new.
    for key in ["xmlsec1/rsa2048.key.pem", "xmlsec1/p256.key.pem"] {
        let response = call(
            &gateway,
            &deflated(signed(&spec("alice@example.com"), key).as_bytes()),
        );
        assert_eq!(response.status(), 200, "{key}");
    }
    assert_eq!(backend.count(), 2);
    assert_eq!(
        backend.seen()[1].headers["x-saml-subject"],
        "alice@example.com"
    );
    // The certificate listed for encryption is no signing key.
    let attacker =
        deflated(signed(&spec("alice@example.com"), "xmlsec1/attacker.key.pem").as_bytes());
    let (status, code, body) = problem_code(call(&gateway, &attacker));
    assert_eq!(
        (status, code.as_str()),
        (401, "saml-signature-invalid"),
        "{body}"
    );
    // The issuer is the metadata's entityID.
    let mut other = spec("alice@example.com");
    other.issuer = "https://idp.other.example".into();
    let (status, code, body) = problem_code(call(
        &gateway,
        &deflated(signed(&other, "xmlsec1/p256.key.pem").as_bytes()),
    ));
    assert_eq!((status, code.as_str()), (401, "saml-issuer"), "{body}");
    assert_eq!(backend.count(), 2);
}

/// The signature-wrapping layouts (XSW), built from one genuinely signed assertion: each puts
/// an unsigned, attacker-written assertion where a careless verifier would read it while the
/// signature still verifies over the original. Every one is refused with its reason and
/// none reaches the upstream.
#[test]
fn every_signature_wrapping_layout_is_refused_through_the_gateway() {
    let backend = Backend::start();
    let gateway = start(&backend);
    let good = signed(&spec("alice@example.com"), "xmlsec1/p256.key.pem");
    let id = between(&good, " ID=\"", "\"")
        .expect("assertion ID")
        .to_owned();
    let signature_start = good.find("<ds:Signature").expect("signature");
    let signature_end = good.find("</ds:Signature>").expect("signature") + "</ds:Signature>".len();
    let signature = &good[signature_start..signature_end];
    let unsigned = format!("{}{}", &good[..signature_start], &good[signature_end..]);
    // The attacker's assertion: the same, for another subject, under another ID, unsigned.
    let evil = unsigned
        .replace("alice@example.com", "admin@example.com")
        .replace(&id, "_evil");
    let open_assertion_end = evil.find('>').expect("start tag") + 1;
    let (evil_start, evil_rest) = evil.split_at(open_assertion_end);
    let close = evil_rest.rfind("</saml:Assertion>").expect("end tag");
    let (evil_body, evil_close) = evil_rest.split_at(close);
    let response = |inner: &str| {
        format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_r\" Version=\"2.0\" IssueInstant=\"2026-12-01T10:00:00Z\">{inner}</samlp:Response>"
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "evil assertion beside the signed one",
            response(&format!("{evil}{good}")),
            "saml-assertion-count",
        ),
        (
            "signed assertion moved into the evil one (Advice)",
            format!("{evil_start}{evil_body}<saml:Advice>{good}</saml:Advice>{evil_close}"),
            "saml-assertion-count",
        ),
        (
            "signed assertion moved into the Response's Extensions, evil one outside",
            response(&format!("<samlp:Extensions>{good}</samlp:Extensions>{evil}")),
            "saml-assertion-count",
        ),
        (
            "the signature moved to the evil assertion, referring to the original's ID",
            format!(
                "{evil_start}{signature}{evil_body}<saml:Advice>{unsigned}</saml:Advice>{evil_close}"
            ),
            "saml-assertion-count",
        ),
        (
            "the signature moved to the evil assertion, the original outside it",
            response(&format!(
                "{evil_start}{signature}{evil_body}{evil_close}{unsigned}"
            )),
            "saml-assertion-count",
        ),
        (
            "the signature moved to the evil assertion, the original alone in Extensions",
            response(&format!(
                "<samlp:Extensions>{unsigned}</samlp:Extensions>{evil_start}{signature}{evil_body}{evil_close}"
            )),
            "saml-assertion-count",
        ),
        (
            "one assertion whose signature refers to another element (the Response)",
            format!(
                "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"2026-12-01T10:00:00Z\"><samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>{evil_start}{signature}{evil_body}{evil_close}</samlp:Response>"
            ),
            "saml-reference-invalid",
        ),
        (
            "an evil assertion under the signed one's ID",
            response(&format!("{}{good}", evil.replace("_evil", &id))),
            "saml-duplicate-id",
        ),
        (
            "the signed assertion twice",
            response(&format!("{good}{good}")),
            "saml-duplicate-id",
        ),
    ];
    for (what, xml, code) in cases {
        let (got_status, got_code, body) = problem_code(call(&gateway, &deflated(xml.as_bytes())));
        assert_eq!(
            (got_status, got_code.as_str()),
            (401, code),
            "{what}: {body}"
        );
    }
    assert_eq!(
        backend.count(),
        0,
        "no wrapped assertion reached the upstream"
    );
    // The original, untouched, still passes: the refusals are the layouts', not the key's.
    assert_eq!(call(&gateway, &deflated(good.as_bytes())).status(), 200);
}
