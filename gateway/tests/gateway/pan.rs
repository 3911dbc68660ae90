//! `mask_pan` through the real gateway: a backend that answers with cardholder data, with a
//! Content-Length and chunked, identity and gzip; the client gets it masked and the access
//! log holds no card number.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

use crate::common::{client, TestGateway};

const DOC: &str = r#"{"holder":"A. Person","card":"4111111111111111","amex":"3782-822463-10005","order":"ORD4111111111111111X","ts":"2026-11-23T10:41:14Z","note":"visa 4242 4242 4242 4242 ok"}"#;
const MASKED: &str = r#"{"holder":"A. Person","card":"************1111","amex":"****-******-*0005","order":"ORD4111111111111111X","ts":"2026-11-23T10:41:14Z","note":"visa **** **** **** 4242 ok"}"#;

/// A hand-written HTTP/1.1 backend, so the framing is exactly what each test needs: the
/// chunked answer splits a card number across chunks.
fn raw_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let asked_identity = head
                    .to_ascii_lowercase()
                    .contains("accept-encoding: identity");
                let mut out = Vec::new();
                let chunked = |parts: &[&[u8]], extra: &str| {
                    let mut o = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n{extra}connection: close\r\n\r\n").into_bytes();
                    for p in parts {
                        o.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
                        o.extend_from_slice(p);
                        o.extend_from_slice(b"\r\n");
                    }
                    o.extend_from_slice(b"0\r\n\r\n");
                    o
                };
                if path.starts_with("/accounts/cl") {
                    out.extend_from_slice(
                        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-asked-identity: {asked_identity}\r\nconnection: close\r\n\r\n{DOC}", DOC.len()).as_bytes(),
                    );
                } else if path.starts_with("/accounts/chunked") {
                    let doc = DOC.as_bytes();
                    let split = DOC.find("1111111111111").expect("pan") + 3;
                    out = chunked(
                        &[&doc[..split], &doc[split..split + 7], &doc[split + 7..]],
                        "",
                    );
                } else if path.starts_with("/accounts/gzip") {
                    // Ignores the gateway's request for identity, as some upstreams do.
                    let mut enc =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    enc.write_all(DOC.as_bytes()).expect("gzip");
                    let gz = enc.finish().expect("gzip");
                    let (a, b) = gz.split_at(gz.len() / 2);
                    out = chunked(&[a, b], "content-encoding: gzip\r\n");
                } else if path.starts_with("/accounts/none") {
                    let clean = r#"{"holder":"A. Person","order":"ORD-2026-000123","phone":"+1 415 555 0100"}"#;
                    out.extend_from_slice(
                        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{clean}", clean.len()).as_bytes(),
                    );
                } else if path.starts_with("/accounts/leaky") {
                    // An encoding the scanner cannot read, beside headers no refusal may carry.
                    out.extend_from_slice(
                        b"HTTP/1.1 206 Partial Content\r\ncontent-type: application/json\r\ncontent-encoding: br\r\nset-cookie: sid=upstream-secret\r\nlocation: http://internal.corp/x\r\ncontent-range: bytes 0-3/100\r\nx-internal-host: db7.corp\r\ncontent-length: 4\r\nconnection: close\r\n\r\nabcd",
                    );
                } else if path.starts_with("/accounts/binary") {
                    out.extend_from_slice(
                        format!("HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{DOC}", DOC.len()).as_bytes(),
                    );
                } else {
                    out.extend_from_slice(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }

                let _ = s.write_all(&out);
            });
        }
    });
    addr
}

fn start() -> TestGateway {
    TestGateway::from_policy(
        "pci-cardholder-api.yaml",
        &format!("http://{}", raw_backend()),
    )
}

#[test]
fn card_numbers_leave_masked_whatever_the_framing_or_encoding() {
    let gw = start();
    assert_masked(&gw);
    // Binary bodies are not scanned.
    let resp = client()
        .get(gw.url("/accounts/binary"))
        .send()
        .expect("send");
    assert_eq!(resp.text().expect("body"), DOC);
}

/// A response-side refusal replaces the upstream's answer whole: none of its headers reach
/// the client.
#[test]
fn a_response_side_refusal_carries_none_of_the_upstreams_headers() {
    let gw = start();
    let resp = client()
        .get(gw.url("/accounts/leaky"))
        .send()
        .expect("send");
    let headers = resp.headers().clone();
    let (status, code, _) = crate::common::problem_code(resp);
    assert_eq!((status, code.as_str()), (502, "unscannable-encoding"));
    for name in [
        "set-cookie",
        "location",
        "content-range",
        "x-internal-host",
        "content-encoding",
    ] {
        assert!(!headers.contains_key(name), "{name} leaked: {headers:?}");
    }
    assert_eq!(headers.get_all("content-type").iter().count(), 1);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(headers["cache-control"], "no-store");
}

