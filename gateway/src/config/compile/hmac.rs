//! `require_hmac` and `sign_hmac`: schemes, key sets, template schemes.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use portcullis_assertions::hmac::custom::{Algorithm, CustomScheme, Encoding, HeaderFormat};
use portcullis_assertions::hmac::outbound::{OutboundScheme, SignHmac};
use portcullis_assertions::hmac::{RequireHmac, Scheme, SystemClock};
use portcullis_assertions::template::Template;

use crate::config::spec::{
    HeaderNameSpec, HmacAlgorithmSpec, HmacSchemeSpec, RequireHmacSpec, SignHmacSpec,
    SignatureEncodingSpec,
};
use crate::config::yaml::{Location, Spanned};

use super::context::{suggest, Cx};

pub(super) fn compile_require_hmac(
    spec: &RequireHmacSpec,
    loc: Location,
    path: &str,
    cx: &mut Cx<'_>,
) -> Option<RequireHmac> {
    let keys = match cx.key_sets.get(&spec.keys.value) {
        Some(k) => k.clone(),
        None => {
            let known: Vec<&str> = cx.key_sets.keys().map(String::as_str).collect();
            let hint = suggest(&spec.keys.value, &known).map_or_else(
                || "; define it under `keys:`".to_owned(),
                |k| format!("; did you mean \"{k}\"?"),
            );
            cx.err(
                spec.keys.loc,
                &format!("{path}.keys"),
                format!("unknown key set \"{}\"{hint}", spec.keys.value),
            );
            return None;
        }
    };
    // Options that belong to another scheme are mistakes, not silently ignored.
    let scheme_name = match spec.scheme {
        HmacSchemeSpec::AwsSigv4 => "aws-sigv4",
        HmacSchemeSpec::AwsSigv2 => "aws-sigv2",
        HmacSchemeSpec::Template => "template",
    };
    let foreign: Vec<&str> = [
        ("region", spec.region.is_some(), HmacSchemeSpec::AwsSigv4),
        ("service", spec.service.is_some(), HmacSchemeSpec::AwsSigv4),
        (
            "allow_presigned",
            spec.allow_presigned.is_some(),
            HmacSchemeSpec::AwsSigv4,
        ),
        (
            "normalize_path",
            spec.normalize_path.is_some(),
            HmacSchemeSpec::AwsSigv4,
        ),
        (
            "allow_unsigned_payload",
            spec.allow_unsigned_payload.is_some(),
            HmacSchemeSpec::AwsSigv4,
        ),
        (
            "allow_query",
            spec.allow_query.is_some(),
            HmacSchemeSpec::AwsSigv2,
        ),
        ("header", spec.header.is_some(), HmacSchemeSpec::Template),
        ("format", spec.format.is_some(), HmacSchemeSpec::Template),
        (
            "algorithm",
            spec.algorithm.is_some(),
            HmacSchemeSpec::Template,
        ),
        (
            "encoding",
            spec.encoding.is_some(),
            HmacSchemeSpec::Template,
        ),
        (
            "string_to_sign",
            spec.string_to_sign.is_some(),
            HmacSchemeSpec::Template,
        ),
        (
            "date_header",
            spec.date_header.is_some(),
            HmacSchemeSpec::Template,
        ),
    ]
    .into_iter()
    .filter(|(_, set, owner)| *set && *owner != spec.scheme)
    .map(|(name, _, _)| name)
    .collect();
    if !foreign.is_empty() {
        cx.err(
            loc,
            path,
            format!(
                "{} do(es) not apply to scheme {scheme_name}",
                foreign.join(", ")
            ),
        );
    }
    let scheme = match spec.scheme {
        HmacSchemeSpec::AwsSigv4 => {
            let (Some(region), Some(service)) = (&spec.region, &spec.service) else {
                cx.err(
                    loc,
                    path,
                    "aws-sigv4 needs the `region` and `service` the credential scope must name",
                );
                return None;
            };
            Scheme::SigV4 {
                region: region.clone(),
                service: service.clone(),
                allow_presigned: spec.allow_presigned.unwrap_or(true),
                normalize_path: spec.normalize_path.unwrap_or(true),
            }
        }
        HmacSchemeSpec::AwsSigv2 => Scheme::SigV2 {
            allow_query: spec.allow_query.unwrap_or(true),
        },
        HmacSchemeSpec::Template => Scheme::Custom(compile_custom_scheme(
            &CustomSpec {
                header: spec.header.as_ref(),
                format: spec.format.as_ref(),
                algorithm: spec.algorithm,
                encoding: spec.encoding,
                string_to_sign: spec.string_to_sign.as_ref(),
                date_header: spec.date_header.as_ref(),
            },
            loc,
            path,
            cx,
        )?),
    };
    let capacity = spec.replay_capacity.unwrap_or(100_000);
    if capacity == 0 {
        cx.err(loc, path, "replay_capacity must be at least 1");
    }
    let max_skew = spec
        .max_skew
        .as_ref()
        .map_or(Duration::from_secs(300), |d| d.0);
    if max_skew > Duration::from_secs(7 * 24 * 3600) {
        cx.err(loc, path, "max_skew may be at most 7 days");
    }
    let replay = spec
        .replay_protection
        .unwrap_or(true)
        .then(|| cx.carry.replay_cache(&spec.keys.value, capacity.max(1)));
    Some(RequireHmac {
        scheme,
        keys,
        max_skew,
        replay,
        allow_unsigned_payload: spec.allow_unsigned_payload.unwrap_or(false),
        clock: Arc::new(SystemClock),
        client_id: cx.registry.define("client.id"),
        key_id_var: cx.registry.define("hmac.key_id"),
        sigv4_keys: Default::default(),
    })
}

