//! HTTPS listeners (`tls:`): HTTP/1.1 and HTTP/2 (ALPN) through the same policy, driven by
//! curl (OpenSSL + nghttp2) and by reqwest (rustls + hyper); handshakes are counted against
//! the connection caps and held to the head deadline; a bad certificate is refused at load
//! and at reload, where the running one keeps serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::{
    client, free_port, problem_code, wait_for_port, Backend, TestGateway, ADMIN_TOKEN,
};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tls")
        .join(name);
    std::fs::read_to_string(path).expect("fixture")
}

// sha256("demo-key-123")
const ACME: &str = "a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873";

struct HttpsGateway {
    gw: TestGateway,
    tls: SocketAddr,
}

impl HttpsGateway {
    fn start(backend: &Backend, http2: bool, limits: &str) -> HttpsGateway {
        let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let services = format!(
            r#"
tls:
  listen: {tls}
  certificate: server.pem
  key: server.key
  http2: {http2}
{limits}
services:
  - name: widgets
    match: {{path: /widgets}}
    upstream: {{backend}}
    request:
      - require_api_key:
          keys: [{{client: acme, sha256: {ACME}}}]
      - set_header: {{name: X-Client, value: "${{client.id}}"}}
  - name: slow
    match: {{path: /slow}}
    upstream: {{backend}}
  - name: vault
    match: {{path: /vault}}
    https_only: true
    upstream: {{backend}}
  - name: checked
    match: {{path: /checked}}
    upstream: {{backend}}
    request:
      - validate_json: {{}}
"#
        );
        let gw = TestGateway::start_with_files(
            &services,
            &backend.url(),
            &[
                ("server.pem", &fixture("server.pem")),
                ("server.key", &fixture("server.key")),
            ],
        );
        wait_for_port(tls);
        HttpsGateway { gw, tls }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.tls.port())
    }
}

/// A reqwest client that trusts the test CA and resolves `localhost` to the listener.
fn https_client(http2: bool) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(fixture("ca.pem").as_bytes()).expect("ca");
    let builder = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false);
    let builder = if http2 { builder } else { builder.http1_only() };
    builder.build().expect("client")
}

/// curl's answer: the HTTP version it spoke, the status, and the body.
fn curl(args: &[&str], url: &str) -> (String, u16, String) {
    let ca = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tls/ca.pem");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&ca)
        .args(args)
        .args(["-w", "\n%{http_version} %{http_code}", url])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, trailer) = text.rsplit_once('\n').expect("curl's -w line");
    let (version, status) = trailer.split_once(' ').expect("version and status");
    (
        version.to_owned(),
        status.parse().unwrap_or(0),
        body.to_owned(),
    )
}

#[test]
fn https_serves_http11_and_http2_through_the_same_policy() {
    let backend = Backend::start();
    let gw = HttpsGateway::start(&backend, true, "");

    // curl (OpenSSL, nghttp2) negotiates h2 by ALPN, and HTTP/1.1 when told to.
    let (version, status, body) = curl(&["-H", "X-Api-Key: demo-key-123"], &gw.url("/widgets/1"));
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    let seen = backend.seen().pop().expect("reached");
    assert_eq!(seen.headers["x-client"], "acme");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert!(
        !seen.headers.contains_key("x-api-key"),
        "credential stripped"
    );
    assert_eq!(seen.uri, "/widgets/1", "origin form upstream");
    let (version, status, body) = curl(&["--http2"], &gw.url("/widgets/1"));
    assert_eq!((version.as_str(), status), ("2", 401), "{body}");
    assert!(body.contains("missing-api-key"), "{body}");
    let (version, status, _) = curl(
        &["--http1.1", "-H", "X-Api-Key: demo-key-123"],
        &gw.url("/widgets/2"),
    );
    assert_eq!((version.as_str(), status), ("1.1", 200));

    // reqwest (rustls, hyper): the same answers, several requests on one HTTP/2 connection.
    let c = https_client(true);
    for index in 0..5 {
        let resp = c
            .get(gw.url(&format!("/widgets/{index}")))
            .header("x-api-key", "demo-key-123")
            .send()
            .expect("send");
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
    }
    let resp = c
        .post(gw.url("/widgets"))
        .header("x-api-key", "demo-key-123")
        .body("x".repeat(100_000))
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(backend.seen().pop().expect("reached").body.len(), 100_000);
    let (status, code, _) = problem_code(
        c.get(gw.url("/widgets/1"))
            .header("x-api-key", "wrong")
            .send()
            .expect("send"),
    );
    assert_eq!((status, code.as_str()), (401, "invalid-api-key"));
    let resp = https_client(false)
        .get(gw.url("/widgets/1"))
        .header("x-api-key", "demo-key-123")
        .send()
        .expect("send");
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);

    // The plain listener keeps serving beside it.
    let resp = client()
        .get(gw.gw.url("/widgets/1"))
        .header("x-api-key", "demo-key-123")
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        backend.seen().pop().expect("reached").headers["x-forwarded-proto"],
        "http"
    );
}

