//! [`IdentityStore`] conformance: put, get, replace, remove and list with expiry, purging,
//! and concurrent writers.

use std::sync::Arc;

use super::{ip, NOW, RACERS};
use crate::store::{IdentityEntry, IdentityStore};

/// Runs every identity check, each on a fresh store from `make`.
pub async fn run_all(make: &dyn Fn() -> Arc<dyn IdentityStore>) {
    entries_round_trip_and_are_replaced(&*make()).await;
    expired_entries_are_not_returned(&*make()).await;
    removal_and_listing(&*make()).await;
    purge_drops_only_expired_entries(&*make()).await;
    concurrent_writers_all_land(make()).await;
}

fn entry(address: &str, username: &str, expires_at: i64) -> IdentityEntry {
    IdentityEntry {
        ip: ip(address),
        username: username.to_owned(),
        groups: vec!["staff".to_owned(), "vpn users".to_owned()],
        interface: Some("tun0".to_owned()),
        session_timeout_secs: Some(28_800),
        idle_timeout_secs: Some(900),
        expires_at,
    }
}

async fn entries_round_trip_and_are_replaced(store: &dyn IdentityStore) {
    let alice = entry("10.0.0.7", "alice", NOW + 60);
    store.put_identity(&alice).await.expect("put");
    assert_eq!(
        store.identity(alice.ip, NOW).await.expect("get"),
        Some(alice.clone())
    );
    let bare = IdentityEntry {
        groups: Vec::new(),
        interface: None,
        session_timeout_secs: None,
        idle_timeout_secs: None,
        ..entry("2001:db8::7", "bob", NOW + 60)
    };
    store.put_identity(&bare).await.expect("put");
    assert_eq!(store.identity(bare.ip, NOW).await.expect("get"), Some(bare));
    // The address changed hands: the new entry replaces the old one.
    let carol = entry("10.0.0.7", "carol", NOW + 120);
    store.put_identity(&carol).await.expect("put");
    assert_eq!(
        store.identity(carol.ip, NOW).await.expect("get"),
        Some(carol)
    );
    assert_eq!(
        store.identity(ip("10.0.0.8"), NOW).await.expect("get"),
        None
    );
}

async fn expired_entries_are_not_returned(store: &dyn IdentityStore) {
    let alice = entry("10.0.0.9", "alice", NOW + 60);
    store.put_identity(&alice).await.expect("put");
    assert!(store
        .identity(alice.ip, NOW + 59)
        .await
        .expect("get")
        .is_some());
    assert_eq!(store.identity(alice.ip, NOW + 60).await.expect("get"), None);
    assert!(store.identities(NOW + 60).await.expect("list").is_empty());
}

async fn removal_and_listing(store: &dyn IdentityStore) {
    for (address, user, expires_at) in [
        ("10.0.0.10", "dave", NOW + 60),
        ("10.0.0.9", "erin", NOW + 60),
        ("10.0.0.11", "frank", NOW - 1),
    ] {
        store
            .put_identity(&entry(address, user, expires_at))
            .await
            .expect("put");
    }
    let users: Vec<String> = store
        .identities(NOW)
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.username)
        .collect();
    assert_eq!(users, ["erin", "dave"], "live entries, by address");
    assert!(store.remove_identity(ip("10.0.0.9")).await.expect("remove"));
    assert!(!store.remove_identity(ip("10.0.0.9")).await.expect("remove"));
    assert_eq!(
        store.identity(ip("10.0.0.9"), NOW).await.expect("get"),
        None
    );
    assert_eq!(store.identities(NOW).await.expect("list").len(), 1);
}

async fn purge_drops_only_expired_entries(store: &dyn IdentityStore) {
    store
        .put_identity(&entry("10.1.0.1", "gone", NOW - 10))
        .await
        .expect("put");
    store
        .put_identity(&entry("10.1.0.2", "kept", NOW + 10))
        .await
        .expect("put");
    assert_eq!(store.purge_expired_identities(NOW).await.expect("purge"), 1);
    assert_eq!(store.identities(NOW - 20).await.expect("list").len(), 1);
}

async fn concurrent_writers_all_land(store: Arc<dyn IdentityStore>) {
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .put_identity(&entry(
                        &format!("10.2.0.{i}"),
                        &format!("user{i}"),
                        NOW + 60,
                    ))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("put");
    }
    assert_eq!(store.identities(NOW).await.expect("list").len(), RACERS);
}
