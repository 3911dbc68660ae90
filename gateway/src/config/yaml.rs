//! YAML front end for policy files.
//!
//! The source is parsed with `saphyr-parser` into a tree of [`Node`]s that
//! remember their position, and a serde [`Deserializer`](serde::Deserializer)
//! runs over that tree. Because the tree is complete before deserializing, an
//! error inside one node does not disturb its siblings: with [`Lenient`] the
//! caller collects every mistake at once, each with an exact `line:col` and a
//! dotted path such as `services[2].request[1].require_api_key.header`.

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
const RECOVERED_MARKER: &str = "$portcullis::recovered";

#[derive(Default)]
struct State {
    /// Errors recovered by `Lenient`, drained by `from_node`.
    sink: Vec<Error>,
    /// How many `Lenient` values our deserializer is currently inside.
    lenient_active: usize,
    /// Message of an error `Lenient` swallowed that did not come through our
    /// deserializer (e.g. a `try_from` validation failure).
    pending: Option<String>,
    /// Nouns of the enums whose variant is being identified.
    enum_noun: Vec<&'static str>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn push_error(e: Error) {
    STATE.with(|s| s.borrow_mut().sink.push(e));
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

fn describe_unexpected(u: &Unexpected<'_>) -> String {
    match u {
        Unexpected::Bool(b) => format!("a boolean {b}"),
        Unexpected::Unsigned(n) => format!("an integer {n}"),
        Unexpected::Signed(n) => format!("an integer {n}"),
        Unexpected::Float(n) => format!("a number {n}"),
        Unexpected::Char(c) => format!("a string {:?}", c.to_string()),
        Unexpected::Str(s) => format!("a string {s:?}"),
        Unexpected::Unit | Unexpected::Option => "null".to_string(),
        Unexpected::Seq => "a list".to_string(),
        Unexpected::Map => "a mapping".to_string(),
        other => other.to_string(),
    }
}

fn suggest<'a>(given: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(&str, f64)> = None;
    for &c in candidates {
        let mut score = strsim::normalized_damerau_levenshtein(given, c);
        if !given.is_empty() && (c.starts_with(given) || given.starts_with(c)) {
            score = score.max(0.7);
        }
        if score >= 0.7 && best.is_none_or(|(_, b)| score > b) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

/// `sep` follows the quoted name.
fn unknown_message(noun: &str, sep: char, given: &str, expected: &[&str]) -> String {
    if let Some(s) = suggest(given, expected) {
        format!("unknown {noun} \"{given}\"{sep} did you mean \"{s}\"?")
    } else if expected.is_empty() {
        format!("unknown {noun} \"{given}\"{sep} there are none")
    } else {
        format!(
            "unknown {noun} \"{given}\"{sep} expected one of: {}",
            expected.join(", ")
        )
    }
}

fn enum_noun(name: &str) -> &'static str {
    match name {
        "AssertionSpec" => "assertion",
        _ => "value",
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

enum Frame {
    Seq {
        loc: Location,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        loc: Location,
        anchor: usize,
        pairs: Vec<(Node, Node)>,
        key: Option<Node>,
        seen: HashMap<String, Location>,
    },
}

struct Anchored {
    node: Node,
    size: usize,
    depth: usize,
}

struct Builder<'l> {
    limits: &'l Limits,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    total: usize,
    root: Option<Node>,
}

fn subtree_size(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 1,
        NodeKind::Seq(items) => 1 + items.iter().map(subtree_size).sum::<usize>(),
        NodeKind::Map(pairs) => {
            1 + pairs
                .iter()
                .map(|(k, v)| subtree_size(k) + subtree_size(v))
                .sum::<usize>()
        }
    }
}

fn subtree_depth(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 0,
        NodeKind::Seq(items) => 1 + items.iter().map(subtree_depth).max().unwrap_or(0),
        NodeKind::Map(pairs) => {
            1 + pairs
                .iter()
                .map(|(k, v)| subtree_depth(k).max(subtree_depth(v)))
                .max()
                .unwrap_or(0)
        }
    }
}

impl Builder<'_> {
    fn count(&mut self, n: usize, loc: Location) -> Result<(), Error> {
        self.total = self.total.saturating_add(n);
        if self.total > self.limits.max_nodes {
            return Err(Error::new(
                loc,
                format!(
                    "document too large after alias expansion (more than {} nodes)",
                    self.limits.max_nodes
                ),
            ));
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame, loc: Location) -> Result<(), Error> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(Error::new(
                loc,
                format!(
                    "document nested too deeply (more than {} levels)",
                    self.limits.max_depth
                ),
            ));
        }
        self.count(1, loc)?;
        self.stack.push(frame);
        Ok(())
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    size: subtree_size(node),
                    depth: subtree_depth(node),
                },
            );
        }
    }

    fn finish(&mut self, node: Node) -> Result<(), Error> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                pairs, key, seen, ..
            }) => {
                if let Some(k) = key.take() {
                    pairs.push((k, node));
                    return Ok(());
                }
                if let NodeKind::Scalar { value, quoted } = &node.kind {
                    if !quoted && value == "<<" {
                        return Err(Error::new(node.loc, "merge keys (<<) are not supported"));
                    }
                    if let Some(first) = seen.get(value) {
                        return Err(Error::new(
                            node.loc,
                            format!("duplicate key \"{value}\" (first at {first})"),
                        ));
                    }
                    seen.insert(value.clone(), node.loc);
                }
                *key = Some(node);
                Ok(())
            }
        }
    }

    fn close(&mut self, loc: Location) -> Result<(), Error> {
        let (node, anchor) = match self.stack.pop() {
            Some(Frame::Seq { loc, anchor, items }) => (
                Node {
                    loc,
                    kind: NodeKind::Seq(items),
                },
                anchor,
            ),
            Some(Frame::Map {
                loc, anchor, pairs, ..
            }) => (
                Node {
                    loc,
                    kind: NodeKind::Map(pairs),
                },
                anchor,
            ),
            None => return Err(Error::new(loc, "unbalanced YAML events")),
        };
        self.remember(anchor, &node);
        self.finish(node)
    }
}

