//! The validators behind `require_bearer`.
//!
//! [`LocalResolver`]: tokens this gateway issued. Its `prefetch` (awaited before the
//! pipeline runs) checks a JWT's signature, issuer, audience and expiry, or takes an opaque
//! token's digest, and reads the token's record from the state store: an active access
//! token goes into the verified-token cache, anything else into the remembered refusals.
//! `resolve` (inside the step) reads only those, never the store, and counts each use for
//! the write-behind usage statistics. A token found in neither was not read from the store
//! (the store failed, or a revocation landed between the read and the check): it is
//! refused with 503 `token-validation-unavailable`, never let through.
//!
//! [`RemoteJwtResolver`]: JWTs of another issuer, checked against its published key set.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use portcullis_assertions::bearer::{TokenError, TokenResolver, ValidToken};
use portcullis_assertions::PrefetchWork;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::live::LiveTokens;
use super::remote::{KeyError, RemoteKeySet};
use super::{looks_like_jwt, TokenService};
use crate::store::{now_secs, TokenKind, TokenRecord};

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Tokens of this gateway's token service.
#[derive(Debug)]
pub struct LocalResolver {
    pub service: Arc<TokenService>,
}

/// What a token's record says at `now`: the validated token, or why it is refused.
fn judge(record: &TokenRecord, now: i64) -> Result<ValidToken, Cow<'static, str>> {
    if record.kind != TokenKind::Access {
        return Err("a refresh token cannot be used to call an API".into());
    }
    match record.status(now) {
        "active" => Ok(ValidToken {
            id: Arc::from(record.id.as_str()),
            client_id: Arc::from(record.client_id.as_str()),
            subject: Arc::from(record.subject.as_str()),
            scope: Arc::from(record.scope.as_str()),
            expires_at: record.expires_at,
        }),
        "revoked" => Err("the token has been revoked".into()),
        _ => Err("the token has expired".into()),
    }
}

impl TokenResolver for LocalResolver {
    fn resolve(&self, token: &str, ip: IpAddr) -> Result<Arc<ValidToken>, TokenError> {
        let now = now_secs();
        let key = digest(token);
        let live = &self.service.live;
        if let Some(valid) = live.cached(&key, now) {
            live.used(&valid.id, ip, now);
            return Ok(valid);
        }
        if let Some(why) = live.refusal(&key, now) {
            return Err(TokenError::Invalid(why));
        }
        // Prefetch leaves a JWT that does not verify to this check, for its precise reason.
        if looks_like_jwt(token) {
            self.service
                .verify_jwt(token, true)
                .map_err(|why| TokenError::Invalid(why.into()))?;
        }
        Err(TokenError::Unavailable(
            "the token could not be checked against the state store".into(),
        ))
    }

    fn prefetches(&self) -> bool {
        true
    }

    fn prefetch(&self, token: &str) -> Option<PrefetchWork> {
        let now = now_secs();
        let key = digest(token);
        let live = &self.service.live;
        if live.cached(&key, now).is_some() || live.refusal(&key, now).is_some() {
            return None;
        }
        let id = if looks_like_jwt(token) {
            // A JWT that does not verify needs no store read: resolve refuses it.
            self.service.verify_jwt(token, true).ok()?.jti
        } else {
            hex::encode(key)
        };
        // Read before the store is: a revocation racing with the read leaves the cached
        // answer in an older epoch, where it is not trusted.
        let epoch = live.epoch();
        let service = self.service.clone();
        Some(Box::pin(async move {
            match service.store.tokens().token(&id).await {
                Ok(Some(record)) => match judge(&record, now) {
                    Ok(valid) => service.live.remember(key, Arc::new(valid), epoch),
                    Err(why) => service.live.remember_refusal(key, why, now),
                },
                Ok(None) => service.live.remember_refusal(
                    key,
                    "the token is not known to this gateway".into(),
                    now,
                ),
                // Nothing is remembered: resolve refuses with 503 (fail closed).
                Err(error) => log::error!("require_bearer: {error}"),
            }
        }))
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

    fn prefetch(&self, token: &str) -> Option<PrefetchWork> {
        let kid = jsonwebtoken::decode_header(token).ok()?.kid;
        if self.keys.lookup(kid.as_deref()).is_ok() {
            return None;
        }
        // An unknown key id (or no set yet): one refresh, shared with anyone else waiting.
        let keys = self.keys.clone();
        Some(Box::pin(async move { keys.refresh_if_allowed().await }))
    }
}
