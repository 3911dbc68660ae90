//! `rate_limit` through the real gateway: the shipped example policy, what a refused client
//! sees, what an attacker tries (other addresses in X-Forwarded-For, bad keys to burn another
//! client's budget, chunked uploads), reloads, and accuracy under concurrent load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{client, demo_admin_token, problem_code, Backend, TestGateway};

const ACME: &str = "demo-key-123";
const PARTNER: &str = "partner-key-456";

fn get(gw: &TestGateway, path: &str, key: Option<&str>) -> reqwest::blocking::Response {
    let mut request = client().get(gw.url(path));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request.send().expect("request")
}

#[test]
fn a_client_gets_its_burst_then_429_with_retry_after_and_the_ratelimit_fields() {
    let backend = Backend::start();
    let gw = TestGateway::from_policy("rate-limited-api.yaml", &backend.url());
    let first = get(&gw, "/api/orders", Some(ACME));
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.headers()["ratelimit-policy"],
        "\"per-second\";q=5;w=1;portcullis-burst=10, \"per-hour\";q=1000;w=3600"
    );
    let left = first.headers()["ratelimit"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        left.starts_with("\"per-second\";r=9;t=1, \"per-hour\";r=999;"),
        "{left}"
    );
    // The rest of the burst (sent faster than 5/s refills, so at most a refill or two more).
    let mut allowed = 1;
    let refused = loop {
        let response = get(&gw, "/api/orders", Some(ACME));
        if response.status() != 200 {
            break response;
        }
        allowed += 1;
        assert!(allowed <= 13, "the burst of 10 is not enforced");
    };
    assert!(allowed >= 10, "only {allowed} of the burst of 10 passed");
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("delay-seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let limit = refused.headers()["ratelimit"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(limit.starts_with("\"per-second\";r=0;t="), "{limit}");
    let (status, code, body) = problem_code(refused);
    assert_eq!((status, code.as_str()), (429, "rate-limited"));
    assert!(body["detail"]
        .as_str()
        .expect("detail")
        .contains("per-second"));
    // Refused requests never reached the upstream; another client has its own bucket.
    assert_eq!(backend.count(), allowed);
    assert_eq!(get(&gw, "/api/orders", Some(PARTNER)).status(), 200);
    // The counters say so on /metrics.
    let metrics = client()
        .get(gw.admin_url("/metrics"))
        .bearer_auth(demo_admin_token())
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains("portcullis_rate_limit_events_total{service=\"api\",step=\"services[0].request[1]\",event=\"refused\"} 1"),
        "{metrics}"
    );
}

#[test]
fn requests_refused_by_an_earlier_step_consume_nothing() {
    let backend = Backend::start();
    let gw = TestGateway::start(
        "services:\n  - name: api\n    match: {path: /}\n    upstream: {backend}\n    request:\n      - require_api_key:\n          keys:\n            - {client: acme, sha256: a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873}\n      - rate_limit: {key: \"${client.ip}\", rate: 1/min, burst: 2}\n",
        &backend.url(),
    );
    // A flood of bad keys from this address...
    for _ in 0..20 {
        assert_eq!(get(&gw, "/x", Some("wrong")).status(), 401);
    }
    // ...left the address's whole budget to the real client.
    assert_eq!(get(&gw, "/x", Some(ACME)).status(), 200);
    assert_eq!(get(&gw, "/x", Some(ACME)).status(), 200);
    assert_eq!(get(&gw, "/x", Some(ACME)).status(), 429);
}

#[test]
fn a_forged_forwarded_for_does_not_open_a_new_bucket() {
    let backend = Backend::start();
    let gw = TestGateway::from_policy("rate-limited-api.yaml", &backend.url());
    let mut statuses = Vec::new();
    for n in 0..8 {
        let response = client()
            .get(gw.url("/public/page"))
            .header("x-forwarded-for", format!("198.51.100.{n}"))
            .send()
            .expect("request");
        statuses.push(response.status().as_u16());
    }
    // No trusted proxy in this policy: the peer address is the key, whatever the header says.
    let passed = statuses.iter().filter(|status| **status == 200).count();
    assert!((4..=5).contains(&passed), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429));
}

