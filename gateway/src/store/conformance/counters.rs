//! [`CounterStore`] conformance: charges add up within a window and stop at the limit
//! without consuming, a new window after the reset time, keys kept apart, listing by prefix,
//! reset, purging, and concurrent charges that neither get lost nor pass the limit together.

use std::sync::Arc;

use super::{NOW, RACERS};
use crate::store::{CounterCharge, CounterStore, CounterWindow};

/// Runs every counter check, each on a fresh store from `make`.
pub async fn run_all(make: &dyn Fn() -> Arc<dyn CounterStore>) {
    charges_add_up_to_the_limit_and_a_refusal_consumes_nothing(&*make()).await;
    a_window_resets_at_its_end(&*make()).await;
    keys_are_counted_apart_and_listed_by_prefix(&*make()).await;
    a_reset_ends_the_window(&*make()).await;
    purge_drops_only_ended_windows(&*make()).await;
    concurrent_charges_stop_exactly_at_the_limit(make()).await;
}

fn allowed(count: u64, resets_at: i64) -> CounterCharge {
    CounterCharge {
        allowed: true,
        window: CounterWindow { count, resets_at },
    }
}

fn refused(count: u64, resets_at: i64) -> CounterCharge {
    CounterCharge {
        allowed: false,
        window: CounterWindow { count, resets_at },
    }
}

async fn charge(
    store: &dyn CounterStore,
    key: &str,
    by: u64,
    limit: u64,
    end: i64,
    now: i64,
) -> CounterCharge {
    store
        .charge(key, by, limit, end, now)
        .await
        .expect("charge")
}

async fn charges_add_up_to_the_limit_and_a_refusal_consumes_nothing(store: &dyn CounterStore) {
    let end = NOW + 60;
    assert_eq!(
        charge(store, "client:a", 1, 10, end, NOW).await,
        allowed(1, end)
    );
    assert_eq!(
        charge(store, "client:a", 5, 10, NOW + 999, NOW + 10).await,
        allowed(6, end),
        "the window is the first charge's"
    );
    assert_eq!(
        charge(store, "client:a", 5, 10, end, NOW + 11).await,
        refused(6, end),
        "past the limit: refused, nothing added"
    );
    assert_eq!(
        charge(store, "client:a", 4, 10, end, NOW + 12).await,
        allowed(10, end)
    );
    assert_eq!(
        charge(store, "client:a", 1, 10, end, NOW + 13).await,
        refused(10, end)
    );
    assert_eq!(
        charge(store, "client:a", 0, 10, end, NOW + 14).await,
        allowed(10, end),
        "charging nothing reads the count"
    );
    assert_eq!(
        charge(store, "new", 11, 10, end, NOW).await,
        refused(0, end),
        "a first charge over the limit creates nothing"
    );
    assert_eq!(store.counter("new", NOW).await.expect("read"), None);
    assert_eq!(
        store.counter("client:a", NOW).await.expect("read"),
        Some(CounterWindow {
            count: 10,
            resets_at: end
        })
    );
}

async fn a_window_resets_at_its_end(store: &dyn CounterStore) {
    charge(store, "quota", 10, 10, NOW + 60, NOW).await;
    assert_eq!(
        charge(store, "quota", 2, 10, NOW + 120, NOW + 60).await,
        allowed(2, NOW + 120),
        "at resets_at a new window starts with this charge"
    );
    assert_eq!(
        charge(store, "quota", 1, 10, NOW + 530, NOW + 500).await,
        allowed(1, NOW + 530),
        "a long-idle counter starts afresh with the new window end"
    );
    assert_eq!(
        store.counter("quota", NOW + 530).await.expect("read"),
        None,
        "ended"
    );
}

async fn keys_are_counted_apart_and_listed_by_prefix(store: &dyn CounterStore) {
    charge(store, "q:acme:daily", 3, 100, NOW + 60, NOW).await;
    charge(store, "q:acme:monthly", 4, 100, NOW + 600, NOW).await;
    charge(store, "q:acmex:daily", 5, 100, NOW + 60, NOW).await;
    charge(store, "q:globex:daily", 6, 100, NOW + 10, NOW).await;
    assert_eq!(
        charge(store, "q:acme:daily", 1, 100, NOW + 60, NOW + 1).await,
        allowed(4, NOW + 60)
    );
    let listed = store.counters("q:acme:", NOW + 1).await.expect("list");
    assert_eq!(
        listed,
        vec![
            (
                "q:acme:daily".to_owned(),
                CounterWindow {
                    count: 4,
                    resets_at: NOW + 60
                }
            ),
            (
                "q:acme:monthly".to_owned(),
                CounterWindow {
                    count: 4,
                    resets_at: NOW + 600
                }
            ),
        ]
    );
    assert!(
        store
            .counters("q:globex:", NOW + 10)
            .await
            .expect("list")
            .is_empty(),
        "an ended window is not listed"
    );
    assert!(
        store.counters("q:%", NOW).await.expect("list").is_empty(),
        "a prefix is text, not a pattern"
    );
}

async fn a_reset_ends_the_window(store: &dyn CounterStore) {
    charge(store, "r", 10, 10, NOW + 60, NOW).await;
    assert!(store.reset_counter("r", NOW + 1).await.expect("reset"));
    assert!(
        !store.reset_counter("r", NOW + 1).await.expect("reset"),
        "already gone"
    );
    assert_eq!(store.counter("r", NOW + 1).await.expect("read"), None);
    assert_eq!(
        charge(store, "r", 10, 10, NOW + 90, NOW + 2).await,
        allowed(10, NOW + 90),
        "a fresh window after the reset"
    );
}

async fn purge_drops_only_ended_windows(store: &dyn CounterStore) {
    charge(store, "ended", 7, 10, NOW - 90, NOW - 100).await;
    charge(store, "running", 7, 10, NOW + 100, NOW).await;
    assert_eq!(store.purge_expired_counters(NOW).await.expect("purge"), 1);
    assert_eq!(
        charge(store, "running", 1, 10, NOW + 100, NOW + 1).await,
        allowed(8, NOW + 100),
        "a running window keeps its count"
    );
}

async fn concurrent_charges_stop_exactly_at_the_limit(store: Arc<dyn CounterStore>) {
    let limit = (RACERS / 2) as u64;
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.charge("raced", 1, limit, NOW + 60, NOW).await })
        })
        .collect();
    let mut counts = Vec::new();
    for task in tasks {
        let charged = task.await.expect("task").expect("charge");
        if charged.allowed {
            counts.push(charged.window.count);
        }
    }
    counts.sort_unstable();
    // Each allowed charge saw its own count, and exactly `limit` were allowed.
    let expected: Vec<u64> = (1..=limit).collect();
    assert_eq!(counts, expected);
    let standing = store
        .counter("raced", NOW)
        .await
        .expect("read")
        .expect("running");
    assert_eq!(standing.count, limit);
}
