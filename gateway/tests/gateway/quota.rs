//! `quota` through the real gateway: a day's calls then 429 until the reset, the admin API's
//! view and reset, a restart on the same SQLite file, and a rate-limit refusal that uses none
//! of the quota.

use crate::common::{client, demo_admin_token, problem_code, Backend, TestGateway};

const ACME: &str = "demo-key-123";

fn report(gw: &TestGateway) -> reqwest::blocking::Response {
    client()
        .get(gw.url("/reports/monthly"))
        .header("x-api-key", ACME)
        .send()
        .expect("request")
}

#[test]
fn a_days_reports_then_429_and_the_admin_api_shows_and_resets_the_count() {
    let backend = Backend::start();
    let gw = TestGateway::from_policy_with(
        "rate-limited-api.yaml",
        &backend.url(),
        &[("limit: 100", "limit: 3".to_owned())],
    );
    for left in [2, 1, 0] {
        let response = report(&gw);
        assert_eq!(response.status(), 200);
        let field = response.headers()["ratelimit"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            field.starts_with(&format!("\"daily-reports\";r={left};t=")),
            "{field}"
        );
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"daily-reports\";q=3;w=86400"
        );
    }
    let refused = report(&gw);
    let retry_after: i64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(
        (1..=86_400 + 3600).contains(&retry_after),
        "until midnight in Paris: {retry_after}"
    );
    let (status, code, body) = problem_code(refused);
    assert_eq!((status, code.as_str()), (429, "quota-exhausted"));
    assert!(body["detail"]
        .as_str()
        .expect("detail")
        .contains("daily-reports"));
    assert_eq!(
        backend.count(),
        3,
        "the refused call did not reach the upstream"
    );

    let admin = |method: reqwest::Method, path: &str| {
        client()
            .request(method, gw.admin_url(path))
            .bearer_auth(demo_admin_token())
            .send()
            .expect("admin")
    };
    let listed: serde_json::Value = admin(reqwest::Method::GET, "/api/quotas?key=acme-mobile")
        .json()
        .expect("json");
    assert_eq!(listed["key"], "acme-mobile");
    assert_eq!(listed["quotas"][0]["service"], "reports");
    assert_eq!(listed["quotas"][0]["quota"], "daily-reports");
    assert_eq!(listed["quotas"][0]["used"], 3);
    assert_eq!(listed["quotas"][0]["remaining"], 0);
    assert_eq!(listed["quotas"][0]["limit"], 3);
    assert!(listed["quotas"][0]["resets_at"].as_i64().is_some());
    let other: serde_json::Value = admin(reqwest::Method::GET, "/api/quotas?key=partner-co")
        .json()
        .expect("json");
    assert_eq!(other["quotas"][0]["used"], 0);
    // Bad queries say what is wrong.
    assert_eq!(admin(reqwest::Method::GET, "/api/quotas").status(), 400);
    assert_eq!(
        admin(reqwest::Method::GET, "/api/quotas?key=a&colour=red").status(),
        400
    );
    assert_eq!(
        admin(reqwest::Method::GET, "/api/quotas/reset?key=a").status(),
        405
    );
    // A reset gives the client its day back.
    let reset: serde_json::Value = admin(
        reqwest::Method::POST,
        "/api/quotas/reset?key=acme-mobile&quota=daily-reports",
    )
    .json()
    .expect("json");
    assert_eq!(reset["reset"][0]["service"], "reports");
    assert_eq!(report(&gw).status(), 200);
}

#[test]
fn a_restart_on_the_same_store_keeps_the_count() {
    let backend = Backend::start();
    let state = tempfile::tempdir().expect("tempdir");
    let services = format!(
        "state: sqlite://{}/state.db\nservices:\n  - name: api\n    match: {{path: /}}\n    upstream: {{backend}}\n    request:\n      - quota: {{key: \"${{client.ip}}\", limit: 2, period: month}}\n",
        state.path().display()
    );
    {
        let gw = TestGateway::start(&services, &backend.url());
        let get = || client().get(gw.url("/x")).send().expect("request").status();
        assert_eq!(get(), 200);
        assert_eq!(get(), 200);
        assert_eq!(get(), 429);
    }
    let gw = TestGateway::start(&services, &backend.url());
    let response = client().get(gw.url("/x")).send().expect("request");
    assert_eq!(response.status(), 429, "a restart is not a new month");
}

#[test]
fn a_call_refused_by_the_rate_limit_uses_none_of_the_quota() {
    let backend = Backend::start();
    let gw = TestGateway::from_policy("rate-limited-api.yaml", &backend.url());
    // Burst of 5 at 2/s: of 30 quick calls, a handful pass the rate limit.
    let passed = (0..30).filter(|_| report(&gw).status() == 200).count();
    assert!((5..=8).contains(&passed), "{passed}");
    let listed: serde_json::Value = client()
        .get(gw.admin_url("/api/quotas?key=acme-mobile"))
        .bearer_auth(demo_admin_token())
        .send()
        .expect("admin")
        .json()
        .expect("json");
    assert_eq!(listed["quotas"][0]["used"], passed as u64);
}
