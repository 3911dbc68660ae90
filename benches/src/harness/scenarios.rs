//! What is measured: the systems (the backend direct, nginx, HAProxy, Praxis, a bare
//! Pingora proxy, Portcullis) and Portcullis's scenario policies, with the configuration
//! each needs and the credentials the load generator must present.

use std::path::Path;

/// Body the backend answers at `/`.
pub const SMALL_BODY_BYTES: usize = 75;

/// A Portcullis scenario: a policy and the request wrk sends.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// The path wrk requests (`/` 75 bytes, `/16k` a 16 KiB JSON body).
    pub path: &'static str,
    /// What the request must carry.
    pub credential: Credential,
    /// The scenario whose CPU per request this one is compared with (and its target ratio).
    pub baseline: &'static str,
    pub target: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    None,
    ApiKey,
    SigV4,
    /// A fresh SigV4 signature on every request (a unique query per request, signed before
    /// the run), so a replay check passes each one.
    SigV4Unique,
    /// `Authorization: SAML` with a signed P-256 assertion, deflated (signed before the run).
    Saml,
    Jwt,
    Opaque,
}

/// Every Portcullis scenario of this build.
pub const SCENARIOS: &[Scenario] = &[
    Scenario { name: "pass-through", about: "no assertion", path: "/", credential: Credential::None, baseline: "pass-through", target: None },
    Scenario { name: "api-key", about: "require_api_key (1,001 keys) + remove_header", path: "/", credential: Credential::ApiKey, baseline: "pass-through", target: Some(1.15) },
    Scenario { name: "api-key-1m", about: "require_api_key with 1,000,001 keys (a keys file) + remove_header", path: "/", credential: Credential::ApiKey, baseline: "api-key", target: Some(1.05) },
    Scenario { name: "hmac-sigv4", about: "require_hmac aws-sigv4 (GET, pre-signed; replay check off so one request repeats)", path: "/", credential: Credential::SigV4, baseline: "pass-through", target: Some(1.15) },
    Scenario { name: "bearer-jwt", about: "require_bearer, gateway ES256 JWT (verified-token cache)", path: "/", credential: Credential::Jwt, baseline: "pass-through", target: Some(1.15) },
    Scenario { name: "bearer-opaque", about: "require_bearer, opaque token (verified-token cache)", path: "/", credential: Credential::Opaque, baseline: "pass-through", target: None },
    Scenario { name: "pass-through-16k", about: "no assertion, 16 KiB JSON answer", path: "/16k", credential: Credential::None, baseline: "pass-through-16k", target: None },
    Scenario { name: "mask-pan-16k", about: "mask_pan on a 16 KiB JSON answer", path: "/16k", credential: Credential::None, baseline: "pass-through-16k", target: Some(1.4) },
    Scenario { name: "rate-limit-local", about: "rate_limit, 2 limits on ${client.ip} (never reached: the decision's cost)", path: "/", credential: Credential::None, baseline: "pass-through", target: Some(1.05) },
    Scenario { name: "rate-limit-redis", about: "rate_limit, 2 limits on ${client.ip}, scope: cluster (one Redis round trip per request, never reached)", path: "/", credential: Credential::None, baseline: "pass-through", target: Some(1.25) },
    Scenario { name: "bearer-opaque-redis", about: "require_bearer, opaque token, state in Redis (verified-token cache; the revocation channel followed)", path: "/", credential: Credential::Opaque, baseline: "pass-through", target: Some(1.10) },
    Scenario { name: "hmac-sigv4-replay-redis", about: "require_hmac aws-sigv4, a fresh signature per request, replay markers in Redis (one SET NX per request)", path: "/", credential: Credential::SigV4Unique, baseline: "pass-through", target: Some(1.25) },
    Scenario { name: "saml", about: "require_saml, a P-256-signed assertion deflated in the header (verified-assertion cache)", path: "/", credential: Credential::Saml, baseline: "pass-through", target: Some(1.15) },
    Scenario { name: "ip-identity", about: "require_ip_identity, one active user (the client's address) in a SQLite identity table (local cache; idle touches written behind)", path: "/", credential: Credential::None, baseline: "pass-through", target: Some(1.05) },
    Scenario { name: "services-1", about: "pass-through to one path-prefix service with strip_prefix (the baseline of the services-N rows)", path: "/svc-0", credential: Credential::None, baseline: "pass-through", target: None },
    Scenario { name: "services-100", about: "pass-through to the last of 100 path-prefix services (strip_prefix)", path: "/svc-99", credential: Credential::None, baseline: "services-1", target: Some(1.05) },
    Scenario { name: "services-10000", about: "pass-through to the last of 10,000 path-prefix services (strip_prefix)", path: "/svc-9999", credential: Credential::None, baseline: "services-1", target: Some(1.05) },
    Scenario { name: "pool-3", about: "pass-through to a pool of 3 targets (round robin, health check every 5 s, passive ejection, retry budget)", path: "/", credential: Credential::None, baseline: "pass-through", target: Some(1.05) },
    Scenario { name: "pool-3-least-connections", about: "the same pool, least connections", path: "/", credential: Credential::None, baseline: "pass-through", target: Some(1.05) },
    Scenario { name: "full-pipeline", about: "deny_ip + require_bearer (JWT) + 2 set_header + remove_header; response remove_header + set_header + mask_pan", path: "/", credential: Credential::Jwt, baseline: "pass-through", target: Some(1.6) },
];

