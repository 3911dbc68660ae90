//! The `providers:` and `oproxy:` sections in one place: their options (`*Spec`, which the
//! JSON Schema shows) and their compilation into [`crate::broker::provider::Provider`]
//! and [`crate::oproxy::OProxy`]. See docs/oauth-broker.md.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::context::{is_http_url, CompileContext};
use super::values::DurationSpec;
use super::yaml::{Location, Spanned};
use crate::broker::client_assertion::ClientAssertionKey;
use crate::broker::provider::{ClientSecret, Provider, TokenAuth};
use crate::oproxy::{AppGrant, OProxy, OProxyApp};
use crate::store::StateStore;

/// Default deadline of one call to a provider's token endpoint.
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The least length of the broker's key secret.
const MIN_KEY_SECRET: usize = 32;

/// A third-party OAuth 2.0 provider the gateway holds sessions with (Salesforce,
/// Microsoft Entra ID, ...).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// The provider's authorization endpoint, where a browser consents. Needed for
    /// registrations; a provider used only with client credentials may leave it out.
    #[serde(default)]
    pub authorize_url: Option<Spanned<String>>,
    /// The provider's token endpoint. `{tenant}` in it is replaced by the tenant of an
    /// admin-consent registration (e.g. `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`).
    pub token_url: Spanned<String>,
    /// The gateway's client id at the provider.
    pub client_id: Spanned<String>,
    /// Name of the secret (under `secrets:`) holding the client secret. Absent: a public
    /// client (then keep `pkce` on).
    #[serde(default)]
    pub client_secret: Option<Spanned<String>>,
    /// Scopes asked for at the provider (e.g. `[offline_access, Mail.Read]`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Extra parameters of the authorization request, e.g. `{prompt: consent}`.
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    /// How the gateway authenticates at the token endpoint: `client_secret_basic`
    /// (default), `client_secret_post`, or `private_key_jwt` (a JWT signed with
    /// `private_key`, RFC 7523; no client secret is sent).
    #[serde(default)]
    pub token_auth: Option<Spanned<TokenAuthSpec>>,
    /// With `token_auth: private_key_jwt`: the gateway's key, whose public half is
    /// registered at the provider.
    #[serde(default)]
    pub private_key: Option<Spanned<ProviderKeySpec>>,
    /// PKCE (S256) on the authorization request. Default `true`.
    #[serde(default)]
    pub pkce: Option<bool>,
    /// Deadline of one call to the token endpoint. Default `10s`.
    #[serde(default)]
    pub timeout: Option<Spanned<DurationSpec>>,
}

/// The private key of `private_key_jwt`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderKeySpec {
    /// PKCS#8 PEM private key (relative to the policy file).
    pub file: Spanned<String>,
    /// `RS256` (default) or `ES256`.
    #[serde(default)]
    pub algorithm: Option<Spanned<String>>,
    /// The `kid` the provider knows the public key by. Default: none.
    #[serde(default)]
    pub key_id: Option<String>,
}

/// Client authentication at a provider's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthSpec {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

/// The OProxy-compatible token broker: integrations register once in a browser and then
/// exchange encrypted Tokens for provider access tokens at `POST {path}/token`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OProxySpec {
    /// Base path of the broker's routes on the proxy listener: `{path}/{app}/start`,
    /// `{path}/callback`, `{path}/token`. Default `/oproxy`.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// The token endpoint's path, when integrations call another one. Default `{path}/token`.
    #[serde(default)]
    pub token_path: Option<Spanned<String>>,
    /// The gateway's URL as browsers reach it (e.g. `https://gateway.example.com`): the
    /// callback `{public_url}{path}/callback` is what is registered at the providers.
    pub public_url: Spanned<String>,
    /// Name of the secret (under `secrets:`, at least 32 characters, e.g. `openssl rand
    /// -base64 32`) the broker's keys are derived from: the AES-256-GCM key that seals
    /// registration keys at rest, and the HMAC key of the Token hashes. Changing it
    /// invalidates every registration.
    pub key_secret: Spanned<String>,
    /// How far the timestamp inside `encrypted_token` may be from the gateway's clock,
    /// either way. Default `5m`.
    #[serde(default)]
    pub window: Option<Spanned<DurationSpec>>,
    /// After a rotation, how long the previous Token is still accepted, once (for an
    /// integration that lost the answer carrying its new Token). `0s` turns it off.
    /// Default `24h`.
    #[serde(default)]
    pub rotation_grace: Option<Spanned<DurationSpec>>,
    /// The apps integrations register for, by `app_name`.
    pub apps: BTreeMap<String, Spanned<OProxyAppSpec>>,
}

/// One app of the OProxy broker.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OProxyAppSpec {
    /// The provider (under `providers:`).
    pub provider: Spanned<String>,
    /// `refresh_token` (default): the Token is the provider's refresh token.
    /// `client_credentials`: the Token is the tenant an administrator consented for
    /// (admin-consent flow); tokens come from the client-credentials grant.
    #[serde(default)]
    pub grant: Option<OProxyGrantSpec>,
    /// Scopes asked for at registration. Default: the provider's.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

