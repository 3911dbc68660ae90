//! XML-DSig verification of one enveloped signature, the profile SAML uses and no more.
//!
//! Accepted: `SignedInfo` canonicalised with exclusive C14N (with or without comments,
//! PrefixList honoured) or Canonical XML 1.0; exactly one `Reference` whose URI is
//! `#ID` of the element the signature is a direct child of; transforms
//! enveloped-signature then, optionally, exclusive C14N; digest SHA-256 (SHA-1 when
//! allowed); signature RSA PKCS#1 v1.5 with SHA-256 (SHA-1 when allowed) or ECDSA P-256
//! with SHA-256 (`r || s`, 64 bytes). Everything else is refused: HMAC, XPath and XSLT
//! transforms, `Object`s, several references, external URIs.
//!
//! The key comes from the caller's trusted list, never from `KeyInfo` (ignored).

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rsa::Pkcs1v15Sign;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::c14n::{canonicalize, C14nMethod, EXC_C14N, EXC_C14N_WITH_COMMENTS};
use super::keys::{PublicKey, TrustedKey};
use super::xml::{Document, NodeId};

/// The XML-DSig namespace.
pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// The namespace of `InclusiveNamespaces`.
const EXC_C14N_NS: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";

pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
pub const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
pub const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
pub const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
pub const ENVELOPED_SIGNATURE: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsigError {
    #[error("malformed signature: {0}")]
    Malformed(&'static str),
    #[error("canonicalization method {0:?} is not supported")]
    UnsupportedCanonicalization(String),
    #[error("signature method {0:?} is not supported")]
    UnsupportedSignatureMethod(String),
    #[error("digest method {0:?} is not supported")]
    UnsupportedDigestMethod(String),
    #[error("SHA-1 is not allowed for this identity provider")]
    Sha1NotAllowed,
    #[error("transforms other than enveloped-signature and exclusive C14N are not accepted")]
    UnsupportedTransforms,
    #[error("SignedInfo must hold exactly one Reference, found {0}")]
    ReferenceCount(usize),
    #[error("the Reference URI must be a same-document #ID")]
    ReferenceUri,
    #[error("the Reference points to no element")]
    ReferenceNotFound,
    #[error("the signature is not enveloped in the element it signs")]
    NotEnveloped,
    #[error("ID {0:?} appears more than once in the document")]
    DuplicateId(String),
    #[error("the digest of the signed element does not match")]
    DigestMismatch,
    #[error("the signature does not verify under any trusted key")]
    SignatureInvalid,
}

/// What the caller allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DsigOptions {
    /// Accept SHA-1 digests and RSA-SHA1 signatures (legacy IdPs only).
    pub allow_sha1: bool,
}

/// The attributes that carry IDs: SAML 2.0 `ID`, XML-DSig/other `Id`, SAML 1.1
/// `AssertionID`.
pub const ID_ATTRIBUTES: [&str; 3] = ["ID", "Id", "AssertionID"];

/// Every ID in a document, each of which must be unique (so a reference has exactly one
/// target: the root of the signature-wrapping attacks).
#[derive(Debug, Default, Clone)]
pub struct IdIndex {
    ids: HashMap<String, NodeId>,
}

impl IdIndex {
    /// Indexes `doc`.
    ///
    /// # Errors
    /// [`DsigError::DuplicateId`] when an ID value appears twice (on any ID attribute).
    pub fn build(doc: &Document) -> Result<Self, DsigError> {
        let mut ids = HashMap::new();
        for el in doc.elements() {
            let Some(e) = doc.element(el) else { continue };
            for name in ID_ATTRIBUTES {
                if let Some(v) = e.attr(name) {
                    if ids.insert(v.to_string(), el).is_some() {
                        return Err(DsigError::DuplicateId(v.chars().take(64).collect()));
                    }
                }
            }
        }
        Ok(IdIndex { ids })
    }

