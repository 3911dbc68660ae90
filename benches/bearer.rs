//! `require_bearer`: what a call costs once its token is in the verified-token cache (the
//! common case), and the first sight of a token (signature check and the store read its
//! prefetch awaits), beside the primitives: ES256 verification and SHA-256 of the token.
//! Each iteration is what the proxy does per request: the step's prefetch (awaited when
//! there is work), then the step.
//!
//! `cargo bench -p portcullis-benches --bench bearer`

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::oauth::keys::{SigningKey, SigningKeys};
use portcullis::oauth::live::LiveTokens;
use portcullis::oauth::resolver::LocalResolver;
use portcullis::oauth::{Client, Grant, TokenService, UsagePolicy, GRANT_CLIENT_CREDENTIALS};
use portcullis::store::{StateStore, TokenFormat};
use portcullis_assertions::bearer::{BearerVars, RequireBearer, ScopeMatch};
use portcullis_assertions::{Assertion, Exchange, Request, VarRegistry};
use sha2::{Digest, Sha256};

fn service(store: StateStore) -> Arc<TokenService> {
    let pem = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/oauth/gateway-es256-2026a.pem"),
    )
    .expect("key");
    let key = SigningKey::from_pem("bench", jsonwebtoken::Algorithm::ES256, &pem).expect("key");
    let mut clients = HashMap::new();
    clients.insert(
        "bench".to_owned(),
        Client {
            id: "bench".into(),
            secret_sha256: [0; 32],
            grants: vec![GRANT_CLIENT_CREDENTIALS.into()],
            scopes: vec!["widgets.read".into()],
            token_format: TokenFormat::Jwt,
            refresh_tokens: false,
            introspect_any: false,
        },
    );
    Arc::new(TokenService {
        issuer: "https://gw.bench".into(),
        token_endpoint: "https://gw.bench/oauth2/token".into(),
        audience: "https://gw.bench".into(),
        access_ttl: 3600,
        refresh_ttl: 3600,
        keys: SigningKeys::new(vec![key]).expect("ring"),
        clients,
        trusted: Vec::new(),
        saml_trusted: Vec::new(),
        store,
        live: Arc::new(LiveTokens::default()),
        usage: UsagePolicy::default(),
        metadata_json: Vec::new(),
    })
}

fn token(runtime: &tokio::runtime::Runtime, ts: &TokenService, format: TokenFormat) -> String {
    runtime
        .block_on(ts.issue(&Grant {
            client_id: "bench".into(),
            subject: "bench".into(),
            scope: "widgets.read".into(),
            grant_type: GRANT_CLIENT_CREDENTIALS,
            format,
            refresh: false,
            family_id: None,
            previous_refresh: None,
            source: None,
            once: None,
        }))
        .expect("issue")
        .access_token
}

fn step(ts: &Arc<TokenService>, registry: &mut VarRegistry) -> RequireBearer {
    let vars = BearerVars {
        client_id: registry.define("client.id"),
        subject: registry.define("token.sub"),
        scope: registry.define("token.scope"),
    };
    RequireBearer::new(
        "bench",
        vec!["widgets.read".into()],
        ScopeMatch::All,
        false,
        Arc::new(LocalResolver {
            service: ts.clone(),
        }),
        vars,
    )
    .expect("step")
}

fn request(token: &str) -> http::request::Parts {
    http::Request::builder()
        .uri("/widgets/7")
        .header("host", "api.example.com")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .expect("request")
        .into_parts()
        .0
}

/// Which call a bench makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    /// As the proxy calls for a token it verified before: the prefetch check (no work),
    /// then the step.
    Cached,
    /// The step alone, without the prefetch check: what that check costs per request.
    CachedStepAlone,
    /// After a revocation elsewhere: signature and store read again (the prefetch work).
    FirstSight,
}

fn bench_step(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    ts: &Arc<TokenService>,
    token: &str,
    call: Call,
) {
    let mut registry = VarRegistry::new();
    let s = step(ts, &mut registry);
    let ip: IpAddr = "10.1.2.3".parse().expect("ip");
    let template = request(token);
    c.bench_function(name, |b| {
        b.iter_batched_ref(
            || template.clone(),
            |parts| {
                if call == Call::FirstSight {
                    // A revocation elsewhere: the next call checks signature and store again.
                    ts.live.revoked();
                }
                if call != Call::CachedStepAlone {
                    if let Some(work) = s.prefetch(&*parts) {
                        runtime.block_on(work);
                    }
                }
                let mut x = Exchange::new(registry.len(), ip, ip);
                let v = s.on_request(
                    &mut Request {
                        head: parts,
                        body: None,
                    },
                    &mut x,
                );
                assert!(v.is_continue());
                black_box(v)
            },
            criterion::BatchSize::SmallInput,
        );
    });
    // Keep the usage aggregate from growing across benchmarks.
    let _ = ts.live.drain();
}

fn bearer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("runtime");
    let memory = service(StateStore::memory());
    let jwt = token(&runtime, &memory, TokenFormat::Jwt);
    let opaque = token(&runtime, &memory, TokenFormat::Opaque);
    bench_step(
        c,
        &runtime,
        "require_bearer JWT, cached",
        &memory,
        &jwt,
        Call::Cached,
    );
    bench_step(
        c,
        &runtime,
        "require_bearer opaque, cached",
        &memory,
        &opaque,
        Call::Cached,
    );
    bench_step(
        c,
        &runtime,
        "require_bearer JWT, cached, step alone (no prefetch check)",
        &memory,
        &jwt,
        Call::CachedStepAlone,
    );
    bench_step(
        c,
        &runtime,
        "require_bearer JWT, first sight (ES256 + memory store)",
        &memory,
        &jwt,
        Call::FirstSight,
    );

    let dir = tempfile::tempdir().expect("dir");
    let sqlite = service(StateStore::from_backend(
        Arc::new(
            portcullis::store::sqlite::SqliteStore::open(&dir.path().join("bench.db")).expect("db"),
        ),
        "bench",
    ));
    let jwt_s = token(&runtime, &sqlite, TokenFormat::Jwt);
    let opaque_s = token(&runtime, &sqlite, TokenFormat::Opaque);
    bench_step(
        c,
        &runtime,
        "require_bearer JWT, first sight (ES256 + SQLite read)",
        &sqlite,
        &jwt_s,
        Call::FirstSight,
    );
    bench_step(
        c,
        &runtime,
        "require_bearer opaque, first sight (SQLite read)",
        &sqlite,
        &opaque_s,
        Call::FirstSight,
    );

    // Floors.
    let key = memory.keys.active();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["https://gw.bench"]);
    c.bench_function("floor: ES256 JWT verification (jsonwebtoken)", |b| {
        b.iter(|| {
            black_box(
                jsonwebtoken::decode::<serde_json::Value>(black_box(&jwt), &key.decoding, &v)
                    .expect("valid"),
            )
        });
    });
    c.bench_function("floor: SHA-256 of the token", |b| {
        b.iter(|| black_box(Sha256::digest(black_box(jwt.as_bytes()))));
    });
    c.bench_function("token endpoint: issue a JWT (memory store)", |b| {
        b.iter(|| black_box(token(&runtime, &memory, TokenFormat::Jwt)));
    });
}

criterion_group!(benches, bearer);
criterion_main!(benches);
