//! `portcullis sign saml`: what the `/saml/token` issuer does, offline. Signs a SAML 2.0
//! bearer assertion with a PEM private key and prints it as `Authorization: SAML`
//! credentials (`header`), as XML (`xml`), or as the `assertion` parameter of the RFC 7522
//! grant (`grant`: base64url of the XML).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::{Args, ValueEnum};
use portcullis_assertions::saml::sign::sign_assertion;
use portcullis_assertions::saml::{AssertionSpec, SamlSigningKey, TrustedKey};

use crate::files::{read_bounded, read_bounded_text, FileKind};
use crate::saml_issuer::{header_credentials, NAME_ID_UNSPECIFIED};

/// How the assertion is printed. (Plain comments on the variants: doc comments would
/// switch clap's help to its long layout.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SamlFormat {
    // base64(raw DEFLATE(XML)): the credentials of `Authorization: SAML`.
    Header,
    // The signed XML.
    Xml,
    // base64url of the XML: the `assertion` of the saml2-bearer grant (RFC 7522).
    Grant,
}

/// A signed SAML 2.0 bearer assertion.
#[derive(Debug, Args)]
pub struct SamlArgs {
    /// PEM private key that signs (RSA or P-256; the algorithm follows the key).
    #[arg(long)]
    key: PathBuf,
    /// The key's PEM certificate, put in KeyInfo as a hint (checked to match the key).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// The Issuer (our entity ID).
    #[arg(long)]
    issuer: String,
    /// The subject's NameID.
    #[arg(long)]
    subject: String,
    /// The relying party's entity ID (the Audience), e.g. the token endpoint URL for the grant.
    #[arg(long)]
    audience: String,
    /// The bearer confirmation's Recipient (the grant wants the token endpoint URL).
    #[arg(long)]
    recipient: Option<String>,
    /// An attribute, `name=value` (repeatable; repeat a name for several values).
    #[arg(long = "attribute", value_name = "NAME=VALUE")]
    attributes: Vec<String>,
    /// How long the assertion is valid, e.g. 5m or 90s.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    valid_for: Duration,
    /// header: Authorization: SAML credentials; xml; grant: RFC 7522's assertion parameter.
    #[arg(long, value_enum, default_value = "header")]
    format: SamlFormat,
    /// Issue as of this time (seconds since the epoch) instead of now, e.g. for a golden
    /// case of `portcullis test` that runs at that time.
    #[arg(long, value_name = "EPOCH_SECONDS")]
    at: Option<i64>,
}

/// Signs the assertion and returns what to print.
///
/// # Errors
/// A key or certificate file that cannot be used, a malformed attribute, a validity out of
/// range.
pub fn assertion(a: &SamlArgs) -> anyhow::Result<String> {
    let pem = read_bounded_text(&a.key, FileKind::Key)?;
    let key = SamlSigningKey::from_pem(&pem)
        .with_context(|| format!("{} is not a usable private key", a.key.display()))?;
    let certificate = match &a.cert {
        None => None,
        Some(path) => {
            let bytes = read_bounded(path, FileKind::Certificates)?;
            let der = match rustls_pemfile::certs(&mut bytes.as_slice()).next() {
                Some(Ok(der)) => der.to_vec(),
                _ => bail!("{} holds no PEM certificate", path.display()),
            };
            let trusted = TrustedKey::from_certificate_der(&der)
                .with_context(|| format!("{} is not a usable certificate", path.display()))?;
            if trusted.key != key.trusted_key("").key {
                bail!(
                    "{} is not the certificate of {}",
                    path.display(),
                    a.key.display()
                );
            }
            Some(der)
        }
    };
    if a.valid_for < Duration::from_secs(1) || a.valid_for > Duration::from_secs(24 * 3600) {
        bail!("--valid-for must be between 1s and 24h");
    }
    let mut attributes: Vec<(String, Vec<String>)> = Vec::new();
    for item in &a.attributes {
        let Some((name, value)) = item.split_once('=') else {
            bail!("attribute \"{item}\" is not of the form name=value");
        };
        if name.is_empty() {
            bail!("attribute \"{item}\" has no name");
        }
        match attributes.iter_mut().find(|(n, _)| n == name) {
            Some((_, values)) => values.push(value.to_owned()),
            None => attributes.push((name.to_owned(), vec![value.to_owned()])),
        }
    }
    let spec = AssertionSpec {
        issuer: a.issuer.clone(),
        subject: a.subject.clone(),
        name_id_format: Some(NAME_ID_UNSPECIFIED.to_owned()),
        audience: a.audience.clone(),
        recipient: a.recipient.clone(),
        session_index: None,
        attributes,
        issued_at: match a.at {
            Some(at) => jiff::Timestamp::from_second(at).context("--at is out of range")?,
            None => jiff::Timestamp::now(),
        },
        valid_for: a.valid_for,
        one_time_use: false,
    };
    let xml = sign_assertion(&spec, &key, certificate.as_deref())
        .map_err(|e| anyhow::anyhow!("cannot sign the assertion: {e}"))?;
    Ok(match a.format {
        SamlFormat::Header => format!("{}\n", header_credentials(xml.as_bytes())),
        SamlFormat::Xml => format!("{xml}\n"),
        SamlFormat::Grant => format!("{}\n", URL_SAFE_NO_PAD.encode(xml)),
    })
}
