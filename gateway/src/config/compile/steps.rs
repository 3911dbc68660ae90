//! Pipeline lists and each step in them: a top-level `all` flattened, composites holding
//! head-only steps, one arm per assertion kind.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderName;
use portcullis_assertions::api_key::{self, ApiClient, RequireApiKey, DEFAULT_QUERY_PARAMS};
use portcullis_assertions::composite::{All, Any};
use portcullis_assertions::headers::{editable, RemoveHeader, SetHeader};
use portcullis_assertions::ip::{AllowIp, DenyIp, IpList};
use portcullis_assertions::json_body::ValidateJson;
use portcullis_assertions::pan::{Keep, MaskPan, MaskStyle, Mode};
use portcullis_assertions::template::Template;
use portcullis_assertions::{Assertion, VarRegistry};

use crate::config::spec::{AssertionSpec, KeepSpec, MaskModeSpec};
use crate::config::yaml::{Lenient, Location, Spanned};

use super::context::{Cx, Side};
use super::hmac::{compile_require_hmac, compile_sign_hmac};

/// Registers the variables a step (and its children) can set.
pub(super) fn define_outputs(step: &Lenient<Spanned<AssertionSpec>>, registry: &mut VarRegistry) {
    let Some(step) = &step.0 else { return };
    match &step.value {
        AssertionSpec::RequireApiKey(spec) => {
            registry.define("client.id");
            for key in &spec.keys {
                for attr in key.value.attributes.keys() {
                    registry.define(&format!("client.{attr}"));
                }
            }
        }
        AssertionSpec::All(steps) | AssertionSpec::Any(steps) => {
            for s in steps {
                define_outputs(s, registry);
            }
        }
        AssertionSpec::AllowIp(_)
        | AssertionSpec::DenyIp(_)
        | AssertionSpec::SetHeader(_)
        | AssertionSpec::RemoveHeader(_)
        | AssertionSpec::ValidateJson(_)
        | AssertionSpec::RequireHmac(_)
        | AssertionSpec::SignHmac(_)
        | AssertionSpec::MaskPan(_) => {}
        AssertionSpec::RequireBearer(_) => {
            for v in ["client.id", "token.sub", "token.scope"] {
                registry.define(v);
            }
        }
    }
}

/// Compiles a pipeline's list. An `all` outside any `any` is flattened into the list: the
/// pipeline runs every phase of every step, which a composite does not.
pub(super) fn compile_steps(
    steps: &[Lenient<Spanned<AssertionSpec>>],
    path: &str,
    side: Side,
    cx: &mut Cx<'_>,
) -> Vec<Box<dyn Assertion>> {
    compile_list(steps, path, side, None, cx)
}

/// Compiles the steps of an `all` or `any` (`kind`) that sits inside an `any`: each must
/// decide on heads only (see `portcullis_assertions::composite`).
pub(super) fn compile_composite_steps(
    steps: &[Lenient<Spanned<AssertionSpec>>],
    path: &str,
    kind: &str,
    side: Side,
    cx: &mut Cx<'_>,
) -> Vec<Box<dyn Assertion>> {
    compile_list(steps, path, side, Some(kind), cx)
}

pub(super) fn compile_list(
    steps: &[Lenient<Spanned<AssertionSpec>>],
    path: &str,
    side: Side,
    composite: Option<&str>,
    cx: &mut Cx<'_>,
) -> Vec<Box<dyn Assertion>> {
    let mut out = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let Some(step) = step.0.as_ref() else {
            continue;
        };
        let step_path = format!("{path}[{i}]");
        if let (AssertionSpec::All(inner), None) = (&step.value, composite) {
            if cx.any_depth == 0 && !inner.is_empty() {
                out.extend(compile_list(
                    inner,
                    &format!("{step_path}.all"),
                    side,
                    None,
                    cx,
                ));
                continue;
            }
        }
        let Some(compiled) = compile_step(step, &step_path, side, cx) else {
            continue;
        };
        let beyond = compiled.phases().beyond_heads();
        match composite {
            Some(kind) if !beyond.is_empty() => {
                let list = match side {
                    Side::Request => "request",
                    Side::Response => "response",
                };
                cx.err(
                    step.loc,
                    &step_path,
                    format!(
                        "{} cannot sit inside `{kind}`: it {}, and `{kind}` decides on request and response heads only (which branch's work would apply?); put it in the {list} list itself",
                        compiled.kind(),
                        beyond.join(" and ")
                    ),
                );
            }
            _ => out.push(compiled),
        }
    }
    out
}

