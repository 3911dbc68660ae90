//! Upstream pools through the real gateway, in front of several real backends: how requests
//! spread, what a killed backend costs the clients (nothing, for what can be retried), how
//! it comes back, DNS changes picked up without a reload, limits and the retry budget.

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use crate::common::{client, problem_code, Backend, TestGateway};

fn counts(backends: &[&Backend]) -> Vec<usize> {
    backends.iter().map(|b| b.count()).collect()
}

fn get_ok(gw: &TestGateway, path: &str) {
    let resp = client().get(gw.url(path)).send().expect("send");
    assert_eq!(resp.status(), 200, "{path}");
}

/// Waits until `check` holds (polling), failing with `what` after 10 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within 10 s");
}

fn target_state(gw: &TestGateway, addr: SocketAddr) -> String {
    let pools = gw.admin_json("/api/upstreams");
    pools["upstreams"][0]["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["address"] == addr.to_string())
        .map(|t| t["state"].as_str().expect("state").to_owned())
        .expect("the target is listed")
}

#[test]
fn round_robin_follows_the_weights() {
    let (a, b, c) = (Backend::start(), Backend::start(), Backend::start());
    let services = format!(
        "services:\n  - name: pool\n    upstream:\n      targets:\n        - {}\n        - {{url: \"{}\", weight: 2}}\n        - {{url: \"{}\", weight: 3}}\n",
        a.url(),
        b.url(),
        c.url()
    );
    let gw = TestGateway::start(&services, "");
    for index in 0..600 {
        get_ok(&gw, &format!("/r/{index}"));
    }
    // Sequential requests on a smooth weighted schedule: exactly the weights.
    assert_eq!(counts(&[&a, &b, &c]), [100, 200, 300]);
    let pools = gw.admin_json("/api/upstreams");
    assert_eq!(pools["upstreams"][0]["balance"], "round_robin");
    assert_eq!(pools["upstreams"][0]["targets"][2]["requests"], 300);
}

#[test]
fn least_connections_keeps_quick_requests_off_a_busy_target() {
    let (a, b, c) = (Backend::start(), Backend::start(), Backend::start());
    let services = format!(
        "services:\n  - name: pool\n    upstream:\n      balance: least_connections\n      targets: [\"{}\", \"{}\", \"{}\"]\n",
        a.url(),
        b.url(),
        c.url()
    );
    let gw = TestGateway::start(&services, "");
    let slow_url = gw.url("/slow");
    let slow = std::thread::spawn(move || client().get(slow_url).send().expect("send").status());
    eventually("the slow request reached a backend", || {
        a.count() + b.count() + c.count() == 1
    });
    let busy = [&a, &b, &c]
        .iter()
        .position(|backend| backend.count() == 1)
        .expect("one is busy");
    for index in 0..30 {
        get_ok(&gw, &format!("/quick/{index}"));
    }
    let after = counts(&[&a, &b, &c]);
    assert_eq!(
        after[busy], 1,
        "no quick request went to the busy target: {after:?}"
    );
    assert_eq!(after.iter().sum::<usize>(), 31);
    assert_eq!(slow.join().expect("slow").as_u16(), 200);
}

#[test]
fn consistent_hashing_keeps_each_user_on_one_target_and_moves_only_a_dead_targets_users() {
    let (a, b, c) = (Backend::start(), Backend::start(), Backend::start());
    let services = format!(
        "services:\n  - name: pool\n    upstream:\n      balance: consistent_hash\n      hash_on: \"${{request.header.x-user}}\"\n      health_check: {{path: /healthz, interval: 300ms, timeout: 1s, healthy_after: 1, unhealthy_after: 2}}\n      targets: [\"{}\", \"{}\", \"{}\"]\n",
        a.url(),
        b.url(),
        c.url()
    );
    let gw = TestGateway::start(&services, "");
    let backends = [&a, &b, &c];
    // Health checks reach the backends too: count only what the users send.
    let profiles = |backends: &[&Backend]| -> Vec<usize> {
        backends
            .iter()
            .map(|b| b.seen().iter().filter(|s| s.uri == "/profile").count())
            .collect()
    };
    let target_of = |user: usize| -> usize {
        let before = profiles(&backends);
        let resp = client()
            .get(gw.url("/profile"))
            .header("x-user", format!("user-{user}"))
            .send()
            .expect("send");
        assert_eq!(resp.status(), 200);
        let after = profiles(&backends);
        (0..3)
            .find(|i| after[*i] > before[*i])
            .expect("one backend got it")
    };
    let first: Vec<usize> = (0..60).map(target_of).collect();
    let again: Vec<usize> = (0..60).map(target_of).collect();
    assert_eq!(
        first,
        again,
        "every user stays on its target: {}",
        gw.admin_json("/api/upstreams")
    );
    for index in 0..3 {
        let share = first.iter().filter(|t| **t == index).count();
        assert!(share >= 5, "target {index} took {share} of 60 users");
    }
    let c_addr = c.addr;
    drop(c);
    eventually("the dead target is out", || {
        target_state(&gw, c_addr) == "unhealthy"
    });
    // Users of a and b stay where they were; c's users move.
    let live = [&a, &b];
    for (user, was) in first.iter().enumerate() {
        let before = profiles(&live);
        let resp = client()
            .get(gw.url("/profile"))
            .header("x-user", format!("user-{user}"))
            .send()
            .expect("send");
        assert_eq!(resp.status(), 200, "user {user}");
        let after = profiles(&live);
        let now = (0..2)
            .find(|i| after[*i] > before[*i])
            .expect("a live backend");
        if *was != 2 {
            assert_eq!(now, *was, "user {user} moved though its target is up");
        }
    }
}

#[test]
fn a_killed_target_is_ejected_without_a_client_error_and_readmitted_when_back() {
    let (a, b, c) = (Backend::start(), Backend::start(), Backend::start());
    let b_addr = b.addr;
    let services = format!(
        "services:\n  - name: pool\n    upstream:\n      connect_timeout: 1s\n      passive_health: {{failures: 1, ejection: 30s}}\n      health_check: {{path: /healthz, interval: 200ms, timeout: 1s, healthy_after: 2, unhealthy_after: 2}}\n      targets: [\"{}\", \"{}\", \"{}\"]\n",
        a.url(),
        b.url(),
        c.url()
    );
    let gw = TestGateway::start(&services, "");
    for index in 0..30 {
        get_ok(&gw, &format!("/before/{index}"));
    }
    drop(b);
    // Every request right after the kill still succeeds: the one that meets the dead target
    // is retried on another, and the target is ejected.
    for index in 0..60 {
        get_ok(&gw, &format!("/during/{index}"));
    }
    let state = target_state(&gw, b_addr);
    assert!(state == "ejected" || state == "unhealthy", "{state}");
    let metrics = client()
        .get(gw.admin_url("/metrics"))
        .bearer_auth(crate::common::ADMIN_TOKEN)
        .send()
        .expect("send")
        .text()
        .expect("text");
    assert!(
        metrics.contains(&format!(
            "portcullis_upstream_target_up{{service=\"pool\",target=\"{b_addr}\"}} 0"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_upstream_retries_total{service=\"pool\",outcome=\"retried\"}")
    );
    eventually("the active check marks it unhealthy", || {
        target_state(&gw, b_addr) == "unhealthy"
    });

    // Back on the same address: the active check re-admits it and it takes requests again.
    let b = Backend::start_at(b_addr);
    eventually("the target is back", || {
        target_state(&gw, b_addr) == "healthy"
    });
    let before = b.count();
    for index in 0..30 {
        get_ok(&gw, &format!("/after/{index}"));
    }
    assert!(
        b.count() >= before + 9,
        "the re-admitted target takes its share"
    );
    drop((a, c));
}

/// A backend that reads each request's head and closes the connection without answering:
/// the request went out, so only what may be sent twice may be retried.
fn hang_up_backend() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buffer = [0u8; 1024];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
            let _ = stream.read(&mut buffer);
        }
    });
    (addr, seen)
}

