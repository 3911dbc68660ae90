//! The public vectors copied into `fixtures/saml/`: python3-saml and pysaml2 responses
//! (valid, tampered, unsigned, signature-wrapping), and the assertions xmlsec1 signed
//! (`fixtures/saml/xmlsec1/make.sh`). Every valid one verifies; every other one is
//! refused for its own reason.

use super::assertion::AssertionError;
use super::dsig::DsigError;
use super::xml::XmlError;
use super::*;
use jiff::Timestamp;
use std::path::PathBuf;
use std::time::Duration;

pub(super) fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/saml"))
}

pub(super) fn read(path: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub(super) fn pem_keys(path: &str) -> Vec<TrustedKey> {
    TrustedKey::from_certificates_pem(
        &String::from_utf8(read(path)).expect("valid test input"),
        1024,
    )
    .expect("valid test input")
}

/// A base64 vector file as header credentials (the files wrap lines).
pub(super) fn credentials(path: &str) -> String {
    String::from_utf8(read(path))
        .expect("valid test input")
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect()
}

fn python3_saml_verifier(sha1: bool, require_signed_assertion: bool) -> Verifier {
    let mut keys = pem_keys("python3-saml/certs/idp.crt");
    keys.extend(pem_keys("python3-saml/certs/settings2-idp.crt"));
    keys.extend(pem_keys("python3-saml/certs/certificate1"));
    Verifier::new(
        keys,
        VerifyOptions {
            allow_sha1: sha1,
            require_signed_assertion,
            ..VerifyOptions::default()
        },
    )
    .expect("valid test input")
}

pub(super) fn ts(s: &str) -> Timestamp {
    s.parse().expect("valid test input")
}

pub(super) const PITBULK: &str = "https://pitbulk.no-ip.org/simplesaml/saml2/idp/metadata.php";
const IDP2: &str = "https://idp.example.com/simplesaml/saml2/idp/metadata.php";

#[test]
fn python3_saml_signed_vectors_verify() {
    let v = python3_saml_verifier(true, false);
    // (file, subject, issuer, assertion signed, response signed)
    let cases: &[(&str, &str, &str, bool, bool)] = &[
        (
            "signed_assertion_response",
            "_3af62f1d03513bdd61dd5bf04d3deb7aa617480e22",
            PITBULK,
            true,
            false,
        ),
        (
            "signed_assertion_response2",
            "25ddd7d34a7d79db69167625cda56a320adf2876",
            IDP2,
            true,
            false,
        ),
        (
            "signed_message_response",
            "_b98f98bb1ab512ced653b58baaff543448daed535d",
            PITBULK,
            false,
            true,
        ),
        (
            "double_signed_response",
            "_2126dd19b8a9a28238d88fdc7385e60995004a7782",
            PITBULK,
            true,
            true,
        ),
        (
            "double_signed_response2",
            "25ddd7d34a7d79db69167625cda56a320adf2876",
            IDP2,
            true,
            true,
        ),
        (
            "valid_response",
            "492882615acf31c8096b627245d76ae53036c090",
            "http://idp.example.com/",
            true,
            true,
        ),
        (
            "valid_response2",
            "25ddd7d34a7d79db69167625cda56a320adf2876",
            IDP2,
            true,
            true,
        ),
        (
            "valid_response_with_namequalifier",
            "492882615acf31c8096b627245d76ae53036c090",
            "http://idp.example.com/",
            true,
            true,
        ),
        (
            "valid_response_without_inresponseto",
            "492882615acf31c8096b627245d76ae53036c090",
            PITBULK,
            false,
            true,
        ),
        (
            "response1_with_friendlyname",
            "support@onelogin.com",
            "https://app.onelogin.com/saml/metadata/13590",
            true,
            false,
        ),
        // python3-saml refuses these for SP-side reasons this library leaves to its caller
        // or to validate() (Destination, SPNameQualifier, missing AuthnStatement or
        // Conditions, missing Response Issuer); their signatures are valid.
        (
            "invalids/empty_destination",
            "492882615acf31c8096b627245d76ae53036c090",
            "http://idp.example.com/",
            true,
            true,
        ),
        (
            "invalids/wrong_spnamequalifier",
            "test@example.com",
            PITBULK,
            false,
            true,
        ),
        (
            "invalids/no_authnstatement",
            "492882615acf31c8096b627245d76ae53036c090",
            PITBULK,
            false,
            true,
        ),
        (
            "invalids/no_conditions",
            "492882615acf31c8096b627245d76ae53036c090",
            PITBULK,
            false,
            true,
        ),
        (
            "invalids/no_issuer_response",
            "492882615acf31c8096b627245d76ae53036c090",
            PITBULK,
            true,
            false,
        ),
    ];
    for &(file, subject, issuer, a, r) in cases {
        let path = format!("python3-saml/responses/{file}.xml.base64");
        let got = v
            .verify_token(&credentials(&path))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(got.subject.name_id, subject, "{file}");
        assert_eq!(got.issuer, issuer, "{file}");
        assert_eq!(
            got.signed,
            SignedParts {
                assertion: a,
                response: r
            },
            "{file}"
        );
    }
}

#[test]
fn python3_saml_assertion_is_read_and_validated_at_its_own_time() {
    let v = python3_saml_verifier(true, true);
    let a = v
        .verify_token(&credentials(
            "python3-saml/responses/signed_assertion_response.xml.base64",
        ))
        .expect("valid test input");
    assert_eq!(a.id, "pfxd3dd23b1-afbc-c5d1-5f98-21c6bac5db4c");
    assert_eq!(
        a.session_index.as_deref(),
        Some("_85e7cfe16d6e7e600bd98bbc2b4371e1c69588a4da")
    );
    assert_eq!(
        a.attribute("mail"),
        Some(&["test@example.com".to_string()][..])
    );
    assert_eq!(
        a.attribute("eduPersonAffiliation"),
        Some(&["user".to_string(), "admin".to_string()][..])
    );
    assert_eq!(a.not_on_or_after(), Some(ts("2993-10-02T05:57:16Z")));
    assert!(!a.one_time_use());
    let issuers = [PITBULK.to_string()];
    let exp = Expectations {
        issuers: &issuers,
        audience: "https://pitbulk.no-ip.org/newonelogin/demo1/metadata.php",
        recipient: Some("https://pitbulk.no-ip.org/newonelogin/demo1/index.php?acs"),
        now: ts("2014-03-31T00:37:20Z"),
        skew: Duration::from_secs(60),
        require_audience: true,
    };
    assert_eq!(a.validate(&exp), Ok(()));
    // NotBefore is 00:36:46; a minute of skew reaches back to 00:35:46.
    let early = Expectations {
        now: ts("2014-03-31T00:35:40Z"),
        ..exp
    };
    assert_eq!(a.validate(&early), Err(ValidationError::NotYetValid));
    let tolerated = Expectations {
        now: ts("2014-03-31T00:35:50Z"),
        ..exp
    };
    assert_eq!(a.validate(&tolerated), Ok(()));
    let late = Expectations {
        now: ts("2993-10-02T05:58:17Z"),
        ..exp
    };
    assert_eq!(a.validate(&late), Err(ValidationError::Expired));
}

#[test]
fn python3_saml_refusals_name_their_reason() {
    let v = python3_saml_verifier(true, false);
    let cases: &[(&str, &str)] = &[
        // Tampered or re-formatted after signing.
        ("invalids/bad_reference", "saml-digest-mismatch"),
        ("invalids/signed_assertion_response", "saml-digest-mismatch"),
        ("response1", "saml-digest-mismatch"),
        (
            "response1_with_duplicate_attributes",
            "saml-digest-mismatch",
        ),
        ("response_with_nested_nameid_values", "saml-digest-mismatch"),
        ("adfs_response", "saml-digest-mismatch"),
        // Placeholder signature values ("Stuff") or a truncated one.
        ("response2", "saml-signature-malformed"),
        ("response3", "saml-signature-malformed"),
        ("response5", "saml-signature-malformed"),
        ("response_node_text_attack", "saml-signature-malformed"),
        ("invalids/no_key", "saml-signature-malformed"),
        // Signature wrapping.
        ("invalids/signature_wrapping_attack", "saml-duplicate-id"),
        (
            "invalids/signature_wrapping_attack2",
            "saml-assertion-count",
        ),
        ("wrapped_response_2", "saml-signature-misplaced"),
        ("invalids/multiple_assertions", "saml-assertion-count"),
        ("response4", "saml-assertion-count"),
        ("response_with_ampersands", "saml-assertion-count"),
        // Whole-document references (URI="") are not accepted.
        ("response_without_reference_uri", "saml-reference-invalid"),
        (
            "response_without_assertion_reference_uri",
            "saml-reference-invalid",
        ),
        // Unsigned.
        ("invalids/no_signature", "saml-unsigned"),
        ("unsigned_response", "saml-unsigned"),
        ("valid_unsigned_response", "saml-unsigned"),
        ("expired_response", "saml-unsigned"),
        ("no_audience", "saml-unsigned"),
        ("invalids/invalid_audience", "saml-unsigned"),
        // Refused while reading, before or after the signature.
        ("invalids/duplicated_attributes", "saml-assertion-malformed"),
        ("invalids/empty_nameid", "saml-assertion-malformed"),
        ("invalids/no_issuer_assertion", "saml-assertion-malformed"),
        ("invalids/no_status", "saml-assertion-malformed"),
        ("invalids/no_status_code", "saml-assertion-malformed"),
        ("invalids/status_code_responder", "saml-assertion-count"),
        ("invalids/no_saml2", "saml-not-an-assertion"),
        ("unsigned_assertion", "saml-xml-malformed"),
        // Encryption is not supported.
        ("valid_encrypted_assertion", "saml-encrypted-unsupported"),
        (
            "signed_message_encrypted_assertion",
            "saml-encrypted-unsupported",
        ),
        (
            "double_signed_encrypted_assertion",
            "saml-encrypted-unsupported",
        ),
        ("response_encrypted_nameid", "saml-encrypted-unsupported"),
        (
            "invalids/encrypted_nameID_without_keyinfo",
            "saml-encrypted-unsupported",
        ),
    ];
    for &(file, code) in cases {
        let path = format!("python3-saml/responses/{file}.xml.base64");
        let err = v.verify_token(&credentials(&path)).expect_err(file);
        assert_eq!(err.code(), code, "{file}: {err}");
    }
    for (file, code) in [
        ("open_saml_response.xml", "saml-signature-malformed"),
        ("simple_saml_php.xml", "saml-signature-malformed"),
        ("pretty_signed_message_response.xml", "saml-digest-mismatch"),
    ] {
        let err = v
            .verify_xml(&read(&format!("python3-saml/responses/{file}")))
            .expect_err(file);
        assert_eq!(err.code(), code, "{file}: {err}");
    }
    // The precise variants behind a few codes.
    let err = |f: &str| {
        v.verify_token(&credentials(&format!(
            "python3-saml/responses/{f}.xml.base64"
        )))
        .expect_err("refused")
    };
    assert_eq!(
        err("invalids/signature_wrapping_attack"),
        SamlError::Signature(DsigError::DuplicateId(
            "pfxc3d2b542-0f7e-8767-8e87-5b0dc6913375".into()
        ))
    );
    assert_eq!(
        err("invalids/multiple_assertions"),
        SamlError::Assertion(AssertionError::AssertionCount(2))
    );
    assert_eq!(
        err("response_without_reference_uri"),
        SamlError::Signature(DsigError::ReferenceUri)
    );
    assert_eq!(
        err("invalids/empty_nameid"),
        SamlError::Assertion(AssertionError::EmptyNameId)
    );
    assert_eq!(
        err("invalids/no_signature"),
        SamlError::Assertion(AssertionError::Unsigned)
    );
}

#[test]
fn sha1_and_response_only_signatures_are_refused_unless_allowed() {
    let file = credentials("python3-saml/responses/signed_assertion_response.xml.base64");
    assert_eq!(
        python3_saml_verifier(false, true)
            .verify_token(&file)
            .expect_err("refused"),
        SamlError::Signature(DsigError::Sha1NotAllowed)
    );
    let message_only = credentials("python3-saml/responses/signed_message_response.xml.base64");
    let err = python3_saml_verifier(true, true)
        .verify_token(&message_only)
        .expect_err("refused");
    assert_eq!(err, SamlError::Assertion(AssertionError::AssertionUnsigned));
    assert_eq!(err.code(), "saml-unsigned");
}

#[test]
fn trust_comes_only_from_the_configured_certificates() {
    // signed_assertion_response carries its own (valid) certificate in KeyInfo; trusting
    // another IdP's certificate only, it is refused.
    let other = Verifier::new(
        pem_keys("python3-saml/certs/settings2-idp.crt"),
        VerifyOptions {
            allow_sha1: true,
            ..VerifyOptions::default()
        },
    )
    .expect("valid test input");
    let err = other
        .verify_token(&credentials(
            "python3-saml/responses/signed_assertion_response.xml.base64",
        ))
        .expect_err("refused");
    assert_eq!(err, SamlError::Signature(DsigError::SignatureInvalid));
    assert_eq!(err.code(), "saml-signature-invalid");
    // Rotation: the old and the new certificate both trusted, either verifies.
    let mut both = pem_keys("python3-saml/certs/settings2-idp.crt");
    both.extend(pem_keys("python3-saml/certs/idp.crt"));
    let rotating = Verifier::new(
        both,
        VerifyOptions {
            allow_sha1: true,
            ..VerifyOptions::default()
        },
    )
    .expect("valid test input");
    assert!(rotating
        .verify_token(&credentials(
            "python3-saml/responses/signed_assertion_response.xml.base64"
        ))
        .is_ok());
    assert!(rotating
        .verify_token(&credentials(
            "python3-saml/responses/signed_assertion_response2.xml.base64"
        ))
        .is_ok());
    assert!(matches!(
        Verifier::new(Vec::new(), VerifyOptions::default()),
        Err(KeyError::NoKeys)
    ));
    // 1024-bit RSA keys are refused unless explicitly allowed (the vectors need it).
    let pem = String::from_utf8(read("python3-saml/certs/idp.crt")).expect("valid test input");
    assert_eq!(
        TrustedKey::from_certificates_pem(&pem, 2048),
        Err(KeyError::WeakRsaKey(1024))
    );
}

fn pysaml2_verifier() -> Verifier {
    Verifier::new(
        pem_keys("pysaml2/test.pem"),
        VerifyOptions {
            allow_sha1: true,
            require_signed_assertion: false,
            ..VerifyOptions::default()
        },
    )
    .expect("valid test input")
}

#[test]
fn pysaml2_vectors() {
    let v = pysaml2_verifier();
    // Signed by the trusted key with a random certificate in KeyInfo: the embedded
    // certificate plays no part, the trusted key verifies it.
    let a = v
        .verify_xml(&read(
            "pysaml2/xmlsec1-keydata/signed-assertion-random-embedded-cert.xml",
        ))
        .expect("valid test input");
    assert_eq!(a.subject.name_id, "attack-name-id");
    // Trusting another key, the same document is refused.
    let other = Verifier::new(
        pem_keys("pysaml2/keys/mycert.pem"),
        VerifyOptions {
            allow_sha1: true,
            ..VerifyOptions::default()
        },
    )
    .expect("valid test input");
    assert_eq!(
        other
            .verify_xml(&read(
                "pysaml2/xmlsec1-keydata/signed-assertion-random-embedded-cert.xml"
            ))
            .expect_err("refused"),
        SamlError::Signature(DsigError::SignatureInvalid)
    );
    let cases: &[(&str, &str)] = &[
        // Both re-indented after signing (xmlsec1 refuses them too).
        ("saml_signed.xml", "saml-digest-mismatch"),
        ("saml_false_signed.xml", "saml-digest-mismatch"),
        ("saml_unsigned.xml", "saml-unsigned"),
        ("idp.xml", "saml-not-an-assertion"),
        (
            "xmlsec1-keydata/signed-assertion-with-hmac.xml",
            "saml-signature-algorithm",
        ),
        (
            "xmlsec1-keydata/signed-response-with-hmac.xml",
            "saml-signature-algorithm",
        ),
        (
            "xsw/signed-xsw-assertion-assertion.xml",
            "saml-assertion-count",
        ),
        (
            "xsw/signed-xsw-assertion-extensions.xml",
            "saml-assertion-count",
        ),
        (
            "xsw/signed-xsw-assertion-in-assertion-first-sig.xml",
            "saml-assertion-count",
        ),
        (
            "xsw/signed-xsw-assertion-wrapper.xml",
            "saml-assertion-count",
        ),
        (
            "xsw/signed-xsw-response-in-response-first-sig.xml",
            "saml-duplicate-id",
        ),
    ];
    for &(file, code) in cases {
        let err = v
            .verify_xml(&read(&format!("pysaml2/{file}")))
            .expect_err(file);
        assert_eq!(err.code(), code, "{file}: {err}");
    }
}

#[test]
fn xml_limits_and_forbidden_constructs_have_their_own_codes() {
    let v = python3_saml_verifier(true, false);
    let e = v
        .verify_xml(b"<!DOCTYPE x [<!ENTITY a \"b\">]><x/>")
        .expect_err("refused");
    assert_eq!(
        (e.code(), e),
        ("saml-xml-forbidden", SamlError::Xml(XmlError::Doctype))
    );
    let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
    assert_eq!(
        v.verify_xml(deep.as_bytes()).expect_err("refused").code(),
        "saml-xml-limits"
    );
}
