//! SAML 2.0 bearer assertions: decoding, XML-DSig verification, reading and validating,
//! and signing — pure functions for `require_saml`, the `/saml/token` issuer and the
//! RFC 7522 grant, with no I/O.
//!
//! The path of a token: [`token`] (strict base64, allow-listed inflation under a cap) →
//! [`xml`] (a small owned tree; DTDs, foreign entities and PIs refused; limits) →
//! [`assertion::locate`] (exactly one assertion, signatures only where they protect it)
//! → [`dsig`] (one enveloped signature, `#ID` reference, keys only from the caller) with
//! [`c14n`] → [`assertion::read`] → [`VerifiedAssertion::validate`] (issuer, times,
//! audience, bearer confirmation). [`Verifier`] runs the whole path; [`sign`] produces
//! what it accepts.
//!
//! For the gateway, compiled once per policy load, then per request:
//!
//! ```no_run
//! use portcullis_assertions::saml::{Expectations, Verifier, VerifyOptions};
//! # fn demo(idp_certs_pem: &str, credentials: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::from_certificates_pem(idp_certs_pem, VerifyOptions::default())?;
//! let issuers = vec!["https://idp.example.com/metadata".to_string()];
//! match verifier.verify_token(credentials) {
//!     Ok(assertion) => {
//!         assertion.validate(&Expectations {
//!             issuers: &issuers,
//!             audience: "https://gateway.example.com",
//!             recipient: None,
//!             now: jiff::Timestamp::now(),
//!             skew: std::time::Duration::from_secs(60),
//!             require_audience: true,
//!         })?;
//!         // assertion.subject.name_id, .attributes, .session_index; .id and
//!         // .not_on_or_after() for a OneTimeUse / replay marker.
//!     }
//!     Err(e) => eprintln!("401 {}: {e}", e.code()), // e.g. "saml-signature-invalid"
//! }
//! # Ok(()) }
//! ```
//!
//! Which file owns what:
//! - `token.rs`: header credentials to XML bytes; `xml.rs`: the parser and tree;
//!   `c14n.rs`: exclusive and inclusive canonicalisation; `dsig.rs`: the signature
//!   profile and its verification, unique IDs; `keys.rs`: trusted certificates.
//! - `assertion.rs`: the wrapping defence and reading; `validate.rs`: expectations;
//!   `verifier.rs`: the whole path; `error.rs`: [`SamlError`] and its stable codes.
//! - `sign.rs`: signed assertions for the issuer and `portcullis sign saml`.
//! - `step.rs`: the `require_saml` step (header, verified-assertion cache, one-time use,
//!   variables).
//! - `tests.rs`: public vectors (python3-saml, pysaml2); `validate_tests.rs`: the
//!   python3-saml responses with one SAML-level defect each; `interop_tests.rs`: xmlsec1
//!   outputs, sign/verify round trips, tampering and wrapping variants;
//!   `fuzz_tests.rs`: mutated tokens never panic and stay within limits.

pub mod assertion;
pub mod c14n;
pub mod dsig;
pub mod error;
pub mod keys;
pub mod metadata;
pub mod sign;
pub mod step;
pub mod token;
pub mod validate;
pub mod verifier;
pub mod xml;

pub use assertion::{
    Conditions, SamlAttribute, SignedParts, Subject, SubjectConfirmation, VerifiedAssertion,
};
pub use error::SamlError;
pub use keys::{KeyError, PublicKey, TrustedKey};
pub use sign::{AssertionSpec, SamlSigningKey, SignError};
pub use step::{OneTime, RequireSaml, SamlOutputs, VerifiedCache};
pub use token::{AllowedEncodings, Encoding};
pub use validate::{Expectations, ValidationError};
pub use verifier::{Verifier, VerifyOptions};
pub use xml::XmlLimits;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod interop_tests;
#[cfg(test)]
mod step_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod validate_tests;
