//! Assertions signed by xmlsec1 (committed outputs of `fixtures/saml/xmlsec1/make.sh`)
//! and by [`sign`](super::sign), round trips, tampering, and signature-wrapping variants
//! built from a valid signed assertion.
//!
//! `xmlsec1_verifies_what_we_sign` runs `xmlsec1 --verify` on our output when
//! `PORTCULLIS_XMLSEC1=1` (the gateway's test script sets it after installing xmlsec1);
//! without the variable it checks nothing and says so.

use super::dsig::DsigError;
use super::sign::{sign_assertion, sign_assertion_with_id};
use super::tests::{pem_keys, read};
use super::*;
use jiff::Timestamp;
use std::time::Duration;

const ISSUER: &str = "https://idp.example.com/metadata";
const AUDIENCE: &str = "https://gateway.example.com";
const RECIPIENT: &str = "https://gateway.example.com/saml/token";

fn ts(s: &str) -> Timestamp {
    s.parse().expect("valid test input")
}

fn verifier(cert: &str) -> Verifier {
    let pem = String::from_utf8(read(cert)).expect("PEM text");
    Verifier::from_certificates_pem(&pem, VerifyOptions::default()).expect("usable certificate")
}

fn rsa_verifier() -> Verifier {
    verifier("xmlsec1/rsa2048.cert.pem")
}

fn expectations(issuers: &[String]) -> Expectations<'_> {
    Expectations {
        issuers,
        audience: AUDIENCE,
        recipient: Some(RECIPIENT),
        now: ts("2026-12-01T10:01:00Z"),
        skew: Duration::from_secs(30),
        require_audience: true,
    }
}

#[test]
fn xmlsec1_signed_assertions_verify() {
    let issuers = [ISSUER.to_string()];
    for (file, cert) in [
        ("xmlsec1/signed-rsa.xml", "xmlsec1/rsa2048.cert.pem"),
        // ECDSA P-256, r||s, with an InclusiveNamespaces PrefixList="xs" transform.
        ("xmlsec1/signed-p256.xml", "xmlsec1/p256.cert.pem"),
        // SignedInfo under inclusive Canonical XML 1.0.
        ("xmlsec1/signed-inclusive.xml", "xmlsec1/rsa2048.cert.pem"),
    ] {
        let a = verifier(cert)
            .verify_xml(&read(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(a.subject.name_id, "alice@example.com");
        assert_eq!(a.issuer, ISSUER);
        assert_eq!(a.id, "_8f0c1d2e3a4b5c6d7e8f901a2b3c4d5e");
        assert_eq!(a.session_index.as_deref(), Some("_session-42"));
        assert_eq!(
            a.attribute("groups"),
            Some(&["admins".to_string(), "ops & on-call".to_string()][..])
        );
        assert_eq!(a.validate(&expectations(&issuers)), Ok(()));
        // Cross-check: the RSA document does not verify under the P-256 key and back.
        let other = if cert.contains("p256") {
            "xmlsec1/rsa2048.cert.pem"
        } else {
            "xmlsec1/p256.cert.pem"
        };
        assert_eq!(
            verifier(other)
                .verify_xml(&read(file))
                .expect_err("refused"),
            SamlError::Signature(DsigError::SignatureInvalid)
        );
    }
}

/// ADFS style: no prefixes, default namespaces for both the assertion and the signature,
/// fractional seconds in the times.
#[test]
fn xmlsec1_signed_default_namespace_assertion_verifies() {
    let a = rsa_verifier()
        .verify_xml(&read("xmlsec1/signed-default-ns.xml"))
        .expect("verifies");
    assert_eq!(a.subject.name_id, "CORP\\alice");
    assert_eq!(a.issue_instant, ts("2026-12-01T10:00:00.123Z"));
    assert_eq!(
        a.attribute("http://schemas.xmlsoap.org/claims/Group"),
        Some(&["Domain Users".to_string()][..])
    );
    let issuers = [ISSUER.to_string()];
    assert_eq!(a.validate(&expectations(&issuers)), Ok(()));
}

#[test]
fn a_comment_inside_the_name_id_does_not_cut_the_subject() {
    // xmlsec1 signed it with the comment in place; comments are outside a #ID digest.
    let a = rsa_verifier()
        .verify_xml(&read("xmlsec1/signed-comment.xml"))
        .expect("valid test input");
    assert_eq!(a.subject.name_id, "user@evil.com.example.com");
    // The attack on a document signed without a comment: splitting the NameID with one
    // keeps the signature valid; the subject read is still the whole text.
    let signed = String::from_utf8(read("xmlsec1/signed-rsa.xml")).expect("valid test input");
    let split = signed.replace("alice@example.com", "alice@<!-- x -->example.com");
    let a = rsa_verifier()
        .verify_xml(split.as_bytes())
        .expect("valid test input");
    assert_eq!(a.subject.name_id, "alice@example.com");
}

#[test]
fn an_attacker_signature_with_its_own_certificate_is_refused() {
    let doc = read("xmlsec1/signed-attacker.xml");
    assert_eq!(
        rsa_verifier().verify_xml(&doc).expect_err("refused"),
        SamlError::Signature(DsigError::SignatureInvalid)
    );
    // It is a well-formed signature: trusting the attacker's key, it verifies.
    assert!(verifier("xmlsec1/attacker.cert.pem")
        .verify_xml(&doc)
        .is_ok());
}

fn spec() -> AssertionSpec {
    AssertionSpec {
        issuer: ISSUER.into(),
        subject: "bob@example.com".into(),
        name_id_format: Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into()),
        audience: AUDIENCE.into(),
        recipient: Some(RECIPIENT.into()),
        session_index: Some("_s1".into()),
        attributes: vec![
            ("groups".into(), vec!["a&b".into(), "<c>".into()]),
            ("tenant".into(), vec!["t1".into()]),
        ],
        issued_at: ts("2026-12-01T10:00:00.750Z"),
        valid_for: Duration::from_secs(300),
        one_time_use: true,
    }
}

fn signing_key(path: &str) -> SamlSigningKey {
    SamlSigningKey::from_pem(&String::from_utf8(read(path)).expect("valid test input"))
        .expect("valid test input")
}

fn cert_der(path: &str) -> Vec<u8> {
    let pem = read(path);
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).expect("valid test input");
    block.contents
}

