//! `sign_hmac`: the request going upstream is signed with a key of a key set, by AWS
//! Signature Version 4, Version 2, or an operator-defined template.

use portcullis_assertions::hmac::outbound::{OutboundScheme, SignHmac};
use portcullis_assertions::Assertion;

use super::{CompileStep, StepSite};
use crate::config::context::CompileContext;
use crate::config::values::{HeaderNameSpec, HmacAlgorithmSpec, SignatureEncodingSpec};
use crate::config::yaml::Spanned;

scheme_tagged_enum! {
    /// Sign the upstream request. `scheme` chooses the options that apply.
    SignHmacSpec {
        /// AWS Signature Version 4 (HMAC-SHA256, Authorization header).
        "aws-sigv4" => AwsSigv4(Sigv4SignSpec),
        /// AWS Signature Version 2 (S3 REST, HMAC-SHA1).
        "aws-sigv2" => AwsSigv2(Sigv2SignSpec),
        /// An operator-defined string to sign.
        "template" => Template(TemplateSignSpec),
    }
}

hmac_scheme_options! {
    Sigv4SignSpec {
        /// Name of a key set under `keys:`.
        pub keys: Spanned<String>,
        /// The access key of that set to sign with (its first secret signs).
        pub access_key: Spanned<String>,
        /// The region of the credential scope.
        pub region: String,
        /// The service of the credential scope.
        pub service: String,
        /// Also send and sign `x-amz-content-sha256`. Default `true`.
        #[serde(default)]
        pub content_sha256_header: Option<bool>,
        /// Sign the path as non-S3 AWS services do (normalised, encoded again); `false`: S3 style. Default `true`.
        #[serde(default)]
        pub normalize_path: Option<bool>,
    } []
}

hmac_scheme_options! {
    Sigv2SignSpec {
        /// Name of a key set under `keys:`.
        pub keys: Spanned<String>,
        /// The access key of that set to sign with (its first secret signs).
        pub access_key: Spanned<String>,
    } []
}

hmac_scheme_options! {
    TemplateSignSpec {
        /// Name of a key set under `keys:`.
        pub keys: Spanned<String>,
        /// The access key of that set to sign with (its first secret signs).
        pub access_key: Spanned<String>,
    } [template]
}

impl SignHmacSpec {
    /// The key set and access key every scheme names.
    fn signer(&self) -> (&Spanned<String>, &Spanned<String>) {
        let (SignHmacSpec::AwsSigv4(Sigv4SignSpec {
            keys, access_key, ..
        })
        | SignHmacSpec::AwsSigv2(Sigv2SignSpec { keys, access_key })
        | SignHmacSpec::Template(TemplateSignSpec {
            keys, access_key, ..
        })) = self;
        (keys, access_key)
    }

    fn scheme(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<OutboundScheme> {
        Some(match self {
            SignHmacSpec::AwsSigv4(options) => OutboundScheme::SigV4 {
                region: options.region.clone(),
                service: options.service.clone(),
                content_sha256_header: options.content_sha256_header.unwrap_or(true),
                normalize_path: options.normalize_path.unwrap_or(true),
            },
            SignHmacSpec::AwsSigv2(_) => OutboundScheme::SigV2,
            SignHmacSpec::Template(options) => {
                OutboundScheme::Custom(options.template().compile(site, context)?)
            }
        })
    }
}

impl CompileStep for SignHmacSpec {
    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        let (keys_name, access_key) = self.signer();
        let keys = context.hmac_key_set(keys_name, &site.option_path("keys"))?;
        let Some(key) = keys.get(&access_key.value) else {
            context.err(
                access_key.loc,
                &site.option_path("access_key"),
                format!(
                    "key set \"{}\" has no access key {}",
                    keys_name.value, access_key.value
                ),
            );
            return None;
        };
        let secret = key.secrets.first()?.clone();
        let scheme = self.scheme(site, context)?;
        Some(Box::new(SignHmac {
            scheme,
            access_key: key.access_key.clone(),
            secret,
            clock: context.carry.wall_clock(),
        }))
    }
}
