//! Key sets published by others at a URL: a JWKS, or a JSON map of key id → PEM X.509
//! certificate (the form Google publishes). Fetched in the background before they expire,
//! fetched again at once (single-flight, at most once per `min_refresh`) when a token names
//! a key id we do not know, so daily rotation needs nothing from the operator. When the URL
//! fails the last good set keeps serving; a set that was never fetched is reported as
//! unavailable (503), never as an invalid token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::store::now_secs;

/// Largest key-set document read.
const MAX_DOCUMENT: usize = 1024 * 1024;
/// Lifetime of a fetched set when the answer carries no `max-age`.
const DEFAULT_TTL: i64 = 3600;
const MIN_TTL: i64 = 60;
const MAX_TTL: i64 = 24 * 3600;

/// The two publication formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeysFormat {
    Jwks,
    X509Map,
}

/// One published key.
#[derive(Clone)]
pub struct RemoteKey {
    pub key: DecodingKey,
    /// The algorithm the publisher pinned (`alg` of a JWK), if any.
    pub algorithm: Option<Algorithm>,
}

/// A fetched set.
pub struct Snapshot {
    pub keys: HashMap<String, RemoteKey>,
    pub fetched_at: i64,
    pub expires_at: i64,
}

/// Why no key could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The set is there but holds no such key id (even after a refresh).
    UnknownKid(String),
    /// The set has never been fetched successfully.
    Unavailable(String),
}

pub struct RemoteKeySet {
    pub url: String,
    pub format: KeysFormat,
    client: reqwest::Client,
    snapshot: ArcSwapOption<Snapshot>,
    refreshing: tokio::sync::Mutex<()>,
    last_attempt: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    /// Unix second when the background refresher should fetch again.
    next_refresh: AtomicI64,
    min_refresh: Duration,
}

impl std::fmt::Debug for RemoteKeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeySet")
            .field("url", &self.url)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl RemoteKeySet {
    #[must_use]
    pub fn new(url: &str, format: KeysFormat, min_refresh: Duration) -> RemoteKeySet {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        RemoteKeySet {
            url: url.to_owned(),
            format,
            client,
            snapshot: ArcSwapOption::empty(),
            refreshing: tokio::sync::Mutex::new(()),
            last_attempt: Mutex::new(None),
            last_error: Mutex::new(None),
            next_refresh: AtomicI64::new(0),
            min_refresh,
        }
    }

    /// A set that holds the keys of `document` and never fetches: what `portcullis test`
    /// puts in place of a remote set (an unknown key id stays unknown).
    ///
    /// # Errors
    /// A document that holds no usable key in `format`.
    pub fn stand_in(
        url: &str,
        format: KeysFormat,
        document: &[u8],
    ) -> Result<RemoteKeySet, String> {
        let keys = parse_keys(document, format)?;
        if keys.is_empty() {
            return Err("the document holds no usable key".to_owned());
        }
        // Ten years between fetches, the last one just now: never in a test run.
        let set = RemoteKeySet::new(url, format, Duration::from_secs(10 * 365 * 86_400));
        *set.last_attempt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        set.next_refresh.store(i64::MAX, Ordering::Relaxed);
        set.snapshot.store(Some(Arc::new(Snapshot {
            keys,
            fetched_at: now_secs(),
            expires_at: i64::MAX,
        })));
        Ok(set)
    }

    /// The set as last fetched.
    #[must_use]
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.load_full()
    }

    /// True once a set has been fetched (for readiness).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.snapshot.load().is_some()
    }

    /// What went wrong with the last fetch, if it failed.
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// True when the background refresher should fetch now.
    #[must_use]
    pub fn due(&self, now: i64) -> bool {
        now >= self.next_refresh.load(Ordering::Relaxed)
    }

    /// The key `kid` names, from memory only.
    ///
    /// # Errors
    /// Unknown key id, or no set yet.
    pub fn lookup(&self, kid: Option<&str>) -> Result<RemoteKey, KeyError> {
        let Some(snap) = self.snapshot() else {
            return Err(KeyError::Unavailable(self.unavailable_reason()));
        };
        let found = match kid {
            Some(k) => snap.keys.get(k),
            // No kid: acceptable only when the set holds exactly one key.
            None if snap.keys.len() == 1 => snap.keys.values().next(),
            None => None,
        };
        found
            .cloned()
            .ok_or_else(|| KeyError::UnknownKid(kid.unwrap_or("(none)").to_owned()))
    }

    fn unavailable_reason(&self) -> String {
        match self.last_error() {
            Some(e) => format!("the key set at {} could not be fetched: {e}", self.url),
            None => format!("the key set at {} has not been fetched yet", self.url),
        }
    }

    /// The key `kid` names; an unknown kid (or no set yet) triggers one refresh first,
    /// unless one happened within `min_refresh`.
    ///
    /// # Errors
    /// Unknown key id after the refresh, or no set could be had.
    pub async fn key(&self, kid: Option<&str>) -> Result<RemoteKey, KeyError> {
        match self.lookup(kid) {
            Ok(k) => Ok(k),
            Err(_) => {
                self.refresh_if_allowed().await;
                self.lookup(kid)
            }
        }
    }

    /// Refreshes unless another caller is doing so (then waits for it) or one was tried
    /// within `min_refresh`.
    pub async fn refresh_if_allowed(&self) {
        let started = Instant::now();
        let _one = self.refreshing.lock().await;
        let recent = self
            .last_attempt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|t| t >= started || t.elapsed() < self.min_refresh);
        if recent {
            return;
        }
        self.fetch_locked().await;
    }

    /// The background refresher's call: fetches whatever the rate limit says.
    pub async fn refresh(&self) {
        let _one = self.refreshing.lock().await;
        self.fetch_locked().await;
    }

    async fn fetch_locked(&self) {
        *self
            .last_attempt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        let now = now_secs();
        match self.fetch().await {
            Ok((keys, ttl)) => {
                log::info!(
                    "key set {}: {} key(s), next refresh in {ttl}s",
                    self.url,
                    keys.len()
                );
                self.snapshot.store(Some(Arc::new(Snapshot {
                    keys,
                    fetched_at: now,
                    expires_at: now + ttl,
                })));
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                // Refresh at four fifths of the lifetime, so the set never goes stale.
                self.next_refresh
                    .store(now + ttl * 4 / 5, Ordering::Relaxed);
            }
            Err(e) => {
                log::warn!(
                    "key set {}: fetch failed ({e}); {}",
                    self.url,
                    if self.is_ready() {
                        "the last good set keeps serving"
                    } else {
                        "tokens signed by this issuer cannot be checked until it succeeds"
                    }
                );
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                // Retry soon, but not in a tight loop.
                let backoff = if self.is_ready() { 30 } else { 5 };
                self.next_refresh.store(now + backoff, Ordering::Relaxed);
            }
        }
    }

    async fn fetch(&self) -> Result<(HashMap<String, RemoteKey>, i64), String> {
        let request = self
            .client
            .get(&self.url)
            .header("accept", "application/json");
        let (headers, body) = send_bounded(request, MAX_DOCUMENT).await?;
        let ttl = headers
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(DEFAULT_TTL)
            .clamp(MIN_TTL, MAX_TTL);
        let keys = parse_keys(&body, self.format)?;
        if keys.is_empty() {
            return Err("the document holds no usable key".to_owned());
        }
        Ok((keys, ttl))
    }
}

