//! `portcullis test`: golden cases kept beside a policy (a request, the upstream's stubbed
//! answer, what must happen), run in this process through the gateway's own compiled
//! pipeline and admission function ([`simulate`]), with a diff and the `eval` step trace
//! for each failure, JUnit output for CI, and a report of the steps and `any` branches no
//! case exercised. The format is in docs/policy-testing.md.
//!
//! - [`spec`]: the test-file format (YAML, JSON Schema).
//! - [`load`]: reading a test file, loading its policy with a settable clock and stand-ins.
//! - [`simulate`]: one request through a policy, without a network.
//! - [`expect`]: expectations against what happened.
//! - [`coverage`] and [`report`]: what is printed.

pub mod coverage;
pub mod expect;
pub mod load;
pub mod report;
pub mod simulate;
pub mod spec;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::SettableClock;
use crate::config::yaml::Location;
use crate::config::Diagnostic;
use coverage::PolicyCoverage;
use simulate::{simulate, Decision, Outcome};

/// How a run goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The time of every case that names none (seconds since the epoch), over the file's `at`.
    pub at: Option<u64>,
}

/// One case's result.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    pub loc: Location,
    /// What differed; empty when the case passed.
    pub failures: Vec<String>,
    /// What happened (decision, trace, variables), printed with a failure.
    pub detail: String,
    pub elapsed: Duration,
}

/// One test file's result.
#[derive(Debug)]
pub struct FileResult {
    pub path: PathBuf,
    /// The policy the file tests.
    pub policy: Option<PathBuf>,
    /// The file or its policy could not be read: nothing ran.
    pub errors: Vec<Diagnostic>,
    pub cases: Vec<CaseResult>,
    pub coverage: Option<PolicyCoverage>,
    pub elapsed: Duration,
}

impl FileResult {
    #[must_use]
    pub fn passed(&self) -> bool {
        self.errors.is_empty() && self.cases.iter().all(|c| c.failures.is_empty())
    }
}

/// The test files named by `paths`: files as given, folders searched (recursively, in
/// name order) for YAML files with a top-level `cases:` key.
///
/// # Errors
/// A path that does not exist.
pub fn collect_test_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut files).map_err(|e| format!("{}: {e}", path.display()))?;
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(format!("{}: no such file or folder", path.display()));
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, files)?;
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
            && load::looks_like_test_file(&path)
        {
            files.push(path);
        }
    }
    Ok(())
}

/// Runs every case of the test file at `path`.
pub async fn run_file(path: &Path, options: Options) -> FileResult {
    let started = Instant::now();
    let mut result = FileResult {
        path: path.to_path_buf(),
        policy: None,
        errors: Vec::new(),
        cases: Vec::new(),
        coverage: None,
        elapsed: Duration::ZERO,
    };
    let mut test = match load::read_test_file(path) {
        Ok(test) => test,
        Err(errors) => {
            result.errors = errors;
            return result;
        }
    };
    result.policy = Some(load::tidy(&test.policy));
    let default_time = options
        .at
        .or(test.spec.at.as_ref().map(|at| at.value))
        .unwrap_or_else(|| u64::try_from(crate::store::now_secs()).unwrap_or(0));
    let clock = Arc::new(SettableClock::at(default_time));
    let runtime = match load::load_policy(&mut test, &clock).await {
        Ok(runtime) => runtime,
        Err(errors) => {
            result.errors = errors;
            return result;
        }
    };
    let mut coverage = PolicyCoverage::of(&runtime);
    for case in &test.spec.cases {
        let case_started = Instant::now();
        let (failures, detail) = match run_case(&test, case, &runtime, &clock, default_time).await {
            Ok(outcome) => {
                coverage.record(&outcome);
                let failures = expect::differences(&case.expect, &outcome);
                let detail = if failures.is_empty() {
                    String::new()
                } else {
                    describe(&outcome)
                };
                (failures, detail)
            }
            Err((loc, message)) => (
                vec![format!("{}:{loc}: {message}", test.path.display())],
                String::new(),
            ),
        };
        result.cases.push(CaseResult {
            name: case.name.clone(),
            loc: case.loc,
            failures,
            detail,
            elapsed: case_started.elapsed(),
        });
    }
    result.coverage = Some(coverage);
    result.elapsed = started.elapsed();
    result
}

