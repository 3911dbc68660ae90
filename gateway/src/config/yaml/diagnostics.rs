//! Error messages: what was expected, what was found, and a suggestion where one is likely;
//! errors raised deep inside serde are collected here.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Default)]
pub(super) struct State {
    /// Errors recovered by `Lenient`, drained by `from_node`.
    pub(super) sink: Vec<Error>,
    /// How many `Lenient` values our deserializer is currently inside.
    pub(super) lenient_active: usize,
    /// Message of an error `Lenient` swallowed that did not come through our
    /// deserializer (e.g. a `try_from` validation failure).
    pub(super) pending: Option<String>,
    /// Nouns of the enums whose variant is being identified.
    pub(super) enum_noun: Vec<&'static str>,
}

thread_local! {
    pub(super) static STATE: RefCell<State> = RefCell::new(State::default());
}

pub(super) fn push_error(e: Error) {
    STATE.with(|s| s.borrow_mut().sink.push(e));
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

pub(super) fn describe_unexpected(u: &Unexpected<'_>) -> String {
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

pub(super) fn suggest<'a>(given: &str, candidates: &[&'a str]) -> Option<&'a str> {
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
pub(super) fn unknown_message(noun: &str, sep: char, given: &str, expected: &[&str]) -> String {
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

pub(super) fn enum_noun(name: &str) -> &'static str {
    match name {
        "AssertionSpec" => "assertion",
        "StepModeSpec" => "step mode",
        _ => "value",
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

pub(super) fn describe_node(node: &Node) -> String {
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
