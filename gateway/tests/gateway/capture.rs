//! The access log's capture mode through the real gateway: each line holds the request as the
//! client sent it, credentials as keyed hashes and card numbers masked, and `replay` reads the
//! log back (resolving the hashes it is given the values of).

use portcullis::capture::CaptureKey;
use portcullis::replay::{replay, ReplayPolicy, Resolver};

use crate::common::{client, Backend, TestGateway, ADMIN_TOKEN};

const PAN: &str = "4111111111111111";

const SERVICES: &str = r#"capture:
  hash_key: admin_token
services:
  - name: orders
    match: {path: /orders}
    upstream: {backend}
    request:
      - require_api_key:
          keys:
            - client: acme-mobile
              sha256: a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873
      - validate_json: {}
      - remove_header: [X-Api-Key]
"#;

#[test]
fn captured_requests_hide_credentials_and_card_numbers_and_replay_from_the_log() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let body = format!("{{\"card\":\"{PAN}\",\"qty\":1}}");
    let resp = client()
        .post(gw.url(&format!(
            "/orders/new?access_token=query-secret-1&note={PAN}"
        )))
        .header("X-Api-Key", "demo-key-123")
        .header("Cookie", "session=cookie-secret-1; theme=dark")
        .header("Authorization", "Bearer bearer-secret-1")
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    let refused = client()
        .post(gw.url("/orders/new"))
        .header("X-Api-Key", "a-wrong-key")
        .body("{}")
        .send()
        .expect("send");
    assert_eq!(refused.status(), 401);

    let log = gw.access_log();
    for secret in [
        "demo-key-123",
        "query-secret-1",
        "cookie-secret-1",
        "bearer-secret-1",
        PAN,
        "a-wrong-key",
    ] {
        assert!(!log.contains(secret), "{secret} in the access log:\n{log}");
    }
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    let request = &lines[0]["request"];
    let key = CaptureKey::new(ADMIN_TOKEN.as_bytes());
    let headers: Vec<(String, String)> =
        serde_json::from_value(request["headers"].clone()).expect("headers");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // Equal values hash alike under the capture key: the operator can match them.
    assert_eq!(header("x-api-key"), key.hash("demo-key-123"));
    assert_eq!(
        header("authorization"),
        format!("Bearer {}", key.hash("bearer-secret-1"))
    );
    assert!(header("cookie").contains("theme="), "{}", header("cookie"));
    assert!(request["target"]
        .as_str()
        .expect("target")
        .contains("access_token=portcullis-hmac:"));
    assert!(
        request["body"].as_str().expect("body").contains("1111"),
        "{request}"
    );
    assert_eq!(request["service"], "orders");
    assert_eq!(request["status"], 200);
    assert_eq!(lines[1]["request"]["status"], 401);

    // Replayed from the log through the same policy: nothing changes, and with the key's
    // value given back the first request authenticates again.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let old = ReplayPolicy::load(&gw.config).expect("policy");
    let new = ReplayPolicy::load(&gw.config).expect("policy");
    // Every cookie's value is hashed (which ones are sessions is not known), `theme` too.
    let known = [
        "demo-key-123",
        "bearer-secret-1",
        "cookie-secret-1",
        "dark",
        "query-secret-1",
    ];
    let known: Vec<String> = known.iter().map(|v| (*v).to_owned()).collect();
    let resolver = Resolver::new(&key, &known);
    let report = runtime.block_on(replay(&old, &new, &log, &resolver));
    assert_eq!(report.requests, 2, "{}", report.text());
    assert_eq!(report.changed, 0, "{}", report.text());
    assert_eq!(
        report.unresolved,
        1,
        "the wrong key stays a hash: {}",
        report.text()
    );
    assert!(report.malformed.is_empty(), "{:?}", report.malformed);
}
