//! `require_saml` over `http` parts: a token the issuer signs passes and sets the
//! variables; the cache answers a repeat without a verification; one-time use goes through
//! the shared markers; each refusal has its code.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use super::sign::sign_assertion;
use super::step::{OneTime, RequireSaml, SamlOutputs, VerifiedCache};
use super::tests::read;
use super::*;
use crate::exchange::{Exchange, VarRegistry};
use crate::hmac::FixedClock;
use crate::verdict::{Rejection, Verdict};
use crate::{Assertion, Request};

const ISSUER: &str = "https://idp.example.com/metadata";
const AUDIENCE: &str = "https://gateway.example.com";
/// 2025-12-01T10:01:00Z: a minute after the test assertions are issued.
const NOW: u64 = 1_764_583_260;

fn token(spec: &AssertionSpec) -> String {
    let key =
        SamlSigningKey::from_pem(&String::from_utf8(read("xmlsec1/p256.key.pem")).expect("pem"))
            .expect("key");
    let xml = sign_assertion(spec, &key, None).expect("signs");
    let mut deflater =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflater.write_all(xml.as_bytes()).expect("deflate");
    base64::engine::general_purpose::STANDARD.encode(deflater.finish().expect("deflate"))
}

fn spec() -> AssertionSpec {
    AssertionSpec {
        issuer: ISSUER.into(),
        subject: "bob@example.com".into(),
        name_id_format: None,
        audience: AUDIENCE.into(),
        recipient: None,
        session_index: Some("_session-7".into()),
        attributes: vec![("groups".into(), vec!["payments".into(), "audit".into()])],
        issued_at: jiff::Timestamp::from_second(1_764_583_200).expect("time"),
        valid_for: Duration::from_secs(300),
        one_time_use: false,
    }
}

/// Counts marker writes; answers like a store.
#[derive(Debug, Default)]
struct Markers {
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
    calls: AtomicUsize,
}

impl crate::once::SharedOnce for Markers {
    fn use_once(&self, key: String, _expires_at: u64, _now: u64) -> crate::once::OnceDecision {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let first = self.seen.lock().expect("lock").insert(key);
        Box::pin(std::future::ready(Ok(first)))
    }
}

fn saml_step(one_time: OneTime, markers: Option<Arc<Markers>>) -> (RequireSaml, VarRegistry) {
    let mut reg = VarRegistry::new();
    let verifier = Verifier::from_certificates_pem(
        &String::from_utf8(read("xmlsec1/p256.cert.pem")).expect("pem"),
        VerifyOptions::default(),
    )
    .expect("verifier");
    let outputs = SamlOutputs {
        subject: reg.define("saml.subject"),
        issuer: reg.define("saml.issuer"),
        session_index: reg.define("saml.session_index"),
        client_id: reg.define("client.id"),
        attributes: vec![("groups".into(), reg.define("saml.attr.groups"))],
    };
    let step = RequireSaml {
        header: http::header::AUTHORIZATION,
        scheme: "SAML".into(),
        verifier,
        issuers: vec![ISSUER.into()],
        audience: AUDIENCE.into(),
        recipient: None,
        skew: Duration::from_secs(60),
        one_time,
        markers: markers.map(|m| m as Arc<dyn crate::once::SharedOnce>),
        required_attributes: Vec::new(),
        outputs,
        cache: VerifiedCache::new(100),
        clock: Arc::new(FixedClock::at(NOW)),
    };
    (step, reg)
}

/// Runs the step as the gateway does (its awaited work first when it has any).
fn run(
    step: &RequireSaml,
    reg: &VarRegistry,
    authorization: Option<&str>,
) -> Result<Exchange, Rejection> {
    let mut builder = http::Request::get("/api");
    if let Some(value) = authorization {
        builder = builder.header("authorization", value);
    }
    let (mut parts, ()) = builder.body(()).expect("request").into_parts();
    let mut x = Exchange::new(reg.len(), [127, 0, 0, 1].into(), [127, 0, 0, 1].into());
    let mut request = Request {
        head: &mut parts,
        body: None,
    };
    if let Some(mut work) = step.awaits(&request, &mut x) {
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        let std::task::Poll::Ready(answer) = work.as_mut().poll(&mut context) else {
            panic!("the stand-in answers at once");
        };
        x.put_awaited(answer);
    }
    match step.on_request(&mut request, &mut x) {
        Verdict::Continue => Ok(x),
        Verdict::Reject(r) => Err(r),
    }
}

fn code(result: Result<Exchange, Rejection>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(r) => r.code,
    }
}

