//! Signed SAML 2.0 assertions, for the gateway's `/saml/token` issuer and
//! `portcullis sign saml`: an enveloped signature over exclusive C14N, SHA-256 digest,
//! RSA-SHA256 (PKCS#1 v1.5) or ECDSA-SHA256, exactly the profile [`super::Verifier`]
//! accepts.
//!
//! RSA signing uses the `rsa` crate with blinding; it carries the Marvin timing advisory
//! for private-key operations, so prefer an ECDSA P-256 key where the relying parties
//! accept it.

use std::fmt::Write as _;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::Pkcs1v15Sign;
use sha2::{Digest, Sha256};

use super::assertion::{BEARER, SAML_NS};
use super::c14n::{canonicalize, escape_attr, escape_text, C14nMethod, EXC_C14N};
use super::dsig::{DSIG_NS, ECDSA_SHA256, ENVELOPED_SIGNATURE, RSA_SHA256, SHA256};
use super::keys::{PublicKey, TrustedKey};
use super::xml::{parse, XmlError, XmlLimits};

/// Why an assertion could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the private key is neither a PKCS#8 RSA or P-256 key nor a PKCS#1 RSA key")]
    Key,
    #[error("RSA signing failed")]
    Rsa,
    #[error("no randomness available for the assertion ID")]
    Random,
    #[error("validity out of range")]
    Time,
    #[error("internal: the generated assertion does not parse: {0}")]
    Xml(#[from] XmlError),
}

/// A private key that signs assertions.
#[derive(Clone)]
pub enum SamlSigningKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    EcdsaP256(p256::ecdsa::SigningKey),
}

impl std::fmt::Debug for SamlSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SamlSigningKey::Rsa(_) => "SamlSigningKey::Rsa(..)",
            SamlSigningKey::EcdsaP256(_) => "SamlSigningKey::EcdsaP256(..)",
        })
    }
}

impl SamlSigningKey {
    /// A key from PEM: PKCS#8 (`PRIVATE KEY`, RSA or P-256) or PKCS#1 (`RSA PRIVATE KEY`).
    ///
    /// # Errors
    /// [`SignError::Key`] for anything else.
    pub fn from_pem(pem: &str) -> Result<Self, SignError> {
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
            return Ok(SamlSigningKey::Rsa(Box::new(k)));
        }
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SamlSigningKey::EcdsaP256(k));
        }
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs1_pem(pem) {
            return Ok(SamlSigningKey::Rsa(Box::new(k)));
        }
        Err(SignError::Key)
    }

    /// The matching public key, to trust it (tests, a self-check).
    #[must_use]
    pub fn trusted_key(&self, label: &str) -> TrustedKey {
        TrustedKey {
            key: match self {
                SamlSigningKey::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
                SamlSigningKey::EcdsaP256(k) => PublicKey::EcdsaP256(*k.verifying_key()),
            },
            label: label.to_string(),
        }
    }

    fn algorithm(&self) -> &'static str {
        match self {
            SamlSigningKey::Rsa(_) => RSA_SHA256,
            SamlSigningKey::EcdsaP256(_) => ECDSA_SHA256,
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        match self {
            SamlSigningKey::Rsa(k) => k
                .sign_with_rng(
                    &mut rsa::rand_core::OsRng,
                    Pkcs1v15Sign::new::<Sha256>(),
                    &Sha256::digest(message),
                )
                .map_err(|_| SignError::Rsa),
            SamlSigningKey::EcdsaP256(k) => {
                use p256::ecdsa::signature::Signer;
                let sig: p256::ecdsa::Signature = k.sign(message);
                Ok(sig.to_bytes().to_vec())
            }
        }
    }
}

/// What the issued assertion says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionSpec {
    /// Our entity ID.
    pub issuer: String,
    /// The subject's NameID.
    pub subject: String,
    /// NameID `Format` (e.g. `urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified`).
    pub name_id_format: Option<String>,
    /// The relying party's entity ID.
    pub audience: String,
    /// The bearer confirmation's `Recipient` (the token endpoint of the relying party).
    pub recipient: Option<String>,
    pub session_index: Option<String>,
    /// Attribute name → values, in this order.
    pub attributes: Vec<(String, Vec<String>)>,
    /// `IssueInstant`, `NotBefore` and `AuthnInstant` (whole seconds are kept).
    pub issued_at: Timestamp,
    /// `NotOnOrAfter` is `issued_at + valid_for`.
    pub valid_for: Duration,
    pub one_time_use: bool,
}

/// A new assertion ID: `_` and 32 random hex digits.
///
/// # Errors
/// [`SignError::Random`] when the OS has no randomness to give.
pub fn new_assertion_id() -> Result<String, SignError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|_| SignError::Random)?;
    Ok(format!("_{}", hex::encode(bytes)))
}

/// Signs a new assertion described by `spec` with a fresh random ID. `certificate_der`,
/// when given, is placed in `KeyInfo` as a hint (verifiers must not trust it).
///
/// # Errors
/// A [`SignError`].
pub fn sign_assertion(
    spec: &AssertionSpec,
    key: &SamlSigningKey,
    certificate_der: Option<&[u8]>,
) -> Result<String, SignError> {
    sign_assertion_with_id(spec, &new_assertion_id()?, key, certificate_der)
}

