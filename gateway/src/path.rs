//! The request path as the gateway routes and forwards it.
//!
//! A prefix match on the raw path is only as good as the upstream's agreement about what
//! the path means. Upstreams decode percent-escapes, collapse `//`, cut `;` parameters
//! (Java servlet containers) or trailing dots (IIS) before they look up a resource, so
//! `/widgets/%61dmin`, `/widgets//admin`, `/widgets;x/admin` and `/widgets/admin.` can all
//! reach `/widgets/admin` behind a router that saw something else. Here every request path
//! is put in one canonical form (RFC 3986 §6.2.2: percent-escapes of unreserved characters
//! decoded, the hex of the others upper-cased), routing reads a key with the
//! stack-dependent forms taken out, and the canonical form is what goes upstream. Forms
//! whose meaning differs between common upstream stacks are refused unless the service
//! that the routing key selects says its upstream reads them (see [`PathForms`]).

use std::borrow::Cow;

/// Forms of a path that common upstream stacks read differently. A service opts in to the
/// ones its upstream is known to handle; otherwise a request holding one is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathForms {
    /// `;` path parameters (`/a;jsessionid=1/b`), raw or as `%3B`.
    pub parameters: bool,
    /// Empty segments (`/a//b`); a single trailing `/` is not one.
    pub empty_segments: bool,
    /// A segment ending in `.` or an encoded space (`/admin.`, `/admin%20`).
    pub trailing_dots: bool,
}

impl PathForms {
    /// True when `self` holds a form `allowed` does not.
    #[must_use]
    pub fn exceeds(self, allowed: PathForms) -> bool {
        (self.parameters && !allowed.parameters)
            || (self.empty_segments && !allowed.empty_segments)
            || (self.trailing_dots && !allowed.trailing_dots)
    }

    /// Names of the forms present, for a refusal's detail.
    #[must_use]
    pub fn describe(self) -> String {
        let names: Vec<&str> = [
            (self.parameters, "';' path parameters"),
            (self.empty_segments, "empty segments ('//')"),
            (self.trailing_dots, "a segment ending in a dot or space"),
        ]
        .iter()
        .filter(|(present, _)| *present)
        .map(|(_, name)| *name)
        .collect();
        names.join(", ")
    }
}

/// Why a path is refused whatever the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    /// `%` not followed by two hex digits.
    MalformedEscape,
    /// An encoded `/`, `\`, NUL or control character, or a raw `\`: upstreams disagree on
    /// whether it separates segments.
    EncodedSeparator,
    /// A `.` or `..` segment (also encoded, or hidden behind parameters or trailing dots).
    DotSegment,
    /// An encoded `%` followed by two hex digits (`%2561`): an upstream that decodes twice
    /// reads another path than one that decodes once.
    DoubleEncoded,
    /// Not an origin-form path.
    NotAbsolute,
}

impl PathRefusal {
    #[must_use]
    pub fn detail(self) -> &'static str {
        match self {
            PathRefusal::MalformedEscape => {
                "the request path has a '%' that is not followed by two hex digits"
            }
            PathRefusal::EncodedSeparator => {
                "the request path holds an encoded slash, backslash, NUL or control character, or a backslash"
            }
            PathRefusal::DotSegment => "the request path contains '.' or '..' segments",
            PathRefusal::DoubleEncoded => {
                "the request path holds an encoded '%' followed by two hex digits (double encoding)"
            }
            PathRefusal::NotAbsolute => "the request path does not start with '/'",
        }
    }
}

/// A request path in the gateway's canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath<'a> {
    /// Unreserved characters decoded, other escapes upper-cased: what goes upstream.
    pub forwarded: Cow<'a, str>,
    /// `forwarded` with parameters cut, empty segments dropped and trailing dots and
    /// spaces trimmed from each segment: what the router matches.
    pub routing: Cow<'a, str>,
    /// Which stack-dependent forms `forwarded` holds.
    pub forms: PathForms,
}

/// RFC 3986 unreserved characters: decoding their escapes never changes a URI's meaning.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Puts `raw` (the path of an origin-form request target) in canonical form.
///
/// Allocates only when the path holds a percent-escape, a parameter, an empty segment or a
/// trailing dot; the common path is borrowed twice.
///
/// # Errors
/// A [`PathRefusal`] for paths no upstream may be trusted to read as the router did.
pub fn canonicalize(raw: &str) -> Result<CanonicalPath<'_>, PathRefusal> {
    if !raw.starts_with('/') {
        return Err(PathRefusal::NotAbsolute);
    }
    let forwarded = decode_unreserved(raw)?;
    let (forms, routing) = routing_key(&forwarded)?;
    let routing = match (routing, &forwarded) {
        (None, Cow::Borrowed(borrowed)) => Cow::Borrowed(*borrowed),
        (None, Cow::Owned(owned)) => Cow::Owned(owned.clone()),
        (Some(key), _) => Cow::Owned(key),
    };
    Ok(CanonicalPath {
        forwarded,
        routing,
        forms,
    })
}