#[test]
fn after_the_request_went_out_only_idempotent_or_buffered_requests_are_retried() {
    let good = Backend::start();
    let (hang_up, hung_up) = hang_up_backend();
    let services = format!(
        "services:\n  - name: streamed\n    match: {{path: /streamed}}\n    upstream:\n      passive_health: {{failures: 0}}\n      targets: [\"http://{hang_up}\", \"{good}\"]\n  - name: buffered\n    match: {{path: /buffered}}\n    upstream:\n      passive_health: {{failures: 0}}\n      targets: [\"http://{hang_up}\", \"{good}\"]\n    request:\n      - validate_json: {{max_depth: 8}}\n",
        good = good.url()
    );
    let gw = TestGateway::start(&services, "");
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        // GET: retried on the good target whenever the first try hung up.
        assert_eq!(
            c.get(gw.url("/streamed/get"))
                .send()
                .expect("send")
                .status(),
            200
        );
        // Streamed POSTs (chunked, not read by the gateway): never sent twice. Two in a row
        // so one of them meets the hang-up whatever the rotation.
        for _ in 0..2 {
            let body =
                reqwest::blocking::Body::new(std::io::Cursor::new(b"{\"order\":1}".to_vec()));
            let resp = c
                .post(gw.url("/streamed/post"))
                .body(body)
                .send()
                .expect("send");
            statuses.push(resp.status().as_u16());
        }
        // A POST whose body the pipeline read whole: safe to send again.
        let resp = c
            .post(gw.url("/buffered/post"))
            .header("content-type", "application/json")
            .body("{\"order\":1}")
            .send()
            .expect("send");
        assert_eq!(resp.status(), 200);
    }
    assert!(hung_up.load(std::sync::atomic::Ordering::SeqCst) >= 4);
    assert!(
        statuses.contains(&502),
        "a streamed POST that met the hang-up was not retried: {statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
    let posts = good
        .seen()
        .iter()
        .filter(|seen| seen.method == "POST" && seen.uri.starts_with("/streamed"))
        .count();
    assert_eq!(
        posts,
        statuses.iter().filter(|s| **s == 200).count(),
        "no streamed POST reached the good target after failing"
    );
}

