//! IP identity through the real gateway: the userauth API (cOS Core REST API shapes, byte
//! for byte) with a real HTTP client, its access rules, expiry by session and idle timeout,
//! survival across a restart with SQLite; and `require_ip_identity` admitting exactly the
//! addresses the API registered, by group and interface, IPv4 and IPv6.

use std::time::{Duration, Instant};

use crate::common::{client, problem_code, Backend, TestGateway, ADMIN_TOKEN};

const PATH: &str = "/api/oper/userauth";
const DHCP_PASSWORD: &str = "dhcp-pw";
const MONITOR_PASSWORD: &str = "monitor-pw";

/// A users file with `dhcp` (a writer) and `monitor` (read-only).
fn write_users(dir: &std::path::Path) -> std::path::PathBuf {
    let hash = |pw: &str| portcullis::basic_auth::users::hash_password(pw).expect("hash");
    let path = dir.join("userauth-users.yaml");
    std::fs::write(
        &path,
        format!(
            "users:\n  - name: dhcp\n    password_argon2id: \"{}\"\n  - name: monitor\n    password_argon2id: \"{}\"\n",
            hash(DHCP_PASSWORD),
            hash(MONITOR_PASSWORD)
        ),
    )
    .expect("users");
    path
}

/// The policy after the preamble: the API for `allow_from`, three services.
fn policy(dir: &std::path::Path, allow_from: &str) -> String {
    let users = write_users(dir);
    format!(
        "trusted_proxies: [127.0.0.1]
state: sqlite://{state}
identity_api:
  allow_from: [{allow_from}]
  users_file: {users}
  writers: [dhcp]
  interfaces: [wan, lan]
services:
  - name: staff
    match: {{path: /staff}}
    upstream: \"{{backend}}\"
    request:
      - require_ip_identity: {{groups: [admins, staff]}}
  - name: lan
    match: {{path: /lan}}
    upstream: \"{{backend}}\"
    request:
      - require_ip_identity: {{interfaces: [lan]}}
  - name: any
    match: {{path: /}}
    upstream: \"{{backend}}\"
    request:
      - require_ip_identity: {{}}
      - set_header: {{name: X-User, value: \"${{identity.user}}/${{identity.groups}}/${{identity.interface}}\"}}
",
        state = dir.join("identities.db").display(),
        users = users.display(),
    )
}

/// A gateway with the API open to loopback; the state file and users in `dir`.
fn gateway(dir: &std::path::Path, backend: &Backend) -> TestGateway {
    TestGateway::start(&policy(dir, "127.0.0.1/32, \"::1/128\""), &backend.url())
}

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

fn send(req: reqwest::blocking::RequestBuilder) -> Answer {
    let resp = req.send().expect("send");
    Answer {
        status: resp.status().as_u16(),
        content_type: resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        body: resp.text().expect("body"),
    }
}

fn get(gw: &TestGateway, query: &str) -> Answer {
    send(
        client()
            .get(gw.admin_url(&format!("{PATH}{query}")))
            .basic_auth("monitor", Some(MONITOR_PASSWORD)),
    )
}

fn post(gw: &TestGateway, form: &str) -> Answer {
    send(
        client()
            .post(gw.admin_url(PATH))
            .basic_auth("dhcp", Some(DHCP_PASSWORD))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned()),
    )
}

fn delete(gw: &TestGateway, query: &str) -> Answer {
    send(
        client()
            .delete(gw.admin_url(&format!("{PATH}{query}")))
            .basic_auth("dhcp", Some(DHCP_PASSWORD)),
    )
}

fn error(code: u16, message: &str) -> String {
    format!("{{\"error\":true,\"error_code\":{code},\"error_message\":\"{message}\"}}")
}

fn user(name: &str, ip: &str, groups: &str, interface: &str, session: u32, idle: u32) -> String {
    format!("{{\"username\":\"{name}\",\"ip\":\"{ip}\",\"groups\":\"{groups}\",\"interface\":\"{interface}\",\"agent_type\":\"Identity Awareness\",\"session_timeout\":{session},\"idle_timeout\":{idle}}}")
}

fn list(count: usize, users: &[String]) -> String {
    format!(
        "{{\"error\":false,\"active_users_count\":{count},\"active_users\":[{}]}}",
        users.join(",")
    )
}

/// A request through the proxy as `client_ip` (presented by the trusted proxy 127.0.0.1).
fn through(gw: &TestGateway, path: &str, client_ip: Option<&str>) -> reqwest::blocking::Response {
    let mut req = client().get(gw.url(path));
    if let Some(ip) = client_ip {
        req = req.header("x-forwarded-for", ip);
    }
    req.send().expect("send")
}

#[test]
fn the_userauth_api_answers_in_the_firewall_apis_shapes() {
    let dir = tempfile::tempdir().expect("dir");
    let backend = Backend::start();
    let gw = gateway(dir.path(), &backend);
    let empty = get(&gw, "");
    assert_eq!(
        (empty.status, empty.content_type.as_str()),
        (200, "application/json")
    );
    assert_eq!(
        empty.body,
        r#"{"error":false,"active_users_count":0,"active_users":[]}"#
    );

    let user1 = user("user1", "203.0.113.5", "group1,group2", "wan", 60, 60);
    let added = post(
        &gw,
        "ip=203.0.113.5&username=user1&interface=wan&session_timeout=60&idle_timeout=60&groups=group1,group2",
    );
    assert_eq!(added.status, 200);
    assert_eq!(added.body, format!("{{\"error\":false,\"user\":{user1}}}"));
    // idle_timeout defaults to session_timeout; interface is optional; groups may be empty.
    let user2 = user("user2", "2001:db8::7", "", "", 120, 120);
    let added = post(
        &gw,
        "ip=2001:DB8:0::7&username=user2&session_timeout=120&groups=",
    );
    assert_eq!(added.body, format!("{{\"error\":false,\"user\":{user2}}}"));
    assert_eq!(get(&gw, "").body, list(2, &[user1.clone(), user2.clone()]));
    assert_eq!(
        get(&gw, "?num=1").body,
        list(2, std::slice::from_ref(&user1))
    );
    assert_eq!(get(&gw, "?num=0").body, list(2, &[]));
    assert_eq!(
        get(&gw, "?ip=2001:db8::7").body,
        list(2, std::slice::from_ref(&user2))
    );
    assert_eq!(
        get(&gw, "?ip=203.0.113.5&interface=wan").body,
        list(2, std::slice::from_ref(&user1))
    );
    assert_eq!(get(&gw, "?ip=203.0.113.5&interface=lan").body, list(2, &[]));
    assert_eq!(get(&gw, "?ip=203.0.113.99").body, list(2, &[]));

    // The address changed hands: the new entry replaces the old; `::ffff:` is the same host.
    let carol = user("carol", "203.0.113.5", "staff", "lan", 300, 30);
    let replaced = post(
        &gw,
        "ip=::ffff:203.0.113.5&username=carol&interface=lan&session_timeout=300&idle_timeout=30&groups=staff",
    );
    assert_eq!(
        replaced.body,
        format!("{{\"error\":false,\"user\":{carol}}}")
    );
    assert_eq!(get(&gw, "").body, list(2, &[carol.clone(), user2.clone()]));

    // Every bad input: 400 naming the parameter, and nothing changed.
    let before = get(&gw, "").body;
    let base = "username=u&session_timeout=60&groups=g";
    for (form, message) in [
        (base.to_owned(), r#"parameter \"ip\" is required"#),
        (
            format!("ip=203.0.113.300&{base}"),
            r#"parameter \"ip\" is not an IPv4 or IPv6 address (e.g. 203.0.113.5 or 2001:db8::5)"#,
        ),
        (
            "ip=203.0.113.5&session_timeout=60&groups=g".to_owned(),
            r#"parameter \"username\" is required"#,
        ),
        (
            "ip=203.0.113.5&username=x&session_timeout=60".to_owned(),
            r#"parameter \"groups\" is required (it may be empty: groups=)"#,
        ),
        (
            "ip=203.0.113.5&username=x&session_timeout=ten&groups=g".to_owned(),
            r#"parameter \"session_timeout\" must be a whole number of seconds from 1 to 2678400 (31 days)"#,
        ),
        (
            "ip=203.0.113.5&username=x&session_timeout=-1&groups=g".to_owned(),
            r#"parameter \"session_timeout\" must be a whole number of seconds from 1 to 2678400 (31 days)"#,
        ),
        (
            "ip=203.0.113.5&username=x&session_timeout=2678401&groups=g".to_owned(),
            r#"parameter \"session_timeout\" must be a whole number of seconds from 1 to 2678400 (31 days)"#,
        ),
        (
            "ip=203.0.113.5&username=x&session_timeout=60&idle_timeout=1e3&groups=g".to_owned(),
            r#"parameter \"idle_timeout\" must be a whole number of seconds from 1 to 2678400 (31 days)"#,
        ),
        (
            format!("ip=203.0.113.5&{base}&interface=dmz"),
            r#"parameter \"interface\": unknown interface \"dmz\" (known: wan, lan)"#,
        ),
        (
            format!("ip=203.0.113.5&{base}&role=admin"),
            r#"unknown parameter \"role\": use ip, username, interface, session_timeout, idle_timeout, groups"#,
        ),
    ] {
        let refused = post(&gw, &form);
        assert_eq!(
            (refused.status, refused.body.as_str()),
            (400, error(400, message).as_str()),
            "{form}"
        );
        assert_eq!(refused.content_type, "application/json");
    }
    let json = send(
        client()
            .post(gw.admin_url(PATH))
            .basic_auth("dhcp", Some(DHCP_PASSWORD))
            .json(&serde_json::json!({"ip": "203.0.113.5", "username": "x"})),
    );
    assert_eq!(
        (json.status, json.body),
        (
            400,
            error(
                400,
                "the content type must be application/x-www-form-urlencoded"
            )
        )
    );
    let huge = post(
        &gw,
        &format!("ip=203.0.113.5&{base}&x={}", "a".repeat(9000)),
    );
    assert_eq!(
        (huge.status, huge.body),
        (400, error(400, "the body is larger than 8192 bytes"))
    );
    let in_url = send(
        client()
            .post(gw.admin_url(&format!("{PATH}?ip=203.0.113.5&{base}")))
            .basic_auth("dhcp", Some(DHCP_PASSWORD))
            .header("content-type", "application/x-www-form-urlencoded"),
    );
    assert_eq!(in_url.status, 400);
    for query in ["?num=-1", "?ip=nope", "?interface=wan", "?user=x"] {
        assert_eq!(get(&gw, query).status, 400, "{query}");
    }
    assert_eq!(
        delete(&gw, "").body,
        error(400, r#"parameter \"ip\" is required"#)
    );
    let put = send(
        client()
            .put(gw.admin_url(PATH))
            .basic_auth("dhcp", Some(DHCP_PASSWORD)),
    );
    assert_eq!(
        (put.status, put.body),
        (405, error(405, "use GET, POST or DELETE"))
    );
    assert_eq!(get(&gw, "").body, before, "no bad request changed anything");

    // Delete: on another interface it does not exist; then it goes; then it is unknown.
    let not_there = delete(&gw, "?ip=203.0.113.5&interface=wan");
    assert_eq!(
        (not_there.status, not_there.body),
        (404, error(404, "User does not exist"))
    );
    let deleted = delete(&gw, "?ip=203.0.113.5&interface=lan");
    assert_eq!(
        (deleted.status, deleted.body.as_str()),
        (200, r#"{"error":false}"#)
    );
    let again = delete(&gw, "?ip=203.0.113.5");
    assert_eq!(
        (again.status, again.body),
        (404, error(404, "User does not exist"))
    );
    assert_eq!(get(&gw, "").body, list(1, std::slice::from_ref(&user2)));
}

#[test]
fn access_needs_an_allowed_source_and_credentials_and_readers_only_list() {
    let dir = tempfile::tempdir().expect("dir");
    let backend = Backend::start();
    let gw = gateway(dir.path(), &backend);
    let form = "ip=198.51.100.1&username=u&session_timeout=60&groups=";
    // A read-only user may not add or delete.
    let refused = send(
        client()
            .post(gw.admin_url(PATH))
            .basic_auth("monitor", Some(MONITOR_PASSWORD))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form),
    );
    assert_eq!(
        (refused.status, refused.body),
        (403, error(403, "this user may only list (GET)"))
    );
    let refused = send(
        client()
            .delete(gw.admin_url(&format!("{PATH}?ip=198.51.100.1")))
            .basic_auth("monitor", Some(MONITOR_PASSWORD)),
    );
    assert_eq!(refused.status, 403);
    let nobody = send(client().get(gw.admin_url(PATH)));
    assert_eq!(nobody.status, 401);
    assert_eq!(
        nobody.body,
        error(
            401,
            "HTTP Basic credentials or the admin bearer token are required"
        )
    );
    let wrong = send(
        client()
            .get(gw.admin_url(PATH))
            .basic_auth("dhcp", Some("not-it")),
    );
    assert_eq!(
        (wrong.status, wrong.body),
        (401, error(401, "the user name or password is wrong"))
    );
    let wrong_token = send(client().get(gw.admin_url(PATH)).bearer_auth("nope"));
    assert_eq!(wrong_token.status, 401);
    // The admin token may write; nothing was added by the refused calls before.
    assert_eq!(get(&gw, "").body, list(0, &[]));
    let by_token = send(
        client()
            .post(gw.admin_url(PATH))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form),
    );
    assert_eq!(by_token.status, 200);
    assert_eq!(
        get(&gw, "").body,
        list(1, &[user("u", "198.51.100.1", "", "", 60, 60)])
    );

    // A gateway whose API admits only another network refuses loopback, even the admin.
    let other = tempfile::tempdir().expect("dir");
    let closed = TestGateway::start(&policy(other.path(), "10.9.9.0/24"), &backend.url());
    let refused = send(
        client()
            .get(closed.admin_url(PATH))
            .bearer_auth(ADMIN_TOKEN),
    );
    assert_eq!(
        (refused.status, refused.body),
        (403, error(403, "this source address may not use the API"))
    );
    // The rest of the admin API is not affected by the list.
    let health = client()
        .get(closed.admin_url("/healthz"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("send");
    assert_eq!(health.status().as_u16(), 200);
}

#[test]
fn registered_addresses_pass_require_ip_identity_by_group_and_interface_v4_and_v6() {
    let dir = tempfile::tempdir().expect("dir");
    let backend = Backend::start();
    let gw = gateway(dir.path(), &backend);
    // Nobody registered: refused, whether the address is the peer's or a forwarded one.
    let (status, code, _) = problem_code(through(&gw, "/hello", None));
    assert_eq!((status, code.as_str()), (403, "ip-identity-unknown"));
    let (status, code, _) = problem_code(through(&gw, "/hello", Some("2001:db8::9")));
    assert_eq!((status, code.as_str()), (403, "ip-identity-unknown"));

    post(
        &gw,
        "ip=127.0.0.1&username=alice&interface=wan&session_timeout=600&groups=staff,wifi",
    );
    post(
        &gw,
        "ip=2001:DB8::9&username=bob&interface=lan&session_timeout=600&groups=guests",
    );
    let resp = through(&gw, "/hello", None);
    assert_eq!(resp.status().as_u16(), 200);
    let seen = backend.seen();
    let last = seen.last().expect("reached the backend");
    assert_eq!(last.headers["x-user"], "alice/staff,wifi/wan");
    // IPv6, presented by the trusted proxy in X-Forwarded-For (any spelling of the address).
    assert_eq!(
        through(&gw, "/hello", Some("2001:db8:0:0::9"))
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        backend.seen().last().expect("seen").headers["x-user"],
        "bob/guests/lan"
    );
    // An untrusted hop cannot claim bob's address: a forged header from a client that is
    // not a trusted proxy is not believed (the trusted proxy here is the peer itself, so
    // the rightmost untrusted hop is the client).
    let (status, code, _) =
        problem_code(through(&gw, "/hello", Some("2001:db8::9, 198.51.100.66")));
    assert_eq!((status, code.as_str()), (403, "ip-identity-unknown"));

    // Groups: alice is staff, bob a guest.
    assert_eq!(through(&gw, "/staff", None).status().as_u16(), 200);
    let (status, code, _) = problem_code(through(&gw, "/staff", Some("2001:db8::9")));
    assert_eq!((status, code.as_str()), (403, "ip-identity-group"));
    // Interfaces: bob is on the LAN, alice on the WAN.
    assert_eq!(
        through(&gw, "/lan", Some("2001:db8::9")).status().as_u16(),
        200
    );
    let (status, code, _) = problem_code(through(&gw, "/lan", None));
    assert_eq!((status, code.as_str()), (403, "ip-identity-interface"));

    // Deleted through the API: refused with the next request.
    let before = backend.count();
    assert_eq!(delete(&gw, "?ip=127.0.0.1").status, 200);
    let (status, code, _) = problem_code(through(&gw, "/hello", None));
    assert_eq!((status, code.as_str()), (403, "ip-identity-unknown"));
    assert_eq!(backend.count(), before, "nothing reached the upstream");
}

/// Polls until `check` holds, for at most `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn entries_expire_by_session_and_by_idle_timeout_and_traffic_keeps_them() {
    let dir = tempfile::tempdir().expect("dir");
    let backend = Backend::start();
    let gw = gateway(dir.path(), &backend);
    // Session timeout: 2 s, however busy.
    post(&gw, "ip=127.0.0.1&username=short&session_timeout=2&groups=");
    let added = Instant::now();
    assert_eq!(through(&gw, "/a", None).status().as_u16(), 200);
    assert!(eventually(Duration::from_secs(5), || {
        through(&gw, "/a", None).status().as_u16() == 403
    }));
    assert!(
        added.elapsed() >= Duration::from_secs(1),
        "not before its time"
    );
    assert_eq!(get(&gw, "").body, list(0, &[]));

    // Idle timeout 4 s in a 60 s session: traffic every half second keeps it well past
    // 4 s (touches are written behind in whole seconds: 2 s left too little room on a
    // loaded machine), and the store sees it (the API reads the store, not the proxy's cache).
    let ip = "2001:db8::20";
    post(
        &gw,
        &format!("ip={ip}&username=busy&session_timeout=60&idle_timeout=4&groups="),
    );
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        assert_eq!(
            through(&gw, "/a", Some(ip)).status().as_u16(),
            200,
            "active while used, at {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        get(&gw, &format!("?ip={ip}")).body,
        list(1, &[user("busy", ip, "", "", 60, 4)]),
        "the touches reached the store"
    );
    // Then quiet: it idles out (the last touch plus 4 s, in whole seconds).
    std::thread::sleep(Duration::from_millis(5500));
    let (status, code, _) = problem_code(through(&gw, "/a", Some(ip)));
    assert_eq!((status, code.as_str()), (403, "ip-identity-unknown"));
    assert_eq!(get(&gw, "").body, list(0, &[]));
}

#[test]
fn the_table_survives_a_restart_with_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let backend = Backend::start();
    let text = policy(dir.path(), "127.0.0.1/32");
    let entry = user("kept", "192.0.2.44", "g", "wan", 3600, 600);
    {
        let gw = TestGateway::start(&text, &backend.url());
        post(&gw, "ip=192.0.2.44&username=kept&interface=wan&session_timeout=3600&idle_timeout=600&groups=g");
    }
    let gw = TestGateway::start(&text, &backend.url());
    assert_eq!(get(&gw, "").body, list(1, &[entry]));
}

#[test]
fn the_shipped_public_wifi_policy_admits_registered_travellers_and_staff() {
    let backend = Backend::start();
    let gw = TestGateway::from_policy_with(
        "public-wifi-ip-identity.yaml",
        &backend.url(),
        &[("sqlite://portcullis-wifi.db", "memory".to_owned())],
    );
    let add = |form: &str| {
        send(
            client()
                .post(gw.admin_url(PATH))
                .basic_auth("dhcp", Some("dhcp-demo-password"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.to_owned()),
        )
    };
    let (status, code, _) = problem_code(through(&gw, "/portal", None));
    assert_eq!((status, code.as_str()), (403, "ip-identity-unknown"));
    assert_eq!(
        add("ip=127.0.0.1&username=traveller42&interface=wifi&session_timeout=3600&idle_timeout=900&groups=guests").status,
        200
    );
    assert_eq!(through(&gw, "/portal", None).status().as_u16(), 200);
    let seen = backend.seen();
    let last = seen.last().expect("seen");
    assert_eq!(last.headers["x-remote-user"], "traveller42");
    assert_eq!(last.headers["x-remote-groups"], "guests");
    let (status, code, _) = problem_code(through(&gw, "/intranet", None));
    assert_eq!((status, code.as_str()), (403, "ip-identity-group"));
    // The monitor may list, not add.
    let monitor = send(
        client()
            .get(gw.admin_url(PATH))
            .basic_auth("monitor", Some("monitor-demo-password")),
    );
    assert!(
        monitor.body.contains("\"username\":\"traveller42\""),
        "{}",
        monitor.body
    );
    add("ip=127.0.0.1&username=ops1&interface=staff-lan&session_timeout=3600&groups=staff");
    assert_eq!(through(&gw, "/intranet", None).status().as_u16(), 200);
    assert_eq!(
        backend.seen().last().expect("seen").headers["x-remote-user"],
        "ops1"
    );
}