#[test]
fn sign_then_verify_round_trips_with_rsa_and_ecdsa() {
    let issuers = [ISSUER.to_string()];
    for (key, cert) in [
        ("xmlsec1/rsa2048.key.pem", "xmlsec1/rsa2048.cert.pem"),
        ("xmlsec1/p256.key.pem", "xmlsec1/p256.cert.pem"),
    ] {
        let xml = sign_assertion(&spec(), &signing_key(key), Some(&cert_der(cert)))
            .expect("valid test input");
        let a = verifier(cert)
            .verify_xml(xml.as_bytes())
            .unwrap_or_else(|e| panic!("{key}: {e}\n{xml}"));
        assert!(a.id.starts_with('_') && a.id.len() == 33, "{}", a.id);
        assert_eq!(a.subject.name_id, "bob@example.com");
        assert_eq!(
            a.attribute("groups"),
            Some(&["a&b".to_string(), "<c>".to_string()][..])
        );
        assert!(a.one_time_use());
        assert_eq!(a.issue_instant, ts("2026-12-01T10:00:00Z"));
        assert_eq!(a.not_on_or_after(), Some(ts("2026-12-01T10:05:00Z")));
        assert_eq!(a.validate(&expectations(&issuers)), Ok(()));
        // Through the header path too, each encoding.
        let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &xml);
        assert!(verifier(cert).verify_token(&token).is_ok());
        // Two assertions get two IDs.
        let again = sign_assertion(&spec(), &signing_key(key), None).expect("valid test input");
        assert_ne!(
            verifier(cert)
                .verify_xml(again.as_bytes())
                .expect("valid test input")
                .id,
            a.id
        );
    }
}

