use std::net::IpAddr;

use portcullis_assertions::bearer::{TokenError, TokenResolver, ValidToken};

use super::keys::SigningKey;
use super::resolver::LocalResolver;
use super::*;
use crate::store::StateStore;

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
        saml_trusted: Vec::new(),
        store: StateStore::memory(),
        live: Arc::new(LiveTokens::default()),
        usage: UsagePolicy::default(),
        metadata_json: Vec::new(),
    })
}

fn grant(token_service: &TokenService, client: &str) -> Grant {
    let c = &token_service.clients[client];
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
    let token_service = service(60);
    assert!(token_service
        .authenticate(Some("jwt-app"), Some("s3cret"))
        .expect("ok")
        .is_some());
    assert_eq!(
        token_service
            .authenticate(Some("jwt-app"), Some("wrong"))
            .expect_err("refused")
            .code
            .as_str(),
        "invalid_client"
    );
    assert!(token_service
        .authenticate(Some("nobody"), Some("s3cret"))
        .is_err());
    assert!(token_service.authenticate(Some("jwt-app"), None).is_err());
    assert!(token_service
        .authenticate(None, None)
        .expect("ok")
        .is_none());
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
    assert_eq!(e.code, ErrorCode::InvalidScope);
    assert!(e.description.contains("\"admin\""));
}

/// What `require_bearer` does with a token: the resolver's prefetch (the store read),
/// awaited, then its synchronous check.
async fn check(r: &LocalResolver, token: &str) -> Result<Arc<ValidToken>, TokenError> {
    if let Some(work) = r.prefetch(token) {
        work.await;
    }
    r.resolve(token, ip())
}

#[tokio::test]
async fn issued_tokens_validate_until_revoked() {
    for client in ["jwt-app", "opaque-app"] {
        let token_service = service(60);
        let issued = token_service
            .issue(&grant(&token_service, client))
            .await
            .expect("issue");
        assert_eq!(looks_like_jwt(&issued.access_token), client == "jwt-app");
        let r = LocalResolver {
            service: token_service.clone(),
        };
        let v = check(&r, &issued.access_token).await.expect("valid");
        assert_eq!(&*v.client_id, client);
        assert_eq!(&*v.scope, "a b");
        // Cached now; a revocation is seen on the very next call.
        assert!(check(&r, &issued.access_token).await.is_ok());
        let n = token_service
            .revoke(
                &TokenFilter {
                    id: Some(v.id.to_string()),
                    ..TokenFilter::default()
                },
                "provider",
                None,
            )
            .await
            .expect("revoke");
        assert_eq!(n, 1);
        assert_eq!(
            check(&r, &issued.access_token).await,
            Err(TokenError::Invalid("the token has been revoked".into()))
        );
        // A refresh token is not an access token.
        let refresh = issued.refresh_token.expect("refresh");
        assert!(check(&r, &refresh).await.is_err());
    }
}

#[tokio::test]
async fn jwts_signed_otherwise_are_refused() {
    let token_service = service(60);
    let issued = token_service
        .issue(&grant(&token_service, "jwt-app"))
        .await
        .expect("issue");
    let r = LocalResolver {
        service: token_service.clone(),
    };
    let mut parts: Vec<String> = issued.access_token.split('.').map(str::to_owned).collect();
    // Tampered payload: another scope.
    let claims = URL_SAFE_NO_PAD.decode(&parts[1]).expect("b64");
    let tampered = String::from_utf8(claims)
        .expect("utf8")
        .replace("\"a b\"", "\"a b admin\"");
    parts[1] = URL_SAFE_NO_PAD.encode(tampered);
    assert!(matches!(
        check(&r, &parts.join(".")).await,
        Err(TokenError::Invalid(_))
    ));
    // alg none.
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"2026a"}"#);
    let forged = format!(
        "{none_header}.{}.",
        issued.access_token.split('.').nth(1).expect("payload")
    );
    assert!(matches!(
        check(&r, &forged).await,
        Err(TokenError::Invalid(_))
    ));
    // An expired token, even with a good signature.
    let short = service(1);
    let old = short.issue(&grant(&short, "jwt-app")).await.expect("issue");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = LocalResolver {
        service: short.clone(),
    };
    assert!(matches!(
        check(&r, &old.access_token).await,
        Err(TokenError::Invalid(_))
    ));
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let token_service = service(60);
    let client = token_service.clients["opaque-app"].clone();
    let first = token_service
        .issue(&grant(&token_service, "opaque-app"))
        .await
        .expect("issue");
    let r1 = first.refresh_token.clone().expect("refresh");
    let second = token_service
        .refresh(&client, &r1, Some("a"))
        .await
        .expect("rotate");
    assert_eq!(second.scope, "a");
    let r2 = second.refresh_token.clone().expect("new refresh");
    assert_ne!(r1, r2);
    // Widening the scope on refresh is refused.
    let e = token_service
        .refresh(&client, &r2, Some("a b"))
        .await
        .expect_err("wider");
    assert_eq!(e.code, ErrorCode::InvalidScope);
    // The refused attempt did not spend r2.
    let third = token_service
        .refresh(&client, &r2, None)
        .await
        .expect("r2 still live");
    assert_eq!(third.scope, "a");
    // Replaying the dead r1 revokes the whole family, r2 and both access tokens included.
    let e = token_service
        .refresh(&client, &r1, None)
        .await
        .expect_err("reuse");
    assert_eq!(e.code, ErrorCode::InvalidGrant);
    let r = LocalResolver {
        service: token_service.clone(),
    };
    assert!(check(&r, &first.access_token).await.is_err());
    assert!(check(&r, &second.access_token).await.is_err());
    assert!(check(&r, &third.access_token).await.is_err());
    assert!(token_service
        .refresh(&client, third.refresh_token.as_deref().expect("r3"), None)
        .await
        .is_err());
    // Another client cannot use the refresh token.
    let other = token_service.clients["jwt-app"].clone();
    let fresh = token_service
        .issue(&grant(&token_service, "opaque-app"))
        .await
        .expect("issue");
    assert!(token_service
        .refresh(&other, fresh.refresh_token.as_deref().expect("r"), None)
        .await
        .is_err());
}

