//! The Lua GCRA against `gcra::decide` (the same answers, step by step, for one limit and
//! for a pair), refusals that store nothing, the server's clock and TTLs, and a Cluster.

use std::time::Duration;

use portcullis_assertions::gcra::{decide, Decision, Limit};
use proptest::prelude::*;

use super::{ClusterCharge, RedisLimiter};
use crate::redis::test_servers::{RedisCluster, RedisServer};
use crate::redis::{RedisClient, RedisSettings, RedisUrl};

/// A Unix time in nanoseconds, past 2^53, so the script's exactness is tested where it
/// matters.
const NOW: u64 = 1_800_000_000_123_456_789;

async fn limiter(url: &str) -> RedisLimiter {
    let mut settings = RedisSettings::new(RedisUrl::parse(url).expect("url"));
    settings.timeout = Duration::from_secs(5);
    let client = RedisClient::connect(&settings).expect("client");
    client
        .ping_within(Duration::from_secs(10))
        .await
        .expect("redis answers");
    RedisLimiter::new(client)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn limit(count: u64, period_ms: u64, burst: u64) -> Limit {
    Limit::new(count, Duration::from_millis(period_ms), burst).expect("limit")
}

/// `gcra::decide` over several limits, all or nothing, as the script must behave.
fn reference(limits: &[Limit], tats: &mut [Option<u64>], now: u64, cost: u64) -> Vec<Decision> {
    let mut decisions: Vec<Decision> = limits
        .iter()
        .zip(tats.iter())
        .map(|(limit, tat)| decide(*limit, *tat, now, cost))
        .collect();
    if decisions.iter().all(|d| d.allowed) {
        for (tat, d) in tats.iter_mut().zip(&decisions) {
            *tat = d.new_tat;
        }
    } else {
        for d in &mut decisions {
            d.new_tat = None;
        }
    }
    decisions
}

fn steps() -> impl Strategy<Value = Vec<(u64, u64)>> {
    // (nanoseconds since the previous request, cost)
    prop::collection::vec((0u64..400_000_000, 0u64..4), 1..25)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::test_cases(48)))]

    /// Step by step, the script answers what `gcra::decide` answers, for one limit and for
    /// a pair decided together (with an explicit `now`, so both see the same times).
    #[test]
    fn the_script_decides_as_gcra_does(
        count in 1u64..50,
        period_ms in 1u64..5_000,
        burst in 1u64..8,
        second_count in 1u64..50,
        steps in steps(),
    ) {
        let server = SERVER.with(|s| s.url());
        let rt = runtime();
        rt.block_on(async {
            let limiter = limiter(&server).await;
            let case = rand_key();
            let limits = [limit(count, period_ms, burst), limit(second_count, 10_000, burst + 1)];
            let keys = [format!("{{{case}}}:a"), format!("{{{case}}}:b")];
            let mut single_tat = [None];
            let mut pair_tats = [None, None];
            let mut now = NOW;
            for (gap, cost) in steps {
                now += gap;
                let expected = reference(&limits[..1], &mut single_tat, now, cost);
                let single = [ClusterCharge { key: &format!("{{{case}}}:single"), limit: limits[0], cost }];
                let got = limiter.charge_at(&single, now).await.expect("charge");
                prop_assert_eq!(got, expected);

                let expected = reference(&limits, &mut pair_tats, now, cost);
                let pair = [
                    ClusterCharge { key: &keys[0], limit: limits[0], cost },
                    ClusterCharge { key: &keys[1], limit: limits[1], cost },
                ];
                let got = limiter.charge_at(&pair, now).await.expect("charge");
                prop_assert_eq!(got, expected);
            }
            Ok(())
        })?;
    }
}

thread_local! {
    /// One server for every case of the property test on this thread.
    static SERVER: RedisServer = RedisServer::start();
}

