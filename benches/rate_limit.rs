//! Rate-limit decisions: the local limiter alone (one hot key, and 100,000 keys in turn),
//! and the whole `rate_limit` step (key rendered from a variable, two limits, headers on
//! the answer), beside the GCRA arithmetic it rests on.
//!
//! `cargo bench -p portcullis-benches --bench rate_limit`

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis_assertions::gcra::{decide, Limit};
use portcullis_assertions::local_limiter::{Charge, LocalLimiter};
use portcullis_assertions::rate_limit::{
    Cost, LimitRule, MissingKey, ProcessClock, RateLimit, RateLimitParts, Scope,
};
use portcullis_assertions::template::Template;
use portcullis_assertions::{Assertion, Exchange, Request, VarRegistry};

/// A limit nothing in the bench reaches: every decision is an allowed one, the common case.
fn generous() -> Limit {
    Limit::new(1_000_000_000, Duration::from_secs(1), 1_000_000_000).expect("limit")
}

fn limiter(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_limit");
    group.throughput(Throughput::Elements(1));
    let limit = generous();
    group.bench_function("gcra_decide (floor)", |b| {
        let mut now = 0u64;
        b.iter(|| {
            now += 1_000;
            black_box(decide(limit, Some(now), now, 1))
        });
    });

    let local = LocalLimiter::new(200_000);
    let hot = local.key("per-second\0acme");
    let mut now = 0u64;
    group.bench_function("local_limiter 1 key", |b| {
        b.iter(|| {
            now += 1_000;
            black_box(local.charge(
                &[Charge {
                    limit,
                    key: hot,
                    cost: 1,
                }],
                now,
            ))
        });
    });

    let keys: Vec<_> = (0..100_000)
        .map(|n| local.key(&format!("per-second\0client-{n}")))
        .collect();
    let mut next = 0;
    group.bench_function("local_limiter 100k keys", |b| {
        b.iter(|| {
            now += 1_000;
            next = (next + 1) % keys.len();
            black_box(local.charge(
                &[Charge {
                    limit,
                    key: keys[next],
                    cost: 1,
                }],
                now,
            ))
        });
    });

    let mut registry = VarRegistry::new();
    registry.define("client.id");
    let rule = |name: &str, count: u64| LimitRule {
        name: name.into(),
        limit: Limit::new(count, Duration::from_secs(1), count).expect("limit"),
        count,
        period: Duration::from_secs(1),
        key: Template::parse("${client.id}", &registry).expect("template"),
        key_text: "${client.id}".into(),
    };
    let step = RateLimit::new(RateLimitParts {
        bucket_prefix: "bench/request[0]".into(),
        rules: vec![
            rule("per-second", 1_000_000_000),
            rule("per-hour", 1_000_000_000),
        ],
        cost: Cost::Fixed(1),
        missing: MissingKey::Refuse,
        headers_on_allowed: false,
        local: Arc::new(LocalLimiter::new(100_000)),
        scope: Scope::Local,
        clock: Arc::new(ProcessClock),
        counters: Arc::default(),
    })
    .expect("step");
    let ip: IpAddr = "10.20.30.40".parse().expect("ip");
    let (mut parts, ()) = http::Request::builder()
        .uri("/widgets")
        .body(())
        .expect("request")
        .into_parts();
    let client: Arc<str> = Arc::from("acme-mobile");
    group.bench_function("rate_limit step, 2 limits on ${client.id}", |b| {
        b.iter(|| {
            let mut x = Exchange::new(registry.len(), ip, ip);
            x.set(portcullis_assertions::exchange::CLIENT_ID, client.clone());
            black_box(step.on_request(
                &mut Request {
                    head: &mut parts,
                    body: None,
                },
                &mut x,
            ))
        });
    });
    group.finish();
}

criterion_group!(benches, limiter);
criterion_main!(benches);
