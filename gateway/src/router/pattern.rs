//! Path patterns: literal segments and `{name}` parameters, matched as a prefix on segment
//! boundaries or exactly.
//!
//! A pattern is written in the same canonical form request paths are routed in
//! ([`crate::path`]), so `/orders/{id}` sees `/orders/%34%32` as `/orders/42`. A parameter
//! stands for one whole, non-empty segment; a segment is either all literal or one
//! parameter, so there is no question of where a parameter ends.

use crate::path::PathCase;

/// Most parameters one pattern may name.
pub const MAX_PARAMS: usize = 16;
/// Most segments one pattern may have: it bounds how deep a lookup backtracks.
pub const MAX_SEGMENTS: usize = 32;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(Box<str>),
    /// `{name}`: any one non-empty segment.
    Param(Box<str>),
}

/// How a pattern's last segment ends the match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tail {
    /// The path ends where the pattern does (`path_match: exact`).
    Exact,
    /// A prefix written with a trailing `/` (`/files/`): more must follow, even if only
    /// the `/`, so `/files` itself is not matched.
    PrefixWithMore,
    /// A prefix: the path ends here or continues with more segments.
    Prefix,
}

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub segments: Vec<Segment>,
    pub tail: Tail,
    pub case: PathCase,
}

impl Pattern {
    /// Parses a pattern already in canonical form. `exact` chooses [`Tail::Exact`].
    ///
    /// # Errors
    /// What is wrong with the pattern, for `check`.
    pub fn parse(text: &str, exact: bool, case: PathCase) -> Result<Pattern, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("path \"{text}\" must start with /"));
        };
        let mut segments: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let tail = if exact {
            Tail::Exact
        } else if segments.last() == Some(&"") {
            // `/files/` as a prefix: the `/` is the "more" that must follow `files`.
            segments.pop();
            Tail::PrefixWithMore
        } else {
            Tail::Prefix
        };
        if segments.len() > MAX_SEGMENTS {
            return Err(format!(
                "path \"{text}\" has {} segments; at most {MAX_SEGMENTS} are allowed",
                segments.len()
            ));
        }
        let last = segments.len().saturating_sub(1);
        let mut parsed = Vec::with_capacity(segments.len());
        let mut names: Vec<&str> = Vec::new();
        for (index, segment) in segments.iter().enumerate() {
            // Only an exact pattern's last segment may be empty (`/files/` exactly).
            if segment.is_empty() && !(exact && index == last) {
                return Err(format!("path \"{text}\" has an empty segment"));
            }
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if !valid_param_name(name) {
                    return Err(format!(
                        "parameter {{{name}}} in \"{text}\": a name is a letter or _ followed by letters, digits or _"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!("parameter {{{name}}} appears twice in \"{text}\""));
                }
                names.push(name);
                parsed.push(Segment::Param(name.into()));
            } else if segment.contains(['{', '}']) {
                return Err(format!(
                    "segment \"{segment}\" of \"{text}\": a parameter takes a whole segment, like /orders/{{id}}"
                ));
            } else {
                parsed.push(Segment::Literal((*segment).into()));
            }
        }
        if names.len() > MAX_PARAMS {
            return Err(format!(
                "path \"{text}\" names {} parameters; at most {MAX_PARAMS} are allowed",
                names.len()
            ));
        }
        Ok(Pattern {
            segments: parsed,
            tail,
            case,
        })
    }

    /// The parameters' names, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Param(name) => Some(&**name),
            Segment::Literal(_) => None,
        })
    }

    /// The pattern as written (canonical form), for messages.
    #[must_use]
    pub fn display(&self) -> String {
        let mut text = String::new();
        for segment in &self.segments {
            text.push('/');
            match segment {
                Segment::Literal(literal) => text.push_str(literal),
                Segment::Param(name) => {
                    text.push('{');
                    text.push_str(name);
                    text.push('}');
                }
            }
        }
        if text.is_empty() || self.tail == Tail::PrefixWithMore {
            text.push('/');
        }
        text
    }

    /// A key equal for two patterns exactly when they have the same shape: the same tail,
    /// parameters in the same places, and literals equal without regard to letter case.
    /// Patterns that share a shape can match the same request at the same precedence.
    #[must_use]
    pub fn shape(&self) -> (Tail, Vec<Option<String>>) {
        let segments = self
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(literal) => Some(literal.to_ascii_lowercase()),
                Segment::Param(_) => None,
            })
            .collect();
        (self.tail, segments)
    }

    /// For two patterns of the same shape: whether one request path can match both, i.e.
    /// their literals are equal, or equal but for letter case where one of them ignores
    /// case.
    #[must_use]
    pub fn overlaps(&self, other: &Pattern) -> bool {
        let either_insensitive =
            self.case == PathCase::Insensitive || other.case == PathCase::Insensitive;
        self.segments
            .iter()
            .zip(&other.segments)
            .all(|pair| match pair {
                (Segment::Literal(mine), Segment::Literal(theirs)) => {
                    mine == theirs || (either_insensitive && mine.eq_ignore_ascii_case(theirs))
                }
                _ => true,
            })
    }

    /// How many leading path segments a match spans (what `strip_prefix` removes).
    #[must_use]
    pub fn segment_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|segment| !matches!(segment, Segment::Literal(l) if l.is_empty()))
            .count()
    }
}

