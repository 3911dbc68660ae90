//! Shadow mode as a policy author meets it: `check` with every misplaced or misspelt `mode`
//! at its `file:line:col`, `eval` showing shadowed steps as such (and a shadowed step
//! authenticating no one), and the JSON Schema.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(args: &[&str]) -> Output {
    bin().args(args).current_dir(repo()).output().expect("runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs of spaces as one, so layout changes do not break the checks.
fn squeeze(s: &str) -> String {
    s.split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write");
    p
}

const MISTAKES: &str = r#"listen: 127.0.0.1:8080
services:
  - name: a
    match: {path: /a}
    upstream: http://127.0.0.1:9000
    request:
      - allow_ip: [10.0.0.0/8]
        mode: shadw
      - mode: shadow
        requre_api_key: {keys: []}
      - any:
          - allow_ip: [10.0.0.0/8]
            mode: shadow
          - deny_ip: [10.0.0.0/8]
      - deny_ip: [10.0.0.0/8]
        allow_ip: [10.0.0.0/8]
        mode: shadow
      - all:
          - deny_ip: [192.0.2.0/24]
            mode: enforce
        mode: shadow
  - name: b
    match: {path: /b}
    upstream: http://127.0.0.1:9000
    shadow: true
    request:
      - deny_ip: [192.0.2.0/24]
        mode: enforce
    response:
      - set_header: {name: X-A, value: "1"}
        mode: [shadow]
"#;

#[test]
fn check_reports_every_mode_mistake_at_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "p.yaml", MISTAKES);
    let out = run(&["check", "-c", file.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let f = file.display();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("{f}:8:15: unknown step mode \"shadw\"; did you mean \"shadow\"? (at services[0].request[0].mode.shadw)").as_str(),
            format!("{f}:10:9: unknown assertion \"requre_api_key\"; did you mean \"require_api_key\"? (at services[0].request[1].requre_api_key)").as_str(),
            format!("{f}:13:19: a step inside `any` cannot be shadowed on its own (the `any` decides, not its steps): put `mode: shadow` on the `any` itself (at services[0].request[2].any[0].mode)").as_str(),
            format!("{f}:15:9: expected a single key naming the assertion, found 2 keys: deny_ip, allow_ip (at services[0].request[3])").as_str(),
            format!("{f}:20:19: the `all` this step sits in is shadowed, so all its steps are: move this step out of it to enforce it (at services[0].request[4].all[0].mode)").as_str(),
            format!("{f}:28:15: this service has `shadow: true`, so every step is shadowed: remove `mode: enforce`, or the service's `shadow: true` and shadow steps one by one (at services[1].request[0].mode)").as_str(),
            format!("{f}:31:15: expected the name of a step mode, found a list (at services[1].response[0].mode)").as_str(),
            "7 error(s)",
        ],
        "{stderr}"
    );
}

/// A shadowed key check in front of an enforced address check, and a service that shadows
/// every step.
const SHADOWED: &str = r#"services:
  - name: widgets
    match: {path: /widgets}
    upstream: http://127.0.0.1:9000
    request:
      - require_api_key:
          keys:
            - client: acme-mobile
              sha256: a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873
        mode: shadow
      - allow_ip: [127.0.0.0/8]
  - name: trial
    match: {path: /trial}
    upstream: http://127.0.0.1:9000
    shadow: true
    request:
      - deny_ip: [127.0.0.0/8]
      - set_header: {name: X-Tier, value: trial}
"#;

fn eval(policy: &Path, request: &Path, peer: Option<&str>) -> (Option<i32>, String) {
    let mut args = vec![
        "eval",
        "-c",
        policy.to_str().expect("utf8"),
        "--request",
        request.to_str().expect("utf8"),
    ];
    if let Some(peer) = peer {
        args.extend(["--client-ip", peer]);
    }
    let out = run(&args);
    (
        out.status.code(),
        squeeze(&format!("{}{}", text(&out.stdout), text(&out.stderr))),
    )
}

