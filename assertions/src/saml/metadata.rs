//! Trust from an identity provider's SAML 2.0 metadata file (the `EntityDescriptor` an IdP
//! publishes, or a federation's `EntitiesDescriptor` holding several): its entity ID and the
//! certificates of its `IDPSSODescriptor` meant for signing.
//!
//! The file is the operator's configuration, read at load like a PEM bundle: its own
//! signature (if any) is not checked, because the operator placing the file is the trust
//! decision. An IdP rotating its key publishes both certificates; both are trusted until
//! the old one leaves the file. A `validUntil` in the past refuses the file: stale
//! metadata is a sign the operator's refresh stopped, and its keys may have been retired.

use jiff::Timestamp;

use super::dsig::DSIG_NS;
use super::keys::{KeyError, TrustedKey};
use super::xml::{self, Document, NodeId, XmlError, XmlLimits};

/// The SAML 2.0 metadata namespace.
pub const METADATA_NS: &str = "urn:oasis:names:tc:SAML:2.0:metadata";

/// Bounds for a metadata file: larger than a token (an IdP lists endpoints, contacts and
/// several certificates), still far from what would hurt at load.
pub const METADATA_LIMITS: XmlLimits = XmlLimits {
    max_bytes: 4 * 1024 * 1024,
    max_depth: 32,
    max_attributes: 64,
    max_nodes: 200_000,
};

/// Why a metadata file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("not well-formed metadata: {0}")]
    Xml(#[from] XmlError),
    #[error("the root element is {0}, not md:EntityDescriptor or md:EntitiesDescriptor")]
    NotMetadata(String),
    #[error("no entity in the file has an IDPSSODescriptor with a signing certificate")]
    NoIdentityProvider,
    #[error("the file describes several identity providers ({0}); name the one to trust")]
    SeveralIdentityProviders(String),
    #[error("entityID {0:?} is described twice in the file")]
    DuplicateEntity(String),
    #[error("no identity provider with entityID {0:?} in the file (it has: {1})")]
    UnknownEntity(String, String),
    #[error("the metadata expired at {0} (validUntil); refresh the file")]
    Expired(String),
    #[error("validUntil {0:?} is not an xs:dateTime")]
    BadValidUntil(String),
    #[error("a signing certificate of {entity}: {error}")]
    Certificate { entity: String, error: KeyError },
}

/// One identity provider found in a metadata file.
#[derive(Debug, Clone)]
pub struct IdentityProvider {
    /// Its entity ID: the `Issuer` its assertions carry.
    pub entity_id: String,
    /// The keys of its signing certificates (`KeyDescriptor` with `use="signing"` or no
    /// `use`), in file order.
    pub keys: Vec<TrustedKey>,
}

