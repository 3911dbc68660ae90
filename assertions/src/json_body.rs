//! `validate_json`: the request body must be well-formed JSON within a nesting limit.
//!
//! A JSON threat-protection step in front of services that parse JSON: a malformed or
//! absurdly nested body is refused at the edge instead of reaching the service's parser.
//! It reads the whole body, so it is also how a policy makes the body available before the
//! upstream is contacted.

use http::StatusCode;
use serde::de::IgnoredAny;

use crate::exchange::Exchange;
use crate::verdict::{Rejection, Verdict};
use crate::{Assertion, Needs, Request};

/// The compiled `validate_json` step.
#[derive(Debug)]
pub struct ValidateJson {
    max_depth: usize,
    allow_empty: bool,
}

impl ValidateJson {
    #[must_use]
    pub fn new(max_depth: usize, allow_empty: bool) -> Self {
        ValidateJson {
            max_depth,
            allow_empty,
        }
    }
}

/// The deepest nesting of arrays and objects, counted outside strings. Stops counting once
/// past `limit`.
fn depth(body: &[u8], limit: usize) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > limit {
                    return deepest;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn bad(detail: String) -> Verdict {
    Verdict::Reject(Rejection::new(
        StatusCode::BAD_REQUEST,
        "invalid-json",
        detail,
    ))
}

impl Assertion for ValidateJson {
    fn kind(&self) -> &'static str {
        "validate_json"
    }

    fn phases(&self) -> crate::Phases {
        crate::Phases::REQUEST
    }

    fn needs(&self) -> Needs {
        Needs::BODY
    }

    fn on_request(&self, req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        let body = req.body.unwrap_or_default();
        x.note(|| format!("body of {} bytes", body.len()));
        if body.trim_ascii().is_empty() {
            return if self.allow_empty {
                Verdict::Continue
            } else {
                bad("the request body is empty; a JSON document is required".to_owned())
            };
        }
        let deepest = depth(body, self.max_depth);
        if deepest > self.max_depth {
            return bad(format!(
                "the JSON body nests deeper than {} levels",
                self.max_depth
            ));
        }
        match serde_json::from_slice::<IgnoredAny>(body) {
            Ok(_) => Verdict::Continue,
            Err(e) => bad(format!("the request body is not valid JSON: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: &ValidateJson, body: &[u8]) -> Verdict {
        let (mut parts, ()) = http::Request::builder()
            .body(())
            .expect("request")
            .into_parts();
        a.on_request(
            &mut Request {
                head: &mut parts,
                body: Some(body),
            },
            &mut Exchange::default(),
        )
    }

    #[test]
    fn well_formed_passes_malformed_and_deep_fail() {
        let a = ValidateJson::new(3, true);
        assert!(check(&a, br#"{"a":[1,{"b":"[[[[[["}]}"#).is_continue());
        assert!(check(&a, b"").is_continue());
        let Verdict::Reject(r) = check(&a, br#"{"a":"#) else {
            panic!("malformed")
        };
        assert!(r.detail.contains("not valid JSON"), "{}", r.detail);
        let Verdict::Reject(r) = check(&a, b"[[[[1]]]]") else {
            panic!("deep")
        };
        assert!(r.detail.contains("deeper than 3"), "{}", r.detail);
        assert!(!check(&ValidateJson::new(3, false), b"  ").is_continue());
    }

    #[test]
    fn escaped_quotes_do_not_confuse_the_depth_count() {
        assert_eq!(depth(br#"{"a":"\"[[[["}"#, 10), 1);
    }
}
