//! Raw primitives the assertions rest on that no other bench file covers: RSA-2048
//! signature verification (RS256, the common third-party JWT) and inflating a
//! gzip-compressed 16 KiB body (what SAML tokens and compressed answers cost to open).
//! HMAC-SHA256, SHA-256 of 64 KiB, ES256 verification and the memchr scan are beside the
//! assertions that use them (`assertions.rs`, `bearer.rs`, `pan.rs`).
//!
//! `cargo bench -p portcullis-benches --bench floors`

use std::hint::black_box;
use std::io::{Read as _, Write as _};
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

fn floors(c: &mut Criterion) {
    let pem = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/oauth/gateway-rs256.pem"),
    )
    .expect("key");
    let enc = EncodingKey::from_rsa_pem(&pem).expect("rsa key");
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::RS256).expect("jwk");
    jwk.common.key_id = Some("bench".into());
    let dec = DecodingKey::from_jwk(&jwk).expect("public key");
    let claims = serde_json::json!({"iss": "https://idp.bench", "sub": "user", "exp": 4_000_000_000u64, "scope": "a b"});
    let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &enc).expect("sign");
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_aud = false;
    c.bench_function(
        "floor: RSA-2048 JWT verification (RS256, jsonwebtoken)",
        |b| {
            b.iter(|| {
                black_box(
                    jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &dec, &v)
                        .expect("valid"),
                )
            });
        },
    );

    let body: Vec<u8> = (0..16 * 1024)
        .map(|i| b"<saml:Attribute Name=\"role\">admin</saml:Attribute>\n"[i % 51])
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).expect("compress");
    let compressed = gz.finish().expect("compress");
    let mut group = c.benchmark_group("floor: inflate");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("gzip 16 KiB (flate2)", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(body.len());
            flate2::read::GzDecoder::new(black_box(&compressed[..]))
                .read_to_end(&mut out)
                .expect("inflate");
            black_box(out)
        });
    });
    group.finish();
}

criterion_group!(benches, floors);
criterion_main!(benches);
