use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use super::*;
use crate::VarRegistry;

/// Knows a fixed set of tokens; records who used them.
#[derive(Debug, Default)]
struct FakeResolver {
    tokens: HashMap<String, Result<Arc<ValidToken>, TokenError>>,
    used: Mutex<Vec<(String, IpAddr)>>,
}

impl TokenResolver for FakeResolver {
    fn resolve(&self, token: &str, ip: IpAddr) -> Result<Arc<ValidToken>, TokenError> {
        self.used.lock().expect("lock").push((token.to_owned(), ip));
        self.tokens
            .get(token)
            .cloned()
            .unwrap_or(Err(TokenError::Invalid("unknown token".into())))
    }
}

fn valid(scope: &str) -> Result<Arc<ValidToken>, TokenError> {
    Ok(Arc::new(ValidToken {
        id: Arc::from("jti-1"),
        client_id: Arc::from("billing-app"),
        subject: Arc::from("role-account-x"),
        scope: Arc::from(scope),
        expires_at: i64::MAX,
    }))
}

fn step(
    scopes: &[&str],
    m: ScopeMatch,
    allow_query: bool,
) -> (RequireBearer, Arc<FakeResolver>, VarRegistry) {
    let mut reg = VarRegistry::new();
    let vars = BearerVars {
        client_id: reg.define("client.id"),
        subject: reg.define("token.sub"),
        scope: reg.define("token.scope"),
    };
    let mut r = FakeResolver::default();
    r.tokens
        .insert("good.token".into(), valid("widgets.read widgets.write"));
    r.tokens.insert("readonly".into(), valid("widgets.read"));
    r.tokens.insert(
        "down".into(),
        Err(TokenError::Unavailable("store down".into())),
    );
    let r = Arc::new(r);
    let s = RequireBearer::new(
        "widgets",
        scopes.iter().map(|s| (*s).to_owned()).collect(),
        m,
        allow_query,
        r.clone(),
        vars,
    )
    .expect("step");
    (s, r, reg)
}

fn run(s: &RequireBearer, reg: &VarRegistry, uri: &str, auth: &[&str]) -> (Verdict, Exchange) {
    let mut b = http::Request::builder().uri(uri);
    for a in auth {
        b = b.header("authorization", *a);
    }
    let (mut parts, ()) = b.body(()).expect("request").into_parts();
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
    let mut x = Exchange::new(reg.len(), ip, ip);
    let v = s.on_request(
        &mut Request {
            head: &mut parts,
            body: None,
        },
        &mut x,
    );
    (v, x)
}

fn challenge(v: &Verdict) -> (u16, String) {
    match v {
        Verdict::Reject(r) => (
            r.status.as_u16(),
            r.headers
                .iter()
                .find(|(n, _)| n == WWW_AUTHENTICATE)
                .map(|(_, v)| v.to_str().expect("ascii").to_owned())
                .unwrap_or_default(),
        ),
        Verdict::Continue => (200, String::new()),
    }
}

#[test]
fn a_valid_token_with_the_scope_passes_and_sets_variables() {
    let (s, r, reg) = step(&["widgets.read"], ScopeMatch::All, false);
    let (v, x) = run(&s, &reg, "/w", &["Bearer good.token"]);
    assert!(v.is_continue());
    assert_eq!(
        x.get(reg.lookup("client.id").expect("var")),
        Some("billing-app")
    );
    assert_eq!(
        x.get(reg.lookup("token.sub").expect("var")),
        Some("role-account-x")
    );
    assert_eq!(
        x.get(reg.lookup("token.scope").expect("var")),
        Some("widgets.read widgets.write")
    );
    assert_eq!(r.used.lock().expect("lock")[0].1.to_string(), "10.0.0.7");
    // The scheme is case-insensitive.
    assert!(run(&s, &reg, "/w", &["bearer good.token"]).0.is_continue());
}

