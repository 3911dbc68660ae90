//! `mask_pan`: card numbers (PANs) masked in bodies. On responses it streams (mask) or
//! withholds (block) by content type; on requests it masks every body it is given.

use portcullis_assertions::pan::{self, Keep, MaskPan, MaskStyle, Mode};
use portcullis_assertions::Assertion;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CompileStep, Sides, StepSite};
use crate::config::context::{CompileContext, Side};
use crate::config::yaml::Spanned;

/// The mask character when the policy names none.
const DEFAULT_MASK_CHAR: u8 = b'*';

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MaskModeSpec {
    Mask,
    Block,
}

/// Which digits of a card number stay visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeepSpec {
    /// `************1111`
    LastFour,
    /// `411111******1111`
    FirstSixLastFour,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskPanSpec {
    /// `mask` (default): mask and send on, streaming. `block`: withhold a response that holds
    /// a card number, answering 502 (the whole response is read before any of it is sent).
    #[serde(default)]
    pub mode: Option<MaskModeSpec>,
    /// Digits left visible. Default `last_four`.
    #[serde(default)]
    pub keep: Option<KeepSpec>,
    /// The mask character (one ASCII character, not a digit). Default `*`.
    #[serde(default)]
    pub mask_char: Option<Spanned<String>>,
    /// Content types scanned: exact types, prefixes ending in `/` (`text/`), or suffixes
    /// starting with `+` (`+json`). Default: application/json, application/xml,
    /// application/x-www-form-urlencoded, text/, +json, +xml (and bodies without a type).
    #[serde(default)]
    pub content_types: Option<Vec<String>>,
}

impl CompileStep for MaskPanSpec {
    fn sides(&self) -> Sides {
        Sides::Both
    }

    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        if site.side == Side::Request
            && (self.mode == Some(MaskModeSpec::Block) || self.content_types.is_some())
        {
            context.err(site.loc, site.path, "on the request side mask_pan masks every body it is given: mode and content_types apply to responses only");
            return None;
        }
        let style = MaskStyle {
            mask: mask_char(self.mask_char.as_ref(), site, context)?,
            keep: match self.keep.unwrap_or(KeepSpec::LastFour) {
                KeepSpec::LastFour => Keep::LastFour,
                KeepSpec::FirstSixLastFour => Keep::FirstSixLastFour,
            },
        };
        if site.side == Side::Request {
            return Some(Box::new(MaskPan::for_requests(style)));
        }
        let content_types = self.content_types.clone().unwrap_or_else(|| {
            pan::step_defaults()
                .iter()
                .map(|content_type| (*content_type).to_owned())
                .collect()
        });
        let mode = match self.mode.unwrap_or(MaskModeSpec::Mask) {
            MaskModeSpec::Mask => Mode::Mask,
            MaskModeSpec::Block => Mode::Block,
        };
        Some(Box::new(MaskPan::new(style, mode, content_types)))
    }
}

/// The mask character: one ASCII character that is not a digit (a digit would make a
/// masked number look like a real one).
fn mask_char(
    spec: Option<&Spanned<String>>,
    site: &StepSite<'_>,
    context: &mut CompileContext<'_>,
) -> Option<u8> {
    let Some(spec) = spec else {
        return Some(DEFAULT_MASK_CHAR);
    };
    match spec.value.as_bytes() {
        [byte] if byte.is_ascii() && !byte.is_ascii_digit() => Some(*byte),
        _ => {
            context.err(
                spec.loc,
                &site.option_path("mask_char"),
                "mask_char must be one ASCII character that is not a digit",
            );
            None
        }
    }
}
