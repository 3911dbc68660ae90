//! The SAML issuer (`saml_issuer:` in the policy): `POST /saml/token` authenticates HTTP
//! Basic against a users file and answers a signed SAML 2.0 bearer assertion, deflated and
//! base64-encoded, ready for `Authorization: SAML <token>`. A service with `issue_saml:`
//! answers the same way for a caller its own pipeline authenticated (API key, HMAC,
//! bearer).
//!
//! [`users`]: the users file (argon2id hashes, attributes). [`endpoint`]: the HTTP side
//! (method, Basic credentials, the brute-force gate, the answer). [`pipeline`]: issuing for
//! a pipeline's caller. This file: the compiled issuer and what one issued assertion says
//! (`portcullis sign saml` signs the same way offline).

pub mod endpoint;
pub mod pipeline;

use std::io::Write as _;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::HeaderValue;
use jiff::Timestamp;
use portcullis_assertions::saml::sign::{new_assertion_id, sign_assertion_with_id};
use portcullis_assertions::saml::{AssertionSpec, SamlSigningKey, SignError};
use serde::Serialize;

use crate::basic_auth::users::{User, Users};

/// `NameID Format` when the policy names none.
pub const NAME_ID_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";

/// The compiled issuer.
#[derive(Debug)]
pub struct SamlIssuer {
    /// The canonical path the Basic endpoint answers on (`/saml/token` by default); it is
    /// served only when there is a users file.
    pub path: String,
    /// Our entity ID: the assertions' `Issuer`.
    pub entity_id: String,
    /// The relying party's entity ID: the `Audience`.
    pub audience: String,
    /// The bearer confirmation's `Recipient`, when the relying party checks one.
    pub recipient: Option<String>,
    pub name_id_format: String,
    /// How long an assertion is valid (`NotOnOrAfter` of the conditions and confirmation).
    pub validity: Duration,
    /// Attributes of the users file that go into assertions (`None`: all of them).
    pub attributes: Option<Vec<String>>,
    /// The `WWW-Authenticate` challenge of a `401`.
    pub challenge: HeaderValue,
    /// The users of the Basic endpoint; `None`: only `issue_saml` services issue.
    pub users: Option<Users>,
    pub key: SamlSigningKey,
    /// The signing certificate, sent in `KeyInfo` as a hint (relying parties pin it).
    pub certificate_der: Option<Vec<u8>>,
    /// Password verifications running at once (each takes a core for tens of ms).
    pub verifications: tokio::sync::Semaphore,
}

/// The outcome, before it is written: the JSON of an issued assertion, or a refusal.
pub type Outcome = Result<Vec<u8>, portcullis_assertions::Rejection>;

/// Longest wait for a free slot (a password check, a signature) before `503`.
const SLOT_WAIT: Duration = Duration::from_secs(2);

/// One of the issuer's slots for CPU-heavy work (a password check, a signature): at most
/// one per core at once, so a flood queues briefly and then gets `503`, never an unbounded
/// pile of blocking tasks.
///
/// # Errors
/// `503 issuer-busy` when no slot frees up within [`SLOT_WAIT`].
pub async fn signing_slot(
    issuer: &SamlIssuer,
) -> std::result::Result<tokio::sync::SemaphorePermit<'_>, portcullis_assertions::Rejection> {
    match tokio::time::timeout(SLOT_WAIT, issuer.verifications.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(portcullis_assertions::Rejection::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "issuer-busy",
            "too many assertions are being issued; try again shortly",
        )
        .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"))),
    }
}

/// One assertion, as the endpoint answers it.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedAssertion {
    /// base64(raw DEFLATE(assertion XML)): the credentials of `Authorization: SAML`.
    pub token: String,
    pub token_type: &'static str,
    /// `NotOnOrAfter`, seconds since the epoch.
    pub expires_at: i64,
    pub expires_in: u64,
    pub assertion_id: String,
}

impl SamlIssuer {
    /// Signs an assertion for `user`, valid from `now` for the issuer's validity.
    ///
    /// # Errors
    /// No randomness for the ID, or signing failed.
    pub fn issue(&self, user: &User, now: Timestamp) -> Result<IssuedAssertion, SignError> {
        let attributes = user
            .attributes
            .iter()
            .filter(|(name, _)| {
                self.attributes
                    .as_ref()
                    .is_none_or(|allowed| allowed.contains(name))
            })
            .cloned()
            .collect();
        self.issue_for(&user.name, attributes, now)
    }