#[test]
fn a_signed_assertion_passes_and_sets_the_variables() {
    let (step, reg) = saml_step(OneTime::Off, None);
    let token = token(&spec());
    let x = run(&step, &reg, Some(&format!("SAML {token}"))).expect("passes");
    let var = |name: &str| x.get(reg.lookup(name).expect("defined")).map(str::to_owned);
    assert_eq!(var("saml.subject").as_deref(), Some("bob@example.com"));
    assert_eq!(var("client.id").as_deref(), Some("bob@example.com"));
    assert_eq!(var("saml.issuer").as_deref(), Some(ISSUER));
    assert_eq!(var("saml.session_index").as_deref(), Some("_session-7"));
    assert_eq!(var("saml.attr.groups").as_deref(), Some("payments,audit"));
    // The scheme word is read without regard to case; the repeat comes from the cache.
    assert_eq!(step.cache.len(), 1);
    assert_eq!(code(run(&step, &reg, Some(&format!("saml {token}")))), "ok");
    assert_eq!(step.cache.len(), 1);
}

#[test]
fn refusals_name_what_is_wrong() {
    let (step, reg) = saml_step(OneTime::Off, None);
    assert_eq!(code(run(&step, &reg, None)), "saml-missing");
    assert_eq!(code(run(&step, &reg, Some("Bearer abc"))), "saml-missing");
    assert_eq!(
        code(run(&step, &reg, Some("SAML !!not-base64!!"))),
        "saml-token-malformed"
    );
    let mut other_audience = spec();
    other_audience.audience = "https://someone-else.example".into();
    assert_eq!(
        code(run(
            &step,
            &reg,
            Some(&format!("SAML {}", token(&other_audience)))
        )),
        "saml-audience"
    );
    let mut expired = spec();
    expired.issued_at = jiff::Timestamp::from_second(1_764_500_000).expect("time");
    assert_eq!(
        code(run(&step, &reg, Some(&format!("SAML {}", token(&expired))))),
        "saml-expired"
    );
    let mut stranger = spec();
    stranger.issuer = "https://evil.example".into();
    assert_eq!(
        code(run(
            &step,
            &reg,
            Some(&format!("SAML {}", token(&stranger)))
        )),
        "saml-issuer"
    );
    let refusal = run(&step, &reg, None).expect_err("refused");
    assert_eq!(refusal.status, http::StatusCode::UNAUTHORIZED);
    assert!(refusal
        .headers
        .iter()
        .any(|(name, value)| name == http::header::WWW_AUTHENTICATE && value == "SAML"));
}

#[test]
fn a_cached_assertion_is_still_checked_for_time() {
    let (mut step, reg) = saml_step(OneTime::Off, None);
    let token = token(&spec());
    assert_eq!(code(run(&step, &reg, Some(&format!("SAML {token}")))), "ok");
    step.clock = Arc::new(FixedClock::at(NOW + 3600));
    assert_eq!(
        code(run(&step, &reg, Some(&format!("SAML {token}")))),
        "saml-expired",
        "an hour later the cached verdict does not let it through"
    );
}

#[test]
fn required_attributes_refuse_with_403() {
    let (mut step, reg) = saml_step(OneTime::Off, None);
    step.required_attributes = vec![("groups".into(), vec!["admins".into()])];
    let refusal = run(&step, &reg, Some(&format!("SAML {}", token(&spec())))).expect_err("refused");
    assert_eq!(refusal.code, "saml-attribute-required");
    assert_eq!(refusal.status, http::StatusCode::FORBIDDEN);
    step.required_attributes = vec![("groups".into(), vec!["admins".into(), "audit".into()])];
    assert_eq!(
        code(run(&step, &reg, Some(&format!("SAML {}", token(&spec()))))),
        "ok"
    );
}

#[test]
fn one_time_use_is_checked_through_the_shared_markers_after_verification() {
    let markers = Arc::new(Markers::default());
    let (step, reg) = saml_step(OneTime::WhenMarked, Some(markers.clone()));
    // Not marked: no marker written.
    assert_eq!(
        code(run(&step, &reg, Some(&format!("SAML {}", token(&spec()))))),
        "ok"
    );
    assert_eq!(markers.calls.load(Ordering::Relaxed), 0);
    let mut once = spec();
    once.one_time_use = true;
    let once = token(&once);
    assert_eq!(code(run(&step, &reg, Some(&format!("SAML {once}")))), "ok");
    assert_eq!(
        code(run(&step, &reg, Some(&format!("SAML {once}")))),
        "saml-replayed"
    );
    // A forged token never reaches the markers.
    let calls = markers.calls.load(Ordering::Relaxed);
    assert_ne!(code(run(&step, &reg, Some("SAML AAAA"))), "ok");
    assert_eq!(markers.calls.load(Ordering::Relaxed), calls);

    let (always, reg) = saml_step(OneTime::Always, Some(Arc::new(Markers::default())));
    let token = token(&spec());
    assert_eq!(
        code(run(&always, &reg, Some(&format!("SAML {token}")))),
        "ok"
    );
    assert_eq!(
        code(run(&always, &reg, Some(&format!("SAML {token}")))),
        "saml-replayed"
    );
}
