//! SAML bearer assertions: the whole `Verifier::verify_token` path (base64, inflate,
//! parse, exclusive C14N, SHA-256, RSA-2048 or P-256 verification, reading) on a typical
//! ~4 KiB signed assertion, its parts, and beside it the floor: one bare RSA-2048
//! PKCS#1 v1.5 SHA-256 verification with the same crate. And the `require_saml` step on a
//! token it verified before (a cache hit: the token's SHA-256, the time and audience checks,
//! the variables) — what a client re-sending its token costs.
//!
//! `cargo bench -p portcullis-benches --bench saml`

use std::hint::black_box;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_assertions::saml::c14n::{canonicalize, C14nMethod};
use portcullis_assertions::saml::sign::sign_assertion_with_id;
use portcullis_assertions::saml::xml::parse;
use portcullis_assertions::saml::{
    AssertionSpec, Expectations, PublicKey, SamlSigningKey, TrustedKey, Verifier, VerifyOptions,
    XmlLimits,
};
use sha2::Digest as _;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/saml/xmlsec1")
            .join(name),
    )
    .expect("fixture")
}

/// An assertion of about 4 KiB: subject, audience, session, eight attributes.
fn typical_spec() -> AssertionSpec {
    let attributes = (0..8)
        .map(|i| {
            (
                format!("urn:oid:1.3.6.1.4.1.5923.1.1.1.{i}"),
                vec![format!("value-{i}-{}", "x".repeat(120))],
            )
        })
        .collect();
    AssertionSpec {
        issuer: "https://idp.example.com/metadata".into(),
        subject: "alice@example.com".into(),
        name_id_format: Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into()),
        audience: "https://gateway.example.com".into(),
        recipient: Some("https://gateway.example.com/saml/token".into()),
        session_index: Some("_session-1".into()),
        attributes,
        issued_at: "2026-12-01T10:00:00Z".parse().expect("time"),
        valid_for: Duration::from_secs(300),
        one_time_use: false,
    }
}

fn deflate_token(xml: &str) -> String {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(xml.as_bytes()).expect("deflate");
    base64::engine::general_purpose::STANDARD.encode(e.finish().expect("deflate"))
}

fn saml(c: &mut Criterion) {
    let rsa_key = SamlSigningKey::from_pem(&fixture("rsa2048.key.pem")).expect("rsa key");
    let p256_key = SamlSigningKey::from_pem(&fixture("p256.key.pem")).expect("p256 key");
    let rsa_cert =
        TrustedKey::from_certificates_pem(&fixture("rsa2048.cert.pem"), 2048).expect("cert");
    let p256_cert =
        TrustedKey::from_certificates_pem(&fixture("p256.cert.pem"), 2048).expect("cert");
    let rsa_xml = sign_assertion_with_id(&typical_spec(), "_bench", &rsa_key, None).expect("sign");
    let p256_xml =
        sign_assertion_with_id(&typical_spec(), "_bench", &p256_key, None).expect("sign");
    eprintln!("typical signed assertion: {} bytes (RSA)", rsa_xml.len());
    let rsa_token = deflate_token(&rsa_xml);
    let p256_token = deflate_token(&p256_xml);
    let rsa_verifier = Verifier::new(rsa_cert.clone(), VerifyOptions::default()).expect("verifier");
    let p256_verifier = Verifier::new(p256_cert, VerifyOptions::default()).expect("verifier");
    let issuers = ["https://idp.example.com/metadata".to_string()];
    let exp = Expectations {
        issuers: &issuers,
        audience: "https://gateway.example.com",
        recipient: Some("https://gateway.example.com/saml/token"),
        now: "2026-12-01T10:01:00Z".parse().expect("time"),
        skew: Duration::from_secs(30),
        require_audience: true,
    };

    let mut group = c.benchmark_group("saml");
    group.bench_function("verify_token + validate, ~4 KiB deflated, RSA-2048", |b| {
        b.iter(|| {
            let a = rsa_verifier
                .verify_token(black_box(&rsa_token))
                .expect("valid");
            a.validate(&exp).expect("acceptable");
            black_box(a)
        });
    });
    group.bench_function(
        "verify_token + validate, ~4 KiB deflated, ECDSA P-256",
        |b| {
            b.iter(|| {
                let a = p256_verifier
                    .verify_token(black_box(&p256_token))
                    .expect("valid");
                a.validate(&exp).expect("acceptable");
                black_box(a)
            });
        },
    );
    let limits = XmlLimits::default();
    group.bench_function("parse ~4 KiB", |b| {
        b.iter(|| black_box(parse(black_box(rsa_xml.as_bytes()), &limits).expect("parse")));
    });
    let doc = parse(rsa_xml.as_bytes(), &limits).expect("parse");
    group.bench_function("exc-c14n ~4 KiB", |b| {
        b.iter(|| {
            black_box(canonicalize(
                &doc,
                doc.root(),
                None,
                &C14nMethod::exclusive(),
            ))
        });
    });

    // The floor: one RSA-2048 PKCS#1 v1.5 SHA-256 verification, nothing else.
    let PublicKey::Rsa(public) = &rsa_cert[0].key else {
        panic!("RSA certificate expected");
    };
    let SamlSigningKey::Rsa(private) = &rsa_key else {
        panic!("RSA key expected");
    };
    let message = b"<ds:SignedInfo>...</ds:SignedInfo>";
    let hashed = sha2::Sha256::digest(message);
    let signature = private
        .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &hashed)
        .expect("sign");
    group.bench_function(
        "floor: RSA-2048 PKCS#1 v1.5 SHA-256 verify (rsa crate)",
        |b| {
            b.iter(|| {
                let h = sha2::Sha256::digest(black_box(message));
                public
                    .verify(
                        rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                        &h,
                        black_box(&signature),
                    )
                    .expect("valid");
            });
        },
    );
    group.finish();
    step_cache_hit(c, &rsa_token);
}