/// Request headers the gateway sets on the way up (after the pipeline), so a policy edit
/// would be overwritten.
pub(super) fn gateway_managed(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
    )
}

pub(super) fn managed_message(name: &HeaderName) -> String {
    format!(
        "request header {name} is set by the gateway for the upstream (see the upstream's preserve_host option); a policy cannot change it"
    )
}

pub(super) fn request_only(
    kind: &str,
    side: Side,
    loc: Location,
    path: &str,
    cx: &mut Cx<'_>,
) -> bool {
    if side == Side::Response {
        cx.err(
            loc,
            path,
            format!("{kind} checks requests; move it to the service's request: list"),
        );
        return false;
    }
    true
}

pub(super) fn compile_step(
    step: &Spanned<AssertionSpec>,
    path: &str,
    side: Side,
    cx: &mut Cx<'_>,
) -> Option<Box<dyn Assertion>> {
    let loc = step.loc;
    match &step.value {
        AssertionSpec::RequireApiKey(spec) => {
            if !request_only("require_api_key", side, loc, path, cx) {
                return None;
            }
            let mut keys = HashMap::new();
            for (i, entry) in spec.keys.iter().enumerate() {
                let kpath = format!("{path}.require_api_key.keys[{i}]");
                let e = &entry.value;
                let digest = match (&e.sha256, &e.secret) {
                    (Some(d), None) => d.0,
                    (None, Some(name)) => {
                        api_key::digest(cx.secret(name, &kpath)?.expose().as_bytes())
                    }
                    _ => {
                        cx.err(
                            entry.loc,
                            &kpath,
                            "give exactly one of `sha256` and `secret` for each key",
                        );
                        continue;
                    }
                };
                let mut attributes = Vec::new();
                for (attr, value) in &e.attributes {
                    if attr.is_empty()
                        || !attr.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        || attr == "id"
                        || attr == "ip"
                    {
                        cx.err(entry.loc, &kpath, format!("attribute name \"{attr}\" must be letters, digits or _ (and not id or ip)"));
                        continue;
                    }
                    if let Some(var) = cx.registry.lookup(&format!("client.{attr}")) {
                        attributes.push((var, Arc::from(value.as_str())));
                    }
                }
                let client = Arc::new(ApiClient {
                    id: Arc::from(e.client.as_str()),
                    attributes,
                });
                if keys.insert(digest, client).is_some() {
                    cx.err(entry.loc, &kpath, "the same key is listed twice");
                }
            }
            if spec.keys.is_empty() {
                cx.err(
                    loc,
                    path,
                    "require_api_key needs at least one key under `keys:`",
                );
            }
            let header = spec
                .header
                .as_ref()
                .map_or_else(|| HeaderName::from_static("x-api-key"), |h| h.0.clone());
            let query_params = spec.query_params.clone().unwrap_or_else(|| {
                DEFAULT_QUERY_PARAMS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            });
            let client_id = cx.registry.define("client.id");
            Some(Box::new(RequireApiKey::new(
                header,
                spec.prefix.clone(),
                keys,
                query_params,
                client_id,
            )))
        }
        AssertionSpec::AllowIp(cidrs) | AssertionSpec::DenyIp(cidrs) => {
            let allow = matches!(step.value, AssertionSpec::AllowIp(_));
            let kind = if allow { "allow_ip" } else { "deny_ip" };
            if !request_only(kind, side, loc, path, cx) {
                return None;
            }
            if cidrs.is_empty() {
                cx.err(loc, path, format!("{kind} needs at least one CIDR block"));
            }
            let list = IpList::new(cidrs.iter().map(|c| c.0).collect());
            if allow {
                Some(Box::new(AllowIp::new(list)))
            } else {
                Some(Box::new(DenyIp::new(list)))
            }
        }
        AssertionSpec::SetHeader(spec) => {
            if side == Side::Request && gateway_managed(&spec.name.0) {
                cx.err(loc, path, managed_message(&spec.name.0));
                return None;
            }
            if !editable(&spec.name.0) {
                cx.err(
                    loc,
                    path,
                    format!(
                        "header {} carries message framing and cannot be set by a policy",
                        spec.name.0
                    ),
                );
                return None;
            }
            match Template::parse(&spec.value.value, &cx.registry) {
                Ok(t) => Some(Box::new(SetHeader::new(spec.name.0.clone(), t))),
                Err(e) => {
                    cx.err(spec.value.loc, &format!("{path}.set_header.value"), e.0);
                    None
                }
            }
        }
        AssertionSpec::RemoveHeader(names) => {
            if names.is_empty() {
                cx.err(loc, path, "remove_header needs at least one header name");
            }
            if let Some(n) = names
                .iter()
                .find(|n| side == Side::Request && gateway_managed(&n.0))
            {
                cx.err(loc, path, managed_message(&n.0));
                return None;
            }
            if let Some(n) = names.iter().find(|n| !editable(&n.0)) {
                cx.err(
                    loc,
                    path,
                    format!(
                        "header {} carries message framing and cannot be removed by a policy",
                        n.0
                    ),
                );
                return None;
            }
            Some(Box::new(RemoveHeader::new(
                names.iter().map(|n| n.0.clone()).collect(),
            )))
        }
        AssertionSpec::RequireBearer(spec) => {
            if !request_only("require_bearer", side, loc, path, cx) {
                return None;
            }
            let service = cx.service_name.clone();
            super::oauth::compile_require_bearer(
                spec,
                &service,
                loc,
                &format!("{path}.require_bearer"),
                cx,
            )
        }
        AssertionSpec::RequireHmac(spec) => {
            if !request_only("require_hmac", side, loc, path, cx) {
                return None;
            }
            compile_require_hmac(spec, loc, &format!("{path}.require_hmac"), cx)
                .map(|a| Box::new(a) as Box<dyn Assertion>)
        }
        AssertionSpec::MaskPan(spec) => {
            if side == Side::Request
                && (spec.mode == Some(MaskModeSpec::Block) || spec.content_types.is_some())
            {
                cx.err(loc, path, "on the request side mask_pan masks every body it is given: mode and content_types apply to responses only");
                return None;
            }
            let mask = match &spec.mask_char {
                None => b'*',
                Some(c)
                    if c.value.len() == 1
                        && c.value.is_ascii()
                        && !c.value.as_bytes()[0].is_ascii_digit() =>
                {
                    c.value.as_bytes()[0]
                }
                Some(c) => {
                    cx.err(
                        c.loc,
                        &format!("{path}.mask_pan.mask_char"),
                        "mask_char must be one ASCII character that is not a digit",
                    );
                    return None;
                }
            };
            let keep = match spec.keep.unwrap_or(KeepSpec::LastFour) {
                KeepSpec::LastFour => Keep::LastFour,
                KeepSpec::FirstSixLastFour => Keep::FirstSixLastFour,
            };
            let types = spec.content_types.clone().unwrap_or_else(|| {
                portcullis_assertions::pan::step_defaults()
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            });
            let mode = match spec.mode.unwrap_or(MaskModeSpec::Mask) {
                MaskModeSpec::Mask => Mode::Mask,
                MaskModeSpec::Block => Mode::Block,
            };
            if side == Side::Request {
                return Some(Box::new(MaskPan::for_requests(MaskStyle { mask, keep })));
            }
            Some(Box::new(MaskPan::new(
                MaskStyle { mask, keep },
                mode,
                types,
            )))
        }
        AssertionSpec::SignHmac(spec) => {
            if !request_only("sign_hmac", side, loc, path, cx) {
                return None;
            }
            compile_sign_hmac(spec, loc, &format!("{path}.sign_hmac"), cx)
                .map(|a| Box::new(a) as Box<dyn Assertion>)
        }
        AssertionSpec::ValidateJson(spec) => {
            if !request_only("validate_json", side, loc, path, cx) {
                return None;
            }
            let depth = spec.max_depth.unwrap_or(32);
            if depth == 0 || depth > 1024 {
                cx.err(loc, path, "max_depth must be between 1 and 1024");
            }
            Some(Box::new(ValidateJson::new(
                depth,
                spec.allow_empty.unwrap_or(true),
            )))
        }
        AssertionSpec::All(steps) | AssertionSpec::Any(steps) => {
            let any = matches!(step.value, AssertionSpec::Any(_));
            let kind = if any { "any" } else { "all" };
            if steps.is_empty() {
                cx.err(loc, path, format!("{kind} needs at least one step"));
                return None;
            }
            // Only reached for `any`, and for `all` inside an `any` (a top-level `all` is
            // flattened by compile_steps).
            cx.any_depth += usize::from(any);
            let compiled =
                compile_composite_steps(steps, &format!("{path}.{kind}"), kind, side, cx);
            cx.any_depth -= usize::from(any);
            let made = if any {
                Any::new(compiled).map(|a| Box::new(a) as Box<dyn Assertion>)
            } else {
                All::new(compiled).map(|a| Box::new(a) as Box<dyn Assertion>)
            };
            // Steps that could not be composed were reported above; this is a second guard.
            made.map_err(|e| cx.err(loc, path, e.to_string())).ok()
        }
    }
}
