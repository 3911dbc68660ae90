//! The broker for the outbound proxy: one session per provider, made by an administrator's
//! handshake (or, for a client-credentials provider, by the gateway alone), whose access
//! token `inject_oauth_token` puts on proxied requests.
//!
//! **Sessions** are versioned documents (`broker-session/{provider}`): status, the access
//! token and the refresh token sealed with AES-256-GCM under a key from the policy's named
//! secret, expiry, last refresh, last error. A process keeps the access token in memory
//! and reads the store only when it nears expiry.
//!
//! **Refresh** happens `refresh_before` ahead of expiry, single-flight: in a process, one
//! task refreshes while the others wait for it; across a fleet, the refresh of session
//! version N is claimed with a one-time marker `broker-refresh:{session}:{N}` in the shared
//! store (Redis), so exactly one gateway calls the provider and the others re-read the
//! session it writes. A marker needs no release: the refresh moves the version on.
//!
//! **Rotation** is written in the same compare-and-swap as the new access token, by the
//! one gateway that holds the claim, before any request uses the new access token: no
//! other gateway can spend the old refresh token in the meantime (which a provider with
//! reuse detection would answer by revoking the whole grant). If that write fails, the
//! provider's answer is lost with it; the error is logged and the session says so.
//!
//! `invalid_grant` from the provider marks the session broken: callers get `503
//! broker-session-invalid` until an administrator makes a new handshake.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::provider::{Grant, Provider, ProviderFailure};
use super::sealing::{random_bytes, SealKey};
use crate::store::{now_secs, StateStore, StoreError};

/// Document kind of provider sessions.
pub const SESSIONS: &str = "broker-session";
/// Document kind of handshakes waiting for their callback.
pub const HANDSHAKES: &str = "broker-handshake";
const ACCESS_PURPOSE: &str = "broker access token";
const REFRESH_PURPOSE: &str = "broker refresh token";
/// How long a handshake may take at the provider.
const HANDSHAKE_SECS: i64 = 600;
/// How long a claim on a refresh lasts (a gateway that died mid-refresh frees it then).
const REFRESH_CLAIM_SECS: i64 = 30;
/// How long a request waits for another gateway's refresh.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(5);
/// `expires_in` assumed when a provider gives none.
const DEFAULT_EXPIRES_IN: u64 = 3600;

/// A session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Connected,
    /// The provider refused the refresh token: a new handshake is needed.
    Broken,
}

/// One provider session as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub status: SessionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_sealed: Option<String>,
    pub access_expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_sealed: Option<String>,
    pub connected_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default)]
    pub refreshes: u64,
}

/// Why no access token can be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerError {
    /// No session yet, or the provider refused its refresh token: a handshake is needed.
    SessionInvalid(&'static str),
    /// The provider or the store does not answer.
    Unavailable(&'static str),
}

/// A handshake waiting for its callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Handshake {
    provider: String,
    /// The session key, for a provider with one session per calling identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    verifier: Option<String>,
    browser: String,
    expires_at: i64,
}

/// Which grant a provider's session uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionGrant {
    /// Made by an administrator's handshake, kept alive by refresh tokens.
    Handshake,
    /// Client credentials: no handshake, a new token whenever the last one nears expiry.
    ClientCredentials,
}

#[derive(Default)]
struct Cached {
    token: Option<(Arc<str>, i64)>,
}

/// A session's in-process state: the access token in memory, and the lock that makes a
/// refresh single-flight.
#[derive(Default)]
struct SessionSlot {
    cached: Mutex<Cached>,
    flight: tokio::sync::Mutex<()>,
}

/// The compiled broker.
pub struct OutboundBroker {
    pub providers: HashMap<String, (Arc<Provider>, SessionGrant)>,
    /// `{public_url}/broker/callback`, registered at the providers.
    pub callback_url: String,
    pub secure_cookie: bool,
    pub refresh_before: Duration,
    seal: SealKey,
    pub store: StateStore,
    slots: Mutex<HashMap<String, Arc<SessionSlot>>>,
    /// `check` and `eval`: no provider is ever called.
    dry_run: bool,
}

