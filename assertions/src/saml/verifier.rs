//! [`Verifier`]: trusted keys and options, compiled once, and the whole path from a
//! header's credentials to a [`VerifiedAssertion`].

use super::assertion::{self, AssertionError, SignedParts, VerifiedAssertion};
use super::dsig::{verify_enveloped, DsigOptions, IdIndex, DSIG_NS};
use super::error::SamlError;
use super::keys::{KeyError, TrustedKey};
use super::token::{decode_token, AllowedEncodings};
use super::xml::{parse, XmlLimits};

/// How strict a verifier is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Accept SHA-1 digests and RSA-SHA1 signatures (legacy IdPs only).
    pub allow_sha1: bool,
    /// Encodings a token may use after base64.
    pub allowed_encodings: AllowedEncodings,
    /// Parser limits; `limits.max_bytes` also caps inflation.
    pub limits: XmlLimits,
    /// The assertion must carry its own signature (RFC 7522 bearer use). When false, a
    /// signed Response around an unsigned assertion is accepted too.
    pub require_signed_assertion: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            allow_sha1: false,
            allowed_encodings: AllowedEncodings::default(),
            limits: XmlLimits::default(),
            require_signed_assertion: true,
        }
    }
}

/// Verifies SAML 2.0 assertions against a fixed set of trusted keys.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<TrustedKey>,
    options: VerifyOptions,
}

impl Verifier {
    /// A verifier trusting exactly `keys` (at least one).
    ///
    /// # Errors
    /// [`KeyError::NoKeys`] when `keys` is empty.
    pub fn new(keys: Vec<TrustedKey>, options: VerifyOptions) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Verifier { keys, options })
    }

    /// A verifier trusting the certificates of a PEM bundle (RSA keys of 2048 bits or
    /// more, or P-256), e.g. an IdP's current and next signing certificates.
    ///
    /// # Errors
    /// [`KeyError`] when the bundle holds no usable certificate.
    pub fn from_certificates_pem(pem: &str, options: VerifyOptions) -> Result<Self, KeyError> {
        Self::new(TrustedKey::from_certificates_pem(pem, 2048)?, options)
    }

    /// The options in force.
    #[must_use]
    pub fn options(&self) -> &VerifyOptions {
        &self.options
    }

    /// Decodes the credentials of `Authorization: SAML <credentials>` and verifies them.
    ///
    /// # Errors
    /// A [`SamlError`] for the first failure.
    pub fn verify_token(&self, credentials: &str) -> Result<VerifiedAssertion, SamlError> {
        let (xml, _) = decode_token(
            credentials,
            self.options.allowed_encodings,
            self.options.limits.max_bytes,
        )?;
        self.verify_xml(&xml)
    }

    /// Verifies an XML document (a bare Assertion or a Response with one Assertion).
    ///
    /// # Errors
    /// A [`SamlError`] for the first failure.
    pub fn verify_xml(&self, xml: &[u8]) -> Result<VerifiedAssertion, SamlError> {
        let doc = parse(xml, &self.options.limits)?;
        let ids = IdIndex::build(&doc)?;
        let located = assertion::locate(&doc)?;

        let signatures: Vec<_> = doc
            .elements()
            .filter(|&e| {
                doc.element(e)
                    .is_some_and(|el| el.name.is(DSIG_NS, "Signature"))
            })
            .collect();
        if signatures.is_empty() {
            return Err(AssertionError::Unsigned.into());
        }
        let mut signed = SignedParts {
            assertion: false,
            response: false,
        };
        let dsig = DsigOptions {
            allow_sha1: self.options.allow_sha1,
        };
        // Check every signature's place before any cryptography.
        for &sig in &signatures {
            let parent = doc.node(sig).parent;
            let slot = if parent == Some(located.assertion) {
                &mut signed.assertion
            } else if parent.is_some() && parent == located.response {
                &mut signed.response
            } else {
                return Err(AssertionError::SignatureMisplaced.into());
            };
            if *slot {
                return Err(AssertionError::Repeated("Signature").into());
            }
            *slot = true;
        }
        if self.options.require_signed_assertion && !signed.assertion {
            return Err(AssertionError::AssertionUnsigned.into());
        }
        for &sig in &signatures {
            let target = verify_enveloped(&doc, sig, &ids, &self.keys, dsig)?;
            // verify_enveloped only returns the signature's parent; keep the identity
            // check here too, where the decision is made.
            if Some(target) != doc.node(sig).parent {
                return Err(AssertionError::SignatureMisplaced.into());
            }
        }
        Ok(assertion::read(&doc, located, signed)?)
    }
}