fn check_tag(tag: Option<&saphyr_parser::Tag>, loc: Location) -> Result<bool, Error> {
    match tag {
        None => Ok(false),
        Some(t) if t.is_yaml_core_schema() => Ok(t.suffix == "str"),
        Some(_) => Err(Error::new(loc, "YAML tags are not supported")),
    }
}

/// Parses one YAML document into a located node tree.
pub fn parse(src: &str, limits: &Limits) -> Result<Node, Error> {
    let mut b = Builder {
        limits,
        stack: Vec::new(),
        anchors: HashMap::new(),
        total: 0,
        root: None,
    };
    let mut documents = 0usize;
    for item in Parser::new_from_str(src) {
        let (event, span) = item.map_err(|e| {
            Error::new(
                Location {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                },
                e.info().to_string(),
            )
        })?;
        let loc = Location::from_span(&span);
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(Error::new(
                        loc,
                        "only one YAML document is allowed per file",
                    ));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let forced_str = check_tag(tag.as_deref(), loc)?;
                b.count(1, loc)?;
                if b.stack.len() >= limits.max_depth {
                    return Err(Error::new(
                        loc,
                        format!(
                            "document nested too deeply (more than {} levels)",
                            limits.max_depth
                        ),
                    ));
                }
                let node = Node {
                    loc,
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        quoted: forced_str || style != ScalarStyle::Plain,
                    },
                };
                b.remember(anchor, &node);
                b.finish(node)?;
            }
            Event::SequenceStart(anchor, tag) => {
                check_tag(tag.as_deref(), loc)?;
                b.open(
                    Frame::Seq {
                        loc,
                        anchor,
                        items: Vec::new(),
                    },
                    loc,
                )?;
            }
            Event::MappingStart(anchor, tag) => {
                check_tag(tag.as_deref(), loc)?;
                b.open(
                    Frame::Map {
                        loc,
                        anchor,
                        pairs: Vec::new(),
                        key: None,
                        seen: HashMap::new(),
                    },
                    loc,
                )?;
            }
            Event::SequenceEnd | Event::MappingEnd => b.close(loc)?,
            Event::Alias(id) => {
                let Some(a) = b.anchors.get(&id) else {
                    return Err(Error::new(loc, "unknown alias"));
                };
                let (size, depth) = (a.size, a.depth);
                b.count(size, loc)?;
                if b.stack.len() + depth >= limits.max_depth {
                    return Err(Error::new(
                        loc,
                        format!(
                            "document nested too deeply (more than {} levels)",
                            limits.max_depth
                        ),
                    ));
                }
                let node = b.anchors.get(&id).map(|a| a.node.clone());
                if let Some(node) = node {
                    b.finish(node)?;
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    let empty = Node {
        loc: Location { line: 1, col: 1 },
        kind: NodeKind::Map(Vec::new()),
    };
    match b.root {
        None => Ok(empty),
        Some(node) if is_null(&node) => Ok(empty),
        Some(node) => Ok(node),
    }
}

// ---------------------------------------------------------------------------
// Scalar resolution (YAML 1.2 core schema)
// ---------------------------------------------------------------------------

fn is_null(node: &Node) -> bool {
    matches!(&node.kind, NodeKind::Scalar { value, quoted: false } if is_null_text(value))
}

fn is_null_text(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Integer per the core schema: decimal with optional sign, `0x`, `0o`.
fn parse_int(s: &str) -> Option<i128> {
    if let Some(hex) = s.strip_prefix("0x") {
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return i128::from_str_radix(hex, 16).ok();
        }
        return None;
    }
    if let Some(oct) = s.strip_prefix("0o") {
        if !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return i128::from_str_radix(oct, 8).ok();
        }
        return None;
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i128>().ok();
    }
    None
}

/// Float per the core schema (integers are accepted too).
fn parse_float(s: &str) -> Option<f64> {
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    let negative = s.starts_with('-');
    match unsigned {
        ".inf" | ".Inf" | ".INF" => {
            return Some(if negative {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            })
        }
        ".nan" | ".NaN" | ".NAN" if unsigned.len() == s.len() => return Some(f64::NAN),
        _ => {}
    }
    // [0-9]* ( . [0-9]* )? ( [eE] [-+]? [0-9]+ )? with at least one mantissa digit
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((a, b)) => (a, b),
        None => (mantissa, ""),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !all_digits(int_part) || !all_digits(frac_part) {
        return None;
    }
    if let Some(exp) = exponent {
        let e = exp.strip_prefix(['-', '+']).unwrap_or(exp);
        if e.is_empty() || !all_digits(e) {
            return None;
        }
    }
    s.parse::<f64>().ok()
}

