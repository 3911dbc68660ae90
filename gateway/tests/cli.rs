//! The `portcullis` binary as a user runs it: check, eval, schema, hash-key, run + SIGHUP,
//! and every example policy under `policies/`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

const THREE_MISTAKES: &str = r#"listen: 127.0.0.1:8080
services:
  - name: widgets
    match: {path: /widgets}
    upstream: http://127.0.0.1:9000
    request:
      - requre_api_key:
          keys: []
      - allow_ip: [10.0.0.0/33]
      - set_header: {name: X-Client, value: "${client.idd}"}
"#;

#[test]
fn check_reports_every_mistake_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "widgets.yaml", THREE_MISTAKES);
    let out = run(&["check", "-c", file.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let f = file.display();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("{f}:7:9: unknown assertion \"requre_api_key\"; did you mean \"require_api_key\"? (at services[0].request[0].requre_api_key)").as_str(),
            format!("{f}:9:20: \"10.0.0.0/33\" is not a CIDR block (e.g. 10.0.0.0/8) or an IP address (at services[0].request[1].allow_ip[0])").as_str(),
            format!("{f}:10:45: unknown variable ${{client.idd}}; did you mean ${{client.id}}? (at services[0].request[2].set_header.value)").as_str(),
            "3 error(s)",
        ],
        "{stderr}"
    );
}

#[test]
fn check_keeps_reading_after_a_bad_field_and_catches_conflicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "s.yaml",
        r#"admin: {token: admin_token}
secrets:
  admin_token: {env: PORTCULLIS_TEST_SURELY_UNSET}
services:
  - name: a
    match: {path: /a}
    upstream: http://127.0.0.1:9000
    max_request_body: 1 MegaByte
    timeout: 5s
    request:
      - set_header: {name: Host, value: x}
      - allow_ip: [not-an-ip]
  - name: b
    match: {path: /a}
    upstream: http://127.0.0.1:9000