#[test]
fn eval_shows_shadowed_steps_and_what_they_would_have_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "p.yaml", SHADOWED);
    let keyless = write(
        dir.path(),
        "keyless.http",
        "GET /widgets/7 HTTP/1.1\nHost: x\n\n",
    );
    let (code, out) = eval(&policy, &keyless, None);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("require_api_key SHADOW would_deny (not enforced)"),
        "{out}"
    );
    assert!(out.contains("would refuse: 401 missing-api-key"), "{out}");
    assert!(
        out.contains("request[0].require_api_key SHADOW would_deny (missing-api-key)"),
        "{out}"
    );
    assert!(out.contains("verdict: ALLOW"), "{out}");

    // A good key: the shadowed step would allow, but it authenticates no one: no
    // ${client.id}, and the key is not stripped on its account.
    let keyed = write(
        dir.path(),
        "keyed.http",
        "GET /widgets/7 HTTP/1.1\nHost: x\nX-Api-Key: demo-key-123\n\n",
    );
    let (code, out) = eval(&policy, &keyed, None);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("request[0].require_api_key SHADOW would_allow"),
        "{out}"
    );
    assert!(!out.contains("client.id="), "{out}");
    assert!(out.contains("credentials: PASS THROUGH"), "{out}");
    assert!(!out.contains("demo-key-123"), "the key was printed: {out}");

    // The enforced step after the shadowed one still refuses.
    let (code, out) = eval(&policy, &keyless, Some("192.0.2.7"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("verdict: DENY 403"), "{out}");
    assert!(
        out.contains("request[0].require_api_key SHADOW would_deny"),
        "{out}"
    );

    // `shadow: true`: every step is recorded, none enforced.
    let trial = write(dir.path(), "trial.http", "GET /trial HTTP/1.1\nHost: x\n\n");
    let (code, out) = eval(&policy, &trial, None);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("request[0].deny_ip SHADOW would_deny (ip-denied)")
            || out.contains("request[0].deny_ip SHADOW would_deny"),
        "{out}"
    );
    assert!(
        out.contains("request[1].set_header SHADOW would_change"),
        "{out}"
    );
}

#[test]
fn a_shadowed_step_does_not_count_as_authenticating_an_issuer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let saml = repo().join("fixtures/saml");
    let saml = saml.display();
    let policy = write(
        dir.path(),
        "p.yaml",
        &format!(
            r#"saml_issuer:
  entity_id: https://gateway.example.com/saml
  signing_key: {{file: {saml}/xmlsec1/p256.key.pem}}
  certificate: {{file: {saml}/xmlsec1/p256.cert.pem}}
  users_file: {saml}/demo-users.yaml
  audience: https://gateway.example.com
  recipient: https://gateway.example.com/oauth2/token
services:
  - name: issue
    match: {{path: /issue}}
    methods: [POST]
    issue_saml:
      subject: "${{client.id}}"
    request:
      - require_api_key:
          keys:
            - client: acme-mobile
              sha256: a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873
        mode: shadow
"#
        ),
    );
    let out = run(&["check", "-c", policy.to_str().expect("utf8")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("must authenticate its callers first"),
        "{stderr}"
    );
    // Enforced, the same policy passes.
    let enforced = std::fs::read_to_string(&policy)
        .expect("read")
        .replace("        mode: shadow\n", "");
    let policy = write(dir.path(), "p.yaml", &enforced);
    let out = run(&["check", "-c", policy.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn schema_shows_mode_beside_every_kind_and_shadow_on_services() {
    let out = run(&["schema"]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let defs = &schema["$defs"];
    let kinds = defs["StepSpec"]["oneOf"]
        .as_array()
        .expect("one of the kinds");
    assert!(kinds.len() > 10, "{kinds:?}");
    for kind in kinds {
        assert!(
            kind["properties"]["mode"].is_object(),
            "no mode beside {kind}"
        );
    }
    let modes = text(&out.stdout);
    assert!(modes.contains("\"shadow\""), "the modes are listed");
    assert_eq!(
        defs["ServiceSpec"]["properties"]["shadow"]["type"],
        serde_json::json!(["boolean", "null"]),
        "{}",
        defs["ServiceSpec"]["properties"]["shadow"]
    );
}
