//! The SAML 2.0 bearer grant (RFC 7522 §2.1): an identity provider's signed assertion,
//! `assertion` = base64url of the assertion XML, exchanged for the gateway's tokens.
//!
//! Checks, in order: the parameter's size and base64url; a bare `Assertion` (not a
//! `Response`), whose `Issuer` names a trusted identity provider (read before the
//! signature, only to pick whose certificates check it); the signature, under that
//! provider's certificates only (XML-DSig, by the SAML library); RFC 7522 §3: issuer,
//! `Audience` naming our token endpoint or issuer, a bearer confirmation with
//! `NotOnOrAfter` and (by default) `Recipient` = our token endpoint, the validity window
//! with the leeway, and a bounded lifetime; the `NameID` present. Then the policy: may this
//! subject have the scopes it asks for? The assertion's ID is consumed when the token is
//! issued (a one-time marker in the state store until the assertion expires), so an
//! assertion is exchanged once, across a fleet too.

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use portcullis_assertions::saml::assertion::{locate, SAML_NS};
use portcullis_assertions::saml::xml::{parse, XmlLimits};
use portcullis_assertions::saml::{Expectations, ValidationError, Verifier};

use super::error::ErrorCode;
use super::{printable, Grant, OAuthError, TokenService};
use crate::store::{now_secs, TokenFormat};

pub const GRANT_SAML2_BEARER: &str = "urn:ietf:params:oauth:grant-type:saml2-bearer";

/// Largest `assertion` parameter read (base64url text).
pub const MAX_ENCODED_ASSERTION: usize = 96 * 1024;

/// An identity provider whose assertions may be exchanged for tokens.
#[derive(Debug)]
pub struct TrustedSamlIssuer {
    /// The `Issuer` its assertions carry.
    pub entity_id: String,
    /// Its signing certificates' keys (several during a rotation), and nothing else.
    pub verifier: Verifier,
    /// The client id the issued tokens are recorded under.
    pub client_id: String,
    pub token_format: TokenFormat,
    pub refresh_tokens: bool,
    /// Clock skew allowed on every time bound.
    pub leeway: Duration,
    /// Longest `NotOnOrAfter − IssueInstant` accepted, seconds.
    pub max_lifetime: i64,
    /// The bearer confirmation must name our token endpoint as `Recipient` (RFC 7522 §3).
    pub require_recipient: bool,
    /// Subject (`NameID`) → the scopes it may be granted.
    pub subjects: HashMap<String, Vec<String>>,
}

fn invalid(why: impl Into<std::borrow::Cow<'static, str>>) -> OAuthError {
    ErrorCode::InvalidGrant.error(why)
}

/// The assertion XML of the parameter: base64url, padding tolerated (RFC 7522 §2.1 says it
/// SHOULD NOT be there, not MUST NOT).
fn decode(assertion: &str) -> Result<Vec<u8>, OAuthError> {
    if assertion.len() > MAX_ENCODED_ASSERTION {
        return Err(invalid(format!(
            "the assertion is longer than {MAX_ENCODED_ASSERTION} characters"
        )));
    }
    URL_SAFE_NO_PAD
        .decode(assertion.trim_end_matches('='))
        .map_err(|_| invalid("the assertion is not base64url-encoded XML (RFC 7522 section 2.1)"))
}

/// The `Issuer` of a bare assertion, read before its signature is checked.
fn unverified_issuer(xml: &[u8], limits: &XmlLimits) -> Result<String, OAuthError> {
    let doc = parse(xml, limits)
        .map_err(|e| invalid(format!("the assertion is not acceptable XML: {e}")))?;
    let located = locate(&doc).map_err(|e| invalid(format!("the assertion is refused: {e}")))?;
    if located.response.is_some() {
        return Err(invalid(
            "send the Assertion itself, not a Response around it (RFC 7522 section 2.1)",
        ));
    }
    let issuer = doc
        .children_named(located.assertion, SAML_NS, "Issuer")
        .next()
        .and_then(|i| doc.text_content(i))
        .map(|t| t.trim().to_owned());
    issuer.ok_or_else(|| invalid("the assertion has no Issuer"))
}

fn validation_message(e: &ValidationError) -> &'static str {
    match e {
        ValidationError::WrongIssuer => "the assertion's issuer is not trusted here",
        ValidationError::NotYetValid => "the assertion is not valid yet (NotBefore)",
        ValidationError::Expired => "the assertion has expired (NotOnOrAfter)",
        ValidationError::WrongAudience => {
            "the assertion's Audience does not name this token endpoint or issuer"
        }
        ValidationError::NoAudience => "the assertion has no AudienceRestriction",
        ValidationError::NoBearerConfirmation => "the assertion has no bearer SubjectConfirmation",
        ValidationError::BearerWithoutExpiry => {
            "the bearer SubjectConfirmationData has no NotOnOrAfter"
        }
        ValidationError::BearerExpired => "the bearer SubjectConfirmation has expired",
        ValidationError::BearerNotYetValid => "the bearer SubjectConfirmation is not valid yet",
        ValidationError::WrongRecipient => {
            "the bearer SubjectConfirmationData's Recipient is not this token endpoint"
        }
    }
}