fn describe_node(node: &Node) -> String {
    match &node.kind {
        NodeKind::Scalar { .. } if is_null(node) => "null".to_string(),
        NodeKind::Scalar { value, .. } => format!("a string {value:?}"),
        NodeKind::Seq(_) => "a list".to_string(),
        NodeKind::Map(_) => "a mapping".to_string(),
    }
}

// ---------------------------------------------------------------------------
// Deserializer
// ---------------------------------------------------------------------------

/// A lazily rendered path from the document root.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Path::Root => {}
            Path::Key(parent, key) => {
                parent.write(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Path::Index(parent, i) => {
                parent.write(out);
                out.push_str(&format!("[{i}]"));
            }
        }
    }
}

fn key_text(node: &Node) -> &str {
    match &node.kind {
        NodeKind::Scalar { value, .. } => value,
        _ => "?",
    }
}

struct De<'a> {
    node: &'a Node,
    path: &'a Path<'a>,
    /// Set for the deserializer handed to a `Lenient` visitor: an error is
    /// recorded in the sink and replaced by the recovery marker.
    lenient: bool,
}

impl<'a> De<'a> {
    fn new(node: &'a Node, path: &'a Path<'a>) -> Self {
        De {
            node,
            path,
            lenient: false,
        }
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error {
            loc: Some(self.node.loc),
            path: self.path.render(),
            message: message.into(),
        }
    }

    fn finish<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        let r = r.map_err(|e| e.attach(self.node.loc, self.path));
        match r {
            Err(e) if self.lenient && !e.is_recovered_marker() => {
                push_error(e);
                Err(Error::msg(RECOVERED_MARKER))
            }
            other => other,
        }
    }

    fn mismatch(&self, expected: &str) -> Error {
        self.err(format!(
            "expected {expected}, found {}",
            describe_node(self.node)
        ))
    }

    /// Scalar text usable as a string (null excluded).
    fn text(&self, expected: &str) -> Result<&'a str, Error> {
        match &self.node.kind {
            NodeKind::Scalar { value, .. } if !is_null(self.node) => Ok(value),
            _ => Err(self.mismatch(expected)),
        }
    }

    fn int<T: TryFrom<i128>>(&self, expected: &str) -> Result<T, Error> {
        let s = match &self.node.kind {
            NodeKind::Scalar { value, .. } if !is_null(self.node) => value.trim(),
            _ => return Err(self.mismatch(expected)),
        };
        let n =
            parse_int(s).ok_or_else(|| self.err(format!("expected {expected}, found {s:?}")))?;
        T::try_from(n).map_err(|_| self.err(format!("integer {s} is out of range for {expected}")))
    }

    fn float(&self) -> Result<f64, Error> {
        let s = match &self.node.kind {
            NodeKind::Scalar { value, .. } if !is_null(self.node) => value.trim(),
            _ => return Err(self.mismatch("a number")),
        };
        parse_float(s).ok_or_else(|| self.err(format!("expected a number, found {s:?}")))
    }

    fn any<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            NodeKind::Scalar {
                value,
                quoted: true,
            } => visitor.visit_str(value),
            NodeKind::Scalar { value, .. } => {
                if is_null_text(value) {
                    visitor.visit_unit()
                } else if let Some(b) = parse_bool(value) {
                    visitor.visit_bool(b)
                } else if let Some(n) = parse_int(value) {
                    if let Ok(n) = i64::try_from(n) {
                        visitor.visit_i64(n)
                    } else if let Ok(n) = u64::try_from(n) {
                        visitor.visit_u64(n)
                    } else {
                        visitor.visit_str(value)
                    }
                } else if let Some(f) = parse_float(value) {
                    visitor.visit_f64(f)
                } else {
                    visitor.visit_str(value)
                }
            }
            NodeKind::Seq(_) => self.seq(visitor),
            NodeKind::Map(_) => self.map(visitor),
        }
    }

    fn seq<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            NodeKind::Seq(items) => {
                let mut access = SeqDe {
                    items,
                    index: 0,
                    path: self.path,
                };
                let v = visitor.visit_seq(&mut access)?;
                Ok(v)
            }
            _ => Err(self.mismatch("a list")),
        }
    }

    fn map<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            NodeKind::Map(pairs) => visitor.visit_map(MapDe {
                pairs,
                index: 0,
                path: self.path,
                fields: None,
            }),
            _ => Err(self.mismatch("a mapping")),
        }
    }

    /// A struct: keys that name no field are reported (with a suggestion) and skipped, so
    /// the rest of the struct is still read and checked. Every spec type denies unknown
    /// fields, so this reports exactly what serde would, without stopping there.
    fn struct_map<'de, V: Visitor<'de>>(
        &self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let NodeKind::Map(pairs) = &self.node.kind else {
            return Err(self.mismatch("a mapping"));
        };
        // Fields that a misspelt key was probably meant to be: their "missing field" error
        // would only repeat the "did you mean" already reported.
        let present = |f: &str| {
            pairs
                .iter()
                .any(|(k, _)| matches!(&k.kind, NodeKind::Scalar { value, .. } if value == f))
        };
        let typo_for: Vec<&str> = pairs
            .iter()
            .filter_map(|(k, _)| match &k.kind {
                NodeKind::Scalar { value, .. } if !fields.contains(&value.as_str()) => {
                    suggest(value, fields)
                }
                _ => None,
            })
            .filter(|f| !present(f))
            .collect();
        let r = visitor.visit_map(MapDe {
            pairs,
            index: 0,
            path: self.path,
            fields: (!fields.is_empty()).then_some(fields),
        });
        match r {
            Err(e)
                if typo_for
                    .iter()
                    .any(|f| e.message == format!("missing field \"{f}\"")) =>
            {
                Err(Error::msg(RECOVERED_MARKER))
            }
            other => other,
        }
    }

    fn lenient_newtype<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        STATE.with(|s| s.borrow_mut().lenient_active += 1);
        let inner = De {
            node: self.node,
            path: self.path,
            lenient: true,
        };
        let r = visitor.visit_newtype_struct(inner);
        let pending = STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.lenient_active -= 1;
            s.pending.take()
        });
        if let Some(message) = pending {
            push_error(self.err(message));
        }
        r
    }

    fn spanned<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(SpannedDe {
            de: De::new(self.node, self.path),
            stage: 0,
        })
    }

    fn enum_<'de, V: Visitor<'de>>(&self, name: &str, visitor: V) -> Result<V::Value, Error> {
        let noun = enum_noun(name);
        match &self.node.kind {
            NodeKind::Scalar { .. } if !is_null(self.node) => visitor.visit_enum(EnumDe {
                key: self.node,
                value: None,
                path: self.path,
                noun,
            }),
            NodeKind::Map(pairs) if pairs.len() == 1 => {
                let (k, v) = &pairs[0];
                visitor.visit_enum(EnumDe {
                    key: k,
                    value: Some(v),
                    path: self.path,
                    noun,
                })
            }
            NodeKind::Map(pairs) => {
                let keys: Vec<&str> = pairs.iter().map(|(k, _)| key_text(k)).collect();
                Err(self.err(format!(
                    "expected a single key naming the {noun}, found {} keys{}{}",
                    pairs.len(),
                    if keys.is_empty() { "" } else { ": " },
                    keys.join(", ")
                )))
            }
            _ => Err(self.mismatch(&format!("the name of a {noun}"))),
        }
    }
}

