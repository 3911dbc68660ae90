//! The OAuth 2.0 token service: the gateway as authorization server (token endpoint with
//! `client_credentials`, `jwt-bearer` (RFC 7523), `saml2-bearer` (RFC 7522) and rotating
//! `refresh_token` grants, introspection (RFC 7662), revocation (RFC 7009), JWKS and RFC
//! 8414 metadata) and as the resource-side validator behind `require_bearer`.
//!
//! Every issued token, JWT or opaque, has a record in the state store: that is where its
//! revocation, its refresh family and its usage live.

pub mod background;
pub mod endpoint;
pub mod error;
pub mod introspection;
pub mod jwt_bearer;
pub mod keys;
pub mod live;
pub mod remote;
pub mod resolver;
pub mod revocation_watch;
pub mod saml_bearer;
pub mod usage;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{
    now_secs, Revocation, StateStore, StoreError, TokenFilter, TokenFormat, TokenKind, TokenRecord,
};
use error::ErrorCode;
use keys::SigningKeys;
use live::LiveTokens;

pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// An error in the RFC 6749 §5.2 form (also used by introspection and revocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// The `error` member; it decides the HTTP status too.
    pub code: ErrorCode,
    pub description: Cow<'static, str>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        OAuthError {
            code,
            description: description.into(),
        }
    }

    #[must_use]
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "error": self.code.as_str(),
            "error_description": self.description,
        }))
        .unwrap_or_default()
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        log::error!("token service: {e}");
        OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            "the token store is unavailable; try again later",
        )
    }
}

/// A client registered with the token service.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub secret_sha256: [u8; 32],
    /// `client_credentials` and/or `refresh_token`.
    pub grants: Vec<String>,
    /// Scopes it may ask for; no `scope` parameter means all of them.
    pub scopes: Vec<String>,
    pub token_format: TokenFormat,
    /// Issue a refresh token with each access token.
    pub refresh_tokens: bool,
    /// May introspect any token, not only its own (a resource server).
    pub introspect_any: bool,
}

impl Client {
    /// True when `secret` is this client's (constant time, over digests).
    #[must_use]
    pub fn secret_matches(&self, secret: &str) -> bool {
        let d = Sha256::digest(secret.as_bytes());
        d.ct_eq(&self.secret_sha256).into()
    }

    #[must_use]
    pub fn may(&self, grant: &str) -> bool {
        self.grants.iter().any(|g| g == grant)
    }
}

/// Anomaly thresholds for token usage.
#[derive(Debug, Clone, Default)]
pub struct UsagePolicy {
    /// Flag a token used from more distinct addresses than this.
    pub max_distinct_ips: Option<u64>,
    /// Flag a token used more often than this per minute (judged per flush interval).
    pub max_per_minute: Option<u64>,
    /// Revoke a token as soon as it is flagged.
    pub auto_revoke: bool,
    pub flush_interval: std::time::Duration,
    /// Each request's use is in the store before the request goes upstream (a crash loses
    /// no count), at the price of a store write per request.
    pub durable: bool,
}

/// What a grant resolved to: the token to issue.
#[derive(Debug, Clone)]
pub struct Grant {
    pub client_id: String,
    pub subject: String,
    pub scope: String,
    pub grant_type: &'static str,
    pub format: TokenFormat,
    pub refresh: bool,
    pub family_id: Option<String>,
    pub previous_refresh: Option<String>,
    pub source: Option<String>,
    /// A one-time marker to consume first (the assertion's issuer and `jti` or SAML ID),
    /// until this time.
    pub once: Option<(String, i64)>,
}

/// The token endpoint's success answer.
#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// The claims of the gateway's access tokens (RFC 9068 shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// The compiled token service.
#[derive(Debug)]
pub struct TokenService {
    pub issuer: String,
    pub token_endpoint: String,
    /// `aud` of the gateway's access tokens.
    pub audience: String,
    pub access_ttl: i64,
    pub refresh_ttl: i64,
    pub keys: SigningKeys,
    pub clients: HashMap<String, Client>,
    pub trusted: Vec<jwt_bearer::TrustedIssuer>,
    /// Identity providers trusted for the saml2-bearer grant.
    pub saml_trusted: Vec<saml_bearer::TrustedSamlIssuer>,
    pub store: StateStore,
    pub live: Arc<LiveTokens>,
    pub usage: UsagePolicy,
    /// RFC 8414 metadata, rendered once.
    pub metadata_json: Vec<u8>,
}

/// 32 random bytes, URL-safe base64 (256 bits: unguessable).
///
/// # Errors
/// The system's random source failed.
pub fn random_token(bytes: usize) -> Result<String, OAuthError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|_| {
        OAuthError::new(
            ErrorCode::ServerError,
            "the gateway could not draw random bytes",
        )
    })?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// The store id of an opaque token: hex SHA-256 of its text.
