//! Credential forwarding control, judged at a recording upstream by the headers, cookies and
//! query it received: the default strip once a step authenticated the caller, `strip`,
//! `forward` with each condition true and false, pass-through, the attacker's spellings
//! (duplicate and mixed-case headers, encoded query names, cookies), the access-log line
//! and its hint when the upstream then refuses, and the shipped example policy.

use crate::common::{client, Backend, Seen, TestGateway};

// sha256("demo-key-123") and sha256("partner-key-456")
const GOLD: &str = "a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873";
const SILVER: &str = "d1befb14a63e7ced66c1ee0868800d6330e970e6f6e5c03dc847a97fa65c588e";

fn services() -> String {
    format!(
        r#"trusted_proxies: [127.0.0.1]
services:
  # Authenticates callers and says nothing: strip by default.
  - name: default
    match: {{path: /default}}
    upstream: {{backend}}
    request:
      - require_api_key:
          keys: [{{client: gold, sha256: {GOLD}}}]
      - set_header: {{name: X-Gateway-Auth, value: "gateway"}}
  # An authenticating step inside `any` makes the service one that authenticates.
  - name: either
    match: {{path: /either}}
    upstream: {{backend}}
    request:
      - any:
          - allow_ip: [127.0.0.0/8]
          - require_api_key:
              keys: [{{client: gold, sha256: {GOLD}}}]
  # The gateway's own credential for the upstream survives stripping.
  - name: injected
    match: {{path: /injected}}
    upstream: {{backend}}
    request:
      - require_api_key:
          keys: [{{client: gold, sha256: {GOLD}}}]
      - set_header: {{name: Authorization, value: "Basic Z2F0ZXdheTpzZWNyZXQ="}}
  # Forward, when every condition holds.
  - name: forward
    match: {{path: /forward}}
    upstream: {{url: "{{backend}}", strip_prefix: true}}
    request:
      - require_api_key:
          keys:
            - {{client: gold, sha256: {GOLD}, attributes: {{tier: gold, groups: "staff,payments"}}}}
            - {{client: silver, sha256: {SILVER}, attributes: {{tier: silver, groups: payments}}}}
      - remove_header: [X-Api-Key]
    credentials:
      mode: forward
      when:
        upstream_hosts: [127.0.0.1]
        client_cidrs: [127.0.0.0/8, 10.0.0.0/8]
        groups: {{variable: "${{client.groups}}", any_of: [staff]}}
        variables:
          - {{variable: "${{client.tier}}", equals: gold}}
      cookies: [session]
  # The upstream host is not listed: always stripped.
  - name: elsewhere
    match: {{path: /elsewhere}}
    upstream: {{backend}}
    credentials:
      mode: forward
      when: {{upstream_hosts: [api.partner.example]}}
  - name: always
    match: {{path: /always}}
    upstream: {{backend}}
    request:
      - require_api_key:
          keys: [{{client: gold, sha256: {GOLD}}}]
    credentials: {{mode: forward, when: always}}
  # Nothing authenticates here and the policy strips what it names.
  - name: strip
    match: {{path: /strip}}
    upstream: {{backend}}
    credentials:
      mode: strip
      headers: [X-Session-Token]
      cookies: [sid]
      query_params: [token]
  # Nothing authenticates, nothing said: everything passes, as before.
  - name: open
    match: {{path: /open}}
    upstream: {{backend}}
"#
    )
}

fn last(backend: &Backend) -> Seen {
    backend
        .seen()
        .pop()
        .expect("the request reached the upstream")
}

/// The access-log lines of requests to `path`, parsed.
fn log_lines(gw: &TestGateway, path: &str) -> Vec<serde_json::Value> {
    gw.access_log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["path"] == path)
        .collect()
}

