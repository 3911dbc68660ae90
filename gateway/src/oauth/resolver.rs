//! The validators behind `require_bearer`.
//!
//! [`LocalResolver`]: tokens this gateway issued. A JWT's signature, issuer, audience and
//! expiry are checked locally, then its record in the store (revoked? a refresh token?);
//! an opaque token is found by its digest. The answer is cached until the token expires or
//! the next revocation, and each use is counted for the write-behind usage statistics.
//!
//! [`RemoteJwtResolver`]: JWTs of another issuer, checked against its published key set.

use std::net::IpAddr;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use portcullis_assertions::bearer::{Prefetch, TokenError, TokenResolver, ValidToken};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::live::LiveTokens;
use super::remote::{KeyError, RemoteKeySet};
use super::{looks_like_jwt, TokenService};
use crate::store::{now_secs, TokenKind};

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Tokens of this gateway's token service.
#[derive(Debug)]
pub struct LocalResolver {
    pub service: Arc<TokenService>,
}

impl TokenResolver for LocalResolver {
    fn resolve(&self, token: &str, ip: IpAddr) -> Result<Arc<ValidToken>, TokenError> {
        let now = now_secs();
        let key = digest(token);
        let live = &self.service.live;
        if let Some(t) = live.cached(&key, now) {
            live.used(&t.id, ip, now);
            return Ok(t);
        }
        let epoch = live.epoch();
        let id = if looks_like_jwt(token) {
            self.service
                .verify_jwt(token, true)
                .map_err(|e| TokenError::Invalid(e.into()))?
                .jti
        } else {
            hex::encode(key)
        };
        let rec = self
            .service
            .store
            .token(&id)
            .map_err(|e| {
                log::error!("require_bearer: {e}");
                TokenError::Unavailable("the token store is unavailable".into())
            })?
            .ok_or(TokenError::Invalid(
                "the token is not known to this gateway".into(),
            ))?;
        if rec.kind != TokenKind::Access {
            return Err(TokenError::Invalid(
                "a refresh token cannot be used to call an API".into(),
            ));
        }
        match rec.status(now) {
            "active" => {}
            "revoked" => return Err(TokenError::Invalid("the token has been revoked".into())),
            _ => return Err(TokenError::Invalid("the token has expired".into())),
        }
        let valid = Arc::new(ValidToken {
            id: Arc::from(rec.id.as_str()),
            client_id: Arc::from(rec.client_id.as_str()),
            subject: Arc::from(rec.subject.as_str()),
            scope: Arc::from(rec.scope.as_str()),
            expires_at: rec.expires_at,
        });
        live.remember(key, valid.clone(), epoch);
        live.used(&valid.id, ip, now);
        Ok(valid)
    }
}

/// Another issuer's JWTs, verified with its published keys.
#[derive(Debug)]
pub struct RemoteJwtResolver {
    pub issuer: String,
    pub audience: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub keys: Arc<RemoteKeySet>,
    pub leeway: u64,
    /// Verified tokens (no revocation here: the issuer's tokens live until they expire).
    pub cache: LiveTokens,
}

/// The claims read from a third party's access token.
#[derive(Debug, Deserialize)]
struct RemoteClaims {
    sub: Option<String>,
    exp: i64,
    jti: Option<String>,
    scope: Option<String>,
    /// Some issuers list scopes as an array.
    scp: Option<Vec<String>>,
    client_id: Option<String>,
    azp: Option<String>,
}

impl TokenResolver for RemoteJwtResolver {
    fn resolve(&self, token: &str, _ip: IpAddr) -> Result<Arc<ValidToken>, TokenError> {
        let now = now_secs();
        let key = digest(token);
        if let Some(t) = self.cache.cached(&key, now) {
            return Ok(t);
        }
        if !looks_like_jwt(token) {
            return Err(TokenError::Invalid("the token is not a JWT".into()));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Invalid("the token is malformed".into()))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::Invalid(
                "the token's algorithm is not accepted".into(),
            ));
        }
        let found = self
            .keys
            .lookup(header.kid.as_deref())
            .map_err(|e| match e {
                KeyError::UnknownKid(_) => TokenError::Invalid(
                    "the token is signed by a key the issuer does not publish".into(),
                ),
                KeyError::Unavailable(why) => {
                    log::warn!("require_bearer: {why}");
                    TokenError::Unavailable(
                        "the issuer's signing keys cannot be fetched right now".into(),
                    )
                }
            })?;
        if found.algorithm.is_some_and(|a| a != header.alg) {
            return Err(TokenError::Invalid(
                "the token's algorithm does not match its key".into(),
            ));
        }
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.issuer]);
        match &self.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        v.leeway = self.leeway;
        v.validate_nbf = true;
        let claims = jsonwebtoken::decode::<RemoteClaims>(token, &found.key, &v)
            .map_err(|e| {
                TokenError::Invalid(
                    match e.kind() {
                        ErrorKind::ExpiredSignature => "the token has expired",
                        ErrorKind::ImmatureSignature => "the token is not valid yet",
                        ErrorKind::InvalidAudience => "the token is for another audience",
                        ErrorKind::InvalidIssuer => "the token is from another issuer",
                        ErrorKind::InvalidSignature => "the token's signature does not verify",
                        _ => "the token is malformed",
                    }
                    .into(),
                )
            })?
            .claims;
        let scope = claims
            .scope
            .or_else(|| claims.scp.map(|s| s.join(" ")))
            .unwrap_or_default();
        let subject = claims.sub.unwrap_or_default();
        let client = claims
            .client_id
            .or(claims.azp)
            .unwrap_or_else(|| subject.clone());
        let valid = Arc::new(ValidToken {
            id: Arc::from(
                claims
                    .jti
                    .unwrap_or_else(|| hex::encode(&key[..8]))
                    .as_str(),
            ),
            client_id: Arc::from(client.as_str()),
            subject: Arc::from(subject.as_str()),
            scope: Arc::from(scope.as_str()),
            expires_at: claims.exp,
        });
        self.cache.remember(key, valid.clone(), self.cache.epoch());
        Ok(valid)
    }

    fn prefetches(&self) -> bool {
        true
    }

    fn prefetch(&self, token: &str) -> Option<Prefetch> {
        let kid = jsonwebtoken::decode_header(token).ok()?.kid;
        if self.keys.lookup(kid.as_deref()).is_ok() {
            return None;
        }
        // An unknown key id (or no set yet): one refresh, shared with anyone else waiting.
        let keys = self.keys.clone();
        Some(Box::pin(async move { keys.refresh_if_allowed().await }))
    }
}