/// Sends a request and reads a successful answer of at most `max` bytes.
///
/// # Errors
/// The request failed, the status was not 2xx, or the body was too large.
pub async fn send_bounded(
    request: reqwest::RequestBuilder,
    max: usize,
) -> Result<(reqwest::header::HeaderMap, Vec<u8>), String> {
    let mut resp = request
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    let too_large = || format!("answer larger than {max} bytes");
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("read failed: {e}"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > max {
            return Err(too_large());
        }
    }
    Ok((resp.headers().clone(), body))
}

/// `max-age=N` of a Cache-Control value.
fn max_age(v: &str) -> Option<i64> {
    v.split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|n| n.trim().parse::<i64>().ok())
}

/// Parses a key-set document. Keys that are not for signatures, or of a kind we do not
/// verify, are skipped.
///
/// # Errors
/// The document is not a JWKS / certificate map.
pub fn parse_keys(body: &[u8], format: KeysFormat) -> Result<HashMap<String, RemoteKey>, String> {
    let mut out = HashMap::new();
    match format {
        KeysFormat::Jwks => {
            let set: JwkSet =
                serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
            let only = set.keys.len() == 1;
            for jwk in &set.keys {
                if matches!(
                    jwk.common.public_key_use,
                    Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
                ) {
                    continue;
                }
                if matches!(
                    jwk.algorithm,
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
                ) {
                    // A shared secret has no place in a published set.
                    continue;
                }
                let Ok(key) = DecodingKey::from_jwk(jwk) else {
                    continue;
                };
                let algorithm = jwk
                    .common
                    .key_algorithm
                    .and_then(|a| a.to_string().parse::<Algorithm>().ok());
                let kid = match &jwk.common.key_id {
                    Some(k) => k.clone(),
                    None if only => String::new(),
                    None => continue,
                };
                out.insert(kid, RemoteKey { key, algorithm });
            }
        }
        KeysFormat::X509Map => {
            let map: HashMap<String, String> = serde_json::from_slice(body)
                .map_err(|e| format!("not a JSON map of key id to PEM certificate: {e}"))?;
            for (kid, pem) in map {
                let key = DecodingKey::from_rsa_pem(pem.as_bytes())
                    .or_else(|_| DecodingKey::from_ec_pem(pem.as_bytes()));
                if let Ok(key) = key {
                    out.insert(
                        kid,
                        RemoteKey {
                            key,
                            algorithm: None,
                        },
                    );
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read() {
        assert_eq!(
            max_age("public, max-age=19923, must-revalidate"),
            Some(19923)
        );
        assert_eq!(max_age("no-cache"), None);
    }

    #[test]
    fn an_x509_map_yields_its_keys() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/oauth");
        let a = std::fs::read_to_string(repo.join("cloud-rs256-a.cert.pem")).expect("cert");
        let doc = serde_json::json!({"kid-a": a, "broken": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"});
        let keys = parse_keys(doc.to_string().as_bytes(), KeysFormat::X509Map).expect("parse");
        assert!(keys.contains_key("kid-a"));
        assert!(!keys.contains_key("broken"));
    }

    #[test]
    fn secrets_and_encryption_keys_are_skipped() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "s", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "e", "use": "enc", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "kid": "sig", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]});
        let keys = parse_keys(doc.to_string().as_bytes(), KeysFormat::Jwks).expect("parse");
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["sig"]);
        assert!(parse_keys(b"[]", KeysFormat::Jwks).is_err());
    }
}