/// Scenarios the benchmark issue names whose assertions this build does not have yet.
pub const NOT_BUILT: &[(&str, &str)] = &[];

/// The keys file of the api-key-1m scenario, beside the policy.
pub const API_KEYS_FILE: &str = "api-keys-1m.txt";

/// A keys file of `count` keys (`other-key-N` of client `other-N`), none of them the
/// scenario's own key.
#[must_use]
pub fn api_keys_file(count: usize) -> String {
    let mut out = String::with_capacity(count * 80);
    for index in 0..count {
        out.push_str(&sha256_hex(&format!("other-key-{index}")));
        out.push_str(&format!(" other-{index}\n"));
    }
    out
}

/// The secret behind the API key and the SigV4 key the scenarios use.
pub const API_KEY: &str = "bench-key-0001";
pub const HMAC_SECRET: &str = "bench-hmac-secret";
pub const CLIENT_SECRET: &str = "bench-client-secret";
/// Who issues the saml scenario's assertion, and for whom.
pub const SAML_ISSUER: &str = "https://idp.bench";
pub const SAML_AUDIENCE: &str = "https://gateway.bench";

/// The saml scenario's `Authorization` value: an assertion signed with the fixture P-256 key,
/// valid for an hour from now, deflated and base64-encoded.
///
/// # Errors
/// The fixture key cannot be read, or signing failed.
pub fn saml_authorization(root: &Path) -> Result<String, String> {
    use base64::Engine as _;
    use portcullis_assertions::saml::{sign::sign_assertion, AssertionSpec, SamlSigningKey};
    use std::io::Write as _;
    let pem = std::fs::read_to_string(root.join("fixtures/saml/xmlsec1/p256.key.pem"))
        .map_err(|e| format!("saml key: {e}"))?;
    let key = SamlSigningKey::from_pem(&pem).map_err(|e| e.to_string())?;
    let spec = AssertionSpec {
        issuer: SAML_ISSUER.into(),
        subject: "bench@example.com".into(),
        name_id_format: None,
        audience: SAML_AUDIENCE.into(),
        recipient: None,
        session_index: Some("_bench".into()),
        attributes: vec![("groups".into(), vec!["bench".into(), "load".into()])],
        issued_at: jiff::Timestamp::now(),
        valid_for: std::time::Duration::from_secs(3600),
        one_time_use: false,
    };
    let xml = sign_assertion(&spec, &key, None).map_err(|e| e.to_string())?;
    let mut deflater =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflater
        .write_all(xml.as_bytes())
        .map_err(|e| e.to_string())?;
    let deflated = deflater.finish().map_err(|e| e.to_string())?;
    Ok(format!(
        "SAML {}",
        base64::engine::general_purpose::STANDARD.encode(deflated)
    ))
}

/// The ip-identity scenario's state file, beside its policy.
pub const IP_IDENTITY_DB: &str = "ip-identity.db";

