//! YAML front end for policy files.
//!
//! The source is parsed with `saphyr-parser` into a tree of [`Node`]s that
//! remember their position, and a serde [`Deserializer`](serde::Deserializer)
//! runs over that tree. Because the tree is complete before deserializing, an
//! error inside one node does not disturb its siblings: with [`Lenient`] the
//! caller collects every mistake at once, each with an exact `line:col` and a
//! dotted path such as `services[2].request[1].require_api_key.header`.

mod beside;
mod deserializer;
mod diagnostics;
mod parse;
mod tagged;
#[cfg(test)]
mod tests;
mod wrappers;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess,
    SeqAccess, Unexpected, VariantAccess, Visitor,
};
use serde::Deserialize;

// ---------------------------------------------------------------------------
// Public data types
// ---------------------------------------------------------------------------

#[allow(clippy::wildcard_imports)]
use deserializer::*;
#[allow(clippy::wildcard_imports)]
use diagnostics::*;
pub use parse::parse;
#[allow(clippy::wildcard_imports)]
use wrappers::*;

/// A position in the source, 1-based line and 1-based column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl Location {
    fn from_span(span: &Span) -> Self {
        Location {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }
}

/// A YAML node with its position.
#[derive(Debug, Clone)]
pub struct Node {
    pub loc: Location,
    pub kind: NodeKind,
}

/// The content of a [`Node`]. An empty plain scalar, `~` and `null` are
/// scalars too: null-ness is decided when deserializing.
#[derive(Debug, Clone)]
pub enum NodeKind {
    Scalar { value: String, quoted: bool },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A located configuration error.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub loc: Option<Location>,
    pub path: String,
    pub message: String,
}

impl Error {
    fn new(loc: Location, message: impl Into<String>) -> Self {
        Error {
            loc: Some(loc),
            path: String::new(),
            message: message.into(),
        }
    }

    fn msg(message: impl Into<String>) -> Self {
        Error {
            loc: None,
            path: String::new(),
            message: message.into(),
        }
    }

    /// Fills in location and path unless an inner node already did.
    fn attach(mut self, loc: Location, path: &Path<'_>) -> Self {
        if self.loc.is_none() && !self.is_recovered_marker() {
            self.loc = Some(loc);
            self.path = path.render();
        }
        self
    }

    fn is_recovered_marker(&self) -> bool {
        self.loc.is_none() && self.path.is_empty() && self.message == RECOVERED_MARKER
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = self.loc {
            write!(f, "{loc}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::msg(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Error::msg(format!(
            "expected {exp}, found {}",
            describe_unexpected(&unexp)
        ))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Error::msg(format!(
            "expected {exp}, found {}",
            describe_unexpected(&unexp)
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Error::msg(unknown_message("field", ';', field, expected))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let noun = STATE.with(|s| s.borrow().enum_noun.last().copied().unwrap_or("value"));
        Error::msg(unknown_message(noun, ';', variant, expected))
    }

    fn missing_field(field: &'static str) -> Self {
        Error::msg(format!("missing field \"{field}\""))
    }

    fn duplicate_field(field: &'static str) -> Self {
        Error::msg(format!("duplicate key \"{field}\""))
    }
}

/// Limits applied while parsing.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_depth: usize,
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_nodes: 200_000,
        }
    }
}

/// A value together with the location of the node it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub loc: Location,
    pub value: T,
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Error recovery: a failure to deserialize `T` is recorded (with location)
/// and becomes `Lenient(None)` so the parent carries on.
#[derive(Debug, Clone)]
pub struct Lenient<T>(pub Option<T>);

impl<T> Lenient<T> {
    /// The value, when it was read without error.
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<T> Lenient<Option<T>> {
    /// The optional value, when present and read without error.
    pub fn present(&self) -> Option<&T> {
        self.0.as_ref().and_then(Option::as_ref)
    }
}

/// An absent field with `#[serde(default)]` is the default value, not an error.
impl<T: Default> Default for Lenient<T> {
    fn default() -> Self {
        Lenient(Some(T::default()))
    }
}

// ---------------------------------------------------------------------------
// Thread-local state shared between the deserializer and the wrapper types
// ---------------------------------------------------------------------------

const SPANNED_NAME: &str = "$portcullis::Spanned";

const SPANNED_LINE: &str = "$loc_line";

const SPANNED_COL: &str = "$loc_col";

const SPANNED_VALUE: &str = "$value";

const SPANNED_FIELDS: &[&str] = &[SPANNED_LINE, SPANNED_COL, SPANNED_VALUE];

const LENIENT_NAME: &str = "$portcullis::Lenient";

/// An enum whose serde name starts with this is read internally tagged: the mapping's key
/// named after the prefix (`$portcullis::tagged:scheme` → `scheme`) names the variant, and
/// the rest of the same mapping is the variant's options. serde's own internal tagging
/// buffers the mapping and would lose every position; this keeps them.
pub const TAGGED_PREFIX: &str = "$portcullis::tagged:";

/// A struct whose serde name is this is read from a mapping that also holds an externally
/// tagged enum's key: the struct's fields are read from their own keys, and the field
/// renamed [`KIND_FIELD`] gets the rest of the mapping, the enum's one key. So a policy step
/// can carry `mode: shadow` beside `require_api_key: {...}` with every position kept
/// (serde's `flatten` would buffer the mapping and lose them).
pub const BESIDE_KIND_NAME: &str = "$portcullis::beside_kind";

/// The field of a [`BESIDE_KIND_NAME`] struct that holds the enum.
pub const KIND_FIELD: &str = "$kind";

const RECOVERED_MARKER: &str = "$portcullis::recovered";

/// Deserializes `T` from a parsed node, returning every error found: those
/// recovered by [`Lenient`] (in document order) plus the fatal one, if any.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, Vec<Error>> {
    match from_node_collect(node) {
        (Some(v), errors) if errors.is_empty() => Ok(v),
        (_, errors) => Err(errors),
    }
}

/// Like [`from_node`], but also returns the value when only [`Lenient`] parts failed, so
/// later validation can report its own errors beside the ones found here.
pub fn from_node_collect<T: DeserializeOwned>(node: &Node) -> (Option<T>, Vec<Error>) {
    let saved = STATE.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let result = T::deserialize(De::new(node, &Path::Root));
    let state = STATE.with(|s| std::mem::replace(&mut *s.borrow_mut(), saved));
    let mut errors = state.sink;
    match result {
        Ok(v) => (Some(v), errors),
        Err(e) => {
            if !e.is_recovered_marker() {
                errors.push(e);
            }
            (None, errors)
        }
    }
}
