//! Card numbers (PANs): detection, masking of whole buffers and of streams split anywhere,
//! and the `mask_pan` step that masks them in response bodies on their way out.

pub mod detect;
pub mod stream;

mod step;

pub use detect::*;
pub use step::{MaskPan, Mode};

/// The content types `mask_pan` scans when the policy does not say.
#[must_use]
pub fn step_defaults() -> &'static [&'static str] {
    step::DEFAULT_CONTENT_TYPES
}
pub use stream::*;

#[cfg(test)]
mod tests;