/// `mask_pan` inside `all` (nested too) is the same step as at the top of the list: every
/// phase of it runs, on both sides and in block mode.
#[test]
fn mask_pan_inside_all_works_as_at_top_level() {
    let backend = format!("http://{}", raw_backend());
    let services = "services:\n  - name: nested\n    upstream: {backend}\n    response:\n      - all: [{all: [{mask_pan: {}}]}, {set_header: {name: X-Seen, value: yes}}]\n";
    let gw = TestGateway::start(services, &backend);
    assert_masked(&gw);
    let services = "services:\n  - name: strict\n    upstream: {backend}\n    response:\n      - all: [{mask_pan: {mode: block}}]\n";
    let gw = TestGateway::start(services, &backend);
    let (status, code, _) =
        crate::common::problem_code(client().get(gw.url("/accounts/cl")).send().expect("send"));
    assert_eq!((status, code.as_str()), (502, "cardholder-data-blocked"));

    let echo = crate::common::Backend::start();
    let services = "services:\n  - name: intake\n    upstream: {backend}\n    request:\n      - all: [{mask_pan: {}}]\n";
    let gw = TestGateway::start(services, &echo.url());
    let resp = client()
        .post(gw.url("/intake"))
        .body(DOC)
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    let seen = String::from_utf8(echo.seen().pop().expect("reached").body).expect("utf8");
    assert_eq!(seen, MASKED, "the request body went upstream masked");
}

/// Every framing and encoding of the raw backend's card-holding answer reaches the client
/// masked.
fn assert_masked(gw: &TestGateway) {
    let c = client();
    for path in ["/accounts/cl", "/accounts/chunked", "/accounts/gzip"] {
        let resp = c.get(gw.url(path)).send().expect("send");
        assert_eq!(resp.status(), 200, "{path}");
        if path == "/accounts/cl" {
            assert_eq!(
                resp.headers()["x-asked-identity"],
                "true",
                "mask_pan asks for identity"
            );
            assert_eq!(
                resp.content_length(),
                Some(MASKED.len() as u64),
                "length kept"
            );
        }
        // reqwest here has no gzip support: decode by hand when the body is compressed.
        let gz = resp
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v == "gzip");
        let bytes = resp.bytes().expect("body").to_vec();
        let body = if gz {
            let mut d = flate2::read::GzDecoder::new(&bytes[..]);
            let mut s = String::new();
            d.read_to_string(&mut s).expect("gunzip");
            s
        } else {
            String::from_utf8(bytes).expect("utf8")
        };
        assert_eq!(body, MASKED, "{path}");
    }
}

#[test]
fn no_card_number_reaches_the_access_log_or_metrics_say_how_many() {
    let gw = start();
    let c = client();
    assert_eq!(
        c.get(gw.url("/accounts/cl/4111111111111111"))
            .send()
            .expect("send")
            .status(),
        200
    );
    let log = gw.access_log();
    assert!(log.contains("/accounts/cl/************1111"), "{log}");
    assert!(
        !log.contains("4111111111111111"),
        "a card number reached the log: {log}"
    );
    let metrics = c
        .get(gw.admin_url("/metrics"))
        .bearer_auth("demo-admin-token")
        .send()
        .expect("send")
        .text()
        .expect("text");
    assert!(
        metrics.contains("portcullis_pans_masked_total{service=\"cardholder-api\"} 3"),
        "{metrics}"
    );
}

#[test]
fn block_mode_withholds_a_response_with_a_card_number() {
    let backend = format!("http://{}", raw_backend());
    let services = "services:\n  - name: strict\n    upstream: {backend}\n    response:\n      - mask_pan: {mode: block}\n";
    let gw = TestGateway::start(services, &backend);
    let c = client();
    for path in ["/accounts/cl", "/accounts/chunked", "/accounts/gzip"] {
        let (status, code, _) =
            crate::common::problem_code(c.get(gw.url(path)).send().expect("send"));
        assert_eq!(
            (status, code.as_str()),
            (502, "cardholder-data-blocked"),
            "{path}"
        );
    }
    let resp = c.get(gw.url("/accounts/none")).send().expect("send");
    let status = resp.status();
    assert_eq!(status, 200, "{}", resp.text().unwrap_or_default());
    let resp = c.get(gw.url("/accounts/none")).send().expect("send");
    assert!(resp.text().expect("body").contains("ORD-2026-000123"));
    let log = gw.access_log();
    assert!(
        log.contains("\"reason\":\"cardholder-data-blocked\""),
        "{log}"
    );
    assert!(!log.contains("4111111111111111"), "{log}");
}

#[test]
fn request_bodies_are_masked_before_they_go_upstream() {
    let backend = crate::common::Backend::start();
    let services = "services:\n  - name: intake\n    upstream: {backend}\n    request:\n      - mask_pan: {keep: first_six_last_four}\n";
    let gw = TestGateway::start(services, &backend.url());
    let c = client();
    let small = DOC.to_owned();
    let large = format!("[{}]", vec![DOC; 600].join(","));
    for body in [small, large] {
        let resp = c
            .post(gw.url("/intake"))
            .body(body.clone())
            .send()
            .expect("send");
        assert_eq!(resp.status(), 200);
        let seen = backend.seen().pop().expect("reached");
        assert_eq!(seen.body.len(), body.len(), "length kept");
        let text = String::from_utf8(seen.body).expect("utf8");
        assert!(
            !text.contains("\"card\":\"4111111111111111\""),
            "a card number went upstream"
        );
        assert!(
            text.contains("\"card\":\"411111******1111\""),
            "{}",
            &text[..200]
        );
        assert!(
            text.contains("ORD4111111111111111X"),
            "an order id was touched"
        );
    }
}