fn rand_key() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("case-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[tokio::test]
async fn a_refusal_stores_nothing() {
    let server = RedisServer::start();
    let limiter = limiter(&server.url()).await;
    let roomy = limit(100, 1_000, 100);
    let tight = limit(1, 60_000, 1);
    let charge = |cost| {
        [
            ClusterCharge {
                key: "{alice}:roomy",
                limit: roomy,
                cost,
            },
            ClusterCharge {
                key: "{alice}:tight",
                limit: tight,
                cost,
            },
        ]
    };
    let first = limiter.charge_at(&charge(1), NOW).await.expect("charge");
    assert!(first.iter().all(|d| d.allowed));
    let roomy_tat = server.bulk(&["GET", "{alice}:roomy"]).expect("get");
    let refused = limiter
        .charge_at(&charge(1), NOW + 1)
        .await
        .expect("charge");
    assert!(refused[0].allowed && !refused[1].allowed, "{refused:?}");
    assert_eq!(
        refused[0].new_tat, None,
        "nothing stored for the allowed one"
    );
    assert_eq!(
        server.bulk(&["GET", "{alice}:roomy"]).expect("get"),
        roomy_tat,
        "the roomy bucket was not charged for the refused request"
    );
}

#[tokio::test]
async fn the_server_clock_decides_and_keys_expire_when_full_again() {
    let server = RedisServer::start();
    let limiter = limiter(&server.url()).await;
    let per_minute = limit(2, 60_000, 2);
    let charge = [ClusterCharge {
        key: "{bob}:m",
        limit: per_minute,
        cost: 1,
    }];
    for remaining in [1, 0] {
        let d = limiter.charge(&charge).await.expect("charge");
        assert!(d[0].allowed);
        assert_eq!(d[0].remaining, remaining);
    }
    let refused = limiter.charge(&charge).await.expect("charge");
    assert!(!refused[0].allowed);
    let retry = refused[0].retry_after.expect("retry after");
    assert!(
        retry > Duration::from_secs(29) && retry <= Duration::from_secs(30),
        "{retry:?}"
    );
    let ttl: u64 = server
        .command(&["PTTL", "{bob}:m"])
        .expect("pttl")
        .trim_start_matches(':')
        .parse()
        .expect("a number");
    assert!(
        ttl > 59_000 && ttl <= 60_000,
        "the key lives until the bucket is full: {ttl}"
    );
}

#[tokio::test]
async fn keys_without_one_hash_tag_are_refused() {
    let server = RedisServer::start();
    let limiter = limiter(&server.url()).await;
    let l = limit(1, 1_000, 1);
    let error = limiter
        .charge(&[
            ClusterCharge {
                key: "{a}:x",
                limit: l,
                cost: 1,
            },
            ClusterCharge {
                key: "{b}:x",
                limit: l,
                cost: 1,
            },
        ])
        .await
        .expect_err("two tags");
    assert!(error.to_string().contains("hash tag"), "{error}");
    let too_long = Limit::new(1, Duration::from_secs(60 * 86_400), 1).expect("limit");
    let error = limiter
        .charge(&[ClusterCharge {
            key: "k",
            limit: too_long,
            cost: 1,
        }])
        .await
        .expect_err("60 days");
    assert!(error.to_string().contains("too long"), "{error}");
}

#[tokio::test]
async fn a_cluster_decides_a_group_on_its_master() {
    let cluster = RedisCluster::start();
    let limiter = limiter(&cluster.url()).await;
    let per_second = limit(3, 1_000, 3);
    let per_hour = limit(1_000, 3_600_000, 5);
    for user in ["carol", "dave", "erin", "frank"] {
        let keys = [format!("{{{user}}}:s"), format!("{{{user}}}:h")];
        let charge = [
            ClusterCharge {
                key: &keys[0],
                limit: per_second,
                cost: 1,
            },
            ClusterCharge {
                key: &keys[1],
                limit: per_hour,
                cost: 1,
            },
        ];
        let mut allowed = 0;
        for _ in 0..5 {
            let d = limiter.charge_at(&charge, NOW).await.expect("charge");
            allowed += usize::from(d.iter().all(|d| d.allowed));
        }
        assert_eq!(allowed, 3, "{user}: the per-second burst");
    }
}

/// The seam the `rate_limit` step calls.
#[tokio::test]
async fn answers_through_the_shared_limiter_seam() {
    use portcullis_assertions::rate_limit::{SharedCharge, SharedLimiter};
    let server = RedisServer::start();
    let limiter = limiter(&server.url()).await;
    let shared: &dyn SharedLimiter = &limiter;
    let decisions = shared
        .charge(vec![SharedCharge {
            key: "{seam}:k".to_owned(),
            limit: limit(1, 1_000, 1),
            cost: 1,
        }])
        .await
        .expect("decided");
    assert!(decisions[0].allowed);
    drop(server);
    let unreachable = shared
        .charge(vec![SharedCharge {
            key: "{seam}:k".to_owned(),
            limit: limit(1, 1_000, 1),
            cost: 1,
        }])
        .await;
    assert!(unreachable.is_err());
}
