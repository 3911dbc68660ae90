//! [`CounterStore`] conformance: increments by n within a window, a new window after the
//! reset time, keys kept apart, purging, and no increment lost under concurrency.

use std::collections::HashSet;
use std::sync::Arc;

use super::{NOW, RACERS};
use crate::store::{CounterStore, CounterWindow};

/// Runs every counter check, each on a fresh store from `make`.
pub async fn run_all(make: &dyn Fn() -> Arc<dyn CounterStore>) {
    increments_add_up_within_a_window(&*make()).await;
    a_window_resets_at_its_end(&*make()).await;
    keys_are_counted_apart(&*make()).await;
    purge_drops_only_ended_windows(&*make()).await;
    concurrent_increments_are_all_counted(make()).await;
}

fn window(count: u64, resets_at: i64) -> CounterWindow {
    CounterWindow { count, resets_at }
}

async fn increments_add_up_within_a_window(store: &dyn CounterStore) {
    assert_eq!(
        store
            .increment("client:a", 1, 60, NOW)
            .await
            .expect("increment"),
        window(1, NOW + 60)
    );
    assert_eq!(
        store
            .increment("client:a", 5, 60, NOW + 10)
            .await
            .expect("increment"),
        window(6, NOW + 60),
        "the window is the first increment's"
    );
    assert_eq!(
        store
            .increment("client:a", 0, 60, NOW + 59)
            .await
            .expect("increment"),
        window(6, NOW + 60),
        "adding nothing reads the count"
    );
}

async fn a_window_resets_at_its_end(store: &dyn CounterStore) {
    store
        .increment("quota", 10, 60, NOW)
        .await
        .expect("increment");
    assert_eq!(
        store
            .increment("quota", 2, 60, NOW + 60)
            .await
            .expect("increment"),
        window(2, NOW + 120),
        "at resets_at a new window starts with this increment"
    );
    assert_eq!(
        store
            .increment("quota", 1, 30, NOW + 500)
            .await
            .expect("increment"),
        window(1, NOW + 530),
        "a long-idle counter starts afresh with the new window length"
    );
}

async fn keys_are_counted_apart(store: &dyn CounterStore) {
    store.increment("k1", 3, 60, NOW).await.expect("increment");
    store.increment("k2", 4, 10, NOW).await.expect("increment");
    assert_eq!(
        store
            .increment("k1", 1, 60, NOW + 1)
            .await
            .expect("increment"),
        window(4, NOW + 60)
    );
    assert_eq!(
        store
            .increment("k2", 1, 10, NOW + 1)
            .await
            .expect("increment"),
        window(5, NOW + 10)
    );
}

async fn purge_drops_only_ended_windows(store: &dyn CounterStore) {
    store
        .increment("ended", 7, 10, NOW - 100)
        .await
        .expect("increment");
    store
        .increment("running", 7, 100, NOW)
        .await
        .expect("increment");
    assert_eq!(store.purge_expired_counters(NOW).await.expect("purge"), 1);
    assert_eq!(
        store
            .increment("running", 1, 100, NOW + 1)
            .await
            .expect("increment"),
        window(8, NOW + 100),
        "a running window keeps its count"
    );
}

async fn concurrent_increments_are_all_counted(store: Arc<dyn CounterStore>) {
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.increment("raced", 1, 60, NOW).await })
        })
        .collect();
    let mut seen = HashSet::new();
    for task in tasks {
        seen.insert(task.await.expect("task").expect("increment").count);
    }
    // Each increment saw its own count: none was lost or applied twice.
    let expected: HashSet<u64> = (1..=RACERS as u64).collect();
    assert_eq!(seen, expected);
    assert_eq!(
        store
            .increment("raced", 0, 60, NOW)
            .await
            .expect("increment")
            .count,
        RACERS as u64
    );
}
