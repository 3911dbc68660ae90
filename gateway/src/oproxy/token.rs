//! `POST /oproxy/token`, as integrations in the field call it:
//! `{"app_name","registration_id","encrypted_token","scope"[,"resource"]}` where
//! `encrypted_token = BASE64(nonce(12) || AES-GCM(Key, nonce, "<epoch seconds>:<Token>"))`.
//!
//! In order: the registration (its app must be `app_name`; else `404`), decryption with its
//! Key (`401`), the plaintext's form (`400`), the timestamp within the window (`403`), the
//! nonce not seen within the window (`403`, a one-time marker in the state store until the
//! window closes, so a replay is refused across a fleet too), the Token against the stored
//! HMAC in constant time (`401`), then the provider (`502` with its OAuth error code).
//!
//! **Rotation.** When the provider answers a new refresh token, the stored hash becomes
//! the new Token's, the answer carries it, and the previous Token stays usable **once**
//! within the rotation grace (default 24 h), for an integration that lost the answer: the
//! new Token is kept sealed under a key derived from the previous Token and the server
//! key, so presenting the previous Token gets the new one used at the provider (and
//! handed back again) even when the provider has already retired the previous one. The
//! store never holds a Token it could open by itself.

use http::StatusCode;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::records::{self, PreviousToken, Registration};
use super::{masked, AppGrant, OProxy};
use crate::broker::provider::{Grant, ProviderFailure};
use crate::broker::sealing::{derive_key, keyed_hash, open_wire, SealKey};

/// Largest request body.
pub const MAX_BODY: usize = 32 * 1024;
/// Purpose of a registration key sealed at rest.
pub const KEY_PURPOSE: &str = "oproxy registration key";
const SUCCESSOR_PURPOSE: &str = "oproxy successor token";
/// Times a rotation is re-applied over a concurrent write before giving up.
const WRITE_ATTEMPTS: usize = 4;

/// The request as integrations send it.
#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    pub app_name: String,
    pub registration_id: String,
    pub encrypted_token: String,
    pub scope: String,
    #[serde(default)]
    pub resource: Option<String>,
}

/// Why a request got no token: the status, the `error` and `error_description` of the
/// body, the reason for metrics and logs, and whether it counts as a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub error: String,
    pub description: String,
    pub reason: &'static str,
    pub failed_attempt: bool,
}

impl Refusal {
    fn new(status: StatusCode, error: &str, reason: &'static str, description: &str) -> Refusal {
        Refusal {
            status,
            error: error.to_owned(),
            description: description.to_owned(),
            reason,
            failed_attempt: false,
        }
    }

    fn attempt(mut self) -> Refusal {
        self.failed_attempt = true;
        self
    }

    /// The JSON body.
    #[must_use]
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        }))
        .unwrap_or_default()
    }
}

fn unavailable(what: &str) -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "store-unavailable",
        what,
    )
}

/// What the integration gets.
#[derive(Debug, Clone)]
pub struct Granted {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
}