macro_rules! forward_int {
    ($($method:ident $visit:ident $ty:ty, $expected:literal;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                let r = self.int::<$ty>($expected).and_then(|n| visitor.$visit(n));
                self.finish(r)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for De<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.any(visitor);
        self.finish(r)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.text("a boolean").and_then(|s| {
            parse_bool(s.trim())
                .ok_or_else(|| self.err(format!("expected a boolean, found {s:?}")))
                .and_then(|b| visitor.visit_bool(b))
        });
        self.finish(r)
    }

    forward_int! {
        deserialize_i8 visit_i8 i8, "a signed 8-bit integer";
        deserialize_i16 visit_i16 i16, "a signed 16-bit integer";
        deserialize_i32 visit_i32 i32, "a signed 32-bit integer";
        deserialize_i64 visit_i64 i64, "a signed 64-bit integer";
        deserialize_i128 visit_i128 i128, "a signed 128-bit integer";
        deserialize_u8 visit_u8 u8, "an unsigned 8-bit integer";
        deserialize_u16 visit_u16 u16, "an unsigned 16-bit integer";
        deserialize_u32 visit_u32 u32, "an unsigned 32-bit integer";
        deserialize_u64 visit_u64 u64, "an unsigned 64-bit integer";
        deserialize_u128 visit_u128 u128, "an unsigned 128-bit integer";
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.float().and_then(|f| visitor.visit_f32(f as f32));
        self.finish(r)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.float().and_then(|f| visitor.visit_f64(f));
        self.finish(r)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.text("a single character").and_then(|s| {
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => visitor.visit_char(c),
                _ => Err(self.err(format!("expected a single character, found {s:?}"))),
            }
        });
        self.finish(r)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.text("a string").and_then(|s| visitor.visit_str(s));
        self.finish(r)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self
            .text("a string")
            .and_then(|s| visitor.visit_bytes(s.as_bytes()));
        self.finish(r)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = if is_null(self.node) {
            visitor.visit_none()
        } else {
            visitor.visit_some(De::new(self.node, self.path))
        };
        self.finish(r)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = if is_null(self.node) {
            visitor.visit_unit()
        } else {
            Err(self.mismatch("null"))
        };
        self.finish(r)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let r = if name == LENIENT_NAME {
            self.lenient_newtype(visitor)
        } else {
            visitor.visit_newtype_struct(De::new(self.node, self.path))
        };
        self.finish(r)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.seq(visitor);
        self.finish(r)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.map(visitor);
        self.finish(r)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let r = if name == SPANNED_NAME {
            self.spanned(visitor)
        } else {
            self.struct_map(fields, visitor)
        };
        self.finish(r)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let r = self.enum_(name, visitor);
        self.finish(r)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = match &self.node.kind {
            NodeKind::Scalar { value, .. } => visitor.visit_str(value),
            _ => Err(self.mismatch("a name")),
        };
        self.finish(r)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = visitor.visit_unit();
        self.finish(r)
    }
}

