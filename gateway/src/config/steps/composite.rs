//! `all` and `any`. A top-level `all` never gets here: the list compiler flattens it into
//! the pipeline. What remains (any `any`, and an `all` inside one) holds steps that decide
//! on heads only, since a composite runs its steps' head phases (see
//! `portcullis_assertions::composite`).

use portcullis_assertions::composite::{All, Any};
use portcullis_assertions::{Assertion, VarRegistry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{compile_list, define_outputs, CompileStep, Sides, StepSite, StepSpec};
use crate::config::context::CompileContext;
use crate::config::yaml::{Lenient, Spanned};

/// Steps that must all pass, in order.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct AllSpec(pub Vec<Lenient<Spanned<StepSpec>>>);

/// Steps of which at least one must pass.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct AnySpec(pub Vec<Lenient<Spanned<StepSpec>>>);

/// The two kinds differ only in how their branches combine.
macro_rules! composite_step {
    ($spec:ident, $composite:ident, $inside_any:literal) => {
        impl CompileStep for $spec {
            fn sides(&self) -> Sides {
                Sides::Both
            }

            fn define_outputs(&self, registry: &mut VarRegistry) {
                define_outputs(&self.0, registry);
            }

            fn compile(
                &self,
                site: &StepSite<'_>,
                context: &mut CompileContext<'_>,
            ) -> Option<Box<dyn Assertion>> {
                // Steps under an `any` are branches: the list compiler keeps them to heads.
                context.any_depth += usize::from($inside_any);
                let steps = compile_branches(&self.0, site, context);
                context.any_depth -= usize::from($inside_any);
                // Steps that could not be composed were reported while compiling them; this
                // is a second guard.
                $composite::new(steps?)
                    .map(|composite| Box::new(composite) as Box<dyn Assertion>)
                    .map_err(|e| context.err(site.loc, site.path, e.to_string()))
                    .ok()
            }
        }
    };
}

composite_step!(AllSpec, All, false);
composite_step!(AnySpec, Any, true);

fn compile_branches(
    steps: &[Lenient<Spanned<StepSpec>>],
    site: &StepSite<'_>,
    context: &mut CompileContext<'_>,
) -> Option<Vec<Box<dyn Assertion>>> {
    if steps.is_empty() {
        context.err(
            site.loc,
            site.path,
            format!("{} needs at least one step", site.kind),
        );
        return None;
    }
    Some(compile_list(
        steps,
        &site.options_path(),
        site.side,
        Some(site.kind),
        context,
    ))
}
