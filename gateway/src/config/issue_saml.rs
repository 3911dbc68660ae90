//! A service's `issue_saml:` (its options, `IssueSamlSpec`, sit with the `saml_issuer:`
//! section's), compiled after the service's request steps, whose variables it reads, into
//! [`crate::saml_issuer::pipeline::PipelineIssuance`].

use std::sync::Arc;

use super::context::CompileContext;
use super::saml_issuer::IssueSamlSpec;
use super::yaml::Spanned;

/// The steps that establish who the caller is; a service issuing assertions needs one.
/// `require_saml` is not one of them here: a service that took an assertion and answered a
/// fresh one would let a captured assertion be renewed forever.
const AUTHENTICATING_STEPS: &[&str] = &["require_api_key", "require_hmac", "require_bearer"];

/// Compiles a service's `issue_saml:` after its request steps (whose variables it reads).
/// What it refuses, each a way to mint assertions for someone the gateway did not
/// authenticate: no authenticating step; `require_saml` among the steps; a subject without
/// a variable, or any value read from the request itself (headers, query, path: the caller
/// writes those); `GET`/`HEAD` (a URL would mint assertions); attributes the issuer's
/// `attributes:` list leaves out; `response:` steps (the answer is the gateway's own).
pub(crate) fn compile_issuance(
    spec: &Spanned<IssueSamlSpec>,
    service: &super::spec::ServiceSpec,
    path: &str,
    context: &mut CompileContext<'_>,
) -> Option<Arc<crate::saml_issuer::pipeline::PipelineIssuance>> {
    let at = format!("{path}.issue_saml");
    let errors_before = context.errors.len();
    let Some(issuer) = context.saml_issuer.clone() else {
        if !context.saml_issuer_declared {
            context.err(
                spec.loc,
                &at,
                "issue_saml signs with the `saml_issuer:` section's key and names: add that section",
            );
        }
        return None;
    };
    // A shadowed step authenticates no one.
    let shadowed = service.shadow.as_ref().is_some_and(|shadow| shadow.value);
    let kinds: Vec<&str> = service
        .request
        .iter()
        .filter_map(|step| step.get())
        .filter(|step| !shadowed && !step.value.is_shadow())
        .map(|step| step.value.step.kind())
        .collect();
    if !kinds.iter().any(|kind| AUTHENTICATING_STEPS.contains(kind)) {
        context.err(
            spec.loc,
            &at,
            format!(
                "a service that issues assertions must authenticate its callers first: put one of {} in its request steps",
                AUTHENTICATING_STEPS.join(", ")
            ),
        );
    }
    if kinds.contains(&"require_saml") {
        context.err(
            spec.loc,
            &at,
            "a service that issues assertions cannot take them (require_saml): a captured assertion could be renewed forever",
        );
    }
    if service.credentials.present().is_some() {
        context.err(
            spec.loc,
            &format!("{path}.credentials"),
            "a service with issue_saml sends nothing upstream: credentials: does not apply",
        );
    }
    if let Some(step) = service.response.iter().find_map(|step| step.get()) {
        context.err(
            step.loc,
            &format!("{path}.response"),
            "a service with issue_saml answers itself: response steps would never run",
        );
    }
    for method in service.methods.iter().flatten() {
        if matches!(method.value.as_str(), "GET" | "HEAD") {
            context.err(
                method.loc,
                &format!("{path}.methods"),
                "issue_saml answers POST (the default): with GET or HEAD a link would mint assertions",
            );
        }
    }
    let subject = match &spec.value.subject {
        Some(text) => identity_template(&text.value, text.loc, &format!("{at}.subject"), context),
        None => identity_template("${client.id}", spec.loc, &format!("{at}.subject"), context),
    };
    if subject
        .as_ref()
        .is_some_and(|subject| subject.is_constant())
    {
        let loc = spec
            .value
            .subject
            .as_ref()
            .map_or(spec.loc, |text| text.loc);
        context.err(
            loc,
            &format!("{at}.subject"),
            "the subject must name the authenticated caller through a variable (e.g. ${client.id}, ${token.sub}), not a fixed name",
        );
    }
    let mut attributes = Vec::new();
    for (name, text) in &spec.value.attributes {
        if name.is_empty() || name.chars().any(|c| c.is_control() || c == '"') {
            context.err(
                text.loc,
                &format!("{at}.attributes"),
                "an attribute name is non-empty, without quotes or control characters",
            );
        }
        if let Some(allowed) = &issuer.attributes {
            if !allowed.contains(name) {
                context.err(
                    text.loc,
                    &format!("{at}.attributes.{name}"),
                    format!("saml_issuer.attributes does not list \"{name}\": the issuer puts only those into assertions"),
                );
            }
        }
        let option = format!("{at}.attributes.{name}");
        if let Some(template) = identity_template(&text.value, text.loc, &option, context) {
            attributes.push((name.clone(), template));
        }
    }
    if context.errors.len() > errors_before {
        return None;
    }
    Some(Arc::new(crate::saml_issuer::pipeline::PipelineIssuance {
        issuer,
        subject: subject?,
        attributes,
    }))
}

/// A template that may read only what the pipeline's steps established (their variables)
/// and literals: never the request itself, which the caller writes.
fn identity_template(
    text: &str,
    loc: super::yaml::Location,
    option: &str,
    context: &mut CompileContext<'_>,
) -> Option<portcullis_assertions::template::Template> {
    use portcullis_assertions::template::{Source, Template};
    match Template::parse(text, &context.registry) {
        Ok(template)
            if template
                .sources()
                .all(|source| matches!(source, Source::Var(_))) =>
        {
            Some(template)
        }
        Ok(_) => {
            context.err(
                loc,
                option,
                "only variables the request steps set (client.*, token.*, hmac.*...) may go into an assertion: request headers, query, path and address are the caller's own words",
            );
            None
        }
        Err(error) => {
            context.err(loc, option, error.0);
            None
        }
    }
}
