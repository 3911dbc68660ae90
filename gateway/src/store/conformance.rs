//! The behaviour every [`Store`] backend must show, run against each backend's tests with a
//! fresh store per check.

use std::net::IpAddr;
use std::sync::Arc;

use super::{
    ClientRecord, Revocation, Store, TokenFilter, TokenFormat, TokenKind, TokenRecord, UsageDelta,
};

const NOW: i64 = 1_800_000_000;

/// Runs every check, each on a store from `make`.
pub fn run_all(make: &dyn Fn() -> Arc<dyn Store>) {
    type Check = fn(&dyn Store);
    let checks: &[(&str, Check)] = &[
        ("tokens_round_trip", tokens_round_trip),
        ("duplicate_ids_are_refused", duplicate_ids_are_refused),
        ("filters_and_paging", filters_and_paging),
        ("revocation_by_selector", revocation_by_selector),
        ("rotation_happens_once", rotation_happens_once),
        ("usage_accumulates", usage_accumulates),
        ("one_time_markers", one_time_markers),
        ("clients_round_trip", clients_round_trip),
        ("stats_and_flags", stats_and_flags),
        ("purge_drops_only_expired", purge_drops_only_expired),
    ];
    for (name, check) in checks {
        let store = make();
        eprintln!("store conformance: {name} on {}", store.describe());
        check(&*store);
    }
}

/// A token with the given id, client and subject, issued at `NOW` for an hour.
#[must_use]
pub fn sample(id: &str, client: &str, subject: &str) -> TokenRecord {
    TokenRecord {
        id: id.to_owned(),
        kind: TokenKind::Access,
        format: TokenFormat::Jwt,
        client_id: client.to_owned(),
        subject: subject.to_owned(),
        scope: "widgets.read widgets.write".to_owned(),
        grant_type: "client_credentials".to_owned(),
        refresh_id: None,
        family_id: None,
        source: None,
        issued_at: NOW,
        expires_at: NOW + 3600,
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
        rotated_at: None,
        usage: super::Usage::default(),
        flagged: None,
    }
}

