use std::net::IpAddr;

use portcullis_assertions::bearer::{TokenError, TokenResolver};

use super::keys::SigningKey;
use super::resolver::LocalResolver;
use super::*;
use crate::store::memory::MemoryStore;

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/oauth")
        .join(name);
    std::fs::read(p).expect("fixture")
}

fn service(access_ttl: i64) -> Arc<TokenService> {
    let keys = SigningKeys::new(vec![
        SigningKey::from_pem(
            "2026a",
            jsonwebtoken::Algorithm::ES256,
            &fixture("gateway-es256-2026a.pem"),
        )
        .expect("key"),
        SigningKey::from_pem(
            "rsa",
            jsonwebtoken::Algorithm::RS256,
            &fixture("gateway-rs256.pem"),
        )
        .expect("key"),
    ])
    .expect("ring");
    let mut clients = HashMap::new();
    for (id, format) in [
        ("jwt-app", TokenFormat::Jwt),
        ("opaque-app", TokenFormat::Opaque),
    ] {
        clients.insert(
            id.to_owned(),
            Client {
                id: id.to_owned(),
                secret_sha256: Sha256::digest(b"s3cret").into(),
                grants: vec![GRANT_CLIENT_CREDENTIALS.into(), GRANT_REFRESH_TOKEN.into()],
                scopes: vec!["a".into(), "b".into()],
                token_format: format,
                refresh_tokens: true,
                introspect_any: false,
            },
        );
    }
    Arc::new(TokenService {
        issuer: "https://gw.test".into(),
        token_endpoint: "https://gw.test/oauth2/token".into(),
        audience: "https://gw.test".into(),
        access_ttl,
        refresh_ttl: 3600,
        keys,
        clients,
        trusted: Vec::new(),
        store: Arc::new(MemoryStore::default()),
        live: Arc::new(LiveTokens::default()),
        usage: UsagePolicy::default(),
        metadata_json: Vec::new(),
    })
}

fn grant(ts: &TokenService, client: &str) -> Grant {
    let c = &ts.clients[client];
    Grant {
        client_id: c.id.clone(),
        subject: c.id.clone(),
        scope: "a b".into(),
        grant_type: GRANT_CLIENT_CREDENTIALS,
        format: c.token_format,
        refresh: true,
        family_id: None,
        previous_refresh: None,
        source: None,
        once: None,
    }
}

fn ip() -> IpAddr {
    "192.0.2.1".parse().expect("ip")
}

#[test]
fn client_secrets_are_checked() {
    let ts = service(60);
    assert!(ts
        .authenticate(Some("jwt-app"), Some("s3cret"))
        .expect("ok")
        .is_some());
    assert_eq!(
        ts.authenticate(Some("jwt-app"), Some("wrong"))
            .expect_err("refused")
            .error,
        "invalid_client"
    );
    assert!(ts.authenticate(Some("nobody"), Some("s3cret")).is_err());
    assert!(ts.authenticate(Some("jwt-app"), None).is_err());
    assert!(ts.authenticate(None, None).expect("ok").is_none());
}

#[test]
fn scopes_are_granted_only_when_allowed() {
    let allowed = vec!["a".to_owned(), "b".to_owned()];
    assert_eq!(
        TokenService::grant_scope(None, &allowed, "x").expect("all"),
        "a b"
    );
    assert_eq!(
        TokenService::grant_scope(Some("b b"), &allowed, "x").expect("b"),
        "b"
    );
    let e = TokenService::grant_scope(Some("a admin"), &allowed, "this client").expect_err("no");
    assert_eq!(e.error, "invalid_scope");
    assert!(e.description.contains("\"admin\""));
}

#[test]
fn issued_tokens_validate_until_revoked() {
    for client in ["jwt-app", "opaque-app"] {
        let ts = service(60);
        let issued = ts.issue(&grant(&ts, client)).expect("issue");
        assert_eq!(looks_like_jwt(&issued.access_token), client == "jwt-app");
        let r = LocalResolver {
            service: ts.clone(),
        };
        let v = r.resolve(&issued.access_token, ip()).expect("valid");
        assert_eq!(&*v.client_id, client);
        assert_eq!(&*v.scope, "a b");
        // Cached now; a revocation is seen on the very next call.
        assert!(r.resolve(&issued.access_token, ip()).is_ok());
        let n = ts
            .revoke(
                &TokenFilter {
                    id: Some(v.id.to_string()),
                    ..TokenFilter::default()
                },
                "provider",
                None,
            )
            .expect("revoke");
        assert_eq!(n, 1);
        assert_eq!(
            r.resolve(&issued.access_token, ip()),
            Err(TokenError::Invalid("the token has been revoked".into()))
        );
        // A refresh token is not an access token.
        let refresh = issued.refresh_token.expect("refresh");
        assert!(r.resolve(&refresh, ip()).is_err());
    }
}