#[test]
fn without_a_healthy_target_the_answer_is_503_no_healthy_upstream() {
    let dead = Backend::start();
    let dead_addr = dead.addr;
    drop(dead);
    let services = format!(
        "services:\n  - name: pool\n    upstream:\n      health_check: {{path: /healthz, interval: 100ms, timeout: 100ms, unhealthy_after: 1}}\n      targets: [\"http://{dead_addr}\"]\n"
    );
    let gw = TestGateway::start(&services, "");
    eventually("the only target is out", || {
        target_state(&gw, dead_addr) == "unhealthy"
    });
    let (status, code, problem) = problem_code(client().get(gw.url("/x")).send().expect("send"));
    assert_eq!(
        (status, code.as_str()),
        (503, "no-healthy-upstream"),
        "{problem}"
    );
    let health = gw.admin_json("/healthz");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["services_without_healthy_target"][0], "pool");
    assert!(gw.access_log().contains("no-healthy-upstream"));
}

#[test]
fn a_full_target_passes_requests_on_and_every_target_full_is_503_upstream_busy() {
    let backend = Backend::start();
    let services = format!(
        "services:\n  - name: pool\n    upstream:\n      max_connections: 1\n      targets: [\"{}\"]\n",
        backend.url()
    );
    let gw = TestGateway::start(&services, "");
    let slow_url = gw.url("/slow");
    let slow = std::thread::spawn(move || client().get(slow_url).send().expect("send").status());
    eventually("the slow request holds the slot", || backend.count() == 1);
    let (status, code, _) = problem_code(client().get(gw.url("/x")).send().expect("send"));
    assert_eq!((status, code.as_str()), (503, "upstream-busy"));
    assert_eq!(slow.join().expect("slow").as_u16(), 200);
    get_ok(&gw, "/x");
}

#[test]
fn the_retry_budget_bounds_retries() {
    let good = Backend::start();
    let dead = Backend::start();
    let dead_addr = dead.addr;
    drop(dead);
    // No passive ejection and no share of traffic for retries: only the ten saved at start.
    let services = format!(
        "services:\n  - name: pool\n    upstream:\n      passive_health: {{failures: 0}}\n      retries: {{attempts: 1, budget_percent: 0, min_per_second: 0}}\n      targets: [\"http://{dead_addr}\", \"{}\"]\n",
        good.url()
    );
    let gw = TestGateway::start(&services, "");
    let mut failed = 0;
    for index in 0..60 {
        let status = client()
            .get(gw.url(&format!("/b/{index}")))
            .send()
            .expect("send")
            .status();
        if status != 200 {
            failed += 1;
        }
    }
    // Half the first tries meet the dead target; ten are retried, the rest fail.
    assert_eq!(failed, 30 - 10, "failed {failed}");
    let pools = gw.admin_json("/api/upstreams");
    assert_eq!(pools["upstreams"][0]["retries"]["retried"], 10);
    assert_eq!(pools["upstreams"][0]["retries"]["budget_exhausted"], 20);
}