/// The template-scheme options, shared by `require_hmac` and `sign_hmac`.
pub(super) struct CustomSpec<'s> {
    header: Option<&'s HeaderNameSpec>,
    format: Option<&'s Spanned<String>>,
    algorithm: Option<HmacAlgorithmSpec>,
    encoding: Option<SignatureEncodingSpec>,
    string_to_sign: Option<&'s Spanned<String>>,
    date_header: Option<&'s HeaderNameSpec>,
}

pub(super) fn compile_custom_scheme(
    spec: &CustomSpec<'_>,
    loc: Location,
    path: &str,
    cx: &mut Cx<'_>,
) -> Option<CustomScheme> {
    let Some(sts) = spec.string_to_sign else {
        cx.err(loc, path, "the template scheme needs `string_to_sign`");
        return None;
    };
    let string_to_sign = match Template::parse(&sts.value, &cx.registry) {
        Ok(t) => t,
        Err(e) => {
            cx.err(sts.loc, &format!("{path}.string_to_sign"), e.0);
            return None;
        }
    };
    let format_text = spec
        .format
        .map_or("HMAC ${key_id}:${signature}", |f| f.value.as_str());
    let format = match HeaderFormat::parse(format_text) {
        Ok(f) => f,
        Err(e) => {
            cx.err(
                spec.format.map_or(loc, |f| f.loc),
                &format!("{path}.format"),
                e,
            );
            return None;
        }
    };
    Some(CustomScheme {
        header: spec
            .header
            .map_or(http::header::AUTHORIZATION, |h| h.0.clone()),
        format,
        algorithm: match spec.algorithm.unwrap_or(HmacAlgorithmSpec::Sha256) {
            HmacAlgorithmSpec::Sha1 => Algorithm::Sha1,
            HmacAlgorithmSpec::Sha256 => Algorithm::Sha256,
            HmacAlgorithmSpec::Sha512 => Algorithm::Sha512,
        },
        encoding: match spec.encoding.unwrap_or(SignatureEncodingSpec::Base64) {
            SignatureEncodingSpec::Base64 => Encoding::Base64,
            SignatureEncodingSpec::Hex => Encoding::Hex,
        },
        string_to_sign,
        date_header: spec
            .date_header
            .map_or(HeaderName::from_static("x-date"), |h| h.0.clone()),
    })
}

pub(super) fn compile_sign_hmac(
    spec: &SignHmacSpec,
    loc: Location,
    path: &str,
    cx: &mut Cx<'_>,
) -> Option<SignHmac> {
    let Some(keys) = cx.key_sets.get(&spec.keys.value).cloned() else {
        cx.err(
            spec.keys.loc,
            &format!("{path}.keys"),
            format!("unknown key set \"{}\"", spec.keys.value),
        );
        return None;
    };
    let Some(key) = keys.get(&spec.access_key.value) else {
        cx.err(
            spec.access_key.loc,
            &format!("{path}.access_key"),
            format!(
                "key set \"{}\" has no access key {}",
                spec.keys.value, spec.access_key.value
            ),
        );
        return None;
    };
    let secret = key.secrets.first()?.clone();
    let scheme = match spec.scheme {
        HmacSchemeSpec::AwsSigv4 => {
            let (Some(region), Some(service)) = (&spec.region, &spec.service) else {
                cx.err(
                    loc,
                    path,
                    "aws-sigv4 needs the `region` and `service` of the credential scope",
                );
                return None;
            };
            OutboundScheme::SigV4 {
                region: region.clone(),
                service: service.clone(),
                content_sha256_header: spec.content_sha256_header.unwrap_or(true),
                normalize_path: spec.normalize_path.unwrap_or(true),
            }
        }
        HmacSchemeSpec::AwsSigv2 => OutboundScheme::SigV2,
        HmacSchemeSpec::Template => OutboundScheme::Custom(compile_custom_scheme(
            &CustomSpec {
                header: spec.header.as_ref(),
                format: spec.format.as_ref(),
                algorithm: spec.algorithm,
                encoding: spec.encoding,
                string_to_sign: spec.string_to_sign.as_ref(),
                date_header: spec.date_header.as_ref(),
            },
            loc,
            path,
            cx,
        )?),
    };
    Some(SignHmac {
        scheme,
        access_key: key.access_key.clone(),
        secret,
        clock: Arc::new(SystemClock),
    })
}
