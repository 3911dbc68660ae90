//! Brute-force protection on the gateway's own credentials: the token endpoint's client
//! authentication (per address and per client id) and the admin token (per address). Once
//! the failures are used up even the right secret waits, so guessing runs at the refill rate.

use crate::common::{client, Backend, TestGateway, ADMIN_TOKEN};
use crate::oauth::{token_service, KeyServer, BILLING_SECRET};

fn gateway(limits: &str) -> (KeyServer, Backend, tempfile::TempDir, TestGateway) {
    let keys = KeyServer::start();
    keys.publish("/jwks", 200, r#"{"keys":[]}"#);
    keys.publish("/certs", 200, "{}");
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let text = format!("client_limits: {limits}\n{}", token_service(&keys, "")).replace(
        "{state}",
        &format!("sqlite://{}", dir.path().join("state.db").display()),
    );
    let gw = TestGateway::start(&text, &backend.url());
    (keys, backend, dir, gw)
}

/// A client-credentials request as `id` with `secret`, from `address` (the policy trusts
/// 127.0.0.1 as a proxy, so X-Forwarded-For names the client's address).
fn attempt(gw: &TestGateway, id: &str, secret: &str, address: &str) -> reqwest::blocking::Response {
    client()
        .post(gw.url("/oauth2/token"))
        .header("x-forwarded-for", address)
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .expect("token endpoint")
}

#[test]
fn a_client_id_guessed_too_often_waits_even_with_the_right_secret() {
    let (_keys, _backend, _dir, gw) =
        gateway("{failed_auth_per_ip: 100/min, failed_auth_per_client: 3/min}");
    assert_eq!(
        attempt(&gw, "billing-app", BILLING_SECRET, "198.51.100.1").status(),
        200
    );
    // Guesses from many addresses, so only the per-client bucket can stop them.
    for n in 0..3 {
        let wrong = attempt(&gw, "billing-app", "guess", &format!("203.0.113.{n}"));
        assert_eq!(wrong.status(), 401);
    }
    let locked = attempt(&gw, "billing-app", BILLING_SECRET, "198.51.100.1");
    assert_eq!(locked.status(), 429);
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = locked.json().expect("json");
    assert_eq!(
        body["error"], "invalid_client",
        "RFC 6749's format, not problem+json"
    );
    // Another client is not affected.
    assert_eq!(
        attempt(&gw, "opaque-app", BILLING_SECRET, "198.51.100.1").status(),
        200
    );
}

#[test]
fn an_address_guessing_many_client_ids_waits() {
    let (_keys, _backend, _dir, gw) =
        gateway("{failed_auth_per_ip: 4/min, failed_auth_per_client: 100/min}");
    for n in 0..4 {
        let wrong = attempt(&gw, &format!("client-{n}"), "guess", "203.0.113.7");
        assert_eq!(wrong.status(), 401);
    }
    assert_eq!(
        attempt(&gw, "billing-app", BILLING_SECRET, "203.0.113.7").status(),
        429,
        "the address is locked out, whatever it sends"
    );
    assert_eq!(
        attempt(&gw, "billing-app", BILLING_SECRET, "203.0.113.8").status(),
        200
    );
    // Successes count nothing.
    for _ in 0..10 {
        assert_eq!(
            attempt(&gw, "billing-app", BILLING_SECRET, "198.51.100.9").status(),
            200
        );
    }
}

#[test]
fn wrong_admin_tokens_lock_the_address_out() {
    let (_keys, _backend, _dir, gw) =
        gateway("{failed_auth_per_ip: 3/min, failed_auth_per_client: 3/min}");
    let health = |token: &str| {
        client()
            .get(gw.admin_url("/api/config"))
            .bearer_auth(token)
            .send()
            .expect("admin")
    };
    assert_eq!(health(ADMIN_TOKEN).status(), 200);
    for _ in 0..3 {
        assert_eq!(health("guess").status(), 401);
    }
    let locked = health(ADMIN_TOKEN);
    assert_eq!(locked.status(), 429);
    assert!(locked.headers().contains_key("retry-after"));
    let body: serde_json::Value = locked.json().expect("problem");
    assert_eq!(
        body["type"],
        "urn:portcullis:problem:too-many-failed-authentications"
    );
}

#[test]
fn failures_at_the_token_endpoint_do_not_lock_the_same_address_out_of_the_admin_api() {
    // Both listeners see the same address when one proxy, load balancer or NAT fronts them
    // (here 127.0.0.1, the trusted proxy, sending no X-Forwarded-For): anyone on the public
    // side could otherwise keep the operators out of the admin API by guessing secrets.
    let (_keys, _backend, _dir, gw) =
        gateway("{failed_auth_per_ip: 3/min, failed_auth_per_client: 100/min}");
    for n in 0..3 {
        let wrong = client()
            .post(gw.url("/oauth2/token"))
            .basic_auth(format!("client-{n}"), Some("guess"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .expect("token endpoint");
        assert_eq!(wrong.status(), 401);
    }
    let admin = client()
        .get(gw.admin_url("/api/config"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("admin");
    assert_eq!(admin.status(), 200, "the admin API counts its own failures");
}
