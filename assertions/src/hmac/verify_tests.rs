//! `require_hmac` end to end over `http` parts: sign with the outbound signer, verify, then
//! change one thing at a time.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use super::custom::{Algorithm, CustomScheme, Encoding, HeaderFormat};
use super::sign::{sign_custom, sign_sigv2, sign_sigv4, SigV4Params};
use super::*;
use crate::exchange::{Exchange, VarRegistry};
use crate::template::Template;
use crate::verdict::{Rejection, Verdict};
use crate::{Assertion, Request};

const NOW: u64 = 1_700_000_000;

fn keys(reg: &mut VarRegistry) -> Arc<KeySet> {
    let tier = reg.define("client.tier");
    Arc::new(KeySet::new(vec![HmacKey {
        access_key: Arc::from("AKIDPARTNER"),
        client: Arc::from("partner-one"),
        secrets: vec![
            SecretBytes(Arc::from(&b"new-secret"[..])),
            SecretBytes(Arc::from(&b"old-secret"[..])),
        ],
        attributes: vec![(tier, Arc::from("gold"))],
    }]))
}

fn step(scheme: Scheme, clock: Arc<FixedClock>) -> (RequireHmac, VarRegistry) {
    let mut reg = VarRegistry::new();
    let keys = keys(&mut reg);
    let step = RequireHmac {
        scheme,
        keys,
        max_skew: Duration::from_secs(300),
        replay: Replay::Local(Arc::new(ReplayCache::new(1000))),
        allow_unsigned_payload: false,
        clock,
        client_id: reg.define("client.id"),
        key_id_var: reg.define("hmac.key_id"),
        sigv4_keys: Default::default(),
    };
    (step, reg)
}

fn sigv4_scheme() -> Scheme {
    Scheme::SigV4 {
        region: "eu-west-1".into(),
        service: "execute-api".into(),
        allow_presigned: true,
        normalize_path: true,
    }
}

fn request(method: &str, uri: &str) -> http::request::Parts {
    let (parts, ()) = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "api.example.test")
        .header("content-type", "application/json")
        .body(())
        .expect("request")
        .into_parts();
    parts
}

fn signed_v4(secret: &[u8], at: u64, body: &[u8]) -> http::request::Parts {
    let mut parts = request("POST", "/orders/7?b=2&a=1");
    let p = SigV4Params {
        access_key: "AKIDPARTNER",
        secret,
        region: "eu-west-1",
        service: "execute-api",
        content_sha256_header: true,
        normalize_path: true,
    };
    sign_sigv4(&mut parts, body, &p, at).expect("signs");
    parts
}

fn check(
    step: &RequireHmac,
    reg: &VarRegistry,
    parts: &mut http::request::Parts,
    body: &[u8],
) -> Result<Exchange, Rejection> {
    let mut x = Exchange::new(reg.len(), [127, 0, 0, 1].into(), [127, 0, 0, 1].into());
    match step.on_request(
        &mut Request {
            head: parts,
            body: Some(body),
        },
        &mut x,
    ) {
        Verdict::Continue => Ok(x),
        Verdict::Reject(r) => Err(r),
    }
}

fn code(r: Result<Exchange, Rejection>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(r) => r.code,
    }
}

#[test]
fn sigv4_signed_requests_pass_and_set_the_client() {
    let clock = Arc::new(FixedClock::at(NOW));
    let (step, reg) = step(sigv4_scheme(), clock);
    let body = br#"{"qty":2}"#;
    let mut parts = signed_v4(b"new-secret", NOW, body);
    let x = check(&step, &reg, &mut parts, body).expect("passes");
    assert_eq!(
        x.get(reg.lookup("client.id").expect("id")),
        Some("partner-one")
    );
    assert_eq!(
        x.get(reg.lookup("client.tier").expect("tier")),
        Some("gold")
    );
    assert_eq!(
        x.get(reg.lookup("hmac.key_id").expect("key")),
        Some("AKIDPARTNER")
    );
    // The old secret still verifies during rotation.
    let mut parts = signed_v4(b"old-secret", NOW + 1, body);
    assert_eq!(code(check(&step, &reg, &mut parts, body)), "ok");
}

