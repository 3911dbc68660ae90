//! Two real gateway processes on one Redis (standalone and a 3-master Cluster): a token
//! issued by one is accepted by the other; a revocation made on one is honoured by the other
//! within a network hop (pushed by pub/sub; the delay is measured); a presigned SigV4 URL
//! and a jwt-bearer assertion used on one are refused on the other; usage counted on both
//! adds up exactly once flushed.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use portcullis::redis::test_servers::{RedisCluster, RedisServer};

use jwt_simple::prelude::RSAKeyPairLike as _;

use crate::common::{client, Backend, ADMIN_TOKEN};
use crate::fleet_process::GatewayProcess;
use crate::hmac::{sdk_sign, SdkKey};
use crate::oauth::{
    assertion_claims, jwks, rsa_jwk, rsa_key, token_service, KeyServer, BILLING_SECRET, CLOUD,
};

const PARTNER_KEY: &str = "AKIDFLEETPARTNER";
const PARTNER_SECRET: &str = "fleet-partner-secret-2026";

/// The token-service test policy on `state`, with a SigV4 service whose replay markers
/// default to the shared store (the state is Redis).
fn fleet_policy(dir: &Path, keys: &KeyServer, state: &str) -> String {
    std::fs::write(dir.join("partner-secret"), PARTNER_SECRET).expect("secret");
    let orders = "  - name: orders\n    match: {path: /orders}\n    upstream: \"{backend}\"\n    request:\n      - require_hmac: {scheme: aws-sigv4, keys: partners, region: eu-west-1, service: orders}\n";
    format!(
        "  partner: {{file: partner-secret}}\nkeys:\n  partners:\n    - {{access_key: {PARTNER_KEY}, client: partner, secrets: [partner]}}\n{}redis: {{timeout: 250ms}}\n",
        token_service(keys, orders).replace("{state}", state)
    )
}

fn start_pair(
    keys: &KeyServer,
    backend: &Backend,
    state: &str,
) -> (tempfile::TempDir, [GatewayProcess; 2]) {
    let dir = tempfile::tempdir().expect("dir");
    let policy = fleet_policy(dir.path(), keys, state).replace("{backend}", &backend.url());
    let pair = [
        GatewayProcess::start(dir.path(), "a", &policy),
        GatewayProcess::start(dir.path(), "b", &policy),
    ];
    (dir, pair)
}