impl Granted {
    #[must_use]
    pub fn body(&self) -> Vec<u8> {
        let mut body = serde_json::json!({ "access_token": self.access_token });
        if let Some(refresh) = &self.refresh_token {
            body["refresh_token"] = refresh.clone().into();
        }
        if let Some(expires_in) = self.expires_in {
            body["expires_in"] = expires_in.into();
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// Parses the body.
///
/// # Errors
/// `400 invalid_request` naming what is wrong.
pub fn parse(body: &[u8]) -> Result<TokenRequest, Refusal> {
    let malformed = |description: &str| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "malformed-request",
            description,
        )
    };
    let request: TokenRequest = serde_json::from_slice(body).map_err(|_| {
        malformed(
            "the body must be JSON with string fields app_name, registration_id, encrypted_token and scope",
        )
    })?;
    for (name, value, limit) in [
        ("app_name", &request.app_name, 200),
        ("registration_id", &request.registration_id, 64),
        (
            "encrypted_token",
            &request.encrypted_token,
            crate::broker::sealing::MAX_WIRE_CHARS,
        ),
        ("scope", &request.scope, 4096),
    ] {
        if value.len() > limit {
            return Err(malformed(&format!("{name} is too long")));
        }
        if name != "scope" && value.is_empty() {
            return Err(malformed(&format!("{name} is empty")));
        }
    }
    if request.resource.as_ref().is_some_and(|r| r.len() > 4096) {
        return Err(malformed("resource is too long"));
    }
    Ok(request)
}

/// Serves a parsed request at `now`.
///
/// # Errors
/// Every refusal above.
pub async fn exchange(
    broker: &OProxy,
    request: &TokenRequest,
    now: i64,
) -> Result<Granted, Refusal> {
    let id = request.registration_id.as_str();
    let unknown = || {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "invalid_client",
            "unknown-registration",
            "no such registration for this app",
        )
        .attempt()
    };
    let found = records::registration(&broker.store, id)
        .await
        .map_err(|e| {
            log::warn!("oproxy: registration {} could not be read: {e}", masked(id));
            unavailable("the registration store does not answer")
        })?
        .ok_or_else(unknown)?;
    // A registration of another app is as unknown as no registration.
    if found.record.app != request.app_name {
        return Err(unknown());
    }
    let app = broker.apps.get(&found.record.app).ok_or_else(|| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "invalid_client",
            "unknown-app",
            "this app is no longer served by the gateway",
        )
    })?;
    let key = broker
        .seal
        .open(KEY_PURPOSE, &found.record.key_sealed)
        .map_err(|_| {
            log::error!(
                "oproxy: the key of registration {} cannot be opened: the seal secret changed or the record was altered",
                masked(id)
            );
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "key-unreadable",
                "the registration's key cannot be opened",
            )
        })?;
    let opened = open_wire(&key, &request.encrypted_token).map_err(|_| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "decryption-failed",
            "encrypted_token does not decrypt with this registration's key",
        )
        .attempt()
    })?;
    let (timestamp, token) = split_plaintext(&opened.plaintext)?;
    let window = i64::try_from(broker.window.as_secs()).unwrap_or(i64::MAX);
    if (now - timestamp).abs() > window {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "invalid_grant",
            "timestamp-out-of-window",
            "the timestamp in encrypted_token is outside the accepted window: check the clock",
        )
        .attempt());
    }
    let marker = format!("oproxy-nonce:{id}:{}", hex::encode(opened.nonce));
    let first = broker
        .store
        .once()
        .use_once(
            &marker,
            timestamp.saturating_add(window).saturating_add(1),
            now,
        )
        .await
        .map_err(|_| unavailable("replay markers cannot be recorded"))?;
    if !first {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "invalid_grant",
            "replayed",
            "this encrypted_token was used before: encrypt afresh (a new nonce) for each request",
        )
        .attempt());
    }
    let presented = broker.token_hash(token);
    let current = hex::decode(&found.record.token_hash).unwrap_or_default();
    let matches_current: bool = presented.as_slice().ct_eq(current.as_slice()).into();
    let grace = if matches_current {
        None
    } else {
        Some(
            grace_successor(broker, &found.record, token, &presented, now).ok_or_else(|| {
                Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_grant",
                    "token-mismatch",
                    "the Token in encrypted_token is not this registration's",
                )
                .attempt()
            })?,
        )
    };
    // In the grace path, the Token to use at the provider is the successor the previous
    // one unlocks (when there is one).
    let grace_used = grace.is_some();
    let provider_token = grace.flatten().unwrap_or_else(|| token.to_owned());
    let scope = Some(request.scope.as_str());
    let grant = match app.grant {
        AppGrant::RefreshToken => Grant::RefreshToken {
            refresh_token: &provider_token,
            scope,
        },
        AppGrant::ClientCredentials => Grant::ClientCredentials {
            tenant: Some(&provider_token),
            scope,
        },
    };
    let tokens = app
        .provider
        .token(&grant)
        .await
        .map_err(|failure| provider_refusal(&failure, id))?;
    let rotated = match app.grant {
        AppGrant::RefreshToken => tokens
            .refresh_token
            .clone()
            .filter(|fresh| *fresh != provider_token),
        AppGrant::ClientCredentials => None,
    };
    record_use(
        broker,
        id,
        &provider_token,
        rotated.as_deref(),
        grace_used,
        now,
    )
    .await;
    // In the grace path the integration gets back the Token it should now hold, rotated or
    // not: that is what it lost.
    let refresh_token = rotated.or_else(|| grace_used.then_some(provider_token));
    Ok(Granted {
        access_token: tokens.access_token,
        refresh_token,
        expires_in: tokens.expires_in,
    })
}