#[test]
fn validate_names_each_failure() {
    let key = signing_key("xmlsec1/p256.key.pem");
    let xml = sign_assertion_with_id(&spec(), "_fixed", &key, None).expect("valid test input");
    let a = verifier("xmlsec1/p256.cert.pem")
        .verify_xml(xml.as_bytes())
        .expect("valid test input");
    let issuers = [ISSUER.to_string()];
    let ok = expectations(&issuers);
    let other = ["https://other.example.com".to_string()];
    let cases: Vec<(Expectations<'_>, ValidationError, &str)> = vec![
        (
            Expectations {
                now: ts("2026-12-01T10:05:30Z"),
                ..ok
            },
            ValidationError::Expired,
            "saml-expired",
        ),
        (
            Expectations {
                now: ts("2026-12-01T09:59:00Z"),
                ..ok
            },
            ValidationError::NotYetValid,
            "saml-not-yet-valid",
        ),
        (
            Expectations {
                audience: "https://elsewhere",
                ..ok
            },
            ValidationError::WrongAudience,
            "saml-audience",
        ),
        (
            Expectations {
                issuers: &other,
                ..ok
            },
            ValidationError::WrongIssuer,
            "saml-issuer",
        ),
        (
            Expectations {
                recipient: Some("https://elsewhere/token"),
                ..ok
            },
            ValidationError::WrongRecipient,
            "saml-recipient",
        ),
    ];
    for (exp, want, code) in cases {
        let got = a.validate(&exp).expect_err("refused");
        assert_eq!(got, want);
        assert_eq!(SamlError::from(got).code(), code);
    }
    // Inside the skew, both ends.
    assert_eq!(
        a.validate(&Expectations {
            now: ts("2026-12-01T10:05:29Z"),
            ..ok
        }),
        Ok(())
    );
    assert_eq!(
        a.validate(&Expectations {
            now: ts("2026-12-01T09:59:31Z"),
            ..ok
        }),
        Ok(())
    );
    // Without a bearer confirmation.
    let mut no_bearer = a.clone();
    no_bearer.confirmations.clear();
    assert_eq!(
        no_bearer.validate(&ok),
        Err(ValidationError::NoBearerConfirmation)
    );
}