fn filter() -> TokenFilter {
    TokenFilter {
        now: NOW + 10,
        ..TokenFilter::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn tokens_round_trip(s: &dyn Store) {
    let mut t = sample("t1", "app", "alice");
    t.kind = TokenKind::Refresh;
    t.format = TokenFormat::Opaque;
    t.refresh_id = Some("r0".to_owned());
    t.family_id = Some("fam".to_owned());
    t.source = Some("https://issuer jti-1".to_owned());
    t.grant_type = "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned();
    s.insert_token(&t).expect("insert");
    assert_eq!(s.token("t1").expect("get"), Some(t));
    assert_eq!(s.token("nope").expect("get"), None);
}

fn duplicate_ids_are_refused(s: &dyn Store) {
    s.insert_token(&sample("dup", "app", "alice"))
        .expect("insert");
    assert!(s.insert_token(&sample("dup", "other", "bob")).is_err());
    assert_eq!(
        s.token("dup").expect("get").expect("there").client_id,
        "app"
    );
}

fn filters_and_paging(s: &dyn Store) {
    for i in 0..5 {
        let mut t = sample(
            &format!("a{i}"),
            "app",
            if i % 2 == 0 { "alice" } else { "bob" },
        );
        t.issued_at = NOW + i;
        s.insert_token(&t).expect("insert");
    }
    let mut expired = sample("old", "other", "alice");
    expired.issued_at = NOW - 3600;
    expired.expires_at = NOW;
    s.insert_token(&expired).expect("insert");

    let all = s.find_tokens(&filter()).expect("find");
    let ids: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a4", "a3", "a2", "a1", "a0", "old"], "newest first");

    let alice = s
        .find_tokens(&TokenFilter {
            subject: Some("alice".into()),
            client_id: Some("app".into()),
            ..filter()
        })
        .expect("find");
    assert_eq!(alice.len(), 3);

    let page = s
        .find_tokens(&TokenFilter {
            limit: 2,
            offset: 1,
            ..filter()
        })
        .expect("find");
    let ids: Vec<&str> = page.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a3", "a2"]);

    let expired_only = s
        .find_tokens(&TokenFilter {
            status: Some("expired".into()),
            ..filter()
        })
        .expect("find");
    assert_eq!(expired_only.len(), 1);
    assert_eq!(expired_only[0].id, "old");
    let active = s
        .find_tokens(&TokenFilter {
            status: Some("active".into()),
            ..filter()
        })
        .expect("find");
    assert_eq!(active.len(), 5);
}

fn revocation_by_selector(s: &dyn Store) {
    for (id, client, subject) in [
        ("x1", "app", "alice"),
        ("x2", "app", "bob"),
        ("x3", "other", "alice"),
        ("x4", "other", "carol"),
    ] {
        s.insert_token(&sample(id, client, subject))
            .expect("insert");
    }
    let how = |by: &str| Revocation {
        at: NOW + 5,
        by: by.to_owned(),
        reason: Some("test".to_owned()),
    };
    let pair = s
        .revoke(
            &TokenFilter {
                client_id: Some("app".into()),
                subject: Some("alice".into()),
                ..filter()
            },
            &how("app_owner"),
        )
        .expect("revoke");
    assert_eq!(pair, ["x1"]);
    let subject = s
        .revoke(
            &TokenFilter {
                subject: Some("alice".into()),
                ..filter()
            },
            &how("subscriber"),
        )
        .expect("revoke");
    assert_eq!(subject, ["x3"], "x1 was already revoked");
    let client = s
        .revoke(
            &TokenFilter {
                client_id: Some("other".into()),
                ..filter()
            },
            &how("provider"),
        )
        .expect("revoke");
    assert_eq!(client, ["x4"]);
    let x1 = s.token("x1").expect("get").expect("there");
    assert_eq!(x1.revoked_at, Some(NOW + 5));
    assert_eq!(x1.revoked_by.as_deref(), Some("app_owner"));
    assert_eq!(x1.status(NOW + 10), "revoked");
    assert!(!x1.is_active(NOW + 10));
    assert!(s
        .token("x2")
        .expect("get")
        .expect("there")
        .is_active(NOW + 10));
    let revoked = s
        .find_tokens(&TokenFilter {
            status: Some("revoked".into()),
            ..filter()
        })
        .expect("find");
    assert_eq!(revoked.len(), 3);
}

fn rotation_happens_once(s: &dyn Store) {
    let mut r = sample("r1", "app", "alice");
    r.kind = TokenKind::Refresh;
    s.insert_token(&r).expect("insert");
    assert!(s.mark_rotated("r1", NOW + 1).expect("rotate"));
    assert!(
        !s.mark_rotated("r1", NOW + 2).expect("rotate"),
        "second exchange loses"
    );
    assert!(!s.mark_rotated("missing", NOW).expect("rotate"));
    let got = s.token("r1").expect("get").expect("there");
    assert_eq!(got.rotated_at, Some(NOW + 1));
    assert_eq!(got.status(NOW + 3), "rotated");

    let r2 = sample("r2", "app", "alice");
    s.insert_token(&r2).expect("insert");
    s.revoke(
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
    .expect("revoke");
    assert!(
        !s.mark_rotated("r2", NOW + 1).expect("rotate"),
        "a revoked token cannot rotate"
    );
}

fn usage_accumulates(s: &dyn Store) {
    s.insert_token(&sample("u1", "app", "alice"))
        .expect("insert");
    s.record_usage(&[UsageDelta {
        token_id: "u1".into(),
        count: 3,
        first_used_at: NOW + 10,
        last_used_at: NOW + 12,
        last_ip: ip("10.0.0.2"),
        ips: vec![ip("10.0.0.1"), ip("10.0.0.2")],
    }])
    .expect("usage");
    s.record_usage(&[
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
    ])
    .expect("usage");
    let u = s.token("u1").expect("get").expect("there").usage;
    assert_eq!(u.count, 5);
    assert_eq!(u.first_used_at, Some(NOW + 10));
    assert_eq!(u.last_used_at, Some(NOW + 25));
    assert_eq!(u.last_ip.as_deref(), Some("2001:db8::1"));
    assert_eq!(u.distinct_ips, 3);
}

fn one_time_markers(s: &dyn Store) {
    assert!(s.use_once("iss jti-1", NOW + 60, NOW).expect("once"));
    assert!(
        !s.use_once("iss jti-1", NOW + 60, NOW + 30).expect("once"),
        "replay"
    );
    assert!(s.use_once("iss jti-2", NOW + 60, NOW).expect("once"));
    assert!(
        s.use_once("iss jti-1", NOW + 200, NOW + 61).expect("once"),
        "an expired marker may be reused"
    );
    assert!(!s.use_once("iss jti-1", NOW + 200, NOW + 100).expect("once"));
}

fn clients_round_trip(s: &dyn Store) {
    let c = ClientRecord {
        id: "billing".into(),
        secret_sha256: Some([7u8; 32]),
        grants: vec!["client_credentials".into(), "refresh_token".into()],
        scopes: vec!["billing.read".into()],
        token_format: TokenFormat::Opaque,
    };
    s.put_client(&c).expect("put");
    assert_eq!(s.client("billing").expect("get"), Some(c.clone()));
    let mut changed = c.clone();
    changed.scopes.push("billing.write".into());
    changed.secret_sha256 = None;
    s.put_client(&changed).expect("put");
    assert_eq!(s.client("billing").expect("get"), Some(changed.clone()));
    s.put_client(&ClientRecord {
        id: "analytics".into(),
        ..c
    })
    .expect("put");
    let ids: Vec<String> = s
        .clients()
        .expect("list")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["analytics", "billing"]);
    assert_eq!(s.client("nobody").expect("get"), None);
}

fn stats_and_flags(s: &dyn Store) {
    for (id, client) in [("s1", "app"), ("s2", "app"), ("s3", "other")] {
        s.insert_token(&sample(id, client, "alice"))
            .expect("insert");
    }
    s.record_usage(&[UsageDelta {
        token_id: "s1".into(),
        count: 4,
        first_used_at: NOW + 1,
        last_used_at: NOW + 9,
        last_ip: ip("10.1.1.1"),
        ips: vec![ip("10.1.1.1")],
    }])
    .expect("usage");
    s.revoke(
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
    .expect("revoke");
    s.flag("s1", "used from 12 addresses (limit 10)")
        .expect("flag");
    s.flag("s1", "a later reason").expect("flag");
    assert_eq!(
        s.token("s1")
            .expect("get")
            .expect("there")
            .flagged
            .as_deref(),
        Some("used from 12 addresses (limit 10)")
    );
    let flagged = s
        .find_tokens(&TokenFilter {
            flagged: Some(true),
            ..filter()
        })
        .expect("find");
    assert_eq!(flagged.len(), 1);
    let stats = s.client_stats(NOW + 10).expect("stats");
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

fn purge_drops_only_expired(s: &dyn Store) {
    let mut old = sample("p-old", "app", "alice");
    old.expires_at = NOW - 100;
    s.insert_token(&old).expect("insert");
    s.insert_token(&sample("p-new", "app", "alice"))
        .expect("insert");
    s.use_once("gone", NOW - 50, NOW - 60).expect("once");
    s.use_once("kept", NOW + 50, NOW).expect("once");
    let n = s.purge_expired(NOW).expect("purge");
    assert_eq!(n, 2);
    assert!(s.token("p-old").expect("get").is_none());
    assert!(s.token("p-new").expect("get").is_some());
    assert!(!s.use_once("kept", NOW + 60, NOW + 1).expect("once"));
}

/// Writes a token, a revocation, usage and a one-time marker (for a reopen check).
pub fn seed_for_reopen(s: &dyn Store) {
    s.insert_token(&sample("keep-1", "app", "alice"))
        .expect("insert");
    s.insert_token(&sample("keep-2", "app", "bob"))
        .expect("insert");
    s.revoke(
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
    .expect("revoke");
    s.record_usage(&[UsageDelta {
        token_id: "keep-1".into(),
        count: 7,
        first_used_at: NOW + 1,
        last_used_at: NOW + 2,
        last_ip: ip("10.9.9.9"),
        ips: vec![ip("10.9.9.9")],
    }])
    .expect("usage");
    assert!(s.use_once("marker", NOW + 100, NOW).expect("once"));
}

/// What [`seed_for_reopen`] wrote, read back from a reopened store.
pub fn check_after_reopen(s: &dyn Store) {
    let k1 = s.token("keep-1").expect("get").expect("token kept");
    assert_eq!(k1.usage.count, 7);
    assert_eq!(k1.usage.distinct_ips, 1);
    let k2 = s.token("keep-2").expect("get").expect("token kept");
    assert_eq!(k2.revoked_at, Some(NOW + 1));
    assert!(
        !s.use_once("marker", NOW + 100, NOW + 5).expect("once"),
        "marker kept"
    );
}
