//! [`IdentityStore`] conformance: put, get, replace, remove and list with expiry, idle
//! touches, purging, and concurrent writers.

use std::sync::Arc;

use super::{ip, NOW, RACERS};
use crate::store::{IdentityEntry, IdentityStore, IdentityTouch};

/// Runs every identity check, each on a fresh store from `make`.
pub async fn run_all(make: &dyn Fn() -> Arc<dyn IdentityStore>) {
    entries_round_trip_and_are_replaced(&*make()).await;
    expired_entries_are_not_returned(&*make()).await;
    removal_and_listing(&*make()).await;
    purge_drops_only_expired_entries(&*make()).await;
    touches_move_the_idle_deadline_up_to_the_session_end(&*make()).await;
    touches_never_revive_or_extend_another_users_entry(&*make()).await;
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
        session_ends_at: expires_at,
    }
}

fn touch(address: &str, username: &str, seen_at: i64) -> IdentityTouch {
    IdentityTouch {
        ip: ip(address),
        username: username.to_owned(),
        seen_at,
    }
}

/// An entry whose session lasts `session` seconds from `NOW` and may idle `idle` seconds.
fn idling(address: &str, username: &str, session: i64, idle: i64) -> IdentityEntry {
    IdentityEntry {
        // A user name that spells the field the Redis script edits must not confuse it.
        username: username.to_owned(),
        groups: Vec::new(),
        session_timeout_secs: Some(session),
        idle_timeout_secs: Some(idle),
        session_ends_at: NOW + session,
        ..entry(address, username, NOW + idle.min(session))
    }
}

async fn touches_move_the_idle_deadline_up_to_the_session_end(store: &dyn IdentityStore) {
    let tricky = "\"expires_at\":1,";
    let alice = idling("10.3.0.1", tricky, 100, 10);
    let bob = idling("2001:db8::3", "bob", 12, 10);
    let fixed = IdentityEntry {
        idle_timeout_secs: None,
        ..entry("10.3.0.2", "carol", NOW + 10)
    };
    for e in [&alice, &bob, &fixed] {
        store.put_identity(e).await.expect("put");
    }
    let moved = store
        .touch_identities(&[
            touch("10.3.0.1", tricky, NOW + 5),
            touch("2001:db8::3", "bob", NOW + 9),
            touch("10.3.0.2", "carol", NOW + 5),
        ])
        .await
        .expect("touch");
    assert_eq!(moved, 2, "an entry without an idle timeout does not move");
    let get = |address: &'static str| async move {
        store
            .identity(ip(address), NOW)
            .await
            .expect("get")
            .expect("live")
    };
    let alice_now = get("10.3.0.1").await;
    assert_eq!(
        alice_now.expires_at,
        NOW + 15,
        "idle deadline from the touch"
    );
    assert_eq!(alice_now.username, tricky);
    assert_eq!(alice_now.groups, Vec::<String>::new());
    assert_eq!(alice_now.session_ends_at, NOW + 100);
    assert_eq!(get("2001:db8::3").await.expires_at, NOW + 12, "capped");
    assert_eq!(get("10.3.0.2").await.expires_at, NOW + 10);
    // A late touch never pulls the deadline back.
    store
        .touch_identities(&[touch("10.3.0.1", tricky, NOW + 1)])
        .await
        .expect("touch");
    assert_eq!(get("10.3.0.1").await.expires_at, NOW + 15);
    // The new deadline is what listing and expiry go by.
    assert!(store
        .identity(alice.ip, NOW + 14)
        .await
        .expect("get")
        .is_some());
    assert_eq!(store.identity(alice.ip, NOW + 15).await.expect("get"), None);
    let listed = store.identities(NOW + 11).await.expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
}

async fn touches_never_revive_or_extend_another_users_entry(store: &dyn IdentityStore) {
    let dave = idling("10.4.0.1", "dave", 100, 10);
    store.put_identity(&dave).await.expect("put");
    // Seen after the entry had idled out: it stays expired.
    assert_eq!(
        store
            .touch_identities(&[touch("10.4.0.1", "dave", NOW + 10)])
            .await
            .expect("touch"),
        0
    );
    assert_eq!(store.identity(dave.ip, NOW + 10).await.expect("get"), None);
    // The address went to someone else: dave's traffic does not extend erin's entry.
    let erin = idling("10.4.0.1", "erin", 100, 10);
    store.put_identity(&erin).await.expect("put");
    store
        .touch_identities(&[touch("10.4.0.1", "dave", NOW + 5)])
        .await
        .expect("touch");
    assert_eq!(
        store.identity(erin.ip, NOW).await.expect("get"),
        Some(erin.clone())
    );
    // A deleted entry is not brought back.
    assert!(store.remove_identity(erin.ip).await.expect("remove"));
    store
        .touch_identities(&[touch("10.4.0.1", "erin", NOW + 5)])
        .await
        .expect("touch");
    assert_eq!(store.identity(erin.ip, NOW).await.expect("get"), None);
    assert_eq!(store.touch_identities(&[]).await.expect("nothing"), 0);
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
