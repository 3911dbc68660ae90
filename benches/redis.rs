//! Cluster-scope rate limiting on loopback Redis: one decision (`RedisLimiter::charge`, the
//! GCRA script over one key and over a request's two limits) beside its floors: a `PING`
//! through our client (the round trip plus its runtime hop, deadline and breaker) and a bare
//! `PING` on the redis crate's own multiplexed connection (the round trip alone); and a
//! one-time marker through the Redis state store. And the state store's round trips on
//! Redis beside the same calls on SQLite (a token record read, a one-time marker written):
//! what a fleet pays per store call against one host's file. Starts its own `redis-server`.
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
use portcullis::store::sqlite::SqliteStore;
use portcullis::store::{OnceStore, TokenFormat, TokenKind, TokenRecord, TokenStore, Usage};
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

    // The same calls on both backends: a token record read (what require_bearer's prefetch
    // does for a token not yet cached) and a one-time marker written (a replay check).
    let redis_store = Arc::new(RedisStore::new(client.clone(), "bench-store").expect("store"));
    let folder = tempfile::tempdir().expect("dir");
    let sqlite_store =
        Arc::new(SqliteStore::open(&folder.path().join("bench.db")).expect("sqlite"));
    /// A backend's name and the two purposes measured.
    type Backend = (&'static str, Arc<dyn TokenStore>, Arc<dyn OnceStore>);
    let backends: [Backend; 2] = [
        ("redis", redis_store.clone(), redis_store),
        ("sqlite", sqlite_store.clone(), sqlite_store),
    ];
    let mut group = c.benchmark_group("state store round trip");
    for (name, tokens, once) in backends {
        runtime
            .block_on(tokens.insert_token(&record("bench-token")))
            .expect("insert");
        group.bench_function(format!("{name}: read a token record"), |b| {
            b.iter(|| black_box(runtime.block_on(tokens.token("bench-token")).expect("read")));
        });
        let mut n = 0u64;
        group.bench_function(format!("{name}: write a one-time marker"), |b| {
            b.iter(|| {
                n += 1;
                let key = format!("sig-{n}");
                black_box(
                    runtime
                        .block_on(once.use_once(&key, 4_000_000_000, 1_800_000_000))
                        .expect("once"),
                )
            });
        });
    }
    group.finish();
    drop(server);
}

/// An access token record valid for a long while.
fn record(id: &str) -> TokenRecord {
    TokenRecord {
        id: id.to_owned(),
        kind: TokenKind::Access,
        format: TokenFormat::Opaque,
        client_id: "bench".to_owned(),
        subject: "bench".to_owned(),
        scope: "widgets.read".to_owned(),
        grant_type: "client_credentials".to_owned(),
        refresh_id: None,
        family_id: None,
        source: None,
        issued_at: 1_800_000_000,
        expires_at: 4_000_000_000,
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
        rotated_at: None,
        usage: Usage::default(),
        flagged: None,
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
