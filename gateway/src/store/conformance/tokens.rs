//! [`TokenStore`] conformance: clients, tokens, filters and paging, rotation, usage, flags,
//! statistics, purging, and what survives a reopen.

use std::sync::Arc;

use super::{filter, ip, sample, NOW, RACERS};
use crate::store::{
    ClientRecord, Revocation, StateStore, TokenFilter, TokenFormat, TokenKind, UsageDelta,
};

/// Runs every token check, each on a fresh store from `make`. The stores are whole
/// [`StateStore`]s because rotation and statistics are checked together with revocation.
pub async fn run_all(make: &dyn Fn() -> StateStore) {
    tokens_round_trip(&make()).await;
    duplicate_ids_are_refused(&make()).await;
    filters_and_paging(&make()).await;
    rotation_happens_once(&make()).await;
    racing_rotations_have_one_winner(make()).await;
    usage_accumulates(&make()).await;
    clients_round_trip(&make()).await;
    stats_and_flags(&make()).await;
    purge_drops_only_expired_tokens(&make()).await;
}

async fn tokens_round_trip(store: &StateStore) {
    let mut t = sample("t1", "app", "alice");
    t.kind = TokenKind::Refresh;
    t.format = TokenFormat::Opaque;
    t.refresh_id = Some("r0".to_owned());
    t.family_id = Some("fam".to_owned());
    t.source = Some("https://issuer jti-1".to_owned());
    t.grant_type = "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned();
    store.tokens().insert_token(&t).await.expect("insert");
    assert_eq!(store.tokens().token("t1").await.expect("get"), Some(t));
    assert_eq!(store.tokens().token("nope").await.expect("get"), None);
}

async fn duplicate_ids_are_refused(store: &StateStore) {
    store
        .tokens()
        .insert_token(&sample("dup", "app", "alice"))
        .await
        .expect("insert");
    assert!(store
        .tokens()
        .insert_token(&sample("dup", "other", "bob"))
        .await
        .is_err());
    assert_eq!(
        store
            .tokens()
            .token("dup")
            .await
            .expect("get")
            .expect("there")
            .client_id,
        "app"
    );
}

async fn filters_and_paging(store: &StateStore) {
    for i in 0..5 {
        let mut t = sample(
            &format!("a{i}"),
            "app",
            if i % 2 == 0 { "alice" } else { "bob" },
        );
        t.issued_at = NOW + i;
        store.tokens().insert_token(&t).await.expect("insert");
    }
    let mut expired = sample("old", "other", "alice");
    expired.issued_at = NOW - 3600;
    expired.expires_at = NOW;
    store.tokens().insert_token(&expired).await.expect("insert");

    let all = store.tokens().find_tokens(&filter()).await.expect("find");
    let ids: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a4", "a3", "a2", "a1", "a0", "old"], "newest first");

    let alice = store
        .tokens()
        .find_tokens(&TokenFilter {
            subject: Some("alice".into()),
            client_id: Some("app".into()),
            ..filter()
        })
        .await
        .expect("find");
    assert_eq!(alice.len(), 3);

    let page = store
        .tokens()
        .find_tokens(&TokenFilter {
            limit: 2,
            offset: 1,
            ..filter()
        })
        .await
        .expect("find");
    let ids: Vec<&str> = page.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a3", "a2"]);

    let expired_only = store
        .tokens()
        .find_tokens(&TokenFilter {
            status: Some("expired".into()),
            ..filter()
        })
        .await
        .expect("find");
    assert_eq!(expired_only.len(), 1);
    assert_eq!(expired_only[0].id, "old");
    let active = store
        .tokens()
        .find_tokens(&TokenFilter {
            status: Some("active".into()),
            ..filter()
        })
        .await
        .expect("find");
    assert_eq!(active.len(), 5);
}

async fn rotation_happens_once(store: &StateStore) {
    let mut r = sample("r1", "app", "alice");
    r.kind = TokenKind::Refresh;
    store.tokens().insert_token(&r).await.expect("insert");
    assert!(store
        .tokens()
        .mark_rotated("r1", NOW + 1)
        .await
        .expect("rotate"));
    assert!(
        !store
            .tokens()
            .mark_rotated("r1", NOW + 2)
            .await
            .expect("rotate"),
        "second exchange loses"
    );
    assert!(!store
        .tokens()
        .mark_rotated("missing", NOW)
        .await
        .expect("rotate"));
    let got = store
        .tokens()
        .token("r1")
        .await
        .expect("get")
        .expect("there");
    assert_eq!(got.rotated_at, Some(NOW + 1));
    assert_eq!(got.status(NOW + 3), "rotated");

    let r2 = sample("r2", "app", "alice");
    store.tokens().insert_token(&r2).await.expect("insert");
    store
        .revocations()
        .revoke(
            &TokenFilter {
                id: Some("r2".into()),
                ..filter()
            },
            &Revocation {
                at: NOW,
                by: "client".into(),
                reason: None,
            },
        )
        .await
        .expect("revoke");
    assert!(
        !store
            .tokens()
            .mark_rotated("r2", NOW + 1)
            .await
            .expect("rotate"),
        "a revoked token cannot rotate"
    );
}

