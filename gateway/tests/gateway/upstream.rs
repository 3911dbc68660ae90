use std::net::SocketAddr;
use std::path::PathBuf;

use crate::common::{client, free_port, problem_code, wait_for_port, Backend, TestGateway};

#[test]
fn an_upstream_that_is_down_is_a_502_problem() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let services =
        "services:\n  - name: down\n    upstream: {url: \"{backend}\", connect_timeout: 1s}\n";
    let gw = TestGateway::start(services, &dead);
    let (status, code, _) = problem_code(client().get(gw.url("/x")).send().expect("send"));
    assert_eq!((status, code.as_str()), (502, "upstream-unavailable"));
    assert!(gw.access_log().contains("\"status\":502"));
}

#[test]
fn a_slow_upstream_is_a_504_problem() {
    let backend = Backend::start();
    let services =
        "services:\n  - name: slow\n    upstream: {url: \"{backend}\", read_timeout: 300ms}\n";
    let gw = TestGateway::start(services, &backend.url());
    let (status, code, _) = problem_code(client().get(gw.url("/slow")).send().expect("send"));
    assert_eq!((status, code.as_str()), (504, "upstream-timeout"));
    // And a quick one on the same service works.
    assert_eq!(
        client().get(gw.url("/fast")).send().expect("send").status(),
        200
    );
}

#[test]
fn upstream_errors_pass_through_unchanged() {
    let backend = Backend::start();
    let gw = TestGateway::start(
        "services:\n  - name: s\n    upstream: {backend}\n",
        &backend.url(),
    );
    assert_eq!(
        client()
            .get(gw.url("/status/503"))
            .send()
            .expect("send")
            .status(),
        503
    );
    assert_eq!(
        client()
            .get(gw.url("/status/404"))
            .send()
            .expect("send")
            .status(),
        404
    );
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tls")
        .join(name)
}

/// An HTTPS upstream: the demo echo app behind TLS with the test certificate for
/// `localhost` / 127.0.0.1, signed by the test CA.
fn tls_backend() -> (SocketAddr, portcullis::server::ShutdownOnDrop) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut server = pingora::server::Server::new_with_opt_and_conf(
        None,
        pingora::server::configuration::ServerConf::default(),
    );
    server.bootstrap();
    let mut app = pingora::services::listening::Service::new(
        "tls echo".to_owned(),
        portcullis::echo::EchoApp,
    );
    app.add_tls(
        &addr.to_string(),
        fixture("server.pem").to_str().expect("path"),
        fixture("server.key").to_str().expect("path"),
    )
    .expect("tls listener");
    server.add_service(app);
    let guard = portcullis::server::spawn(server);
    wait_for_port(addr);
    (addr, guard)
}

#[test]
fn https_upstreams_are_verified_with_sni() {
    let (addr, _tls) = tls_backend();
    let ca = fixture("ca.pem");
    let services = format!(
        r#"
services:
  - name: trusted
    match: {{path: /trusted}}
    upstream: {{url: "https://127.0.0.1:{port}", sni: localhost, ca_file: "{ca}"}}
  - name: untrusted
    match: {{path: /untrusted}}
    upstream: {{url: "https://127.0.0.1:{port}", sni: localhost, connect_timeout: 2s}}
  - name: wrong-name
    match: {{path: /wrong-name}}
    upstream: {{url: "https://127.0.0.1:{port}", ca_file: "{ca}", sni: wrong.example.test}}
  - name: unverified
    match: {{path: /unverified}}
    upstream: {{url: "https://127.0.0.1:{port}", verify_tls: false}}
"#,
        port = addr.port(),
        ca = ca.display()
    );
    let gw = TestGateway::start(&services, "unused");
    let c = client();
    let resp = c.get(gw.url("/trusted/x")).send().expect("send");
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().expect("json");
    assert_eq!(echo["path"], "/trusted/x");
    assert_eq!(
        echo["headers"]["host"],
        format!("127.0.0.1:{}", addr.port())
    );
    // Not signed by a CA the gateway trusts: refused, even though a verified connection to
    // the same address and name now sits in the pool (pools are kept apart per trust).
    let (status, code, _) = problem_code(c.get(gw.url("/untrusted/x")).send().expect("send"));
    assert_eq!((status, code.as_str()), (502, "upstream-unavailable"));
    // The certificate is not for the name we asked for: refused.
    let (status, _, _) = problem_code(c.get(gw.url("/wrong-name/x")).send().expect("send"));
    assert_eq!(status, 502);
    // Verification explicitly off (for test rigs only): accepted.
    assert_eq!(
        c.get(gw.url("/unverified/x"))
            .send()
            .expect("send")
            .status(),
        200
    );
}

#[test]
fn connections_to_the_upstream_are_reused() {
    let backend = Backend::start();
    let gw = TestGateway::start(
        "services:\n  - name: s\n    upstream: {backend}\n",
        &backend.url(),
    );
    let c = client();
    for _ in 0..20 {
        assert_eq!(c.get(gw.url("/x")).send().expect("send").status(), 200);
    }
    let connections: std::collections::HashSet<SocketAddr> =
        backend.seen().iter().map(|s| s.peer).collect();
    assert!(
        connections.len() <= 2,
        "20 requests used {} upstream connections",
        connections.len()
    );
    assert_eq!(backend.count(), 20);
}