/// `<epoch seconds>:<Token>`, split at the first `:`.
fn split_plaintext(plaintext: &[u8]) -> Result<(i64, &str), Refusal> {
    let malformed = |description: &str| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "malformed-plaintext",
            description,
        )
        .attempt()
    };
    let text = std::str::from_utf8(plaintext)
        .map_err(|_| malformed("the decrypted token is not UTF-8 text"))?;
    let (timestamp, token) = text
        .split_once(':')
        .ok_or_else(|| malformed("the decrypted token is not <epoch seconds>:<Token>"))?;
    if timestamp.is_empty()
        || timestamp.len() > 12
        || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(malformed(
            "the decrypted token's timestamp is not whole seconds since the epoch",
        ));
    }
    let timestamp: i64 = timestamp
        .parse()
        .map_err(|_| malformed("the decrypted token's timestamp is not a number"))?;
    if token.is_empty() {
        return Err(malformed("the decrypted token holds no Token"));
    }
    Ok((timestamp, token))
}

/// In the grace period after a rotation, the previous Token is accepted once: returns
/// `Some(successor)` (the Token that replaced it, when it could be opened) or `None`
/// when `presented` is not the previous Token or the grace is over.
#[allow(clippy::option_option)]
fn grace_successor(
    broker: &OProxy,
    record: &Registration,
    token: &str,
    presented: &[u8; 32],
    now: i64,
) -> Option<Option<String>> {
    let previous = record.previous.as_ref()?;
    let stored = hex::decode(&previous.hash).ok()?;
    let matches: bool = presented.as_slice().ct_eq(stored.as_slice()).into();
    if !matches || now > previous.until {
        return None;
    }
    Some(
        previous
            .successor
            .as_deref()
            .and_then(|sealed| {
                successor_key(broker, token)
                    .open(SUCCESSOR_PURPOSE, sealed)
                    .ok()
            })
            .and_then(|bytes| String::from_utf8(bytes).ok()),
    )
}

/// The key a successor Token is sealed under: derived from the server key and the Token
/// it replaced, so neither the store nor a holder of the old Token alone can open it.
fn successor_key(broker: &OProxy, previous_token: &str) -> SealKey {
    let mut material = b"successor:".to_vec();
    material.extend_from_slice(previous_token.as_bytes());
    SealKey::new(derive_key(&keyed_hash(&broker.hash_key, &material), "seal"))
}

fn provider_refusal(failure: &ProviderFailure, id: &str) -> Refusal {
    log::warn!(
        "oproxy: the provider refused registration {}: {}",
        masked(id),
        failure.code()
    );
    let description = match failure {
        ProviderFailure::Refused { error, .. } => {
            format!("the provider refused the request: {error}")
        }
        ProviderFailure::Unavailable(_) => "the provider did not answer usably".to_owned(),
    };
    Refusal {
        status: StatusCode::BAD_GATEWAY,
        error: failure.code().to_owned(),
        description,
        reason: "provider-failure",
        failed_attempt: false,
    }
}