async fn usage_accumulates(store: &StateStore) {
    store
        .tokens()
        .insert_token(&sample("u1", "app", "alice"))
        .await
        .expect("insert");
    store
        .tokens()
        .record_usage(
            "batch-1",
            &[UsageDelta {
                token_id: "u1".into(),
                count: 3,
                first_used_at: NOW + 10,
                last_used_at: NOW + 12,
                last_ip: ip("10.0.0.2"),
                ips: vec![ip("10.0.0.1"), ip("10.0.0.2")],
            }],
        )
        .await
        .expect("usage");
    store
        .tokens()
        .record_usage(
            "batch-2",
            &[
                UsageDelta {
                    token_id: "u1".into(),
                    count: 2,
                    first_used_at: NOW + 20,
                    last_used_at: NOW + 25,
                    last_ip: ip("2001:db8::1"),
                    ips: vec![ip("10.0.0.2"), ip("2001:db8::1")],
                },
                UsageDelta {
                    token_id: "unknown".into(),
                    count: 1,
                    first_used_at: NOW,
                    last_used_at: NOW,
                    last_ip: ip("10.0.0.9"),
                    ips: vec![ip("10.0.0.9")],
                },
            ],
        )
        .await
        .expect("usage");
    // A retry of the first batch (its answer was lost) changes nothing.
    store
        .tokens()
        .record_usage(
            "batch-1",
            &[UsageDelta {
                token_id: "u1".into(),
                count: 100,
                first_used_at: NOW + 10,
                last_used_at: NOW + 12,
                last_ip: ip("10.0.0.2"),
                ips: vec![ip("10.0.0.7")],
            }],
        )
        .await
        .expect("usage");
    let u = store
        .tokens()
        .token("u1")
        .await
        .expect("get")
        .expect("there")
        .usage;
    assert_eq!(u.count, 5, "a batch id counts once");
    assert_eq!(u.first_used_at, Some(NOW + 10));
    assert_eq!(u.last_used_at, Some(NOW + 25));
    assert_eq!(u.last_ip.as_deref(), Some("2001:db8::1"));
    assert_eq!(u.distinct_ips, 3);
}

async fn clients_round_trip(store: &StateStore) {
    let c = ClientRecord {
        id: "billing".into(),
        secret_sha256: Some([7u8; 32]),
        grants: vec!["client_credentials".into(), "refresh_token".into()],
        scopes: vec!["billing.read".into()],
        token_format: TokenFormat::Opaque,
    };
    store.tokens().put_client(&c).await.expect("put");
    assert_eq!(
        store.tokens().client("billing").await.expect("get"),
        Some(c.clone())
    );
    let mut changed = c.clone();
    changed.scopes.push("billing.write".into());
    changed.secret_sha256 = None;
    store.tokens().put_client(&changed).await.expect("put");
    assert_eq!(
        store.tokens().client("billing").await.expect("get"),
        Some(changed.clone())
    );
    store
        .tokens()
        .put_client(&ClientRecord {
            id: "analytics".into(),
            ..c
        })
        .await
        .expect("put");
    let ids: Vec<String> = store
        .tokens()
        .clients()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["analytics", "billing"]);
    assert_eq!(store.tokens().client("nobody").await.expect("get"), None);
}

