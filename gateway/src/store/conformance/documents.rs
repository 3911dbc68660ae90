//! [`DocumentStore`] conformance: versions count writes, a stale writer changes nothing,
//! kinds are apart, and of racing writers naming one version exactly one wins.

use std::sync::Arc;

use super::RACERS;
use crate::store::DocumentStore;

/// Runs every document check, each on a fresh store from `make`.
pub async fn run_all(make: &dyn Fn() -> Arc<dyn DocumentStore>) {
    versions_guard_every_write(&*make()).await;
    kinds_are_apart_and_listed_by_key(&*make()).await;
    a_raced_replacement_has_one_winner(make()).await;
}

async fn versions_guard_every_write(store: &dyn DocumentStore) {
    assert_eq!(store.document("reg", "a").await.expect("read"), None);
    assert_eq!(
        store.put_document("reg", "a", 1, "x").await.expect("put"),
        None,
        "no document has version 1 yet"
    );
    assert_eq!(
        store.put_document("reg", "a", 0, "one").await.expect("put"),
        Some(1)
    );
    assert_eq!(
        store
            .put_document("reg", "a", 0, "again")
            .await
            .expect("put"),
        None,
        "a second create loses"
    );
    assert_eq!(
        store.put_document("reg", "a", 1, "two").await.expect("put"),
        Some(2)
    );
    assert_eq!(
        store
            .put_document("reg", "a", 1, "stale")
            .await
            .expect("put"),
        None,
        "a writer that read version 1 is too late"
    );
    let read = store
        .document("reg", "a")
        .await
        .expect("read")
        .expect("found");
    assert_eq!((read.version, read.body.as_str()), (2, "two"));
    assert!(store.delete_document("reg", "a").await.expect("delete"));
    assert!(!store.delete_document("reg", "a").await.expect("delete"));
    assert_eq!(store.document("reg", "a").await.expect("read"), None);
}

async fn kinds_are_apart_and_listed_by_key(store: &dyn DocumentStore) {
    for key in ["b", "a", "c"] {
        store
            .put_document("reg", key, 0, &format!("reg {key}"))
            .await
            .expect("put");
    }
    store
        .put_document("session", "a", 0, "session a")
        .await
        .expect("put");
    let listed = store.documents("reg").await.expect("list");
    let keys: Vec<&str> = listed.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(listed[0].1.body, "reg a");
    let sessions = store.documents("session").await.expect("list");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].1.body, "session a");
    assert!(store.documents("none").await.expect("list").is_empty());
}

async fn a_raced_replacement_has_one_winner(store: Arc<dyn DocumentStore>) {
    store
        .put_document("reg", "r", 0, "start")
        .await
        .expect("put");
    let racers: Vec<_> = (0..RACERS)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put_document("reg", "r", 1, &format!("racer {n}"))
                    .await
                    .expect("put")
            })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        if racer.await.expect("task").is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one replacement of version 1 wins");
    let read = store
        .document("reg", "r")
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read.version, 2);
    assert!(read.body.starts_with("racer "));
}