/// Registers the load generator's address (127.0.0.1) as the ip-identity scenario's one
/// active user, for a day, in the state file the gateway will open.
///
/// # Errors
/// The file cannot be opened or written.
pub fn register_bench_identity(db: &Path) -> Result<(), String> {
    use portcullis::store::{now_secs, wait, IdentityEntry, StoreUrl};
    let store = StoreUrl::Sqlite(db.to_path_buf())
        .open()
        .map_err(|e| e.to_string())?;
    let now = now_secs();
    let entry = IdentityEntry {
        ip: std::net::IpAddr::from([127, 0, 0, 1]),
        username: "bench-user".to_owned(),
        groups: vec!["bench".to_owned()],
        interface: Some("wifi".to_owned()),
        session_timeout_secs: Some(86_400),
        idle_timeout_secs: Some(86_400),
        expires_at: now + 86_400,
        session_ends_at: now + 86_400,
    };
    wait(store.identities().put_identity(&entry)).map_err(|e| e.to_string())
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a scenario keeps its state in the Redis the run starts.
#[must_use]
pub fn uses_redis(s: &Scenario) -> bool {
    s.name.ends_with("-redis")
}

/// The Portcullis policy of a scenario.
#[must_use]
pub fn portcullis_policy(
    s: &Scenario,
    listen: u16,
    admin: u16,
    backend: u16,
    redis: u16,
    root: &Path,
) -> String {
    let state = if uses_redis(s) {
        format!("redis://127.0.0.1:{redis}")
    } else if s.name == "ip-identity" {
        format!("sqlite://{IP_IDENTITY_DB}")
    } else {
        "memory".to_owned()
    };
    // Every wrk connection comes from 127.0.0.1: the per-address cap (256 by default) would
    // refuse a run with more connections than that, so both caps are raised.
    let mut out = format!(
        "listen: 127.0.0.1:{listen}\nworkers: 1\naccess_log: off\nstate: {state}\n\
         client_limits: {{max_connections: 10000, max_connections_per_ip: 10000}}\n\
         admin: {{listen: 127.0.0.1:{admin}, token: admin}}\n\
         secrets:\n  admin: {{file: admin-token}}\n  hmac: {{file: hmac-secret}}\n"
    );
    if matches!(s.credential, Credential::Jwt | Credential::Opaque) {
        let digest = sha256_hex(CLIENT_SECRET);
        out.push_str(&format!(
            "token_service:\n  issuer: https://gateway.bench\n  signing_keys: [{{kid: bench, file: {}}}]\n  clients:\n    - {{id: jwt-client, secret_sha256: {digest}, scopes: [widgets.read]}}\n    - {{id: opaque-client, secret_sha256: {digest}, scopes: [widgets.read], token_format: opaque}}\n",
            root.join("fixtures/oauth/gateway-es256-2026a.pem").display()
        ));
    }
    if matches!(s.credential, Credential::SigV4 | Credential::SigV4Unique) {
        out.push_str(
            "keys:\n  partners: [{access_key: AKIDBENCH, client: bench, secrets: [hmac]}]\n",
        );
    }
    if s.name == "ip-identity" {
        out.push_str("identity_api: {allow_from: [127.0.0.1/32]}\n");
    }
    let upstream = match s.name.strip_prefix("pool-3") {
        // Three targets: the backend answers on three loopback addresses.
        Some(mode) => format!(
            "\n      targets: [\"http://127.0.0.1:{backend}\", \"http://127.0.0.2:{backend}\", \"http://127.0.0.3:{backend}\"]\n      balance: {}\n      health_check: {{path: /, interval: 5s}}",
            if mode.is_empty() { "round_robin" } else { "least_connections" }
        ),
        None => format!("http://127.0.0.1:{backend}"),
    };
    out.push_str(&format!(
        "services:\n  - name: {}\n    upstream: {upstream}\n",
        s.name
    ));
    let steps = match s.name {
        "api-key" => {
            let mut keys = format!(
                "      - require_api_key:\n          keys:\n            - {{client: bench, sha256: {}}}\n",
                sha256_hex(API_KEY)
            );
            for i in 0..1000 {
                keys.push_str(&format!(
                    "            - {{client: other-{i}, sha256: {}}}\n",
                    sha256_hex(&format!("other-key-{i}"))
                ));
            }
            format!("    request:\n{keys}      - remove_header: [X-Api-Key]\n")
        }
        "api-key-1m" => format!(
            "    request:\n      - require_api_key:\n          keys_file: {API_KEYS_FILE}\n          keys:\n            - {{client: bench, sha256: {}}}\n      - remove_header: [X-Api-Key]\n",
            sha256_hex(API_KEY)
        ),
        "hmac-sigv4" => "    request:\n      - require_hmac: {scheme: aws-sigv4, keys: partners, region: eu-west-1, service: bench, replay_protection: false, max_skew: 15m}\n".to_owned(),
        "hmac-sigv4-replay-redis" => "    request:\n      - require_hmac: {scheme: aws-sigv4, keys: partners, region: eu-west-1, service: bench, replay_scope: cluster, max_skew: 15m}\n".to_owned(),
        "saml" => format!(
            "    request:\n      - require_saml: {{certificates: {}, issuers: [\"{SAML_ISSUER}\"], audience: \"{SAML_AUDIENCE}\"}}\n",
            root.join("fixtures/saml/xmlsec1/p256.cert.pem").display()
        ),
        "bearer-jwt" | "bearer-opaque" | "bearer-opaque-redis" => "    request:\n      - require_bearer: {scopes: [widgets.read]}\n".to_owned(),
        "ip-identity" => "    request:\n      - require_ip_identity: {}\n".to_owned(),
        "mask-pan-16k" => "    response:\n      - mask_pan: {}\n".to_owned(),
        "rate-limit-local" => "    request:\n      - rate_limit:\n          key: \"${client.ip}\"\n          limits:\n            - {name: per-second, rate: 1000000000/s}\n            - {name: per-hour, rate: 1000000000/h}\n".to_owned(),
        "rate-limit-redis" => "    request:\n      - rate_limit:\n          key: \"${client.ip}\"\n          scope: cluster\n          limits:\n            - {name: per-second, rate: 1000000000/s}\n            - {name: per-hour, rate: 1000000000/h}\n".to_owned(),
        "full-pipeline" => "    request:\n      - deny_ip: [192.0.2.0/24, 198.51.100.0/24]\n      - require_bearer: {scopes: [widgets.read]}\n      - set_header: {name: X-Client-Id, value: \"${client.id}\"}\n      - set_header: {name: X-Token-Scope, value: \"${token.scope}\"}\n      - remove_header: [Authorization]\n    response:\n      - remove_header: [Server]\n      - set_header: {name: X-Served-By, value: portcullis}\n      - mask_pan: {}\n".to_owned(),
        _ => String::new(),
    };
    out.push_str(&steps);
    if let Some(count) = s
        .name
        .strip_prefix("services-")
        .and_then(|n| n.parse::<usize>().ok())
    {
        // The scenario's own service is the catch-all; the request goes to the last of these.
        for i in 0..count {
            out.push_str(&format!(
                "  - name: svc-{i}\n    match: {{path: /svc-{i}}}\n    upstream: {{url: http://127.0.0.1:{backend}, strip_prefix: true}}\n"
            ));
        }
    }
    out
}

/// nginx serving the fixed bodies (the backend every system proxies to).
#[must_use]
pub fn nginx_backend(port: u16, work: &Path) -> String {
    let body = "0".repeat(SMALL_BODY_BYTES);
    format!(
        "worker_processes 1; daemon off; pid {w}/backend.pid; error_log {w}/backend.err;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off;\n  server {{ listen 127.0.0.1:{port}; listen 127.0.0.2:{port}; listen 127.0.0.3:{port}; keepalive_requests 1000000;\n\
             location = /16k {{ default_type application/json; alias {w}/16k.json; }}\n\
             location / {{ default_type text/plain; return 200 \"{body}\"; }} }} }}\n",
        w = work.display()
    )
}

/// nginx as a plain reverse proxy with upstream keep-alive.
#[must_use]
pub fn nginx_proxy(port: u16, backend: u16, work: &Path) -> String {
    format!(
        "worker_processes 1; daemon off; pid {w}/proxy.pid; error_log {w}/proxy.err;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off;\n  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}\n\
           server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;\n\
             location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n",
        w = work.display()
    )
}

/// Caddy as a plain reverse proxy: no admin endpoint, no automatic HTTPS, no access log
/// (Caddy logs none unless asked), keep-alive to the backend (its default).
#[must_use]
pub fn caddy(port: u16, backend: u16) -> String {
    format!(
        "{{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}}\n\nhttp://127.0.0.1:{port} {{\n\treverse_proxy 127.0.0.1:{backend}\n}}\n"
    )
}

/// HAProxy as a plain reverse proxy: one thread, keep-alive both sides.
#[must_use]
pub fn haproxy(port: u16, backend: u16) -> String {
    format!(
        "global\n  nbthread 1\n  maxconn 4096\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n  http-reuse always\n\
         frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n\
         backend b\n  server s1 127.0.0.1:{backend}\n"
    )
}

/// Praxis (a Pingora-based YAML proxy) forwarding everything.
#[must_use]
pub fn praxis(port: u16, backend: u16) -> String {
    // Line by line: a `\` line continuation would eat the indentation YAML needs.
    [
        // Praxis refuses loopback endpoints unless told the backend is meant to be local, and
        // refuses to run as root (the harness runs as whoever starts it; CI is root).
        "insecure_options:".to_owned(),
        "  allow_private_endpoints: true".to_owned(),
        "  allow_root: true".to_owned(),
        "listeners:".to_owned(),
        "  - name: default".to_owned(),
        format!("    address: \"127.0.0.1:{port}\""),
        "    filter_chains: [main]".to_owned(),
        "filter_chains:".to_owned(),
        "  - name: main".to_owned(),
        "    filters:".to_owned(),
        "      - filter: router".to_owned(),
        "        routes:".to_owned(),
        "          - path_prefix: \"/\"".to_owned(),
        "            cluster: backend".to_owned(),
        "      - filter: load_balancer".to_owned(),
        "        clusters:".to_owned(),
        "          - name: backend".to_owned(),
        format!("            endpoints: [\"127.0.0.1:{backend}\"]"),
        String::new(),
    ]
    .join("\n")
}

/// A 16 KiB JSON body of order lines: digits, dates and amounts, no card numbers.
#[must_use]
pub fn json_16k() -> String {
    let items: Vec<String> = (0..196)
        .map(|i| {
            format!(
                "{{\"id\": {}, \"sku\": \"W-{i:05}\", \"qty\": {}, \"price\": \"{}.99\", \"date\": \"2026-11-23\"}}",
                100_000 + i,
                i % 7,
                i % 90
            )
        })
        .collect();
    format!("{{\"items\": [{}]}}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_a_known_baseline_and_a_policy() {
        for s in SCENARIOS {
            assert!(SCENARIOS.iter().any(|b| b.name == s.baseline), "{}", s.name);
            let p = portcullis_policy(s, 1, 2, 3, 4, Path::new("/repo"));
            assert!(p.contains(&format!("name: {}", s.name)));
        }
        let full = SCENARIOS
            .iter()
            .find(|s| s.name == "full-pipeline")
            .expect("full");
        assert!(portcullis_policy(full, 1, 2, 3, 4, Path::new("/r")).contains("mask_pan"));
        assert!(json_16k().len() > 15_000 && json_16k().len() < 17_000);
    }

    /// The ip-identity scenario's one user is in the file the gateway opens, for the
    /// address wrk connects from.
    #[test]
    fn the_ip_identity_user_is_registered_for_the_load_generator() {
        use portcullis::store::{now_secs, wait, StoreUrl};
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join(IP_IDENTITY_DB);
        register_bench_identity(&db).expect("registered");
        let store = StoreUrl::Sqlite(db).open().expect("open");
        let found = wait(
            store
                .identities()
                .identity(std::net::IpAddr::from([127, 0, 0, 1]), now_secs()),
        )
        .expect("read");
        assert_eq!(found.map(|e| e.username).as_deref(), Some("bench-user"));
    }
}