    /// Signs an assertion for `subject` with exactly `attributes`, valid from `now`.
    ///
    /// # Errors
    /// No randomness for the ID, or signing failed.
    pub fn issue_for(
        &self,
        subject: &str,
        attributes: Vec<(String, Vec<String>)>,
        now: Timestamp,
    ) -> Result<IssuedAssertion, SignError> {
        let spec = AssertionSpec {
            issuer: self.entity_id.clone(),
            subject: subject.to_owned(),
            name_id_format: Some(self.name_id_format.clone()),
            audience: self.audience.clone(),
            recipient: self.recipient.clone(),
            session_index: None,
            attributes,
            issued_at: now,
            valid_for: self.validity,
            one_time_use: false,
        };
        let id = new_assertion_id()?;
        let xml = sign_assertion_with_id(&spec, &id, &self.key, self.certificate_der.as_deref())?;
        let expires_in = self.validity.as_secs();
        Ok(IssuedAssertion {
            token: header_credentials(xml.as_bytes()),
            token_type: "SAML",
            expires_at: now
                .as_second()
                .saturating_add(i64::try_from(expires_in).unwrap_or(i64::MAX)),
            expires_in,
            assertion_id: id,
        })
    }
}

/// The credentials of `Authorization: SAML` for an assertion: base64 (standard alphabet,
/// padded) of its raw DEFLATE, as the HTTP-Redirect binding encodes it.
#[must_use]
pub fn header_credentials(xml: &[u8]) -> String {
    let mut encoder = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(xml.len() / 2),
        flate2::Compression::default(),
    );
    // Writing to a Vec cannot fail.
    let deflated = encoder
        .write_all(xml)
        .and_then(|()| encoder.finish())
        .unwrap_or_default();
    STANDARD.encode(deflated)
}

#[cfg(test)]
mod tests {
    use portcullis_assertions::saml::{Expectations, Verifier, VerifyOptions};

    use crate::basic_auth::users;

    use super::*;

    pub(crate) fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/saml/xmlsec1")
            .join(name);
        std::fs::read_to_string(path).expect("fixture")
    }

    fn issuer(key: &str) -> SamlIssuer {
        let hash = users::hash_password("pw").expect("hash");
        let text = format!(
            "users:\n  - name: alice\n    password_argon2id: \"{hash}\"\n    attributes: {{group: [admins, ops], secret_level: top}}\n"
        );
        let mut errors = Vec::new();
        let parsed = crate::config::parse_text::<users::UsersFileSpec>(
            std::sync::Arc::from(std::path::Path::new("users.yaml")),
            &text,
            &mut errors,
        )
        .expect("users");
        SamlIssuer {
            path: "/saml/token".to_owned(),
            entity_id: "https://gateway.test/saml".to_owned(),
            audience: "https://api.test".to_owned(),
            recipient: None,
            name_id_format: NAME_ID_UNSPECIFIED.to_owned(),
            validity: Duration::from_secs(300),
            attributes: Some(vec!["group".to_owned()]),
            challenge: HeaderValue::from_static("Basic realm=\"test\""),
            users: Some(Users::compile(&parsed.spec).expect("users")),
            key: SamlSigningKey::from_pem(&fixture(key)).expect("key"),
            certificate_der: None,
            verifications: tokio::sync::Semaphore::new(1),
        }
    }

    #[test]
    fn issued_assertions_verify_with_the_library_and_carry_the_listed_attributes() {
        for key in ["rsa2048.key.pem", "p256.key.pem"] {
            let issuer = issuer(key);
            let users = issuer.users.as_ref().expect("users");
            let alice = users.verify("alice", "pw").expect("alice");
            let now = Timestamp::now();
            let issued = issuer.issue(alice, now).expect("issued");
            let again = issuer.issue(alice, now).expect("issued");
            assert_ne!(
                issued.assertion_id, again.assertion_id,
                "a fresh ID each time"
            );
            assert_eq!(issued.expires_in, 300);
            assert_eq!(issued.expires_at, now.as_second() + 300);
            let verifier = Verifier::new(
                vec![issuer.key.trusted_key("ours")],
                VerifyOptions::default(),
            )
            .expect("verifier");
            let assertion = verifier.verify_token(&issued.token).expect("verifies");
            assert_eq!(assertion.id, issued.assertion_id);
            assert_eq!(assertion.subject.name_id, "alice");
            assert_eq!(
                assertion.attribute("group"),
                Some(&["admins".to_owned(), "ops".to_owned()][..])
            );
            assert_eq!(assertion.attribute("secret_level"), None, "not listed");
            assert_eq!(
                assertion.not_on_or_after().map(|t| t.as_second()),
                Some(issued.expires_at)
            );
            let issuers = vec![issuer.entity_id.clone()];
            let expect = |audience| Expectations {
                issuers: &issuers,
                audience,
                recipient: None,
                now,
                skew: Duration::from_secs(5),
                require_audience: true,
            };
            assertion
                .validate(&expect("https://api.test"))
                .expect("valid");
            assert!(assertion.validate(&expect("https://other.test")).is_err());
        }
    }
}