#[tokio::test]
async fn a_replayed_assertion_id_is_refused() {
    let token_service = service(60);
    let mut g = grant(&token_service, "jwt-app");
    g.once = Some(("jwt-bearer\niss\njti-1".into(), now_secs() + 60));
    token_service.issue(&g).await.expect("first");
    assert_eq!(
        token_service
            .issue(&g)
            .await
            .expect_err("replay")
            .code
            .as_str(),
        "invalid_grant"
    );
}

#[tokio::test]
async fn a_token_not_prefetched_is_refused_without_a_store_read() {
    let token_service = service(60);
    let r = LocalResolver {
        service: token_service.clone(),
    };
    for client in ["jwt-app", "opaque-app"] {
        let issued = token_service
            .issue(&grant(&token_service, client))
            .await
            .expect("issue");
        // The check alone never reads the store: unverified, the token is refused (fail
        // closed), and the refusal says validation could not be done, not that it is bad.
        assert_eq!(
            r.resolve(&issued.access_token, ip()),
            Err(TokenError::Unavailable(
                "the token could not be checked against the state store".into()
            ))
        );
        assert!(check(&r, &issued.access_token).await.is_ok());
        // Once read, it is answered from memory: no prefetch work remains.
        assert!(r.prefetch(&issued.access_token).is_none());
        assert!(r.resolve(&issued.access_token, ip()).is_ok());
    }
    // A token the store does not know is remembered as refused.
    let unknown = "an-opaque-token-nobody-issued";
    assert_eq!(
        check(&r, unknown).await,
        Err(TokenError::Invalid(
            "the token is not known to this gateway".into()
        ))
    );
    assert!(r.prefetch(unknown).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_by_another_process_reaches_this_cache_through_the_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let open = || {
        StateStore::from_backend(
            Arc::new(crate::store::sqlite::SqliteStore::open(&path).expect("open")),
            "shared",
        )
    };
    let here = with_store(service(60), open());
    let elsewhere = with_store(service(60), open());
    let issued = here
        .issue(&grant(&here, "opaque-app"))
        .await
        .expect("issue");
    let r = LocalResolver {
        service: here.clone(),
    };
    let id = check(&r, &issued.access_token)
        .await
        .expect("valid")
        .id
        .to_string();
    elsewhere
        .revoke(
            &TokenFilter {
                id: Some(id),
                ..TokenFilter::default()
            },
            "provider",
            None,
        )
        .await
        .expect("revoke");
    // This process has not looked at the store's epoch yet: its cache still answers.
    assert!(check(&r, &issued.access_token).await.is_ok());
    let epoch = here
        .store
        .revocations()
        .revocation_epoch()
        .await
        .expect("epoch");
    assert!(here.live.observe_store_epoch(epoch));
    assert_eq!(
        check(&r, &issued.access_token).await,
        Err(TokenError::Invalid("the token has been revoked".into()))
    );
}

/// The same service over another store (and a cache of its own).
fn with_store(token_service: Arc<TokenService>, store: StateStore) -> Arc<TokenService> {
    let token_service = Arc::try_unwrap(token_service).expect("sole owner");
    Arc::new(TokenService {
        store,
        live: Arc::new(LiveTokens::default()),
        ..token_service
    })
}

#[test]
fn the_jwks_lists_every_key_without_private_parts() {
    let token_service = service(60);
    let doc: serde_json::Value =
        serde_json::from_slice(&token_service.keys.jwks_json).expect("json");
    let keys = doc["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["kid"], "2026a");
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[1]["kty"], "RSA");
    for k in keys {
        assert!(k.get("d").is_none(), "no private key material");
    }
}
