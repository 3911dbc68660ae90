//! `require_saml`: the request must carry a signed SAML 2.0 assertion (by default
//! `Authorization: SAML <base64(deflate(xml))>`) from a trusted issuer, for this audience,
//! valid now. Trust comes only from the certificates or the IdP metadata file the policy
//! names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use portcullis_assertions::saml::{
    AllowedEncodings, OneTime, RequireSaml, SamlOutputs, VerifiedCache, Verifier, VerifyOptions,
    XmlLimits,
};
use portcullis_assertions::{Assertion, VarRegistry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CompileStep, StepSite};
use crate::config::context::CompileContext;
use crate::config::saml_trust::TrustSources;
use crate::config::values::{ByteSize, DurationSpec, HeaderNameSpec};
use crate::config::yaml::Spanned;
use crate::store::once_markers::StoreOnceMarkers;

/// Clock skew tolerated when the policy says nothing.
const DEFAULT_SKEW: Duration = Duration::from_secs(60);
/// The largest skew a policy may set.
const MAX_SKEW: Duration = Duration::from_secs(600);
/// Verified assertions remembered when the policy says nothing.
const DEFAULT_CACHE: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EncodingSpec {
    /// Raw DEFLATE (RFC 1951), as SAML's redirect binding compresses.
    Deflate,
    /// gzip (RFC 1952).
    Gzip,
    /// Uncompressed XML.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OneTimeSpec {
    /// Never: a bearer assertion may be re-sent until it expires.
    Off,
    /// When the assertion carries `<OneTimeUse/>` (the default).
    WhenMarked,
    /// Every assertion is accepted once.
    Always,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequireSamlSpec {
    /// PEM file of the IdP's signing certificates (several while it rotates). With `metadata`, the only sources of trust: a certificate inside the token is never used.
    #[serde(default)]
    pub certificates: Option<Spanned<String>>,
    /// The IdP's SAML 2.0 metadata file: the signing certificates of its IDPSSODescriptor are trusted (all of them during a rotation), and its entityID is the default issuer. Refused at load once its validUntil has passed.
    #[serde(default)]
    pub metadata: Option<Spanned<String>>,
    /// Which entity of the metadata file to trust, when it describes several IdPs (a federation file).
    #[serde(default)]
    pub metadata_entity: Option<String>,
    /// Accepted issuers (entity IDs). Default: the metadata's entityID.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Our entity ID: the assertion's AudienceRestriction must name it.
    pub audience: String,
    /// When set, the bearer SubjectConfirmation's Recipient must equal it.
    #[serde(default)]
    pub recipient: Option<String>,
    /// The header carrying the token. Default `Authorization`.
    #[serde(default)]
    pub header: Option<HeaderNameSpec>,
    /// The scheme word before the token. Default `SAML`.
    #[serde(default)]
    pub scheme: Option<String>,
    /// How the token may be encoded after base64. Default `[deflate, gzip, none]`.
    #[serde(default)]
    pub encodings: Option<Vec<EncodingSpec>>,
    /// Accept SHA-1 digests and RSA-SHA1 signatures (legacy IdPs only). Default `false`.
    #[serde(default)]
    pub allow_sha1: Option<bool>,
    /// Clock skew tolerated on every time bound. Default `60s`, at most `10m`.
    #[serde(default)]
    pub max_skew: Option<DurationSpec>,
    /// Largest assertion XML, after inflation. Default `64KiB`.
    #[serde(default)]
    pub max_size: Option<ByteSize>,
    /// Accept an assertion once: `off`, `when_marked` (its OneTimeUse condition; default) or `always`. Markers live in the state store, so with Redis once means once for the fleet.
    #[serde(default)]
    pub one_time_use: Option<OneTimeSpec>,
    /// Attributes to expose as `${saml.attr.NAME}` (several values joined with `,`).
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Attributes that must hold one of the listed values, e.g. `groups: [payments]` (else 403).
    #[serde(default)]
    pub require_attributes: BTreeMap<String, Vec<String>>,
    /// Verified assertions remembered (by token digest, until they expire). Default 10000; 0 turns the cache off.
    #[serde(default)]
    pub cache_size: Option<usize>,
}

impl RequireSamlSpec {
    /// The files the step reads (gathered before compiling).
    pub(crate) fn files(&self) -> impl Iterator<Item = (&str, crate::files::FileKind)> {
        let certificates = self
            .certificates
            .as_ref()
            .map(|file| (file.value.as_str(), crate::files::FileKind::Certificates));
        let metadata = self
            .metadata
            .as_ref()
            .map(|file| (file.value.as_str(), crate::files::FileKind::Metadata));
        certificates.into_iter().chain(metadata)
    }

    /// Where the step's trust comes from.
    pub(crate) fn trust<'a>(
        &'a self,
        path: &'a str,
        loc: crate::config::yaml::Location,
    ) -> TrustSources<'a> {
        TrustSources {
            certificates: self.certificates.as_ref(),
            metadata: self.metadata.as_ref(),
            entity_id: self.metadata_entity.as_deref(),
            path,
            loc,
        }
    }

    fn encodings(&self) -> AllowedEncodings {
        match &self.encodings {
            None => AllowedEncodings::default(),
            Some(list) => AllowedEncodings {
                deflate: list.contains(&EncodingSpec::Deflate),
                gzip: list.contains(&EncodingSpec::Gzip),
                none: list.contains(&EncodingSpec::None),
            },
        }
    }
}