#[test]
fn uploads_are_counted_in_body_bytes_chunked_or_not() {
    let backend = Backend::start();
    let gw = TestGateway::from_policy("rate-limited-api.yaml", &backend.url());
    let half = vec![b'a'; 512 * 1024];
    let send = |chunked: bool| {
        let request = client()
            .post(gw.url("/uploads/file"))
            .header("x-api-key", ACME);
        let request = if chunked {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                half.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
            request.body(reqwest::blocking::Body::new(ChunkedReader::new(chunks)))
        } else {
            request.body(half.clone())
        };
        request.send().expect("upload").status().as_u16()
    };
    assert_eq!(send(false), 200);
    assert_eq!(send(true), 200, "a chunked upload is counted too");
    // 1 MiB per minute is spent: even a chunked one is refused now.
    assert_eq!(send(true), 429);
    assert_eq!(send(false), 429);
}

/// A reader over chunks, so reqwest sends the body chunked (no length known).
struct ChunkedReader {
    chunks: std::vec::IntoIter<Result<Vec<u8>, std::io::Error>>,
    current: std::io::Cursor<Vec<u8>>,
}

impl ChunkedReader {
    fn new(chunks: Vec<Result<Vec<u8>, std::io::Error>>) -> ChunkedReader {
        ChunkedReader {
            chunks: chunks.into_iter(),
            current: std::io::Cursor::new(Vec::new()),
        }
    }
}

impl std::io::Read for ChunkedReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let read = self.current.read(out)?;
            if read > 0 {
                return Ok(read);
            }
            match self.chunks.next() {
                Some(chunk) => self.current = std::io::Cursor::new(chunk?),
                None => return Ok(0),
            }
        }
    }
}

#[test]
fn a_reload_keeps_every_bucket() {
    let backend = Backend::start();
    let services = "services:\n  - name: api\n    match: {path: /}\n    upstream: {backend}\n    request:\n      - rate_limit: {key: \"${client.ip}\", rate: 1/min, burst: 3}\n";
    let gw = TestGateway::start(services, &backend.url());
    for _ in 0..3 {
        assert_eq!(get(&gw, "/x", None).status(), 200);
    }
    assert_eq!(get(&gw, "/x", None).status(), 429);
    gw.rewrite(services, &backend.url());
    gw.state.reload().expect("reload");
    assert_eq!(
        get(&gw, "/x", None).status(),
        429,
        "a reload is not a fresh burst"
    );
}

#[test]
fn concurrent_clients_get_rate_times_time_plus_burst_within_two_percent() {
    let backend = Backend::start();
    let gw = TestGateway::start(
        "services:\n  - name: api\n    match: {path: /}\n    upstream: {backend}\n    request:\n      - rate_limit: {key: \"shared-${request.method}\", rate: 100/s, burst: 20}\n",
        &backend.url(),
    );
    let allowed = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let run_for = Duration::from_secs(3);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (allowed, sent, url) = (allowed.clone(), sent.clone(), gw.url("/x"));
            std::thread::spawn(move || {
                let client = client();
                while started.elapsed() < run_for {
                    let status = client.get(&url).send().expect("request").status();
                    sent.fetch_add(1, Ordering::Relaxed);
                    if status == 200 {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        assert_eq!(status, 429);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = allowed.load(Ordering::Relaxed) as f64;
    let sent = sent.load(Ordering::Relaxed);
    let expected = 100.0 * elapsed + 20.0;
    assert!(
        sent as f64 > expected * 1.5,
        "the load ({sent} requests) must exceed the limit to measure it"
    );
    let error = (allowed - expected).abs() / expected;
    assert!(
        error <= 0.02,
        "admitted {allowed} over {elapsed:.3} s, expected {expected:.0} (±2%): off by {:.2}%",
        error * 100.0
    );
}

#[test]
fn every_limit_a_client_is_counted_against_shows_in_the_ratelimit_fields() {
    // Two steps, each asking for the fields on allowed answers: a client must see both
    // budgets, not whichever step ran last.
    let backend = Backend::start();
    let gw = TestGateway::start(
        "services:\n  - name: api\n    match: {path: /}\n    upstream: {backend}\n    request:\n      - rate_limit: {key: \"${client.ip}\", limits: [{name: per-address, rate: 10/min}], headers_on_allowed: true}\n      - rate_limit: {key: \"${client.ip}/${request.method}\", limits: [{name: per-method, rate: 100/min}], headers_on_allowed: true}\n",
        &backend.url(),
    );
    let response = get(&gw, "/x", None);
    assert_eq!(response.status(), 200);
    let joined = |name: &str| {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let policy = joined("ratelimit-policy");
    let left = joined("ratelimit");
    for name in ["per-address", "per-method"] {
        assert!(policy.contains(&format!("\"{name}\"")), "{policy}");
        assert!(left.contains(&format!("\"{name}\"")), "{left}");
    }
    assert!(left.contains("\"per-address\";r=9;"), "{left}");
}
