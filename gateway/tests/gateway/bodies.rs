use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use crate::common::{client, problem_code, Backend, TestGateway};

const SERVICES: &str = r#"
services:
  - name: orders
    match: {path: /orders}
    upstream: {backend}
    max_request_body: 512KiB
    request:
      - validate_json: {max_depth: 8}
  - name: uploads
    match: {path: /uploads}
    upstream: {backend}
    max_request_body: 100KiB
"#;

fn json_body(bytes: usize) -> Vec<u8> {
    let mut s = String::from("{\"items\":[");
    while s.len() < bytes {
        s.push_str("\"abcdefghijklmnopqrstuvwxyz\",");
    }
    s.push_str("\"end\"]}");
    s.into_bytes()
}

#[test]
fn small_and_large_bodies_are_checked_then_forwarded_intact() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let c = client();
    for size in [0usize, 1024, 64 * 1024 - 100, 200 * 1024] {
        let body = if size == 0 {
            Vec::new()
        } else {
            json_body(size)
        };
        let resp = c
            .post(gw.url("/orders"))
            .body(body.clone())
            .send()
            .expect("send");
        assert_eq!(resp.status(), 200, "size {size}");
        let seen = backend.seen().pop().expect("reached");
        assert_eq!(seen.body.len(), body.len(), "size {size}");
        assert_eq!(
            Sha256::digest(&seen.body),
            Sha256::digest(&body),
            "size {size}"
        );
        assert_eq!(seen.method, "POST");
    }
}

#[test]
fn a_refused_body_never_reaches_the_upstream_even_past_64k() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let c = client();
    for size in [1024usize, 300 * 1024] {
        let mut body = json_body(size);
        body.truncate(body.len() - 3); // no longer JSON
        let (status, code, _) =
            problem_code(c.post(gw.url("/orders")).body(body).send().expect("send"));
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid-json"),
            "size {size}"
        );
    }
    let (status, code, body) = problem_code(
        c.post(gw.url("/orders"))
            .body("[[[[[[[[[[1]]]]]]]]]]")
            .send()
            .expect("send"),
    );
    assert_eq!((status, code.as_str()), (400, "invalid-json"));
    assert!(body["detail"]
        .as_str()
        .expect("detail")
        .contains("deeper than 8"));
    assert_eq!(
        backend.count(),
        0,
        "no refused request reached the upstream"
    );
}

#[test]
fn bodies_over_the_limit_get_413() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let c = client();
    // Declared length over the limit: refused before any of it is read.
    let (status, code, _) = problem_code(
        c.post(gw.url("/uploads"))
            .body(vec![b'x'; 101 * 1024])
            .send()
            .expect("send"),
    );
    assert_eq!((status, code.as_str()), (413, "body-too-large"));
    // Pre-read body over the limit (chunked, so no declared length): the gateway answers
    // as soon as the limit is passed, while the client may still be sending.
    let out = raw_chunked_post(gw.addr, "/orders", 600);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("body-too-large"), "{out}");
    assert_eq!(backend.count(), 0);
    // Under the limit passes.
    let resp = c
        .post(gw.url("/uploads"))
        .body(vec![b'x'; 99 * 1024])
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
}

/// Sends `kib` KiB as a chunked POST over a raw socket (from a second thread, so an early
/// answer is read even while the body is still going out) and returns the raw answer.
fn raw_chunked_post(addr: std::net::SocketAddr, path: &str, kib: usize) -> String {
    let s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let mut writer = s.try_clone().expect("clone");
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").into_bytes();
    for _ in 0..kib {
        req.extend_from_slice(b"400\r\n");
        req.extend_from_slice(&[b' '; 1024]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&req);
    });
    let mut out = Vec::new();
    let mut reader = s;
    let _ = reader.read_to_end(&mut out);
    let _ = sender.join();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_streamed_chunked_body_over_the_limit_is_cut_off() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let out = raw_chunked_post(gw.addr, "/uploads", 120);
    // Streaming: the head went up, but the upstream never got more than the limit, and
    // the client hears 413 unless the upstream answered first.
    let got: usize = backend.seen().iter().map(|r| r.body.len()).sum();
    assert!(got <= 100 * 1024, "upstream received {got} bytes");
    assert!(!out.starts_with("HTTP/1.1 200"), "{out}");
}