struct SeqDe<'a> {
    items: &'a [Node],
    index: usize,
    path: &'a Path<'a>,
}

impl<'de> SeqAccess<'de> for SeqDe<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(node) = self.items.get(self.index) else {
            return Ok(None);
        };
        let path = Path::Index(self.path, self.index);
        self.index += 1;
        seed.deserialize(De::new(node, &path))
            .map(Some)
            .map_err(|e| e.attach(node.loc, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.index)
    }
}

struct MapDe<'a> {
    pairs: &'a [(Node, Node)],
    index: usize,
    path: &'a Path<'a>,
    /// For structs: the field names; other keys are reported and skipped.
    fields: Option<&'static [&'static str]>,
}

impl<'de> MapAccess<'de> for MapDe<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(mut key) = self.pairs.get(self.index).map(|(k, _)| k) else {
            return Ok(None);
        };
        if let Some(fields) = self.fields {
            while let NodeKind::Scalar { value, .. } = &key.kind {
                if fields.contains(&value.as_str()) {
                    break;
                }
                let path = Path::Key(self.path, key_text(key));
                push_error(
                    <Error as de::Error>::unknown_field(value, fields).attach(key.loc, &path),
                );
                self.index += 1;
                match self.pairs.get(self.index) {
                    Some((k, _)) => key = k,
                    None => return Ok(None),
                }
            }
        }
        let path = Path::Key(self.path, key_text(key));
        seed.deserialize(De::new(key, &path))
            .map(Some)
            .map_err(|e| e.attach(key.loc, &path))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((key, value)) = self.pairs.get(self.index) else {
            return Err(Error::msg("value requested past the end of a mapping"));
        };
        self.index += 1;
        let path = Path::Key(self.path, key_text(key));
        seed.deserialize(De::new(value, &path))
            .map_err(|e| e.attach(value.loc, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.pairs.len() - self.index)
    }
}

struct EnumDe<'a> {
    key: &'a Node,
    value: Option<&'a Node>,
    path: &'a Path<'a>,
    noun: &'static str,
}

impl<'de, 'a> EnumAccess<'de> for EnumDe<'a> {
    type Error = Error;
    type Variant = VariantDe<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let path = Path::Key(self.path, key_text(self.key));
        STATE.with(|s| s.borrow_mut().enum_noun.push(self.noun));
        let r = seed.deserialize(De::new(self.key, &path));
        STATE.with(|s| s.borrow_mut().enum_noun.pop());
        let v = r.map_err(|e| e.attach(self.key.loc, &path))?;
        Ok((
            v,
            VariantDe {
                key: self.key,
                value: self.value,
                path: self.path,
            },
        ))
    }
}

struct VariantDe<'a> {
    key: &'a Node,
    value: Option<&'a Node>,
    path: &'a Path<'a>,
}

impl VariantDe<'_> {
    fn with_value<T>(&self, f: impl FnOnce(De<'_>) -> Result<T, Error>) -> Result<T, Error> {
        let path = Path::Key(self.path, key_text(self.key));
        match self.value {
            Some(node) => f(De::new(node, &path)).map_err(|e| e.attach(node.loc, &path)),
            None => Err(Error {
                loc: Some(self.key.loc),
                path: path.render(),
                message: format!(
                    "\"{}\" needs a value: write it as a mapping `{}: ...`",
                    key_text(self.key),
                    key_text(self.key)
                ),
            }),
        }
    }
}

impl<'de> VariantAccess<'de> for VariantDe<'_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.value {
            None => Ok(()),
            Some(node) if is_null(node) => Ok(()),
            Some(node) => {
                let path = Path::Key(self.path, key_text(self.key));
                Err(Error {
                    loc: Some(node.loc),
                    path: path.render(),
                    message: format!(
                        "\"{}\" takes no value, found {}",
                        key_text(self.key),
                        describe_node(node)
                    ),
                })
            }
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        self.with_value(|de| seed.deserialize(de))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.with_value(|de| de.deserialize_seq(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.with_value(|de| de.deserialize_map(visitor))
    }
}

struct SpannedDe<'a> {
    de: De<'a>,
    stage: usize,
}

impl<'de> MapAccess<'de> for SpannedDe<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match SPANNED_FIELDS.get(self.stage) {
            Some(name) => seed.deserialize(name.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let stage = self.stage;
        self.stage += 1;
        let loc = self.de.node.loc;
        match stage {
            0 => seed.deserialize((loc.line as u64).into_deserializer()),
            1 => seed.deserialize((loc.col as u64).into_deserializer()),
            _ => seed
                .deserialize(De::new(self.de.node, self.de.path))
                .map_err(|e| e.attach(loc, self.de.path)),
        }
    }
}