/// Tampering and wrapping variants of one valid document, each refused for its reason.
#[test]
fn tampering_and_wrapping_variants_are_refused() {
    let key = signing_key("xmlsec1/rsa2048.key.pem");
    let good = sign_assertion_with_id(&spec(), "_good", &key, None).expect("valid test input");
    let v = rsa_verifier();
    assert!(v.verify_xml(good.as_bytes()).is_ok());
    let sig_start = good.find("<ds:Signature").expect("valid test input");
    let sig_end = good.find("</ds:Signature>").expect("valid test input") + "</ds:Signature>".len();
    let signature = &good[sig_start..sig_end];
    let unsigned = format!("{}{}", &good[..sig_start], &good[sig_end..]);
    let evil = unsigned
        .replace("bob@example.com", "admin@example.com")
        .replace("_good", "_evil");
    let resp = |inner: &str| {
        format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_r\" Version=\"2.0\" IssueInstant=\"2026-12-01T10:00:00Z\"><samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>{inner}</samlp:Response>"
        )
    };
    let e = |doc: &str| v.verify_xml(doc.as_bytes()).expect_err("refused");

    // Content changed after signing.
    assert_eq!(
        e(&good.replace("bob@example.com", "admin@example.com")),
        SamlError::Signature(DsigError::DigestMismatch)
    );
    // Signature value changed.
    let sv =
        good.find("<ds:SignatureValue>").expect("valid test input") + "<ds:SignatureValue>".len();
    let mut flipped = good.clone().into_bytes();
    flipped[sv + 5] = if flipped[sv + 5] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        v.verify_xml(&flipped).expect_err("refused"),
        SamlError::Signature(DsigError::SignatureInvalid)
    );
    // Unsigned.
    assert_eq!(
        e(&unsigned),
        SamlError::Assertion(assertion::AssertionError::Unsigned)
    );
    // XSW: an evil assertion beside the signed one in a Response.
    assert_eq!(
        e(&resp(&format!("{evil}{good}"))),
        SamlError::Assertion(assertion::AssertionError::AssertionCount(2))
    );
    // XSW: the signed assertion hidden inside the evil one (Advice-like).
    let hidden = evil.replacen("</saml:Subject>", &format!("</saml:Subject>{good}"), 1);
    assert_eq!(e(&hidden).code(), "saml-assertion-count");
    // XSW: the evil assertion carries the good one's ID and the signature.
    let same_id = unsigned.replace("bob@example.com", "admin@example.com");
    let dup = resp(&format!("{}{}", same_id, good));
    assert_eq!(e(&dup).code(), "saml-duplicate-id");
    // An ID repeated on another ID-like attribute (`Id`) anywhere in the document.
    let id_twice = good.replacen(
        "</saml:Subject>",
        "<saml:SubjectExtra Id=\"_good\"/></saml:Subject>",
        1,
    );
    assert_eq!(
        e(&id_twice),
        SamlError::Signature(DsigError::DuplicateId("_good".into()))
    );
    // The good signature copied into the evil assertion: its reference names an ID that
    // is not in the document.
    let moved = evil.replacen("</saml:Issuer>", &format!("</saml:Issuer>{signature}"), 1);
    assert_eq!(
        e(&moved),
        SamlError::Signature(DsigError::ReferenceNotFound)
    );
    // A signature on the Response whose reference names the assertion: not enveloped.
    let on_response = resp(&format!("{signature}{unsigned}"));
    let v_loose = Verifier::new(
        pem_keys("xmlsec1/rsa2048.cert.pem"),
        VerifyOptions {
            require_signed_assertion: false,
            ..VerifyOptions::default()
        },
    )
    .expect("valid test input");
    assert_eq!(
        v_loose
            .verify_xml(on_response.as_bytes())
            .expect_err("refused"),
        SamlError::Signature(DsigError::NotEnveloped)
    );
    // A signature somewhere else than a direct child.
    let nested = unsigned.replacen("</saml:Subject>", &format!("{signature}</saml:Subject>"), 1);
    assert_eq!(
        e(&nested),
        SamlError::Assertion(assertion::AssertionError::SignatureMisplaced)
    );
    // Reference URI: empty, external, XPointer, dangling.
    for (uri, want) in [
        ("", DsigError::ReferenceUri),
        ("https://example.com/#_good", DsigError::ReferenceUri),
        ("#xpointer(/)", DsigError::ReferenceUri),
        ("#_other", DsigError::ReferenceNotFound),
    ] {
        let doc = good.replace("URI=\"#_good\"", &format!("URI=\"{uri}\""));
        assert_eq!(e(&doc), SamlError::Signature(want), "{uri}");
    }
    // Two references.
    let r0 = good.find("<ds:Reference").expect("valid test input");
    let r1 = good.find("</ds:Reference>").expect("valid test input") + "</ds:Reference>".len();
    let two = format!("{}{}{}", &good[..r1], &good[r0..r1], &good[r1..]);
    assert_eq!(e(&two), SamlError::Signature(DsigError::ReferenceCount(2)));
    // An XPath transform.
    let xpath = good.replacen(
        "</ds:Transforms>",
        "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xpath-19991116\"><ds:XPath>1</ds:XPath></ds:Transform></ds:Transforms>",
        1,
    );
    assert_eq!(
        e(&xpath),
        SamlError::Signature(DsigError::UnsupportedTransforms)
    );
    // An Object in the Signature.
    let object = good.replacen("</ds:Signature>", "<ds:Object/></ds:Signature>", 1);
    assert_eq!(e(&object).code(), "saml-signature-malformed");
    // A DOCTYPE in front.
    let doctype = format!("<!DOCTYPE saml:Assertion>{good}");
    assert_eq!(e(&doctype).code(), "saml-xml-forbidden");
}

#[test]
fn xmlsec1_verifies_what_we_sign() {
    if std::env::var("PORTCULLIS_XMLSEC1").as_deref() != Ok("1") {
        eprintln!("PORTCULLIS_XMLSEC1 is not 1: xmlsec1 interop not checked");
        return;
    }
    let dir = std::env::temp_dir().join(format!("portcullis-saml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("valid test input");
    for (key, cert, name) in [
        ("xmlsec1/rsa2048.key.pem", "xmlsec1/rsa2048.cert.pem", "rsa"),
        ("xmlsec1/p256.key.pem", "xmlsec1/p256.cert.pem", "p256"),
    ] {
        let xml = sign_assertion(&spec(), &signing_key(key), Some(&cert_der(cert)))
            .expect("valid test input");
        let path = dir.join(format!("ours-{name}.xml"));
        std::fs::write(&path, xml).expect("valid test input");
        let out = std::process::Command::new("xmlsec1")
            .arg("--verify")
            .arg("--pubkey-cert-pem")
            .arg(super::tests::fixtures().join(cert))
            .args([
                "--id-attr:ID",
                "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
            ])
            .arg(&path)
            .output()
            .expect("PORTCULLIS_XMLSEC1=1 but xmlsec1 cannot run");
        assert!(
            out.status.success(),
            "xmlsec1 refused our {name} signature: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