/// Stores the use (and the rotation) of a registration, re-applied over concurrent
/// writes. `at_provider` is the Token the provider took (the successor in the grace
/// path), `rotated` the provider's new one.
async fn record_use(
    broker: &OProxy,
    id: &str,
    at_provider: &str,
    rotated: Option<&str>,
    grace_used: bool,
    now: i64,
) {
    for _ in 0..WRITE_ATTEMPTS {
        let Ok(Some(mut found)) = records::registration(&broker.store, id).await else {
            break;
        };
        let record = &mut found.record;
        record.last_used_at = Some(now);
        record.use_count += 1;
        if grace_used {
            // The previous Token's one use is spent; the Token the provider took is now
            // the registration's (until the rotation below replaces it).
            record.previous = None;
            record.token_hash = hex::encode(broker.token_hash(at_provider));
        }
        if let Some(fresh) = rotated {
            let successor = successor_key(broker, at_provider)
                .seal(SUCCESSOR_PURPOSE, fresh.as_bytes())
                .ok();
            let grace = i64::try_from(broker.rotation_grace.as_secs()).unwrap_or(i64::MAX);
            record.previous = Some(PreviousToken {
                hash: std::mem::replace(
                    &mut record.token_hash,
                    hex::encode(broker.token_hash(fresh)),
                ),
                until: now.saturating_add(grace),
                successor,
            });
            record.rotated_at = Some(now);
            record.rotations += 1;
        }
        match records::put_registration(&broker.store, id, found.version, record).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => {
                log::error!(
                    "oproxy: the use of registration {} could not be stored: {error}",
                    masked(id)
                );
                return;
            }
        }
    }
    log::error!(
        "oproxy: the use of registration {} was not stored: concurrent writes kept winning",
        masked(id)
    );
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    use super::*;

    /// Of the vectors that decrypt, the service takes the three well-formed ones and
    /// refuses the empty Token and the timestamp that is not a number (`400`).
    #[test]
    fn the_vectors_plaintexts_are_taken_or_refused_as_the_service_must() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/oproxy/vectors.json"
        );
        let all: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
        let mut outcomes = Vec::new();
        for case in all["cases"].as_array().expect("cases") {
            if case["expect"] != "decrypts" {
                continue;
            }
            let key = STANDARD
                .decode(case["key_b64"].as_str().expect("key"))
                .expect("b64");
            let opened = open_wire(&key, case["encrypted_token"].as_str().expect("token"))
                .expect("decrypts");
            outcomes.push(
                split_plaintext(&opened.plaintext)
                    .map(|(timestamp, token)| (timestamp, token.to_owned()))
                    .map_err(|refusal| refusal.status.as_u16()),
            );
        }
        assert_eq!(
            outcomes,
            [
                Ok((
                    1_764_633_600,
                    "0.AXoAexampleRefreshToken-abc_123".to_owned()
                )),
                Ok((
                    1_764_633_600,
                    "7a2c8b1e-4d3f-4b2a-9c1d-0e5f6a7b8c9d".to_owned()
                )),
                Ok((1_764_633_600, "token:with:colons".to_owned())),
                Err(400),
                Err(400),
            ]
        );
    }

    #[test]
    fn malformed_plaintexts_are_refused() {
        for bad in [
            &b"no-separator"[..],
            b":token",
            b"-5:token",
            b"12x:token",
            b"1234567890123:t",
            b"\xff:t",
        ] {
            assert!(split_plaintext(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_are_bounded_and_typed() {
        assert!(parse(
            br#"{"app_name":"a","registration_id":"r","encrypted_token":"e","scope":""}"#
        )
        .is_ok());
        assert!(
            parse(br#"{"app_name":"a","registration_id":"r","encrypted_token":"e"}"#).is_err(),
            "scope is required"
        );
        assert!(parse(
            br#"{"app_name":"","registration_id":"r","encrypted_token":"e","scope":"s"}"#
        )
        .is_err());
        let long_id = format!(
            r#"{{"app_name":"a","registration_id":"{}","encrypted_token":"e","scope":"s"}}"#,
            "r".repeat(65)
        );
        assert!(parse(long_id.as_bytes()).is_err());
        let error = parse(b"not json").expect_err("refused");
        assert_eq!(
            (error.status.as_u16(), error.error.as_str()),
            (400, "invalid_request")
        );
    }
}
