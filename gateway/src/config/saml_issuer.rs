//! The `saml_issuer:` section in one place: its options (`*Spec`, which the JSON Schema
//! shows) and their compilation into [`crate::saml_issuer::SamlIssuer`]. The key,
//! certificate and users files were read by gathering; here they are parsed and checked
//! once, each problem at its line (the users file's own problems at their line in it).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use portcullis_assertions::saml::{SamlSigningKey, TrustedKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::context::CompileContext;
use super::values::DurationSpec;
use super::yaml::Spanned;
use crate::basic_auth::users::Users;
use crate::saml_issuer::{SamlIssuer, NAME_ID_UNSPECIFIED};

pub const DEFAULT_PATH: &str = "/saml/token";
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(300);
pub const DEFAULT_REALM: &str = "portcullis";
const MIN_VALIDITY: Duration = Duration::from_secs(10);
const MAX_VALIDITY: Duration = Duration::from_secs(3600);

/// The SAML issuer: `POST /saml/token` takes HTTP Basic credentials of the users file and
/// answers a signed SAML 2.0 bearer assertion for `Authorization: SAML`; services with
/// `issue_saml:` answer the same for callers their pipeline authenticated.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SamlIssuerSpec {
    /// Our entity ID: the `Issuer` of every assertion (e.g. `https://gateway.example.com/saml`).
    pub entity_id: Spanned<String>,
    /// The private key that signs: PEM, PKCS#8 (RSA of 2048 bits or more, or P-256) or
    /// PKCS#1 RSA. The algorithm follows the key: RSA-SHA256 or ECDSA-SHA256 (prefer P-256).
    pub signing_key: Spanned<PemFileSpec>,
    /// The key's X.509 certificate (PEM). Sent in `KeyInfo` as a hint and checked to hold
    /// the signing key's public half; relying parties pin it. Optional.
    #[serde(default)]
    pub certificate: Option<Spanned<PemFileSpec>>,
    /// The users file (relative to the policy file): names, argon2id password hashes
    /// (`portcullis hash-password`) and attributes. See docs/saml.md. Without it, `POST
    /// /saml/token` is not served and only `issue_saml` services issue.
    #[serde(default)]
    pub users_file: Option<Spanned<String>>,
    /// The relying party's entity ID: the assertions' `Audience`.
    pub audience: Spanned<String>,
    /// The bearer confirmation's `Recipient`, for a relying party that checks it (an RFC
    /// 7522 token endpoint wants its own URL here). Default: none.
    #[serde(default)]
    pub recipient: Option<Spanned<String>>,
    /// How long an assertion is valid, 10s to 1h. Default `5m`.
    #[serde(default)]
    pub validity: Option<Spanned<DurationSpec>>,
    /// The path the issuer answers on (on the proxy listener). Default `/saml/token`.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// The realm of the `WWW-Authenticate: Basic` challenge. Default `portcullis`.
    #[serde(default)]
    pub realm: Option<Spanned<String>>,
    /// The users file's attributes that go into assertions. Default: all of them.
    #[serde(default)]
    pub attributes: Option<Vec<Spanned<String>>>,
    /// The `NameID` `Format`. Default `urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified`.
    #[serde(default)]
    pub name_id_format: Option<Spanned<String>>,
}

/// A PEM file, relative to the policy file.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PemFileSpec {
    pub file: Spanned<String>,
}

/// The files gathering reads for the section.
pub(crate) fn files(spec: &SamlIssuerSpec) -> Vec<(&str, crate::files::FileKind)> {
    use crate::files::FileKind;
    let mut out = vec![(spec.signing_key.value.file.value.as_str(), FileKind::Key)];
    if let Some(users) = &spec.users_file {
        out.push((users.value.as_str(), FileKind::Users));
    }
    if let Some(cert) = &spec.certificate {
        out.push((cert.value.file.value.as_str(), FileKind::Certificates));
    }
    out
}

