//! The `/saml/token` issuer: what one answer costs. The password check (argon2id at the
//! default cost, for a known user and for an unknown one, which must cost the same) is
//! the floor and the bulk; then signing one assertion (P-256 and RSA-2048) with its
//! DEFLATE and base64 for `Authorization: SAML`.
//!
//! `cargo bench -p portcullis-benches --bench saml_issuer`

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::basic_auth::users::{hash_password, Users};
use portcullis::saml_issuer::{SamlIssuer, NAME_ID_UNSPECIFIED};
use portcullis_assertions::saml::SamlSigningKey;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/saml/xmlsec1")
            .join(name),
    )
    .expect("fixture")
}

fn users() -> Users {
    let hash = hash_password("bench-password").expect("hash");
    let text = format!(
        "users:\n  - name: alice\n    password_argon2id: \"{hash}\"\n    attributes:\n      group: [reporting, finance]\n      email: alice@example.com\n"
    );
    portcullis::config::users_file::parse(Arc::from(Path::new("users.yaml")), &text).expect("users")
}

fn issuer(key: &str) -> SamlIssuer {
    SamlIssuer {
        path: "/saml/token".to_owned(),
        entity_id: "https://gateway.bench/saml".to_owned(),
        audience: "https://api.bench".to_owned(),
        recipient: None,
        name_id_format: NAME_ID_UNSPECIFIED.to_owned(),
        validity: Duration::from_secs(300),
        attributes: None,
        challenge: http::HeaderValue::from_static("Basic realm=\"bench\""),
        users: Some(users()),
        key: SamlSigningKey::from_pem(&fixture(key)).expect("key"),
        certificate_der: None,
        verifications: tokio::sync::Semaphore::new(1),
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("saml issuer");
    group.sample_size(20);
    let p256 = issuer("p256.key.pem");
    group.bench_function("argon2id check, known user (floor)", |b| {
        b.iter(|| {
            black_box(
                p256.users
                    .as_ref()
                    .expect("users")
                    .verify(black_box("alice"), "bench-password"),
            )
        });
    });
    group.bench_function("argon2id check, unknown user", |b| {
        b.iter(|| {
            black_box(
                p256.users
                    .as_ref()
                    .expect("users")
                    .verify(black_box("mallory"), "bench-password"),
            )
        });
    });
    let alice = p256
        .users
        .as_ref()
        .expect("users")
        .verify("alice", "bench-password")
        .expect("alice");
    group.bench_function("sign one assertion, P-256", |b| {
        b.iter(|| black_box(p256.issue(alice, jiff::Timestamp::now()).expect("issued")));
    });
    let rsa = issuer("rsa2048.key.pem");
    let alice = rsa
        .users
        .as_ref()
        .expect("users")
        .verify("alice", "bench-password")
        .expect("alice");
    group.bench_function("sign one assertion, RSA-2048", |b| {
        b.iter(|| black_box(rsa.issue(alice, jiff::Timestamp::now()).expect("issued")));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
