//! Shadow mode through the real gateway: shadowed steps are evaluated on every request and
//! counted (`portcullis_shadow_outcomes_total` scraped from the admin listener, the access
//! log's `shadow` field) but enforce nothing: no refusal, no header set or removed, no card
//! number masked, no credential stripped, no `${client.id}` for later steps, no RateLimit
//! fields; an enforced step after a shadowed one still refuses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use crate::common::{client, Backend, TestGateway, ADMIN_TOKEN};

/// sha256 of "demo-key-123".
const KEY_SHA256: &str = "a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873";

/// The value of the sample of `family` whose labels hold every `label="value"` given (label
/// order is the exposition's business), or 0 when there is none.
fn sample(metrics: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{family}{{")))
        .find(|line| {
            labels
                .iter()
                .all(|(name, value)| line.contains(&format!("{name}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

fn scrape(gw: &TestGateway) -> String {
    client()
        .get(gw.admin_url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("metrics")
        .text()
        .expect("text")
}

/// Scrapes until the shadow outcome of `step` reaches `want` (requests are counted when
/// they are logged, just after the answer went out).
fn outcome_count(gw: &TestGateway, service: &str, step: &str, outcome: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = sample(
            &scrape(gw),
            "portcullis_shadow_outcomes_total",
            &[("service", service), ("step", step), ("outcome", outcome)],
        );
        if got >= want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// The access-log lines of requests to `path`, parsed.
fn log_lines(gw: &TestGateway, path: &str) -> Vec<serde_json::Value> {
    gw.access_log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["path"] == path)
        .collect()
}

const KEYS: &str = r#"
  - name: widgets
    match: {path: /widgets}
    upstream: {backend}
    request:
      - require_api_key:
          keys:
            - {client: acme-mobile, sha256: KEY}
        mode: shadow
      - allow_ip: [127.0.0.0/8]
      - set_header: {name: X-Client, value: "client ${client.id}"}
  - name: locked
    match: {path: /locked}
    upstream: {backend}
    request:
      - require_api_key:
          keys:
            - {client: acme-mobile, sha256: KEY}
        mode: shadow
      - deny_ip: [127.0.0.0/8]
"#;

#[test]
fn a_shadowed_key_check_lets_a_keyless_request_through_and_counts_a_would_deny() {
    let backend = Backend::start();
    let gw = TestGateway::start(
        &format!("services:{}", KEYS.replace("KEY", KEY_SHA256)),
        &backend.url(),
    );
    let c = client();

    let keyless = c.get(gw.url("/widgets/1")).send().expect("send");
    assert_eq!(keyless.status().as_u16(), 200);
    let keyed = c
        .get(gw.url("/widgets/2"))
        .header("x-api-key", "demo-key-123")
        .send()
        .expect("send");
    assert_eq!(keyed.status().as_u16(), 200);
    let wrong = c
        .get(gw.url("/widgets/3"))
        .header("x-api-key", "not-a-key")
        .send()
        .expect("send");
    assert_eq!(wrong.status().as_u16(), 200);

    let seen = backend.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    // The shadowed step authenticated no one: the key is not stripped on its account, and
    // the enforced step after it does not see ${client.id}.
    assert_eq!(
        seen[1].headers.get("x-api-key").map(|v| v.as_bytes()),
        Some(&b"demo-key-123"[..])
    );
    for request in &seen {
        let client_header = request.headers.get("x-client").map(|v| v.as_bytes());
        assert_ne!(
            client_header,
            Some(&b"client acme-mobile"[..]),
            "{request:?}"
        );
    }

    let step = "request[0].require_api_key";
    assert_eq!(outcome_count(&gw, "widgets", step, "would_deny", 2.0), 2.0);
    assert_eq!(outcome_count(&gw, "widgets", step, "would_allow", 1.0), 1.0);

    let keyless_log = log_lines(&gw, "/widgets/1");
    assert_eq!(keyless_log.len(), 1, "{keyless_log:?}");
    assert_eq!(keyless_log[0]["status"], 200);
    assert_eq!(keyless_log[0]["denied_by"], serde_json::Value::Null);
    assert_eq!(
        keyless_log[0]["shadow"],
        serde_json::json!([{"step": step, "outcome": "would_deny", "code": "missing-api-key"}])
    );
    assert_eq!(
        log_lines(&gw, "/widgets/3")[0]["shadow"][0]["code"],
        "invalid-api-key"
    );
    assert_eq!(
        log_lines(&gw, "/widgets/2")[0]["shadow"],
        serde_json::json!([{"step": step, "outcome": "would_allow"}])
    );
    let log = gw.access_log();
    assert!(!log.contains("demo-key-123"), "a key reached the log");
}

#[test]
fn an_enforced_step_after_a_shadowed_one_still_refuses() {
    let backend = Backend::start();
    let gw = TestGateway::start(
        &format!("services:{}", KEYS.replace("KEY", KEY_SHA256)),
        &backend.url(),
    );
    let resp = client()
        .get(gw.url("/locked/1"))
        .header("x-api-key", "demo-key-123")
        .send()
        .expect("send");
    let (status, code, _) = crate::common::problem_code(resp);
    assert_eq!((status, code.as_str()), (403, "ip-denied"));
    assert_eq!(backend.count(), 0);
    assert_eq!(
        outcome_count(
            &gw,
            "locked",
            "request[0].require_api_key",
            "would_allow",
            1.0
        ),
        1.0
    );
    let lines = log_lines(&gw, "/locked/1");
    assert_eq!(lines[0]["denied_by"], "deny_ip");
    assert_eq!(lines[0]["shadow"][0]["outcome"], "would_allow");
}

const DOC: &str = r#"{"holder":"A. Person","card":"4111111111111111","amex":"3782-822463-10005","order":"ORD4111111111111111X","note":"visa 4242 4242 4242 4242 ok"}"#;

/// A backend answering `DOC` with a Content-Length (`/cards/length`), or chunked with a
/// card number split across chunks (`/cards/chunked`).
fn card_backend() -> SocketAddr {
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
                let out = if path.starts_with("/cards/chunked") {
                    let split = DOC.find("1111111111111").expect("pan") + 3;
                    let mut o = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
                    for part in [&DOC[..split], &DOC[split..split + 7], &DOC[split + 7..]] {
                        o.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
                    }
                    o.extend_from_slice(b"0\r\n\r\n");
                    o
                } else {
                    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{DOC}", DOC.len()).into_bytes()
                };
                let _ = s.write_all(&out);
            });
        }
    });
    addr
}

#[test]
fn a_shadowed_masker_leaves_the_body_byte_identical_and_counts_what_it_would_mask() {
    let upstream = card_backend();
    let gw = TestGateway::start(
        r#"services:
  - name: cards
    match: {path: /cards}
    upstream: {backend}
    response:
      - mask_pan: {}
        mode: shadow
"#,
        &format!("http://{upstream}"),
    );
    let c = client();
    for path in ["/cards/length", "/cards/chunked"] {
        let resp = c.get(gw.url(path)).send().expect("send");
        assert_eq!(resp.status().as_u16(), 200);
        let body = resp.bytes().expect("body");
        assert_eq!(&body[..], DOC.as_bytes(), "{path}: the body was changed");
    }
    let step = "response[0].mask_pan";
    assert_eq!(outcome_count(&gw, "cards", step, "would_change", 2.0), 2.0);
    let metrics = scrape(&gw);
    // Three card numbers in each answer (the one inside an order number is not one).
    assert_eq!(
        sample(
            &metrics,
            "portcullis_shadow_items_total",
            &[("service", "cards"), ("step", step)]
        ),
        6.0,
        "{metrics}"
    );
    // Nothing was masked for real.
    assert_eq!(
        sample(
            &metrics,
            "portcullis_pans_masked_total",
            &[("service", "cards")]
        ),
        0.0
    );
    let lines = log_lines(&gw, "/cards/chunked");
    assert_eq!(
        lines[0]["shadow"],
        serde_json::json!([{"step": step, "outcome": "would_change", "items": 3}])
    );
}

#[test]
fn a_shadowed_request_masker_sends_the_original_body_upstream() {
    let backend = Backend::start();
    let gw = TestGateway::start(
        r#"services:
  - name: pay
    match: {path: /pay}
    upstream: {backend}
    request:
      - mask_pan: {}
        mode: shadow
"#,
        &backend.url(),
    );
    let body = r#"{"card":"4111 1111 1111 1111"}"#;
    let resp = client()
        .post(gw.url("/pay"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(backend.seen()[0].body, body.as_bytes());
    assert_eq!(
        outcome_count(&gw, "pay", "request[0].mask_pan", "would_change", 1.0),
        1.0
    );
}

#[test]
fn a_shadowed_service_enforces_none_of_its_steps() {
    let backend = Backend::start();
    let gw = TestGateway::start(
        r#"services:
  - name: trial
    match: {path: /trial}
    upstream: {backend}
    shadow: true
    request:
      - deny_ip: [127.0.0.0/8]
      - rate_limit: {key: "${client.ip}", rate: 1/min}
      - set_header: {name: X-Tier, value: trial}
    response:
      - remove_header: [X-Internal-Debug]
"#,
        &backend.url(),
    );
    let c = client();
    for _ in 0..3 {
        let resp = c.get(gw.url("/trial")).send().expect("send");
        assert_eq!(resp.status().as_u16(), 200);
        // The response keeps what the shadowed step would remove, and gets no RateLimit
        // fields from the shadowed limit.
        assert_eq!(
            resp.headers().get("x-internal-debug").map(|v| v.as_bytes()),
            Some(&b"secret-stack-info"[..])
        );
        assert!(resp.headers().get("ratelimit").is_none());
        assert!(resp.headers().get("ratelimit-policy").is_none());
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.headers.get("x-tier").is_none()));
    assert_eq!(
        outcome_count(&gw, "trial", "request[0].deny_ip", "would_deny", 3.0),
        3.0
    );
    // The shadowed limit counts in its own bucket: the first request fits, the rest would
    // have been refused.
    assert_eq!(
        outcome_count(&gw, "trial", "request[1].rate_limit", "would_deny", 2.0),
        2.0
    );
    assert_eq!(
        outcome_count(&gw, "trial", "request[1].rate_limit", "would_allow", 1.0),
        1.0
    );
    assert_eq!(
        outcome_count(&gw, "trial", "request[2].set_header", "would_change", 3.0),
        3.0
    );
    assert_eq!(
        outcome_count(
            &gw,
            "trial",
            "response[0].remove_header",
            "would_change",
            3.0
        ),
        3.0
    );
}

#[test]
fn a_shadowed_signer_signs_nothing_and_refuses_nothing() {
    use std::io::{Read, Write};
    let backend = Backend::start();
    let gw = TestGateway::start(
        r#"
keys:
  billing: [{access_key: AKIDGATEWAY, client: gateway, secrets: [admin_token]}]
services:
  - name: signed
    upstream: {backend}
    request:
      - sign_hmac: {scheme: aws-sigv4, keys: billing, access_key: AKIDGATEWAY, region: eu-west-1, service: billing}
        mode: shadow
"#,
        &backend.url(),
    );
    let resp = client().get(gw.url("/x")).send().expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let seen = backend.seen();
    assert!(seen[0].headers.get("authorization").is_none(), "{seen:?}");
    assert!(seen[0].headers.get("x-amz-date").is_none(), "{seen:?}");
    assert_eq!(
        outcome_count(&gw, "signed", "request[0].sign_hmac", "would_change", 1.0),
        1.0
    );

    // A head the signer cannot sign (enforced: 502 signing-failed) goes through, recorded.
    let mut s = std::net::TcpStream::connect(gw.addr).expect("connect");
    s.write_all(b"GET /y HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Amz-Meta: caf\xe9\r\n\r\n")
        .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let lines = log_lines(&gw, "/y");
    assert_eq!(lines[0]["shadow"][0]["code"], "signing-failed", "{lines:?}");
}
