//! The template scheme's options, shared by `require_hmac` and `sign_hmac`: an
//! operator-defined string to sign, the header that carries the signature and its format.

use http::HeaderName;
use portcullis_assertions::hmac::custom::{Algorithm, CustomScheme, Encoding, HeaderFormat};
use portcullis_assertions::template::Template;

use super::StepSite;
use crate::config::context::CompileContext;
use crate::config::values::{HeaderNameSpec, HmacAlgorithmSpec, SignatureEncodingSpec};
use crate::config::yaml::Spanned;

/// Declares one scheme's options of `require_hmac` or `sign_hmac`: the fields written
/// between the braces, then the option groups listed after them, each written once here:
/// `template` (the template scheme's options, with a `template()` view of them) and
/// `replay` (time window and replay defence, which every verifying scheme has).
macro_rules! hmac_scheme_options {
    ($(#[$meta:meta])* $name:ident { $($fields:tt)* } []) => {
        $(#[$meta])*
        #[derive(Debug, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name { $($fields)* }
    };
    ($(#[$meta:meta])* $name:ident { $($fields:tt)* } [template $($rest:ident)*]) => {
        hmac_scheme_options!($(#[$meta])* $name { $($fields)*
            /// The string to sign, with `${...}` variables (`${body.sha256}` is the body's hex SHA-256).
            pub string_to_sign: Spanned<String>,
            /// The header carrying key id and signature. Default `Authorization`.
            #[serde(default)]
            pub header: Option<HeaderNameSpec>,
            /// The header format, with `${key_id}` and `${signature}`. Default `HMAC ${key_id}:${signature}`.
            #[serde(default)]
            pub format: Option<Spanned<String>>,
            /// The HMAC hash. Default `sha256`.
            #[serde(default)]
            pub algorithm: Option<HmacAlgorithmSpec>,
            /// How the signature is written. Default `base64`.
            #[serde(default)]
            pub encoding: Option<SignatureEncodingSpec>,
            /// The header with the request time: checked against `max_skew` when verifying,
            /// set to the current HTTP date when signing (if the request has none). Default `X-Date`.
            #[serde(default)]
            pub date_header: Option<HeaderNameSpec>,
        } [$($rest)*]);

        impl $name {
            fn template(&self) -> $crate::config::steps::hmac_template::TemplateOptions<'_> {
                $crate::config::steps::hmac_template::TemplateOptions {
                    header: self.header.as_ref(),
                    format: self.format.as_ref(),
                    algorithm: self.algorithm,
                    encoding: self.encoding,
                    string_to_sign: &self.string_to_sign,
                    date_header: self.date_header.as_ref(),
                }
            }
        }
    };
    ($(#[$meta:meta])* $name:ident { $($fields:tt)* } [replay $($rest:ident)*]) => {
        hmac_scheme_options!($(#[$meta])* $name { $($fields)*
            /// Largest accepted difference between the request's time and the gateway's. Default `5m`.
            #[serde(default)]
            pub max_skew: Option<DurationSpec>,
            /// Refuse a signature already used inside the skew window. Default `true`.
            #[serde(default)]
            pub replay_protection: Option<bool>,
            /// Most signatures remembered at once per key set; past it new requests get 503. Default 100000.
            #[serde(default)]
            pub replay_capacity: Option<usize>,
            /// Where used signatures are remembered: `local` (this process) or `cluster` (the
            /// state store, so a signature used on one gateway is refused on every other).
            /// Default `cluster` when `state:` is Redis, else `local`.
            #[serde(default)]
            pub replay_scope: Option<ScopeSpec>,
            /// Cluster scope, when the store does not answer within its timeout: `fail_closed`
            /// (default, 503 `state-store-unavailable`) or `fail_open` (this process's own
            /// replay cache decides meanwhile).
            #[serde(default)]
            pub replay_on_store_failure: Option<StoreFailureSpec>,
        } [$($rest)*]);
    };
}

/// The header format when the policy names none.
const DEFAULT_FORMAT: &str = "HMAC ${key_id}:${signature}";
/// The date header when the policy names none.
const DEFAULT_DATE_HEADER: &str = "x-date";

/// The template options of either step, borrowed from its spec.
pub(super) struct TemplateOptions<'s> {
    pub(super) header: Option<&'s HeaderNameSpec>,
    pub(super) format: Option<&'s Spanned<String>>,
    pub(super) algorithm: Option<HmacAlgorithmSpec>,
    pub(super) encoding: Option<SignatureEncodingSpec>,
    pub(super) string_to_sign: &'s Spanned<String>,
    pub(super) date_header: Option<&'s HeaderNameSpec>,
}

impl TemplateOptions<'_> {
    pub(super) fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<CustomScheme> {
        let string_to_sign = match Template::parse(&self.string_to_sign.value, &context.registry) {
            Ok(template) => template,
            Err(e) => {
                context.err(
                    self.string_to_sign.loc,
                    &site.option_path("string_to_sign"),
                    e.0,
                );
                return None;
            }
        };
        let format_text = self
            .format
            .map_or(DEFAULT_FORMAT, |format| format.value.as_str());
        let format = match HeaderFormat::parse(format_text) {
            Ok(format) => format,
            Err(e) => {
                let loc = self.format.map_or(site.loc, |format| format.loc);
                context.err(loc, &site.option_path("format"), e);
                return None;
            }
        };
        Some(CustomScheme {
            header: self
                .header
                .map_or(http::header::AUTHORIZATION, |header| header.0.clone()),
            format,
            algorithm: match self.algorithm.unwrap_or(HmacAlgorithmSpec::Sha256) {
                HmacAlgorithmSpec::Sha1 => Algorithm::Sha1,
                HmacAlgorithmSpec::Sha256 => Algorithm::Sha256,
                HmacAlgorithmSpec::Sha512 => Algorithm::Sha512,
            },
            encoding: match self.encoding.unwrap_or(SignatureEncodingSpec::Base64) {
                SignatureEncodingSpec::Base64 => Encoding::Base64,
                SignatureEncodingSpec::Hex => Encoding::Hex,
            },
            string_to_sign,
            date_header: self
                .date_header
                .map_or(HeaderName::from_static(DEFAULT_DATE_HEADER), |header| {
                    header.0.clone()
                }),
        })
    }
}
