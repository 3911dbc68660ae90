use crate::common::{client, problem_code, Backend, TestGateway};

// sha256("demo-key-123") and sha256("partner-key-456")
const ACME: &str = "a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873";
const PARTNER: &str = "d1befb14a63e7ced66c1ee0868800d6330e970e6f6e5c03dc847a97fa65c588e";

fn api_key_services() -> String {
    format!(
        r#"
services:
  - name: widgets
    match: {{path: /widgets}}
    upstream: {{backend}}
    request:
      - require_api_key:
          keys:
            - client: acme
              sha256: {ACME}
              attributes: {{tier: gold}}
            - client: partner
              sha256: {PARTNER}
      - set_header: {{name: X-Client, value: "${{client.id}}/${{client.tier}} via ${{request.method}}"}}
      - remove_header: [X-Api-Key]
    response:
      - remove_header: [Server, X-Internal-Debug]
      - set_header: {{name: X-Served-For, value: "${{client.id}}"}}
"#
    )
}

#[test]
fn api_key_allows_denies_and_sets_variables() {
    let backend = Backend::start();
    let gw = TestGateway::start(&api_key_services(), &backend.url());
    let c = client();

    let (status, code, body) = problem_code(c.get(gw.url("/widgets/1")).send().expect("send"));
    assert_eq!((status, code.as_str()), (401, "missing-api-key"));
    assert!(body["detail"]
        .as_str()
        .expect("detail")
        .contains("X-Api-Key header"));

    let (status, code, _) = problem_code(
        c.get(gw.url("/widgets/1"))
            .header("x-api-key", "wrong")
            .send()
            .expect("send"),
    );
    assert_eq!((status, code.as_str()), (401, "invalid-api-key"));
    assert_eq!(
        backend.count(),
        0,
        "refused requests never reach the upstream"
    );

    let resp = c
        .get(gw.url("/widgets/1"))
        .header("x-api-key", "demo-key-123")
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-served-for"], "acme");
    assert!(
        resp.headers().get("server").is_none(),
        "response header removed"
    );
    assert!(resp.headers().get("x-internal-debug").is_none());
    let seen = backend.seen().pop().expect("reached");
    assert_eq!(seen.headers["x-client"], "acme/gold via GET");
    assert!(
        seen.headers.get("x-api-key").is_none(),
        "credential stripped upstream"
    );

    let resp = c
        .get(gw.url("/widgets/1"))
        .header("x-api-key", "partner-key-456")
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        backend.seen().pop().expect("reached").headers["x-client"],
        "partner/ via GET"
    );
}

#[test]
fn api_key_in_the_query_string_is_refused_and_never_logged() {
    let backend = Backend::start();
    let gw = TestGateway::start(&api_key_services(), &backend.url());
    let resp = client()
        .get(gw.url("/widgets/1?api_key=demo-key-123"))
        .header("x-api-key", "demo-key-123")
        .send()
        .expect("send");
    let (status, code, body) = problem_code(resp);
    assert_eq!((status, code.as_str()), (400, "api-key-in-query"));
    assert!(body["detail"]
        .as_str()
        .expect("detail")
        .contains("send the API key in the X-Api-Key header"));
    // The upstream decodes parameter names: an escaped letter is the same parameter.
    for query in [
        "ap%69_key=demo-key-123",
        "API%5Fkey=demo-key-123",
        "x=1&api%5fkey=k",
    ] {
        let resp = client()
            .get(gw.url(&format!("/widgets/1?{query}")))
            .header("x-api-key", "demo-key-123")
            .send()
            .expect("send");
        let (status, code, _) = problem_code(resp);
        assert_eq!(
            (status, code.as_str()),
            (400, "api-key-in-query"),
            "{query}"
        );
    }
    assert_eq!(backend.count(), 0);
    let log = gw.access_log();
    assert!(log.contains("\"reason\":\"api-key-in-query\""), "{log}");
    assert!(
        !log.contains("demo-key-123"),
        "the key reached the log: {log}"
    );
}

#[test]
fn ip_rules_honour_trusted_proxies_only() {
    let backend = Backend::start();
    let services = r#"
trusted_proxies: [127.0.0.1/32]
services:
  - name: internal
    match: {path: /internal}
    upstream: {backend}
    request:
      - allow_ip: [10.0.0.0/8, "2001:db8::/32"]
  - name: public
    match: {path: /public}
    upstream: {backend}
    request:
      - deny_ip: [203.0.113.0/24]
"#;
    let gw = TestGateway::start(services, &backend.url());
    let c = client();
    let status = |path: &str, xff: &str| {
        let mut req = c.get(gw.url(path));
        if !xff.is_empty() {
            req = req.header("x-forwarded-for", xff);
        }
        req.send().expect("send").status().as_u16()
    };
    // The test client is 127.0.0.1, a trusted proxy: its X-Forwarded-For is believed.
    assert_eq!(status("/internal", "10.1.2.3"), 200);
    assert_eq!(status("/internal", "2001:db8::7"), 200);
    assert_eq!(status("/internal", "192.168.1.1"), 403);
    // Only the rightmost untrusted hop counts: a spoofed left entry does not help.
    assert_eq!(status("/internal", "10.1.2.3, 198.51.100.4"), 403);
    assert_eq!(
        status("/internal", ""),
        403,
        "127.0.0.1 itself is not in the allow list"
    );
    assert_eq!(status("/public", "203.0.113.50"), 403);
    assert_eq!(status("/public", "198.51.100.4"), 200);
    let (status, code, _) = problem_code(c.get(gw.url("/internal")).send().expect("send"));
    assert_eq!((status, code.as_str()), (403, "ip-not-allowed"));
    // The upstream's X-Forwarded-For carries the chain plus the peer.
    let seen = backend.seen().pop().expect("reached");
    assert_eq!(seen.headers["x-forwarded-for"], "198.51.100.4, 127.0.0.1");
}

