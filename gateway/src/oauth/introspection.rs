//! Third-party opaque (or any) tokens checked at the issuer's RFC 7662 introspection
//! endpoint. The HTTP call happens in the step's prefetch, before the pipeline runs; the
//! answer is cached (an active token for at most `cache_ttl` and never past its `exp`, an
//! inactive one until the cache fills, since it can never become active again), and the
//! assertion itself reads only the cache.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_assertions::bearer::{TokenError, TokenResolver, ValidToken};
use portcullis_assertions::PrefetchWork;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::live::LiveTokens;
use crate::store::now_secs;

/// Inactive tokens remembered at most.
const MAX_NEGATIVE: usize = 100_000;

#[derive(Debug)]
pub struct IntrospectionResolver {
    pub url: String,
    pub client_id: String,
    pub client_secret: crate::runtime::Secret,
    /// Longest time an active answer is trusted without asking again.
    pub cache_ttl: i64,
    pub http: reqwest::Client,
    active: LiveTokens,
    inactive: Mutex<HashMap<[u8; 32], ()>>,
    /// Itself, for the prefetch futures that fill its caches.
    me: std::sync::Weak<IntrospectionResolver>,
}

/// The RFC 7662 answer fields we use.
#[derive(Debug, Deserialize)]
struct Answer {
    active: bool,
    scope: Option<String>,
    client_id: Option<String>,
    sub: Option<String>,
    exp: Option<i64>,
    jti: Option<String>,
    token_type: Option<String>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl IntrospectionResolver {
    #[must_use]
    pub fn new(
        url: &str,
        client_id: &str,
        client_secret: crate::runtime::Secret,
        cache_ttl: Duration,
    ) -> Arc<IntrospectionResolver> {
        Arc::new_cyclic(|me| IntrospectionResolver {
            url: url.to_owned(),
            client_id: client_id.to_owned(),
            client_secret,
            cache_ttl: i64::try_from(cache_ttl.as_secs()).unwrap_or(i64::MAX),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            active: LiveTokens::default(),
            inactive: Mutex::default(),
            me: me.clone(),
        })
    }

    fn known(&self, key: &[u8; 32], now: i64) -> bool {
        // cache_ttl 0: every request asks (the answer still reaches this request's check).
        self.cache_ttl > 0 && self.active.cached(key, now).is_some()
            || self
                .inactive
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(key)
    }

    async fn introspect(
        http: reqwest::Client,
        url: String,
        client_id: String,
        secret: String,
        token: String,
    ) -> Result<Answer, String> {
        let request = http
            .post(&url)
            .basic_auth(
                form_urlencoded::byte_serialize(client_id.as_bytes()).collect::<String>(),
                Some(form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()),
            )
            .header("accept", "application/json")
            .form(&[
                ("token", token.as_str()),
                ("token_type_hint", "access_token"),
            ]);
        let (_, body) = super::remote::send_bounded(request, 64 * 1024).await?;
        serde_json::from_slice(&body).map_err(|e| format!("not an RFC 7662 answer: {e}"))
    }

    fn record(&self, key: [u8; 32], result: Result<Answer, String>) {
        let now = now_secs();
        match result {
            Ok(a)
                if a.active
                    && a.token_type.as_deref().is_none_or(|t| {
                        t.eq_ignore_ascii_case("bearer") || t == "access_token"
                    }) =>
            {
                let exp = a.exp.unwrap_or(i64::MAX);
                let until = exp.min(now.saturating_add(self.cache_ttl.max(1)));
                let subject = a.sub.unwrap_or_default();
                let valid = Arc::new(ValidToken {
                    id: Arc::from(a.jti.unwrap_or_else(|| hex::encode(&key[..8])).as_str()),
                    client_id: Arc::from(a.client_id.unwrap_or_else(|| subject.clone()).as_str()),
                    subject: Arc::from(subject.as_str()),
                    scope: Arc::from(a.scope.unwrap_or_default().as_str()),
                    expires_at: until,
                });
                self.active.remember(key, valid, self.active.epoch());
            }
            Ok(_) => {
                self.active.forget(&key);
                let mut inactive = self
                    .inactive
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if inactive.len() >= MAX_NEGATIVE {
                    inactive.clear();
                }
                inactive.insert(key, ());
            }
            Err(e) => {
                log::warn!("require_bearer: introspection at {} failed: {e}", self.url);
                if self.cache_ttl == 0 {
                    self.active.forget(&key);
                }
            }
        }
    }
}

impl TokenResolver for IntrospectionResolver {
    fn resolve(&self, token: &str, _ip: IpAddr) -> Result<Arc<ValidToken>, TokenError> {
        let key = digest(token);
        let now = now_secs();
        if let Some(t) = self.active.cached(&key, now) {
            return Ok(t);
        }
        if self
            .inactive
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(&key)
        {
            return Err(TokenError::Invalid("the token is not active".into()));
        }
        Err(TokenError::Unavailable(
            "the token could not be introspected at its issuer".into(),
        ))
    }

    fn prefetches(&self) -> bool {
        true
    }

    fn prefetch(&self, token: &str) -> Option<PrefetchWork> {
        let key = digest(token);
        if self.known(&key, now_secs()) {
            return None;
        }
        let call = Self::introspect(
            self.http.clone(),
            self.url.clone(),
            self.client_id.clone(),
            self.client_secret.expose().to_owned(),
            token.to_owned(),
        );
        // The answer lands in this resolver's caches; it lives as long as the policy does,
        // and the future holds its own reference.
        let this: Arc<IntrospectionResolver> = self.self_ref()?;
        Some(Box::pin(async move {
            let result = call.await;
            this.record(key, result);
        }))
    }
}

impl IntrospectionResolver {
    /// A strong reference to self, for the prefetch future.
    fn self_ref(&self) -> Option<Arc<IntrospectionResolver>> {
        self.me.upgrade()
    }
}