/// Compiles the section; `None` when something is wrong (every problem reported).
pub(crate) fn compile(
    spec: &Spanned<SamlIssuerSpec>,
    context: &mut CompileContext<'_>,
) -> Option<Arc<SamlIssuer>> {
    let s = &spec.value;
    let errors_before = context.errors.len();
    for (value, what) in [(&s.entity_id, "entity_id"), (&s.audience, "audience")]
        .into_iter()
        .chain(s.recipient.as_ref().map(|r| (r, "recipient")))
        .chain(s.name_id_format.as_ref().map(|f| (f, "name_id_format")))
    {
        if value.value.trim().is_empty() || value.value.chars().any(char::is_control) {
            context.err(
                value.loc,
                &format!("saml_issuer.{what}"),
                format!("{what} must be a non-empty URI without control characters (e.g. https://gateway.example.com/saml)"),
            );
        }
    }
    let key = signing_key(s, context);
    let certificate_der = certificate(s, key.as_ref(), context);
    let users = users(s, context);

    let validity = s.validity.as_ref().map_or(DEFAULT_VALIDITY, |v| v.value.0);
    if !(MIN_VALIDITY..=MAX_VALIDITY).contains(&validity) {
        context.err(
            s.validity.as_ref().map_or(spec.loc, |v| v.loc),
            "saml_issuer.validity",
            "validity must be between 10s and 1h: a bearer assertion should live briefly",
        );
    }
    let path = match &s.path {
        None => Some(DEFAULT_PATH.to_owned()),
        Some(p) => match crate::path::canonicalize(&p.value) {
            Ok(c) if p.value.starts_with('/') && c.routing == p.value => {
                Some(c.routing.into_owned())
            }
            _ => {
                context.err(
                    p.loc,
                    "saml_issuer.path",
                    "the path must be absolute and in canonical form (e.g. /saml/token)",
                );
                None
            }
        },
    };
    if path
        .as_deref()
        .is_some_and(|p| crate::oauth::endpoint::Endpoint::for_path(p).is_some())
    {
        context.err(
            s.path.as_ref().map_or(spec.loc, |p| p.loc),
            "saml_issuer.path",
            "this path belongs to the token service",
        );
    }
    let realm = s.realm.as_ref().map_or(DEFAULT_REALM, |r| r.value.as_str());
    let challenge = if realm.contains(['"', '\\']) {
        None
    } else {
        HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")).ok()
    };
    if challenge.is_none() {
        context.err(
            s.realm.as_ref().map_or(spec.loc, |r| r.loc),
            "saml_issuer.realm",
            "the realm must be printable ASCII without quotes or backslashes",
        );
    }
    if context.errors.len() > errors_before {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    Some(Arc::new(SamlIssuer {
        path: path?,
        entity_id: s.entity_id.value.clone(),
        audience: s.audience.value.clone(),
        recipient: s.recipient.as_ref().map(|r| r.value.clone()),
        name_id_format: s
            .name_id_format
            .as_ref()
            .map_or_else(|| NAME_ID_UNSPECIFIED.to_owned(), |f| f.value.clone()),
        validity,
        attributes: s
            .attributes
            .as_ref()
            .map(|list| list.iter().map(|a| a.value.clone()).collect()),
        challenge: challenge?,
        users: match &s.users_file {
            Some(_) => Some(users?),
            None => None,
        },
        key: key?,
        certificate_der,
        verifications: tokio::sync::Semaphore::new(cores),
    }))
}

fn signing_key(s: &SamlIssuerSpec, context: &mut CompileContext<'_>) -> Option<SamlSigningKey> {
    let file = &s.signing_key.value.file;
    let path = "saml_issuer.signing_key";
    let (full, text) = context.named_text(file, path, "PEM text")?;
    let key = match SamlSigningKey::from_pem(text) {
        Ok(key) => key,
        Err(e) => {
            context.err(file.loc, path, format!("{}: {e}", full.display()));
            return None;
        }
    };
    if let SamlSigningKey::Rsa(k) = &key {
        let bits = rsa::traits::PublicKeyParts::size(k.as_ref()) * 8;
        if bits < 2048 {
            context.err(
                file.loc,
                path,
                format!(
                    "{}: a {bits}-bit RSA key is too weak; use 2048 bits or more, or P-256",
                    full.display()
                ),
            );
            return None;
        }
    }
    Some(key)
}

fn certificate(
    s: &SamlIssuerSpec,
    key: Option<&SamlSigningKey>,
    context: &mut CompileContext<'_>,
) -> Option<Vec<u8>> {
    let cert = s.certificate.as_ref()?;
    let file = &cert.value.file;
    let path = "saml_issuer.certificate";
    let (full, bytes) = context.named_file(file, path)?;
    let der = match rustls_pemfile::certs(&mut &bytes[..]).next() {
        Some(Ok(der)) => der.to_vec(),
        _ => {
            context.err(
                file.loc,
                path,
                format!("{} holds no PEM certificate", full.display()),
            );
            return None;
        }
    };
    match (TrustedKey::from_certificate_der(&der), key) {
        (Ok(trusted), Some(key)) if trusted.key != key.trusted_key("").key => {
            context.err(
                file.loc,
                path,
                format!("{} is not the signing key's certificate", full.display()),
            );
            None
        }
        (Err(e), _) => {
            context.err(file.loc, path, format!("{}: {e}", full.display()));
            None
        }
        _ => Some(der),
    }
}

fn users(s: &SamlIssuerSpec, context: &mut CompileContext<'_>) -> Option<Users> {
    let file = s.users_file.as_ref()?;
    super::users_file::load(file, "saml_issuer.users_file", context)
}

/// `issue_saml:` on a service: answer with an assertion for the caller the service's
/// pipeline authenticated, instead of going upstream.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueSamlSpec {
    /// The assertion's subject (`NameID`), a template over the request steps' variables (never the request's own headers, query or path). Default `${client.id}`: the API key's client, the HMAC key's client, the bearer token's client (use `${token.sub}` for the token's user).
    #[serde(default)]
    pub subject: Option<Spanned<String>>,
    /// Attribute name → template over the request steps' variables, e.g. `{tier: "${client.tier}"}`: one value each (commas kept), an empty one left out.
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, Spanned<String>>,
}