"#,
    );
    let out = run(&["check", "-c", file.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = squeeze(&text(&out.stderr));
    for expected in [
        ":3:16: environment variable PORTCULLIS_TEST_SURELY_UNSET is not set",
        ":8:23: \"1 MegaByte\" is not a size",
        ":9:5: unknown field \"timeout\"",
        ":11:9: request header host is set by the gateway",
        ":12:20: \"not-an-ip\" is not a CIDR block",
        ":13:11: service \"b\" matches the same host and path as \"a\"",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    // The unset secret is reported once, not again where admin.token names it.
    assert!(!stderr.contains("unknown secret"), "{stderr}");
    assert!(stderr.trim_end().ends_with("6 error(s)"), "{stderr}");
}

#[test]
fn check_accepts_a_good_file_and_reports_unreadable_ones() {
    let out = run(&["check", "-c", "policies/demo.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok (2 service(s))"));
    let out = run(&["check", "-c", "policies/does-not-exist.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with(
        "policies/does-not-exist.yaml: cannot read policy file policies/does-not-exist.yaml:"
    ));
}

#[test]
fn check_reports_yaml_syntax_and_semantic_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_yaml = write(dir.path(), "a.yaml", "services:\n  - name: [unclosed\n");
    let out = run(&["check", "-c", bad_yaml.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(&format!("{}:", bad_yaml.display())),
        "{}",
        text(&out.stderr)
    );

    let semantic = write(
        dir.path(),
        "b.yaml",
        "secrets:\n  key: {env: PORTCULLIS_TEST_SURELY_UNSET}\nservices:\n  - name: a\n    upstream: ftp://x\n  - name: a\n    upstream: http://127.0.0.1:1\n    response:\n      - allow_ip: [10.0.0.0/8]\n      - set_header: {name: Content-Length, value: '1'}\n",
    );
    let out = run(&["check", "-c", semantic.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    for expected in [
        ":2:8: environment variable PORTCULLIS_TEST_SURELY_UNSET is not set (at secrets.key)",
        ":5:15: upstream \"ftp://x\" must start with http:// or https://",
        ":6:11: duplicate service name \"a\"",
        ":9:9: allow_ip checks requests; move it to the service's request: list",
        ":6:11: service \"a\" matches the same host and path as \"a\"",
        ":10:9: header content-length carries message framing and cannot be set by a policy",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(stderr.trim_end().ends_with("6 error(s)"), "{stderr}");
}

/// `check` never opens the state store (it says so); `check --connect` opens it read-only
/// and reports a missing, foreign or damaged file as an error, creating nothing.
#[test]
fn check_connect_opens_the_state_store_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(
        dir.path(),
        "stateful.yaml",
        "state: sqlite://state.db\nservices:\n  - name: a\n    match: {path: /a}\n    upstream: http://127.0.0.1:9000\n",
    );
    let policy = policy.to_str().expect("utf8");
    let store = dir.path().join("state.db");

    let out = run(&["check", "-c", policy]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("state store not opened; use --connect to verify"),
        "{}",
        text(&out.stdout)
    );
    assert!(!store.exists(), "check creates no state file");

    let out = run(&["check", "-c", policy, "--connect"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("1 error(s)"),
        "{}",
        text(&out.stderr)
    );
    assert!(!store.exists(), "check --connect creates no state file");

    std::fs::write(&store, b"not a database, only text that is long enough").expect("write");
    let out = run(&["check", "-c", policy, "--connect"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a SQLite database"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_file(&store).expect("remove");

    // A store the gateway made: accepted, and left as it was.
    let made = portcullis::store::sqlite::SqliteStore::open(&store).expect("open");
    drop(made);
    let before = std::fs::read(&store).expect("read");
    let out = run(&["check", "-c", policy, "--connect"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("schema ok"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(std::fs::read(&store).expect("read"), before);
}

#[test]
fn includes_pull_in_services_and_report_their_own_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("services")).expect("mkdir");
    write(
        &dir.path().join("services"),
        "a.yaml",
        "services:\n  - name: a\n    match: {path: /a}\n    upstream: http://127.0.0.1:9000\n",
    );
    let main = write(
        dir.path(),
        "main.yaml",
        "include: [\"services/*.yaml\"]\nservices: []\n",
    );
    let out = run(&["check", "-c", main.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok (1 service(s))"));

    let b = write(
        &dir.path().join("services"),
        "b.yaml",
        "services:\n  - name: b\n    upstream: http://127.0.0.1:9000\n    reqest: []\n",
    );
    let out = run(&["check", "-c", main.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:4:5: unknown field \"reqest\"; did you mean \"request\"?",
            b.display()
        )),
        "{stderr}"
    );
    let nothing = write(dir.path(), "nothing.yaml", "include: [\"none/*.yaml\"]\n");
    let out = run(&["check", "-c", nothing.to_str().expect("utf8")]);
    assert!(
        text(&out.stderr).contains(":1:11: include pattern \"none/*.yaml\" matches no file"),
        "{}",
        text(&out.stderr)
    );
}

/// `eval` runs the gateway's own front gates, not only the pipeline: what the gateway would
/// refuse before any step runs, eval refuses the same way.
#[test]
fn eval_applies_the_gateways_front_gates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        // The client names its own key header hop-by-hop: the gateway drops it before the
        // pipeline, so the key is missing.
        (
            "GET /widgets/7 HTTP/1.1\nHost: api.example.test\nConnection: X-Api-Key\nX-Api-Key: demo-key-123\n\n",
            "verdict: DENY 401 missing-api-key by require_api_key",
        ),
        (
            "GET /widgets/7 HTTP/1.1\nHost: a.test\nHost: b.test\nX-Api-Key: demo-key-123\n\n",
            "verdict: DENY 400 invalid-host",
        ),
        (
            "TRACE /widgets/7 HTTP/1.1\nHost: api.example.test\nX-Api-Key: demo-key-123\n\n",
            "verdict: DENY 405 method-not-allowed",
        ),
        (
            "GET /widgets/%2e%2e/admin HTTP/1.1\nHost: api.example.test\nX-Api-Key: demo-key-123\n\n",
            "verdict: DENY 400 ambiguous-path",
        ),
        (
            "GET http://evil.example/widgets/7 HTTP/1.1\nX-Api-Key: demo-key-123\n\n",
            "verdict: DENY 400 invalid-host",
        ),
        (
            "GET http://api.example.test/widgets/7 HTTP/1.1\nHost: api.example.test\nX-Api-Key: demo-key-123\n\n",
            "verdict: DENY 400 malformed-request",
        ),
        (
            "POST /widgets/7 HTTP/1.1\nHost: api.example.test\nX-Api-Key: demo-key-123\nContent-Length: +2\n\n{}",
            "verdict: DENY 400 invalid-content-length",
        ),
    ];
    for (index, (request, expected)) in cases.iter().enumerate() {
        let file = write(dir.path(), &format!("case{index}.http"), request);
        let out = run(&[
            "eval",
            "-c",
            "policies/demo.yaml",
            "--request",
            file.to_str().expect("utf8"),
        ]);
        let stdout = squeeze(&text(&out.stdout));
        assert_eq!(out.status.code(), Some(1), "{request}: {stdout}");
        assert!(stdout.contains(expected), "{request}: {stdout}");
    }
}

#[test]
fn eval_explains_allow_and_deny_with_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = write(
        dir.path(),
        "ok.http",
        "GET /widgets/7?color=red HTTP/1.1\nHost: api.example.test\nX-Api-Key: demo-key-123\n\n",
    );
    let out = run(&[
        "eval",
        "-c",
        "policies/demo.yaml",
        "--request",
        ok.to_str().expect("utf8"),
    ]);
    let stdout = squeeze(&text(&out.stdout));
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("service: widgets (route /widgets, upstream http://127.0.0.1:9090)"),
        "{stdout}"
    );
    assert!(stdout.contains("require_api_key PASS passed"), "{stdout}");
    assert!(
        stdout.contains("key belongs to client \"acme-mobile\""),
        "{stdout}"
    );
    assert!(stdout.contains("client.id=acme-mobile"), "{stdout}");
    assert!(stdout.contains("verdict: ALLOW"), "{stdout}");
    assert!(
        !stdout.contains("demo-key-123"),
        "the key was printed:\n{stdout}"
    );

    let denied = write(
        dir.path(),
        "denied.http",
        "GET /widgets/7 HTTP/1.1\r\nHost: x\r\nX-Api-Key: nope\r\n\r\n",
    );
    let out = run(&[
        "eval",
        "-c",
        "policies/demo.yaml",
        "--request",
        denied.to_str().expect("utf8"),
    ]);
    let stdout = squeeze(&text(&out.stdout));
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("require_api_key DENY 401 invalid-api-key: the API key is not valid"),
        "{stdout}"
    );
    assert!(
        stdout.contains("verdict: DENY 401 invalid-api-key by require_api_key"),
        "{stdout}"
    );

    // The client address is an input too.
    let out = run(&[
        "eval",
        "-c",
        "policies/demo.yaml",
        "--request",
        ok.to_str().expect("utf8"),
        "--client-ip",
        "192.0.2.7",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        squeeze(&text(&out.stdout)).contains("deny_ip DENY 403 ip-denied"),
        "{}",
        text(&out.stdout)
    );

    // Composites show their branches nested under them.
    let orders = write(
        dir.path(),
        "orders.http",
        "POST /orders HTTP/1.1\nHost: x\nX-Api-Key: partner-key-456\n\n{\"a\":1}",
    );
    let out = run(&[
        "eval",
        "-c",
        "policies/demo.yaml",
        "--request",
        orders.to_str().expect("utf8"),
        "--client-ip",
        "198.51.100.7",
    ]);
    let stdout = squeeze(&text(&out.stdout));
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("1. any PASS passed\n - allow_ip DENY 403 ip-not-allowed"),
        "{stdout}"
    );
    assert!(stdout.contains("- require_api_key PASS passed"), "{stdout}");
    assert!(stdout.contains("2. validate_json PASS passed"), "{stdout}");

    let garbage = write(dir.path(), "bad.http", "this is not http");
    let out = run(&[
        "eval",
        "-c",
        "policies/demo.yaml",
        "--request",
        garbage.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn schema_describes_the_policy_language() {
    let out = run(&["schema"]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(schema["title"], "Portcullis policy");
    let text = text(&out.stdout);
    for name in [
        "require_api_key",
        "allow_ip",
        "deny_ip",
        "set_header",
        "remove_header",
        "validate_json",
        "require_hmac",
        "sign_hmac",
        "mask_pan",
        "keys",
        "string_to_sign",
        "first_six_last_four",
        "any",
        "all",
        "max_request_body",
        "trusted_proxies",
        "require_bearer",
        "token_service",
        "trusted_issuers",
        "signing_keys",
        "state",
        "x509_map",
        "scope_match",
        "require_ip_identity",
        "identity_api",
        "allow_from",
        "writers",
        "providers",
        "oproxy",
        "rotation_grace",
        "outbound_broker",
        "inject_oauth_token",
    ] {
        assert!(text.contains(&format!("\"{name}\"")), "schema lacks {name}");
    }
}

#[test]
fn hash_key_prints_the_sha256() {
    let mut child = bin()
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"demo-key-123\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        text(&out.stdout).trim(),
        "a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873"
    );
}

#[test]
fn every_command_has_help() {
    for cmd in [
        "run",
        "demo",
        "check",
        "eval",
        "schema",
        "hash-key",
        "hash-password",
        "echo",
        "sign",
        "sign aws-sigv4",
        "sign aws-sigv2",
        "sign jwt-bearer",
        "sign jwks",
        "sign saml",
    ] {
        let mut args: Vec<&str> = cmd.split(' ').collect();
        args.push("--help");
        let out = run(&args);
        assert!(out.status.success(), "{cmd}");
        let help = text(&out.stdout);
        assert!(help.contains("Usage:"), "{cmd}");
        // Every flag says what it is for: text after the flag's own column.
        for line in help.lines().filter(|l| l.trim_start().starts_with('-')) {
            let described = line
                .trim()
                .split("  ")
                .skip(1)
                .any(|part| !part.trim().is_empty());
            assert!(described, "{cmd}: no description for `{}`", line.trim());
        }
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

fn get(addr: SocketAddr, path: &str, headers: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let req =
                format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\r\n");
            if s.write_all(req.as_bytes()).is_ok() {
                let mut out = String::new();
                if s.read_to_string(&mut out).is_ok() && !out.is_empty() {
                    return out;
                }
            }
        }
        assert!(Instant::now() < deadline, "no answer from {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the child on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The demo policy, exactly as shipped, on free ports: every curl of the README's tour.
#[test]
fn the_demo_policy_works_end_to_end_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin, echo) = (free_addr(), free_addr(), free_addr());
    let demo = std::fs::read_to_string(repo().join("policies/demo.yaml")).expect("demo");
    let policy = demo
        .replace("127.0.0.1:8080", &listen.to_string())
        .replace("127.0.0.1:9901", &admin.to_string())
        .replace("127.0.0.1:9090", &echo.to_string())
        .replace(
            "../fixtures/demo-admin-token",
            &repo()
                .join("fixtures/demo-admin-token")
                .display()
                .to_string(),
        );
    let file = write(dir.path(), "demo.yaml", &policy);
    let log = std::fs::File::create(dir.path().join("stdout.log")).expect("log");
    let child = Child(
        bin()
            .args([
                "run",
                "-c",
                file.to_str().expect("utf8"),
                "--echo",
                &echo.to_string(),
            ])
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );

    assert!(get(listen, "/widgets/1", "").starts_with("HTTP/1.1 401"));
    let ok = get(listen, "/widgets/1", "X-Api-Key: demo-key-123\r\n");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("\"x-client-id\": \"acme-mobile\""), "{ok}");
    assert!(ok.contains("\"x-client-tier\": \"gold\""), "{ok}");
    assert!(!ok.contains("x-api-key"), "{ok}");
    assert!(
        ok.to_ascii_lowercase()
            .contains("x-served-by: portcullis for acme-mobile"),
        "{ok}"
    );
    assert!(get(listen, "/widgets/1?api_key=demo-key-123", "").starts_with("HTTP/1.1 400"));
    assert!(get(listen, "/nowhere", "").starts_with("HTTP/1.1 404"));
    let health = get(
        admin,
        "/healthz",
        "Authorization: Bearer demo-admin-token\r\n",
    );
    assert!(health.contains("\"generation\": 1"), "{health}");

    // SIGHUP reloads the edited file.
    std::fs::write(
        &file,
        policy.replace("portcullis for ${client.id}", "reloaded"),
    )
    .expect("edit");
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = get(listen, "/widgets/1", "X-Api-Key: demo-key-123\r\n");
        if ok.to_ascii_lowercase().contains("x-served-by: reloaded") {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload:\n{ok}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A broken edit is refused; the old policy keeps serving.
    std::fs::write(&file, "services: [").expect("edit");
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
    std::thread::sleep(Duration::from_millis(300));
    let ok = get(listen, "/widgets/1", "X-Api-Key: demo-key-123\r\n");
    assert!(
        ok.to_ascii_lowercase().contains("x-served-by: reloaded"),
        "{ok}"
    );
    let health = get(
        admin,
        "/healthz",
        "Authorization: Bearer demo-admin-token\r\n",
    );
    assert!(health.contains("\"generation\": 2"), "{health}");
    drop(child);
    let log = std::fs::read_to_string(dir.path().join("stdout.log")).expect("log");
    assert!(log.contains("\"client_id\":\"acme-mobile\""), "{log}");
    assert!(
        !log.contains("demo-key-123"),
        "a key reached the access log"
    );
}

/// Every example policy loads; each one also has a test of its behaviour (the demo above).
#[test]
fn every_policy_in_the_policies_folder_passes_check() {
    let mut count = 0;
    for entry in std::fs::read_dir(repo().join("policies")).expect("policies") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let out = run(&["check", "-c", path.to_str().expect("utf8")]);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
        count += 1;
    }
    assert!(count >= 1);
}

/// `portcullis sign` makes what `require_hmac` accepts, and `eval` shows the canonical
/// request and string to sign it computed (never the secret) when it refuses.
#[test]
fn sign_then_eval_against_the_hmac_partner_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sign = |secret: &str, extra: &[&str]| {
        let mut args = vec![
            "sign",
            "aws-sigv4",
            "--access-key",
            "AKIDPARTNERONE",
            "--secret-env",
            "PARTNER_SECRET",
            "--region",
            "eu-west-1",
            "--service",
            "orders",
            "-H",
            "Content-Type: application/json",
            "--data",
            "{\"qty\":1}",
        ];
        args.extend_from_slice(extra);
        let out = bin()
            .args(&args)
            .args(["POST", "http://gateway.test/partner/orders?b=2"])
            .env("PARTNER_SECRET", secret)
            .current_dir(repo())
            .output()
            .expect("runs");
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let http_file = |headers: &str, name: &str| {
        write(
            dir.path(),
            name,
            &format!(
                "POST /partner/orders?b=2 HTTP/1.1\r\nHost: gateway.test\r\n{}\r\n{{\"qty\":1}}",
                headers.replace('\n', "\r\n")
            ),
        )
    };

    let good = http_file(&sign("partner-one-secret-2026-11", &[]), "good.http");
    let out = run(&[
        "eval",
        "-c",
        "policies/hmac-partner-api.yaml",
        "--request",
        good.to_str().expect("utf8"),
    ]);
    let stdout = squeeze(&text(&out.stdout));
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("require_hmac PASS passed"), "{stdout}");
    assert!(
        stdout.contains("key AKIDPARTNERONE of client \"partner-one\""),
        "{stdout}"
    );

    let bad = http_file(&sign("a-wrong-secret", &[]), "bad.http");
    let out = run(&[
        "eval",
        "-c",
        "policies/hmac-partner-api.yaml",
        "--request",
        bad.to_str().expect("utf8"),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("403 SignatureDoesNotMatch"), "{stdout}");
    assert!(stdout.contains("canonical request:\n"), "{stdout}");
    assert!(
        stdout.contains(
            "POST\n/partner/orders\nb=2\ncontent-type:application/json\nhost:gateway.test\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("string to sign:\nAWS4-HMAC-SHA256\n"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("partner-one-secret"),
        "a secret was printed:\n{stdout}"
    );

    // A presigned URL verifies too.
    let url = sign("partner-one-secret-2026-11", &["--presign", "300"]);
    let path = url.trim().strip_prefix("http://gateway.test").expect("url");
    let presigned = write(
        dir.path(),
        "presigned.http",
        &format!("POST {path} HTTP/1.1\r\nHost: gateway.test\r\n\r\n{{\"qty\":1}}"),
    );
    let out = run(&[
        "eval",
        "-c",
        "policies/hmac-partner-api.yaml",
        "--request",
        presigned.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn sign_makes_jwt_bearer_assertions_an_independent_library_verifies() {
    use base64::Engine as _;
    use jwt_simple::prelude::*;
    let key = repo().join("fixtures/oauth/cloud-rs256-b.key.pem");
    let key = key.to_str().expect("path");
    let out = run(&["sign", "jwks", "--key", key, "--kid", "k1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let jwks: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let jwk = &jwks["keys"][0];
    assert_eq!(
        (jwk["kid"].as_str(), jwk["kty"].as_str()),
        (Some("k1"), Some("RSA"))
    );
    assert!(jwk.get("d").is_none(), "no private part");
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v.as_str().expect("str"))
            .expect("b64")
    };
    let public = RS256PublicKey::from_components(&b64(&jwk["n"]), &b64(&jwk["e"])).expect("key");
    let out = run(&[
        "sign",
        "jwt-bearer",
        "--key",
        key,
        "--kid",
        "k1",
        "--iss",
        "https://cloud.example.com",
        "--sub",
        "role-account-x",
        "--aud",
        "https://gateway.example.com/oauth2/token",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let assertion = text(&out.stdout);
    let opts = VerificationOptions {
        allowed_issuers: Some(HashSet::from_strings(&["https://cloud.example.com"])),
        allowed_audiences: Some(HashSet::from_strings(&[
            "https://gateway.example.com/oauth2/token",
        ])),
        ..VerificationOptions::default()
    };
    let claims = public
        .verify_token::<NoCustomClaims>(assertion.trim(), Some(opts))
        .expect("jwt-simple verifies our assertion");
    assert_eq!(claims.subject.as_deref(), Some("role-account-x"));
    assert!(claims.jwt_id.is_some_and(|j| j.len() >= 20));
    // The secret key never comes from the command line: a missing file is an error.
    let out = run(&[
        "sign",
        "jwt-bearer",
        "--key",
        "/nonexistent.pem",
        "--kid",
        "k",
        "--iss",
        "i",
        "--sub",
        "s",
        "--aud",
        "a",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/nonexistent.pem"),
        "{}",
        text(&out.stderr)
    );
}

/// `check --connect` asks a Redis state store for `PING` with the password from the
/// policy's secret, and reports one that does not answer; plain `check` connects nowhere.
#[test]
fn check_connect_pings_a_redis_state_store() {
    let redis = portcullis::redis::test_servers::RedisServer::start_with_password("pw 1");
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "redis-password", "pw 1");
    let policy = write(
        dir.path(),
        "fleet.yaml",
        &format!(
            "state: {}\nredis:\n  password_secret: redis\nsecrets:\n  redis: {{file: redis-password}}\nservices: []\n",
            redis.url()
        ),
    );
    let policy = policy.to_str().expect("utf8");
    let out = run(&["check", "-c", policy, "--connect"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("answered PING"), "{stdout}");
    assert!(
        stdout.contains("(standalone mode)") && stdout.contains("Redis "),
        "the version and mode are reported: {stdout}"
    );
    assert!(!stdout.contains("pw 1"), "{stdout}");

    let mut redis = redis;
    redis.kill();
    let out = run(&["check", "-c", policy]);
    assert!(out.status.success(), "plain check connects nowhere");
    let out = run(&["check", "-c", policy, "--connect"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("state {}", redis.url())),
        "{stderr}"
    );
    assert!(!stderr.contains("pw 1"), "{stderr}");
}

/// `rediss://` with `redis.ca_file`: the CA named in the policy is the one trusted.
#[test]
fn check_connect_reaches_a_tls_redis_through_its_ca_file() {
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tls");
    let redis = portcullis::redis::test_servers::RedisServer::start_tls(
        &tls.join("server.pem"),
        &tls.join("server.key"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(
        dir.path(),
        "tls.yaml",
        &format!(
            "state: rediss://localhost:{}\nredis:\n  ca_file: {}\n  connect_timeout: 5s\nservices: []\n",
            redis.port(),
            tls.join("ca.pem").display()
        ),
    );
    let out = run(&["check", "-c", policy.to_str().expect("utf8"), "--connect"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("answered PING"),
        "{}",
        text(&out.stdout)
    );
}

/// The `redis:` block's mistakes, each at its line and column.
#[test]
fn check_reports_redis_option_mistakes_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "redis.yaml",
        "state: redis://user:inline@10.0.0.1:6379\nredis:\n  password_secret: nope\n  timeout: 0s\n  ca_file: ca.pem\n  key_prefix: \"a{b}\"\n  breaker_failures: 0\n  colour: red\nservices: []\n",
    );
    let out = run(&["check", "-c", file.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let f = file.display();
    for expected in [
        format!("{f}:8:3: "),
        format!("{f}:3:20: "),
        format!("{f}:4:12: timeout must be between"),
        format!("{f}:5:12: ca_file is for TLS"),
        format!("{f}:6:15: key_prefix must be non-empty"),
        format!("{f}:7:21: breaker_failures must be at least 1"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("inline"),
        "the URL's password is never printed:\n{stderr}"
    );

    let other = write(
        dir.path(),
        "misplaced.yaml",
        "state: memory\nredis:\n  timeout: 20ms\nservices: []\n",
    );
    let out = run(&["check", "-c", other.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("redis: sets up a Redis state store, but state: is memory"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_reports_upstream_pool_mistakes_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "pools.yaml",
        concat!(
            "services:\n",
            "  - name: both\n",
            "    match: {path: /both}\n",
            "    upstream: {url: \"http://127.0.0.1:9000\", targets: [\"http://127.0.0.1:9001\"]}\n",
            "  - name: mixed\n",
            "    match: {path: /mixed}\n",
            "    upstream:\n",
            "      targets:\n",
            "        - http://127.0.0.1:9000\n",
            "        - https://127.0.0.1:9001\n",
            "  - name: heavy\n",
            "    match: {path: /heavy}\n",
            "    upstream:\n",
            "      targets:\n",
            "        - {url: \"http://127.0.0.1:9000\", weight: 500}\n",
            "  - name: hashing\n",
            "    match: {path: /hashing}\n",
            "    upstream:\n",
            "      targets: [\"http://127.0.0.1:9000\"]\n",
            "      balance: consistent_hash\n",
            "  - name: key-alone\n",
            "    match: {path: /key}\n",
            "    upstream:\n",
            "      targets: [\"http://127.0.0.1:9000\"]\n",
            "      hash_on: \"${client.ip}\"\n",
            "  - name: follow-list\n",
            "    match: {path: /follow}\n",
            "    upstream:\n",
            "      targets: [\"http://127.0.0.1:9000\"]\n",
            "      resolve_every: 10s\n",
            "  - name: twice\n",
            "    match: {path: /twice}\n",
            "    upstream:\n",
            "      targets: [\"http://127.0.0.1:9000\", \"http://127.0.0.1:9000\"]\n",
            "  - name: checks\n",
            "    match: {path: /checks}\n",
            "    upstream:\n",
            "      url: http://127.0.0.1:9000\n",
            "      health_check: {path: healthz, interval: 10ms}\n",
            "      retries: {attempts: 9}\n",
            "      max_connections: 0\n",
        ),
    );
    let out = run(&["check", "-c", file.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let f = file.display();
    for expected in [
        format!("{f}:4:15: an upstream has either `url` or `targets`, not both (at services[0].upstream)"),
        format!("{f}:10:11: every target of an upstream needs the same scheme and base path as the first (at services[1].upstream.targets[1])"),
        format!("{f}:15:11: a weight is between 1 and 100 (at services[2].upstream.targets[0].weight)"),
        format!("{f}:20:16: consistent_hash needs hash_on"),
        format!("{f}:25:16: hash_on goes with `balance: consistent_hash` (at services[4].upstream.hash_on)"),
        format!("{f}:30:22: resolve_every follows the host name of `url`"),
        format!("{f}:34:42: two targets of this upstream are the same address 127.0.0.1:9000"),
        format!("{f}:39:21: \"healthz\" is not a path such as /healthz (at services[7].upstream.health_check.path)"),
        format!("{f}:40:16: attempts is at most 5 (at services[7].upstream.retries.attempts)"),
        format!("{f}:41:24: max_connections is at least 1"),
    ] {
        assert!(
            squeeze(&stderr).contains(&squeeze(&expected)),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

/// The `identity_api:` section and `require_ip_identity` steps: every mistake at its
/// `file:line:col` with its path; a writer must be a user of the users file.
#[test]
fn check_reports_identity_api_mistakes_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "users.yaml", "users: []\n");
    let policy = write(
        dir.path(),
        "p.yaml",
        "admin:\n  token: t\nsecrets:\n  t: {env: PORTCULLIS_TEST_TOKEN}\nidentity_api:\n  allow_from: []\n  users_file: users.yaml\n  writers: [dhcp]\n  interfaces: [wan, \"a b\", wan]\nservices:\n  - name: s\n    upstream: http://127.0.0.1:1\n    request:\n      - require_ip_identity: {groups: [\"a,b\"], interfaces: [lan], via: x}\n",
    );
    let out = bin()
        .env("PORTCULLIS_TEST_TOKEN", "x")
        .args(["check", "-c", policy.to_str().expect("utf8")])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let p = policy.display();
    for expected in [
        format!("{p}:6:15: list the addresses"),
        format!("{p}:8:13: \"dhcp\" is not a user of the users file (at identity_api.writers[0])"),
        format!("{p}:9:21: an interface name is 1 to 64"),
        format!("{p}:9:28: interface \"wan\" is listed twice (at identity_api.interfaces[2])"),
        format!("{p}:14:40: a group name is not empty and holds no comma (at services[0].request[0].require_ip_identity.groups[0])"),
        "unknown field \"via\"".to_owned(),
    ] {
        assert!(err.contains(&expected), "lacks {expected}:\n{err}");
    }
    // Without an admin listener there is nowhere to serve the API.
    let no_admin = write(
        dir.path(),
        "q.yaml",
        "identity_api:\n  allow_from: [10.0.0.2]\nservices: []\n",
    );
    let out = run(&["check", "-c", no_admin.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(":2:3: the userauth API is served on the admin listener"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_reports_token_service_mistakes_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "oauth.yaml",
        r#"state: postgres://db
token_service:
  issuer: gateway.example.com
  signing_keys:
    - {kid: a, file: missing.pem}
  clients:
    - id: app
      scopes: [a]
  trusted_issuers:
    - issuer: https://cloud.example
      keys_url: ftp://keys
      client: cloud
      algorithms: [HS256]
      accounts: {}
services:
  - name: api
    upstream: http://127.0.0.1:9000
    request:
      - require_bearer: {scopes: [a], issuer: {issuer: x, keys_url: "http://k"}, introspection: {url: "http://i", client_id: c, client_secret: s}}
      - require_bearer: {scope_match: some}
"#,
    );
    let out = run(&["check", "-c", file.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let f = file.display();
    for expected in [
        format!("{f}:1:8: \"postgres://db\" is not a state store: use memory, sqlite://PATH, redis://HOST:PORT"),
        format!("{f}:3:11: the issuer must be an http(s) URL (RFC 8414)"),
        format!("{f}:5:22: cannot read key file"),
        format!("{f}:7:7: give exactly one of `secret_sha256` and `secret`"),
        format!("{f}:13:20: unknown value \"HS256\"; did you mean \"RS256\"?"),
        format!("{f}:19:9: give `issuer:` (JWTs checked with its keys) or `introspection:` (RFC 7662), not both (at services[0].request[0].require_bearer)"),
        format!("{f}:20:39: unknown value \"some\"; expected one of: all, any"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(
        !dir.path().join("portcullis.db").exists(),
        "check creates no state file"
    );
}

#[test]
fn check_refuses_ambiguous_prefixes_and_warns_about_case_only_differences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write(
        dir.path(),
        "paths.yaml",
        "listen: 127.0.0.1:8080\nservices:\n  - name: a\n    match: {path: \"/a;x\"}\n    upstream: http://127.0.0.1:9000\n  - name: b\n    match: {path: /b/../c}\n    upstream: http://127.0.0.1:9000\n  - name: c\n    match: {path: /Legacy, path_case: insensitive}\n    upstream: http://127.0.0.1:9000\n  - name: d\n    match: {path: /legacy}\n    upstream: http://127.0.0.1:9000\n",
    );
    let out = run(&["check", "-c", bad.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let f = bad.display();
    assert!(
        stderr.contains(&format!(
            "{f}:4:19: path \"/a;x\" holds ';' path parameters"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{f}:7:19: path \"/b/../c\" is refused")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{f}:12:11: service \"d\" matches the same host and path as \"c\""
        )),
        "{stderr}"
    );

    let warned = write(
        dir.path(),
        "case.yaml",
        "listen: 127.0.0.1:8080\nservices:\n  - name: upper\n    match: {path: /Private}\n    upstream: http://127.0.0.1:9000\n  - name: lower\n    match: {path: /private}\n    upstream: http://127.0.0.1:9000\n",
    );
    let out = run(&["check", "-c", warned.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:6:11: service \"lower\" has a path that differs only by letter case",
            warned.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("[warning]"), "{stderr}");
}

#[test]
fn check_refuses_devices_fifos_and_huge_files_at_the_line_that_names_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Sparse: a gigabyte that takes no disk, and must not be read into memory.
    let huge = dir.path().join("huge-secret");
    std::fs::File::create(&huge)
        .expect("create")
        .set_len(1 << 30)
        .expect("sparse");
    let fifo = dir.path().join("fifo-secret");
    let fifo_made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    let policy = write(
        dir.path(),
        "files.yaml",
        &format!(
            "listen: 127.0.0.1:8080\ninclude: [/dev/zero]\nsecrets:\n  big: {{file: {}}}\n  dev: {{file: /dev/zero}}\n{}services: []\n",
            huge.display(),
            if fifo_made {
                format!("  pipe: {{file: {}}}\n", fifo.display())
            } else {
                String::new()
            }
        ),
    );
    let started = Instant::now();
    let out = run(&["check", "-c", policy.to_str().expect("utf8")]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "check must not hang or read a gigabyte"
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let f = policy.display();
    assert!(
        stderr.contains(&format!(
            "{f}:2:11: cannot read policy file /dev/zero: not a regular file"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{f}:4:8: cannot read secret file {}: larger than the 65536 bytes",
            huge.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{f}:5:8: cannot read secret file /dev/zero: not a regular file"
        )),
        "{stderr}"
    );
    if fifo_made {
        assert!(
            stderr.contains(&format!(
                "{f}:6:9: cannot read secret file {}: not a regular file",
                fifo.display()
            )),
            "{stderr}"
        );
    }
}

#[test]
fn check_refuses_body_and_upstream_steps_inside_any_at_their_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(
        dir.path(),
        "any.yaml",
        "listen: 127.0.0.1:8080\nservices:\n  - name: a\n    upstream: http://127.0.0.1:9000\n    response:\n      - any:\n          - mask_pan: {}\n          - set_header: {name: X-A, value: a}\n  - name: b\n    upstream: http://127.0.0.1:9000\n    match: {path: /b}\n    request:\n      - any:\n          - all: [{allow_ip: [10.0.0.0/8]}, {mask_pan: {}}]\n          - allow_ip: [192.168.0.0/16]\n",
    );
    let out = run(&["check", "-c", policy.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let f = policy.display();
    assert!(
        stderr.contains(&format!("{f}:7:13: mask_pan cannot sit inside `any`: it edits the request that goes upstream and rewrites the response body")),
        "{stderr}"
    );
    assert!(
        stderr.contains("put it in the response list itself"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{f}:14:45: mask_pan cannot sit inside `all`: it rewrites the request body"
        )),
        "{stderr}"
    );
}

/// Started as root with `user: nobody`, the gateway binds its listeners, then runs as nobody
/// (and still serves); started as root without `user:`, it says so loudly. Skipped when the
/// tests do not run as root.
#[test]
fn run_drops_root_after_binding_when_told_and_warns_otherwise() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .unwrap_or_default();
    if uid.split_whitespace().nth(2) != Some("0") {
        eprintln!("not root: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin) = (free_addr(), free_addr());
    write(dir.path(), "token", "t0ken");
    let base = format!(
        "listen: {listen}\nadmin: {{listen: {admin}, token: admin}}\nsecrets: {{admin: {{file: token}}}}\nstate: memory\naccess_log: off\nservices:\n  - name: s\n    upstream: http://127.0.0.1:9\n"
    );
    let policy = write(dir.path(), "p.yaml", &format!("user: nobody\n{base}"));
    let child = Child(
        bin()
            .args(["run", "-c", policy.to_str().expect("utf8")])
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let answer = get(listen, "/x", "");
    assert!(
        answer.starts_with("HTTP/1.1 502"),
        "still serving: {answer}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status_file = format!("/proc/{}/status", child.0.id());
    loop {
        let status = std::fs::read_to_string(&status_file).expect("status");
        let uids = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .expect("uid line")
            .to_owned();
        let nobody = uids.split_whitespace().skip(1).all(|u| u == "65534");
        if nobody {
            break;
        }
        assert!(Instant::now() < deadline, "still {uids}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        get(listen, "/x", "").starts_with("HTTP/1.1 502"),
        "serves as nobody"
    );
    drop(child);

    let (listen, admin) = (free_addr(), free_addr());
    let policy = write(
        dir.path(),
        "root.yaml",
        &format!("listen: {listen}\nadmin: {{listen: {admin}, token: admin}}\nsecrets: {{admin: {{file: token}}}}\nstate: memory\naccess_log: off\nservices: []\n"),
    );
    let mut child = Child(
        bin()
            .args(["run", "-c", policy.to_str().expect("utf8")])
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let _ = get(listen, "/x", "");
    let _ = child.0.kill();
    let mut stderr = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(stderr.contains("running as root"), "{stderr}");
}

/// Sends a raw request and returns the whole answer.
fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Counts a token's uses, then kills the gateway with SIGKILL (no shutdown flush) and reads
/// the count back after a restart: all of them with `usage.durable`, none of them (with a
/// long flush interval) without.
#[test]
fn durable_usage_survives_a_kill_and_batched_usage_says_what_it_loses() {
    for durable in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (listen, admin) = (free_addr(), free_addr());
        write(dir.path(), "admin-token", "adm1n");
        write(dir.path(), "app.secret", "app-s3cret");
        let key = repo().join("fixtures/oauth/gateway-es256-2026b.pem");
        let policy = write(
            dir.path(),
            "p.yaml",
            &format!(
                "listen: {listen}\nadmin: {{listen: {admin}, token: admin}}\nsecrets:\n  admin: {{file: admin-token}}\n  app: {{file: app.secret}}\nstate: sqlite://usage.db\naccess_log: off\ntoken_service:\n  issuer: https://gw.test\n  signing_keys: [{{kid: k, file: {}}}]\n  clients: [{{id: app, secret: app, scopes: [a], token_format: opaque}}]\n  usage: {{durable: {durable}, flush_interval: 1h}}\nservices:\n  - name: s\n    upstream: http://127.0.0.1:9\n    request:\n      - require_bearer: {{scopes: [a]}}\n",
                key.display()
            ),
        );
        let start = || {
            Child(
                bin()
                    .args(["run", "-c", policy.to_str().expect("utf8")])
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn"),
            )
        };
        let mut gateway = start();
        let _ = get(admin, "/healthz", "Authorization: Bearer adm1n\r\n");
        let form = "grant_type=client_credentials&client_id=app&client_secret=app-s3cret";
        let answer = raw(listen, &format!("POST /oauth2/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}", form.len()));
        let token = answer
            .split("\"access_token\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no token in {answer}"))
            .to_owned();
        for _ in 0..5 {
            let answer = get(listen, "/x", &format!("Authorization: Bearer {token}\r\n"));
            assert!(
                answer.starts_with("HTTP/1.1 502"),
                "the pipeline passed: {answer}"
            );
        }
        let _ = gateway.0.kill();
        let _ = gateway.0.wait();
        let _gateway = start();
        let tokens = get(
            admin,
            "/api/tokens?client_id=app",
            "Authorization: Bearer adm1n\r\n",
        );
        let body: serde_json::Value =
            serde_json::from_str(tokens.split("\r\n\r\n").nth(1).expect("body")).expect("json");
        let expected = if durable { 5 } else { 0 };
        assert_eq!(
            body["tokens"][0]["usage"]["count"].as_u64(),
            Some(expected),
            "durable {durable}: {tokens}"
        );
    }
}

/// Every complete policy (a YAML block with top-level `services:`) in the README and
/// `docs/` passes `check`, so the docs cannot drift from the policy language. Environment
/// variables they name are set, relative files they name are created (an HTTPS listener's
/// certificate and key are the test ones), includes get an empty file to match.
#[test]
fn every_complete_policy_in_the_docs_passes_check() {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.push(repo().join("README.md"));
    docs.sort();
    let mut checked = 0;
    for doc in &docs {
        let markdown = std::fs::read_to_string(doc).expect("doc");
        for block in markdown.split("```yaml\n").skip(1) {
            let block = block.split("```").next().unwrap_or_default();
            if !block.lines().any(|l| l.starts_with("services:")) {
                continue;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cmd = bin();
            for line in block.lines() {
                if let Some(var) = line
                    .split("{env: ")
                    .nth(1)
                    .and_then(|r| r.split('}').next())
                {
                    cmd.env(var.trim(), "doc-example-value");
                }
                if let Some(file) = line
                    .split("{file: ")
                    .nth(1)
                    .and_then(|r| r.split('}').next())
                {
                    let file = file.trim();
                    if !file.starts_with('/') {
                        let path = dir.path().join(file);
                        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
                        std::fs::write(path, "doc-example-value").expect("write");
                    }
                }
                // An HTTPS listener's files: the test certificate and key.
                for (option, fixture) in
                    [("  certificate: ", "server.pem"), ("  key: ", "server.key")]
                {
                    if let Some(file) = line.strip_prefix(option) {
                        let file = file.split('#').next().unwrap_or_default().trim();
                        let path = dir.path().join(file);
                        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
                        std::fs::copy(repo().join("fixtures/tls").join(fixture), path)
                            .expect("copy");
                    }
                }
                if let Some(pattern) = line
                    .strip_prefix("include: [\"")
                    .and_then(|r| r.split('"').next())
                {
                    let path = dir.path().join(pattern.replace('*', "example"));
                    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
                    std::fs::write(path, "services: []\n").expect("write");
                }
            }
            let policy = write(dir.path(), "policy.yaml", block);
            let out = cmd
                .args(["check", "-c", policy.to_str().expect("utf8")])
                .output()
                .expect("runs");
            assert!(
                out.status.success(),
                "{}: a policy in the docs does not pass check:\n{block}\n{}",
                doc.display(),
                text(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "only {checked} complete policies found in the docs"
    );
}

/// Routes that could take the same request at the same precedence, bad templates and
/// conditions that contradict the service are refused at their positions, naming both
/// services of a tie.
#[test]
fn check_refuses_routes_that_tie_or_cannot_be_reached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(
        dir.path(),
        "routes.yaml",
        r#"listen: 127.0.0.1:8080
services:
  - name: a
    match: {path: "/x/{id}"}
    upstream: http://127.0.0.1:9000
  - name: b
    match: {path: "/x/{other}"}
    upstream: http://127.0.0.1:9000
  - name: c
    match: {path: "/y/{id}x"}
    upstream: http://127.0.0.1:9000
  - name: d
    match: {path: /z, methods: [GET, POST]}
    methods: [GET]
    upstream: http://127.0.0.1:9000
  - name: e
    match: {path: /w, headers: {X-V: "1"}}
    upstream: http://127.0.0.1:9000
  - name: f
    match: {path: /w, methods: [GET]}
    upstream: http://127.0.0.1:9000
  - name: g
    match: {path: /w, headers: {X-V: "2"}, methods: [GET]}
    upstream: http://127.0.0.1:9000
  - name: h
    match: {path: /v, path_match: exact}
    upstream: http://127.0.0.1:9000
  - name: i
    match: {path: /v, path_match: exakt}
    upstream: http://127.0.0.1:9000
  - name: j
    match: {path: "/u/{id}/{id}"}
    upstream: http://127.0.0.1:9000
"#,
    );
    let out = run(&["check", "-c", policy.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let f = policy.display();
    for expected in [
        format!("{f}:6:11: service \"b\" matches the same host and path as \"a\" (at {f}:3:11)"),
        format!(
            "{f}:10:19: segment \"{{id}}x\" of \"/y/{{id}}x\": a parameter takes a whole segment"
        ),
        format!("{f}:13:38: POST is routed to this service, but its methods refuse it"),
        format!("{f}:19:11: service \"f\" matches the same host and path as \"e\" (at {f}:16:11)"),
        format!("{f}:29:35: unknown value \"exakt\"; did you mean \"exact\"?"),
        format!("{f}:32:19: parameter {{id}} appears twice"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    // g asks more (a header and a method) than e or f: it is tried first, no tie.
    assert!(!stderr.contains("service \"g\""), "{stderr}");
    assert!(stderr.trim_end().ends_with("6 error(s)"), "{stderr}");
}

#[test]
fn check_refuses_a_path_variable_the_route_does_not_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(
        dir.path(),
        "vars.yaml",
        "listen: 127.0.0.1:8080\nservices:\n  - name: a\n    match: {path: \"/orders/{id}\"}\n    upstream: http://127.0.0.1:9000\n    request:\n      - set_header: {name: X-Id, value: \"${path.id} $${path.literal}\"}\n  - name: b\n    match: {path: /items}\n    upstream: http://127.0.0.1:9000\n    request:\n      - set_header: {name: X-Id, value: \"${path.id}\"}\n",
    );
    let out = run(&["check", "-c", policy.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:8:11: ${{path.id}} is used in this service, but its path \"/items\" has no parameters",
            policy.display()
        )),
        "{stderr}"
    );
    assert!(stderr.trim_end().ends_with("1 error(s)"), "{stderr}");
}

/// The broker sections' mistakes are each reported at their `file:line`, all at once:
/// `private_key_jwt` without its key (refused, never skipped), a short key secret, an
/// unknown provider, a provider without an authorization URL where a browser must go, and
/// `inject_oauth_token` naming a provider the outbound broker holds no session with.
#[test]
fn check_reports_broker_mistakes_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(
        dir.path(),
        "p.yaml",
        "secrets:
  short: {env: PORTCULLIS_TEST_SHORT}
  long: {env: PORTCULLIS_TEST_LONG}
providers:
  jwt:
    authorize_url: https://idp.example/authorize
    token_url: https://idp.example/token
    client_id: c
    client_secret: long
    token_auth: private_key_jwt
  machine:
    token_url: https://idp.example/token
    client_id: c
    client_secret: long
oproxy:
  public_url: https://gw.example
  key_secret: short
  apps:
    mail:
      provider: jwtt
    daemon:
      provider: machine
outbound_broker:
  public_url: https://gw-admin.example
  key_secret: long
  sessions:
    machine: client_credentials
services:
  - name: s
    upstream: http://127.0.0.1:1
    request:
      - inject_oauth_token: {provider: jwt}
",
    );
    let out = bin()
        .env("PORTCULLIS_TEST_SHORT", "too-short")
        .env(
            "PORTCULLIS_TEST_LONG",
            "a-key-secret-long-enough-0123456789abcdef",
        )
        .args(["check", "-c", policy.to_str().expect("utf8")])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let p = policy.display();
    for (line, expected) in [
        (10, "private_key_jwt needs private_key"),
        (17, "the key secret must be at least 32 characters"),
        (20, "unknown provider \"jwtt\"; did you mean \"jwt\"?"),
        (22, "provider \"machine\" has no authorize_url"),
        (32, "no session with provider \"jwt\""),
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("{p}:{line}:")) && l.contains(expected)),
            "lacks {expected} at line {line}:\n{err}"
        );
    }
}

/// SIGTERM: the listener closes at once, a request in flight finishes, and the process exits
/// as soon as it has (not after the whole `drain_timeout`), its access-log line written.
#[test]
fn sigterm_lets_requests_in_flight_finish_then_exits_at_once() {
    let backend = TcpListener::bind("127.0.0.1:0").expect("bind");
    let backend_addr = backend.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in backend.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut head = [0u8; 2048];
                let read = stream.read(&mut head).unwrap_or(0);
                if String::from_utf8_lossy(&head[..read]).contains("/slow") {
                    std::thread::sleep(Duration::from_millis(1500));
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndone",
                );
            });
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = free_addr();
    let policy = format!(
        "listen: {listen}\nworkers: 1\ndrain_timeout: 20s\naccess_log: {{file: access.log}}\nservices:\n  - name: slow\n    upstream: http://{backend_addr}\n"
    );
    let file = write(dir.path(), "drain.yaml", &policy);
    let mut child = Child(
        bin()
            .args(["run", "-c", file.to_str().expect("utf8")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    assert!(get(listen, "/quick", "").starts_with("HTTP/1.1 200"));
    let in_flight = std::thread::spawn(move || get(listen, "/slow", ""));
    std::thread::sleep(Duration::from_millis(400));
    let signalled = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill")
        .success());
    // New connections are refused while the request in flight is still being answered.
    let deadline = Instant::now() + Duration::from_secs(1);
    while TcpStream::connect(listen).is_ok() {
        assert!(Instant::now() < deadline, "the listener stayed open");
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = in_flight.join().expect("client");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("done"), "{answer}");
    let exit = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exit took {:?}: the drain waited for more than the request",
        signalled.elapsed()
    );
    let log = std::fs::read_to_string(dir.path().join("access.log")).expect("log");
    assert!(
        log.lines()
            .any(|line| line.contains("\"/slow\"") && line.contains("\"status\":200")),
        "{log}"
    );
}
