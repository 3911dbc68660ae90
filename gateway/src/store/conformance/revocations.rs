//! [`RevocationStore`] conformance: revocation by selector, and the epoch that grows with
//! every revocation (also under concurrent revocations).

use std::collections::HashSet;
use std::sync::Arc;

use super::{filter, sample, NOW, RACERS};
use crate::store::{Revocation, StateStore, TokenFilter};

/// Runs every revocation check, each on a fresh store from `make`.
pub async fn run_all(make: &dyn Fn() -> StateStore) {
    revocation_by_selector(&make()).await;
    the_epoch_grows_with_every_revocation(&make()).await;
    concurrent_revocations_each_move_the_epoch(make()).await;
}

fn by_provider() -> Revocation {
    Revocation {
        at: NOW + 5,
        by: "provider".to_owned(),
        reason: None,
    }
}

async fn revocation_by_selector(store: &StateStore) {
    for (id, client, subject) in [
        ("x1", "app", "alice"),
        ("x2", "app", "bob"),
        ("x3", "other", "alice"),
        ("x4", "other", "carol"),
    ] {
        store
            .tokens()
            .insert_token(&sample(id, client, subject))
            .await
            .expect("insert");
    }
    let how = |by: &str| Revocation {
        at: NOW + 5,
        by: by.to_owned(),
        reason: Some("test".to_owned()),
    };
    let pair = store
        .revocations()
        .revoke(
            &TokenFilter {
                client_id: Some("app".into()),
                subject: Some("alice".into()),
                ..filter()
            },
            &how("app_owner"),
        )
        .await
        .expect("revoke")
        .ids;
    assert_eq!(pair, ["x1"]);
    let subject = store
        .revocations()
        .revoke(
            &TokenFilter {
                subject: Some("alice".into()),
                ..filter()
            },
            &how("subscriber"),
        )
        .await
        .expect("revoke")
        .ids;
    assert_eq!(subject, ["x3"], "x1 was already revoked");
    let client = store
        .revocations()
        .revoke(
            &TokenFilter {
                client_id: Some("other".into()),
                ..filter()
            },
            &how("provider"),
        )
        .await
        .expect("revoke")
        .ids;
    assert_eq!(client, ["x4"]);
    let x1 = store
        .tokens()
        .token("x1")
        .await
        .expect("get")
        .expect("there");
    assert_eq!(x1.revoked_at, Some(NOW + 5));
    assert_eq!(x1.revoked_by.as_deref(), Some("app_owner"));
    assert_eq!(x1.status(NOW + 10), "revoked");
    assert!(!x1.is_active(NOW + 10));
    assert!(store
        .tokens()
        .token("x2")
        .await
        .expect("get")
        .expect("there")
        .is_active(NOW + 10));
    let revoked = store
        .tokens()
        .find_tokens(&TokenFilter {
            status: Some("revoked".into()),
            ..filter()
        })
        .await
        .expect("find");
    assert_eq!(revoked.len(), 3);
}

async fn the_epoch_grows_with_every_revocation(store: &StateStore) {
    let revocations = store.revocations();
    assert_eq!(revocations.revocation_epoch().await.expect("epoch"), 0);
    store
        .tokens()
        .insert_token(&sample("e1", "app", "alice"))
        .await
        .expect("insert");
    let first = revocations
        .revoke(
            &TokenFilter {
                id: Some("e1".into()),
                ..filter()
            },
            &by_provider(),
        )
        .await
        .expect("revoke");
    assert_eq!(first.ids, ["e1"]);
    assert!(first.epoch > 0);
    assert_eq!(
        revocations.revocation_epoch().await.expect("epoch"),
        first.epoch
    );
    // Nothing matches now; the epoch still moves, so a racing validation is not kept.
    let second = revocations
        .revoke(
            &TokenFilter {
                id: Some("e1".into()),
                ..filter()
            },
            &by_provider(),
        )
        .await
        .expect("revoke");
    assert!(second.ids.is_empty());
    assert!(second.epoch > first.epoch);
    assert_eq!(
        revocations.revocation_epoch().await.expect("epoch"),
        second.epoch
    );
}

async fn concurrent_revocations_each_move_the_epoch(store: StateStore) {
    let start = store.revocations().revocation_epoch().await.expect("epoch");
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let revocations = Arc::clone(store.revocations());
            tokio::spawn(async move {
                let filter = TokenFilter {
                    id: Some(format!("nothing-{i}")),
                    ..filter()
                };
                revocations.revoke(&filter, &by_provider()).await
            })
        })
        .collect();
    let mut epochs = HashSet::new();
    for task in tasks {
        epochs.insert(task.await.expect("task").expect("revoke").epoch);
    }
    assert_eq!(epochs.len(), RACERS, "every revocation saw its own epoch");
    let end = store.revocations().revocation_epoch().await.expect("epoch");
    assert!(end >= start + RACERS as u64);
    assert_eq!(epochs.iter().max().copied(), Some(end));
}
