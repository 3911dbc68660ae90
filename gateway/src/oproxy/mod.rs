//! The OProxy-compatible token broker: integrations that cannot do a browser handshake
//! hold Configuration Settings (an **ID**, a **Token** and an AES **Key**) made once in a
//! browser, and exchange `encrypted_token = BASE64(nonce || AES-GCM(Key, "<epoch>:<Token>"))`
//! at `POST /oproxy/token` for a provider access token.
//!
//! - [`registration`]: `/oproxy/{app}/start` → provider → `/oproxy/callback`, which shows
//!   the Configuration Settings once;
//! - [`token`]: the token endpoint;
//! - [`records`]: what the store keeps per registration (never the Token: a keyed hash);
//! - list, usage and revoke are on the admin listener (`crate::admin`, `/api/oproxy/...`);
//! - [`endpoint`]: the proxy listener's entry point.

pub mod endpoint;
pub mod records;
pub mod registration;
pub mod token;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::provider::Provider;
use crate::broker::sealing::{derive_key, SealKey};
use crate::store::StateStore;

/// Default base path of the broker's routes on the proxy listener.
pub const DEFAULT_PATH: &str = "/oproxy";
/// Default acceptance window of an `encrypted_token`'s timestamp, either side of now.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Default time a rotated-away Token stays usable once (an integration that lost the
/// answer carrying its new Token).
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);
/// How long a registration started in a browser may take to come back from the provider.
pub const REGISTRATION_TIMEOUT_SECS: i64 = 600;

/// How an app's Token is used at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppGrant {
    /// The Token is the provider's refresh token (rotated when the provider rotates it).
    RefreshToken,
    /// The Token is the tenant an administrator consented for; tokens come from the
    /// client-credentials grant at the provider's token URL for that tenant.
    ClientCredentials,
}

/// One app integrations register for.
#[derive(Debug)]
pub struct OProxyApp {
    pub name: String,
    pub provider: Arc<Provider>,
    pub grant: AppGrant,
    /// Scopes asked for at registration (default: the provider's).
    pub scopes: Vec<String>,
}

/// The broker, compiled from `oproxy:`.
#[derive(Debug)]
pub struct OProxy {
    /// Base of the routes (`/oproxy`), canonical, without a trailing slash.
    pub base_path: String,
    /// The token endpoint's path (default `{base}/token`).
    pub token_path: String,
    /// The callback's path (`{base}/callback`).
    pub callback_path: String,
    /// The callback's absolute URL, as registered at the providers.
    pub callback_url: String,
    /// Whether browsers reach the gateway over https (the cookie is then `Secure`).
    pub secure_cookie: bool,
    pub window: Duration,
    pub rotation_grace: Duration,
    pub apps: BTreeMap<String, OProxyApp>,
    /// Seals registration keys at rest.
    pub seal: SealKey,
    /// Keys the Token hashes (HMAC-SHA256) and the rotation successors.
    pub hash_key: [u8; 32],
    pub store: StateStore,
}

/// Which of the broker's routes a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Token,
    Start(String),
    Callback,
}

impl OProxy {
    /// Builds the broker's keys from the master secret (any length; 32 random bytes or
    /// more are expected, and `check` refuses less).
    #[must_use]
    pub fn keys(master: &[u8]) -> (SealKey, [u8; 32]) {
        (
            SealKey::new(derive_key(master, "portcullis oproxy seal v1")),
            derive_key(master, "portcullis oproxy token hash v1"),
        )
    }

    /// The route a canonical path is, if it is one of the broker's.
    #[must_use]
    pub fn route(&self, path: &str) -> Option<Route> {
        if path == self.token_path {
            return Some(Route::Token);
        }
        let rest = path.strip_prefix(&self.base_path)?.strip_prefix('/')?;
        if path == self.callback_path {
            return Some(Route::Callback);
        }
        let app = rest.strip_suffix("/start")?;
        (!app.is_empty() && !app.contains('/')).then(|| Route::Start(app.to_owned()))
    }

    /// The keyed hash of a Token, as stored.
    #[must_use]
    pub fn token_hash(&self, token: &str) -> [u8; 32] {
        crate::broker::sealing::keyed_hash(&self.hash_key, token.as_bytes())
    }
}

/// An id shown in logs: its first 8 characters, anything but letters, digits and `-`
/// shown as `?` (the id comes from the request: no line breaks into the log).
#[must_use]
pub fn masked(id: &str) -> String {
    let head: String = id
        .chars()
        .take(8)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '?'
            }
        })
        .collect();
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> OProxy {
        let (seal, hash_key) = OProxy::keys(b"0123456789abcdef0123456789abcdef");
        OProxy {
            base_path: "/oproxy".into(),
            token_path: "/oproxy/token".into(),
            callback_path: "/oproxy/callback".into(),
            callback_url: "https://gw/oproxy/callback".into(),
            secure_cookie: true,
            window: DEFAULT_WINDOW,
            rotation_grace: DEFAULT_ROTATION_GRACE,
            apps: BTreeMap::new(),
            seal,
            hash_key,
            store: StateStore::memory(),
        }
    }

    #[test]
    fn routes_are_recognised_and_nothing_else() {
        let broker = broker();
        assert_eq!(broker.route("/oproxy/token"), Some(Route::Token));
        assert_eq!(broker.route("/oproxy/callback"), Some(Route::Callback));
        assert_eq!(
            broker.route("/oproxy/mail/start"),
            Some(Route::Start("mail".into()))
        );
        for other in [
            "/oproxy",
            "/oproxy/",
            "/oproxy//start",
            "/oproxy/a/b/start",
            "/oproxyx/token",
            "/other",
        ] {
            assert_eq!(broker.route(other), None, "{other}");
        }
    }

    #[test]
    fn token_hashes_are_keyed() {
        let broker = broker();
        assert_eq!(broker.token_hash("t"), broker.token_hash("t"));
        assert_ne!(broker.token_hash("t"), broker.token_hash("u"));
        let (_, other_key) = OProxy::keys(b"another master secret, 32 bytes!");
        assert_ne!(
            broker.token_hash("t"),
            crate::broker::sealing::keyed_hash(&other_key, b"t")
        );
        assert_eq!(masked("2f1e0d3c-9b8a-4f6e"), "2f1e0d3c…");
        assert_eq!(masked("a\nb\"c"), "a?b?c…");
    }
}
