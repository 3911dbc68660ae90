//! What a client can do with framing and hop-by-hop headers, written as raw bytes so no
//! client library tidies them up: each is refused or normalised, and the upstream reads what
//! the policy meant.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::{Backend, TestGateway};

const SERVICES: &str = r#"
services:
  - name: open
    upstream: {backend}
    request:
      - set_header: {name: X-Client-Id, value: gateway-set}
  - name: checked
    match: {path: /checked}
    upstream: {backend}
    request:
      - validate_json: {}
  - name: read-only
    match: {path: /read-only}
    methods: [GET, HEAD]
    upstream: {backend}
"#;

/// Sends `raw` and returns everything the gateway answers until it closes.
fn exchange(gw: &TestGateway, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(raw).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn headers_named_in_connection_cannot_remove_what_the_policy_sets() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let answer = exchange(
        &gw,
        b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close, X-Client-Id, X-Extra\r\nX-Extra: 1\r\nKeep-Alive: timeout=9\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = backend.seen().pop().expect("reached");
    assert_eq!(seen.headers["x-client-id"], "gateway-set");
    assert!(
        !seen.headers.contains_key("x-extra"),
        "a nominated header went upstream"
    );
    assert!(!seen.headers.contains_key("keep-alive"));
    let answer = exchange(
        &gw,
        b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("invalid-connection-header"), "{answer}");
}

#[test]
fn forwarding_headers_from_the_client_are_replaced() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let raw = b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
    assert!(exchange(&gw, raw).starts_with("HTTP/1.1 200"));
    let seen = backend.seen().pop().expect("reached");
    assert_eq!(seen.headers["x-real-ip"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert!(
        !seen.headers.contains_key("forwarded"),
        "the client's Forwarded went upstream"
    );

    let gw = TestGateway::start(
        &format!("forwarded_headers: forwarded\n{SERVICES}"),
        &backend.url(),
    );
    assert!(exchange(&gw, raw).starts_with("HTTP/1.1 200"));
    let seen = backend.seen().pop().expect("reached");
    assert_eq!(
        seen.headers["forwarded"],
        "for=127.0.0.1;proto=http;host=\"x\""
    );
    for gone in ["x-real-ip", "x-forwarded-for", "x-forwarded-host"] {
        assert!(!seen.headers.contains_key(gone), "{gone} went upstream");
    }
}

#[test]
fn content_length_goes_upstream_as_one_value_and_a_request_needs_a_host() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    for raw in [
        &b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5, 5\r\n\r\nhello"[..],
        b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    ] {
        let answer = exchange(&gw, raw);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let seen = backend.seen().pop().expect("reached");
        assert_eq!(seen.headers.get_all("content-length").iter().count(), 1);
        assert_eq!(seen.headers["content-length"], "5");
        assert_eq!(seen.body, b"hello");
    }
    let answer = exchange(&gw, b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("invalid-host"), "{answer}");
}

#[test]
fn an_absolute_form_target_goes_upstream_in_origin_form() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let answer = exchange(
        &gw,
        b"GET http://api.example.test/x/1?q=2 HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = backend.seen().pop().expect("reached");
    assert_eq!(seen.uri, "/x/1?q=2");
    assert_eq!(seen.headers["x-forwarded-host"], "api.example.test");
}

#[test]
fn methods_outside_the_services_list_and_trace_get_405() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let answer = exchange(
        &gw,
        b"TRACE /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    let answer = exchange(
        &gw,
        b"POST /read-only HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("allow: get, head"),
        "{answer}"
    );
    assert_eq!(backend.count(), 0);
}

#[test]
fn unreadable_heads_and_bodies_get_problem_answers_and_never_go_upstream() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let answer = exchange(&gw, b"GET /x HTTP/1.1\r\nHost: x\r\nNot a header\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("malformed-request"), "{answer}");
    assert!(!answer.contains("Pingora"), "{answer}");
    let answer = exchange(
        &gw,
        b"POST /checked HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("malformed-body"), "{answer}");
    assert_eq!(backend.count(), 0);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let answer = exchange(
        &gw,
        b"GET /x/first HTTP/1.1\r\nHost: x\r\n\r\nGET /x/second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    let first = answer.find("/x/first").expect("first answered");
    let second = answer.find("/x/second").expect("second answered");
    assert!(first < second, "{answer}");
}

#[test]
fn an_h2c_upgrade_never_reaches_the_upstream() {
    // Passed on, an upstream that speaks h2c would answer 101 and every later request on the
    // connection would reach it as tunnelled HTTP/2, past routing and the policy.
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    for upgrade in ["h2c", "H2C", "websocket, h2c"] {
        let raw = format!(
            "GET /read-only HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        );
        let answer = exchange(&gw, raw.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("h2c-upgrade-refused"), "{answer}");
    }
    assert_eq!(backend.count(), 0);
    // The settings header of the retired upgrade never goes upstream on its own either.
    let answer = exchange(
        &gw,
        b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nHTTP2-Settings: AAMAAABk\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!backend
        .seen()
        .pop()
        .expect("reached")
        .headers
        .contains_key("http2-settings"));
}
