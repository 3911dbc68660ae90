//! Cluster-scope rate limiting on loopback Redis: one decision (`RedisLimiter::charge`, the
//! GCRA script over one key and over a request's two limits) beside its floors: a `PING`
//! through our client (the round trip plus its runtime hop, deadline and breaker) and a bare
//! `PING` on the redis crate's own multiplexed connection (the round trip alone); and a
//! one-time marker through the Redis state store. Starts its own `redis-server`.
//!
//! `cargo bench -p portcullis-benches --bench redis`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::redis::limiter::{ClusterCharge, RedisLimiter};
use portcullis::redis::test_servers::RedisServer;
use portcullis::redis::{RedisClient, RedisSettings, RedisUrl};
use portcullis::store::redis::RedisStore;
use portcullis::store::OnceStore;
use portcullis_assertions::gcra::Limit;

fn bench(c: &mut Criterion) {
    let server = RedisServer::start();
    let mut settings = RedisSettings::new(RedisUrl::parse(&server.url()).expect("url"));
    settings.timeout = Duration::from_secs(1);
    let client = RedisClient::connect(&settings).expect("client");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(client.ping_within(Duration::from_secs(5)))
        .expect("redis answers");
    let limiter = RedisLimiter::new(client.clone());
    // Roomy limits: every decision is an allowed one that stores its TAT.
    let per_second = Limit::new(1_000_000, Duration::from_secs(1), 1_000_000).expect("limit");
    let per_hour = Limit::new(1_000_000_000, Duration::from_secs(3600), 1_000_000).expect("limit");

    let mut bare = runtime
        .block_on(
            redis::Client::open(server.url())
                .expect("client")
                .get_multiplexed_async_connection(),
        )
        .expect("bare connection");

    let mut group = c.benchmark_group("redis");
    group.bench_function("bare ping (redis crate, floor)", |b| {
        b.iter(|| {
            let pong: String = runtime
                .block_on(redis::cmd("PING").query_async(&mut bare))
                .expect("ping");
            black_box(pong)
        });
    });
    group.bench_function("ping through RedisClient", |b| {
        b.iter(|| runtime.block_on(client.ping()).expect("ping"));
    });
    group.bench_function("rate limit: one limit", |b| {
        let charge = [ClusterCharge {
            key: "{bench}:s",
            limit: per_second,
            cost: 1,
        }];
        b.iter(|| black_box(runtime.block_on(limiter.charge(&charge)).expect("charge")));
    });
    group.bench_function("rate limit: two limits, one tag", |b| {
        let charge = [
            ClusterCharge {
                key: "{bench}:s",
                limit: per_second,
                cost: 1,
            },
            ClusterCharge {
                key: "{bench}:h",
                limit: per_hour,
                cost: 1,
            },
        ];
        b.iter(|| black_box(runtime.block_on(limiter.charge(&charge)).expect("charge")));
    });
    let store: Arc<dyn OnceStore> =
        Arc::new(RedisStore::new(client.clone(), "bench").expect("store"));
    let mut n = 0u64;
    group.bench_function("one-time marker (use_once)", |b| {
        b.iter(|| {
            n += 1;
            let key = format!("jti-{n}");
            black_box(
                runtime
                    .block_on(store.use_once(&key, 4_000_000_000, 1_800_000_000))
                    .expect("once"),
            )
        });
    });
    group.finish();
    drop(server);
}

criterion_group!(benches, bench);
criterion_main!(benches);
