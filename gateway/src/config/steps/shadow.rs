//! A step as a list holds it: its kind and options, and `mode:` beside them (`shadow`:
//! evaluated and recorded, not enforced; see `portcullis_assertions::shadow`), plus the
//! rules for where shadow mode may be asked for.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize, Serializer};

use super::AssertionSpec;
use crate::config::context::CompileContext;
use crate::config::yaml::Spanned;

/// Whether a step's verdict is enforced or only recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepModeSpec {
    /// Refusals refuse, edits are made (the default).
    #[default]
    Enforce,
    /// Evaluated on every request and recorded (metric and access log), but neither
    /// refuses nor changes anything.
    Shadow,
}

/// One step of a pipeline: `- kind: options`, and optionally `mode:` beside the kind.
/// Read by the policy YAML reader, which hands every key but `mode` to the kind.
#[derive(Debug, Deserialize)]
#[serde(rename = "$portcullis::beside_kind")]
pub struct StepSpec {
    /// The kind and its options.
    #[serde(rename = "$kind")]
    pub step: AssertionSpec,
    /// `enforce` (default) or `shadow`.
    #[serde(default)]
    pub mode: Option<Spanned<StepModeSpec>>,
}

impl StepSpec {
    /// Whether the step itself asks for shadow mode.
    #[must_use]
    pub fn is_shadow(&self) -> bool {
        self.mode
            .as_ref()
            .is_some_and(|mode| mode.value == StepModeSpec::Shadow)
    }
}

/// Written back as it was read: the kind's one key, `mode` beside it when given.
impl Serialize for StepSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(mode) = &self.mode else {
            return self.step.serialize(serializer);
        };
        let mut written = serde_json::to_value(&self.step).map_err(serde::ser::Error::custom)?;
        if let Some(fields) = written.as_object_mut() {
            let mode = serde_json::to_value(mode.value).map_err(serde::ser::Error::custom)?;
            fields.insert("mode".to_owned(), mode);
        }
        written.serialize(serializer)
    }
}

/// The kinds' schema, each kind's mapping also allowing `mode`.
impl JsonSchema for StepSpec {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("StepSpec")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut mode = generator.subschema_for::<StepModeSpec>().to_value();
        if let Some(fields) = mode.as_object_mut() {
            fields.insert(
                "description".to_owned(),
                "`enforce` (default), or `shadow`: the step is evaluated and its verdict recorded (metric `portcullis_shadow_outcomes_total`, the access log's `shadow` field) but not enforced; nothing it would change is changed.".into(),
            );
        }
        let mut schema = AssertionSpec::json_schema(generator);
        if let Some(kinds) = schema
            .get_mut("oneOf")
            .and_then(serde_json::Value::as_array_mut)
        {
            for kind in kinds {
                if let Some(fields) = kind
                    .get_mut("properties")
                    .and_then(serde_json::Value::as_object_mut)
                {
                    fields.insert("mode".to_owned(), mode.clone());
                }
            }
        }
        schema
    }
}

/// Whether the step at `path` runs in shadow mode: it asks for it, its service is shadowed
/// (`shadow: true`), or the `all` it was flattened from is. Inside a composite (`any`, or
/// an `all` under one) a step is never shadowed on its own: shadow the composite. A step
/// that asks for shadow mode there, or for `enforce` where everything around it is
/// shadowed, is refused where `mode` is written.
pub(super) fn is_shadowed(
    step: &StepSpec,
    path: &str,
    composite: Option<&str>,
    context: &mut CompileContext<'_>,
) -> bool {
    let Some(mode) = &step.mode else {
        return composite.is_none() && (context.shadow.service || context.shadow.inherited);
    };
    let at = format!("{path}.mode");
    match (mode.value, composite) {
        (StepModeSpec::Shadow, Some(kind)) => {
            context.err(
                mode.loc,
                &at,
                format!("a step inside `{kind}` cannot be shadowed on its own (the `{kind}` decides, not its steps): put `mode: shadow` on the `{kind}` itself"),
            );
            false
        }
        (StepModeSpec::Shadow, None) => true,
        (StepModeSpec::Enforce, Some(_)) => false,
        (StepModeSpec::Enforce, None) if context.shadow.service => {
            context.err(
                mode.loc,
                &at,
                "this service has `shadow: true`, so every step is shadowed: remove `mode: enforce`, or the service's `shadow: true` and shadow steps one by one",
            );
            true
        }
        (StepModeSpec::Enforce, None) if context.shadow.inherited => {
            context.err(
                mode.loc,
                &at,
                "the `all` this step sits in is shadowed, so all its steps are: move this step out of it to enforce it",
            );
            true
        }
        (StepModeSpec::Enforce, None) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::config::spec::ConfigSpec;
    use crate::config::{parse_text, Diagnostic};

    #[test]
    fn mode_is_read_beside_the_kind_in_either_order_and_written_back_there() {
        let text = "services:\n  - name: s\n    upstream: http://127.0.0.1:1\n    request:\n      - mode: shadow\n        allow_ip: [10.0.0.0/8]\n      - deny_ip: [192.0.2.0/24]\n        mode: enforce\n      - deny_ip: [198.51.100.0/24]\n";
        let mut errors: Vec<Diagnostic> = Vec::new();
        let parsed = parse_text::<ConfigSpec>(Arc::from(Path::new("p.yaml")), text, &mut errors)
            .expect("parsed");
        assert!(errors.is_empty(), "{errors:?}");
        let service = &parsed.spec.services[0].0.as_ref().expect("service").value;
        let steps: Vec<_> = service
            .request
            .iter()
            .map(|step| step.get().expect("step"))
            .collect();
        assert!(steps[0].value.is_shadow());
        assert_eq!(steps[0].value.step.kind(), "allow_ip");
        assert_eq!((steps[0].loc.line, steps[0].loc.col), (5, 9));
        assert!(!steps[1].value.is_shadow());
        assert_eq!(
            steps[1]
                .value
                .mode
                .as_ref()
                .map(|m| (m.loc.line, m.loc.col)),
            Some((8, 15))
        );
        assert!(steps[2].value.mode.is_none());
        assert_eq!(
            serde_json::to_value(&service.request).expect("json"),
            serde_json::json!([
                {"allow_ip": ["10.0.0.0/8"], "mode": "shadow"},
                {"deny_ip": ["192.0.2.0/24"], "mode": "enforce"},
                {"deny_ip": ["198.51.100.0/24"]},
            ])
        );
    }
}