#[test]
fn any_passes_on_one_branch_and_explains_every_failure() {
    let backend = Backend::start();
    let services = format!(
        r#"
services:
  - name: orders
    upstream: {{backend}}
    request:
      - any:
          - allow_ip: [10.0.0.0/8]
          - all:
              - require_api_key:
                  keys: [{{client: partner, sha256: {PARTNER}}}]
              - set_header: {{name: X-Branch, value: key}}
      - set_header: {{name: X-After, value: "${{client.id}}"}}
"#
    );
    let gw = TestGateway::start(&services, &backend.url());
    let c = client();
    let (status, code, body) = problem_code(c.get(gw.url("/orders")).send().expect("send"));
    assert_eq!((status, code.as_str()), (403, "no-alternative-passed"));
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains("[1] ip-not-allowed"), "{detail}");
    assert!(detail.contains("[2] missing-api-key"), "{detail}");

    let resp = c
        .get(gw.url("/orders"))
        .header("x-api-key", "partner-key-456")
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    // A failed branch of a passing `any` is not logged as the request's denial.
    let log = gw.access_log();
    let last = log.lines().last().expect("a log line");
    assert!(
        last.contains("\"status\":200") && !last.contains("denied_by"),
        "{last}"
    );
    let seen = backend.seen().pop().expect("reached");
    assert_eq!(seen.headers["x-branch"], "key");
    assert_eq!(seen.headers["x-after"], "partner");
}

fn keys_file_line(key: &str, client: &str) -> String {
    use sha2::Digest as _;
    format!("{} {client}\n", hex::encode(sha2::Sha256::digest(key)))
}

#[test]
fn api_keys_from_a_keys_file_are_read_at_load_and_at_reload() {
    let backend = Backend::start();
    let services = format!(
        r#"
services:
  - name: widgets
    upstream: {{backend}}
    request:
      - require_api_key:
          keys_file: partner-keys.txt
          keys: [{{client: acme, sha256: {ACME}}}]
      - set_header: {{name: X-Client, value: "${{client.id}}"}}
"#
    );
    let mut keys = String::from("# partners, one key per line\n");
    for index in 0..2000 {
        keys.push_str(&keys_file_line(
            &format!("partner-key-{index}"),
            &format!("partner-{}", index % 100),
        ));
    }
    let gw =
        TestGateway::start_with_files(&services, &backend.url(), &[("partner-keys.txt", &keys)]);
    let c = client();
    let send = |key: &str| {
        c.get(gw.url("/widgets"))
            .header("x-api-key", key)
            .send()
            .expect("send")
    };
    for (key, client) in [
        ("partner-key-1999", "partner-99"),
        ("partner-key-100", "partner-0"),
        ("demo-key-123", "acme"),
    ] {
        assert_eq!(send(key).status(), 200, "{key}");
        assert_eq!(
            backend.seen().pop().expect("reached").headers["x-client"],
            client
        );
    }
    let (status, code, _) = problem_code(send("partner-key-2000"));
    assert_eq!((status, code.as_str()), (401, "invalid-api-key"));

    // A key added to the file counts from the next reload; one removed stops counting.
    let edited = keys.replace(&keys_file_line("partner-key-0", "partner-0"), "")
        + &keys_file_line("partner-key-2000", "newcomer");
    std::fs::write(gw.dir.path().join("partner-keys.txt"), edited).expect("write");
    let reloaded = gw.reload();
    assert_eq!(reloaded.status(), 200);
    assert_eq!(send("partner-key-2000").status(), 200);
    assert_eq!(
        backend.seen().pop().expect("reached").headers["x-client"],
        "newcomer"
    );
    let (status, code, _) = problem_code(send("partner-key-0"));
    assert_eq!((status, code.as_str()), (401, "invalid-api-key"));

    // A broken file is refused at reload with its position; the running keys stay.
    std::fs::write(
        gw.dir.path().join("partner-keys.txt"),
        "# ok\nabc partner\n",
    )
    .expect("write");
    let refused = gw.reload();
    assert_eq!(refused.status(), 422);
    let text = refused.text().expect("body");
    assert!(text.contains("partner-keys.txt:2:1"), "{text}");
    assert_eq!(send("partner-key-2000").status(), 200);
    // A file cut to its comments, with no inline key beside it, would refuse every caller:
    // refused at load.
    std::fs::write(
        gw.dir.path().join("partner-keys.txt"),
        "# emptied by a bad deploy\n",
    )
    .expect("write");
    let policy = std::fs::read_to_string(&gw.config).expect("policy");
    let only_file = policy.replace(
        &format!("          keys: [{{client: acme, sha256: {ACME}}}]\n"),
        "",
    );
    assert_ne!(only_file, policy);
    std::fs::write(&gw.config, only_file).expect("write");
    let errors = portcullis::config::load_dry_run(&gw.config)
        .expect_err("refused")
        .to_string();
    assert!(errors.contains("the keys file holds no key"), "{errors}");
}
