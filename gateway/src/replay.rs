//! `portcullis replay`: recorded requests (the JSON-lines format of [`crate::capture`])
//! through two policies in this process, on the path `portcullis test` runs
//! ([`crate::policy_test::simulate`]); reports, per service and step, the requests whose
//! verdict or upstream headers differ, with counts and examples.
//!
//! Credentials in a capture are keyed hashes. A hash the operator can resolve (a value in
//! `--credentials` whose hash under `--capture-key` matches) is put back before the request
//! runs; a request still holding a hash cannot authenticate under either policy, so for it
//! only the steps before authentication are compared. Such requests are counted and named.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::http::RequestHeader;
use serde::Serialize;

use crate::capture::{CaptureKey, CapturedRequest, HASH_PREFIX};
use crate::clock::SettableClock;
use crate::config::Carry;
use crate::policy_test::simulate::{simulate, Decision, Outcome, SimRequest, StubAnswer};
use crate::runtime::Runtime;

/// Examples kept per group of changes.
const EXAMPLES: usize = 3;

/// A policy loaded for replay, with the clock its steps read.
pub struct ReplayPolicy {
    pub runtime: Runtime,
    clock: Arc<SettableClock>,
}

impl ReplayPolicy {
    /// Loads `path` as a dry run with a settable clock.
    ///
    /// # Errors
    /// Every problem with the policy.
    pub fn load(path: &std::path::Path) -> Result<ReplayPolicy, crate::config::InvalidPolicy> {
        let clock = Arc::new(SettableClock::default());
        let carry = Carry {
            clock: Some(clock.clone()),
            ..Carry::default()
        };
        let runtime = crate::config::load_dry_run_with(path, &carry)?;
        Ok(ReplayPolicy { runtime, clock })
    }
}

/// Hashes the operator can turn back into values.
#[derive(Debug, Default)]
pub struct Resolver {
    known: BTreeMap<String, String>,
}

impl Resolver {
    /// Each of `values` under `key`.
    #[must_use]
    pub fn new(key: &CaptureKey, values: &[String]) -> Resolver {
        Resolver {
            known: values.iter().map(|v| (key.hash(v), v.clone())).collect(),
        }
    }

    /// `text` with every hash it knows replaced; false when a hash remains.
    fn resolve(&self, text: &str) -> (String, bool) {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut resolved = true;
        while let Some(start) = rest.find(HASH_PREFIX) {
            out.push_str(&rest[..start]);
            let hash_len = HASH_PREFIX.len() + 32;
            let end = (start + hash_len).min(rest.len());
            let hash = &rest[start..end];
            match self.known.get(hash) {
                Some(value) => out.push_str(value),
                None => {
                    resolved = false;
                    out.push_str(hash);
                }
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        (out, resolved)
    }
}

/// One group of changed requests.
#[derive(Debug, Default, Serialize)]
pub struct ChangeGroup {
    pub count: usize,
    /// `line N: METHOD target: old → new`.
    pub examples: Vec<String>,
}

/// What replay found.
#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    pub requests: usize,
    /// Requests whose verdict or upstream headers differ.
    pub changed: usize,
    /// Requests whose verdict differs.
    pub verdict_changed: usize,
    /// Requests allowed by both whose upstream headers differ.
    pub headers_changed: usize,
    /// Requests that kept a credential hash nothing resolved.
    pub unresolved: usize,
    /// Lines that are not captured requests.
    pub malformed: Vec<String>,
    /// By service, then step or `upstream headers`, then the change.
    pub groups: BTreeMap<String, BTreeMap<String, ChangeGroup>>,
    #[serde(skip)]
    pub elapsed: Duration,
}

impl ReplayReport {
    /// Requests per second over the run.
    #[must_use]
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn note(&mut self, service: &str, at: String, what: &str, example: String) {
        let group = self
            .groups
            .entry(service.to_owned())
            .or_default()
            .entry(format!("{at}: {what}"))
            .or_default();
        group.count += 1;
        if group.examples.len() < EXAMPLES {
            group.examples.push(example);
        }
    }

    /// The text report.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "replayed {} request(s) in {:.3}s ({:.0} requests/s)",
            self.requests,
            self.elapsed.as_secs_f64(),
            self.throughput()
        );
        let _ = writeln!(
            out,
            "changed: {} request(s) ({} verdict, {} upstream headers)",
            self.changed, self.verdict_changed, self.headers_changed
        );
        for (service, groups) in &self.groups {
            let _ = writeln!(out, "service {service}:");
            for (what, group) in groups {
                let _ = writeln!(out, "  {what}: {} request(s)", group.count);
                for example in &group.examples {
                    let _ = writeln!(out, "    e.g. {example}");
                }
            }
        }
        if self.unresolved > 0 {
            let _ = writeln!(
                out,
                "unresolved credentials: {} request(s) carried a hashed credential that no --credentials value matched; they cannot authenticate under either policy, so only the steps before authentication were compared for them",
                self.unresolved
            );
        }
        for line in &self.malformed {
            let _ = writeln!(out, "skipped: {line}");
        }
        out
    }
}

