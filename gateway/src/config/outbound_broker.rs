//! The `outbound_broker:` section and the `inject_oauth_token` step's options: provider
//! sessions the gateway holds for the outbound proxy (see docs/oauth-broker.md), compiled
//! into [`crate::broker::outbound::OutboundBroker`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::context::{is_http_url, CompileContext};
use super::values::DurationSpec;
use super::yaml::Spanned;
use crate::broker::outbound::{OutboundBroker, SessionGrant};
use crate::broker::provider::Provider;
use crate::broker::sealing::{derive_key, SealKey};
use crate::store::StateStore;

/// Default time ahead of expiry an access token is refreshed.
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(60);

/// Provider sessions held for the outbound proxy: an administrator connects each one once
/// at `/broker/{provider}` on the admin listener; `inject_oauth_token` then sends its
/// access token upstream.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundBrokerSpec {
    /// The admin listener's URL as the administrator's browser reaches it (e.g.
    /// `https://gateway-admin.example.com:9901`): `{public_url}/broker/callback` is the
    /// redirect URI to register at each provider.
    pub public_url: Spanned<String>,
    /// Name of the secret (under `secrets:`, at least 32 characters) the AES-256-GCM key
    /// that seals sessions' tokens at rest is derived from.
    pub key_secret: Spanned<String>,
    /// How long before an access token expires it is refreshed. Default `60s`.
    #[serde(default)]
    pub refresh_before: Option<Spanned<DurationSpec>>,
    /// The providers (under `providers:`) to hold a session with, and how it is made:
    /// `handshake` (an administrator consents in a browser; refresh tokens keep it alive)
    /// or `client_credentials` (no handshake).
    pub sessions: BTreeMap<String, Spanned<SessionGrantSpec>>,
}

/// How a provider session is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionGrantSpec {
    Handshake,
    ClientCredentials,
}

/// Compiles the section over the compiled providers.
pub(crate) fn compile(
    spec: &Spanned<OutboundBrokerSpec>,
    providers: &HashMap<String, Arc<Provider>>,
    store: StateStore,
    context: &mut CompileContext<'_>,
) -> Option<Arc<OutboundBroker>> {
    let s = &spec.value;
    let public_url = s.public_url.value.trim_end_matches('/');
    if !is_http_url(public_url) {
        context.err(
            s.public_url.loc,
            "outbound_broker.public_url",
            format!("\"{}\" is not an http(s) URL", s.public_url.value),
        );
    }
    let master = context.secret(&s.key_secret, "outbound_broker.key_secret");
    if master.as_ref().is_some_and(|m| m.expose().len() < 32) {
        context.err(
            s.key_secret.loc,
            "outbound_broker.key_secret",
            "the key secret must be at least 32 characters (e.g. `openssl rand -base64 32`)",
        );
    }
    let refresh_before = s
        .refresh_before
        .as_ref()
        .map_or(DEFAULT_REFRESH_BEFORE, |d| d.value.0);
    if refresh_before > Duration::from_secs(3600) {
        context.err(
            s.refresh_before.as_ref().map_or(spec.loc, |d| d.loc),
            "outbound_broker.refresh_before",
            "refresh_before must be at most 1h",
        );
    }
    let mut sessions = HashMap::new();
    for (name, grant) in &s.sessions {
        let path = format!("outbound_broker.sessions.{name}");
        let Some(provider) = providers.get(name) else {
            let known: Vec<&str> = providers.keys().map(String::as_str).collect();
            let hint = super::context::suggest(name, &known).map_or_else(
                || "; define it under `providers:`".to_owned(),
                |k| format!("; did you mean \"{k}\"?"),
            );
            context.err(
                grant.loc,
                &path,
                format!("unknown provider \"{name}\"{hint}"),
            );
            continue;
        };
        let grant = match grant.value {
            SessionGrantSpec::Handshake => {
                if provider.authorize_url.is_none() {
                    context.err(
                        grant.loc,
                        &path,
                        format!("provider \"{name}\" has no authorize_url: a handshake needs one"),
                    );
                }
                SessionGrant::Handshake
            }
            SessionGrantSpec::ClientCredentials => SessionGrant::ClientCredentials,
        };
        sessions.insert(name.clone(), (provider.clone(), grant));
    }
    let master = master?;
    let seal = SealKey::new(derive_key(
        master.expose().as_bytes(),
        "portcullis outbound broker seal v1",
    ));
    Some(Arc::new(OutboundBroker::new(
        sessions,
        public_url,
        refresh_before,
        seal,
        store,
        context.mode == crate::config::LoadMode::DryRun,
    )))
}