impl std::fmt::Debug for OutboundBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundBroker")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("callback_url", &self.callback_url)
            .finish_non_exhaustive()
    }
}

/// The store key of a session: the provider's name, or `{provider}/{session key}`.
#[must_use]
pub fn session_id(provider: &str, session_key: Option<&str>) -> String {
    match session_key {
        Some(key) => format!("{provider}/{key}"),
        None => provider.to_owned(),
    }
}

/// A session key as a template rendered it: 1 to 128 characters, no control character.
#[must_use]
pub fn valid_session_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 128 && !key.chars().any(char::is_control)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl OutboundBroker {
    #[must_use]
    pub fn new(
        providers: HashMap<String, (Arc<Provider>, SessionGrant)>,
        public_url: &str,
        refresh_before: Duration,
        seal: SealKey,
        store: StateStore,
        dry_run: bool,
    ) -> OutboundBroker {
        OutboundBroker {
            providers,
            callback_url: format!("{}/broker/callback", public_url.trim_end_matches('/')),
            secure_cookie: public_url.starts_with("https://"),
            refresh_before,
            seal,
            store,
            slots: Mutex::new(HashMap::new()),
            dry_run,
        }
    }

    fn slot(&self, key: &str) -> Arc<SessionSlot> {
        lock(&self.slots).entry(key.to_owned()).or_default().clone()
    }

    fn margin(&self) -> i64 {
        i64::try_from(self.refresh_before.as_secs()).unwrap_or(i64::MAX)
    }

    /// The stored session of `provider`, with its version.
    ///
    /// # Errors
    /// The store failed or holds something else.
    pub async fn session(&self, provider: &str) -> Result<Option<(u64, Session)>, StoreError> {
        let Some(document) = self.store.documents().document(SESSIONS, provider).await? else {
            return Ok(None);
        };
        let session = serde_json::from_str(&document.body)
            .map_err(|e| StoreError::Corrupt(format!("broker session: {e}")))?;
        Ok(Some((document.version, session)))
    }

    async fn write(
        &self,
        provider: &str,
        version: u64,
        session: &Session,
    ) -> Result<bool, StoreError> {
        let body = serde_json::to_string(session)
            .map_err(|e| StoreError::Corrupt(format!("broker session: {e}")))?;
        Ok(self
            .store
            .documents()
            .put_document(SESSIONS, provider, version, &body)
            .await?
            .is_some())
    }

    /// A live access token for `provider`'s session: from memory, else from the store,
    /// else refreshed (single-flight in this process and, through the store, in a fleet).
    ///
    /// # Errors
    /// No valid session, or neither the store nor the provider answers.
    pub async fn access_token(
        &self,
        provider: &str,
        session_key: Option<&str>,
    ) -> Result<Arc<str>, BrokerError> {
        if self.dry_run {
            return Err(BrokerError::Unavailable("a dry run contacts no provider"));
        }
        if session_key.is_some_and(|key| !valid_session_key(key)) {
            return Err(BrokerError::SessionInvalid(
                "the session key is empty or malformed",
            ));
        }
        let id = session_id(provider, session_key);
        let slot = self.slot(&id);
        if let Some(token) = self.cached(&slot, now_secs()) {
            return Ok(token);
        }
        let _flight = slot.flight.lock().await;
        if let Some(token) = self.cached(&slot, now_secs()) {
            return Ok(token);
        }
        let (token, expires_at) = self.fetch(provider, &id).await?;
        lock(&slot.cached).token = Some((token.clone(), expires_at));
        Ok(token)
    }

    fn cached(&self, slot: &SessionSlot, now: i64) -> Option<Arc<str>> {
        let cached = lock(&slot.cached);
        let (token, expires_at) = cached.token.as_ref()?;
        (now < expires_at.saturating_sub(self.margin())).then(|| token.clone())
    }

    /// Drops what this process remembers of a session (after a handshake or a break).
    pub fn forget(&self, provider: &str) {
        lock(&self.slot(provider).cached).token = None;
    }

    async fn fetch(&self, provider_name: &str, id: &str) -> Result<(Arc<str>, i64), BrokerError> {
        let Some((provider, grant)) = self.providers.get(provider_name).cloned() else {
            return Err(BrokerError::SessionInvalid("no such provider"));
        };
        let store_down = |_| BrokerError::Unavailable("the session store does not answer");
        let started = std::time::Instant::now();
        loop {
            let now = now_secs();
            let found = self.session(id).await.map_err(store_down)?;
            let (version, session) = match found {
                Some(found) => found,
                None if grant == SessionGrant::ClientCredentials => (0, blank_session(now)),
                None => return Err(BrokerError::SessionInvalid("no handshake was made")),
            };
            if session.status == SessionStatus::Broken {
                return Err(BrokerError::SessionInvalid(
                    "the provider refused the session",
                ));
            }
            let current = self.open_access(&session);
            if let Some(token) = &current {
                if now < session.access_expires_at.saturating_sub(self.margin()) {
                    return Ok((token.clone(), session.access_expires_at));
                }
            }
            let claim = format!("broker-refresh:{id}:{version}");
            let claimed = self
                .store
                .once()
                .use_once(&claim, now + REFRESH_CLAIM_SECS, now)
                .await
                .map_err(store_down)?;
            if claimed {
                return self
                    .refresh(id, &provider, grant, version, session, now)
                    .await;
            }
            // Another gateway refreshes this version: its token is ours once written. The
            // current one serves meanwhile while it has not expired.
            if let Some(token) = current.filter(|_| now < session.access_expires_at) {
                return Ok((token, session.access_expires_at));
            }
            if started.elapsed() > WAIT_FOR_OTHERS {
                return Err(BrokerError::Unavailable(
                    "another gateway's refresh did not finish",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn open_access(&self, session: &Session) -> Option<Arc<str>> {
        let sealed = session.access_sealed.as_deref()?;
        let bytes = self.seal.open(ACCESS_PURPOSE, sealed).ok()?;
        String::from_utf8(bytes).ok().map(Arc::from)
    }

    async fn refresh(
        &self,
        name: &str,
        provider: &Provider,
        grant: SessionGrant,
        version: u64,
        mut session: Session,
        now: i64,
    ) -> Result<(Arc<str>, i64), BrokerError> {
        let refresh_token = match grant {
            SessionGrant::ClientCredentials => None,
            SessionGrant::Handshake => {
                let sealed =
                    session
                        .refresh_sealed
                        .as_deref()
                        .ok_or(BrokerError::SessionInvalid(
                            "the session has no refresh token",
                        ))?;
                let bytes = self.seal.open(REFRESH_PURPOSE, sealed).map_err(|_| {
                    BrokerError::SessionInvalid("the refresh token cannot be opened")
                })?;
                Some(String::from_utf8(bytes).map_err(|_| {
                    BrokerError::SessionInvalid("the refresh token cannot be opened")
                })?)
            }
        };
        let scope = provider.scopes.join(" ");
        let answer = match &refresh_token {
            Some(refresh) => {
                provider
                    .token(&Grant::RefreshToken {
                        refresh_token: refresh,
                        scope: None,
                    })
                    .await
            }
            None => {
                provider
                    .token(&Grant::ClientCredentials {
                        tenant: None,
                        scope: Some(&scope),
                    })
                    .await
            }
        };
        match answer {
            Ok(tokens) => {
                let expires_at = now.saturating_add(
                    i64::try_from(tokens.expires_in.unwrap_or(DEFAULT_EXPIRES_IN))
                        .unwrap_or(i64::MAX),
                );
                session.access_sealed = self
                    .seal
                    .seal(ACCESS_PURPOSE, tokens.access_token.as_bytes())
                    .ok();
                session.access_expires_at = expires_at;
                if let Some(rotated) = &tokens.refresh_token {
                    session.refresh_sealed =
                        self.seal.seal(REFRESH_PURPOSE, rotated.as_bytes()).ok();
                }
                if tokens.scope.is_some() {
                    session.scope.clone_from(&tokens.scope);
                }
                session.last_refresh_at = Some(now);
                session.last_error = None;
                session.refreshes += 1;
                match self.write(name, version, &session).await {
                    Ok(true) => {}
                    Ok(false) => log::error!(
                        "broker: provider {name}: the refreshed session was not stored (a concurrent write, e.g. a new handshake, came first)"
                    ),
                    Err(error) => log::error!(
                        "broker: provider {name}: the refreshed session could not be stored: {error}"
                    ),
                }
                log::info!("broker: provider {name}: access token refreshed");
                Ok((Arc::from(tokens.access_token.as_str()), expires_at))
            }
            Err(failure) => {
                session.last_error = Some(describe(&failure));
                let broken = failure.is_invalid_grant() && grant == SessionGrant::Handshake;
                if broken {
                    session.status = SessionStatus::Broken;
                    log::error!(
                        "broker: provider {name}: the provider refused the refresh token (invalid_grant); the session is broken until a new handshake"
                    );
                } else {
                    log::warn!(
                        "broker: provider {name}: refresh failed: {}",
                        failure.code()
                    );
                }
                if version > 0 {
                    let _ = self.write(name, version, &session).await;
                }
                self.forget(name);
                if broken {
                    return Err(BrokerError::SessionInvalid(
                        "the provider refused the session",
                    ));
                }
                // The current access token serves until it expires.
                match self.open_access(&session) {
                    Some(token) if now < session.access_expires_at => {
                        Ok((token, session.access_expires_at))
                    }
                    _ => Err(BrokerError::Unavailable("the provider does not answer")),
                }
            }
        }
    }

    /// Starts a handshake for `provider` from the administrator's browser: returns the
    /// provider URL to send it to and the value of the binding cookie.
    ///
    /// # Errors
    /// Unknown provider, no randomness, the store failed.
    pub async fn start_handshake(
        &self,
        provider_name: &str,
        session_key: Option<&str>,
    ) -> Result<(String, String), &'static str> {
        if session_key.is_some_and(|key| !valid_session_key(key)) {
            return Err("the session key is empty or malformed");
        }
        let (provider, _) = self
            .providers
            .get(provider_name)
            .ok_or("no such provider")?;
        let random = || {
            random_bytes::<32>()
                .map(|b| URL_SAFE_NO_PAD.encode(b))
                .map_err(|_| "no randomness")
        };
        let state = random()?;
        let browser = random()?;
        let verifier = if provider.pkce { Some(random()?) } else { None };
        let handshake = Handshake {
            provider: provider_name.to_owned(),
            session_key: session_key.map(str::to_owned),
            verifier: verifier.clone(),
            browser: hex::encode(Sha256::digest(browser.as_bytes())),
            expires_at: now_secs() + HANDSHAKE_SECS,
        };
        let body = serde_json::to_string(&handshake).map_err(|_| "cannot record")?;
        self.store
            .documents()
            .put_document(HANDSHAKES, &state, 0, &body)
            .await
            .ok()
            .flatten()
            .ok_or("the store does not answer")?;
        let location = provider
            .authorization_url(
                &self.callback_url,
                &state,
                verifier.as_deref(),
                &provider.scopes,
            )
            .ok_or("the provider has no authorize_url")?;
        Ok((location, browser))
    }

    /// Completes a handshake: the state taken once, the browser checked, the code
    /// exchanged, the session stored. Returns the provider's name and the session key.
    ///
    /// # Errors
    /// What went wrong, for the administrator.
    pub async fn complete_handshake(
        &self,
        state: &str,
        code: Option<&str>,
        provider_error: Option<&str>,
        browser_cookie: Option<&str>,
    ) -> Result<(String, Option<String>), String> {
        let documents = self.store.documents();
        let taken = match documents.document(HANDSHAKES, state).await {
            Ok(Some(document))
                if documents
                    .delete_document(HANDSHAKES, state)
                    .await
                    .is_ok_and(|gone| gone) =>
            {
                serde_json::from_str::<Handshake>(&document.body).ok()
            }
            Ok(_) => None,
            Err(_) => return Err("the store does not answer".to_owned()),
        };
        let handshake = taken
            .filter(|h| h.expires_at >= now_secs())
            .ok_or("unknown, used or expired state: start the handshake again")?;
        let presented = browser_cookie
            .map(|value| hex::encode(Sha256::digest(value.as_bytes())))
            .unwrap_or_default();
        if !bool::from(presented.as_bytes().ct_eq(handshake.browser.as_bytes())) {
            return Err("this handshake was started in another browser".to_owned());
        }
        if let Some(error) = provider_error {
            let shown: String = error.chars().take(64).collect();
            return Err(format!("the provider answered: {shown}"));
        }
        let code = code
            .filter(|c| !c.is_empty())
            .ok_or("the provider sent no code")?;
        let (provider, _) = self
            .providers
            .get(&handshake.provider)
            .ok_or("the provider is no longer configured")?;
        let tokens = provider
            .token(&Grant::AuthorizationCode {
                code,
                redirect_uri: &self.callback_url,
                verifier: handshake.verifier.as_deref(),
            })
            .await
            .map_err(|failure| format!("the provider refused the code: {}", failure.code()))?;
        let now = now_secs();
        let expires_at = now.saturating_add(
            i64::try_from(tokens.expires_in.unwrap_or(DEFAULT_EXPIRES_IN)).unwrap_or(i64::MAX),
        );
        let session = Session {
            status: SessionStatus::Connected,
            scope: tokens.scope.clone(),
            access_sealed: self
                .seal
                .seal(ACCESS_PURPOSE, tokens.access_token.as_bytes())
                .ok(),
            access_expires_at: expires_at,
            refresh_sealed: tokens
                .refresh_token
                .as_ref()
                .and_then(|refresh| self.seal.seal(REFRESH_PURPOSE, refresh.as_bytes()).ok()),
            connected_at: now,
            last_refresh_at: None,
            last_error: tokens.refresh_token.is_none().then(|| {
                "the provider issued no refresh token: the session ends with its access token"
                    .to_owned()
            }),
            refreshes: 0,
        };
        let id = session_id(&handshake.provider, handshake.session_key.as_deref());
        for _ in 0..3 {
            let version = self
                .session(&id)
                .await
                .map_err(|e| e.to_string())?
                .map_or(0, |(version, _)| version);
            if self
                .write(&id, version, &session)
                .await
                .map_err(|e| e.to_string())?
            {
                self.forget(&id);
                log::info!("broker: session {id}: handshake completed");
                return Ok((handshake.provider, handshake.session_key));
            }
        }
        Err("the session could not be stored".to_owned())
    }
}

fn blank_session(now: i64) -> Session {
    Session {
        status: SessionStatus::Connected,
        scope: None,
        access_sealed: None,
        access_expires_at: 0,
        refresh_sealed: None,
        connected_at: now,
        last_refresh_at: None,
        last_error: None,
        refreshes: 0,
    }
}

fn describe(failure: &ProviderFailure) -> String {
    match failure {
        ProviderFailure::Refused { status, error, .. } => {
            format!("the provider answered {status} {error}")
        }
        ProviderFailure::Unavailable(why) => why.clone(),
    }
}
