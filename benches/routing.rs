//! What routing and choosing an upstream target cost a request, and how that grows with the
//! work: the router with 1, 100 and 10,000 path-prefix services (a request for the last
//! one), with host groups; and a pool's choice of target by each balancing mode, against a
//! single-target pool.
//!
//! `cargo bench -p portcullis-benches --bench routing`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use portcullis::path::PathCase;
use portcullis::router::{Conditions, Entry, Pattern, RouteRequest, Router};
use portcullis::upstream::{Balance, Choice, Passive, Pool, PoolSettings, RetryPolicy, Target};
use portcullis_assertions::template::Template;
use portcullis_assertions::VarRegistry;

/// `count` services at `/svcN/api`, each also under its own host `svcN.example.com`.
fn router(count: usize, hosts: bool) -> Router {
    let mut router = Router::default();
    for service in 0..count {
        let pattern = Pattern::parse(&format!("/svc{service}/api"), false, PathCase::Sensitive)
            .expect("pattern");
        let entry = Entry {
            service,
            pattern,
            conditions: Conditions {
                methods: None,
                headers: Box::new([]),
                query: Box::new([]),
            },
            params: Box::new([]),
        };
        let host = format!("svc{service}.example.com");
        router.add(hosts.then_some(host.as_str()), entry);
    }
    router.shrink_to_fit();
    router
}

fn bench_router(c: &mut Criterion) {
    let headers = HeaderMap::new();
    for (count, hosts) in [
        (1, false),
        (100, false),
        (10_000, false),
        (1, true),
        (10_000, true),
    ] {
        let router = router(count, hosts);
        let last = count - 1;
        let path = format!("/svc{last}/api/orders/7");
        let host = format!("svc{last}.example.com:8080");
        let request = RouteRequest {
            host: Some(&host),
            path: &path,
            method: &Method::GET,
            headers: &headers,
            query: Some("color=red"),
        };
        assert_eq!(router.route(&request).map(|m| m.service), Some(last));
        let name = format!(
            "route/{count} services{}",
            if hosts { " by host" } else { "" }
        );
        c.bench_function(&name, |b| {
            b.iter(|| black_box(router.route(black_box(&request)).map(|m| m.service)))
        });
    }
}

fn pool(balance: Balance, targets: usize) -> Pool {
    let targets = (0..targets)
        .map(|index| {
            Arc::new(Target::new(
                SocketAddr::from(([10, 0, 0, 1 + index as u8], 8080)),
                1,
                HeaderValue::from_static("orders.internal"),
                String::new(),
            ))
        })
        .collect();
    Pool::new(
        PoolSettings {
            balance,
            max_connections: Some(1000),
            passive: Passive::default(),
            health_check: None,
            resolve: None,
        },
        RetryPolicy::default(),
        targets,
    )
}

fn bench_choice(c: &mut Criterion) {
    let registry = VarRegistry::default();
    let key = Template::parse("k", &registry).expect("template");
    for (name, balance, targets) in [
        ("single target", Balance::RoundRobin, 1),
        ("round robin of 3", Balance::RoundRobin, 3),
        ("least connections of 3", Balance::LeastConnections, 3),
        ("consistent hash of 3", Balance::ConsistentHash(key), 3),
        ("round robin of 64", Balance::RoundRobin, 64),
    ] {
        let pool = pool(balance, targets);
        c.bench_function(&format!("choose/{name}"), |b| {
            b.iter(|| match pool.choose(Some(black_box(b"customer-4711")), 0) {
                // The lease is dropped (its slot given back) inside the measured loop.
                Choice::Chosen(lease) => black_box(lease.index),
                _ => usize::MAX,
            })
        });
    }
}

criterion_group!(benches, bench_router, bench_choice);
criterion_main!(benches);