#[test]
fn without_http2_the_listener_offers_http11_only() {
    let backend = Backend::start();
    let gw = HttpsGateway::start(&backend, false, "");
    let (version, status, _) = curl(
        &["--http2", "-H", "X-Api-Key: demo-key-123"],
        &gw.url("/widgets/1"),
    );
    assert_eq!((version.as_str(), status), ("1.1", 200));
}

#[test]
fn handshakes_count_against_the_caps_and_the_head_deadline() {
    let backend = Backend::start();
    let gw = HttpsGateway::start(
        &backend,
        true,
        "client_limits: {header_timeout: 1s, max_connections_per_ip: 2}",
    );
    // Two connections that never say hello hold both places of this address...
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(gw.tls).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // ...so a third is refused at once, before any handshake.
    let mut third = TcpStream::connect(gw.tls).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = third.read_to_end(&mut answer);
    assert!(
        String::from_utf8_lossy(&answer).contains("429"),
        "{answer:?}"
    );
    // The silent ones are closed at the head deadline (1 s), well before the read timeout.
    for mut connection in silent {
        connection
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut byte = [0u8; 1];
        let read = connection.read(&mut byte);
        assert!(
            matches!(read, Ok(0) | Err(_))
                && !matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{read:?}"
        );
    }
    let metrics = client()
        .get(gw.gw.admin_url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("send")
        .text()
        .expect("text");
    // server.pem is valid until 2036-11-20.
    assert!(
        metrics.contains("portcullis_tls_certificate_not_after_seconds 2110785260"),
        "no expiry gauge"
    );
    assert!(
        metrics.contains("reason=\"tls_handshake\"} 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("cutoffs"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // After TLS, a client that offered h2 must open with the HTTP/2 preface in time too.
    let (version, status, _) = curl(&["-H", "X-Api-Key: demo-key-123"], &gw.url("/widgets/1"));
    assert_eq!((version.as_str(), status), ("2", 200));
}

#[test]
fn a_wrong_key_or_certificate_is_refused_at_load_and_at_reload() {
    let backend = Backend::start();
    let gw = HttpsGateway::start(&backend, true, "");
    let policy = std::fs::read_to_string(&gw.gw.config).expect("policy");
    std::fs::write(gw.gw.dir.path().join("other.key"), fixture("other.key.pem")).expect("key");
    std::fs::write(
        &gw.gw.config,
        policy.replace("key: server.key", "key: other.key"),
    )
    .expect("write");
    let reloaded = gw.gw.reload();
    assert_eq!(reloaded.status(), 422);
    let text = reloaded.text().expect("text");
    assert!(text.contains("does not go with the certificate"), "{text}");
    assert!(text.contains("tls.certificate"), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    // The running certificate keeps serving.
    let (version, status, _) = curl(&["-H", "X-Api-Key: demo-key-123"], &gw.url("/widgets/1"));
    assert_eq!((version.as_str(), status), ("2", 200));
    // Without `tls:` the bound HTTPS listener would have no certificate: refused.
    std::fs::write(
        &gw.gw.config,
        (policy.split("tls:").next().expect("head").to_owned()
            + &policy[policy.find("services:").expect("services")..])
            .replace("    https_only: true\n", ""),
    )
    .expect("write");
    let reloaded = gw.gw.reload();
    assert_eq!(reloaded.status(), 422);
    assert!(reloaded.text().expect("text").contains("keep `tls:`"));
    let (version, status, _) = curl(&["-H", "X-Api-Key: demo-key-123"], &gw.url("/widgets/1"));
    assert_eq!((version.as_str(), status), ("2", 200));
    // A certificate file that is not one is named at its option.
    std::fs::write(gw.gw.dir.path().join("broken.pem"), "not a certificate").expect("write");
    std::fs::write(
        &gw.gw.config,
        policy.replace("certificate: server.pem", "certificate: broken.pem"),
    )
    .expect("write");
    let errors = portcullis::config::load_dry_run(&gw.gw.config)
        .expect_err("refused")
        .to_string();
    assert!(errors.contains("holds no PEM certificate"), "{errors}");
    assert!(errors.contains("tls.certificate"), "{errors}");
}

#[test]
fn http2_requests_are_admitted_like_http11_ones() {
    // A request over h2 goes through the same front gates: TRACE is refused, a path that
    // escapes its service is refused, the h2c upgrade header means nothing here.
    let backend = Backend::start();
    let gw = HttpsGateway::start(&backend, true, "");
    let (version, status, _) = curl(
        &["-X", "TRACE", "-H", "X-Api-Key: demo-key-123"],
        &gw.url("/widgets/1"),
    );
    assert_eq!((version.as_str(), status), ("2", 405));
    let (_, status, _) = curl(
        &["--path-as-is", "-H", "X-Api-Key: demo-key-123"],
        &gw.url("/widgets/../admin"),
    );
    assert_ne!(status, 200);
    let mut raw = TcpStream::connect(gw.tls).expect("connect");
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    raw.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = raw.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plaintext is never served on the TLS port"
    );
    assert_eq!(backend.count(), 0);
}

#[test]
fn each_http2_stream_counts_against_the_connection_caps() {
    // A stream holds an upstream connection of its own: one client connection must not
    // hold a hundred upstream sockets past its address's cap.
    let backend = Backend::start();
    let gw = HttpsGateway::start(&backend, true, "client_limits: {max_connections_per_ip: 4}");
    let ca = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tls/ca.pem");
    let urls: Vec<String> = (0..6)
        .map(|index| gw.url(&format!("/slow/{index}")))
        .collect();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "--http2",
            "--parallel",
            "--parallel-max",
            "6",
            "--cacert",
        ])
        .arg(&ca)
        .args(["-w", "\nanswer %{http_version} %{http_code}\n"])
        .args(&urls)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let answers: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("answer "))
        .collect();
    assert_eq!(answers.len(), 6, "{text}");
    assert!(
        answers.iter().all(|line| line.starts_with("2 ")),
        "HTTP/2: {text}"
    );
    // The connection holds one place, its streams the other three; the rest are refused.
    let ok = answers.iter().filter(|line| line.ends_with(" 200")).count();
    let refused = answers.iter().filter(|line| line.ends_with(" 429")).count();
    assert_eq!((ok, refused), (3, 3), "{text}");
    // Their places are given back: the next streams are served.
    let (version, status, _) = curl(&[], &gw.url("/slow/again"));
    assert_eq!((version.as_str(), status), ("2", 200));
}