/// Decodes escapes of unreserved characters and upper-cases the hex of the others.
fn decode_unreserved(raw: &str) -> Result<Cow<'_, str>, PathRefusal> {
    let bytes = raw.as_bytes();
    if bytes.contains(&b'\\') {
        return Err(PathRefusal::EncodedSeparator);
    }
    let Some(first_escape) = bytes.iter().position(|&b| b == b'%') else {
        return Ok(Cow::Borrowed(raw));
    };
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first_escape]);
    let mut index = first_escape;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte != b'%' {
            out.push(byte);
            index += 1;
            continue;
        }
        let high = bytes.get(index + 1).copied().and_then(hex_value);
        let low = bytes.get(index + 2).copied().and_then(hex_value);
        let (Some(high), Some(low)) = (high, low) else {
            return Err(PathRefusal::MalformedEscape);
        };
        let decoded = high << 4 | low;
        if decoded == b'/' || decoded == b'\\' || decoded.is_ascii_control() {
            return Err(PathRefusal::EncodedSeparator);
        }
        if decoded == b'%'
            && bytes.get(index + 3).copied().and_then(hex_value).is_some()
            && bytes.get(index + 4).copied().and_then(hex_value).is_some()
        {
            return Err(PathRefusal::DoubleEncoded);
        }
        if is_unreserved(decoded) {
            out.push(decoded);
        } else {
            out.extend_from_slice(&[
                b'%',
                UPPER_HEX[usize::from(high)],
                UPPER_HEX[usize::from(low)],
            ]);
        }
        index += 3;
    }
    // Only ASCII bytes were written: the input was a str and escapes stay escaped unless
    // they decode to ASCII unreserved characters.
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PathRefusal::MalformedEscape)
}

/// A segment's parts as stacks read them.
struct Segment<'a> {
    /// Before any `;` parameter.
    before_params: &'a str,
    /// `before_params` with trailing dots and encoded spaces trimmed.
    core: &'a str,
    has_params: bool,
    trailing_dots: bool,
}

impl Segment<'_> {
    /// `.`, `..`, `..;x`, `...`, `.%20`: each is a dot segment to some stack.
    fn is_dots(&self) -> bool {
        self.before_params.contains('.')
            && self
                .before_params
                .split("%20")
                .all(|piece| piece.bytes().all(|b| b == b'.'))
    }
}

/// One segment with its parameters cut and trailing dots and encoded spaces trimmed.
fn segment_core(segment: &str) -> Segment<'_> {
    let param_at = segment
        .find(';')
        .into_iter()
        .chain(segment.find("%3B"))
        .min();
    let (before_params, has_params) = match param_at {
        Some(at) => (&segment[..at], true),
        None => (segment, false),
    };
    let mut core = before_params;
    loop {
        if let Some(rest) = core.strip_suffix('.') {
            core = rest;
        } else if let Some(rest) = core.strip_suffix("%20") {
            core = rest;
        } else {
            break;
        }
    }
    Segment {
        before_params,
        core,
        has_params,
        trailing_dots: core.len() != before_params.len(),
    }
}

/// The routing key of a canonical path, `None` when it is the path itself.
fn routing_key(path: &str) -> Result<(PathForms, Option<String>), PathRefusal> {
    let mut forms = PathForms::default();
    // Segments after the leading '/'; the last one is empty for a trailing slash.
    let segments = || path[1..].split('/').enumerate();
    let last = path[1..].bytes().filter(|&b| b == b'/').count();
    let mut changed = false;
    for (position, segment) in segments() {
        let parts = segment_core(segment);
        if segment.is_empty() && position != last {
            forms.empty_segments = true;
            changed = true;
        }
        forms.parameters |= parts.has_params;
        forms.trailing_dots |= parts.trailing_dots;
        changed |= parts.has_params || parts.trailing_dots;
        if parts.is_dots() {
            return Err(PathRefusal::DotSegment);
        }
    }
    if !changed {
        return Ok((forms, None));
    }
    let mut key = String::with_capacity(path.len());
    for (position, segment) in segments() {
        let core = segment_core(segment).core;
        if core.is_empty() && position != last {
            continue;
        }
        key.push('/');
        key.push_str(core);
    }
    if key.is_empty() {
        key.push('/');
    }
    Ok((forms, Some(key)))
}

/// Case-sensitive or ASCII case-insensitive comparison of a route's prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathCase {
    #[default]
    Sensitive,
    /// For upstreams that look paths up without regard to letter case (IIS, some
    /// Windows-hosted and Java stacks).
    Insensitive,
}

/// True when the routing key `path` lies inside `prefix` on a segment boundary.
#[must_use]
pub fn prefix_matches(prefix: &str, path: &str, case: PathCase) -> bool {
    if prefix == "/" {
        return true;
    }
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    let equal = match case {
        PathCase::Sensitive => head == prefix,
        PathCase::Insensitive => head.eq_ignore_ascii_case(prefix),
    };
    if !equal {
        return false;
    }
    let rest = &path[prefix.len()..];
    rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/')
}

/// How many segments a route prefix spans (`/` none, `/a/b` and `/a/b/` two).
#[must_use]
pub fn segment_count(prefix: &str) -> usize {
    prefix.split('/').filter(|s| !s.is_empty()).count()
}

/// `forwarded` without its first `segments` segments (as the routing key counts them:
/// empty segments are not counted), for `strip_prefix`. Parameters on a stripped segment go
/// with it.
#[must_use]
pub fn strip_segments(forwarded: &str, segments: usize) -> &str {
    if segments == 0 {
        return forwarded;
    }
    let mut seen = 0;
    // Index of the '/' in front of the segment being looked at.
    let mut slash = 0;
    for segment in forwarded.split('/').skip(1) {
        let end = slash + 1 + segment.len();
        if !segment_core(segment).core.is_empty() {
            seen += 1;
            if seen == segments {
                return forwarded.get(end..).unwrap_or_default();
            }
        }
        slash = end;
    }
    ""
}

#[cfg(test)]
mod tests;
