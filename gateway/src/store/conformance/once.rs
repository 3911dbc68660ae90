//! [`OnceStore`] conformance: a key is used once until it expires, even when raced.

use std::sync::Arc;

use super::{NOW, RACERS};
use crate::store::OnceStore;

/// Runs every one-time-marker check, each on a fresh store from `make`.
pub async fn run_all(make: &dyn Fn() -> Arc<dyn OnceStore>) {
    one_time_markers(&*make()).await;
    purge_drops_only_expired_markers(&*make()).await;
    a_raced_marker_is_used_exactly_once(make()).await;
}

async fn one_time_markers(store: &dyn OnceStore) {
    assert!(store
        .use_once("iss jti-1", NOW + 60, NOW)
        .await
        .expect("once"));
    assert!(
        !store
            .use_once("iss jti-1", NOW + 60, NOW + 30)
            .await
            .expect("once"),
        "replay"
    );
    assert!(store
        .use_once("iss jti-2", NOW + 60, NOW)
        .await
        .expect("once"));
    assert!(
        store
            .use_once("iss jti-1", NOW + 200, NOW + 61)
            .await
            .expect("once"),
        "an expired marker may be reused"
    );
    assert!(!store
        .use_once("iss jti-1", NOW + 200, NOW + 100)
        .await
        .expect("once"));
}

async fn purge_drops_only_expired_markers(store: &dyn OnceStore) {
    store
        .use_once("gone", NOW - 50, NOW - 60)
        .await
        .expect("once");
    store.use_once("kept", NOW + 50, NOW).await.expect("once");
    assert_eq!(store.purge_expired_markers(NOW).await.expect("purge"), 1);
    assert!(!store
        .use_once("kept", NOW + 60, NOW + 1)
        .await
        .expect("once"));
    assert!(store
        .use_once("gone", NOW + 60, NOW + 1)
        .await
        .expect("once"));
}

async fn a_raced_marker_is_used_exactly_once(store: Arc<dyn OnceStore>) {
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.use_once("iss jti-raced", NOW + 60, NOW).await })
        })
        .collect();
    let mut firsts = 0;
    for task in tasks {
        firsts += usize::from(task.await.expect("task").expect("once"));
    }
    assert_eq!(firsts, 1);
}
