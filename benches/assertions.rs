//! Per-assertion cost, each compiled once and run over a prepared request, beside the raw
//! primitive it rests on (the floor).
//!
//! `cargo bench -p portcullis-benches`

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::HeaderName;
use portcullis_assertions::api_key::{self, ApiClient, RequireApiKey, DEFAULT_QUERY_PARAMS};
use portcullis_assertions::composite::Any;
use portcullis_assertions::headers::{RemoveHeader, SetHeader};
use portcullis_assertions::ip::{AllowIp, IpList};
use portcullis_assertions::json_body::ValidateJson;
use portcullis_assertions::shadow::Shadow;
use portcullis_assertions::template::Template;
use portcullis_assertions::{Assertion, Exchange, Request, VarRegistry};
use sha2::{Digest, Sha256};

fn request() -> http::request::Parts {
    let (parts, ()) = http::Request::builder()
        .method("GET")
        .uri("/widgets/7?color=red")
        .header("host", "api.example.com")
        .header("user-agent", "bench/1.0")
        .header("accept", "application/json")
        .header("x-api-key", "demo-key-123")
        .body(())
        .expect("request")
        .into_parts();
    parts
}

fn run(
    c: &mut Criterion,
    name: &str,
    a: &dyn Assertion,
    registry: &VarRegistry,
    body: Option<&[u8]>,
) {
    let ip: IpAddr = "10.20.30.40".parse().expect("ip");
    let template = request();
    c.bench_function(name, |b| {
        b.iter_batched_ref(
            || template.clone(),
            |parts| {
                let mut x = Exchange::new(registry.len(), ip, ip);
                let verdict = a.on_request(&mut Request { head: parts, body }, &mut x);
                black_box(verdict)
            },
            criterion::BatchSize::SmallInput,
        );
    });
}