/// How an app's Token is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OProxyGrantSpec {
    RefreshToken,
    ClientCredentials,
}

/// Compiles every provider.
pub(crate) fn compile_providers(
    providers: &BTreeMap<String, Spanned<ProviderSpec>>,
    context: &mut CompileContext<'_>,
) -> HashMap<String, Arc<Provider>> {
    let mut out = HashMap::new();
    for (name, spec) in providers {
        let path = format!("providers.{name}");
        let s = &spec.value;
        if let Some(url) = &s.authorize_url {
            if !is_http_url(&url.value) {
                context.err(
                    url.loc,
                    &format!("{path}.authorize_url"),
                    format!("\"{}\" is not an http(s) URL", url.value),
                );
            }
        }
        if !is_http_url(&s.token_url.value.replace("{tenant}", "tenant")) {
            context.err(
                s.token_url.loc,
                &format!("{path}.token_url"),
                format!("\"{}\" is not an http(s) URL", s.token_url.value),
            );
        }
        let token_auth = match s.token_auth.as_ref().map(|a| (a.value, a.loc)) {
            None | Some((TokenAuthSpec::ClientSecretBasic, _)) => TokenAuth::ClientSecretBasic,
            Some((TokenAuthSpec::ClientSecretPost, _)) => TokenAuth::ClientSecretPost,
            Some((TokenAuthSpec::PrivateKeyJwt, loc)) => {
                match client_assertion_key(s.private_key.as_ref(), loc, &path, context) {
                    Some(key) => TokenAuth::PrivateKeyJwt(Arc::new(key)),
                    None => TokenAuth::ClientSecretBasic,
                }
            }
        };
        if s.private_key.is_some() && !matches!(token_auth, TokenAuth::PrivateKeyJwt(_)) {
            if let Some(key) = &s.private_key {
                context.err(
                    key.loc,
                    &format!("{path}.private_key"),
                    "private_key is used only with token_auth: private_key_jwt",
                );
            }
        }
        let client_secret = s
            .client_secret
            .as_ref()
            .and_then(|name| context.secret(name, &format!("{path}.client_secret")))
            .map(|secret| ClientSecret::new(secret.expose()));
        let pkce = s.pkce.unwrap_or(true);
        if s.client_secret.is_none() && !pkce {
            context.err(
                spec.loc,
                &path,
                "a provider without client_secret is a public client: it needs pkce",
            );
        }
        let timeout = s
            .timeout
            .as_ref()
            .map_or(DEFAULT_PROVIDER_TIMEOUT, |t| t.value.0);
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            context.err(
                s.timeout.as_ref().map_or(spec.loc, |t| t.loc),
                &format!("{path}.timeout"),
                "timeout must be between 1ms and 60s",
            );
        }
        out.insert(
            name.clone(),
            Arc::new(Provider::new(
                name.clone(),
                s.authorize_url.as_ref().map(|u| u.value.clone()),
                s.token_url.value.clone(),
                s.client_id.value.clone(),
                client_secret,
                s.scopes.clone(),
                s.authorize_params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                token_auth,
                pkce,
                timeout,
            )),
        );
    }
    out
}

/// The key of `private_key_jwt`, read from its gathered file.
fn client_assertion_key(
    spec: Option<&Spanned<ProviderKeySpec>>,
    token_auth_loc: Location,
    path: &str,
    context: &mut CompileContext<'_>,
) -> Option<ClientAssertionKey> {
    let Some(spec) = spec else {
        context.err(
            token_auth_loc,
            &format!("{path}.token_auth"),
            "private_key_jwt needs private_key: {file: PEM}, the key whose public half the provider holds",
        );
        return None;
    };
    let algorithm = match spec
        .value
        .algorithm
        .as_ref()
        .map(|a| (a.value.as_str(), a.loc))
    {
        None | Some(("RS256", _)) => jsonwebtoken::Algorithm::RS256,
        Some(("ES256", _)) => jsonwebtoken::Algorithm::ES256,
        Some((other, loc)) => {
            context.err(
                loc,
                &format!("{path}.private_key.algorithm"),
                format!("\"{other}\" is not supported: RS256 or ES256"),
            );
            return None;
        }
    };
    let file = &spec.value.file;
    let (full, pem) = context.named_file(file, &format!("{path}.private_key.file"))?;
    ClientAssertionKey::from_pem(pem, algorithm, spec.value.key_id.clone())
        .map_err(|error| {
            context.err(
                file.loc,
                &format!("{path}.private_key.file"),
                format!("{}: {error}", full.display()),
            );
        })
        .ok()
}

/// A route prefix: absolute, canonical, not `/`, no trailing slash.
fn valid_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && !path.ends_with('/')
        && crate::path::canonicalize(path).is_ok_and(|c| c.routing == path)
}

