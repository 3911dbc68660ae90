//! A case's expectations against what the gateway did: one line per difference, saying
//! what was expected and what happened.

use http::HeaderMap;

use super::simulate::{Decision, Outcome};
use super::spec::{ExpectSpec, MessageExpectSpec, VerdictSpec};

/// Every way `outcome` differs from `expect`; empty when the case passes.
#[must_use]
pub fn differences(expect: &ExpectSpec, outcome: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    let (status, code, step) = match &outcome.decision {
        Decision::Denied {
            status, code, step, ..
        } => (Some(*status), Some(*code), *step),
        _ => (None, None, None),
    };
    if let Some(verdict) = expect.verdict {
        let got = match &outcome.decision {
            Decision::Allowed => "allow".to_owned(),
            Decision::Denied { .. } => "deny".to_owned(),
            Decision::Answered(by) => format!("answered ({by})"),
        };
        let wanted = match verdict {
            VerdictSpec::Allow => "allow",
            VerdictSpec::Deny => "deny",
            VerdictSpec::Answered => "answered",
        };
        if got.split(' ').next() != Some(wanted) {
            out.push(format!("verdict: expected {wanted}, got {got}"));
        }
    }
    if let Some(wanted) = expect.status {
        let got = outcome.response.as_ref().map(|r| r.status).or(status);
        if got != Some(wanted) {
            out.push(format!("status: expected {wanted}, got {}", show(got)));
        }
    }
    if let Some(wanted) = &expect.problem {
        let wanted_code = wanted
            .strip_prefix("urn:portcullis:problem:")
            .unwrap_or(wanted);
        if code != Some(wanted_code) {
            out.push(format!(
                "problem: expected {wanted_code}, got {}",
                code.unwrap_or("(no refusal)")
            ));
        }
    }
    if let Some(wanted) = &expect.denied_by {
        if step != Some(wanted.as_str()) {
            out.push(format!(
                "denied_by: expected {wanted}, got {}",
                step.unwrap_or("(no step refused)")
            ));
        }
    }
    if let Some(wanted) = &expect.service {
        if outcome.service.as_deref() != Some(wanted.as_str()) {
            out.push(format!(
                "service: expected {wanted}, got {}",
                outcome.service.as_deref().unwrap_or("(none)")
            ));
        }
    }
    if let Some(wanted) = &expect.upstream {
        match &outcome.upstream {
            Some(sent) => {
                if let Some(path) = &wanted.path {
                    if &sent.target != path {
                        out.push(format!(
                            "upstream path: expected {path}, got {}",
                            sent.target
                        ));
                    }
                }
                message(&mut out, "upstream", wanted, &sent.headers, &sent.body);
            }
            None => out.push("upstream: expected a request upstream, none was sent".to_owned()),
        }
    }
    if let Some(wanted) = &expect.response {
        match &outcome.response {
            Some(answer) => {
                if let Some(status) = wanted.status {
                    if answer.status != status {
                        out.push(format!(
                            "response status: expected {status}, got {}",
                            answer.status
                        ));
                    }
                }
                message(&mut out, "response", wanted, &answer.headers, &answer.body);
            }
            None => out.push("response: expected an answer, the gateway wrote none".to_owned()),
        }
    }
    for (name, wanted) in &expect.variables {
        let got = outcome
            .variables
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        if got != Some(wanted.as_str()) {
            out.push(format!(
                "variable {name}: expected {wanted:?}, got {}",
                got.map_or_else(|| "(unset)".to_owned(), |v| format!("{v:?}"))
            ));
        }
    }
    for name in &expect.variables_unset {
        if let Some((_, value)) = outcome.variables.iter().find(|(n, _)| n == name) {
            out.push(format!("variable {name}: expected unset, got {value:?}"));
        }
    }
    out
}

fn show(status: Option<u16>) -> String {
    status.map_or_else(|| "(none)".to_owned(), |s| s.to_string())
}

fn message(
    out: &mut Vec<String>,
    what: &str,
    wanted: &MessageExpectSpec,
    headers: &HeaderMap,
    body: &[u8],
) {
    for (name, value) in &wanted.headers {
        let got: Vec<&str> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.to_str().unwrap_or("(not text)"))
            .collect();
        if !got.contains(&value.as_str()) {
            let credential =
                crate::capture::is_credential_header(name) || name.eq_ignore_ascii_case("cookie");
            out.push(format!(
                "{what} header {name}: expected {value:?}, got {}",
                match (got.is_empty(), credential) {
                    (true, _) => "(absent)".to_owned(),
                    // Never a credential in a report: only that it differs.
                    (false, true) => "another value (a credential: not shown)".to_owned(),
                    (false, false) => format!("{got:?}"),
                }
            ));
        }
    }
    for (name, part) in &wanted.headers_containing {
        let got: Vec<&str> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.to_str().unwrap_or("(not text)"))
            .collect();
        if !got.iter().any(|value| value.contains(part.as_str())) {
            let shown = if crate::capture::is_credential_header(name) {
                "another value (a credential: not shown)".to_owned()
            } else {
                format!("{got:?}")
            };
            out.push(format!(
                "{what} header {name}: expected to contain {part:?}, got {shown}"
            ));
        }
    }
    for name in &wanted.headers_present {
        if !headers.contains_key(name.as_str()) {
            out.push(format!("{what} header {name}: expected present, absent"));
        }
    }
    for name in &wanted.headers_absent {
        if let Some(value) = headers.get(name.as_str()) {
            let shown = if crate::capture::is_credential_header(name)
                || name.eq_ignore_ascii_case("cookie")
            {
                "present (a credential: not shown)".to_owned()
            } else {
                format!("{:?}", value.to_str().unwrap_or("(not text)"))
            };
            out.push(format!(
                "{what} header {name}: expected absent, got {shown}"
            ));
        }
    }
    let text = String::from_utf8_lossy(body);
    if let Some(body) = &wanted.body {
        if text != *body {
            out.push(format!("{what} body: expected {body:?}, got {text:?}"));
        }
    }
    for part in &wanted.body_contains {
        if !text.contains(part.as_str()) {
            out.push(format!(
                "{what} body: expected to contain {part:?}, got {text:?}"
            ));
        }
    }
    for part in &wanted.body_excludes {
        if text.contains(part.as_str()) {
            out.push(format!("{what} body: expected not to contain {part:?}"));
        }
    }
}
