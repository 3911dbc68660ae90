//! `validate_json`: the request body must be well-formed JSON, nested no deeper than a limit.

use portcullis_assertions::json_body::ValidateJson;
use portcullis_assertions::Assertion;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CompileStep, StepSite};
use crate::config::context::CompileContext;

/// Nesting allowed when the policy says nothing.
const DEFAULT_MAX_DEPTH: usize = 32;
/// Nesting no policy may allow: deeper documents are a denial-of-service vector.
const MAX_DEPTH_LIMIT: usize = 1024;

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateJsonSpec {
    /// Deepest nesting of arrays/objects allowed. Default 32.
    #[serde(default)]
    pub max_depth: Option<usize>,
    /// Whether an empty body passes. Default `true`.
    #[serde(default)]
    pub allow_empty: Option<bool>,
}

impl CompileStep for ValidateJsonSpec {
    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        let depth = self.max_depth.unwrap_or(DEFAULT_MAX_DEPTH);
        if depth == 0 || depth > MAX_DEPTH_LIMIT {
            context.err(
                site.loc,
                site.path,
                format!("max_depth must be between 1 and {MAX_DEPTH_LIMIT}"),
            );
        }
        Some(Box::new(ValidateJson::new(
            depth,
            self.allow_empty.unwrap_or(true),
        )))
    }
}