impl TokenService {
    /// Validates a saml2-bearer assertion and the subject's rights; returns the grant to
    /// issue (its assertion ID is consumed when it is issued).
    ///
    /// # Errors
    /// `invalid_grant` naming the first check that fails, or `invalid_scope`.
    pub fn saml_bearer(&self, assertion: &str, scope: Option<&str>) -> Result<Grant, OAuthError> {
        let xml = decode(assertion)?;
        let Some(first) = self.saml_trusted.first() else {
            return Err(ErrorCode::UnsupportedGrantType.error("no SAML issuer is trusted here"));
        };
        let issuer = unverified_issuer(&xml, &first.verifier.options().limits)?;
        let Some(trusted) = self.saml_trusted.iter().find(|t| t.entity_id == issuer) else {
            return Err(invalid(format!(
                "assertions from issuer \"{}\" are not accepted",
                printable(&issuer)
            )));
        };
        let verified = trusted
            .verifier
            .verify_xml(&xml)
            .map_err(|e| invalid(format!("the assertion is refused ({}): {e}", e.code())))?;

        let issuers = [trusted.entity_id.clone()];
        let now = jiff::Timestamp::now();
        let recipient = trusted
            .require_recipient
            .then_some(self.token_endpoint.as_str());
        let expect = |audience| Expectations {
            issuers: &issuers,
            audience,
            recipient,
            now,
            skew: trusted.leeway,
            require_audience: true,
        };
        // The token endpoint is the audience RFC 7522 names; the issuer is accepted too.
        let checked = verified
            .validate(&expect(&self.token_endpoint))
            .or_else(|e| match e {
                ValidationError::WrongAudience => verified.validate(&expect(&self.issuer)),
                other => Err(other),
            });
        checked.map_err(|e| invalid(validation_message(&e)))?;

        let expires = verified
            .not_on_or_after()
            .map(|t| t.as_second())
            .ok_or_else(|| invalid("the assertion has no NotOnOrAfter"))?;
        if expires - verified.issue_instant.as_second() > trusted.max_lifetime {
            return Err(invalid(format!(
                "the assertion lives longer than the {} s this issuer may use",
                trusted.max_lifetime
            )));
        }
        let subject = verified.subject.name_id.clone();
        if subject.is_empty() {
            return Err(invalid("the assertion's NameID is empty"));
        }
        let Some(allowed) = trusted.subjects.get(&subject) else {
            return Err(invalid(format!(
                "subject \"{}\" may not obtain tokens here",
                printable(&subject)
            )));
        };
        let whom = format!("subject \"{}\"", printable(&subject));
        let scope = Self::grant_scope(scope, allowed, &whom)?;
        let leeway = i64::try_from(trusted.leeway.as_secs()).unwrap_or(0);
        Ok(Grant {
            client_id: trusted.client_id.clone(),
            subject,
            scope,
            grant_type: GRANT_SAML2_BEARER,
            format: trusted.token_format,
            refresh: trusted.refresh_tokens,
            family_id: None,
            previous_refresh: None,
            source: Some(format!("{} {}", trusted.entity_id, verified.id)),
            once: Some((
                format!("saml2-bearer\n{}\n{}", trusted.entity_id, verified.id),
                expires.max(now_secs()) + leeway,
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parameter_is_base64url_with_or_without_padding() {
        let xml = b"<a>?>~</a>";
        let plain = URL_SAFE_NO_PAD.encode(xml);
        assert_eq!(decode(&plain).expect("decoded"), xml);
        let padded = base64::engine::general_purpose::URL_SAFE.encode(xml);
        assert!(padded.ends_with('='));
        assert_eq!(decode(&padded).expect("decoded"), xml);
        let standard = base64::engine::general_purpose::STANDARD.encode(b"<a>?>~</a>");
        assert!(standard.contains('+') || standard.contains('/'));
        assert_eq!(
            decode(&standard).expect_err("refused").code,
            ErrorCode::InvalidGrant
        );
        assert!(decode(&"A".repeat(MAX_ENCODED_ASSERTION + 4)).is_err());
    }

    #[test]
    fn a_response_or_a_missing_issuer_is_refused_before_any_signature() {
        let limits = XmlLimits::default();
        let response = format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"r\" Version=\"2.0\"><samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status><saml:Assertion xmlns:saml=\"{SAML_NS}\" ID=\"a\"/></samlp:Response>"
        );
        let e = unverified_issuer(response.as_bytes(), &limits).expect_err("refused");
        assert!(
            e.description.contains("not a Response"),
            "{}",
            e.description
        );
        let bare = format!("<saml:Assertion xmlns:saml=\"{SAML_NS}\" ID=\"a\"/>");
        let e = unverified_issuer(bare.as_bytes(), &limits).expect_err("refused");
        assert!(e.description.contains("no Issuer"), "{}", e.description);
        let ok = format!(
            "<saml:Assertion xmlns:saml=\"{SAML_NS}\" ID=\"a\"><saml:Issuer> https://idp.test </saml:Issuer></saml:Assertion>"
        );
        assert_eq!(
            unverified_issuer(ok.as_bytes(), &limits).expect("issuer"),
            "https://idp.test"
        );
        assert!(unverified_issuer(b"<!DOCTYPE x><x/>", &limits).is_err());
    }
}