#[test]
fn authenticating_steps_strip_the_callers_credentials_by_default() {
    let backend = Backend::start();
    let gw = TestGateway::start(&services(), &backend.url());
    // Raw bytes: two Authorization lines, odd case, a Proxy-Authorization.
    let request = "GET /default/a HTTP/1.1\r\nHost: x\r\nX-API-KEY: demo-key-123\r\nauthorization: Bearer one\r\nAUTHORIZATION: Bearer two\r\nProxy-Authorization: Basic cDpx\r\nX-Other: stays\r\nConnection: close\r\n\r\n";
    let answer = raw(&gw, request);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = last(&backend);
    for gone in ["authorization", "proxy-authorization", "x-api-key"] {
        assert!(
            seen.headers.get(gone).is_none(),
            "{gone} reached the upstream"
        );
    }
    assert_eq!(seen.headers["x-other"], "stays");
    assert_eq!(seen.headers["x-gateway-auth"], "gateway");

    let line = log_lines(&gw, "/default/a").pop().expect("logged");
    assert_eq!(line["credentials"], "stripped");
    assert_eq!(line["credentials_rule"], "authenticated");
    // Proxy-Authorization is hop-by-hop: Pingora drops it before the gateway's stripping.
    assert_eq!(
        line["credentials_places"],
        serde_json::json!(["authorization", "x-api-key"])
    );
    let text = line.to_string();
    assert!(
        !text.contains("Bearer") && !text.contains("demo-key-123"),
        "{text}"
    );

    // Let in by the address, not the key: the service authenticates all the same.
    let resp = client()
        .get(gw.url("/either"))
        .header("authorization", "Bearer caller")
        .header("x-api-key", "not-checked")
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    let seen = last(&backend);
    assert!(seen.headers.get("authorization").is_none());
    assert!(seen.headers.get("x-api-key").is_none());

    // What the gateway itself puts in Authorization goes up.
    let resp = client()
        .get(gw.url("/injected"))
        .header("x-api-key", "demo-key-123")
        .header("authorization", "Bearer caller")
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    let seen = last(&backend);
    let values: Vec<_> = seen.headers.get_all("authorization").iter().collect();
    assert_eq!(values, ["Basic Z2F0ZXdheTpzZWNyZXQ="]);
}

#[test]
fn forward_needs_every_condition_and_strips_when_one_fails() {
    let backend = Backend::start();
    let gw = TestGateway::start(&services(), &backend.url());
    let send = |key: &str, from: &str, path: &str| {
        let resp = client()
            .get(gw.url(path))
            .header("x-api-key", key)
            .header("x-forwarded-for", from)
            .header("authorization", "Bearer crm-token")
            .header("cookie", "theme=dark; session=s1")
            .send()
            .expect("send");
        assert_eq!(resp.status(), 200, "{path}");
        last(&backend)
    };

    // Every condition holds: the caller's credentials go up unchanged.
    let seen = send("demo-key-123", "10.1.2.3", "/forward/ok");
    assert_eq!(seen.headers["authorization"], "Bearer crm-token");
    assert_eq!(seen.headers["cookie"], "theme=dark; session=s1");
    assert!(
        seen.headers.get("x-api-key").is_none(),
        "removed by the policy's own step"
    );

    // The client address is outside the listed blocks.
    let seen = send("demo-key-123", "192.0.2.9", "/forward/outside");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.headers["cookie"], "theme=dark");

    // The variable condition fails (silver), then the group one (silver is not staff,
    // checked first).
    let seen = send("partner-key-456", "10.1.2.3", "/forward/silver");
    assert!(seen.headers.get("authorization").is_none());

    // The upstream host is not listed.
    let seen = send("demo-key-123", "10.1.2.3", "/elsewhere/x");
    assert!(seen.headers.get("authorization").is_none());

    // `when: always`.
    let seen = send("demo-key-123", "192.0.2.9", "/always/x");
    assert_eq!(seen.headers["authorization"], "Bearer crm-token");
    assert_eq!(seen.headers["x-api-key"], "demo-key-123");

    let rule = |path: &str| {
        let line = log_lines(&gw, path).pop().expect("logged");
        (
            line["credentials"].as_str().unwrap_or("").to_owned(),
            line["credentials_rule"].as_str().unwrap_or("").to_owned(),
        )
    };
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(rule("/forward/ok"), pair("forwarded", "forward"));
    assert_eq!(
        rule("/forward/outside"),
        pair("stripped", "when.client_cidrs")
    );
    assert_eq!(rule("/forward/silver"), pair("stripped", "when.groups"));
    assert_eq!(
        rule("/elsewhere/x"),
        pair("stripped", "when.upstream_hosts")
    );
    assert_eq!(rule("/always/x"), pair("forwarded", "always"));
}

