//! The Redis store against every conformance suite, on a standalone server and on a
//! 3-master Cluster, each check on a fresh key prefix.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::RedisStore;
use crate::redis::test_servers::{RedisCluster, RedisServer};
use crate::redis::{RedisClient, RedisSettings, RedisUrl};
use crate::store::{conformance, StateStore};

/// Fresh stores over one connection, each under a prefix of its own.
struct Prefixes {
    client: RedisClient,
    opened: AtomicUsize,
}

impl Prefixes {
    async fn connect(url: &str) -> Prefixes {
        let mut settings = RedisSettings::new(RedisUrl::parse(url).expect("url"));
        // Generous: the tests share two cores with the build; the deadline has tests of
        // its own.
        settings.timeout = Duration::from_secs(5);
        let client = RedisClient::connect(&settings).expect("client");
        client
            .ping_within(Duration::from_secs(10))
            .await
            .expect("redis answers");
        Prefixes {
            client,
            opened: AtomicUsize::new(0),
        }
    }

    fn fresh(&self) -> Arc<RedisStore> {
        let n = self.opened.fetch_add(1, Ordering::Relaxed);
        Arc::new(RedisStore::new(self.client.clone(), &format!("test{n}")).expect("store"))
    }

    fn state(&self) -> StateStore {
        StateStore::from_backend(self.fresh(), "redis test")
    }
}

async fn every_suite(stores: &Prefixes) {
    conformance::tokens::run_all(&|| stores.state()).await;
    conformance::revocations::run_all(&|| stores.state()).await;
    conformance::once::run_all(&|| stores.fresh()).await;
    conformance::counters::run_all(&|| stores.fresh()).await;
    conformance::identities::run_all(&|| stores.fresh()).await;
    conformance::documents::run_all(&|| stores.fresh()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_token_suite() {
    let server = RedisServer::start();
    let stores = Prefixes::connect(&server.url()).await;
    conformance::tokens::run_all(&|| stores.state()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_revocation_suite() {
    let server = RedisServer::start();
    let stores = Prefixes::connect(&server.url()).await;
    conformance::revocations::run_all(&|| stores.state()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_once_suite() {
    let server = RedisServer::start();
    let stores = Prefixes::connect(&server.url()).await;
    conformance::once::run_all(&|| stores.fresh()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_counter_suite() {
    let server = RedisServer::start();
    let stores = Prefixes::connect(&server.url()).await;
    conformance::counters::run_all(&|| stores.fresh()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_identity_suite() {
    let server = RedisServer::start();
    let stores = Prefixes::connect(&server.url()).await;
    conformance::identities::run_all(&|| stores.fresh()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_document_suite() {
    let server = RedisServer::start();
    let stores = Prefixes::connect(&server.url()).await;
    conformance::documents::run_all(&|| stores.fresh()).await;
}

/// One Cluster for every suite (a Cluster takes a while to settle).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_every_suite_on_a_cluster() {
    let cluster = RedisCluster::start();
    let stores = Prefixes::connect(&cluster.url()).await;
    every_suite(&stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_survives_a_new_connection() {
    let server = RedisServer::start();
    let first = Prefixes::connect(&server.url()).await;
    let store = StateStore::from_backend(
        Arc::new(RedisStore::new(first.client.clone(), "kept").expect("store")),
        "redis",
    );
    conformance::tokens::seed_for_reopen(&store).await;
    let second = Prefixes::connect(&server.url()).await;
    let reopened = StateStore::from_backend(
        Arc::new(RedisStore::new(second.client.clone(), "kept").expect("store")),
        "redis",
    );
    conformance::tokens::check_after_reopen(&reopened).await;
}

#[test]
fn a_prefix_with_braces_is_refused() {
    let client = RedisClient::connect(&RedisSettings::new(
        RedisUrl::parse("redis://127.0.0.1:1").expect("url"),
    ))
    .expect("client");
    assert!(RedisStore::new(client.clone(), "a{b}").is_err());
    assert!(RedisStore::new(client, "").is_err());
}
