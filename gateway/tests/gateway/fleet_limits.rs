//! Cluster-scope rate limits across a fleet of real gateway processes (`portcullis run`, two
//! of them) on one Redis, standalone and a 3-master Cluster: together they admit what one
//! bucket allows, within 2%; with Redis killed mid-run every request gets the configured
//! failure mode at once (never a wait of seconds), and the limits are shared again once
//! Redis is back.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::redis::test_servers::{RedisCluster, RedisServer};

use crate::common::{client, Backend};
use crate::fleet_process::GatewayProcess;

/// A gateway process whose only service counts against `step`.
fn start_gateway(dir: &Path, name: &str, state: &str, backend: &str, step: &str) -> GatewayProcess {
    GatewayProcess::start(
        dir,
        name,
        &format!(
            "state: \"{state}\"\nredis: {{timeout: 50ms, breaker_cool_off: 1s}}\nservices:\n  - name: api\n    match: {{path: /}}\n    upstream: \"{backend}\"\n    request:\n      - {step}\n"
        ),
    )
}

/// Decisions this gateway's rate limit could not have from Redis, so far.
fn store_unavailable(gateway: &GatewayProcess) -> u64 {
    gateway
        .metrics()
        .lines()
        .find(|line| {
            line.starts_with("portcullis_rate_limit_events_total")
                && line.contains("event=\"store_unavailable\"")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// 100 requests a second with bursts of 20, one bucket for the whole fleet.
const SHARED_LIMIT: &str =
    "rate_limit: {key: \"fleet-${request.method}\", rate: 100/s, burst: 20, scope: cluster}";

/// Two clients on each of two gateways for three seconds: together they get
/// `100 × T + 20` within 2%.
fn fleet_admits_one_buckets_worth(state: &str) {
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let fleet = [
        start_gateway(dir.path(), "a", state, &backend.url(), SHARED_LIMIT),
        start_gateway(dir.path(), "b", state, &backend.url(), SHARED_LIMIT),
    ];
    let allowed = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    // When the last request was sent, in µs from the start: the bucket refills until then,
    // not until the workers are joined (which, on a loaded machine, can be much later).
    let last_sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let run_for = Duration::from_secs(3);
    let workers: Vec<_> = fleet
        .iter()
        .chain(fleet.iter())
        .map(|gateway| {
            let (allowed, sent, last_sent, url) = (
                allowed.clone(),
                sent.clone(),
                last_sent.clone(),
                gateway.url(),
            );
            std::thread::spawn(move || {
                let client = client();
                while started.elapsed() < run_for {
                    last_sent.fetch_max(
                        u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                    let status = client.get(&url).send().expect("request").status();
                    sent.fetch_add(1, Ordering::Relaxed);
                    match status.as_u16() {
                        200 => {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                        429 => {}
                        other => panic!("unexpected {other}"),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    let elapsed = last_sent.load(Ordering::Relaxed) as f64 / 1e6;
    let allowed = allowed.load(Ordering::Relaxed) as f64;
    let sent = sent.load(Ordering::Relaxed) as f64;
    let expected = 100.0 * elapsed + 20.0;
    assert!(
        sent > expected * 1.5,
        "the load ({sent}) must exceed the limit"
    );
    let error = (allowed - expected).abs() / expected;
    assert!(
        error <= 0.02,
        "the fleet admitted {allowed} in {elapsed:.3} s, expected {expected:.0} (±2%): off by {:.2}%",
        error * 100.0
    );
}

#[test]
fn two_gateway_processes_on_one_redis_share_one_bucket_within_two_percent() {
    let redis = RedisServer::start();
    fleet_admits_one_buckets_worth(&redis.url());
}

#[test]
fn two_gateway_processes_on_a_redis_cluster_share_one_bucket_within_two_percent() {
    let cluster = RedisCluster::start();
    fleet_admits_one_buckets_worth(&cluster.url());
}

/// Sends one request; its status and how long it took.
fn timed(url: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = client().get(url).send().expect("request").status().as_u16();
    (status, started.elapsed())
}

#[test]
fn with_redis_killed_each_gateway_answers_its_failure_mode_at_once_and_recovers() {
    let mut redis = RedisServer::start();
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let closed = start_gateway(
        dir.path(),
        "closed",
        &redis.url(),
        &backend.url(),
        "rate_limit: {key: \"${request.method}\", rate: 10/s, burst: 10, scope: cluster}",
    );
    let open = start_gateway(
        dir.path(),
        "open",
        &redis.url(),
        &backend.url(),
        "rate_limit: {key: \"${request.method}\", rate: 10/s, burst: 10, scope: cluster, on_store_failure: fail_open, fail_open_share: 50%}",
    );
    assert_eq!(timed(&closed.url()).0, 200);
    assert_eq!(timed(&open.url()).0, 200);

    redis.kill();
    // The deadline is 50 ms per call and the breaker then answers without the network: no
    // request waits anywhere near a second (a generous bound; the point is "not seconds").
    for _ in 0..20 {
        let (status, took) = timed(&closed.url());
        assert_eq!(status, 503, "fail_closed: nothing passes uncounted");
        assert!(took < Duration::from_secs(1), "a request waited {took:?}");
    }
    let mut fallback = Vec::new();
    for _ in 0..20 {
        let (status, took) = timed(&open.url());
        assert!(took < Duration::from_secs(1), "a request waited {took:?}");
        fallback.push(status);
    }
    let passed = fallback.iter().filter(|status| **status == 200).count();
    assert!(
        (5..=7).contains(&passed),
        "fail_open decides locally at half the rate (a burst of 5): {fallback:?}"
    );

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if timed(&closed.url()).0 == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis is back but the gateway still refuses"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The fail_open gateway is back on Redis once a request no longer counts as unavailable
    // (its breaker retries after its cool-off of 1 s).
    loop {
        let before = store_unavailable(&open);
        timed(&open.url());
        if store_unavailable(&open) == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fail_open gateway never went back to Redis"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A fresh second: the shared bucket refilled.
    std::thread::sleep(Duration::from_secs(1));
    // Decided in Redis again: the two gateways draw from one bucket of 10 refilled at 10/s
    // (both keys are `GET`); two buckets of their own would let about twice as many through.
    let (closed_url, open_url) = (closed.url(), open.url());
    let started = Instant::now();
    let together: Vec<u16> = (0..30)
        .map(|n| timed(if n % 2 == 0 { &closed_url } else { &open_url }).0)
        .collect();
    let refilled = (10.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    let passed = together.iter().filter(|status| **status == 200).count();
    assert!(
        passed <= 10 + refilled && together.contains(&429),
        "one shared bucket allows at most {} here: {together:?}",
        10 + refilled
    );
}