    /// The element carrying ID `id`.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<NodeId> {
        self.ids.get(id).copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DigestAlg {
    Sha256,
    Sha1,
}

impl DigestAlg {
    fn from_uri(uri: &str, opts: DsigOptions) -> Result<Self, DsigError> {
        match uri {
            SHA256 => Ok(DigestAlg::Sha256),
            SHA1 if opts.allow_sha1 => Ok(DigestAlg::Sha1),
            SHA1 => Err(DsigError::Sha1NotAllowed),
            other => Err(DsigError::UnsupportedDigestMethod(short(other))),
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            DigestAlg::Sha256 => Sha256::digest(data).to_vec(),
            DigestAlg::Sha1 => Sha1::digest(data).to_vec(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignatureAlg {
    RsaSha256,
    RsaSha1,
    EcdsaSha256,
}

impl SignatureAlg {
    fn from_uri(uri: &str, opts: DsigOptions) -> Result<Self, DsigError> {
        match uri {
            RSA_SHA256 => Ok(SignatureAlg::RsaSha256),
            ECDSA_SHA256 => Ok(SignatureAlg::EcdsaSha256),
            RSA_SHA1 if opts.allow_sha1 => Ok(SignatureAlg::RsaSha1),
            RSA_SHA1 => Err(DsigError::Sha1NotAllowed),
            other => Err(DsigError::UnsupportedSignatureMethod(short(other))),
        }
    }

    fn verify(self, key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
        match (self, key) {
            (SignatureAlg::RsaSha256, PublicKey::Rsa(k)) => k
                .verify(
                    Pkcs1v15Sign::new::<Sha256>(),
                    &Sha256::digest(message),
                    signature,
                )
                .is_ok(),
            (SignatureAlg::RsaSha1, PublicKey::Rsa(k)) => k
                .verify(
                    Pkcs1v15Sign::new::<Sha1>(),
                    &Sha1::digest(message),
                    signature,
                )
                .is_ok(),
            (SignatureAlg::EcdsaSha256, PublicKey::EcdsaP256(k)) => {
                use p256::ecdsa::signature::Verifier;
                match p256::ecdsa::Signature::from_slice(signature) {
                    Ok(sig) => k.verify(message, &sig).is_ok(),
                    Err(_) => false,
                }
            }
            _ => false,
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(100).collect()
}

/// Verifies the enveloped signature `signature` (a `ds:Signature` element) and returns
/// the element it signs, which is always its parent.
///
/// # Errors
/// A [`DsigError`] naming what is refused or does not verify.
pub fn verify_enveloped(
    doc: &Document,
    signature: NodeId,
    ids: &IdIndex,
    keys: &[TrustedKey],
    opts: DsigOptions,
) -> Result<NodeId, DsigError> {
    let parts = SignatureParts::read(doc, signature, opts)?;
    let target = ids
        .get(&parts.reference_id)
        .ok_or(DsigError::ReferenceNotFound)?;
    if doc.node(signature).parent != Some(target) {
        return Err(DsigError::NotEnveloped);
    }

    // A same-document `#ID` reference selects no comments, whatever the transform.
    let signed_bytes = canonicalize(
        doc,
        target,
        Some(signature),
        &parts.reference_c14n.without_comments(),
    );
    let digest = parts.digest_alg.digest(&signed_bytes);
    if !bool::from(digest.as_slice().ct_eq(parts.digest_value.as_slice())) {
        return Err(DsigError::DigestMismatch);
    }

    let signed_info = canonicalize(doc, parts.signed_info, None, &parts.signed_info_c14n);
    if keys.iter().any(|k| {
        parts
            .signature_alg
            .verify(&k.key, &signed_info, &parts.signature_value)
    }) {
        Ok(target)
    } else {
        Err(DsigError::SignatureInvalid)
    }
}

/// The pieces of a `ds:Signature`, read and checked against the accepted profile.
struct SignatureParts {
    signed_info: NodeId,
    signed_info_c14n: C14nMethod,
    signature_alg: SignatureAlg,
    reference_id: String,
    reference_c14n: C14nMethod,
    digest_alg: DigestAlg,
    digest_value: Vec<u8>,
    signature_value: Vec<u8>,
}

impl SignatureParts {
    fn read(doc: &Document, signature: NodeId, opts: DsigOptions) -> Result<Self, DsigError> {
        let children: Vec<NodeId> = doc.child_elements(signature).collect();
        let [signed_info, signature_value, rest @ ..] = children.as_slice() else {
            return Err(DsigError::Malformed(
                "Signature lacks SignedInfo or SignatureValue",
            ));
        };
        expect(doc, *signed_info, "SignedInfo")?;
        expect(doc, *signature_value, "SignatureValue")?;
        match rest {
            [] => {}
            [key_info] => expect(doc, *key_info, "KeyInfo")?,
            _ => return Err(DsigError::Malformed("unexpected elements in Signature")),
        }
        let signature_value = base64_content(doc, *signature_value)?;

        let si: Vec<NodeId> = doc.child_elements(*signed_info).collect();
        let [c14n_method, sig_method, references @ ..] = si.as_slice() else {
            return Err(DsigError::Malformed("SignedInfo lacks its methods"));
        };
        expect(doc, *c14n_method, "CanonicalizationMethod")?;
        expect(doc, *sig_method, "SignatureMethod")?;
        if references.len() != 1 {
            return Err(DsigError::ReferenceCount(references.len()));
        }
        let reference = references[0];
        expect(doc, reference, "Reference")?;

        let c14n_uri = algorithm(doc, *c14n_method)?;
        let signed_info_c14n = C14nMethod::from_uri(c14n_uri, prefix_list(doc, *c14n_method)?)
            .ok_or_else(|| DsigError::UnsupportedCanonicalization(short(c14n_uri)))?;
        if doc.child_elements(*sig_method).next().is_some() {
            return Err(DsigError::Malformed("SignatureMethod has parameters"));
        }
        let signature_alg = SignatureAlg::from_uri(algorithm(doc, *sig_method)?, opts)?;

        let uri = doc
            .element(reference)
            .and_then(|e| e.attr("URI"))
            .ok_or(DsigError::ReferenceUri)?;
        let reference_id = uri
            .strip_prefix('#')
            .filter(|id| !id.is_empty() && !id.contains(['(', ')', '#', '/']))
            .ok_or(DsigError::ReferenceUri)?
            .to_string();

        let rc: Vec<NodeId> = doc.child_elements(reference).collect();
        let [transforms, digest_method, digest_value] = rc.as_slice() else {
            return Err(DsigError::UnsupportedTransforms);
        };
        expect(doc, *transforms, "Transforms")?;
        expect(doc, *digest_method, "DigestMethod")?;
        expect(doc, *digest_value, "DigestValue")?;
        let reference_c14n = read_transforms(doc, *transforms)?;
        let digest_alg = DigestAlg::from_uri(algorithm(doc, *digest_method)?, opts)?;
        let digest_value = base64_content(doc, *digest_value)?;

        Ok(SignatureParts {
            signed_info: *signed_info,
            signed_info_c14n,
            signature_alg,
            reference_id,
            reference_c14n,
            digest_alg,
            digest_value,
            signature_value,
        })
    }
}

/// Enveloped-signature first, then at most one exclusive C14N: anything else (XPath,
/// XSLT, base64, several canonicalisations) is refused. Without an explicit C14N the
/// node set is serialised with Canonical XML 1.0, as XML-DSig specifies.
fn read_transforms(doc: &Document, transforms: NodeId) -> Result<C14nMethod, DsigError> {
    let list: Vec<NodeId> = doc.child_elements(transforms).collect();
    let (first, rest) = list.split_first().ok_or(DsigError::UnsupportedTransforms)?;
    expect(doc, *first, "Transform")?;
    if algorithm(doc, *first)? != ENVELOPED_SIGNATURE || doc.child_elements(*first).next().is_some()
    {
        return Err(DsigError::UnsupportedTransforms);
    }
    match rest {
        [] => Ok(C14nMethod::Inclusive {
            with_comments: false,
        }),
        [c14n] => {
            expect(doc, *c14n, "Transform")?;
            let uri = algorithm(doc, *c14n)?;
            if uri != EXC_C14N && uri != EXC_C14N_WITH_COMMENTS {
                return Err(DsigError::UnsupportedTransforms);
            }
            C14nMethod::from_uri(uri, prefix_list(doc, *c14n)?)
                .ok_or(DsigError::UnsupportedTransforms)
        }
        _ => Err(DsigError::UnsupportedTransforms),
    }
}

/// The PrefixList of an `ec:InclusiveNamespaces` child, `#default` as `""`.
fn prefix_list(doc: &Document, method: NodeId) -> Result<Vec<String>, DsigError> {
    let mut prefixes = Vec::new();
    for child in doc.child_elements(method) {
        let e = doc.element(child).ok_or(DsigError::Malformed("bad node"))?;
        if !e.name.is(EXC_C14N_NS, "InclusiveNamespaces") {
            return Err(DsigError::Malformed(
                "unexpected parameter of a C14N method",
            ));
        }
        for p in e.attr("PrefixList").unwrap_or("").split_ascii_whitespace() {
            prefixes.push(if p == "#default" {
                String::new()
            } else {
                p.to_string()
            });
        }
    }
    Ok(prefixes)
}

fn expect(doc: &Document, id: NodeId, local: &'static str) -> Result<(), DsigError> {
    match doc.element(id) {
        Some(e) if e.name.is(DSIG_NS, local) => Ok(()),
        _ => Err(DsigError::Malformed(match local {
            "SignedInfo" => "SignedInfo expected",
            "SignatureValue" => "SignatureValue expected",
            "KeyInfo" => "unexpected element in Signature",
            "CanonicalizationMethod" => "CanonicalizationMethod expected",
            "SignatureMethod" => "SignatureMethod expected",
            "Reference" => "Reference expected",
            "Transforms" => "Transforms expected",
            "Transform" => "Transform expected",
            "DigestMethod" => "DigestMethod expected",
            "DigestValue" => "DigestValue expected",
            _ => "unexpected element",
        })),
    }
}

fn algorithm(doc: &Document, id: NodeId) -> Result<&str, DsigError> {
    doc.element(id)
        .and_then(|e| e.attr("Algorithm"))
        .ok_or(DsigError::Malformed("Algorithm attribute missing"))
}

/// Base64 element content; XML Schema allows whitespace inside.
fn base64_content(doc: &Document, id: NodeId) -> Result<Vec<u8>, DsigError> {
    let text = doc
        .text_content(id)
        .ok_or(DsigError::Malformed("base64 value holds elements"))?;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(compact)
        .map_err(|_| DsigError::Malformed("base64 value is invalid"))
}