// ---------------------------------------------------------------------------
// Deserialize impls for the wrapper types
// ---------------------------------------------------------------------------

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpannedVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for SpannedVisitor<T> {
            type Value = Spanned<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value with its source location")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Spanned<T>, A::Error> {
                let mut line = None;
                let mut col = None;
                let mut value = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        SPANNED_LINE => line = Some(map.next_value::<u64>()?),
                        SPANNED_COL => col = Some(map.next_value::<u64>()?),
                        SPANNED_VALUE => value = Some(map.next_value::<T>()?),
                        other => {
                            return Err(de::Error::unknown_field(other, SPANNED_FIELDS));
                        }
                    }
                }
                let (Some(line), Some(col), Some(value)) = (line, col, value) else {
                    return Err(de::Error::custom(
                        "Spanned<T> can only be read by the Portcullis YAML deserializer",
                    ));
                };
                Ok(Spanned {
                    loc: Location {
                        line: usize::try_from(line).unwrap_or(usize::MAX),
                        col: usize::try_from(col).unwrap_or(usize::MAX),
                    },
                    value,
                })
            }
        }

        deserializer.deserialize_struct(
            SPANNED_NAME,
            SPANNED_FIELDS,
            SpannedVisitor(std::marker::PhantomData),
        )
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LenientVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for LenientVisitor<T> {
            type Value = Lenient<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }

            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Lenient<T>, D::Error> {
                match T::deserialize(deserializer) {
                    Ok(v) => Ok(Lenient(Some(v))),
                    Err(e) => {
                        let message = e.to_string();
                        if message == RECOVERED_MARKER {
                            // Already recorded, with its location, by our deserializer.
                            return Ok(Lenient(None));
                        }
                        let recorded = STATE.with(|s| {
                            let mut s = s.borrow_mut();
                            if s.lenient_active > 0 {
                                s.pending = Some(message);
                                true
                            } else {
                                false
                            }
                        });
                        if recorded {
                            Ok(Lenient(None))
                        } else {
                            Err(e)
                        }
                    }
                }
            }
        }

        deserializer
            .deserialize_newtype_struct(LENIENT_NAME, LenientVisitor(std::marker::PhantomData))
    }
}

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

#[cfg(test)]
#[allow(dead_code)] // test structs exist to be deserialized, not read
mod tests {
    use super::*;
    use serde::Deserialize;

    fn load<T: DeserializeOwned>(src: &str) -> Result<T, Vec<Error>> {
        let node = parse(src, &Limits::default()).map_err(|e| vec![e])?;
        from_node(&node)
    }

    fn first_err<T: DeserializeOwned + fmt::Debug>(src: &str) -> Error {
        let errs = load::<T>(src).expect_err("expected an error");
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs[0].clone()
    }

