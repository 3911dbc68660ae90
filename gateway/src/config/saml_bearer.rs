//! `token_service.saml_issuers:` in one place: the identity providers whose SAML 2.0
//! assertions the token endpoint exchanges for tokens (RFC 7522), their options (`*Spec`,
//! in the JSON Schema) and their compilation into
//! [`crate::oauth::saml_bearer::TrustedSamlIssuer`]. Certificate files were read by
//! gathering.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use portcullis_assertions::saml::{AllowedEncodings, Verifier, VerifyOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::context::CompileContext;
use super::spec::{AccountSpec, TokenFormatSpec, TokenServiceSpec};
use super::steps::DEFAULT_LEEWAY;
use super::values::DurationSpec;
use super::yaml::Spanned;
use crate::oauth::saml_bearer::TrustedSamlIssuer;
use crate::store::TokenFormat;

/// Longest assertion lifetime accepted when the policy says nothing.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// An identity provider trusted for the saml2-bearer grant.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SamlTrustedIssuerSpec {
    /// The `Issuer` (entity ID) its assertions carry.
    pub entity_id: String,
    /// PEM file of the certificates whose keys may sign its assertions (relative to the
    /// policy file; list the next one too during a rotation). Only these keys are trusted,
    /// never a certificate inside an assertion.
    pub certificates: Spanned<String>,
    /// The client id its tokens are recorded under (for statistics and revocation).
    pub client: String,
    /// `jwt` (default) or `opaque`.
    #[serde(default)]
    pub token_format: Option<TokenFormatSpec>,
    /// Issue refresh tokens too. Default `false`.
    #[serde(default)]
    pub refresh_tokens: Option<bool>,
    /// Clock skew allowed on every time bound. Default `60s`.
    #[serde(default)]
    pub leeway: Option<DurationSpec>,
    /// Longest assertion lifetime accepted (`NotOnOrAfter − IssueInstant`). Default `1h`.
    #[serde(default)]
    pub max_assertion_lifetime: Option<DurationSpec>,
    /// The bearer confirmation's `Recipient` must be this token endpoint, as RFC 7522 §3
    /// requires. Turn off only for an identity provider that cannot set it. Default `true`.
    #[serde(default)]
    pub require_recipient: Option<bool>,
    /// Subjects (`NameID`) that may obtain tokens, and the scopes each may be granted.
    pub subjects: BTreeMap<String, AccountSpec>,
}

/// The certificate files gathering reads.
pub(crate) fn files(token_service: &TokenServiceSpec) -> impl Iterator<Item = &str> {
    token_service
        .saml_issuers
        .iter()
        .filter_map(|i| i.get())
        .map(|i| i.value.certificates.value.as_str())
}

/// Compiles every trusted identity provider; problems are reported, the bad ones left out.
pub(crate) fn compile(
    token_service: &TokenServiceSpec,
    context: &mut CompileContext<'_>,
) -> Vec<TrustedSamlIssuer> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, t) in token_service.saml_issuers.iter().enumerate() {
        let Some(t) = t.get() else { continue };
        let path = format!("token_service.saml_issuers[{i}]");
        let s = &t.value;
        if !seen.insert(s.entity_id.clone()) {
            context.err(
                t.loc,
                &path,
                format!("issuer \"{}\" is listed twice", s.entity_id),
            );
        }
        if s.subjects.is_empty() {
            context.err(
                t.loc,
                &path,
                "list the subjects that may obtain tokens under `subjects:`",
            );
        }
        let file = context.base.join(&s.certificates.value);
        let pem = match context.gathered.file(&file).map(std::str::from_utf8) {
            Ok(Ok(pem)) => pem,
            Ok(Err(_)) => {
                context.err(
                    s.certificates.loc,
                    &format!("{path}.certificates"),
                    format!("{} is not PEM text", file.display()),
                );
                continue;
            }
            Err(e) => {
                context.err(s.certificates.loc, &format!("{path}.certificates"), e);
                continue;
            }
        };
        let options = VerifyOptions {
            // The grant's parameter is the XML itself (base64url), never compressed.
            allowed_encodings: AllowedEncodings {
                deflate: false,
                gzip: false,
                none: true,
            },
            require_signed_assertion: true,
            ..VerifyOptions::default()
        };
        let verifier = match Verifier::from_certificates_pem(pem, options) {
            Ok(v) => v,
            Err(e) => {
                context.err(
                    s.certificates.loc,
                    &format!("{path}.certificates"),
                    format!("{}: {e}", file.display()),
                );
                continue;
            }
        };
        out.push(TrustedSamlIssuer {
            entity_id: s.entity_id.clone(),
            verifier,
            client_id: s.client.clone(),
            token_format: match s.token_format {
                Some(TokenFormatSpec::Opaque) => TokenFormat::Opaque,
                _ => TokenFormat::Jwt,
            },
            refresh_tokens: s.refresh_tokens.unwrap_or(false),
            leeway: s.leeway.as_ref().map_or(DEFAULT_LEEWAY, |d| d.0),
            max_lifetime: i64::try_from(
                s.max_assertion_lifetime
                    .as_ref()
                    .map_or(DEFAULT_MAX_LIFETIME, |d| d.0)
                    .as_secs(),
            )
            .unwrap_or(i64::MAX),
            require_recipient: s.require_recipient.unwrap_or(true),
            subjects: s
                .subjects
                .iter()
                .map(|(sub, a)| (sub.clone(), a.scopes.clone()))
                .collect(),
        });
    }
    out
}