/// Reads the identity providers of a metadata file and picks one: the one named by
/// `entity_id`, or the only one.
///
/// # Errors
/// When the file is not metadata, has expired at `now`, holds no usable identity provider,
/// several without `entity_id` naming one, or a signing certificate that cannot be used.
pub fn identity_provider(
    xml_text: &[u8],
    entity_id: Option<&str>,
    now: Timestamp,
    min_rsa_bits: usize,
) -> Result<IdentityProvider, MetadataError> {
    let mut providers = identity_providers(xml_text, now, min_rsa_bits)?;
    let names = || {
        providers
            .iter()
            .map(|idp| idp.entity_id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match entity_id {
        Some(wanted) => match providers.iter().position(|idp| idp.entity_id == wanted) {
            Some(index) => Ok(providers.swap_remove(index)),
            None => Err(MetadataError::UnknownEntity(wanted.to_owned(), names())),
        },
        None if providers.len() == 1 => Ok(providers.remove(0)),
        None if providers.is_empty() => Err(MetadataError::NoIdentityProvider),
        None => Err(MetadataError::SeveralIdentityProviders(names())),
    }
}

/// Every identity provider of a metadata file that has at least one signing certificate.
///
/// # Errors
/// As [`identity_provider`], except for choosing one.
pub fn identity_providers(
    xml_text: &[u8],
    now: Timestamp,
    min_rsa_bits: usize,
) -> Result<Vec<IdentityProvider>, MetadataError> {
    let document = xml::parse(xml_text, &METADATA_LIMITS)?;
    let root = document.root();
    let root_name = document
        .element(root)
        .map(|element| element.name.clone())
        .ok_or_else(|| MetadataError::NotMetadata("not an element".into()))?;
    if !(root_name.is(METADATA_NS, "EntityDescriptor")
        || root_name.is(METADATA_NS, "EntitiesDescriptor"))
    {
        return Err(MetadataError::NotMetadata(root_name.qualified()));
    }
    let mut providers: Vec<IdentityProvider> = Vec::new();
    collect(&document, root, now, min_rsa_bits, &mut providers)?;
    for (index, provider) in providers.iter().enumerate() {
        if providers[..index]
            .iter()
            .any(|earlier| earlier.entity_id == provider.entity_id)
        {
            return Err(MetadataError::DuplicateEntity(provider.entity_id.clone()));
        }
    }
    Ok(providers)
}

/// Walks `EntitiesDescriptor`s (which nest) down to each `EntityDescriptor`, checking every
/// `validUntil` on the way.
fn collect(
    document: &Document,
    node: NodeId,
    now: Timestamp,
    min_rsa_bits: usize,
    providers: &mut Vec<IdentityProvider>,
) -> Result<(), MetadataError> {
    let Some(element) = document.element(node) else {
        return Ok(());
    };
    check_valid_until(element.attr("validUntil"), now)?;
    if element.name.is(METADATA_NS, "EntitiesDescriptor") {
        for child in document.child_elements(node) {
            collect(document, child, now, min_rsa_bits, providers)?;
        }
        return Ok(());
    }
    if !element.name.is(METADATA_NS, "EntityDescriptor") {
        return Ok(());
    }
    let entity_id = element.attr("entityID").unwrap_or_default().to_owned();
    let mut keys = Vec::new();
    for descriptor in document.children_named(node, METADATA_NS, "IDPSSODescriptor") {
        let descriptor_element = document.element(descriptor).expect("an element");
        check_valid_until(descriptor_element.attr("validUntil"), now)?;
        for key_descriptor in document.children_named(descriptor, METADATA_NS, "KeyDescriptor") {
            let usage = document
                .element(key_descriptor)
                .and_then(|element| element.attr("use"));
            if !matches!(usage, None | Some("signing")) {
                continue;
            }
            for certificate in signing_certificates(document, key_descriptor) {
                let key = TrustedKey::from_certificate_base64(&certificate, min_rsa_bits).map_err(
                    |error| MetadataError::Certificate {
                        entity: entity_id.clone(),
                        error,
                    },
                )?;
                keys.push(key);
            }
        }
    }
    if !entity_id.is_empty() && !keys.is_empty() {
        providers.push(IdentityProvider { entity_id, keys });
    }
    Ok(())
}

/// The base64 texts of `ds:KeyInfo/ds:X509Data/ds:X509Certificate` under a KeyDescriptor.
fn signing_certificates(document: &Document, key_descriptor: NodeId) -> Vec<String> {
    let mut found = Vec::new();
    for key_info in document.children_named(key_descriptor, DSIG_NS, "KeyInfo") {
        for data in document.children_named(key_info, DSIG_NS, "X509Data") {
            for certificate in document.children_named(data, DSIG_NS, "X509Certificate") {
                found.push(document.descendant_text(certificate));
            }
        }
    }
    found
}

fn check_valid_until(valid_until: Option<&str>, now: Timestamp) -> Result<(), MetadataError> {
    let Some(text) = valid_until else {
        return Ok(());
    };
    let until: Timestamp = text
        .trim()
        .parse()
        .map_err(|_| MetadataError::BadValidUntil(text.to_owned()))?;
    if until <= now {
        return Err(MetadataError::Expired(text.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/saml");
        std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn certificate_base64(pem_path: &str) -> String {
        let pem = String::from_utf8(fixture(pem_path)).expect("utf-8");
        pem.lines()
            .filter(|line| !line.starts_with("-----"))
            .collect::<String>()
    }

    fn entity(entity_id: &str, valid_until: &str, certificates: &[(&str, &str)]) -> String {
        let keys: String = certificates
            .iter()
            .map(|(usage, pem)| {
                let usage = if usage.is_empty() {
                    String::new()
                } else {
                    format!(" use=\"{usage}\"")
                };
                format!(
                    "<md:KeyDescriptor{usage}><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>",
                    certificate_base64(pem)
                )
            })
            .collect();
        format!(
            "<md:EntityDescriptor xmlns:md=\"{METADATA_NS}\" xmlns:ds=\"{DSIG_NS}\" entityID=\"{entity_id}\"{valid_until}><md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">{keys}</md:IDPSSODescriptor></md:EntityDescriptor>"
        )
    }

    #[test]
    fn pysaml2_idp_metadata_gives_its_entity_and_only_the_signing_key() {
        let idp = identity_provider(&fixture("pysaml2/idp.xml"), None, Timestamp::now(), 1024)
            .expect("metadata");
        assert_eq!(idp.entity_id, "urn:mace:example.com:saml:roland:idp");
        assert_eq!(idp.keys.len(), 1, "the encryption key is not a signing key");
    }

    #[test]
    fn keys_without_use_count_as_signing_and_rotation_keeps_both() {
        let xml = entity(
            "https://idp.example",
            "",
            &[
                ("", "xmlsec1/rsa2048.cert.pem"),
                ("signing", "xmlsec1/p256.cert.pem"),
                ("encryption", "xmlsec1/attacker.cert.pem"),
            ],
        );
        let idp = identity_provider(xml.as_bytes(), None, Timestamp::now(), 2048).expect("ok");
        assert_eq!(idp.keys.len(), 2);
        let attacker = TrustedKey::from_certificates_pem(
            &String::from_utf8(fixture("xmlsec1/attacker.cert.pem")).expect("utf-8"),
            2048,
        )
        .expect("pem");
        assert!(!idp.keys.contains(&attacker[0]));
    }

    #[test]
    fn a_federation_file_needs_the_entity_named() {
        let one = entity("https://a.example", "", &[("", "xmlsec1/p256.cert.pem")]);
        let two = entity("https://b.example", "", &[("", "xmlsec1/rsa2048.cert.pem")]);
        let federation = format!(
            "<md:EntitiesDescriptor xmlns:md=\"{METADATA_NS}\">{one}<md:EntitiesDescriptor>{two}</md:EntitiesDescriptor></md:EntitiesDescriptor>"
        );
        let now = Timestamp::now();
        assert!(matches!(
            identity_provider(federation.as_bytes(), None, now, 2048),
            Err(MetadataError::SeveralIdentityProviders(names)) if names == "https://a.example, https://b.example"
        ));
        let b = identity_provider(federation.as_bytes(), Some("https://b.example"), now, 2048)
            .expect("b");
        let twice = federation.replace("https://b.example", "https://a.example");
        assert!(matches!(
            identity_provider(twice.as_bytes(), Some("https://a.example"), now, 2048),
            Err(MetadataError::DuplicateEntity(_))
        ));
        assert_eq!(b.entity_id, "https://b.example");
        assert!(matches!(
            identity_provider(federation.as_bytes(), Some("https://c.example"), now, 2048),
            Err(MetadataError::UnknownEntity(..))
        ));
    }

    #[test]
    fn expired_or_foreign_files_are_refused() {
        let now = Timestamp::now();
        let stale = entity(
            "https://a.example",
            " validUntil=\"2020-01-01T00:00:00Z\"",
            &[("", "xmlsec1/p256.cert.pem")],
        );
        assert!(matches!(
            identity_provider(stale.as_bytes(), None, now, 2048),
            Err(MetadataError::Expired(_))
        ));
        let fresh = stale.replace("2020-01-01", "2999-01-01");
        assert!(identity_provider(fresh.as_bytes(), None, now, 2048).is_ok());
        let garbled = stale.replace("2020-01-01T00:00:00Z", "soon");
        assert!(matches!(
            identity_provider(garbled.as_bytes(), None, now, 2048),
            Err(MetadataError::BadValidUntil(_))
        ));
        assert!(matches!(
            identity_provider(b"<Assertion/>", None, now, 2048),
            Err(MetadataError::NotMetadata(_))
        ));
        let only_encryption = entity(
            "https://a.example",
            "",
            &[("encryption", "xmlsec1/p256.cert.pem")],
        );
        assert!(matches!(
            identity_provider(only_encryption.as_bytes(), None, now, 2048),
            Err(MetadataError::NoIdentityProvider)
        ));
        let weak = identity_provider(&fixture("pysaml2/idp.xml"), None, now, 2048);
        assert!(
            matches!(weak, Err(MetadataError::Certificate { .. })),
            "{weak:?}"
        );
        assert!(matches!(
            identity_provider(b"<!DOCTYPE x><x/>", None, now, 2048),
            Err(MetadataError::Xml(XmlError::Doctype))
        ));
    }
}
