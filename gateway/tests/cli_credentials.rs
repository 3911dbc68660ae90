//! `credentials:` as a policy author meets it: `check` with every mistake at its
//! `file:line:col`, the warning for an upstream host that is never listed, `eval` saying
//! what the upstream would get of the caller's credentials and why, and the JSON Schema.
//! (Apart from `cli.rs`, which is past the size a file should have.)

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
    credentials: forward
  - name: b
    match: {path: /b}
    upstream: http://127.0.0.1:9000
    credentials:
      mode: forward
      when:
        client_cidrs: [10.0.0.0/33]
        groups: {any_of: [x]}
        variables:
          - {variable: "${client.teir}", equals: gold}
          - {variable: "client.id", equals: x}
          - {variable: "${client.id}", equals: x, one_of: [y]}
      cookies: ["a=b"]
  - name: c
    match: {path: /c}
    upstream: http://127.0.0.1:9000
    credentials: {mode: strip, when: always}
  - name: d
    match: {path: /d}
    upstream: http://127.0.0.1:9000
    credentials: {mode: forward, when: {}}
  - name: e
    match: {path: /e}
    upstream: http://127.0.0.1:9000
    credentials: sometimes
"#;

#[test]
fn check_reports_every_credentials_mistake_at_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "p.yaml", MISTAKES);
    let out = run(&["check", "-c", file.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let f = file.display();
    for expected in [
        format!("{f}:6:18: `credentials: forward` needs `when:`"),
        format!("{f}:13:24: \"10.0.0.0/33\" is not a CIDR block"),
        format!("{f}:14:17: groups needs `variable:`"),
        format!("{f}:16:24: unknown variable ${{client.teir}}; did you mean"),
        format!("{f}:17:24: \"client.id\" is not one variable reference"),
        format!("{f}:18:13: a variable condition needs exactly one of `equals`"),
        format!("{f}:19:17: \"a=b\" is not a cookie name"),
        format!("{f}:23:38: `when:` belongs to `mode: forward`"),
        format!("{f}:27:40: `credentials: forward` needs `when:`"),
        format!("{f}:31:18: unknown value \"sometimes\"; expected one of: strip, forward"),
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(&expected)),
            "missing {expected:?} in\n{stderr}"
        );
    }
    assert!(stderr.contains("10 error(s)"), "{stderr}");
}

#[test]
fn check_warns_when_the_upstream_host_is_never_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "p.yaml",
        "services:\n  - name: s\n    upstream: http://127.0.0.1:9000\n    credentials:\n      mode: forward\n      when: {upstream_hosts: [api.example.com, \"*.example.com\"]}\n",
    );
    let out = run(&["check", "-c", file.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains("the upstream host 127.0.0.1 is not one of api.example.com, *.example.com, so this service always strips the caller's credentials"),
        "{all}"
    );
}

#[test]
fn eval_says_what_the_upstream_gets_of_the_callers_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let eval = |request: &str, client: &str| {
        let file = write(dir.path(), "r.http", request);
        let out = run(&[
            "eval",
            "-c",
            "policies/credential-forwarding.yaml",
            "--request",
            file.to_str().expect("utf8"),
            "--client-ip",
            client,
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let kiosk = "GET /crm/accounts HTTP/1.1\nHost: x\nX-Api-Key: partner-key-456\nAuthorization: Bearer crm-token\nCookie: crm_session=abc\n\n";
    let out = eval(kiosk, "127.0.0.1");
    assert!(
        out.contains("credentials: STRIP authorization, cookie crm_session (rule when.groups: ${client.groups} must name one of the groups integrations)"),
        "{out}"
    );
    assert!(out.contains("when.client_cidrs holds"), "{out}");
    assert!(out.contains("when.groups fails"), "{out}");
    assert!(!out.contains("crm-token") && !out.contains("abc"), "{out}");

    let billing = "GET /crm/accounts HTTP/1.1\nHost: x\nX-Api-Key: demo-key-123\nAuthorization: Bearer crm-token\n\n";
    let out = eval(billing, "10.9.8.7");
    assert!(
        out.contains(
            "credentials: FORWARD authorization (rule forward: every `when:` condition held)"
        ),
        "{out}"
    );
    let out = eval(billing, "192.0.2.4");
    assert!(
        out.contains("credentials: STRIP authorization (rule when.client_cidrs"),
        "{out}"
    );
    assert!(
        out.contains("when.client_cidrs fails: the client address must be in 127.0.0.0/8, 10.0.0.0/8 (client 192.0.2.4)"),
        "{out}"
    );

    let intranet = "GET /home HTTP/1.1\nHost: x\n\n";
    assert!(
        eval(intranet, "127.0.0.1").contains("credentials: STRIP (none present) (rule strip:"),
        "stripped whatever is sent"
    );

    // The demo's widgets service authenticates with an API key and says nothing: default.
    let widgets = "GET /widgets/1 HTTP/1.1\nHost: x\nX-Api-Key: demo-key-123\n\n";
    let file = write(dir.path(), "w.http", widgets);
    let out = run(&[
        "eval",
        "-c",
        "policies/demo.yaml",
        "--request",
        file.to_str().expect("utf8"),
    ]);
    let out = text(&out.stdout);
    assert!(
        out.contains("credentials: STRIP (none present) (rule authenticated: require_api_key authenticated the caller"),
        "{out}"
    );
}

#[test]
fn the_schema_describes_credentials() {
    let out = run(&["schema"]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let text = schema.to_string();
    for word in [
        "credentials",
        "client_cidrs",
        "upstream_hosts",
        "any_of",
        "one_of",
    ] {
        assert!(text.contains(word), "{word} missing from the schema");
    }
}