#[test]
fn a_variable_condition_alone_decides() {
    let backend = Backend::start();
    let services = format!(
        r#"services:
  - name: tiers
    match: {{path: /}}
    upstream: {{backend}}
    request:
      - require_api_key:
          keys:
            - {{client: gold, sha256: {GOLD}, attributes: {{tier: gold}}}}
            - {{client: silver, sha256: {SILVER}, attributes: {{tier: silver}}}}
    credentials:
      mode: forward
      when:
        variables: [{{variable: "${{client.tier}}", one_of: [gold, platinum]}}]
"#
    );
    let gw = TestGateway::start(&services, &backend.url());
    for (key, forwarded) in [("demo-key-123", true), ("partner-key-456", false)] {
        let resp = client()
            .get(gw.url("/x"))
            .header("x-api-key", key)
            .header("authorization", "Bearer t")
            .send()
            .expect("send");
        assert_eq!(resp.status(), 200);
        let seen = last(&backend);
        assert_eq!(
            seen.headers.contains_key("authorization"),
            forwarded,
            "{key}"
        );
        assert_eq!(seen.headers.contains_key("x-api-key"), forwarded, "{key}");
    }
    let line = log_lines(&gw, "/x").pop().expect("logged");
    assert_eq!(line["credentials_rule"], "when.variables[0]");
}

#[test]
fn strip_takes_configured_headers_cookies_and_query_parameters() {
    let backend = Backend::start();
    let gw = TestGateway::start(&services(), &backend.url());
    let resp = client()
        .get(gw.url("/strip/p?a=1&TOKEN=t1&to%6Ben=t2&b=2"))
        .header("x-session-token", "s")
        .header("cookie", "SID=1; lang=en")
        .header("cookie", "sid=2")
        .header("authorization", "Basic dTpw")
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    let seen = last(&backend);
    assert_eq!(seen.uri, "/strip/p?a=1&b=2");
    assert!(seen.headers.get("x-session-token").is_none());
    assert!(seen.headers.get("authorization").is_none());
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["lang=en"]);

    // Nothing authenticates, nothing said: the caller's headers pass, as before.
    let resp = client()
        .get(gw.url("/open?token=t"))
        .header("authorization", "Bearer t")
        .header("cookie", "sid=1")
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    let seen = last(&backend);
    assert_eq!(seen.headers["authorization"], "Bearer t");
    assert_eq!(seen.uri, "/open?token=t");
    let line = log_lines(&gw, "/open").pop().expect("logged");
    assert!(line.get("credentials").is_none(), "{line}");
}

#[test]
fn an_upstream_refusal_after_stripping_carries_a_hint() {
    let backend = Backend::start();
    let gw = TestGateway::start(&services(), &backend.url());
    let resp = client()
        .get(gw.url("/forward/status/401"))
        .header("x-api-key", "demo-key-123")
        .header("x-forwarded-for", "192.0.2.9")
        .header("authorization", "Bearer crm-token")
        .send()
        .expect("send");
    assert_eq!(resp.status(), 401);
    let line = log_lines(&gw, "/forward/status/401").pop().expect("logged");
    let hint = line["hint"].as_str().expect("a hint");
    assert!(hint.contains("answered 401"), "{hint}");
    assert!(hint.contains("when.client_cidrs"), "{hint}");
    assert!(hint.contains("127.0.0.0/8"), "{hint}");
    assert!(!hint.contains("crm-token"), "{hint}");

    // Forwarded, the upstream's 401 is its own business: no hint.
    let resp = client()
        .get(gw.url("/forward/status/403"))
        .header("x-api-key", "demo-key-123")
        .header("authorization", "Bearer crm-token")
        .send()
        .expect("send");
    assert_eq!(resp.status(), 403);
    let line = log_lines(&gw, "/forward/status/403").pop().expect("logged");
    assert!(line.get("hint").is_none(), "{line}");

    let metrics = client()
        .get(gw.admin_url("/metrics"))
        .bearer_auth(crate::common::ADMIN_TOKEN)
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains(
            "portcullis_credentials_stripped_total{rule=\"when.client_cidrs\",service=\"forward\"} 1"
        ),
        "{metrics}"
    );
}