#[test]
fn jwts_signed_otherwise_are_refused() {
    let ts = service(60);
    let issued = ts.issue(&grant(&ts, "jwt-app")).expect("issue");
    let r = LocalResolver {
        service: ts.clone(),
    };
    let mut parts: Vec<String> = issued.access_token.split('.').map(str::to_owned).collect();
    // Tampered payload: another scope.
    let claims = URL_SAFE_NO_PAD.decode(&parts[1]).expect("b64");
    let tampered = String::from_utf8(claims)
        .expect("utf8")
        .replace("\"a b\"", "\"a b admin\"");
    parts[1] = URL_SAFE_NO_PAD.encode(tampered);
    assert!(matches!(
        r.resolve(&parts.join("."), ip()),
        Err(TokenError::Invalid(_))
    ));
    // alg none.
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"2026a"}"#);
    let forged = format!(
        "{none_header}.{}.",
        issued.access_token.split('.').nth(1).expect("payload")
    );
    assert!(matches!(
        r.resolve(&forged, ip()),
        Err(TokenError::Invalid(_))
    ));
    // An expired token, even with a good signature.
    let short = service(1);
    let old = short.issue(&grant(&short, "jwt-app")).expect("issue");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = LocalResolver {
        service: short.clone(),
    };
    assert!(matches!(
        r.resolve(&old.access_token, ip()),
        Err(TokenError::Invalid(_))
    ));
}

#[test]
fn refresh_rotates_and_reuse_revokes_the_family() {
    let ts = service(60);
    let client = ts.clients["opaque-app"].clone();
    let first = ts.issue(&grant(&ts, "opaque-app")).expect("issue");
    let r1 = first.refresh_token.clone().expect("refresh");
    let second = ts.refresh(&client, &r1, Some("a")).expect("rotate");
    assert_eq!(second.scope, "a");
    let r2 = second.refresh_token.clone().expect("new refresh");
    assert_ne!(r1, r2);
    // Widening the scope on refresh is refused.
    let e = ts.refresh(&client, &r2, Some("a b")).expect_err("wider");
    assert_eq!(e.error, "invalid_scope");
    // The refused attempt did not spend r2.
    let third = ts.refresh(&client, &r2, None).expect("r2 still live");
    assert_eq!(third.scope, "a");
    // Replaying the dead r1 revokes the whole family, r2 and both access tokens included.
    let e = ts.refresh(&client, &r1, None).expect_err("reuse");
    assert_eq!(e.error, "invalid_grant");
    let r = LocalResolver {
        service: ts.clone(),
    };
    assert!(r.resolve(&first.access_token, ip()).is_err());
    assert!(r.resolve(&second.access_token, ip()).is_err());
    assert!(r.resolve(&third.access_token, ip()).is_err());
    assert!(ts
        .refresh(&client, third.refresh_token.as_deref().expect("r3"), None)
        .is_err());
    // Another client cannot use the refresh token.
    let other = ts.clients["jwt-app"].clone();
    let fresh = ts.issue(&grant(&ts, "opaque-app")).expect("issue");
    assert!(ts
        .refresh(&other, fresh.refresh_token.as_deref().expect("r"), None)
        .is_err());
}

#[test]
fn a_replayed_assertion_id_is_refused() {
    let ts = service(60);
    let mut g = grant(&ts, "jwt-app");
    g.once = Some(("jwt-bearer\niss\njti-1".into(), now_secs() + 60));
    ts.issue(&g).expect("first");
    assert_eq!(ts.issue(&g).expect_err("replay").error, "invalid_grant");
}

#[test]
fn the_jwks_lists_every_key_without_private_parts() {
    let ts = service(60);
    let doc: serde_json::Value = serde_json::from_slice(&ts.keys.jwks_json).expect("json");
    let keys = doc["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["kid"], "2026a");
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[1]["kty"], "RSA");
    for k in keys {
        assert!(k.get("d").is_none(), "no private key material");
    }
}