#[test]
fn sigv4_caches_signing_keys_only_for_requests_inside_their_time_window() {
    let clock = Arc::new(FixedClock::at(NOW));
    let (step, reg) = step(sigv4_scheme(), clock.clone());
    let body = br#"{"qty":2}"#;
    // Dated ten days ago: refused for its time, its key derived but not kept.
    let mut stale = signed_v4(b"new-secret", NOW - 10 * 86_400, body);
    assert_eq!(
        code(check(&step, &reg, &mut stale, body)),
        "RequestTimeTooSkewed"
    );
    assert!(step.sigv4_keys.is_empty());
    // In time: both secrets of the key are tried, both signing keys kept.
    let mut fresh = signed_v4(b"old-secret", NOW, body);
    assert_eq!(code(check(&step, &reg, &mut fresh, body)), "ok");
    assert_eq!(step.sigv4_keys.len(), 2);
    let mut again = signed_v4(b"new-secret", NOW + 1, body);
    assert_eq!(code(check(&step, &reg, &mut again, body)), "ok");
    assert_eq!(step.sigv4_keys.len(), 2);
}

#[test]
fn sigv4_refuses_every_single_change() {
    let clock = Arc::new(FixedClock::at(NOW));
    let (step, reg) = step(sigv4_scheme(), clock.clone());
    let body = br#"{"qty":2}"#;
    let tampered = |f: &dyn Fn(&mut http::request::Parts) -> Vec<u8>| {
        let mut parts = signed_v4(b"new-secret", NOW, body);
        let new_body = f(&mut parts);
        code(check(&step, &reg, &mut parts, &new_body))
    };
    assert_eq!(
        tampered(&|_| br#"{"qty":3}"#.to_vec()),
        "XAmzContentSHA256Mismatch"
    );
    assert_eq!(
        tampered(&|p| {
            p.uri = "/orders/8?b=2&a=1".parse().expect("uri");
            body.to_vec()
        }),
        "SignatureDoesNotMatch"
    );
    assert_eq!(
        tampered(&|p| {
            p.uri = "/orders/7?b=2&a=2".parse().expect("uri");
            body.to_vec()
        }),
        "SignatureDoesNotMatch"
    );
    assert_eq!(
        tampered(&|p| {
            p.headers
                .insert("content-type", "text/plain".parse().expect("value"));
            body.to_vec()
        }),
        "SignatureDoesNotMatch"
    );
    assert_eq!(
        tampered(&|p| {
            p.headers.insert(
                "x-amz-date",
                super::sign::amz_date(NOW + 1).parse().expect("value"),
            );
            body.to_vec()
        }),
        "SignatureDoesNotMatch"
    );
    assert_eq!(
        tampered(&|p| {
            p.method = http::Method::PUT;
            body.to_vec()
        }),
        "SignatureDoesNotMatch"
    );
}

#[test]
fn sigv4_refuses_wrong_keys_old_dates_and_replays() {
    let clock = Arc::new(FixedClock::at(NOW));
    let (step, reg) = step(sigv4_scheme(), clock.clone());
    let body = b"";
    let mut parts = signed_v4(b"wrong-secret", NOW, body);
    assert_eq!(
        code(check(&step, &reg, &mut parts, body)),
        "SignatureDoesNotMatch"
    );
    // 16 minutes old.
    let mut parts = signed_v4(b"new-secret", NOW - 16 * 60, body);
    assert_eq!(
        code(check(&step, &reg, &mut parts, body)),
        "RequestTimeTooSkewed"
    );
    // Replayed inside the window.
    let mut parts = signed_v4(b"new-secret", NOW - 10, body);
    let mut again = parts.clone();
    assert_eq!(code(check(&step, &reg, &mut parts, body)), "ok");
    assert_eq!(
        code(check(&step, &reg, &mut again, body)),
        "ReplayedRequest"
    );
    // Unknown key id.
    let mut parts = signed_v4(b"new-secret", NOW, body);
    let auth = parts.headers["authorization"]
        .to_str()
        .expect("ascii")
        .replace("AKIDPARTNER", "AKIDUNKNOWN");
    parts
        .headers
        .insert("authorization", auth.parse().expect("value"));
    assert_eq!(
        code(check(&step, &reg, &mut parts, body)),
        "InvalidAccessKeyId"
    );
    // Not signed at all.
    let mut parts = request("GET", "/");
    let r = check(&step, &reg, &mut parts, body).expect_err("unsigned");
    assert_eq!(
        (r.status.as_u16(), r.code),
        (401, "MissingAuthenticationToken")
    );
    // Unsigned payload is refused unless allowed.
    let mut parts = signed_v4(b"new-secret", NOW + 2, body);
    parts.headers.insert(
        "x-amz-content-sha256",
        "UNSIGNED-PAYLOAD".parse().expect("value"),
    );
    assert_eq!(
        code(check(&step, &reg, &mut parts, body)),
        "UnsignedPayloadNotAllowed"
    );
}

#[test]
fn sigv4_checks_region_service_and_a_signed_host() {
    let clock = Arc::new(FixedClock::at(NOW));
    let (step, reg) = step(
        Scheme::SigV4 {
            region: "us-east-1".into(),
            service: "execute-api".into(),
            allow_presigned: true,
            normalize_path: true,
        },
        clock,
    );
    let mut parts = signed_v4(b"new-secret", NOW, b"");
    let r = check(&step, &reg, &mut parts, b"").expect_err("wrong region");
    assert!(r.detail.contains("region us-east-1"), "{}", r.detail);
}

#[test]
fn sigv2_round_trip_and_content_md5() {
    let clock = Arc::new(FixedClock::at(NOW));
    let (step, reg) = step(Scheme::SigV2 { allow_query: true }, clock);
    let mut parts = request("PUT", "/bucket/photo.jpg?acl");
    sign_sigv2(&mut parts, "AKIDPARTNER", b"new-secret", NOW).expect("signs");
    let mut replay = parts.clone();
    assert_eq!(code(check(&step, &reg, &mut parts, b"data")), "ok");
    assert_eq!(
        code(check(&step, &reg, &mut replay, b"data")),
        "ReplayedRequest"
    );
    let mut parts = request("PUT", "/bucket/photo.jpg");
    parts.headers.insert(
        "content-md5",
        "XUFAKrxLKna5cZ2REBfFkg==".parse().expect("md5 of hello"),
    );
    sign_sigv2(&mut parts, "AKIDPARTNER", b"new-secret", NOW + 1).expect("signs");
    assert_eq!(code(check(&step, &reg, &mut parts.clone(), b"hello")), "ok");
    assert_eq!(code(check(&step, &reg, &mut parts, b"hellp")), "BadDigest");
}

#[test]
fn custom_template_round_trip() {
    let clock = Arc::new(FixedClock::at(NOW));
    let reg0 = VarRegistry::new();
    let scheme = CustomScheme {
        header: HeaderName::from_static("x-signature"),
        format: HeaderFormat::parse("HMAC ${key_id}:${signature}").expect("format"),
        algorithm: Algorithm::Sha512,
        encoding: Encoding::Hex,
        string_to_sign: Template::parse(
            "${request.method}\n${request.path}\n${request.query}\n${request.header.x-date}\n${body.sha256}",
            &reg0,
        )
        .expect("template"),
        date_header: HeaderName::from_static("x-date"),
    };
    let (step, reg) = step(Scheme::Custom(scheme), clock);
    let Scheme::Custom(scheme) = &step.scheme else {
        panic!("custom")
    };
    let mut parts = request("POST", "/pay?id=9");
    let mut x = Exchange::new(reg.len(), [127, 0, 0, 1].into(), [127, 0, 0, 1].into());
    let sts = sign_custom(
        &mut parts,
        b"{}",
        scheme,
        "AKIDPARTNER",
        b"old-secret",
        NOW,
        &mut x,
    )
    .expect("signs");
    assert!(sts.starts_with("POST\n/pay\nid=9\n"), "{sts}");
    assert_eq!(code(check(&step, &reg, &mut parts.clone(), b"{}")), "ok");
    assert_eq!(
        code(check(&step, &reg, &mut parts, b"{ }")),
        "SignatureDoesNotMatch"
    );
}

#[test]
fn presigned_sigv4_urls_verify_and_expire() {
    let clock = Arc::new(FixedClock::at(NOW));
    let (step, reg) = step(sigv4_scheme(), clock.clone());
    let parts = request("GET", "/orders/7?format=json");
    let p = SigV4Params {
        access_key: "AKIDPARTNER",
        secret: b"new-secret",
        region: "eu-west-1",
        service: "execute-api",
        content_sha256_header: false,
        normalize_path: true,
    };
    let query = super::sign::presign_sigv4(&parts, b"", &p, NOW, 60).expect("presigns");
    let mut signed = parts.clone();
    signed.uri = format!("/orders/7?{query}").parse().expect("uri");
    signed.headers.remove("content-type");
    assert_eq!(code(check(&step, &reg, &mut signed.clone(), b"")), "ok");
    clock.set(NOW + 61);
    let (step, reg) = super::verify_tests::step(sigv4_scheme(), clock);
    assert_eq!(code(check(&step, &reg, &mut signed, b"")), "RequestExpired");
}

/// A stand-in for the fleet's shared markers: answers at once, can be taken down.
#[derive(Debug, Default)]
struct MarkerBook {
    seen: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    down: std::sync::atomic::AtomicBool,
    calls: std::sync::atomic::AtomicUsize,
}

impl crate::once::SharedOnce for MarkerBook {
    fn use_once(&self, key: String, expires_at: u64, now: u64) -> crate::once::OnceDecision {
        use std::sync::atomic::Ordering;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer = if self.down.load(Ordering::Relaxed) {
            Err(crate::rate_limit::SharedUnavailable)
        } else {
            let mut seen = self.seen.lock().expect("lock");
            match seen.get(&key) {
                Some(&until) if until > now => Ok(false),
                _ => {
                    seen.insert(key, expires_at);
                    Ok(true)
                }
            }
        };
        Box::pin(std::future::ready(answer))
    }
}

fn shared_step(book: &Arc<MarkerBook>, fail_open: bool) -> (RequireHmac, VarRegistry) {
    let (mut step, reg) = step(sigv4_scheme(), Arc::new(FixedClock::at(NOW)));
    step.replay = Replay::Shared(SharedReplay {
        markers: book.clone(),
        namespace: "partners".into(),
        fallback: fail_open.then(|| Arc::new(ReplayCache::new(100))),
    });
    (step, reg)
}

/// Runs the step as the gateway does: its awaited work first, then `on_request`.
fn check_shared(
    step: &RequireHmac,
    reg: &VarRegistry,
    parts: &mut http::request::Parts,
    body: &[u8],
) -> Result<Exchange, Rejection> {
    let mut x = Exchange::new(reg.len(), [127, 0, 0, 1].into(), [127, 0, 0, 1].into());
    let mut request = Request {
        head: parts,
        body: Some(body),
    };
    let mut work = step.awaits(&request, &mut x).expect("shared replay awaits");
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    let std::task::Poll::Ready(answer) = work.as_mut().poll(&mut context) else {
        panic!("the stand-in answers at once");
    };
    x.put_awaited(answer);
    match step.on_request(&mut request, &mut x) {
        Verdict::Continue => Ok(x),
        Verdict::Reject(r) => Err(r),
    }
}

#[test]
fn a_signature_used_on_one_gateway_is_refused_on_another_sharing_the_markers() {
    let book = Arc::new(MarkerBook::default());
    let (first_node, reg) = shared_step(&book, false);
    let (second_node, _) = shared_step(&book, false);
    let body = br#"{"qty":2}"#;
    let mut parts = signed_v4(b"new-secret", NOW, body);
    let mut replay = parts.clone();
    let x = check_shared(&first_node, &reg, &mut parts, body).expect("first use passes");
    assert_eq!(
        x.get(reg.lookup("client.id").expect("id")),
        Some("partner-one")
    );
    assert_eq!(
        code(check_shared(&second_node, &reg, &mut replay, body)),
        "ReplayedRequest"
    );
    let marker = book.seen.lock().expect("lock").keys().next().cloned();
    assert!(
        marker.is_some_and(|m| m.starts_with("hmac:partners:") && m.len() == 14 + 64),
        "markers are namespaced SHA-256 digests"
    );
}

#[test]
fn a_forged_or_stale_signature_never_writes_a_marker() {
    use std::sync::atomic::Ordering;
    let book = Arc::new(MarkerBook::default());
    let (step, reg) = shared_step(&book, false);
    let body = br#"{"qty":2}"#;
    let mut forged = signed_v4(b"wrong-secret", NOW, body);
    assert_eq!(
        code(check_shared(&step, &reg, &mut forged, body)),
        "SignatureDoesNotMatch"
    );
    let mut stale = signed_v4(b"new-secret", NOW - 3600, body);
    assert_ne!(code(check_shared(&step, &reg, &mut stale, body)), "ok");
    let mut unsigned = request("GET", "/orders");
    assert_eq!(
        code(check_shared(&step, &reg, &mut unsigned, b"")),
        "MissingAuthenticationToken"
    );
    assert_eq!(book.calls.load(Ordering::Relaxed), 0);
}

#[test]
fn a_store_that_cannot_answer_fails_closed_unless_the_policy_says_fail_open() {
    use std::sync::atomic::Ordering;
    let body = br#"{"qty":2}"#;
    let book = Arc::new(MarkerBook::default());
    book.down.store(true, Ordering::Relaxed);
    let (closed, reg) = shared_step(&book, false);
    let mut parts = signed_v4(b"new-secret", NOW, body);
    let refusal = check_shared(&closed, &reg, &mut parts, body).expect_err("fails closed");
    assert_eq!(refusal.code, "state-store-unavailable");
    assert_eq!(refusal.status, http::StatusCode::SERVICE_UNAVAILABLE);

    // Fail open: this process's own cache decides, so a replay here is still refused.
    let (open, reg) = shared_step(&book, true);
    let mut parts = signed_v4(b"new-secret", NOW, body);
    let mut replay = parts.clone();
    assert_eq!(code(check_shared(&open, &reg, &mut parts, body)), "ok");
    assert_eq!(
        code(check_shared(&open, &reg, &mut replay, body)),
        "ReplayedRequest"
    );
}
