//! What the store keeps for the broker, as versioned documents
//! ([`crate::store::DocumentStore`]):
//!
//! - a **registration** per ID: its app, its Key sealed with AES-256-GCM under a key from
//!   the policy's named secret, the HMAC-SHA256 of its current Token, the rotation grace
//!   (the previous Token's hash, until when, and the new Token sealed under a key only the
//!   previous Token opens), timestamps and usage. Never the Token: a copy of the database
//!   gives neither the Token nor a way to test guesses of it without the server key (a
//!   tenant id is guessable; a plain SHA-256 of it would not protect it);
//! - a **pending registration** per `state` value, from `/start` until the callback (or
//!   ten minutes): the app, the PKCE verifier and the hash of the browser's cookie.

use serde::{Deserialize, Serialize};

use crate::store::{StateStore, StoreError};

/// The document kind of registrations.
pub const REGISTRATIONS: &str = "oproxy-registration";
/// The document kind of registrations waiting for their callback.
pub const PENDING: &str = "oproxy-pending";

/// The previous Token, usable once during the grace period after a rotation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreviousToken {
    /// HMAC-SHA256 (hex) of the Token rotated away.
    pub hash: String,
    /// Unix second after which it is refused.
    pub until: i64,
    /// The Token that replaced it, sealed under a key derived from the previous Token and
    /// the server key (see [`super::token`]): only its holder can have it opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
}

/// One registration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registration {
    pub app: String,
    /// The integration's AES key, sealed at rest.
    pub key_sealed: String,
    /// HMAC-SHA256 (hex) of the current Token.
    pub token_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousToken>,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    #[serde(default)]
    pub use_count: u64,
    #[serde(default)]
    pub rotations: u64,
}

/// A registration started in a browser, waiting for the provider's callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub app: String,
    /// The PKCE verifier (when the provider uses PKCE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<String>,
    /// SHA-256 (hex) of the cookie that binds the flow to the browser that started it.
    pub browser: String,
    pub expires_at: i64,
}

/// A registration and the version a replacement must name.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub version: u64,
    pub record: T,
}

fn corrupt(what: &str, error: &serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

/// The registration `id`, if there is one.
///
/// # Errors
/// The store failed or holds something that is not a registration.
pub async fn registration(
    store: &StateStore,
    id: &str,
) -> Result<Option<Versioned<Registration>>, StoreError> {
    let Some(document) = store.documents().document(REGISTRATIONS, id).await? else {
        return Ok(None);
    };
    let record = serde_json::from_str(&document.body).map_err(|e| corrupt("registration", &e))?;
    Ok(Some(Versioned {
        version: document.version,
        record,
    }))
}

/// Every registration, by id.
///
/// # Errors
/// The store failed.
pub async fn registrations(store: &StateStore) -> Result<Vec<(String, Registration)>, StoreError> {
    let documents = store.documents().documents(REGISTRATIONS).await?;
    Ok(documents
        .into_iter()
        .filter_map(|(id, document)| {
            serde_json::from_str(&document.body)
                .ok()
                .map(|record| (id, record))
        })
        .collect())
}

/// Writes `record` over version `version` (0: a new one). False when another write came
/// first.
///
/// # Errors
/// The store failed.
pub async fn put_registration(
    store: &StateStore,
    id: &str,
    version: u64,
    record: &Registration,
) -> Result<bool, StoreError> {
    let body = serde_json::to_string(record).map_err(|e| corrupt("registration", &e))?;
    Ok(store
        .documents()
        .put_document(REGISTRATIONS, id, version, &body)
        .await?
        .is_some())
}

/// Records a pending registration under its `state`.
///
/// # Errors
/// The store failed, or the state value was already taken (it is random: never).
pub async fn put_pending(
    store: &StateStore,
    state: &str,
    pending: &Pending,
) -> Result<(), StoreError> {
    let body = serde_json::to_string(pending).map_err(|e| corrupt("pending registration", &e))?;
    match store
        .documents()
        .put_document(PENDING, state, 0, &body)
        .await?
    {
        Some(_) => Ok(()),
        None => Err(StoreError::Corrupt("a state value was reused".to_owned())),
    }
}

/// Takes the pending registration of `state`: it is deleted, so a second callback with
/// the same state finds nothing (single use, also across a fleet: of two takers only one
/// deletes it).
///
/// # Errors
/// The store failed.
pub async fn take_pending(store: &StateStore, state: &str) -> Result<Option<Pending>, StoreError> {
    let documents = store.documents();
    let Some(document) = documents.document(PENDING, state).await? else {
        return Ok(None);
    };
    if !documents.delete_document(PENDING, state).await? {
        return Ok(None);
    }
    Ok(serde_json::from_str(&document.body).ok())
}

/// The most registrations in progress at once: `/start` is open to anyone, so what it
/// may leave in the store is bounded.
pub const MAX_PENDING: usize = 1000;

/// Deletes pending registrations that expired before `now` (their browsers never came
/// back). Returns how many are still in progress.
///
/// # Errors
/// The store failed.
pub async fn purge_pending(store: &StateStore, now: i64) -> Result<usize, StoreError> {
    let documents = store.documents();
    let mut live = 0;
    for (state, document) in documents.documents(PENDING).await? {
        let expired = serde_json::from_str::<Pending>(&document.body)
            .map_or(true, |pending| pending.expires_at < now);
        if expired {
            documents.delete_document(PENDING, &state).await?;
        } else {
            live += 1;
        }
    }
    Ok(live)
}