#[must_use]
pub fn opaque_id(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// True when the text has the shape of a JWS compact serialisation.
#[must_use]
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

impl TokenService {
    /// RFC 8414 metadata for this issuer.
    #[must_use]
    pub fn metadata(issuer: &str, trusted: bool, saml_trusted: bool) -> serde_json::Value {
        let base = issuer.trim_end_matches('/');
        let mut grants = vec![GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN];
        if trusted {
            grants.push(GRANT_JWT_BEARER);
        }
        if saml_trusted {
            grants.push(saml_bearer::GRANT_SAML2_BEARER);
        }
        serde_json::json!({
            "issuer": issuer,
            "token_endpoint": format!("{base}/oauth2/token"),
            "introspection_endpoint": format!("{base}/oauth2/introspect"),
            "revocation_endpoint": format!("{base}/oauth2/revoke"),
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "grant_types_supported": grants,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": [],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
        })
    }

    /// Checks client credentials. `Ok(None)`: no credentials came.
    ///
    /// # Errors
    /// `invalid_client` for an unknown client or a wrong secret.
    pub fn authenticate(
        &self,
        id: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Option<&Client>, OAuthError> {
        let Some(id) = id else {
            return Ok(None);
        };
        let client = self.clients.get(id);
        // Compare even for an unknown client, so timing does not tell which ids exist.
        let ok = match (client, secret) {
            (Some(c), Some(s)) => c.secret_matches(s),
            (None, Some(s)) => {
                let _ = Sha256::digest(s.as_bytes()).ct_eq(&[0u8; 32]);
                false
            }
            (_, None) => false,
        };
        if !ok {
            return Err(OAuthError::new(
                ErrorCode::InvalidClient,
                "client authentication failed",
            ));
        }
        Ok(client)
    }

    /// The scope to grant: what was asked for, when all of it is allowed; everything allowed
    /// when nothing was asked for.
    ///
    /// # Errors
    /// `invalid_scope` naming the first scope that is not allowed.
    pub fn grant_scope(
        requested: Option<&str>,
        allowed: &[String],
        whom: &str,
    ) -> Result<String, OAuthError> {
        let Some(requested) = requested.filter(|r| !r.trim().is_empty()) else {
            return Ok(allowed.join(" "));
        };
        let mut out: Vec<&str> = Vec::new();
        for s in requested.split(' ').filter(|s| !s.is_empty()) {
            if !allowed.iter().any(|a| a == s) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidScope,
                    format!("scope \"{}\" is not granted to {whom}", printable(s)),
                ));
            }
            if !out.contains(&s) {
                out.push(s);
            }
        }
        Ok(out.join(" "))
    }

    /// Issues the tokens of a grant and stores their records.
    ///
    /// # Errors
    /// A replayed assertion (`invalid_grant`), or the store failed.
    pub async fn issue(&self, g: &Grant) -> Result<Issued, OAuthError> {
        let now = now_secs();
        if let Some((key, until)) = &g.once {
            if !self.store.once().use_once(key, *until, now).await? {
                return Err(OAuthError::new(
                    ErrorCode::InvalidGrant,
                    "this assertion has been used before (replay of its jti or ID)",
                ));
            }
        }
        let mut refresh_token = None;
        let mut refresh_id = None;
        let family = match (&g.family_id, g.refresh) {
            (Some(f), _) => Some(f.clone()),
            (None, true) => Some(random_token(16)?),
            (None, false) => None,
        };
        if g.refresh {
            let token = random_token(32)?;
            let id = opaque_id(&token);
            self.store
                .tokens()
                .insert_token(&TokenRecord {
                    kind: TokenKind::Refresh,
                    format: TokenFormat::Opaque,
                    refresh_id: g.previous_refresh.clone(),
                    expires_at: now + self.refresh_ttl,
                    ..fresh_record(id.clone(), g, family.clone(), now)
                })
                .await?;
            refresh_token = Some(token);
            refresh_id = Some(id);
        }
        let exp = now + self.access_ttl;
        let (access_token, id) = match g.format {
            TokenFormat::Opaque => {
                let t = random_token(32)?;
                let id = opaque_id(&t);
                (t, id)
            }
            TokenFormat::Jwt => {
                let jti = random_token(16)?;
                let key = self.keys.active();
                let mut header = Header::new(key.algorithm);
                header.kid = Some(key.kid.clone());
                header.typ = Some("at+jwt".to_owned());
                let claims = AccessClaims {
                    iss: self.issuer.clone(),
                    sub: g.subject.clone(),
                    aud: self.audience.clone(),
                    client_id: g.client_id.clone(),
                    scope: g.scope.clone(),
                    iat: now,
                    exp,
                    jti: jti.clone(),
                };
                let t = jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|e| {
                    log::error!("token service: signing failed: {e}");
                    OAuthError::new(ErrorCode::ServerError, "the token could not be signed")
                })?;
                (t, jti)
            }
        };
        self.store
            .tokens()
            .insert_token(&TokenRecord {
                kind: TokenKind::Access,
                format: g.format,
                refresh_id,
                expires_at: exp,
                ..fresh_record(id, g, family, now)
            })
            .await?;
        Ok(Issued {
            access_token,
            token_type: "Bearer",
            expires_in: self.access_ttl,
            scope: g.scope.clone(),
            refresh_token,
        })
    }

    /// The `refresh_token` grant: the presented token dies and a new pair is issued in the
    /// same family; a token that already died being presented again revokes the family.
    ///
    /// # Errors
    /// `invalid_grant` / `invalid_scope` per RFC 6749.
    pub async fn refresh(
        &self,
        client: &Client,
        token: &str,
        scope: Option<&str>,
    ) -> Result<Issued, OAuthError> {
        let now = now_secs();
        let invalid = || {
            OAuthError::new(
                ErrorCode::InvalidGrant,
                "the refresh token is invalid, expired or revoked",
            )
        };
        let Some(rec) = self.store.tokens().token(&opaque_id(token)).await? else {
            return Err(invalid());
        };
        if rec.kind != TokenKind::Refresh || rec.client_id != client.id {
            return Err(invalid());
        }
        if rec.revoked_at.is_some() || now >= rec.expires_at {
            return Err(invalid());
        }
        // A narrower scope may be asked for, never a wider one (checked before the token is spent).
        let original: Vec<String> = rec
            .scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let scope = Self::grant_scope(scope, &original, "this refresh token")?;
        if !self.store.tokens().mark_rotated(&rec.id, now).await? {
            // Already exchanged once: someone holds a copy. Kill the whole family.
            if let Some(family) = &rec.family_id {
                let n = self
                    .revoke(
                        &TokenFilter {
                            family_id: Some(family.clone()),
                            now,
                            ..TokenFilter::default()
                        },
                        "reuse",
                        Some("a rotated refresh token was presented again".to_owned()),
                    )
                    .await?;
                log::warn!(
                    "token service: refresh token reuse by client {}; {n} token(s) of its family revoked",
                    client.id
                );
            }
            return Err(OAuthError::new(
                ErrorCode::InvalidGrant,
                "the refresh token was already used; every token of this grant has been revoked",
            ));
        }
        self.issue(&Grant {
            client_id: client.id.clone(),
            subject: rec.subject.clone(),
            scope,
            grant_type: GRANT_REFRESH_TOKEN,
            format: client.token_format,
            refresh: true,
            family_id: rec.family_id.clone(),
            previous_refresh: Some(rec.id.clone()),
            source: rec.source.clone(),
            once: None,
        })
        .await
    }

    /// Revokes what the filter selects and invalidates the verified-token cache.
    ///
    /// # Errors
    /// The store failed.
    pub async fn revoke(
        &self,
        filter: &TokenFilter,
        by: &str,
        reason: Option<String>,
    ) -> Result<usize, StoreError> {
        let revoked = self
            .store
            .revocations()
            .revoke(
                filter,
                &Revocation {
                    at: now_secs(),
                    by: by.to_owned(),
                    reason,
                },
            )
            .await?;
        // Even when nothing matched: a racing validation must not cache a stale answer.
        self.live.revoked_here(revoked.epoch);
        Ok(revoked.ids.len())
    }

    /// The record of a token presented to introspection or revocation: a JWT of ours
    /// (signature checked, expiry not), or an opaque token by its digest.
    ///
    /// # Errors
    /// The store failed.
    pub async fn find_presented(&self, token: &str) -> Result<Option<TokenRecord>, StoreError> {
        let id = if looks_like_jwt(token) {
            match self.verify_jwt(token, false) {
                Ok(c) => c.jti,
                Err(_) => return Ok(None),
            }
        } else {
            opaque_id(token)
        };
        self.store.tokens().token(&id).await
    }

    /// Verifies one of our JWTs: signature by a listed key, issuer, audience, and expiry
    /// when `check_exp`.
    ///
    /// # Errors
    /// What is wrong with it, for `error_description`.
    pub fn verify_jwt(&self, token: &str, check_exp: bool) -> Result<AccessClaims, &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "the token is malformed")?;
        let kid = header.kid.as_deref().ok_or("the token names no key")?;
        let key = self
            .keys
            .by_kid(kid)
            .ok_or("the token is signed by an unknown key")?;
        if header.alg != key.algorithm {
            return Err("the token's algorithm does not match its key");
        }
        let mut v = Validation::new(key.algorithm);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.leeway = 5;
        v.validate_exp = check_exp;
        if !check_exp {
            v.required_spec_claims.clear();
        }
        jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired",
                jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                    "the token is for another audience"
                }
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                    "the token is from another issuer"
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "the token's signature does not verify"
                }
                _ => "the token is malformed",
            })
    }
}

/// The record of a token a grant just produced (kind, format, links and expiry to fill in).
fn fresh_record(id: String, g: &Grant, family_id: Option<String>, now: i64) -> TokenRecord {
    TokenRecord {
        id,
        kind: TokenKind::Access,
        format: g.format,
        client_id: g.client_id.clone(),
        subject: g.subject.clone(),
        scope: g.scope.clone(),
        grant_type: g.grant_type.to_owned(),
        refresh_id: None,
        family_id,
        source: g.source.clone(),
        issued_at: now,
        expires_at: now,
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
        rotated_at: None,
        usage: crate::store::Usage::default(),
        flagged: None,
    }
}

/// A value safe to echo in an error description.
#[must_use]
pub fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