#[test]
fn no_token_gets_a_bare_challenge() {
    let (s, _, reg) = step(&[], ScopeMatch::All, false);
    for auth in [&[][..], &["Basic dXNlcjpwYXNz"][..]] {
        let (v, _) = run(&s, &reg, "/w", auth);
        assert_eq!(challenge(&v), (401, "Bearer realm=\"widgets\"".to_owned()));
    }
}

#[test]
fn bad_tokens_get_invalid_token_with_a_description() {
    let (s, _, reg) = step(&[], ScopeMatch::All, false);
    for auth in ["Bearer nope", "Bearer ", "Bearer a b", "Bearer tok\"en"] {
        let (v, _) = run(&s, &reg, "/w", &[auth]);
        let (status, h) = challenge(&v);
        assert_eq!(status, 401, "{auth}");
        assert!(
            h.starts_with(
                "Bearer realm=\"widgets\", error=\"invalid_token\", error_description=\""
            ),
            "{h}"
        );
    }
    let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
    assert_eq!(challenge(&run(&s, &reg, "/w", &[&long]).0).0, 401);
}

#[test]
fn missing_scope_is_403_insufficient_scope() {
    let (s, _, reg) = step(&["widgets.read", "widgets.write"], ScopeMatch::All, false);
    let (v, _) = run(&s, &reg, "/w", &["Bearer readonly"]);
    let (status, h) = challenge(&v);
    assert_eq!(status, 403);
    assert!(h.contains("error=\"insufficient_scope\""), "{h}");
    assert!(h.contains("scope=\"widgets.read widgets.write\""), "{h}");
    let (any, _, reg) = step(&["widgets.admin", "widgets.read"], ScopeMatch::Any, false);
    assert!(run(&any, &reg, "/w", &["Bearer readonly"]).0.is_continue());
    let (none, _, reg) = step(&["widgets.admin"], ScopeMatch::Any, false);
    assert_eq!(
        challenge(&run(&none, &reg, "/w", &["Bearer readonly"]).0).0,
        403
    );
}

#[test]
fn query_tokens_are_refused_unless_allowed() {
    let (s, r, reg) = step(&[], ScopeMatch::All, false);
    let (v, _) = run(&s, &reg, "/w?access_token=good.token", &[]);
    let (status, h) = challenge(&v);
    assert_eq!(status, 400);
    assert!(h.contains("error=\"invalid_request\""), "{h}");
    assert!(r.used.lock().expect("lock").is_empty(), "never validated");

    let (q, _, reg) = step(&[], ScopeMatch::All, true);
    assert!(run(&q, &reg, "/w?x=1&access_token=good.token", &[])
        .0
        .is_continue());
    let (both, _) = run(
        &q,
        &reg,
        "/w?access_token=good.token",
        &["Bearer good.token"],
    );
    assert_eq!(challenge(&both).0, 400);
}

#[test]
fn two_authorization_headers_are_a_bad_request() {
    let (s, _, reg) = step(&[], ScopeMatch::All, false);
    let (v, _) = run(&s, &reg, "/w", &["Bearer good.token", "Bearer readonly"]);
    assert_eq!(challenge(&v).0, 400);
}

#[test]
fn an_unavailable_validator_fails_closed() {
    let (s, _, reg) = step(&[], ScopeMatch::All, false);
    match run(&s, &reg, "/w", &["Bearer down"]).0 {
        Verdict::Reject(r) => assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE),
        Verdict::Continue => panic!("must not pass"),
    }
}

#[test]
fn realms_with_quotes_are_refused() {
    let mut reg = VarRegistry::new();
    let vars = BearerVars {
        client_id: reg.define("client.id"),
        subject: reg.define("token.sub"),
        scope: reg.define("token.scope"),
    };
    let r: Arc<dyn TokenResolver> = Arc::new(FakeResolver::default());
    assert!(RequireBearer::new("a\"b", vec![], ScopeMatch::All, false, r, vars).is_err());
}