fn assertions(c: &mut Criterion) {
    let mut registry = VarRegistry::new();
    let tier = registry.define("client.tier");
    let mut keys = HashMap::new();
    for i in 0..1000 {
        let client = Arc::new(ApiClient {
            id: Arc::from(format!("client-{i}").as_str()),
            attributes: vec![(tier, Arc::from("gold"))],
        });
        keys.insert(api_key::digest(format!("key-{i}").as_bytes()), client);
    }
    keys.insert(
        api_key::digest(b"demo-key-123"),
        Arc::new(ApiClient {
            id: Arc::from("acme"),
            attributes: vec![],
        }),
    );
    let client_id = registry.define("client.id");
    let api = RequireApiKey::new(
        HeaderName::from_static("x-api-key"),
        None,
        keys,
        DEFAULT_QUERY_PARAMS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        client_id,
    );
    run(c, "require_api_key (1001 keys)", &api, &registry, None);
    // The same step in shadow mode: run on a copy of the head, the exchange restored.
    let shadowed = Shadow::new(Box::new(api), Arc::from("request[0].require_api_key"), 0);
    run(
        c,
        "require_api_key (1001 keys), shadowed",
        &shadowed,
        &registry,
        None,
    );

    let nets = (0..10)
        .map(|i| format!("10.{i}.0.0/16").parse().expect("cidr"))
        .collect();
    let allow = AllowIp::new(IpList::new(nets));
    run(c, "allow_ip (10 CIDRs)", &allow, &registry, None);
    let deny = portcullis_assertions::ip::DenyIp::new(IpList::new(
        (0..10)
            .map(|i| format!("192.0.{i}.0/24").parse().expect("cidr"))
            .collect(),
    ));
    run(c, "deny_ip (10 CIDRs)", &deny, &registry, None);

    let set = SetHeader::new(
        HeaderName::from_static("x-client"),
        Template::parse(
            "${client.id} via ${request.method} ${request.path}",
            &registry,
        )
        .expect("template"),
    );
    run(c, "set_header (template)", &set, &registry, None);
    let set_const = SetHeader::new(
        HeaderName::from_static("x-gateway"),
        Template::parse("portcullis", &registry).expect("template"),
    );
    run(c, "set_header (constant)", &set_const, &registry, None);
    let remove = RemoveHeader::new(vec![HeaderName::from_static("x-api-key")]);
    run(c, "remove_header", &remove, &registry, None);

    let any = Any::new(vec![
        Box::new(AllowIp::new(IpList::new(vec!["192.168.0.0/16"
            .parse()
            .expect("cidr")]))),
        Box::new(AllowIp::new(IpList::new(vec!["10.0.0.0/8"
            .parse()
            .expect("cidr")]))),
    ])
    .expect("head steps only");
    run(c, "any (second branch passes)", &any, &registry, None);

    let body = serde_json::to_vec(&serde_json::json!({
        "items": (0..300).map(|i| serde_json::json!({"id": i, "name": "widget", "tags": ["a", "b"]})).collect::<Vec<_>>()
    }))
    .expect("json");
    let json = ValidateJson::new(32, true);
    let mut group = c.benchmark_group("validate_json");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function(format!("{} bytes", body.len()), |b| {
        let template = request();
        let ip: IpAddr = "10.20.30.40".parse().expect("ip");
        b.iter_batched_ref(
            || template.clone(),
            |parts| {
                let mut x = Exchange::new(registry.len(), ip, ip);
                black_box(json.on_request(
                    &mut Request {
                        head: parts,
                        body: Some(&body),
                    },
                    &mut x,
                ))
            },
            criterion::BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// `require_hmac` with AWS SigV4 over an SDK-shaped request (replay protection off, so the
/// same signed request can be verified again and again), empty and 64 KiB bodies.
fn sigv4(c: &mut Criterion) {
    use portcullis_assertions::hmac::sign::{sign_sigv4, SigV4Params};
    use portcullis_assertions::hmac::{
        FixedClock, HmacKey, KeySet, RequireHmac, Scheme, SecretBytes,
    };
    const NOW: u64 = 1_700_000_000;
    let mut registry = VarRegistry::new();
    let keys = KeySet::new(vec![HmacKey {
        access_key: Arc::from("AKIDPARTNER"),
        client: Arc::from("partner"),
        secrets: vec![SecretBytes(Arc::from(&b"partner-secret"[..]))],
        attributes: vec![],
    }]);
    let step = RequireHmac {
        scheme: Scheme::SigV4 {
            region: "eu-west-1".into(),
            service: "orders".into(),
            allow_presigned: true,
            normalize_path: true,
        },
        keys: Arc::new(keys),
        max_skew: std::time::Duration::from_secs(300),
        replay: portcullis_assertions::hmac::Replay::Off,
        allow_unsigned_payload: false,
        clock: Arc::new(FixedClock::at(NOW)),
        client_id: registry.define("client.id"),
        key_id_var: registry.define("hmac.key_id"),
        sigv4_keys: Default::default(),
    };
    let mut group = c.benchmark_group("require_hmac aws-sigv4");
    for size in [0usize, 64 * 1024] {
        let body = vec![b'x'; size];
        let mut signed = request();
        signed.method = http::Method::POST;
        let p = SigV4Params {
            access_key: "AKIDPARTNER",
            secret: b"partner-secret",
            region: "eu-west-1",
            service: "orders",
            content_sha256_header: false,
            normalize_path: true,
        };
        sign_sigv4(&mut signed, &body, &p, NOW).expect("signs");
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("verify, {size}-byte body"), |b| {
            let ip: IpAddr = "10.20.30.40".parse().expect("ip");
            b.iter_batched_ref(
                || signed.clone(),
                |parts| {
                    let mut x = Exchange::new(registry.len(), ip, ip);
                    let v = step.on_request(
                        &mut Request {
                            head: parts,
                            body: Some(&body),
                        },
                        &mut x,
                    );
                    assert!(v.is_continue());
                    black_box(v)
                },
                criterion::BatchSize::SmallInput,
            );
        });
    }
    group.finish();
    // Outbound: signing the head that goes upstream (sign_hmac, SigV4, empty body).
    let signer = portcullis_assertions::hmac::outbound::SignHmac {
        scheme: portcullis_assertions::hmac::outbound::OutboundScheme::SigV4 {
            region: "eu-west-1".into(),
            service: "billing".into(),
            content_sha256_header: true,
            normalize_path: true,
        },
        access_key: Arc::from("AKIDGATEWAY"),
        secret: SecretBytes(Arc::from(&b"billing-secret"[..])),
        clock: Arc::new(FixedClock::at(NOW)),
    };
    c.bench_function("sign_hmac aws-sigv4 (upstream head, empty body)", |b| {
        let ip: IpAddr = "10.20.30.40".parse().expect("ip");
        let template = request();
        b.iter_batched_ref(
            || template.clone(),
            |parts| {
                let mut x = Exchange::new(registry.len(), ip, ip);
                let v = signer.on_upstream_request(parts, Some(&[]), &mut x);
                assert!(v.is_continue());
                black_box(v)
            },
            criterion::BatchSize::SmallInput,
        );
    });
}

/// The SigV4 signing-key cache on its own: a hit from one thread, a hit of the same key
/// from two threads at once (the contended case; time per lookup per thread), and the
/// derivation a hit saves.
fn sigv4_signing_key_cache(c: &mut Criterion) {
    use portcullis_assertions::hmac::sigv4::{signing_key, Scope};
    use portcullis_assertions::hmac::SigningKeyCache;
    let secret: Arc<[u8]> = Arc::from(&b"partner-secret"[..]);
    let scope = Scope {
        date: "20231114".into(),
        region: "eu-west-1".into(),
        service: "orders".into(),
    };
    let cache = SigningKeyCache::default();
    cache.get(&secret, &scope);
    let mut group = c.benchmark_group("sigv4 signing-key cache");
    group.bench_function("hit, 1 thread", |b| {
        b.iter(|| black_box(cache.get(black_box(&secret), &scope)))
    });
    group.bench_function("hit of one key, 2 threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|threads| {
                for _ in 0..2 {
                    threads.spawn(|| {
                        for _ in 0..iters {
                            black_box(cache.get(black_box(&secret), &scope));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.bench_function("floor: derivation (4 HMACs)", |b| {
        b.iter(|| black_box(signing_key(black_box(&secret), &scope)))
    });
    group.finish();
}

/// The floors: what the assertions above cannot go below.
fn floors(c: &mut Criterion) {
    c.bench_function("floor: sha256 of a 12-byte key", |b| {
        b.iter(|| black_box(Sha256::digest(black_box(b"demo-key-123"))));
    });
    let template = request();
    c.bench_function("floor: clone of the request head", |b| {
        b.iter(|| black_box(template.clone()))
    });
    c.bench_function("floor: HMAC-SHA256 of a 200-byte string to sign", |b| {
        use hmac::{Hmac, Mac};
        let data = [b'a'; 200];
        b.iter(|| {
            let mut mac =
                <Hmac<Sha256> as Mac>::new_from_slice(b"a signing key of 32 bytes.......")
                    .expect("key");
            mac.update(black_box(&data));
            black_box(mac.finalize().into_bytes())
        });
    });
    let big = vec![b'x'; 64 * 1024];
    let mut group = c.benchmark_group("floor");
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("sha256 of 64 KiB", |b| {
        b.iter(|| black_box(Sha256::digest(black_box(&big))))
    });
    group.finish();
}

criterion_group!(benches, assertions, sigv4, sigv4_signing_key_cache, floors);
criterion_main!(benches);
