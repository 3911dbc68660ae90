//! The keys a verifier trusts: public keys taken from the X.509 certificates the operator
//! configures for an identity provider (several at once during a key rotation).
//!
//! Trust comes only from here. A certificate inside a document's `ds:KeyInfo` is never
//! used; the signature must verify under one of these keys. The certificates are pinned
//! keys: their validity dates and issuers are not checked (IdPs commonly sign with
//! long-expired self-signed certificates, and the operator's configuration is the trust
//! anchor).

use rsa::pkcs8::DecodePublicKey;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a configured certificate could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no trusted certificate is configured")]
    NoKeys,
    #[error("not a PEM certificate: {0}")]
    Pem(String),
    #[error("not a DER X.509 certificate: {0}")]
    Certificate(String),
    #[error("the certificate's key is neither RSA nor ECDSA P-256")]
    UnsupportedKey,
    #[error("RSA keys under 2048 bits are refused ({0} bits)")]
    WeakRsaKey(usize),
}

/// A public key a signature may verify under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa(rsa::RsaPublicKey),
    EcdsaP256(p256::ecdsa::VerifyingKey),
}

/// A trusted key with a label for logs (the certificate's subject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub key: PublicKey,
    pub label: String,
}

impl TrustedKey {
    /// The key of a DER-encoded X.509 certificate.
    ///
    /// # Errors
    /// When the certificate cannot be parsed or holds another kind of key.
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, KeyError> {
        Self::from_certificate_der_with(der, 2048)
    }

    /// As [`TrustedKey::from_certificate_der`], accepting RSA keys of `min_rsa_bits` and
    /// more (the public test vectors of some SAML libraries use 1024-bit keys).
    ///
    /// # Errors
    /// When the certificate cannot be parsed, holds another kind of key, or a weaker one.
    pub fn from_certificate_der_with(der: &[u8], min_rsa_bits: usize) -> Result<Self, KeyError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| KeyError::Certificate(e.to_string()))?;
        let spki = cert.public_key().raw;
        let label = cert.subject().to_string();
        let key = if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(spki) {
            let bits = rsa::traits::PublicKeyParts::size(&k) * 8;
            if bits < min_rsa_bits {
                return Err(KeyError::WeakRsaKey(bits));
            }
            PublicKey::Rsa(k)
        } else if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(spki) {
            PublicKey::EcdsaP256(k)
        } else {
            return Err(KeyError::UnsupportedKey);
        };
        Ok(TrustedKey { key, label })
    }

    /// The keys of every certificate in a PEM text (one or more `CERTIFICATE` blocks).
    ///
    /// # Errors
    /// When the text holds no certificate or one cannot be used.
    pub fn from_certificates_pem(pem: &str, min_rsa_bits: usize) -> Result<Vec<Self>, KeyError> {
        let mut keys = Vec::new();
        for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
            let block = block.map_err(|e| KeyError::Pem(e.to_string()))?;
            if block.label != "CERTIFICATE" {
                continue;
            }
            keys.push(Self::from_certificate_der_with(
                &block.contents,
                min_rsa_bits,
            )?);
        }
        if keys.is_empty() {
            return Err(KeyError::Pem("no CERTIFICATE block".into()));
        }
        Ok(keys)
    }

    /// The key of a certificate given as bare base64 DER (the form SAML metadata and
    /// python3-saml settings use; whitespace is ignored).
    ///
    /// # Errors
    /// When the text is not base64 or the certificate cannot be used.
    pub fn from_certificate_base64(b64: &str, min_rsa_bits: usize) -> Result<Self, KeyError> {
        use base64::Engine;
        let compact: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        Self::from_certificate_der_with(&der, min_rsa_bits)
    }
}
