//! `portcullis test` and `portcullis replay` as a user runs them: every example policy passes
//! its golden cases and every step of it is exercised; copies of each with one step removed
//! are caught by its cases (a test of the tests); test-file mistakes are located; replay
//! over 10,000 captured requests reports exactly the requests a tightened step changes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Output};

use portcullis::capture::{capture, CaptureKey};
use portcullis::policy_test::{run_file, Options};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(args: &[&str]) -> Output {
    bin().args(args).current_dir(repo()).output().expect("runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn example_policies() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("policies"))
        .expect("policies")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_example_policy_passes_its_tests_with_every_step_exercised() {
    for name in example_policies() {
        assert!(
            repo().join("policies/tests").join(&name).is_file(),
            "policies/{name} has no test file policies/tests/{name}"
        );
    }
    let out = run(&["test", "policies/", "--coverage"]);
    let report = text(&out.stdout);
    assert!(
        out.status.success(),
        "portcullis test policies/ failed:\n{report}{}",
        text(&out.stderr)
    );
    assert!(!report.contains("FAIL"), "{report}");
    assert!(
        !report.contains("not exercised"),
        "steps no case exercised:\n{report}"
    );
    assert!(report.contains(" 0 failed"), "{report}");
}

#[test]
fn junit_output_names_every_case_and_failures_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tests = dir.path().join("tests");
    std::fs::create_dir(&tests).expect("dir");
    let policy = repo().join("policies/demo.yaml");
    let file = tests.join("wrong.yaml");
    std::fs::write(
        &file,
        format!(
            "policy: {}\ncases:\n  - name: the demo key opens widgets\n    request: {{path: /widgets, headers: {{X-Api-Key: demo-key-123}}, client: 203.0.113.1}}\n    expect: {{verdict: allow}}\n  - name: a wrong expectation <fails>\n    request: {{path: /widgets, client: 203.0.113.1}}\n    expect: {{verdict: allow, status: 200}}\n",
            policy.display()
        ),
    )
    .expect("write");
    let out = run(&["test", &file.display().to_string(), "--format", "junit"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let xml = text(&out.stdout);
    assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
    assert!(
        xml.contains("name=\"a wrong expectation &lt;fails&gt;\""),
        "{xml}"
    );
    assert!(xml.contains("verdict: expected allow, got deny"), "{xml}");
    // The text report shows the diff and the step trace of the failing case.
    let out = run(&["test", &file.display().to_string()]);
    let report = text(&out.stdout);
    assert!(report.contains("FAIL  a wrong expectation"), "{report}");
    assert!(report.contains("status: expected 200, got 401"), "{report}");
    assert!(report.contains("require_api_key"), "{report}");
    assert!(report.contains("DENY"), "{report}");
}

#[test]
fn test_file_mistakes_are_located_and_fail_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        format!(
            "policy: {}\ncases:\n  - name: typo\n    request: {{path: /widgets}}\n    expect: {{verdcit: allow}}\n",
            repo().join("policies/demo.yaml").display()
        ),
    )
    .expect("write");
    let out = run(&["test", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(report.contains("bad.yaml:5:"), "{report}");
    assert!(report.contains("verdcit"), "{report}");
    // A policy that does not load fails its test file with the policy's own diagnostics.
    let broken = dir.path().join("broken-policy.yaml");
    std::fs::write(&broken, "services:\n  - name: x\n    upstream: http://127.0.0.1:1\n    request:\n      - require_api_keyy: {}\n").expect("write");
    std::fs::write(
        &file,
        "policy: broken-policy.yaml\ncases:\n  - name: anything\n    request: {path: /}\n    expect: {verdict: allow}\n",
    )
    .expect("write");
    let out = run(&["test", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("broken-policy.yaml:5:"),
        "{}",
        text(&out.stdout)
    );
    // No test file at all is a usage error.
    let out = run(&["test", &dir.path().join("nothing").display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
}

/// One step of a policy, as lines of its text.
struct StepSpan {
    service: String,
    side: &'static str,
    index: usize,
    /// The `request:` or `response:` line.
    list: usize,
    /// The step's lines, `start..end`.
    start: usize,
    end: usize,
    /// The only step of its list.
    alone: bool,
}

/// The steps of a policy's services: the items of each `request:` and `response:` list.
fn step_spans(policy: &str) -> Vec<StepSpan> {
    let lines: Vec<&str> = policy.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let skip = |line: &str| line.trim().is_empty() || line.trim_start().starts_with('#');
    let mut spans = Vec::new();
    let mut service = String::new();
    for (list, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- name: ") {
            service = name.trim().to_owned();
        }
        let side = match trimmed.trim_end() {
            "request:" => "request",
            "response:" => "response",
            _ => continue,
        };
        let mut starts = Vec::new();
        let mut item_indent = None;
        let mut end = list + 1;
        while end < lines.len() {
            let next = lines[end];
            if !skip(next) {
                if indent(next) <= indent(line) {
                    break;
                }
                let at_item = next.trim_start().starts_with("- ")
                    && item_indent.is_none_or(|i| indent(next) == i);
                if at_item {
                    item_indent = Some(indent(next));
                    starts.push(end);
                }
            }
            end += 1;
        }
        // Trailing blank and comment lines belong to what follows.
        while end > list + 1 && skip(lines[end - 1]) {
            end -= 1;
        }
        let count = starts.len();
        for (index, start) in starts.iter().enumerate() {
            let mut stop = starts.get(index + 1).copied().unwrap_or(end);
            while stop > start + 1 && skip(lines[stop - 1]) {
                stop -= 1;
            }
            spans.push(StepSpan {
                service: service.clone(),
                side,
                index,
                list,
                start: *start,
                end: stop,
                alone: count == 1,
            });
        }
    }
    spans
}

/// The policy without one step (an emptied list becomes `[]`).
fn without(policy: &str, span: &StepSpan) -> String {
    let mut out = Vec::new();
    for (at, line) in policy.lines().enumerate() {
        if (span.start..span.end).contains(&at) {
            continue;
        }
        if at == span.list && span.alone {
            out.push(format!("{} []", line.trim_end()));
            continue;
        }
        out.push(line.to_owned());
    }
    out.join("\n") + "\n"
}

/// Steps whose removal no golden case can see, each with why: `(policy, service, step text)`.
///
/// - `remove_header` of the caller's credential after an authenticating step: the gateway
///   strips the credentials an authenticating step read (and `Authorization`) by default
///   (docs/policy.md, credentials), so the step only says so; the cases check the header is
///   gone either way.
/// - fleet-redis's partner rate limit and monthly quota: reaching them takes over 200
///   distinct SigV4 signatures within one second (a signature is good once), more than a
///   golden file should hold; their cases show they run and let a signed request through.
const REDUNDANT: &[(&str, &str, &str)] = &[
    (
        "bearer-protected-api.yaml",
        "widgets-write",
        "remove_header: [Authorization]",
    ),
    (
        "bearer-protected-api.yaml",
        "widgets",
        "remove_header: [Authorization]",
    ),
    (
        "bearer-protected-api.yaml",
        "partner",
        "remove_header: [Authorization]",
    ),
    ("demo.yaml", "widgets", "remove_header: [X-Api-Key]"),
    (
        "fleet-redis.yaml",
        "customers",
        "remove_header: [Authorization]",
    ),
    ("fleet-redis.yaml", "partner-orders", "rate_limit:"),
    ("fleet-redis.yaml", "partner-orders", "quota:"),
    (
        "hmac-partner-api.yaml",
        "partner-orders",
        "remove_header: [Authorization, X-Amz-Date",
    ),
    (
        "oauth-token-service.yaml",
        "customers",
        "remove_header: [Authorization]",
    ),
    (
        "oauth-token-service.yaml",
        "invoices",
        "remove_header: [Authorization]",
    ),
    ("rate-limited-api.yaml", "api", "remove_header: [X-Api-Key]"),
    (
        "saml-rest.yaml",
        "payments",
        "remove_header: [Authorization]",
    ),
    (
        "saml-rest.yaml",
        "reports",
        "remove_header: [Authorization]",
    ),
];

#[test]
fn a_copy_of_each_example_policy_with_one_step_removed_fails_its_tests() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut tried = 0;
    let mut missed = Vec::new();
    let mut listed_but_caught = Vec::new();
    for name in example_policies() {
        let original =
            std::fs::read_to_string(repo().join("policies").join(&name)).expect("policy");
        let tests =
            std::fs::read_to_string(repo().join("policies/tests").join(&name)).expect("tests");
        let spans = step_spans(&original);
        assert!(!spans.is_empty(), "{name}: no steps found");
        for span in spans {
            // The copy sits where the original does, relative to the fixtures.
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir_all(dir.path().join("policies/tests")).expect("dirs");
            std::os::unix::fs::symlink(repo().join("fixtures"), dir.path().join("fixtures"))
                .expect("link fixtures");
            std::fs::write(
                dir.path().join("policies").join(&name),
                without(&original, &span),
            )
            .expect("copy");
            let test_file = dir.path().join("policies/tests").join(&name);
            std::fs::write(&test_file, &tests).expect("tests");
            let result = runtime.block_on(run_file(&test_file, Options::default()));
            tried += 1;
            let step = original
                .lines()
                .nth(span.start)
                .unwrap_or_default()
                .trim()
                .to_owned();
            let redundant = REDUNDANT.iter().any(|(policy, service, text)| {
                *policy == name && *service == span.service && step.contains(text)
            });
            let label = format!(
                "{name}: {} {}[{}] {step}",
                span.service, span.side, span.index
            );
            match (result.passed(), redundant) {
                (true, false) => missed.push(label),
                (false, true) => listed_but_caught.push(label),
                _ => {}
            }
        }
    }
    assert!(tried > 40, "only {tried} steps found");
    assert!(
        missed.is_empty(),
        "copies with a step removed that still pass their tests:\n{}",
        missed.join("\n")
    );
    // The list above is exact: a step it names that the cases now catch comes off it.
    assert!(
        listed_but_caught.is_empty(),
        "listed as not caught, but caught:\n{}",
        listed_but_caught.join("\n")
    );
}

/// One step loosened in each example policy: `(policy, text, loosened text)`.
const LOOSENED: &[(&str, &str, &str)] = &[
    (
        "bearer-protected-api.yaml",
        "scopes: [widgets.write]}",
        "scopes: [widgets.write, widgets.read], scope_match: any}",
    ),
    (
        "credential-forwarding.yaml",
        "any_of: [integrations]",
        "any_of: [integrations, kiosks]",
    ),
    (
        "demo.yaml",
        "deny_ip: [192.0.2.0/24]",
        "deny_ip: [192.0.2.0/25]",
    ),
    (
        "fleet-redis.yaml",
        "require_bearer: {scopes: [customers.read]}",
        "require_bearer: {}",
    ),
    ("hmac-partner-api.yaml", "max_skew: 5m", "max_skew: 15m"),
    (
        "https-partner-api.yaml",
        "    https_only: true\n",
        "    https_only: false\n",
    ),
    (
        "multi-upstream.yaml",
        "    match: {path: /orders}\n    upstream:",
        "    match: {path: /orders}\n    shadow: true\n    upstream:",
    ),
    (
        "oproxy-broker.yaml",
        "allow_ip: [127.0.0.0/8, 10.0.0.0/8]",
        "allow_ip: [127.0.0.0/8, 10.0.0.0/8, 203.0.113.0/24]",
    ),
    (
        "outbound-broker.yaml",
        "match: {path: /crm}",
        "match: {path: /crm}\n    shadow: true",
    ),
    (
        "oauth-token-service.yaml",
        "require_bearer: {scopes: [invoices.read]}",
        "require_bearer: {scopes: [customers.read, invoices.read], scope_match: any}",
    ),
    (
        "pci-cardholder-api.yaml",
        "allow_ip: [127.0.0.0/8, 10.0.0.0/8]",
        "allow_ip: [127.0.0.0/8, 10.0.0.0/8, 203.0.113.0/24]",
    ),
    (
        "public-wifi-ip-identity.yaml",
        "groups: [staff]",
        "groups: [staff, guests]",
    ),
    (
        "rate-limited-api.yaml",
        "rate: 5/s, burst: 10}",
        "rate: 5/s, burst: 11}",
    ),
    (
        "saml-rest.yaml",
        "require_attributes: {group: [finance]}",
        "require_attributes: {group: [finance, sales]}",
    ),
];

#[test]
fn a_copy_of_each_example_policy_with_one_step_loosened_fails_its_tests() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let names = example_policies();
    for name in &names {
        assert!(
            LOOSENED.iter().any(|(policy, _, _)| policy == name),
            "{name}: no loosened copy tried"
        );
    }
    for (name, strict, loose) in LOOSENED {
        let original = std::fs::read_to_string(repo().join("policies").join(name)).expect("policy");
        assert_eq!(
            original.matches(strict).count(),
            1,
            "{name}: {strict:?} changed"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("policies/tests")).expect("dirs");
        std::os::unix::fs::symlink(repo().join("fixtures"), dir.path().join("fixtures"))
            .expect("link fixtures");
        std::fs::write(
            dir.path().join("policies").join(name),
            original.replacen(strict, loose, 1),
        )
        .expect("copy");
        let test_file = dir.path().join("policies/tests").join(name);
        std::fs::copy(repo().join("policies/tests").join(name), &test_file).expect("tests");
        let result = runtime.block_on(run_file(&test_file, Options::default()));
        assert!(
            result.errors.is_empty(),
            "{name}: the loosened copy must load: {:?}",
            result.errors
        );
        assert!(
            !result.passed(),
            "{name}: loosening {strict:?} to {loose:?} passes its tests"
        );
    }
}

/// A small deterministic generator (xorshift), so the sample is the same on every run.
struct Sample(u64);

impl Sample {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[test]
fn replay_of_ten_thousand_requests_reports_exactly_the_affected_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("policies")).expect("dir");
    std::os::unix::fs::symlink(repo().join("fixtures"), dir.path().join("fixtures")).expect("link");
    // The new policy: widgets no longer takes partner-co's key (its orders access stays).
    let demo = std::fs::read_to_string(repo().join("policies/demo.yaml")).expect("demo");
    let partner_entry = "            # sha256 of \"partner-key-456\"\n            - client: partner-co\n              sha256: d1befb14a63e7ced66c1ee0868800d6330e970e6f6e5c03dc847a97fa65c588e\n              attributes: {tier: silver}\n";
    assert!(
        demo.contains(partner_entry),
        "the demo policy changed shape"
    );
    let tightened = demo.replacen(partner_entry, "", 1);
    let new_policy = dir.path().join("policies/demo-tightened.yaml");
    std::fs::write(&new_policy, tightened).expect("write");

    let key = CaptureKey::new(b"replay-test-capture-key");
    let mut sample = Sample(0x9e37_79b9_7f4a_7c15);
    let mut lines = String::new();
    let mut expected_changes = 0;
    let mut unknown_keys = 0;
    let mut per_service: BTreeMap<&str, usize> = BTreeMap::new();
    for index in 0..10_000u64 {
        let path = sample.pick(&[
            "/widgets",
            "/widgets/7",
            "/widgets/a/b",
            "/orders",
            "/orders/9",
            "/other",
        ]);
        let method = if path.starts_with("/orders") {
            sample.pick(&["POST", "GET"])
        } else {
            sample.pick(&["GET", "POST", "DELETE"])
        };
        let api_key = sample.pick(&["demo-key-123", "partner-key-456", "wrong-key", ""]);
        let peer = sample.pick(&["127.0.0.1", "203.0.113.9", "192.0.2.5", "198.51.100.77"]);
        let body: &[u8] = if method == "POST" {
            sample.pick(&["{\"a\":1}", "{not json"]).as_bytes()
        } else {
            b""
        };
        let mut headers: Vec<(&str, &[u8])> = vec![("host", b"api.example.com")];
        if !api_key.is_empty() {
            headers.push(("x-api-key", api_key.as_bytes()));
        }
        let length = body.len().to_string();
        if !body.is_empty() {
            headers.push(("content-length", length.as_bytes()));
        }
        let captured = capture(
            &key,
            (
                1_780_000_000 + index,
                peer.parse::<IpAddr>().expect("ip"),
                false,
            ),
            (method, path),
            headers.into_iter(),
            Some(body),
        );
        lines.push_str(&serde_json::to_string(&captured).expect("json"));
        lines.push('\n');
        // Computed apart from the gateway: a widgets request the old policy let through on
        // the partner's key (not from the denied range) is refused by the new one.
        unknown_keys += usize::from(api_key == "wrong-key");
        if path.starts_with("/widgets") && peer != "192.0.2.5" && api_key == "partner-key-456" {
            expected_changes += 1;
            *per_service.entry("widgets").or_default() += 1;
        }
    }
    assert!(
        expected_changes > 500,
        "the sample must hold affected requests"
    );
    let requests = dir.path().join("capture.jsonl");
    std::fs::write(&requests, &lines).expect("write");
    let key_file = dir.path().join("capture.key");
    std::fs::write(&key_file, "replay-test-capture-key\n").expect("key");
    let credentials = dir.path().join("credentials");
    std::fs::write(&credentials, "demo-key-123\npartner-key-456\n").expect("credentials");
    let old_policy = repo().join("policies/demo.yaml");
    let started = std::time::Instant::now();
    let out = run(&[
        "replay",
        "--old",
        &old_policy.display().to_string(),
        "--new",
        &new_policy.display().to_string(),
        "--requests",
        &requests.display().to_string(),
        "--capture-key",
        &key_file.display().to_string(),
        "--credentials",
        &credentials.display().to_string(),
        "--format",
        "json",
    ]);
    let elapsed = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["requests"], 10_000);
    // Keys the operator does not know stay hashed (and fail under both policies).
    assert_eq!(report["unresolved"], unknown_keys, "{report}");
    assert_eq!(report["changed"], expected_changes, "{report}");
    assert_eq!(report["verdict_changed"], expected_changes);
    assert_eq!(report["headers_changed"], 0);
    let widgets = &report["groups"]["widgets"];
    let group = &widgets["request[1] require_api_key: allow → deny 401 invalid-api-key"];
    assert_eq!(group["count"], per_service["widgets"], "{widgets}");
    assert_eq!(group["examples"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        report["groups"].as_object().map(|g| g.len()),
        Some(1),
        "{report}"
    );
    eprintln!("replay: 10000 requests through two policies in {elapsed:?} (whole command)");

    // Without the credentials the hashed keys cannot authenticate under either policy:
    // nothing is reported as changed, and replay says why.
    let out = run(&[
        "replay",
        "--old",
        &old_policy.display().to_string(),
        "--new",
        &new_policy.display().to_string(),
        "--requests",
        &requests.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let report = text(&out.stdout);
    assert!(report.contains("unresolved credentials:"), "{report}");
    assert!(report.contains("changed: 0 request(s)"), "{report}");
    // The same policy on both sides changes nothing.
    let out = run(&[
        "replay",
        "--old",
        &old_policy.display().to_string(),
        "--new",
        &old_policy.display().to_string(),
        "--requests",
        &requests.display().to_string(),
        "--capture-key",
        &key_file.display().to_string(),
        "--credentials",
        &credentials.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn the_test_file_schema_is_printed() {
    let out = run(&["schema", "--tests"]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(schema["title"], "Portcullis policy tests");
    let properties = &schema["properties"];
    for field in [
        "policy",
        "at",
        "secrets",
        "key_sets",
        "identities",
        "tokens",
        "cases",
    ] {
        assert!(
            properties.get(field).is_some(),
            "{field} missing from {properties}"
        );
    }
}

#[test]
fn coverage_names_the_steps_and_branches_no_case_exercised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("thin.yaml");
    // A local caller posts an order, a remote one without a key is refused. The widgets
    // service never runs, and the `any`'s API-key branch runs but never lets anyone through.
    std::fs::write(
        &file,
        format!(
            "policy: {}\ncases:\n  - name: local order\n    request: {{method: POST, path: /orders, body: '{{}}', client: 127.0.0.1}}\n    expect: {{verdict: allow}}\n  - name: remote order without a key\n    request: {{method: POST, path: /orders, body: '{{}}', client: 203.0.113.1}}\n    expect: {{verdict: deny}}\n",
            repo().join("policies/demo.yaml").display()
        ),
    )
    .expect("write");
    let out = run(&["test", &file.display().to_string(), "--coverage"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let report = text(&out.stdout);
    assert!(report.contains("coverage: 4 of 11 steps ran"), "{report}");
    assert!(
        report.contains("not exercised: widgets: request[0] deny_ip never ran"),
        "{report}"
    );
    assert!(
        report.contains("not exercised: widgets: response[1] set_header never ran"),
        "{report}"
    );
    assert!(
        report.contains(
            "not exercised: orders: request[0].any[1] require_api_key never let a request through"
        ),
        "{report}"
    );
    assert!(!report.contains("any[0]"), "{report}");
    assert!(!report.contains("orders: request[1]"), "{report}");
}

#[test]
fn at_moves_every_case_without_a_time_of_its_own() {
    // The first case's signature is good only near the file's `at`.
    let out = run(&["test", "policies/tests/hmac-partner-api.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let out = run(&[
        "test",
        "policies/tests/hmac-partner-api.yaml",
        "--at",
        "1790000000",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(report.contains("RequestTimeTooSkewed"), "{report}");
}

#[test]
fn replay_reports_upstream_header_changes_by_header() {
    use portcullis::replay::{replay, ReplayPolicy, Resolver};
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("policies")).expect("dir");
    std::os::unix::fs::symlink(repo().join("fixtures"), dir.path().join("fixtures")).expect("link");
    let demo = std::fs::read_to_string(repo().join("policies/demo.yaml")).expect("demo");
    let old_tier = "value: \"${client.tier}\"";
    assert!(demo.contains(old_tier));
    let changed = dir.path().join("policies/demo-tiers.yaml");
    std::fs::write(
        &changed,
        demo.replacen(old_tier, "value: \"tier-${client.tier}\"", 1),
    )
    .expect("write");
    let line = |path: &str, key: &str, peer: &str| {
        serde_json::json!({
            "time": 1_780_000_000u64, "peer": peer, "method": "GET", "target": path,
            "headers": [["host", "a.test"], ["x-api-key", key]],
        })
        .to_string()
    };
    let lines = [
        line("/widgets/1", "demo-key-123", "203.0.113.1"), // allowed: header changes
        line("/widgets/2", "partner-key-456", "203.0.113.1"), // allowed: header changes
        line("/widgets/3", "wrong", "203.0.113.1"),        // refused by both
        line("/orders/1", "", "127.0.0.1"),                // another service
        "not json".to_owned(),
    ]
    .join("\n");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let old = ReplayPolicy::load(&repo().join("policies/demo.yaml")).expect("old");
    let new = ReplayPolicy::load(&changed).expect("new");
    let report = runtime.block_on(replay(&old, &new, &lines, &Resolver::default()));
    assert_eq!(report.requests, 4, "{}", report.text());
    assert_eq!(report.malformed.len(), 1);
    assert!(
        report.malformed[0].starts_with("line 5:"),
        "{:?}",
        report.malformed
    );
    assert_eq!(report.changed, 2, "{}", report.text());
    assert_eq!(report.headers_changed, 2);
    assert_eq!(report.verdict_changed, 0);
    let group = &report.groups["widgets"]["upstream headers: x-client-tier"];
    assert_eq!(group.count, 2);
    assert_eq!(group.examples[0], "line 1: GET /widgets/1");
}