impl CompileStep for RequireSamlSpec {
    fn define_outputs(&self, registry: &mut VarRegistry) {
        for name in [
            "saml.subject",
            "saml.issuer",
            "saml.session_index",
            "client.id",
        ] {
            registry.define(name);
        }
        for attribute in &self.attributes {
            registry.define(&format!("saml.attr.{attribute}"));
        }
    }

    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        let at = format!("{}.{}", site.path, site.kind);
        let trust = self.trust(&at, site.loc).compile(context);
        let mut issuers = self.issuers.clone();
        if issuers.is_empty() {
            match trust
                .as_ref()
                .and_then(|trust| trust.metadata_entity.clone())
            {
                Some(entity) => issuers.push(entity),
                None if trust.is_some() => context.err(
                    site.loc,
                    &site.option_path("issuers"),
                    "name at least one issuer (the IdP's entity ID), or trust its metadata file",
                ),
                None => {}
            }
        }
        if let Some(entity) = trust
            .as_ref()
            .and_then(|trust| trust.metadata_entity.as_ref())
        {
            // The metadata's keys are that entity's: they do not sign for another issuer.
            if !issuers.contains(entity) {
                context.err(
                    site.loc,
                    &site.option_path("issuers"),
                    format!("the metadata's keys belong to {entity}: list it among the issuers (or leave issuers out)"),
                );
            }
        }
        if self.metadata_entity.is_some() && self.metadata.is_none() {
            context.err(
                site.loc,
                &site.option_path("metadata_entity"),
                "metadata_entity chooses an entity of `metadata:`, which is not set",
            );
        }
        if self.audience.is_empty() {
            context.err(
                site.loc,
                &site.option_path("audience"),
                "name this service's entity ID",
            );
        }
        let skew = self.max_skew.as_ref().map_or(DEFAULT_SKEW, |skew| skew.0);
        if skew > MAX_SKEW {
            context.err(
                site.loc,
                &site.option_path("max_skew"),
                "max_skew may be at most 10m",
            );
        }
        let encodings = self.encodings();
        if !(encodings.deflate || encodings.gzip || encodings.none) {
            context.err(
                site.loc,
                &site.option_path("encodings"),
                "allow at least one encoding",
            );
        }
        let scheme = self.scheme.clone().unwrap_or_else(|| "SAML".to_owned());
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            context.err(
                site.loc,
                &site.option_path("scheme"),
                "the scheme is one word of letters, digits, `-` or `_`",
            );
        }
        let mut limits = XmlLimits::default();
        if let Some(size) = &self.max_size {
            limits.max_bytes = usize::try_from(size.0)
                .unwrap_or(usize::MAX)
                .clamp(1024, 1024 * 1024);
        }
        let options = VerifyOptions {
            allow_sha1: self.allow_sha1.unwrap_or(false),
            allowed_encodings: encodings,
            limits,
            require_signed_assertion: true,
        };
        let verifier = Verifier::new(trust?.keys, options).ok()?;
        let one_time = match self.one_time_use.unwrap_or(OneTimeSpec::WhenMarked) {
            OneTimeSpec::Off => OneTime::Off,
            OneTimeSpec::WhenMarked => OneTime::WhenMarked,
            OneTimeSpec::Always => OneTime::Always,
        };
        let markers = (one_time != OneTime::Off)
            .then_some(context.state_store.as_ref())
            .flatten()
            .map(|store| {
                Arc::new(StoreOnceMarkers::new(store.once().clone()))
                    as Arc<dyn portcullis_assertions::once::SharedOnce>
            });
        let registry = &mut context.registry;
        let outputs = SamlOutputs {
            subject: registry.define("saml.subject"),
            issuer: registry.define("saml.issuer"),
            session_index: registry.define("saml.session_index"),
            client_id: registry.define("client.id"),
            attributes: self
                .attributes
                .iter()
                .map(|name| (name.clone(), registry.define(&format!("saml.attr.{name}"))))
                .collect(),
        };
        Some(Box::new(RequireSaml {
            header: self
                .header
                .as_ref()
                .map_or(http::header::AUTHORIZATION, |header| header.0.clone()),
            scheme,
            verifier,
            issuers,
            audience: self.audience.clone(),
            recipient: self.recipient.clone(),
            skew,
            one_time,
            markers,
            required_attributes: self
                .require_attributes
                .iter()
                .map(|(name, values)| (name.clone(), values.clone()))
                .collect(),
            outputs,
            cache: VerifiedCache::new(self.cache_size.unwrap_or(DEFAULT_CACHE)),
            clock: context.carry.wall_clock(),
        }))
    }
}
