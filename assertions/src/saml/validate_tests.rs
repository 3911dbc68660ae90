//! validate() against python3-saml's unsigned responses, each of which carries one
//! SAML-level defect: read without a signature (as the verifier does once the signature
//! holds), then check validate() names the defect.

use super::assertion::{self, AssertionError, Located};
use super::tests::{credentials, ts, PITBULK};
use super::xml::parse;
use super::*;
use std::time::Duration;

/// python3-saml's unsigned responses carry one SAML-level defect each: read them without
/// a signature (as the library does after verifying) and check validate() names it.
#[test]
fn python3_saml_semantic_defects_are_named_by_validate() {
    let issuers = [
        "http://idp.example.com/".to_string(),
        PITBULK.to_string(),
        "https://example.com/simplesaml/saml2/idp/metadata.php".to_string(),
    ];
    // The vectors come from two SP set-ups: python3-saml's settings1 ("stuff.com", 2011)
    // and its demo SP ("pitbulk", 2014).
    let stuff = Expectations {
        issuers: &issuers,
        audience: "http://stuff.com/endpoints/metadata.php",
        recipient: Some("http://stuff.com/endpoints/endpoints/acs.php"),
        now: ts("2011-06-17T14:54:14Z"),
        skew: Duration::ZERO,
        require_audience: true,
    };
    let pitbulk = Expectations {
        audience: "https://pitbulk.no-ip.org/newonelogin/demo1/metadata.php",
        recipient: Some("https://pitbulk.no-ip.org/newonelogin/demo1/index.php?acs"),
        now: ts("2014-02-19T01:37:01Z"),
        ..stuff
    };
    let unsigned = |file: &str| -> Result<VerifiedAssertion, AssertionError> {
        let raw = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            credentials(&format!("python3-saml/responses/{file}.xml.base64")),
        )
        .expect("valid test input");
        let doc = parse(&raw, &XmlLimits::default()).expect("valid test input");
        let at = doc
            .elements()
            .find(|&e| {
                doc.element(e)
                    .expect("valid test input")
                    .name
                    .is(assertion::SAML_NS, "Assertion")
            })
            .expect("valid test input");
        let located = Located {
            assertion: at,
            response: None,
        };
        assertion::read(
            &doc,
            located,
            SignedParts {
                assertion: false,
                response: false,
            },
        )
    };
    let cases: &[(&str, &Expectations<'_>, Result<(), ValidationError>)] = &[
        ("valid_unsigned_response", &pitbulk, Ok(())),
        ("expired_response", &pitbulk, Err(ValidationError::Expired)),
        (
            "invalids/not_after_failed",
            &pitbulk,
            Err(ValidationError::Expired),
        ),
        (
            "invalids/invalid_audience",
            &stuff,
            Err(ValidationError::WrongAudience),
        ),
        (
            "invalids/invalid_issuer_assertion",
            &stuff,
            Err(ValidationError::WrongIssuer),
        ),
        (
            "invalids/invalid_subjectconfirmation_nb",
            &stuff,
            Err(ValidationError::BearerNotYetValid),
        ),
        (
            "invalids/invalid_subjectconfirmation_noa",
            &stuff,
            Err(ValidationError::BearerExpired),
        ),
        (
            "invalids/invalid_subjectconfirmation_recipient",
            &stuff,
            Err(ValidationError::WrongRecipient),
        ),
        (
            "invalids/no_subjectconfirmation_data",
            &stuff,
            Err(ValidationError::BearerWithoutExpiry),
        ),
        ("no_audience", &stuff, Err(ValidationError::NoAudience)),
        // Its only confirmation is holder-of-key.
        (
            "invalids/no_subjectconfirmation_method",
            &stuff,
            Err(ValidationError::NoBearerConfirmation),
        ),
    ];
    for (file, exp, want) in cases {
        let a = unsigned(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(&a.validate(exp), want, "{file}");
    }
    assert_eq!(
        unsigned("invalids/no_nameid").expect_err("refused"),
        AssertionError::Missing("NameID")
    );
    // (invalids/no_id lacks the Response's ID, which matters only for a signed Response.)
}