async fn stats_and_flags(store: &StateStore) {
    for (id, client) in [("s1", "app"), ("s2", "app"), ("s3", "other")] {
        store
            .tokens()
            .insert_token(&sample(id, client, "alice"))
            .await
            .expect("insert");
    }
    store
        .tokens()
        .record_usage(
            "batch-3",
            &[UsageDelta {
                token_id: "s1".into(),
                count: 4,
                first_used_at: NOW + 1,
                last_used_at: NOW + 9,
                last_ip: ip("10.1.1.1"),
                ips: vec![ip("10.1.1.1")],
            }],
        )
        .await
        .expect("usage");
    store
        .revocations()
        .revoke(
            &TokenFilter {
                id: Some("s2".into()),
                ..filter()
            },
            &Revocation {
                at: NOW + 2,
                by: "provider".into(),
                reason: None,
            },
        )
        .await
        .expect("revoke");
    store
        .tokens()
        .flag("s1", "used from 12 addresses (limit 10)")
        .await
        .expect("flag");
    store
        .tokens()
        .flag("s1", "a later reason")
        .await
        .expect("flag");
    assert_eq!(
        store
            .tokens()
            .token("s1")
            .await
            .expect("get")
            .expect("there")
            .flagged
            .as_deref(),
        Some("used from 12 addresses (limit 10)")
    );
    let flagged = store
        .tokens()
        .find_tokens(&TokenFilter {
            flagged: Some(true),
            ..filter()
        })
        .await
        .expect("find");
    assert_eq!(flagged.len(), 1);
    let stats = store.tokens().client_stats(NOW + 10).await.expect("stats");
    assert_eq!(stats.len(), 2);
    let app = &stats[0];
    assert_eq!(app.client_id, "app");
    assert_eq!(
        (app.tokens, app.active, app.revoked, app.uses, app.flagged),
        (2, 1, 1, 4, 1)
    );
    assert_eq!(app.last_used_at, Some(NOW + 9));
    assert_eq!((stats[1].tokens, stats[1].uses), (1, 0));
}

/// Writes a token, a revocation, usage and a one-time marker (for a reopen check).
pub async fn seed_for_reopen(store: &StateStore) {
    store
        .tokens()
        .insert_token(&sample("keep-1", "app", "alice"))
        .await
        .expect("insert");
    store
        .tokens()
        .insert_token(&sample("keep-2", "app", "bob"))
        .await
        .expect("insert");
    store
        .revocations()
        .revoke(
            &TokenFilter {
                id: Some("keep-2".into()),
                ..filter()
            },
            &Revocation {
                at: NOW + 1,
                by: "provider".into(),
                reason: None,
            },
        )
        .await
        .expect("revoke");
    store
        .tokens()
        .record_usage(
            "batch-4",
            &[UsageDelta {
                token_id: "keep-1".into(),
                count: 7,
                first_used_at: NOW + 1,
                last_used_at: NOW + 2,
                last_ip: ip("10.9.9.9"),
                ips: vec![ip("10.9.9.9")],
            }],
        )
        .await
        .expect("usage");
    assert!(store
        .once()
        .use_once("marker", NOW + 100, NOW)
        .await
        .expect("once"));
}

/// What [`seed_for_reopen`] wrote, read back from a reopened store.
pub async fn check_after_reopen(store: &StateStore) {
    let k1 = store
        .tokens()
        .token("keep-1")
        .await
        .expect("get")
        .expect("token kept");
    assert_eq!(k1.usage.count, 7);
    assert_eq!(k1.usage.distinct_ips, 1);
    let k2 = store
        .tokens()
        .token("keep-2")
        .await
        .expect("get")
        .expect("token kept");
    assert_eq!(k2.revoked_at, Some(NOW + 1));
    assert!(
        !store
            .once()
            .use_once("marker", NOW + 100, NOW + 5)
            .await
            .expect("once"),
        "marker kept"
    );
}

/// Of many concurrent exchanges of one refresh token, exactly one wins.
async fn racing_rotations_have_one_winner(store: StateStore) {
    let mut refresh = sample("race", "app", "alice");
    refresh.kind = TokenKind::Refresh;
    store.tokens().insert_token(&refresh).await.expect("insert");
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let tokens = Arc::clone(store.tokens());
            tokio::spawn(async move { tokens.mark_rotated("race", NOW + 1 + i as i64).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.expect("task").expect("rotate"));
    }
    assert_eq!(winners, 1);
}

async fn purge_drops_only_expired_tokens(store: &StateStore) {
    let mut old = sample("p-old", "app", "alice");
    old.expires_at = NOW - 100;
    store.tokens().insert_token(&old).await.expect("insert");
    store
        .tokens()
        .insert_token(&sample("p-new", "app", "alice"))
        .await
        .expect("insert");
    assert_eq!(
        store
            .tokens()
            .purge_expired_tokens(NOW)
            .await
            .expect("purge"),
        1
    );
    assert!(store.tokens().token("p-old").await.expect("get").is_none());
    assert!(store.tokens().token("p-new").await.expect("get").is_some());
}
