//! What credential forwarding control costs a request: the caller's credential headers
//! taken before the pipeline, the decision after it and the stripping of the head that goes
//! upstream, for a service that checked an API key (the default strip), beside a service
//! that forwards under a CIDR condition, and the floor: cloning the head, which Pingora does
//! for every upstream request anyway.
//!
//! `cargo bench -p portcullis-benches --bench credentials`

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderName;
use pingora::http::RequestHeader;
use portcullis::credentials::{Condition, CredentialPolicy, Mode, Place, Rule, Test};
use portcullis::proxy::PingoraRequestView;
use portcullis_assertions::ip::IpList;
use portcullis_assertions::Exchange;

/// The places of a service whose `require_api_key` uses the defaults.
fn api_key_places() -> Vec<Place> {
    let mut places = vec![
        Place::Header(http::header::AUTHORIZATION),
        Place::Header(http::header::PROXY_AUTHORIZATION),
        Place::Header(HeaderName::from_static("x-api-key")),
    ];
    for name in ["api_key", "apikey", "api-key", "x-api-key"] {
        places.push(Place::QueryParam(name.to_owned()));
    }
    places
}

fn head() -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/widgets/7?color=red&size=2", None).expect("head");
    for (name, value) in [
        ("host", "api.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
        ("x-api-key", "demo-key-123"),
        (
            "authorization",
            "Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl",
        ),
        ("cookie", "theme=dark; lang=en"),
    ] {
        req.append_header(name, value).expect("header");
    }
    req
}

fn run(policy: &CredentialPolicy, template: &RequestHeader, x: &Exchange) -> RequestHeader {
    let mut up = template.clone();
    let caller = policy.capture(&PingoraRequestView(&up));
    let plan = policy.decide(caller, &PingoraRequestView(&up), x);
    let outcome = plan.apply(policy, &mut up).expect("applies");
    black_box(outcome);
    up
}

fn credentials(c: &mut Criterion) {
    let ip: IpAddr = "10.1.2.3".parse().expect("ip");
    let x = Exchange::new(4, ip, ip);
    let template = head();

    let strip = CredentialPolicy::new(
        Mode::Strip(Rule::new("authenticated", "bench")),
        api_key_places(),
    );
    c.bench_function("credentials: strip (API-key service, default)", |b| {
        b.iter(|| black_box(run(&strip, black_box(&template), &x)));
    });

    let forward = CredentialPolicy::new(
        Mode::Forward {
            conditions: vec![Condition {
                rule: Rule::new("when.client_cidrs", "bench"),
                test: Test::ClientCidr(IpList::new(vec!["10.0.0.0/8".parse().expect("net")])),
            }],
            rule: Rule::new("forward", "bench"),
        },
        api_key_places(),
    );
    c.bench_function("credentials: forward (one CIDR condition holds)", |b| {
        b.iter(|| black_box(run(&forward, black_box(&template), &x)));
    });

    let pass = CredentialPolicy::default();
    c.bench_function("credentials: pass through (nothing authenticates)", |b| {
        b.iter(|| black_box(run(&pass, black_box(&template), &x)));
    });

    c.bench_function("floor: clone of the request head", |b| {
        b.iter(|| black_box(black_box(&template).clone()));
    });
}

criterion_group!(benches, credentials);
criterion_main!(benches);