#[test]
fn an_http2_client_opens_within_the_head_deadline_and_its_headers_within_the_head_limit() {
    let backend = Backend::start();
    let gw = HttpsGateway::start(
        &backend,
        true,
        "client_limits: {header_timeout: 1s, idle_timeout: 30s, max_header_bytes: 4KiB}",
    );
    // TLS done with h2 chosen, then silence: closed at the head deadline (1 s), not after
    // the idle timeout (30 s). openssl exits when the gateway closes.
    let mut silent = Command::new("openssl")
        .args(["s_client", "-quiet", "-alpn", "h2", "-connect"])
        .arg(gw.tls.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl runs");
    let started = std::time::Instant::now();
    let closed = loop {
        if silent.try_wait().expect("wait").is_some() {
            break true;
        }
        if started.elapsed() > Duration::from_secs(15) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = silent.kill();
    assert!(
        closed,
        "a silent HTTP/2 connection was still open after 15 s"
    );

    // A header list over max_header_bytes never reaches the upstream over HTTP/2 either.
    let big = format!("X-Big: {}", "b".repeat(8 * 1024));
    let (_, status, _) = curl(
        &["-H", &big, "-H", "X-Api-Key: demo-key-123"],
        &gw.url("/widgets/1"),
    );
    assert_ne!(status, 200);
    assert_eq!(backend.count(), 0);
    let (version, status, _) = curl(&["-H", "X-Api-Key: demo-key-123"], &gw.url("/widgets/1"));
    assert_eq!((version.as_str(), status), ("2", 200));
}

#[test]
fn an_https_only_service_refuses_what_came_in_plain() {
    let backend = Backend::start();
    let gw = HttpsGateway::start(&backend, true, "");
    let (status, code, _) = problem_code(client().get(gw.gw.url("/vault/1")).send().expect("send"));
    assert_eq!((status, code.as_str()), (403, "https-required"));
    assert_eq!(backend.count(), 0);
    for args in [&["--http2"][..], &["--http1.1"][..]] {
        let (_, status, _) = curl(args, &gw.url("/vault/1"));
        assert_eq!(status, 200, "{args:?}");
    }
    // Without an HTTPS listener no request could meet it: refused at load.
    let policy = std::fs::read_to_string(&gw.gw.config).expect("policy");
    let start = policy.find("tls:").expect("tls");
    let end = policy.find("services:").expect("services");
    let plain = format!("{}{}", &policy[..start], &policy[end..]);
    std::fs::write(&gw.gw.config, plain).expect("write");
    let errors = portcullis::config::load_dry_run(&gw.gw.config)
        .expect_err("refused")
        .to_string();
    assert!(
        errors.contains("https_only needs an HTTPS listener"),
        "{errors}"
    );
}

#[test]
fn the_https_partner_example_policy_serves_partners_over_https_only() {
    let backend = Backend::start();
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let gw = TestGateway::from_policy_with(
        "https-partner-api.yaml",
        &backend.url(),
        &[("127.0.0.1:8443", tls.to_string())],
    );
    wait_for_port(tls);
    let url = format!("https://localhost:{}/orders/7", tls.port());
    let (version, status, _) = curl(&["-H", "X-Api-Key: partner-key-acme-1"], &url);
    assert_eq!((version.as_str(), status), ("2", 200));
    let seen = backend.seen().pop().expect("reached");
    assert_eq!(seen.headers["x-partner"], "acme");
    assert!(!seen.headers.contains_key("x-api-key"));
    let (_, status, body) = curl(&["-H", "X-Api-Key: nope"], &url);
    assert_eq!(status, 401, "{body}");
    // The same partner on the plain listener: refused, whatever its key.
    let (status, code, _) = problem_code(
        client()
            .get(gw.url("/orders/7"))
            .header("x-api-key", "partner-key-acme-1")
            .send()
            .expect("send"),
    );
    assert_eq!((status, code.as_str()), (403, "https-required"));
    assert_eq!(
        client()
            .get(gw.url("/status"))
            .send()
            .expect("send")
            .status(),
        200
    );
}

#[test]
fn a_body_read_by_a_step_is_held_to_the_body_deadline_on_an_http2_stream_too() {
    let backend = Backend::start();
    let gw = HttpsGateway::start(
        &backend,
        true,
        "client_limits: {body_timeout: 1s, body_min_rate: 1000}",
    );
    // curl sends the body at 2 bytes a second: 200 bytes would take 100 s (curl gives up
    // at 20 s). The gateway cuts the stream at the deadline (1 s): Pingora resets it while
    // curl still sends, which curl reports as a stream error rather than the 408.
    let body = format!("{{\"padding\": \"{}\"}}", "x".repeat(185));
    let started = std::time::Instant::now();
    let (_, status, answer) = curl(
        &[
            "--limit-rate",
            "2",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ],
        &gw.url("/checked"),
    );
    assert!(status == 408 || status == 0, "{status} {answer}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "not cut at the deadline"
    );
    assert_eq!(backend.count(), 0);
    // At full speed the same body passes.
    let (_, status, _) = curl(
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ],
        &gw.url("/checked"),
    );
    assert_eq!(status, 200);
}