/// Replays every line of `lines` (a capture file's text) through both policies.
pub async fn replay(
    old: &ReplayPolicy,
    new: &ReplayPolicy,
    lines: &str,
    resolver: &Resolver,
) -> ReplayReport {
    let started = Instant::now();
    let mut report = ReplayReport::default();
    let stub = StubAnswer::default();
    for (index, line) in lines.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let captured = match parse_line(line) {
            Ok(captured) => captured,
            Err(e) => {
                report.malformed.push(format!("line {number}: {e}"));
                continue;
            }
        };
        let (request, resolved) = match build(&captured, resolver) {
            Ok(built) => built,
            Err(e) => {
                report.malformed.push(format!("line {number}: {e}"));
                continue;
            }
        };
        report.requests += 1;
        report.unresolved += usize::from(!resolved);
        old.clock.set(captured.time);
        new.clock.set(captured.time);
        let second = SimRequest {
            head: request.head.clone(),
            body: request.body.clone(),
            peer: request.peer,
            https: request.https,
        };
        let before = simulate(&old.runtime, request, &stub).await;
        let after = simulate(&new.runtime, second, &stub).await;
        let example = format!("line {number}: {} {}", captured.method, captured.target);
        compare(&mut report, &before, &after, example);
    }
    report.elapsed = started.elapsed();
    report
}

/// A capture line: a captured request, or an access-log line of capture mode (the request
/// under `request`).
fn parse_line(line: &str) -> Result<CapturedRequest, String> {
    let mut value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let from_access_log = value.get("ts").is_some();
    let request = match value.get_mut("request") {
        Some(request) if from_access_log => request.take(),
        _ => value,
    };
    serde_json::from_value(request).map_err(|e| e.to_string())
}

fn build(captured: &CapturedRequest, resolver: &Resolver) -> Result<(SimRequest, bool), String> {
    let (target, mut resolved) = resolver.resolve(&captured.target);
    let mut head = RequestHeader::build(captured.method.as_str(), target.as_bytes(), None)
        .map_err(|e| format!("not a request line: {e}"))?;
    head.set_version(http::Version::HTTP_11);
    for (name, value) in &captured.headers {
        let (value, ok) = resolver.resolve(value);
        resolved &= ok;
        head.append_header(name.clone(), value.as_str())
            .map_err(|e| format!("header {name}: {e}"))?;
    }
    let body = captured.body_bytes()?;
    let peer: IpAddr = captured.peer;
    Ok((
        SimRequest {
            head,
            body,
            peer,
            https: captured.https,
        },
        resolved,
    ))
}

fn verdict_text(outcome: &Outcome) -> String {
    match &outcome.decision {
        Decision::Allowed => "allow".to_owned(),
        Decision::Denied { status, code, .. } => format!("deny {status} {code}"),
        Decision::Answered(by) => format!("answered by {by}"),
    }
}

/// Where a refusal came from: `request[1] require_api_key`, or the front gates.
fn refusing_step(outcome: &Outcome) -> Option<String> {
    match &outcome.decision {
        Decision::Denied {
            step: Some(step), ..
        } => Some(match outcome.denied_step {
            Some(index) => format!("request[{index}] {step}"),
            None => (*step).to_owned(),
        }),
        Decision::Denied { step: None, .. } => Some("front gates".to_owned()),
        _ => None,
    }
}

fn compare(report: &mut ReplayReport, before: &Outcome, after: &Outcome, example: String) {
    let service = after
        .service
        .as_deref()
        .or(before.service.as_deref())
        .unwrap_or("(no service)")
        .to_owned();
    let (old_verdict, new_verdict) = (verdict_text(before), verdict_text(after));
    if old_verdict != new_verdict {
        report.changed += 1;
        report.verdict_changed += 1;
        // The step that now refuses, or the one that no longer does.
        let at = refusing_step(after)
            .or_else(|| refusing_step(before))
            .unwrap_or_else(|| "verdict".to_owned());
        let what = format!("{old_verdict} → {new_verdict}");
        report.note(&service, at, &what, example);
        return;
    }
    let (Some(old_up), Some(new_up)) = (&before.upstream, &after.upstream) else {
        return;
    };
    let mut names: Vec<String> = Vec::new();
    for name in old_up.headers.keys().chain(new_up.headers.keys()) {
        let differs = old_up
            .headers
            .get_all(name)
            .iter()
            .ne(new_up.headers.get_all(name).iter());
        if differs && !names.iter().any(|n| n == name.as_str()) {
            names.push(name.as_str().to_owned());
        }
    }
    if old_up.target != new_up.target {
        names.push("(target)".to_owned());
    }
    if names.is_empty() {
        return;
    }
    names.sort();
    report.changed += 1;
    report.headers_changed += 1;
    report.note(
        &service,
        "upstream headers".to_owned(),
        &names.join(", "),
        example,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hashes_resolve_and_unknown_ones_stay() {
        let key = CaptureKey::new(b"k");
        let resolver = Resolver::new(&key, &["demo-key-123".to_owned()]);
        let known = key.hash("demo-key-123");
        let (text, ok) = resolver.resolve(&format!("Bearer {known}"));
        assert_eq!(text, "Bearer demo-key-123");
        assert!(ok);
        let unknown = key.hash("other");
        let (text, ok) = resolver.resolve(&unknown);
        assert_eq!(text, unknown);
        assert!(!ok);
    }
}