fn valid_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The segments of a routing key: `/` has none, `/a/` has `a` and an empty one.
pub fn path_segments(path: &str) -> impl Iterator<Item = &str> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let mut segments = rest.split('/');
    if rest.is_empty() {
        // `split` yields one empty item for an empty string; the root has no segment.
        segments.next();
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Pattern {
        Pattern::parse(text, false, PathCase::Sensitive).expect(text)
    }

    #[test]
    fn literals_params_and_tails() {
        let p = parse("/orders/{id}/items");
        assert_eq!(p.params().collect::<Vec<_>>(), ["id"]);
        assert_eq!(p.tail, Tail::Prefix);
        assert_eq!(p.display(), "/orders/{id}/items");
        assert_eq!(parse("/files/").tail, Tail::PrefixWithMore);
        assert_eq!(parse("/files/").display(), "/files/");
        assert_eq!(parse("/").segments, Vec::new());
        assert_eq!(parse("/").display(), "/");
        let exact = Pattern::parse("/files/", true, PathCase::Sensitive).expect("exact");
        assert_eq!(exact.tail, Tail::Exact);
        assert_eq!(exact.segments.len(), 2);
        assert_eq!(exact.segment_count(), 1);
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for (text, why) in [
            ("orders", "must start with /"),
            ("/a/{id}/b/{id}", "appears twice"),
            ("/a/{1d}", "a name is a letter"),
            ("/a/{}", "a name is a letter"),
            ("/a/x{id}", "takes a whole segment"),
            ("/a/{id", "takes a whole segment"),
            ("/a//b", "empty segment"),
        ] {
            let error = Pattern::parse(text, false, PathCase::Sensitive).expect_err(text);
            assert!(error.contains(why), "{text}: {error}");
        }
        let deep = "/a".repeat(MAX_SEGMENTS + 1);
        assert!(Pattern::parse(&deep, false, PathCase::Sensitive).is_err());
    }

    #[test]
    fn shapes_and_overlap() {
        let sensitive = parse("/Orders/{id}");
        let other_name = parse("/orders/{order}");
        assert_eq!(sensitive.shape(), other_name.shape());
        assert!(!sensitive.overlaps(&other_name));
        let insensitive =
            Pattern::parse("/orders/{id}", false, PathCase::Insensitive).expect("valid");
        assert!(sensitive.overlaps(&insensitive));
        assert_ne!(parse("/orders").shape(), parse("/orders/").shape());
    }

    #[test]
    fn segments_of_paths() {
        assert_eq!(path_segments("/").count(), 0);
        assert_eq!(path_segments("/a/").collect::<Vec<_>>(), ["a", ""]);
        assert_eq!(path_segments("/a/b").collect::<Vec<_>>(), ["a", "b"]);
    }
}
