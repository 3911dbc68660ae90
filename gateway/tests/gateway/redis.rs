//! A fleet of gateways on one Redis (`state: redis://...`, `redis+cluster://...`): a token
//! issued through one gateway is accepted by another, and a revocation through one reaches
//! the other. The password comes from a policy secret, never from the URL.

use std::time::{Duration, Instant};

use portcullis::redis::test_servers::{RedisCluster, RedisServer};

use crate::common::Backend;
use crate::oauth::KeyServer;
use crate::oauth::{
    call, challenge, client_credentials, form_post, start_with_state, BILLING_SECRET,
};

/// Issues a token through `issuing`, uses it through `serving`, revokes it through
/// `issuing` and waits until `serving` refuses it too.
fn tokens_and_revocations_are_shared(
    issuing: &crate::common::TestGateway,
    serving: &crate::common::TestGateway,
) {
    let token = client_credentials(issuing, "opaque-app", None)["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        call(serving, "/widgets/x", &token).status(),
        200,
        "an opaque token issued by another gateway is found in the shared store"
    );
    let owner = ("opaque-app", BILLING_SECRET);
    assert_eq!(
        form_post(issuing, "/oauth2/revoke", &[("token", &token)], owner).0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = call(serving, "/widgets/x", &token);
        if resp.status() == 401 {
            assert!(challenge(&resp).contains("revoked"), "{}", challenge(&resp));
            return;
        }
        assert_eq!(resp.status(), 200);
        assert!(
            Instant::now() < deadline,
            "the other gateway still accepts a token revoked through Redis"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fixtures() -> (KeyServer, Backend) {
    let keys = KeyServer::start();
    keys.publish("/jwks", 200, r#"{"keys":[]}"#);
    keys.publish("/certs", 200, "{}");
    (keys, Backend::start())
}

#[test]
fn a_fleet_on_one_redis_shares_tokens_and_revocations() {
    let redis = RedisServer::start_with_password("fleet password");
    let secrets = tempfile::tempdir().expect("dir");
    let password_file = secrets.path().join("redis-password");
    std::fs::write(&password_file, "fleet password").expect("write");
    // The first line continues the test preamble's `secrets:`.
    let state = format!(
        "  redis_password: {{file: {}}}\nstate: \"{}\"\nredis:\n  password_secret: redis_password\n  timeout: 1s\n  key_prefix: fleet-a\n",
        password_file.display(),
        redis.url()
    );
    let (keys, backend) = fixtures();
    let first = start_with_state(&keys, &backend, &state, "");
    let second = start_with_state(&keys, &backend, &state, "");
    tokens_and_revocations_are_shared(&first, &second);
    assert_eq!(
        redis
            .command(&["EXISTS", "{fleet-a:tokens}:epoch"])
            .expect("exists"),
        ":1",
        "the revocation epoch lives under the configured prefix"
    );
    let metrics = crate::common::client()
        .get(first.admin_url("/metrics"))
        .bearer_auth(crate::common::ADMIN_TOKEN)
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains("portcullis_redis_calls_total")
            && metrics.contains("portcullis_redis_breaker_open 0"),
        "{metrics}"
    );
}

#[test]
fn a_fleet_on_a_redis_cluster_shares_tokens_and_revocations() {
    let cluster = RedisCluster::start();
    let state = format!("state: \"{}\"\nredis: {{timeout: 1s}}\n", cluster.url());
    let (keys, backend) = fixtures();
    let first = start_with_state(&keys, &backend, &state, "");
    let second = start_with_state(&keys, &backend, &state, "");
    tokens_and_revocations_are_shared(&second, &first);
}

/// Redis goes away: a token the gateway has not verified yet cannot be looked up and is
/// refused with 503 (fail closed), the breaker opens and further lookups fail at once;
/// a token already in the verified-token cache keeps working.
#[test]
fn a_redis_outage_fails_closed_and_fast() {
    let mut redis = RedisServer::start();
    let state = format!(
        "state: \"{}\"\nredis: {{timeout: 200ms, breaker_failures: 2, breaker_cool_off: 30s}}\n",
        redis.url()
    );
    let (keys, backend) = fixtures();
    let gw = start_with_state(&keys, &backend, &state, "");
    let token = |gw| {
        client_credentials(gw, "opaque-app", None)["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    };
    let known = token(&gw);
    let unseen = token(&gw);
    assert_eq!(call(&gw, "/widgets/x", &known).status(), 200);
    redis.kill();
    for _ in 0..3 {
        let resp = call(&gw, "/widgets/x", &unseen);
        assert_eq!(resp.status(), 503, "never let through unverified");
    }
    let started = Instant::now();
    assert_eq!(call(&gw, "/widgets/x", &unseen).status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "the open breaker answers without waiting: {:?}",
        started.elapsed()
    );
    assert_eq!(
        call(&gw, "/widgets/x", &known).status(),
        200,
        "a token verified before the outage is answered from the cache"
    );
}

/// `scope: cluster` rate limits on one Redis: two gateways draw from one bucket, and a
/// dry run (`check`, `eval`) of the same policy loads without Redis.
#[test]
fn cluster_scope_rate_limits_are_shared_by_the_fleet() {
    let redis = RedisServer::start();
    let backend = Backend::start();
    let policy = format!(
        "state: \"{}\"\nservices:\n  - name: api\n    match: {{path: /api}}\n    upstream: \"{{backend}}\"\n    request:\n      - rate_limit: {{key: \"${{client.ip}}\", rate: 3/m, burst: 3, scope: cluster}}\n",
        redis.url()
    );
    let first = crate::common::TestGateway::start(&policy, &backend.url());
    let second = crate::common::TestGateway::start(&policy, &backend.url());
    let get = |gw: &crate::common::TestGateway| {
        crate::common::client()
            .get(gw.url("/api/x"))
            .send()
            .expect("request")
            .status()
            .as_u16()
    };
    let statuses = [
        get(&first),
        get(&second),
        get(&first),
        get(&second),
        get(&first),
    ];
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "one bucket of 3 for the fleet"
    );
    assert!(
        portcullis::config::load_dry_run(&first.config).is_ok(),
        "check and eval load a cluster-scope policy without touching Redis"
    );
}

/// A quota counted in Redis: two gateways share one month's allowance of 2, and the
/// admin API of either shows the count.
#[test]
fn a_quota_in_redis_is_the_fleets() {
    let cluster = RedisCluster::start();
    let backend = Backend::start();
    let policy = format!(
        "state: \"{}\"\nservices:\n  - name: api\n    match: {{path: /}}\n    upstream: \"{{backend}}\"\n    request:\n      - quota: {{key: \"${{client.ip}}\", limit: 2, period: month}}\n",
        cluster.url()
    );
    let first = crate::common::TestGateway::start(&policy, &backend.url());
    let second = crate::common::TestGateway::start(&policy, &backend.url());
    let get = |gw: &crate::common::TestGateway| {
        crate::common::client()
            .get(gw.url("/x"))
            .send()
            .expect("request")
            .status()
            .as_u16()
    };
    assert_eq!([get(&first), get(&second), get(&first)], [200, 200, 429]);
    let listed: serde_json::Value = crate::common::client()
        .get(second.admin_url("/api/quotas?key=127.0.0.1"))
        .bearer_auth(crate::common::ADMIN_TOKEN)
        .send()
        .expect("admin")
        .json()
        .expect("json");
    assert_eq!(listed["quotas"][0]["used"], 2, "{listed}");
}

/// A reload keeps the Redis connection it started with; changed `redis:` options are
/// named as waiting for a restart.
#[test]
fn a_reload_keeps_the_redis_it_opened() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p.yaml");
    let policy = |timeout: &str| {
        format!(
            "state: {}\nredis: {{timeout: {timeout}}}\nservices: []\n",
            redis.url()
        )
    };
    std::fs::write(&path, policy("100ms")).expect("write");
    let carry = portcullis::config::Carry::default();
    let first = portcullis::config::load(&path, &carry, 1).expect("loads");
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    std::fs::write(&path, policy("200ms")).expect("write");
    let second = portcullis::config::load(&path, &carry, 2).expect("reloads");
    assert!(
        second
            .warnings
            .iter()
            .any(|w| w.contains("redis: changed options take effect after a restart")),
        "{:?}",
        second.warnings
    );
}

/// A cluster-scope limit may count body bytes: the body is read before the round trip, so
/// the fleet's bucket is charged what the request carries.
#[test]
fn cluster_scope_rate_limits_count_body_bytes() {
    let redis = RedisServer::start();
    let backend = Backend::start();
    let policy = format!(
        "state: \"{}\"\nservices:\n  - name: uploads\n    match: {{path: /uploads}}\n    upstream: \"{{backend}}\"\n    request:\n      - rate_limit: {{key: \"uploads\", rate: 100/h, burst: 100, cost: body_bytes, scope: cluster}}\n",
        redis.url()
    );
    let first = crate::common::TestGateway::start(&policy, &backend.url());
    let second = crate::common::TestGateway::start(&policy, &backend.url());
    let post = |gw: &crate::common::TestGateway, bytes: usize| {
        crate::common::client()
            .post(gw.url("/uploads/x"))
            .body(vec![b'x'; bytes])
            .send()
            .expect("request")
            .status()
            .as_u16()
    };
    assert_eq!(post(&first, 60), 200);
    assert_eq!(post(&second, 60), 429, "60 + 60 bytes pass the fleet's 100");
    assert_eq!(post(&second, 40), 200, "what is left fits");
}
