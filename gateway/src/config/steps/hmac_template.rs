//! The template scheme's options, shared by `require_hmac` and `sign_hmac`: an
//! operator-defined string to sign, the header that carries the signature and its format.

use http::HeaderName;
use portcullis_assertions::hmac::custom::{Algorithm, CustomScheme, Encoding, HeaderFormat};
use portcullis_assertions::template::Template;

use super::StepSite;
use crate::config::context::CompileContext;
use crate::config::values::{HeaderNameSpec, HmacAlgorithmSpec, SignatureEncodingSpec};
use crate::config::yaml::Spanned;

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
