//! What a route may ask of a request beyond host and path: its method, a header's value, a
//! query parameter's value.
//!
//! A repeated header or parameter matches only when every copy has the value: the gateway
//! cannot know which copy the upstream reads, so a request carrying both `version=1` and
//! `version=2` does not get to pick the route it likes.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The parts of a request routing reads, borrowed from its head.
#[derive(Clone, Copy)]
pub struct RouteRequest<'a> {
    pub host: Option<&'a str>,
    /// The routing key ([`crate::path::CanonicalPath::routing`]).
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
}

/// A route's conditions; all must hold.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// `None`: any method.
    pub methods: Option<Box<[Method]>>,
    pub headers: Box<[(HeaderName, HeaderValue)]>,
    /// Decoded names and values.
    pub query: Box<[(Box<str>, Box<str>)]>,
}

impl Conditions {
    /// How specific the conditions are: one for a method list, one per header and per
    /// query parameter. Among routes with the same path, the higher count is tried first.
    #[must_use]
    pub fn specificity(&self) -> usize {
        usize::from(self.methods.is_some()) + self.headers.len() + self.query.len()
    }

    #[must_use]
    pub fn matches(&self, request: &RouteRequest<'_>) -> bool {
        if let Some(methods) = &self.methods {
            if !methods.contains(request.method) {
                return false;
            }
        }
        self.headers
            .iter()
            .all(|(name, value)| every_copy_is(request.headers.get_all(name).iter(), value))
            && self
                .query
                .iter()
                .all(|(name, value)| query_has(request.query, name, value))
    }

    /// Whether one request could meet both sets of conditions: the methods intersect and
    /// no header or parameter is required to have two different values.
    #[must_use]
    pub fn can_both_hold(&self, other: &Conditions) -> bool {
        let methods_meet = match (&self.methods, &other.methods) {
            (Some(mine), Some(theirs)) => mine.iter().any(|m| theirs.contains(m)),
            _ => true,
        };
        let headers_agree = self.headers.iter().all(|(name, value)| {
            other
                .headers
                .iter()
                .all(|(other_name, other_value)| other_name != name || other_value == value)
        });
        let query_agrees = self.query.iter().all(|(name, value)| {
            other
                .query
                .iter()
                .all(|(other_name, other_value)| other_name != name || other_value == value)
        });
        methods_meet && headers_agree && query_agrees
    }
}

fn every_copy_is<'a>(
    mut copies: impl Iterator<Item = &'a HeaderValue>,
    wanted: &HeaderValue,
) -> bool {
    let mut seen = false;
    copies.all(|copy| {
        seen = true;
        copy == wanted
    }) && seen
}

/// True when `name` occurs in the query and every occurrence has `value` (after percent
/// and `+` decoding, as form-reading upstreams see them).
fn query_has(query: Option<&str>, name: &str, value: &str) -> bool {
    let Some(query) = query else {
        return false;
    };
    let mut seen = false;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        if *form_decode(raw_name) != *name {
            continue;
        }
        if *form_decode(raw_value) != *value {
            return false;
        }
        seen = true;
    }
    seen
}

/// `application/x-www-form-urlencoded` decoding; borrows when there is nothing to decode.
/// A malformed escape stays as written (so it never equals a configured value with `%`
/// decoded).
pub fn form_decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains(['%', '+']) {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(index + 1..index + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(byte) = hex {
                    out.push(byte);
                    index += 2;
                } else {
                    out.push(b'%');
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(
        method: &'a Method,
        headers: &'a HeaderMap,
        query: Option<&'a str>,
    ) -> RouteRequest<'a> {
        RouteRequest {
            host: None,
            path: "/",
            method,
            headers,
            query,
        }
    }

    fn conditions(
        methods: Option<&[Method]>,
        headers: &[(&str, &str)],
        query: &[(&str, &str)],
    ) -> Conditions {
        Conditions {
            methods: methods.map(|m| m.into()),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        HeaderName::from_bytes(n.as_bytes()).expect("name"),
                        HeaderValue::from_str(v).expect("value"),
                    )
                })
                .collect(),
            query: query
                .iter()
                .map(|(n, v)| ((*n).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn every_condition_must_hold() {
        let wanted = conditions(
            Some(&[Method::GET]),
            &[("x-version", "2")],
            &[("format", "full text")],
        );
        assert_eq!(wanted.specificity(), 3);
        let mut headers = HeaderMap::new();
        headers.insert("x-version", HeaderValue::from_static("2"));
        assert!(wanted.matches(&request(&Method::GET, &headers, Some("format=full+text"))));
        assert!(wanted.matches(&request(
            &Method::GET,
            &headers,
            Some("a=1&format=full%20text")
        )));
        assert!(!wanted.matches(&request(&Method::POST, &headers, Some("format=full+text"))));
        assert!(!wanted.matches(&request(&Method::GET, &headers, Some("format=short"))));
        assert!(!wanted.matches(&request(&Method::GET, &headers, None)));
        assert!(!wanted.matches(&request(
            &Method::GET,
            &HeaderMap::new(),
            Some("format=full+text")
        )));
    }

    #[test]
    fn a_repeated_header_or_parameter_must_agree_everywhere() {
        let wanted = conditions(None, &[("x-version", "2")], &[("v", "2")]);
        let mut headers = HeaderMap::new();
        headers.append("x-version", HeaderValue::from_static("2"));
        assert!(wanted.matches(&request(&Method::GET, &headers, Some("v=2&v=2"))));
        assert!(!wanted.matches(&request(&Method::GET, &headers, Some("v=2&v=1"))));
        assert!(!wanted.matches(&request(&Method::GET, &headers, Some("v=1&v=2"))));
        headers.append("x-version", HeaderValue::from_static("1"));
        assert!(!wanted.matches(&request(&Method::GET, &headers, Some("v=2"))));
    }

    #[test]
    fn overlap_of_conditions() {
        let get = conditions(Some(&[Method::GET]), &[], &[]);
        let post = conditions(Some(&[Method::POST]), &[], &[]);
        let v2 = conditions(None, &[("x-version", "2")], &[]);
        let v3 = conditions(None, &[("x-version", "3")], &[]);
        assert!(!get.can_both_hold(&post));
        assert!(get.can_both_hold(&v2));
        assert!(!v2.can_both_hold(&v3));
        assert!(v2.can_both_hold(&conditions(None, &[], &[("v", "2")])));
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%20c"), "a b c");
        assert_eq!(form_decode("100%"), "100%");
        assert!(matches!(form_decode("plain"), Cow::Borrowed(_)));
    }
}