/// As [`sign_assertion`] with a chosen ID (an XML NCName, e.g. `_` and hex).
///
/// # Errors
/// A [`SignError`].
pub fn sign_assertion_with_id(
    spec: &AssertionSpec,
    id: &str,
    key: &SamlSigningKey,
    certificate_der: Option<&[u8]>,
) -> Result<String, SignError> {
    let (head, tail) = assertion_xml(spec, id)?;
    let unsigned = format!("{head}{tail}");
    let limits = XmlLimits {
        max_bytes: usize::MAX,
        max_nodes: usize::MAX,
        ..XmlLimits::default()
    };
    let doc = parse(unsigned.as_bytes(), &limits)?;
    let digest = Sha256::digest(canonicalize(
        &doc,
        doc.root(),
        None,
        &C14nMethod::exclusive(),
    ));

    let signed_info = format!(
        concat!(
            "<ds:SignedInfo xmlns:ds=\"{ds}\">",
            "<ds:CanonicalizationMethod Algorithm=\"{c14n}\"/>",
            "<ds:SignatureMethod Algorithm=\"{alg}\"/>",
            "<ds:Reference URI=\"#{id}\"><ds:Transforms>",
            "<ds:Transform Algorithm=\"{env}\"/><ds:Transform Algorithm=\"{c14n}\"/>",
            "</ds:Transforms><ds:DigestMethod Algorithm=\"{sha256}\"/>",
            "<ds:DigestValue>{digest}</ds:DigestValue></ds:Reference></ds:SignedInfo>"
        ),
        ds = DSIG_NS,
        c14n = EXC_C14N,
        alg = key.algorithm(),
        id = id,
        env = ENVELOPED_SIGNATURE,
        sha256 = SHA256,
        digest = STANDARD.encode(digest),
    );
    let si_doc = parse(signed_info.as_bytes(), &limits)?;
    let si_c14n = canonicalize(&si_doc, si_doc.root(), None, &C14nMethod::exclusive());
    let signature_value = STANDARD.encode(key.sign(&si_c14n)?);

    // In place, SignedInfo inherits `ds` from Signature: its canonical form is the same.
    let signed_info_in_place = signed_info.replacen(&format!(" xmlns:ds=\"{DSIG_NS}\""), "", 1);
    let mut signature = format!(
        "<ds:Signature xmlns:ds=\"{DSIG_NS}\">{signed_info_in_place}<ds:SignatureValue>{signature_value}</ds:SignatureValue>"
    );
    if let Some(cert) = certificate_der {
        let _ = write!(
            signature,
            "<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>",
            STANDARD.encode(cert)
        );
    }
    signature.push_str("</ds:Signature>");
    Ok(format!("{head}{signature}{tail}"))
}

/// The unsigned assertion split where the signature goes (after `Issuer`).
fn assertion_xml(spec: &AssertionSpec, id: &str) -> Result<(String, String), SignError> {
    let issued = Timestamp::from_second(spec.issued_at.as_second()).map_err(|_| SignError::Time)?;
    let valid_for = SignedDuration::try_from(spec.valid_for).map_err(|_| SignError::Time)?;
    let expires = issued.checked_add(valid_for).map_err(|_| SignError::Time)?;

    let mut head = String::with_capacity(2048);
    head.push_str("<saml:Assertion xmlns:saml=\"");
    head.push_str(SAML_NS);
    head.push_str("\" ID=\"");
    escape_attr(&mut head, id);
    let _ = write!(
        head,
        "\" Version=\"2.0\" IssueInstant=\"{issued}\"><saml:Issuer>"
    );
    escape_text(&mut head, &spec.issuer);
    head.push_str("</saml:Issuer>");

    let mut tail = String::with_capacity(2048);
    tail.push_str("<saml:Subject><saml:NameID");
    if let Some(f) = &spec.name_id_format {
        tail.push_str(" Format=\"");
        escape_attr(&mut tail, f);
        tail.push('"');
    }
    tail.push('>');
    escape_text(&mut tail, &spec.subject);
    let _ = write!(
        tail,
        "</saml:NameID><saml:SubjectConfirmation Method=\"{BEARER}\"><saml:SubjectConfirmationData NotOnOrAfter=\"{expires}\""
    );
    if let Some(r) = &spec.recipient {
        tail.push_str(" Recipient=\"");
        escape_attr(&mut tail, r);
        tail.push('"');
    }
    let _ = write!(
        tail,
        "/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore=\"{issued}\" NotOnOrAfter=\"{expires}\"><saml:AudienceRestriction><saml:Audience>"
    );
    escape_text(&mut tail, &spec.audience);
    tail.push_str("</saml:Audience></saml:AudienceRestriction>");
    if spec.one_time_use {
        tail.push_str("<saml:OneTimeUse/>");
    }
    let _ = write!(
        tail,
        "</saml:Conditions><saml:AuthnStatement AuthnInstant=\"{issued}\""
    );
    if let Some(s) = &spec.session_index {
        tail.push_str(" SessionIndex=\"");
        escape_attr(&mut tail, s);
        tail.push('"');
    }
    tail.push_str("><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>");
    if !spec.attributes.is_empty() {
        tail.push_str("<saml:AttributeStatement>");
        for (name, values) in &spec.attributes {
            tail.push_str("<saml:Attribute Name=\"");
            escape_attr(&mut tail, name);
            tail.push_str("\">");
            for v in values {
                tail.push_str("<saml:AttributeValue>");
                escape_text(&mut tail, v);
                tail.push_str("</saml:AttributeValue>");
            }
            tail.push_str("</saml:Attribute>");
        }
        tail.push_str("</saml:AttributeStatement>");
    }
    tail.push_str("</saml:Assertion>");
    Ok((head, tail))
}
