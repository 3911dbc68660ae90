//! `token_service.saml_issuers:`: the identity providers whose SAML 2.0 assertions the
//! token endpoint exchanges for tokens (RFC 7522), compiled (their options,
//! `SamlTrustedIssuerSpec`, are in `spec.rs` with the rest of the token service's) into
//! [`crate::oauth::saml_bearer::TrustedSamlIssuer`]. Certificate and metadata files were
//! read by gathering.

use std::collections::HashSet;
use std::time::Duration;

use portcullis_assertions::saml::{AllowedEncodings, Verifier, VerifyOptions};

use super::context::CompileContext;
use super::saml_trust::TrustSources;
use super::spec::{TokenFormatSpec, TokenServiceSpec};
use super::steps::DEFAULT_LEEWAY;
use crate::oauth::saml_bearer::TrustedSamlIssuer;
use crate::store::TokenFormat;

/// Longest assertion lifetime accepted when the policy says nothing.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// The certificate and metadata files gathering reads.
pub(crate) fn files(
    token_service: &TokenServiceSpec,
) -> impl Iterator<Item = (&str, crate::files::FileKind)> {
    token_service
        .saml_issuers
        .iter()
        .filter_map(|i| i.get())
        .flat_map(|i| {
            let certificates = i
                .value
                .certificates
                .as_ref()
                .map(|file| (file.value.as_str(), crate::files::FileKind::Certificates));
            let metadata = i
                .value
                .metadata
                .as_ref()
                .map(|file| (file.value.as_str(), crate::files::FileKind::Metadata));
            certificates.into_iter().chain(metadata)
        })
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
        let trust = TrustSources {
            certificates: s.certificates.as_ref(),
            metadata: s.metadata.as_ref(),
            entity_id: Some(&s.entity_id),
            path: &path,
            loc: t.loc,
        }
        .compile(context);
        let Some(trust) = trust else { continue };
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
        let Ok(verifier) = Verifier::new(trust.keys, options) else {
            continue;
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