/// Bodies the pipeline read past 64 KiB go up through the gateway's own forwarder: the
/// same stripping applies there.
#[test]
fn large_pre_read_bodies_are_stripped_too() {
    let backend = Backend::start();
    let services = format!(
        r#"services:
  - name: big
    match: {{path: /big}}
    upstream: {{backend}}
    request:
      - require_api_key:
          keys: [{{client: gold, sha256: {GOLD}}}]
      - validate_json: {{}}
  - name: open
    match: {{path: /open}}
    upstream: {{backend}}
    request:
      - validate_json: {{}}
"#
    );
    let gw = TestGateway::start(&services, &backend.url());
    let body = format!("[{}1]", "1,".repeat(50_000));
    let resp = client()
        .post(gw.url("/big"))
        .header("x-api-key", "demo-key-123")
        .header("authorization", "Bearer t")
        .header("proxy-authorization", "Basic cDpx")
        .body(body.clone())
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    let seen = last(&backend);
    assert_eq!(seen.body.len(), body.len());
    for gone in ["authorization", "proxy-authorization", "x-api-key"] {
        assert!(
            seen.headers.get(gone).is_none(),
            "{gone} reached the upstream"
        );
    }
    // Passing through, Proxy-Authorization is still the gateway's (hop-by-hop), as on
    // Pingora's own path.
    let resp = client()
        .post(gw.url("/open"))
        .header("authorization", "Bearer t")
        .header("proxy-authorization", "Basic cDpx")
        .body(body)
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    let seen = last(&backend);
    assert_eq!(seen.headers["authorization"], "Bearer t");
    assert!(seen.headers.get("proxy-authorization").is_none());
}

/// The shipped example: the billing app's CRM token goes on, the kiosk's does not.
#[test]
fn the_credential_forwarding_policy_forwards_narrowly() {
    let backend = Backend::start();
    let gw = TestGateway::from_policy("credential-forwarding.yaml", &backend.url());
    let call = |key: &str, path: &str| {
        client()
            .get(gw.url(path))
            .header("x-api-key", key)
            .header("authorization", "Bearer crm-token")
            .header("cookie", "crm_session=abc; theme=dark")
            .send()
            .expect("send")
            .status()
            .as_u16()
    };
    assert_eq!(call("demo-key-123", "/crm/accounts"), 200);
    let seen = last(&backend);
    assert_eq!(seen.headers["authorization"], "Bearer crm-token");
    assert_eq!(seen.headers["cookie"], "crm_session=abc; theme=dark");
    assert_eq!(seen.headers["x-calling-app"], "billing-app");
    assert!(seen.headers.get("x-api-key").is_none());

    assert_eq!(call("partner-key-456", "/crm/status/401"), 401);
    let seen = last(&backend);
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.headers["cookie"], "theme=dark");
    let line = log_lines(&gw, "/crm/status/401").pop().expect("logged");
    assert_eq!(line["credentials_rule"], "when.groups");
    assert!(
        line["hint"]
            .as_str()
            .is_some_and(|h| h.contains("integrations")),
        "{line}"
    );

    let resp = client()
        .get(gw.url("/home?token=t&page=2"))
        .header("x-auth-token", "t")
        .header("cookie", "sso_session=s; theme=dark")
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    let seen = last(&backend);
    assert_eq!(seen.uri, "/home?page=2");
    assert!(seen.headers.get("x-auth-token").is_none());
    assert_eq!(seen.headers["cookie"], "theme=dark");
}

fn raw(gw: &TestGateway, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(gw.addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// `require_bearer`: the token the gateway checked stays here, from the header (no
/// `remove_header` in the policy) or from the query when the step allows it there.
#[test]
fn a_bearer_token_does_not_travel_on_from_the_header_or_the_query() {
    use crate::oauth::{client_credentials, start, KeyServer};
    let keys = KeyServer::start();
    keys.publish("/jwks", 200, r#"{"keys":[]}"#);
    keys.publish("/certs", 200, "{}");
    let backend = Backend::start();
    let dir = tempfile::tempdir().expect("dir");
    let extra = r#"  - name: query-widgets
    match: {path: /query-widgets}
    upstream: "{backend}"
    request:
      - require_bearer: {scopes: [widgets.read], allow_query_token: true}
"#;
    let gw = start(&keys, &backend, &dir.path().join("state.db"), extra);
    let body = client_credentials(&gw, "billing-app", Some("widgets.read widgets.write"));
    let token = body["access_token"].as_str().expect("token").to_owned();

    let resp = client()
        .get(gw.url("/admin-widgets/1"))
        .bearer_auth(&token)
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert!(last(&backend).headers.get("authorization").is_none());

    let resp = client()
        .get(gw.url(&format!("/query-widgets/1?a=1&access_token={token}&b=2")))
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    let seen = last(&backend);
    assert_eq!(seen.uri, "/query-widgets/1?a=1&b=2");
    let line = log_lines(&gw, "/query-widgets/1").pop().expect("logged");
    assert_eq!(
        line["credentials_places"],
        serde_json::json!(["query access_token"])
    );
}