async fn run_case(
    test: &load::TestFile,
    case: &crate::config::yaml::Spanned<spec::CaseSpec>,
    runtime: &crate::runtime::Runtime,
    clock: &SettableClock,
    default_time: u64,
) -> Result<Outcome, (Location, String)> {
    let time = case
        .request
        .time
        .as_ref()
        .map_or(default_time, |time| time.value);
    clock.set(time);
    let stub = load::build_stub(test, case.upstream.as_ref())?;
    let repeat = case.repeat.as_ref().map_or(1, |r| r.value);
    if repeat == 0 {
        let loc = case.repeat.as_ref().map_or(case.loc, |r| r.loc);
        return Err((loc, "repeat: at least 1".to_owned()));
    }
    let interval = case.interval.unwrap_or(0);
    let mut last = None;
    for index in 0..repeat {
        clock.set(time.saturating_add(u64::from(index).saturating_mul(interval)));
        let request = load::build_request(test, case)?;
        last = Some(simulate(runtime, request, &stub).await);
    }
    last.ok_or((case.loc, "no request ran".to_owned()))
}

/// What happened, as printed beside a failure: the decision, the trace of each pipeline
/// (as `eval` prints it), the variables.
#[must_use]
pub fn describe(outcome: &Outcome) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "service: {}",
        outcome.service.as_deref().unwrap_or("(none)")
    );
    let _ = match &outcome.decision {
        Decision::Allowed => writeln!(out, "verdict: ALLOW"),
        Decision::Denied {
            status,
            code,
            detail,
            step,
        } => writeln!(
            out,
            "verdict: DENY {status} {code}{}: {detail}",
            step.map(|s| format!(" by {s}")).unwrap_or_default()
        ),
        Decision::Answered(by) => writeln!(out, "verdict: ANSWERED by {by}"),
    };
    if !outcome.request_trace.is_empty() {
        let _ = writeln!(out, "request steps:");
        crate::eval::write_trace(&mut out, outcome.request_trace.clone());
    }
    if !outcome.response_trace.is_empty() {
        let _ = writeln!(out, "response steps:");
        crate::eval::write_trace(&mut out, outcome.response_trace.clone());
    }
    if !outcome.variables.is_empty() {
        let vars: Vec<String> = outcome
            .variables
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        let _ = writeln!(out, "variables: {}", vars.join(", "));
    }
    if let Some(sent) = &outcome.upstream {
        let _ = writeln!(out, "upstream got: {} {}", sent.method, sent.target);
        for (name, value) in &sent.headers {
            let _ = writeln!(out, "  {name}: {}", shown(name.as_str(), value));
        }
    }
    if let Some(answer) = &outcome.response {
        let _ = writeln!(out, "client got: {}", answer.status);
        for (name, value) in &answer.headers {
            let _ = writeln!(out, "  {name}: {}", shown(name.as_str(), value));
        }
    }
    out
}

/// A header value as a report shows it: a credential's value (a token, a key, a cookie, a
/// signature) is never printed, only its scheme and length.
fn shown(name: &str, value: &http::HeaderValue) -> String {
    let text = value.to_str().unwrap_or("(not text)");
    if !crate::capture::is_credential_header(name) && name != "cookie" && name != "set-cookie" {
        return text.to_owned();
    }
    match text.split_once(' ') {
        Some((scheme, rest)) if name.ends_with("authorization") => {
            format!("{scheme} [redacted, {} bytes]", rest.len())
        }
        _ => format!("[redacted, {} bytes]", text.len()),
    }
}
