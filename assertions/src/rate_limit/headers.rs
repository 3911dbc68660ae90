//! The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-11): the
//! policies a step enforces (`RateLimit-Policy: "per-second";q=10;w=1`) and what a request
//! left of each (`RateLimit: "per-second";r=9;t=1`), as Structured Field lists.
//!
//! Policy names are checked when the policy is compiled ([`valid_policy_name`]), so they go
//! out as Structured Field strings without escaping.

use std::fmt::Write as _;
use std::time::Duration;

use http::HeaderValue;

use crate::gcra::Decision;

/// The `RateLimit-Policy` field name.
pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
/// The `RateLimit` field name.
pub const RATELIMIT: &str = "ratelimit";

/// A name a policy may carry: what a Structured Field string holds without escaping and a
/// log line shows as is (letters, digits, `-`, `_`, `.`), 1 to 64 of them.
#[must_use]
pub fn valid_policy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// One quota policy item: `"name";q=QUOTA;w=WINDOW`, plus the burst as a vendor parameter
/// when it differs from the quota (the draft lets servers add prefixed parameters).
#[must_use]
pub fn policy_item(name: &str, quota: u64, window: Duration, burst: u64) -> String {
    let mut item = format!("\"{name}\";q={quota};w={}", window.as_secs().max(1));
    if burst != quota {
        let _ = write!(item, ";portcullis-burst={burst}");
    }
    item
}

/// The `RateLimit-Policy` value for a list of items (`None` for an empty list).
#[must_use]
pub fn policy_field(items: &[String]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// The `RateLimit` value: for each policy, the quota left (`r`) and the seconds until the
/// bucket is full again (`t`, rounded up so a client waiting that long finds it full).
#[must_use]
pub fn limit_field<'a>(
    named: impl Iterator<Item = (&'a str, &'a Decision)>,
    out: &mut String,
) -> Option<HeaderValue> {
    out.clear();
    for (name, decision) in named {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(
            out,
            "\"{name}\";r={};t={}",
            decision.remaining,
            whole_seconds(decision.reset_after)
        );
    }
    HeaderValue::from_str(out).ok()
}

/// Seconds, rounded up: `Retry-After` and `t` must never promise too early.
#[must_use]
pub fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Structured Field list of items with integer or string parameters, parsed the way
    /// RFC 8941 §4.2 reads one (enough of it to check what we send).
    fn parse_list(field: &str) -> Vec<(String, Vec<(String, String)>)> {
        field
            .split(',')
            .map(|member| {
                let mut parts = member.trim().split(';');
                let name = parts.next().expect("item");
                assert!(name.starts_with('"') && name.ends_with('"'), "{name}");
                let params = parts
                    .map(|param| {
                        let (key, value) = param.split_once('=').expect("param");
                        assert!(key
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b == b'-' || b.is_ascii_digit()));
                        (key.to_owned(), value.to_owned())
                    })
                    .collect();
                (name.trim_matches('"').to_owned(), params)
            })
            .collect()
    }

    #[test]
    fn the_drafts_policy_examples_come_out_as_written() {
        // Section 3.2: `RateLimit-Policy: "default";q=100;w=10` and two policies.
        let one = policy_item("default", 100, Duration::from_secs(10), 100);
        assert_eq!(
            policy_field(&[one]).expect("field"),
            "\"default\";q=100;w=10"
        );
        let two = [
            policy_item("permin", 50, Duration::from_secs(60), 50),
            policy_item("perhr", 1000, Duration::from_secs(3600), 1000),
        ];
        let field = policy_field(&two).expect("field");
        assert_eq!(field, "\"permin\";q=50;w=60, \"perhr\";q=1000;w=3600");
        let parsed = parse_list(field.to_str().expect("ascii"));
        assert_eq!(parsed[1].0, "perhr");
        assert_eq!(parsed[1].1[0], ("q".to_owned(), "1000".to_owned()));
    }

    #[test]
    fn the_drafts_limit_example_comes_out_as_written() {
        // Section 4.2: `RateLimit: "default";r=50;t=30`.
        let decision = Decision {
            allowed: true,
            remaining: 50,
            reset_after: Duration::from_millis(29_200),
            retry_after: None,
            new_tat: Some(1),
        };
        let mut buffer = String::new();
        let field = limit_field([("default", &decision)].into_iter(), &mut buffer);
        assert_eq!(field.expect("field"), "\"default\";r=50;t=30");
    }

    #[test]
    fn a_burst_beside_the_quota_is_a_vendor_parameter() {
        let item = policy_item("per-second", 10, Duration::from_secs(1), 20);
        assert_eq!(item, "\"per-second\";q=10;w=1;portcullis-burst=20");
        let parsed = parse_list(&item);
        assert_eq!(parsed[0].1.len(), 3);
    }

    #[test]
    fn names_that_would_need_escaping_are_not_policy_names() {
        assert!(valid_policy_name("per-second.v2_a"));
        for bad in ["", "a\"b", "a b", "a,b", "a;b", "é", &"x".repeat(65)] {
            assert!(!valid_policy_name(bad), "{bad}");
        }
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001)), 3);
    }
}
