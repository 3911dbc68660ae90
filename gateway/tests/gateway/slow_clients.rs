//! Clients that take their time or hold many connections: each is cut off by its deadline
//! or refused at its cap with a problem answer, while other clients go on being served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{client, Backend, TestGateway};

const SERVICES: &str = r#"
client_limits:
  header_timeout: 1s
  idle_timeout: 1s
  body_timeout: 1s
  body_min_rate: 1MiB
  max_header_bytes: 2KiB
  max_connections_per_ip: 6
services:
  - name: checked
    match: {path: /checked}
    upstream: {backend}
    request:
      - validate_json: {}
  - name: streamed
    upstream: {backend}
"#;

fn connect(gw: &TestGateway) -> TcpStream {
    let stream = TcpStream::connect(gw.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(8)))
        .expect("timeout");
    stream
}

/// Everything the gateway sends until it closes the connection.
fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `start`, then trickles `rest` a byte every 200 ms from another thread, and returns
/// everything the gateway answered until it closed the connection.
fn trickled(gw: &TestGateway, start: &[u8], rest: &'static [u8]) -> String {
    let mut slow = connect(gw);
    slow.write_all(start).expect("write");
    let writer = {
        let mut slow = slow.try_clone().expect("clone");
        std::thread::spawn(move || trickle(&mut slow, rest, Duration::from_millis(200)))
    };
    let answer = read_all(&mut slow);
    let _ = writer.join();
    answer
}

/// Sends `bytes` one at a time, `gap` apart, until the gateway stops taking them.
fn trickle(stream: &mut TcpStream, bytes: &[u8], gap: Duration) {
    for byte in bytes {
        if stream.write_all(&[*byte]).is_err() {
            return;
        }
        std::thread::sleep(gap);
    }
}

#[test]
fn a_trickled_head_is_cut_off_at_its_total_deadline_with_a_408() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let mut slow = connect(&gw);
    let started = Instant::now();
    let writer = {
        let mut slow = slow.try_clone().expect("clone");
        // Every byte comes well inside any per-read timer; only a total deadline ends it.
        std::thread::spawn(move || {
            trickle(
                &mut slow,
                b"GET /streamed HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaa",
                Duration::from_millis(200),
            );
        })
    };
    // Meanwhile other clients are served.
    assert_eq!(
        client()
            .get(gw.url("/streamed/other"))
            .send()
            .expect("send")
            .status(),
        200
    );
    let answer = read_all(&mut slow);
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        answer.contains("urn:portcullis:problem:client-timeout"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(4), "cut off after {took:?}");
    let _ = writer.join();
    assert_eq!(
        backend.count(),
        1,
        "only the other client's request went upstream"
    );
    let metrics = client()
        .get(gw.admin_url("/metrics"))
        .bearer_auth(crate::common::ADMIN_TOKEN)
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains("portcullis_client_cutoffs_total{reason=\"head\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_silent_partial_head_gets_a_408_and_an_idle_connection_is_closed_quietly() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let mut partial = connect(&gw);
    partial
        .write_all(b"GET /streamed HTTP/1.1\r\nHo")
        .expect("write");
    let mut idle = connect(&gw);
    let answer = read_all(&mut partial);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Nothing was asked on the idle connection: it is closed without an answer.
    assert_eq!(read_all(&mut idle), "");
    // A kept-alive connection waits idle_timeout for its next request, then closes.
    let mut kept = connect(&gw);
    kept.write_all(b"GET /streamed/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let started = Instant::now();
    let answer = read_all(&mut kept);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn a_trickled_body_is_cut_off_with_a_408_before_or_while_it_goes_upstream() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    // The checked service reads the body before contacting the upstream: nothing goes up.
    let answer = trickled(
        &gw,
        b"POST /checked HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{",
        b"\"a\": 1111111111111111111111111}",
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("client-timeout"), "{answer}");
    assert_eq!(backend.count(), 0);

    // The streamed service forwards the body as it comes: the client still hears 408.
    let answer = trickled(
        &gw,
        b"POST /streamed HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\nabc",
        b"defghijklmnopqrstuvwxyz",
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[test]
fn an_oversized_head_gets_a_431() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let mut big = connect(&gw);
    let pad = "a".repeat(4096);
    let _ = big
        .write_all(format!("GET /streamed HTTP/1.1\r\nHost: x\r\nX-Pad: {pad}\r\n\r\n").as_bytes());
    let answer = read_all(&mut big);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains("head-too-large"), "{answer}");
    assert_eq!(backend.count(), 0);
}

#[test]
fn connections_past_the_per_address_cap_are_refused_until_one_closes() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let held: Vec<TcpStream> = (0..6).map(|_| connect(&gw)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = connect(&gw);
    let answer = read_all(&mut extra);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("too-many-connections"), "{answer}");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        client()
            .get(gw.url("/streamed/again"))
            .send()
            .expect("send")
            .status(),
        200
    );
    let metrics = client()
        .get(gw.admin_url("/metrics"))
        .bearer_auth(crate::common::ADMIN_TOKEN)
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains(
            "portcullis_client_connections_refused_total{limit=\"max_connections_per_ip\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn connections_past_the_global_cap_get_a_503() {
    let backend = Backend::start();
    let services = SERVICES.replace("max_connections_per_ip: 6", "max_connections: 2");
    let gw = TestGateway::start(&services, &backend.url());
    let _held: Vec<TcpStream> = (0..2).map(|_| connect(&gw)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = connect(&gw);
    let answer = read_all(&mut extra);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
}