/// Compiles the broker over the compiled providers.
pub(crate) fn compile_oproxy(
    spec: &Spanned<OProxySpec>,
    providers: &HashMap<String, Arc<Provider>>,
    store: StateStore,
    context: &mut CompileContext<'_>,
) -> Option<Arc<OProxy>> {
    let s = &spec.value;
    let base_path = s.path.as_ref().map_or_else(
        || crate::oproxy::DEFAULT_PATH.to_owned(),
        |p| p.value.clone(),
    );
    if !valid_path(&base_path) {
        context.err(
            s.path.as_ref().map_or(spec.loc, |p| p.loc),
            "oproxy.path",
            "path must be an absolute path in canonical form, not `/`, without a trailing slash",
        );
    }
    let token_path = s
        .token_path
        .as_ref()
        .map_or_else(|| format!("{base_path}/token"), |p| p.value.clone());
    if !valid_path(&token_path) {
        context.err(
            s.token_path.as_ref().map_or(spec.loc, |p| p.loc),
            "oproxy.token_path",
            "token_path must be an absolute path in canonical form without a trailing slash",
        );
    }
    let public_url = s.public_url.value.trim_end_matches('/').to_owned();
    let public = public_url.parse::<http::Uri>().ok();
    if !is_http_url(&public_url) || public.as_ref().is_some_and(|u| u.query().is_some()) {
        context.err(
            s.public_url.loc,
            "oproxy.public_url",
            format!(
                "\"{}\" is not an http(s) URL without a query",
                s.public_url.value
            ),
        );
    }
    let secure_cookie = public_url.starts_with("https://");
    let master = context.secret(&s.key_secret, "oproxy.key_secret");
    if master
        .as_ref()
        .is_some_and(|m| m.expose().len() < MIN_KEY_SECRET)
    {
        context.err(
            s.key_secret.loc,
            "oproxy.key_secret",
            format!("the key secret must be at least {MIN_KEY_SECRET} characters (e.g. `openssl rand -base64 32`)"),
        );
    }
    let window = s
        .window
        .as_ref()
        .map_or(crate::oproxy::DEFAULT_WINDOW, |w| w.value.0);
    if window < Duration::from_secs(1) || window > Duration::from_secs(3600) {
        context.err(
            s.window.as_ref().map_or(spec.loc, |w| w.loc),
            "oproxy.window",
            "window must be between 1s and 1h",
        );
    }
    let rotation_grace = s
        .rotation_grace
        .as_ref()
        .map_or(crate::oproxy::DEFAULT_ROTATION_GRACE, |g| g.value.0);
    if rotation_grace > Duration::from_secs(30 * 24 * 3600) {
        context.err(
            s.rotation_grace.as_ref().map_or(spec.loc, |g| g.loc),
            "oproxy.rotation_grace",
            "rotation_grace must be at most 30d",
        );
    }
    let mut apps = BTreeMap::new();
    for (name, app) in &s.apps {
        let path = format!("oproxy.apps.{name}");
        if name.is_empty()
            || name.len() > 100
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            context.err(
                app.loc,
                &path,
                "an app name holds letters, digits, `-`, `_` and `.` only (it is a path segment)",
            );
            continue;
        }
        let Some(provider) = providers.get(&app.value.provider.value) else {
            let known: Vec<&str> = providers.keys().map(String::as_str).collect();
            let hint = super::context::suggest(&app.value.provider.value, &known).map_or_else(
                || "; define it under `providers:`".to_owned(),
                |k| format!("; did you mean \"{k}\"?"),
            );
            context.err(
                app.value.provider.loc,
                &format!("{path}.provider"),
                format!("unknown provider \"{}\"{hint}", app.value.provider.value),
            );
            continue;
        };
        if provider.authorize_url.is_none() {
            context.err(
                app.value.provider.loc,
                &format!("{path}.provider"),
                format!(
                    "provider \"{}\" has no authorize_url: registrations need one",
                    provider.name
                ),
            );
        }
        let grant = match app.value.grant {
            Some(OProxyGrantSpec::ClientCredentials) => AppGrant::ClientCredentials,
            None | Some(OProxyGrantSpec::RefreshToken) => AppGrant::RefreshToken,
        };
        apps.insert(
            name.clone(),
            OProxyApp {
                name: name.clone(),
                provider: provider.clone(),
                grant,
                scopes: app
                    .value
                    .scopes
                    .clone()
                    .unwrap_or_else(|| provider.scopes.clone()),
            },
        );
    }
    let master = master?;
    let (seal, hash_key) = OProxy::keys(master.expose().as_bytes());
    let callback_path = format!("{base_path}/callback");
    Some(Arc::new(OProxy {
        callback_url: format!("{public_url}{callback_path}"),
        base_path,
        token_path,
        callback_path,
        secure_cookie,
        window,
        rotation_grace,
        apps,
        seal,
        hash_key,
        store,
    }))
}
