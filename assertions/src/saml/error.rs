//! One error type for everything between a header value and an accepted assertion, each
//! variant mapped to a short stable code for problem responses and metrics. Messages say
//! what is wrong without echoing the token.

use super::assertion::AssertionError;
use super::dsig::DsigError;
use super::keys::KeyError;
use super::token::TokenError;
use super::validate::ValidationError;
use super::xml::XmlError;

/// Why a SAML token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamlError {
    #[error("SAML token: {0}")]
    Token(#[from] TokenError),
    #[error("SAML XML: {0}")]
    Xml(#[from] XmlError),
    #[error("SAML signature: {0}")]
    Signature(#[from] DsigError),
    #[error("SAML assertion: {0}")]
    Assertion(#[from] AssertionError),
    #[error("SAML assertion: {0}")]
    Invalid(#[from] ValidationError),
    #[error("SAML keys: {0}")]
    Keys(#[from] KeyError),
}

impl SamlError {
    /// A short, stable, kebab-case code (`saml-expired`, `saml-signature-invalid`...).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            SamlError::Token(e) => match e {
                TokenError::EncodingNotAllowed(_) => "saml-encoding-not-allowed",
                TokenError::InflatedTooLarge(_) | TokenError::TooLong(_) => "saml-token-too-large",
                TokenError::Empty | TokenError::Base64 | TokenError::Inflate => {
                    "saml-token-malformed"
                }
            },
            SamlError::Xml(e) => match e {
                XmlError::TooLarge { .. }
                | XmlError::TooDeep(_)
                | XmlError::TooManyAttributes(_)
                | XmlError::TooManyNodes(_) => "saml-xml-limits",
                XmlError::Doctype
                | XmlError::UnknownEntity(_)
                | XmlError::ProcessingInstruction => "saml-xml-forbidden",
                _ => "saml-xml-malformed",
            },
            SamlError::Signature(e) => match e {
                DsigError::DigestMismatch => "saml-digest-mismatch",
                DsigError::SignatureInvalid => "saml-signature-invalid",
                DsigError::DuplicateId(_) => "saml-duplicate-id",
                DsigError::Sha1NotAllowed
                | DsigError::UnsupportedCanonicalization(_)
                | DsigError::UnsupportedSignatureMethod(_)
                | DsigError::UnsupportedDigestMethod(_)
                | DsigError::UnsupportedTransforms => "saml-signature-algorithm",
                DsigError::ReferenceCount(_)
                | DsigError::ReferenceUri
                | DsigError::ReferenceNotFound
                | DsigError::NotEnveloped => "saml-reference-invalid",
                DsigError::Malformed(_) => "saml-signature-malformed",
            },
            SamlError::Assertion(e) => match e {
                AssertionError::Unsigned | AssertionError::AssertionUnsigned => "saml-unsigned",
                AssertionError::AssertionCount(_) | AssertionError::AssertionMisplaced => {
                    "saml-assertion-count"
                }
                AssertionError::SignatureMisplaced => "saml-signature-misplaced",
                AssertionError::Encrypted => "saml-encrypted-unsupported",
                AssertionError::StatusNotSuccess => "saml-status-not-success",
                AssertionError::NotSaml => "saml-not-an-assertion",
                _ => "saml-assertion-malformed",
            },
            SamlError::Invalid(e) => match e {
                ValidationError::WrongIssuer => "saml-issuer",
                ValidationError::NotYetValid | ValidationError::BearerNotYetValid => {
                    "saml-not-yet-valid"
                }
                ValidationError::Expired | ValidationError::BearerExpired => "saml-expired",
                ValidationError::WrongAudience | ValidationError::NoAudience => "saml-audience",
                ValidationError::NoBearerConfirmation | ValidationError::BearerWithoutExpiry => {
                    "saml-no-bearer-confirmation"
                }
                ValidationError::WrongRecipient => "saml-recipient",
            },
            SamlError::Keys(_) => "saml-keys",
        }
    }
}