fn issue(gateway: &GatewayProcess) -> String {
    let resp: serde_json::Value = client()
        .post(gateway.url_of("/oauth2/token"))
        .basic_auth("opaque-app", Some(BILLING_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .expect("token endpoint")
        .json()
        .expect("json");
    resp["access_token"].as_str().expect("token").to_owned()
}

fn call(gateway: &GatewayProcess, token: &str) -> u16 {
    client()
        .get(gateway.url_of("/widgets/x"))
        .bearer_auth(token)
        .send()
        .expect("call")
        .status()
        .as_u16()
}

fn revoke(gateway: &GatewayProcess, token: &str) {
    let status = client()
        .post(gateway.url_of("/oauth2/revoke"))
        .basic_auth("opaque-app", Some(BILLING_SECRET))
        .form(&[("token", token)])
        .send()
        .expect("revoke")
        .status();
    assert_eq!(status, 200);
}

/// Revokes through `revoking` a token `serving` has verified and cached; returns how long
/// after the revocation's answer `serving` refused it.
fn revocation_delay(revoking: &GatewayProcess, serving: &GatewayProcess) -> Duration {
    let token = issue(revoking);
    for _ in 0..3 {
        assert_eq!(call(serving, &token), 200, "issued by the other gateway");
    }
    revoke(revoking, &token);
    let revoked_at = Instant::now();
    loop {
        match call(serving, &token) {
            401 => return revoked_at.elapsed(),
            200 => assert!(
                revoked_at.elapsed() < Duration::from_secs(5),
                "a revoked token is still accepted by the other gateway"
            ),
            other => panic!("unexpected {other}"),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn presigned_orders_url(gateway: &GatewayProcess) -> String {
    presign(
        &gateway.url_of("/orders/17?view=full"),
        &gateway.addr.to_string(),
        PARTNER_KEY,
        PARTNER_SECRET,
    )
}

/// A GET of `url` (sent with `Host: host`) presigned for the `orders` service, as the AWS SDK
/// signs it.
fn presign(url: &str, host: &str, access_key: &str, secret: &str) -> String {
    let key = SdkKey {
        key: access_key,
        secret,
        service: "orders",
    };
    let (_, signed) = sdk_sign(
        &key,
        "GET",
        url,
        &[("host", host)],
        b"",
        SystemTime::now(),
        true,
    );
    signed
}

fn get(url: &str) -> reqwest::blocking::Response {
    client().get(url).send().expect("request")
}

fn jwt_bearer(gateway: &GatewayProcess, assertion: &str) -> u16 {
    client()
        .post(gateway.url_of("/oauth2/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ])
        .send()
        .expect("token endpoint")
        .status()
        .as_u16()
}

/// The usage count the admin API of `gateway` shows for the only active token of
/// `opaque-app` issued since `token`.
fn usage_count(gateway: &GatewayProcess, token_id_hint: &str) -> u64 {
    let list: serde_json::Value = client()
        .get(gateway.admin_url("/api/tokens?client=opaque-app&kind=access"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("list")
        .json()
        .expect("json");
    let tokens = list["tokens"].as_array().expect("tokens");
    tokens
        .iter()
        .find(|token| token["id"].as_str() == Some(token_id_hint))
        .map(|token| token["usage"]["count"].as_u64().expect("count"))
        .unwrap_or_else(|| panic!("token {token_id_hint} not listed: {list}"))
}

/// Everything the fleet shares, on `state`.
fn a_fleet_shares_everything(state: &str) {
    let keys = KeyServer::start();
    let cloud = rsa_key("cloud-rs256-a.key.pem", "key-a");
    keys.publish("/jwks", 200, &jwks(&[rsa_jwk(&cloud, "key-a")]));
    keys.publish("/certs", 200, "{}");
    let backend = Backend::start();
    let (_dir, [a, b]) = start_pair(&keys, &backend, state);

    // Revocations, both ways, three times each: pushed, so well inside one poll (1 s).
    let mut delays = Vec::new();
    for _ in 0..3 {
        delays.push(revocation_delay(&b, &a));
        delays.push(revocation_delay(&a, &b));
    }
    let worst = delays.iter().max().copied().unwrap_or_default();
    eprintln!("revocation reached the other gateway after {delays:?} (worst {worst:?})");
    assert!(
        worst < Duration::from_millis(500),
        "revocations are pushed, not left to the 1 s poll: {delays:?}"
    );

    // A presigned SigV4 URL used on A is a replay on B.
    let url = presigned_orders_url(&a);
    assert_eq!(get(&url).status(), 200, "first use");
    // Behind a load balancer both gateways serve one host name: the same Host goes to B.
    let on_b = url.replace(&a.addr.to_string(), &b.addr.to_string());
    let replayed = client()
        .get(&on_b)
        .header("host", a.addr.to_string())
        .send()
        .expect("request");
    assert_eq!(replayed.status(), 403);
    let body = replayed.text().expect("text");
    assert!(
        body.contains("ReplayedRequest"),
        "refused as a replay: {body}"
    );

    // A jwt-bearer assertion exchanged on A cannot be exchanged again on B.
    let assertion = cloud
        .sign(assertion_claims(CLOUD, "role-account-x"))
        .expect("sign");
    assert_eq!(jwt_bearer(&a, &assertion), 200);
    assert_eq!(
        jwt_bearer(&b, &assertion),
        400,
        "jti replay across the fleet"
    );

    // Usage from both gateways adds up once both have flushed (every 100 ms here).
    let token = issue(&a);
    let introspected: serde_json::Value = client()
        .post(a.url_of("/oauth2/introspect"))
        .basic_auth("resource-server", Some(BILLING_SECRET))
        .form(&[("token", token.as_str())])
        .send()
        .expect("introspect")
        .json()
        .expect("json");
    let id = introspected["jti"].as_str().expect("jti").to_owned();
    for _ in 0..7 {
        assert_eq!(call(&a, &token), 200);
    }
    for _ in 0..5 {
        assert_eq!(call(&b, &token), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while usage_count(&b, &id) != 12 {
        assert!(
            Instant::now() < deadline,
            "usage is {} of 12",
            usage_count(&b, &id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        usage_count(&a, &id),
        12,
        "both gateways show the fleet's count"
    );
    assert!(metric(&a, "portcullis_redis_subscriptions_total") >= 1);
    assert!(
        metric(&a, "portcullis_redis_connects_total") >= 1,
        "the proxy's own connection"
    );
}

#[test]
fn two_gateway_processes_on_one_redis_share_tokens_revocations_replay_markers_and_usage() {
    let redis = RedisServer::start();
    a_fleet_shares_everything(&redis.url());
}

#[test]
fn two_gateway_processes_on_a_redis_cluster_share_tokens_revocations_replay_markers_and_usage() {
    let cluster = RedisCluster::start();
    a_fleet_shares_everything(&cluster.url());
}

/// Status and `type` of a problem answer, and how long it took.
fn timed_get(url: &str, host: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let resp = client()
        .get(url)
        .header("host", host)
        .send()
        .expect("request");
    let status = resp.status().as_u16();
    let body = resp.text().unwrap_or_default();
    (status, body, started.elapsed())
}

/// Redis stops: a signature cannot be checked for replay and is refused with 503 at once
/// (fail closed, within the call timeout); a token verified before keeps working only until
/// the revocation epoch has gone unread for `TRUST_WITHOUT_EPOCH` seconds; `/healthz` says
/// the store is unavailable. Redis back: everything works again without a restart.
#[test]
fn with_redis_stopped_replay_checks_and_cached_tokens_fail_closed_then_recover() {
    let mut redis = RedisServer::start();
    let keys = KeyServer::start();
    keys.publish("/jwks", 200, r#"{"keys":[]}"#);
    keys.publish("/certs", 200, "{}");
    let backend = Backend::start();
    let (_dir, [a, _b]) = start_pair(&keys, &backend, &redis.url());
    let token = issue(&a);
    assert_eq!(call(&a, &token), 200);
    let health = |gateway: &GatewayProcess| -> (u16, serde_json::Value) {
        let resp = client()
            .get(gateway.admin_url("/healthz"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .expect("healthz");
        (resp.status().as_u16(), resp.json().expect("json"))
    };
    assert_eq!(health(&a).1["state_store"]["status"], "ok");

    redis.kill();
    let host = a.addr.to_string();
    let mut took = Vec::new();
    for _ in 0..20 {
        let (status, body, elapsed) = timed_get(&presigned_orders_url(&a), &host);
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("state-store-unavailable"), "{body}");
        took.push(elapsed);
    }
    took.sort();
    eprintln!(
        "replay checks refused while Redis is down: p50 {:?}, p99 {:?} (timeout 250 ms)",
        took[took.len() / 2],
        took[took.len() * 99 / 100]
    );
    assert!(
        took.iter().all(|elapsed| *elapsed < Duration::from_secs(2)),
        "no request waits for a dead Redis: {took:?}"
    );
    let (status, body) = health(&a);
    assert_eq!(status, 503);
    assert_eq!(body["state_store"]["status"], "unavailable", "{body}");

    // The cached token: trusted for at most TRUST_WITHOUT_EPOCH (3 s) more, then refused.
    let since = Instant::now();
    loop {
        match call(&a, &token) {
            200 => assert!(
                since.elapsed() < Duration::from_secs(5),
                "a cached token is trusted long after the store went quiet"
            ),
            503 => break,
            other => panic!("unexpected {other}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body, _) = timed_get(&presigned_orders_url(&a), &host);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each runtime's connection comes back on its own (the admin's may take a call or a
    // second longer than the proxy's).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // (The status stays 503 here for another reason: the test's key sets publish no key.)
        let (_, body) = health(&a);
        if body["state_store"]["status"] == "ok" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store never shows as up again: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The revocation channel is followed again, and the proxy's connection was made anew.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&a, "portcullis_redis_subscriptions_total") < 2 {
        assert!(Instant::now() < deadline, "never re-subscribed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric(&a, "portcullis_redis_connects_total") >= 2);
}

/// The shipped `policies/fleet-redis.yaml`, on two gateways and one password-protected
/// Redis: a token from one works on the other and its revocation reaches it; a presigned
/// partner URL used on one is a replay on the other; the partner's quota counts both.
#[test]
fn the_shipped_fleet_policy_shares_tokens_replays_and_quotas() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let password =
        std::fs::read_to_string(repo.join("fixtures/fleet/redis-password")).expect("password");
    let redis = RedisServer::start_with_password(password.trim());
    let backend = Backend::start();
    let start = || {
        crate::common::TestGateway::from_policy_with(
            "fleet-redis.yaml",
            &backend.url(),
            &[("redis://127.0.0.1:6379/0", redis.url())],
        )
    };
    let (first, second) = (start(), start());
    let secret =
        std::fs::read_to_string(repo.join("fixtures/oauth/reporting-app.secret")).expect("secret");
    let issued: serde_json::Value = client()
        .post(first.url("/oauth2/token"))
        .basic_auth("reporting-app", Some(secret.trim()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .expect("token")
        .json()
        .expect("json");
    let token = issued["access_token"].as_str().expect("token");
    let customers = |gw: &crate::common::TestGateway| {
        client()
            .get(gw.url("/customers/42"))
            .bearer_auth(token)
            .send()
            .expect("call")
            .status()
            .as_u16()
    };
    assert_eq!(customers(&second), 200, "issued by the other gateway");
    let revoked = client()
        .post(second.url("/oauth2/revoke"))
        .basic_auth("reporting-app", Some(secret.trim()))
        .form(&[("token", token)])
        .send()
        .expect("revoke")
        .status();
    assert_eq!(revoked, 200);
    let deadline = Instant::now() + Duration::from_secs(2);
    while customers(&first) != 401 {
        assert!(
            Instant::now() < deadline,
            "the revocation did not reach the first gateway"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    let partner_secret =
        std::fs::read_to_string(repo.join("fixtures/hmac/partner-one-current.secret"))
            .expect("secret");
    let host = first.addr.to_string();
    let signed = presign(
        &first.url("/partner/orders/9"),
        &host,
        "AKIDPARTNERONE",
        partner_secret.trim(),
    );
    assert_eq!(timed_get(&signed, &host).0, 200);
    let on_second = signed.replace(&host, &second.addr.to_string());
    let (status, body, _) = timed_get(&on_second, &host);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ReplayedRequest"), "{body}");

    let quota: serde_json::Value = client()
        .get(second.admin_url("/api/quotas?key=partner-one"))
        .bearer_auth(crate::common::demo_admin_token())
        .send()
        .expect("quotas")
        .json()
        .expect("json");
    assert!(
        quota.to_string().contains("\"used\":1"),
        "the request through the first gateway is counted on the second: {quota}"
    );
}

/// A number on a line of the `/metrics` text.
fn metric(gateway: &GatewayProcess, name: &str) -> u64 {
    gateway
        .metrics()
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Redis freezes (connections open, nothing answers): usage counted meanwhile waits in
/// memory (a metric shows it) and is written once Redis answers again; nothing is lost.
#[test]
fn usage_counted_while_redis_is_frozen_is_written_when_it_answers_again() {
    let redis = RedisServer::start();
    let keys = KeyServer::start();
    keys.publish("/jwks", 200, r#"{"keys":[]}"#);
    keys.publish("/certs", 200, "{}");
    let backend = Backend::start();
    let (_dir, [a, _b]) = start_pair(&keys, &backend, &redis.url());
    let token = issue(&a);
    let introspected: serde_json::Value = client()
        .post(a.url_of("/oauth2/introspect"))
        .basic_auth("resource-server", Some(BILLING_SECRET))
        .form(&[("token", token.as_str())])
        .send()
        .expect("introspect")
        .json()
        .expect("json");
    let id = introspected["jti"].as_str().expect("jti").to_owned();
    assert_eq!(call(&a, &token), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while usage_count(&a, &id) != 1 {
        assert!(Instant::now() < deadline, "the first use is never written");
        std::thread::sleep(Duration::from_millis(50));
    }

    redis.pause();
    // The token is in the verified cache, trusted for a while without the store.
    for _ in 0..4 {
        assert_eq!(call(&a, &token), 200);
    }
    std::thread::sleep(Duration::from_millis(600));
    // One token: in the batch being retried, and perhaps again in the uses counted since.
    let buffered = metric(&a, "portcullis_usage_buffered_tokens");
    assert!(
        (1..=2).contains(&buffered),
        "the uses wait in memory while Redis does not answer: {buffered}"
    );
    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    while usage_count(&a, &id) != 5 {
        assert!(
            Instant::now() < deadline,
            "usage buffered during the outage is not written: {}",
            usage_count(&a, &id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&a, "portcullis_usage_buffered_tokens"), 0);
    assert_eq!(metric(&a, "portcullis_usage_dropped_total"), 0);
}
