//! `set_header` and `remove_header`, on either side. Headers that carry message framing,
//! and those the gateway itself sets for the upstream, are out of a policy's reach.

use http::HeaderName;
use portcullis_assertions::headers::{editable, RemoveHeader, SetHeader};
use portcullis_assertions::template::Template;
use portcullis_assertions::Assertion;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CompileStep, Sides, StepSite};
use crate::config::context::{CompileContext, Side};
use crate::config::values::HeaderNameSpec;
use crate::config::yaml::Spanned;

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetHeaderSpec {
    pub name: HeaderNameSpec,
    /// Text with `${...}` variables.
    pub value: Spanned<String>,
}

/// Header names to remove.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct RemoveHeaderSpec(pub Vec<HeaderNameSpec>);

impl CompileStep for SetHeaderSpec {
    fn sides(&self) -> Sides {
        Sides::Both
    }

    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        if let Some(problem) = out_of_reach(&self.name.0, site.side, "set") {
            context.err(site.loc, site.path, problem);
            return None;
        }
        match Template::parse(&self.value.value, &context.registry) {
            Ok(value) => Some(Box::new(SetHeader::new(self.name.0.clone(), value))),
            Err(e) => {
                context.err(self.value.loc, &site.option_path("value"), e.0);
                None
            }
        }
    }
}

impl CompileStep for RemoveHeaderSpec {
    fn sides(&self) -> Sides {
        Sides::Both
    }

    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        if self.0.is_empty() {
            context.err(
                site.loc,
                site.path,
                "remove_header needs at least one header name",
            );
        }
        if let Some(problem) = self
            .0
            .iter()
            .find_map(|name| out_of_reach(&name.0, site.side, "removed"))
        {
            context.err(site.loc, site.path, problem);
            return None;
        }
        Some(Box::new(RemoveHeader::new(
            self.0.iter().map(|name| name.0.clone()).collect(),
        )))
    }
}

/// Why a policy may not touch `name` on `side`, if it may not.
fn out_of_reach(name: &HeaderName, side: Side, verb: &str) -> Option<String> {
    if side == Side::Request && gateway_managed(name) {
        return Some(format!(
            "request header {name} is set by the gateway for the upstream (see the upstream's preserve_host option); a policy cannot change it"
        ));
    }
    (!editable(name))
        .then(|| format!("header {name} carries message framing and cannot be {verb} by a policy"))
}

/// Request headers the gateway sets on the way up (after the pipeline), so a policy edit
/// would be overwritten.
fn gateway_managed(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
    )
}