/// The `require_saml` step on a token already in its verified-assertion cache.
fn step_cache_hit(c: &mut Criterion, token: &str) {
    use portcullis_assertions::hmac::FixedClock;
    use portcullis_assertions::saml::{OneTime, RequireSaml, SamlOutputs, VerifiedCache};
    use portcullis_assertions::{Assertion, Exchange, Request, VarRegistry, Verdict};
    use std::sync::Arc;

    let mut registry = VarRegistry::new();
    let outputs = SamlOutputs {
        subject: registry.define("saml.subject"),
        issuer: registry.define("saml.issuer"),
        session_index: registry.define("saml.session_index"),
        client_id: registry.define("client.id"),
        attributes: Vec::new(),
    };
    let step = RequireSaml {
        header: http::header::AUTHORIZATION,
        scheme: "SAML".into(),
        verifier: Verifier::from_certificates_pem(
            &fixture("rsa2048.cert.pem"),
            VerifyOptions::default(),
        )
        .expect("verifier"),
        issuers: vec!["https://idp.example.com/metadata".into()],
        audience: "https://gateway.example.com".into(),
        recipient: None,
        skew: Duration::from_secs(30),
        one_time: OneTime::Off,
        markers: None,
        required_attributes: Vec::new(),
        outputs,
        cache: VerifiedCache::new(1000),
        // 2026-12-01T10:01:00Z, inside the typical assertion's five minutes.
        clock: Arc::new(FixedClock::at(1_796_119_260)),
    };
    let (mut parts, ()) = http::Request::get("/api")
        .header("authorization", format!("SAML {token}"))
        .body(())
        .expect("request")
        .into_parts();
    let mut run = || {
        let mut x = Exchange::new(registry.len(), [127, 0, 0, 1].into(), [127, 0, 0, 1].into());
        let verdict = step.on_request(
            &mut Request {
                head: &mut parts,
                body: None,
            },
            &mut x,
        );
        assert!(matches!(verdict, Verdict::Continue), "the token passes");
        black_box(x)
    };
    run();
    let mut group = c.benchmark_group("saml");
    group.bench_function("require_saml step, cache hit (~4 KiB token)", |b| {
        b.iter(&mut run);
    });
    group.finish();
}

criterion_group!(benches, saml);
criterion_main!(benches);
