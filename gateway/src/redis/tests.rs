//! The client against real servers: passwords, a Cluster, deadlines, the breaker, and
//! callers on runtimes that come and go.

use std::time::{Duration, Instant};

use super::test_servers::{RedisCluster, RedisServer};
use super::{BreakerSettings, RedisClient, RedisSettings, RedisUnavailable, RedisUrl};
use crate::runtime::Secret;

fn settings(url: &str) -> RedisSettings {
    RedisSettings::new(RedisUrl::parse(url).expect("url"))
}

fn set_get(key: &str) -> (::redis::Cmd, ::redis::Cmd) {
    let mut set = ::redis::cmd("SET");
    set.arg(key).arg("value");
    let mut get = ::redis::cmd("GET");
    get.arg(key);
    (set, get)
}

#[tokio::test]
async fn a_password_from_a_secret_authenticates() {
    let server = RedisServer::start_with_password("correct horse");
    let mut good = settings(&server.url());
    good.password = Some(Secret::new("correct horse"));
    let client = RedisClient::connect(&good).expect("client");
    client
        .ping_within(Duration::from_secs(5))
        .await
        .expect("ping");
    let (set, get) = set_get("k");
    client.query::<()>(set).await.expect("set");
    assert_eq!(client.query::<String>(get).await.expect("get"), "value");

    let mut bad = settings(&server.url());
    bad.password = Some(Secret::new("battery staple"));
    let client = RedisClient::connect(&bad).expect("client");
    let error = client
        .ping_within(Duration::from_millis(300))
        .await
        .expect_err("wrong password");
    assert!(!error.to_string().contains("battery"), "{error}");
}

#[tokio::test]
async fn a_cluster_routes_keys_to_their_masters() {
    let cluster = RedisCluster::start();
    let client = RedisClient::connect(&settings(&cluster.url())).expect("client");
    client
        .ping_within(Duration::from_secs(5))
        .await
        .expect("ping");
    // Keys spread over every slot range, so all three masters answer.
    for i in 0..30 {
        let (set, get) = set_get(&format!("key-{i}"));
        client.query::<()>(set).await.expect("set");
        assert_eq!(client.query::<String>(get).await.expect("get"), "value");
    }
}

#[tokio::test]
async fn no_call_waits_past_its_timeout() {
    let server = RedisServer::start();
    let mut patient = settings(&server.url());
    patient.timeout = Duration::from_millis(50);
    let client = RedisClient::connect(&patient).expect("client");
    client
        .ping_within(Duration::from_secs(5))
        .await
        .expect("ping");
    server.pause();
    let started = Instant::now();
    let error = client.ping().await.expect_err("a frozen server");
    let waited = started.elapsed();
    server.resume();
    assert!(matches!(error, RedisUnavailable::Timeout { .. }), "{error}");
    assert!(waited < Duration::from_millis(150), "waited {waited:?}");
    assert_eq!(client.stats().timeouts, 1);
}

#[tokio::test]
async fn the_breaker_fails_fast_while_redis_is_down_and_closes_when_it_is_back() {
    let mut server = RedisServer::start();
    let mut fragile = settings(&server.url());
    fragile.breaker = BreakerSettings {
        failures: 3,
        cool_off: Duration::from_millis(200),
    };
    let client = RedisClient::connect(&fragile).expect("client");
    client
        .ping_within(Duration::from_secs(5))
        .await
        .expect("ping");
    server.kill();
    for _ in 0..3 {
        assert!(client.ping().await.is_err());
    }
    let started = Instant::now();
    let error = client.ping().await.expect_err("open");
    assert!(
        matches!(error, RedisUnavailable::CircuitOpen { .. }),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(5),
        "no network call"
    );
    let stats = client.stats();
    assert_eq!((stats.breaker.open, stats.breaker.opened), (1, 1));

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the breaker never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.stats().breaker.open, 0);
}

#[test]
fn callers_on_throwaway_runtimes_share_one_connection() {
    let server = RedisServer::start();
    let client = RedisClient::connect(&settings(&server.url())).expect("client");
    for round in 0..3 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            client
                .ping_within(Duration::from_secs(5))
                .await
                .expect("ping");
            let (set, _) = set_get(&format!("round-{round}"));
            client.query::<()>(set).await.expect("set");
        });
        // The runtime that made the first call is gone; the connection is not.
    }
    assert_eq!(client.stats().failures, 0);
}

#[test]
fn a_client_for_an_absent_server_builds_and_then_times_out() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let client =
        RedisClient::connect(&settings(&format!("redis://127.0.0.1:{port}"))).expect("client");
    let error = crate::store::wait(async {
        client
            .ping()
            .await
            .map_err(|e| crate::store::StoreError::Unavailable(e.to_string()))
    })
    .expect_err("nobody listens");
    assert!(
        error.to_string().contains("redis redis://127.0.0.1:"),
        "{error}"
    );
}

fn tls_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tls")
        .join(name)
}

#[tokio::test]
async fn rediss_trusts_the_ca_it_is_given_and_no_other() {
    let server = RedisServer::start_tls(&tls_fixture("server.pem"), &tls_fixture("server.key"));
    let ca = std::fs::read(tls_fixture("ca.pem")).expect("ca");
    for host in ["127.0.0.1", "localhost"] {
        let mut trusted = settings(&format!("rediss://{host}:{}", server.port()));
        trusted.ca_pem = Some(ca.clone());
        let client = RedisClient::connect(&trusted).expect("client");
        client
            .ping_within(Duration::from_secs(5))
            .await
            .unwrap_or_else(|error| panic!("{host}: {error}"));
    }
    // The system's roots do not know the test CA.
    let client = RedisClient::connect(&settings(&format!("rediss://127.0.0.1:{}", server.port())))
        .expect("client");
    assert!(client
        .ping_within(Duration::from_millis(500))
        .await
        .is_err());
}

/// A Cluster master dies (its slots stop answering, the rest keep working) and comes back
/// on its port: the client finds it again without being rebuilt.
#[tokio::test]
async fn a_cluster_master_that_dies_and_returns_is_used_again() {
    let mut cluster = RedisCluster::start();
    let mut tolerant = settings(&cluster.url());
    tolerant.timeout = Duration::from_millis(300);
    tolerant.breaker = BreakerSettings {
        failures: 1_000,
        cool_off: Duration::from_millis(100),
    };
    let client = RedisClient::connect(&tolerant).expect("client");
    client
        .ping_within(Duration::from_secs(10))
        .await
        .expect("ping");
    let write_all = |client: RedisClient| async move {
        let mut failed = 0;
        for i in 0..30 {
            let (set, _) = set_get(&format!("key-{i}"));
            failed += usize::from(client.query::<()>(set).await.is_err());
        }
        failed
    };
    assert_eq!(write_all(client.clone()).await, 0);
    cluster.nodes()[0].kill();
    let failed = write_all(client.clone()).await;
    assert!((1..30).contains(&failed), "{failed} of 30 writes failed");
    cluster.nodes()[0].restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while write_all(client.clone()).await > 0 {
        assert!(Instant::now() < deadline, "the master never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
