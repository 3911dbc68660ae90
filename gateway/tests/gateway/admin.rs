use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::{client, problem_code, Backend, TestGateway, ADMIN_TOKEN};

const V1: &str = "services:\n  - name: api\n    upstream: {backend}\n    request:\n      - set_header: {name: X-Policy, value: v1}\n";
const V2: &str = "services:\n  - name: api\n    upstream: {backend}\n    request:\n      - set_header: {name: X-Policy, value: v2}\n";

fn admin_get(gw: &TestGateway, path: &str) -> reqwest::blocking::Response {
    client()
        .get(gw.admin_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("send")
}

fn reload(gw: &TestGateway) -> (u16, serde_json::Value) {
    let resp = gw.reload();
    (resp.status().as_u16(), resp.json().expect("json"))
}

fn policy_seen(backend: &Backend) -> String {
    backend.seen().pop().expect("reached").headers["x-policy"]
        .to_str()
        .expect("ascii")
        .to_owned()
}

#[test]
fn every_admin_route_needs_the_token() {
    let backend = Backend::start();
    let gw = TestGateway::start(V1, &backend.url());
    let c = client();
    for (method, path) in [
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("POST", "/api/reload"),
        ("GET", "/api/config"),
    ] {
        let req = c.request(method.parse().expect("method"), gw.admin_url(path));
        let (status, code, _) = problem_code(req.try_clone().expect("clone").send().expect("send"));
        assert_eq!(
            (status, code.as_str()),
            (401, "admin-unauthorized"),
            "{path}"
        );
        let wrong = req.bearer_auth("test-admin-tokex").send().expect("send");
        assert_eq!(wrong.status(), 401, "{path}");
        assert!(wrong.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("Bearer"));
    }
    assert_eq!(admin_get(&gw, "/healthz").status(), 200);
    assert_eq!(admin_get(&gw, "/nope").status(), 404);
}

#[test]
fn metrics_count_requests_statuses_and_assertion_outcomes() {
    let backend = Backend::start();
    let services = "services:\n  - name: api\n    upstream: {backend}\n    request:\n      - deny_ip: [10.0.0.0/8]\n";
    let gw = TestGateway::start(
        &format!("trusted_proxies: [127.0.0.1/32]\n{services}"),
        &backend.url(),
    );
    let c = client();
    for _ in 0..3 {
        assert_eq!(c.get(gw.url("/a")).send().expect("send").status(), 200);
    }
    assert_eq!(
        c.get(gw.url("/a"))
            .header("x-forwarded-for", "10.9.9.9")
            .send()
            .expect("send")
            .status(),
        403
    );
    let text = admin_get(&gw, "/metrics").text().expect("text");
    assert!(
        text.contains("portcullis_requests_total{service=\"api\",status=\"200\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("portcullis_requests_total{service=\"api\",status=\"403\"} 1"),
        "{text}"
    );
    assert!(text.contains(
        "portcullis_assertion_outcomes_total{assertion=\"deny_ip\",outcome=\"deny\",phase=\"request\",service=\"api\"} 1"
    ));
    assert!(text.contains(
        "portcullis_assertion_outcomes_total{assertion=\"deny_ip\",outcome=\"pass\",phase=\"request\",service=\"api\"} 3"
    ));
    assert!(
        text.contains("portcullis_request_duration_seconds_count{service=\"api\"} 4"),
        "{text}"
    );
}

#[test]
fn config_shows_secret_names_never_values() {
    let backend = Backend::start();
    let gw = TestGateway::start(V1, &backend.url());
    let text = admin_get(&gw, "/api/config").text().expect("text");
    let config: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(config["admin"]["token"], "admin_token");
    assert_eq!(config["services"][0]["name"], "api");
    assert!(!text.contains(ADMIN_TOKEN), "secret value in /api/config");
}

#[test]
fn reload_swaps_a_valid_policy_and_refuses_an_invalid_one() {
    let backend = Backend::start();
    let gw = TestGateway::start(V1, &backend.url());
    let c = client();
    assert_eq!(c.get(gw.url("/x")).send().expect("send").status(), 200);
    assert_eq!(policy_seen(&backend), "v1");

    gw.rewrite(V2, &backend.url());
    let (status, body) = reload(&gw);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["generation"], 2);
    assert_eq!(c.get(gw.url("/x")).send().expect("send").status(), 200);
    assert_eq!(policy_seen(&backend), "v2");

    // An invalid file is refused with its errors; the old policy keeps serving.
    gw.rewrite("services:\n  - name: api\n    upstream: {backend}\n    request:\n      - requre_api_key: {}\n", &backend.url());
    let (status, body) = reload(&gw);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["reloaded"], false);
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{body}");
    let error = errors[0].as_str().expect("text");
    assert!(error.contains("portcullis.yaml:13:9: unknown assertion \"requre_api_key\"; did you mean \"require_api_key\"?"), "{error}");
    assert_eq!(c.get(gw.url("/x")).send().expect("send").status(), 200);
    assert_eq!(policy_seen(&backend), "v2");
    assert_eq!(gw.state.current().generation, 2);
}

#[test]
fn a_reload_under_load_drops_no_request() {
    let backend = Backend::start();
    let gw = Arc::new(TestGateway::start(V1, &backend.url()));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (gw, stop, ok) = (gw.clone(), stop.clone(), ok.clone());
        workers.push(std::thread::spawn(move || {
            let c = client();
            let mut failures = Vec::new();
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match c.get(gw.url("/load")).send() {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    for i in 0..20 {
        gw.rewrite(if i % 2 == 0 { V2 } else { V1 }, &backend.url());
        let (status, body) = reload(&gw);
        assert_eq!(status, 200, "{body}");
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("join"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "too little load to mean anything"
    );
    assert_eq!(gw.state.current().generation, 21);
}

/// A reload does not touch requests in flight: one sent before it is answered through the
/// policy it started on; the next one gets the new policy.
#[test]
fn a_reload_lets_requests_in_flight_finish_on_their_policy() {
    let backend = crate::common::Backend::start();
    let policy = |generation: &str| {
        format!("services:\n  - name: s\n    upstream: {{backend}}\n    response:\n      - set_header: {{name: X-Policy, value: \"{generation}\"}}\n")
    };
    let gw = TestGateway::start(&policy("first"), &backend.url());
    let slow_url = gw.url("/slow");
    let slow = std::thread::spawn(move || {
        let resp = client().get(slow_url).send().expect("send");
        (
            resp.status().as_u16(),
            resp.headers()["x-policy"]
                .to_str()
                .expect("ascii")
                .to_owned(),
        )
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while backend.count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow request never arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    gw.rewrite(&policy("second"), &backend.url());
    let reloaded = gw.reload();
    assert_eq!(reloaded.status(), 200);
    let fresh = client().get(gw.url("/fresh")).send().expect("send");
    assert_eq!(fresh.headers()["x-policy"], "second");
    assert_eq!(slow.join().expect("slow"), (200, "first".to_owned()));
}