#[test]
fn a_dns_change_is_picked_up_without_a_reload() {
    // Two backends on one port at two loopback addresses; the hosts file says which one
    // the name has.
    let first = Backend::start_at(SocketAddr::from(([127, 0, 0, 2], 0)));
    let port = first.addr.port();
    let second = Backend::start_at(SocketAddr::from(([127, 0, 0, 3], port)));
    let services = format!(
        "hosts_file: hosts\nservices:\n  - name: pool\n    upstream: {{url: \"http://orders.pool.test:{port}\", resolve_every: 1s}}\n"
    );
    let gw =
        TestGateway::start_with_files(&services, "", &[("hosts", "127.0.0.2 orders.pool.test\n")]);
    get_ok(&gw, "/one");
    assert_eq!((first.count(), second.count()), (1, 0));
    let seen = first.seen();
    assert_eq!(
        seen[0].headers["host"],
        format!("orders.pool.test:{port}").as_str()
    );
    let generation = gw.admin_json("/healthz")["generation"].clone();
    std::fs::write(gw.dir.path().join("hosts"), "127.0.0.3 orders.pool.test\n").expect("write");
    eventually("the new address takes the traffic", || {
        get_ok(&gw, "/two");
        second.count() > 0
    });
    let before = first.count();
    for _ in 0..10 {
        get_ok(&gw, "/three");
    }
    assert_eq!(first.count(), before, "the old address gets nothing");
    assert_eq!(
        gw.admin_json("/healthz")["generation"],
        generation,
        "no reload"
    );
}

#[test]
fn the_multi_upstream_example_policy() {
    let (a, b, c) = (Backend::start(), Backend::start(), Backend::start());
    let gw = TestGateway::from_policy_with(
        "multi-upstream.yaml",
        &a.url(),
        &[
            ("http://127.0.0.1:9091", b.url()),
            ("http://127.0.0.1:9092", c.url()),
            (
                "inventory.internal:9090",
                format!("inventory.internal:{}", a.addr.port()),
            ),
        ],
    );
    let orders = |backend: &Backend| {
        backend
            .seen()
            .iter()
            .filter(|s| s.uri.starts_with("/orders/"))
            .count()
    };
    for index in 0..40 {
        get_ok(&gw, &format!("/orders/{index}"));
    }
    // Idle instances share by weight: 1, 1, 2.
    assert_eq!([orders(&a), orders(&b), orders(&c)], [10, 10, 20]);

    let carts = |backend: &Backend, cart: &str| {
        backend
            .seen()
            .iter()
            .filter(|s| s.uri == format!("/carts/{cart}"))
            .count()
    };
    for cart in ["c-1", "c-2", "c-3", "c-4", "c-5", "c-6"] {
        for _ in 0..3 {
            get_ok(&gw, &format!("/carts/{cart}"));
        }
        // All three on one instance.
        let (on_a, on_b) = (carts(&a, cart), carts(&b, cart));
        assert!(
            (on_a, on_b) == (3, 0) || (on_a, on_b) == (0, 3),
            "{cart}: {on_a}/{on_b}"
        );
    }

    get_ok(&gw, "/inventory/sku/77");
    let seen = a.seen();
    let last = seen.last().expect("inventory reached a");
    assert_eq!(last.uri, "/sku/77");
    assert_eq!(
        last.headers["host"],
        format!("inventory.internal:{}", a.addr.port()).as_str()
    );

    let admin = |path: &str| -> serde_json::Value {
        client()
            .get(gw.admin_url(path))
            .bearer_auth(crate::common::demo_admin_token())
            .send()
            .expect("send")
            .json()
            .expect("json")
    };
    let pools = admin("/api/upstreams?service=orders");
    assert_eq!(pools["upstreams"][0]["balance"], "least_connections");
    assert_eq!(pools["upstreams"][0]["targets"][2]["weight"], 2);
    assert_eq!(admin("/healthz")["status"], "ok");
}

#[test]
fn a_reload_keeps_what_was_learnt_of_the_targets() {
    let good = Backend::start();
    let dead = Backend::start();
    let dead_addr = dead.addr;
    drop(dead);
    let services = format!(
        "services:\n  - name: pool\n    upstream:\n      passive_health: {{failures: 1, ejection: 60s}}\n      targets: [\"http://{dead_addr}\", \"{}\"]\n",
        good.url()
    );
    let gw = TestGateway::start(&services, "");
    get_ok(&gw, "/a");
    get_ok(&gw, "/b");
    assert_eq!(target_state(&gw, dead_addr), "ejected");
    let reloaded = gw.reload();
    assert_eq!(reloaded.status(), 200);
    assert_eq!(
        target_state(&gw, dead_addr),
        "ejected",
        "the new policy's pool knows"
    );
    for index in 0..10 {
        get_ok(&gw, &format!("/c/{index}"));
    }
    assert_eq!(good.count(), 12);
}