    fn at(line: usize, col: usize) -> Option<Location> {
        Some(Location { line, col })
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ApiKey {
        header: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Hmac {
        secret: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    enum AssertionSpec {
        RequireApiKey(ApiKey),
        RequireHmac(Hmac),
        AllowAll,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Service {
        name: String,
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        request: Vec<AssertionSpec>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        services: Vec<Service>,
    }

    #[test]
    fn unknown_field_points_at_key_with_suggestion() {
        let src = "services:\n  - name: a\n    requst: []\n";
        let e = first_err::<Config>(src);
        assert_eq!(e.loc, at(3, 5));
        assert_eq!(e.path, "services[0].requst");
        assert_eq!(
            e.message,
            "unknown field \"requst\"; did you mean \"request\"?"
        );
        assert_eq!(
            e.to_string(),
            "3:5: services[0].requst: unknown field \"requst\"; did you mean \"request\"?"
        );
        let e = first_err::<Config>("services:\n  - name: a\n    zzz: 1\n");
        assert_eq!(
            e.message,
            "unknown field \"zzz\"; expected one of: name, port, request"
        );
    }

    #[test]
    fn bad_enum_variant_in_list_item() {
        let src = "services:\n  - name: a\n  - name: b\n    request:\n      - allow_all\n      - requre_hmac: {secret: s}\n";
        let e = first_err::<Config>(src);
        assert_eq!(e.loc, at(6, 9));
        assert_eq!(e.path, "services[1].request[1].requre_hmac");
        assert_eq!(
            e.message,
            "unknown assertion \"requre_hmac\"; did you mean \"require_hmac\"?"
        );
    }

    #[test]
    fn nested_path_text() {
        let src = "services:\n  - name: a\n  - name: b\n    request:\n      - require_api_key:\n          header: 5\n          extra: x\n";
        let e = first_err::<Config>(src);
        assert_eq!(e.path, "services[1].request[0].require_api_key.extra");
        assert_eq!(e.loc, at(7, 11));
    }

    #[test]
    fn enum_map_with_two_keys() {
        let src = "services:\n  - name: a\n    request:\n      - {allow_all: ~, require_hmac: {secret: s}}\n";
        let e = first_err::<Config>(src);
        assert_eq!(e.loc, at(4, 9));
        assert_eq!(
            e.message,
            "expected a single key naming the assertion, found 2 keys: allow_all, require_hmac"
        );
    }

    #[derive(Debug)]
    struct Port(u16);

    impl TryFrom<String> for Port {
        type Error = String;
        fn try_from(s: String) -> Result<Self, String> {
            match s.parse::<u16>() {
                Ok(p) if p != 0 => Ok(Port(p)),
                _ => Err(format!("invalid port {s:?}")),
            }
        }
    }

    impl<'de> Deserialize<'de> for Port {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let s = String::deserialize(d)?;
            Port::try_from(s).map_err(de::Error::custom)
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(try_from = "String")]
    struct Name(String);

    impl TryFrom<String> for Name {
        type Error = String;
        fn try_from(s: String) -> Result<Self, String> {
            if s.contains(' ') {
                Err(format!("name {s:?} must not contain spaces"))
            } else {
                Ok(Name(s))
            }
        }
    }

    #[derive(Debug, Deserialize)]
    struct Listener {
        name: Name,
        port: Port,
    }

    #[test]
    fn try_from_error_points_at_value() {
        let e = first_err::<Listener>("name: ok\nport:   \"0\"\n");
        assert_eq!(e.loc, at(2, 9));
        assert_eq!(e.path, "port");
        assert_eq!(e.message, "invalid port \"0\"");
        let e = first_err::<Listener>("port: 80\nname:  a b\n");
        assert_eq!(e.loc, at(2, 8));
        assert_eq!(e.message, "name \"a b\" must not contain spaces");
    }

    #[test]
    fn missing_field_points_at_mapping() {
        let src = "services:\n  - name: a\n  - port: 80\n";
        let e = first_err::<Config>(src);
        assert_eq!(e.loc, at(3, 5));
        assert_eq!(e.path, "services[1]");
        assert_eq!(e.message, "missing field \"name\"");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LenientService {
        name: String,
        #[serde(default)]
        request: Vec<Lenient<AssertionSpec>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LenientConfig {
        services: Vec<Lenient<LenientService>>,
    }

    #[test]
    fn lenient_collects_errors_in_order() {
        let src = "\
services:
  - name: a
    request:
      - require_api_key: {header: X-Api-Key}
      - require_api_key: {hedaer: X}
      - allow_all
      - requre_hmac: {secret: s}
  - name: b
    request:
      - require_hmac: {secret: [1]}
  - name: c
";
        let errs = load::<LenientConfig>(src).expect_err("errors");
        let summary: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            summary,
            vec![
                "5:27: services[0].request[1].require_api_key.hedaer: unknown field \"hedaer\"; did you mean \"header\"?",
                "7:9: services[0].request[3].requre_hmac: unknown assertion \"requre_hmac\"; did you mean \"require_hmac\"?",
                "10:32: services[1].request[0].require_hmac.secret: expected a string, found a list",
            ]
        );
    }

    #[test]
    fn lenient_ok_and_try_from_recovery() {
        #[derive(Debug, Deserialize)]
        struct Ports {
            ports: Vec<Lenient<Port>>,
        }
        let errs = load::<Ports>("ports: [80, 0, 443, x]\n").expect_err("errors");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].loc, at(1, 13));
        assert_eq!(errs[0].path, "ports[1]");
        assert_eq!(errs[1].loc, at(1, 21));
        let node = parse("ports: [80, 443]", &Limits::default()).expect("parse");
        let ok: Ports = from_node(&node).expect("ok");
        let ports: Vec<u16> = ok
            .ports
            .iter()
            .filter_map(|p| p.0.as_ref().map(|p| p.0))
            .collect();
        assert_eq!(ports, vec![80, 443]);
    }

    #[test]
    fn spanned_location() {
        #[derive(Debug, Deserialize)]
        struct S {
            a: Spanned<String>,
            b: Vec<Spanned<u32>>,
        }
        let s: S = load("a: hello\nb:\n  - 1\n  -   22\n").expect("ok");
        assert_eq!(s.a.loc, Location { line: 1, col: 4 });
        assert_eq!(&*s.a, "hello");
        assert_eq!(s.b[1].loc, Location { line: 4, col: 7 });
        assert_eq!(s.b[1].value, 22);
        // errors inside a Spanned value keep their location
        let e = first_err::<S>("a: x\nb: [1, nope]\n");
        assert_eq!(e.loc, at(2, 8));
        assert_eq!(e.path, "b[1]");
    }

    #[test]
    fn aliases_are_expanded() {
        #[derive(Debug, Deserialize)]
        struct S {
            base: ApiKey,
            other: ApiKey,
        }
        let s: S = load("base: &k {header: X-Key}\nother: *k\n").expect("ok");
        assert_eq!(s.other.header, "X-Key");
    }

    #[test]
    fn billion_laughs_refused() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            src.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = parse(&src, &Limits::default()).expect_err("refused");
        assert!(
            e.message
                .contains("document too large after alias expansion"),
            "{e}"
        );
        assert!(e.loc.is_some());
    }

    #[test]
    fn depth_limit() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let e = parse(&deep, &Limits::default()).expect_err("too deep");
        assert!(e.message.contains("nested too deeply"), "{e}");
        assert!(parse(
            &deep,
            &Limits {
                max_depth: 200,
                max_nodes: 1000
            }
        )
        .is_ok());
    }

    #[test]
    fn duplicate_keys_refused() {
        let e = parse("a: 1\nb:\n  c: 1\n  c: 2\n", &Limits::default()).expect_err("dup");
        assert_eq!(e.loc, at(4, 3));
        assert_eq!(e.message, "duplicate key \"c\" (first at 3:3)");
    }

    #[test]
    fn parse_level_rules() {
        let l = Limits::default();
        let e = parse("a: 1\n---\nb: 2\n", &l).expect_err("two docs");
        assert_eq!(e.loc, at(2, 1));
        let e = parse("a: !custom x\n", &l).expect_err("tag");
        assert_eq!(e.message, "YAML tags are not supported");
        let e = parse("base: &b {x: 1}\nc:\n  <<: *b\n", &l).expect_err("merge");
        assert_eq!(e.message, "merge keys (<<) are not supported");
        assert_eq!(e.loc, at(3, 3));
        let e = parse("a: [1, 2\n", &l).expect_err("scan");
        assert!(e.loc.is_some());
        let n = parse("", &l).expect("empty");
        assert!(matches!(n.kind, NodeKind::Map(ref m) if m.is_empty()));
        assert_eq!(n.loc, Location { line: 1, col: 1 });
        let n = parse("# only a comment\n", &l).expect("empty");
        assert!(matches!(n.kind, NodeKind::Map(ref m) if m.is_empty()));
        let n = parse("a: !!str 12\n", &l).expect("core tag");
        let v: serde_json::Value = from_node(&n).expect("ok");
        assert_eq!(v, serde_json::json!({"a": "12"}));
    }

    #[test]
    fn core_schema_scalars() {
        let src = "\
n1: null
n2: ~
n3:
n4: NULL
b1: true
b2: False
i1: 42
i2: -7
i3: 0x1F
i4: 0o17
i5: 18446744073709551615
f1: 1.5
f2: -.inf
f3: 1e3
s1: hello
s2: \"123\"
s3: 'true'
s4: 1.2.3
s5: yes
l: [1, a]
m: {k: v}
";
        let v: serde_json::Value = load(src).expect("ok");
        assert_eq!(
            v,
            serde_json::json!({
                "n1": null, "n2": null, "n3": null, "n4": null,
                "b1": true, "b2": false,
                "i1": 42, "i2": -7, "i3": 31, "i4": 15, "i5": 18446744073709551615u64,
                "f1": 1.5, "f2": null, "f3": 1000.0,
                "s1": "hello", "s2": "123", "s3": "true", "s4": "1.2.3", "s5": "yes",
                "l": [1, "a"], "m": {"k": "v"}
            })
        );
        #[derive(Debug, Deserialize)]
        struct F {
            x: f64,
        }
        let f: F = load("x: .NaN").expect("nan");
        assert!(f.x.is_nan());
        let f: F = load("x: -.inf").expect("inf");
        assert_eq!(f.x, f64::NEG_INFINITY);
    }

    #[test]
    fn quoted_numbers_into_string_and_u16() {
        #[derive(Debug, Deserialize)]
        struct S {
            s: String,
            p: u16,
        }
        let v: S = load("s: \"123\"\np: \"8080\"\n").expect("ok");
        assert_eq!((v.s.as_str(), v.p), ("123", 8080));
        let v: S = load("s: 123\np: 8080\n").expect("ok");
        assert_eq!((v.s.as_str(), v.p), ("123", 8080));
        let e = first_err::<S>("s: x\np: abc\n");
        assert_eq!(
            e.message,
            "expected an unsigned 16-bit integer, found \"abc\""
        );
        assert_eq!(e.loc, at(2, 4));
        let e = first_err::<S>("s: x\np: 70000\n");
        assert_eq!(
            e.message,
            "integer 70000 is out of range for an unsigned 16-bit integer"
        );
        let e = first_err::<S>("s: ~\np: 1\n");
        assert_eq!(e.message, "expected a string, found null");
        let e = first_err::<S>("s: {a: 1}\np: 1\n");
        assert_eq!(e.message, "expected a string, found a mapping");
    }

    #[test]
    fn option_handling() {
        #[derive(Debug, Deserialize)]
        struct S {
            a: Option<u32>,
            b: Option<String>,
            #[serde(default)]
            c: Option<String>,
            d: Option<String>,
        }
        let v: S = load("a: ~\nb: \"\"\nd: null\n").expect("ok");
        assert_eq!(v.a, None);
        assert_eq!(v.b.as_deref(), Some(""));
        assert_eq!(v.c, None);
        assert_eq!(v.d, None);
        let v: S = load("a: 3\nb: x\nd: 'null'\n").expect("ok");
        assert_eq!(v.a, Some(3));
        assert_eq!(v.d.as_deref(), Some("null"));
    }

    #[test]
    fn enum_shapes() {
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(rename_all = "snake_case")]
        enum E {
            Unit,
            New(u8),
            Tup(u8, u8),
            St { a: u8 },
        }
        let v: Vec<E> =
            load("- unit\n- unit: ~\n- new: 1\n- tup: [1, 2]\n- st: {a: 3}\n").expect("ok");
        assert_eq!(
            v,
            vec![E::Unit, E::Unit, E::New(1), E::Tup(1, 2), E::St { a: 3 }]
        );
        let e = first_err::<Vec<E>>("- uint\n");
        assert_eq!(e.message, "unknown value \"uint\"; did you mean \"unit\"?");
    }
}
