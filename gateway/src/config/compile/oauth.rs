//! Spec → runtime for the state store and the token service.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use crate::config::context::CompileContext;
use crate::config::spec::{
    algorithms, ConfigSpec, GrantSpec, IntrospectSpec, SigningAlgorithmSpec, TokenFormatSpec,
    TokenServiceSpec,
};
use crate::config::steps::{DEFAULT_LEEWAY, DEFAULT_MIN_REFRESH};
use crate::config::yaml::Spanned;
use crate::config::LoadMode;
use crate::oauth::jwt_bearer::TrustedIssuer;
use crate::oauth::keys::{SigningKey, SigningKeys};
use crate::oauth::{
    Client, TokenService, UsagePolicy, GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN,
};
use crate::store::{ClientRecord, StateStore, StoreUrl, TokenFormat};

pub const DEFAULT_STATE: &str = "sqlite://portcullis.db";

/// Opens the store `state:` names, or reuses the one opened by an earlier load. `check` and
/// `eval` (a dry run) never open a file: they get a memory store.
pub(super) fn open_state(
    spec: &ConfigSpec,
    context: &mut CompileContext<'_>,
) -> Option<StateStore> {
    let (text, loc) = spec
        .state
        .as_ref()
        .map_or((DEFAULT_STATE, None), |s| (s.value.as_str(), Some(s.loc)));
    let mut url = match StoreUrl::parse(text, &context.base) {
        Ok(u) => u,
        Err(message) => {
            context.err(loc.unwrap_or_default(), "state", message);
            return None;
        }
    };
    let errors_before = context.errors.len();
    super::redis::apply_redis_options(spec, &mut url, context);
    if context.errors.len() > errors_before {
        // A store opened with options that are wrong (or meant for another store) would
        // be the wrong store.
        return None;
    }
    context.state_url = Some(url.clone());
    if context.mode == LoadMode::DryRun {
        return Some(StateStore::memory());
    }
    let mut slot = context
        .carry
        .store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((open_url, store)) = slot.as_ref() {
        if *open_url != url {
            // The same URL shown twice would say nothing: what changed is under `redis:`.
            context
                .warnings
                .push(if open_url.to_string() == url.to_string() {
                    "redis: changed options take effect after a restart".to_owned()
                } else {
                    format!("state: {url} takes effect after a restart; {open_url} stays in use")
                });
        }
        return Some(store.clone());
    }
    match url.open() {
        Ok(store) => {
            if let Some(client) = store.redis_client() {
                match crate::redis::metrics::RedisCollector::new(client.clone()) {
                    Ok(collector) => context
                        .carry
                        .metrics
                        .register_collector(Box::new(collector)),
                    Err(error) => log::warn!("redis metrics not exported: {error}"),
                }
            }
            *slot = Some((url, store.clone()));
            Some(store)
        }
        Err(e) => {
            context.err(loc.unwrap_or_default(), "state", e.to_string());
            None
        }
    }
}

fn format(f: Option<TokenFormatSpec>) -> TokenFormat {
    match f {
        Some(TokenFormatSpec::Opaque) => TokenFormat::Opaque,
        _ => TokenFormat::Jwt,
    }
}

pub(super) fn compile_token_service(
    spec: &Spanned<TokenServiceSpec>,
    store: StateStore,
    context: &mut CompileContext<'_>,
) -> Option<Arc<TokenService>> {
    let token_service = &spec.value;
    let issuer = token_service.issuer.value.trim().to_owned();
    if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
        context.err(
            token_service.issuer.loc,
            "token_service.issuer",
            "the issuer must be an http(s) URL (RFC 8414), e.g. https://gateway.example.com",
        );
    }
    let keys = signing_keys(spec, context);
    let clients = clients(token_service, context);
    let trusted = trusted_issuers(token_service, context);

    let usage = token_service.usage.as_ref();
    let secs = |d: Option<&crate::config::spec::DurationSpec>, default: u64| -> i64 {
        i64::try_from(d.map_or(default, |d| d.0.as_secs())).unwrap_or(i64::MAX)
    };
    let flush = usage
        .and_then(|u| u.flush_interval.as_ref())
        .map_or(Duration::from_secs(1), |d| d.0);
    if flush < Duration::from_millis(50) || flush > Duration::from_secs(3600) {
        context.err(
            spec.loc,
            "token_service.usage.flush_interval",
            "flush_interval must be between 50ms and 1h",
        );
    }
    let access_ttl = secs(token_service.access_token_ttl.as_ref(), 3600);
    if access_ttl < 1 {
        context.err(
            spec.loc,
            "token_service.access_token_ttl",
            "access_token_ttl must be at least 1s",
        );
    }

    // The clients as the store keeps them (for the admin API), secrets as digests only.
    if context.mode == LoadMode::Serve {
        for c in clients.values() {
            let rec = ClientRecord {
                id: c.id.clone(),
                secret_sha256: Some(c.secret_sha256),
                grants: c.grants.clone(),
                scopes: c.scopes.clone(),
                token_format: c.token_format,
            };
            // Loading is synchronous (also on reload, on its blocking thread).
            if let Err(e) = crate::store::wait(store.tokens().put_client(&rec)) {
                context.err(spec.loc, "token_service.clients", e.to_string());
                break;
            }
        }
    }

    let keys = keys?;
    let saml_trusted = crate::config::saml_bearer::compile(token_service, context);
    let metadata = TokenService::metadata(&issuer, !trusted.is_empty(), !saml_trusted.is_empty());
    let base = issuer.trim_end_matches('/');
    Some(Arc::new(TokenService {
        token_endpoint: format!("{base}/oauth2/token"),
        audience: token_service
            .audience
            .clone()
            .unwrap_or_else(|| issuer.clone()),
        issuer,
        access_ttl,
        refresh_ttl: secs(token_service.refresh_token_ttl.as_ref(), 30 * 24 * 3600),
        keys,
        clients,
        trusted,
        saml_trusted,
        store,
        live: context.carry.live.clone(),
        usage: UsagePolicy {
            max_distinct_ips: usage.and_then(|u| u.max_distinct_ips),
            max_per_minute: usage.and_then(|u| u.max_requests_per_minute),
            auto_revoke: usage.and_then(|u| u.auto_revoke).unwrap_or(false),
            flush_interval: flush,
            durable: usage.and_then(|u| u.durable).unwrap_or(false),
        },
        metadata_json: serde_json::to_vec_pretty(&metadata).unwrap_or_default(),
    }))
}

/// The token service's signing keys (files read by gathering); `None` when one is unusable.
fn signing_keys(
    spec: &Spanned<TokenServiceSpec>,
    context: &mut CompileContext<'_>,
) -> Option<SigningKeys> {
    let token_service = &spec.value;
    let mut keys = Vec::new();
    for (i, k) in token_service.signing_keys.iter().enumerate() {
        let path = format!("token_service.signing_keys[{i}]");
        let alg = match k.value.algorithm.unwrap_or(SigningAlgorithmSpec::ES256) {
            SigningAlgorithmSpec::ES256 => Algorithm::ES256,
            SigningAlgorithmSpec::RS256 => Algorithm::RS256,
        };
        let file = context.base.join(&k.value.file.value);
        match context.gathered.file(&file) {
            Ok(pem) => match SigningKey::from_pem(&k.value.kid, alg, pem) {
                Ok(key) => keys.push(key),
                Err(e) => context.err(k.value.file.loc, &path, format!("{}: {e}", file.display())),
            },
            Err(e) => context.err(k.value.file.loc, &path, e),
        }
    }
    let unreadable_keys = keys.len() < token_service.signing_keys.len();
    // Reported once; the rest is still checked so every mistake shows.
    match SigningKeys::new(keys) {
        Ok(k) => Some(k),
        Err(e) => {
            if !unreadable_keys {
                context.err(spec.loc, "token_service.signing_keys", e);
            }
            None
        }
    }
}

/// The registered clients, by id.
fn clients(
    token_service: &TokenServiceSpec,
    context: &mut CompileContext<'_>,
) -> HashMap<String, Client> {
    let mut clients = HashMap::new();
    for (i, c) in token_service.clients.iter().enumerate() {
        let Some(c) = c.get() else { continue };
        let path = format!("token_service.clients[{i}]");
        let spec_c = &c.value;
        let digest = match (&spec_c.secret_sha256, &spec_c.secret) {
            (Some(d), None) => d.0,
            (None, Some(name)) => {
                let Some(s) = context.secret(name, &path) else {
                    continue;
                };
                portcullis_assertions::api_key::digest(s.expose().as_bytes())
            }
            _ => {
                context.err(
                    c.loc,
                    &path,
                    "give exactly one of `secret_sha256` and `secret`",
                );
                continue;
            }
        };
        let grants: Vec<String> = spec_c
            .grants
            .clone()
            .unwrap_or_else(|| vec![GrantSpec::ClientCredentials])
            .into_iter()
            .map(|g| match g {
                GrantSpec::ClientCredentials => GRANT_CLIENT_CREDENTIALS.to_owned(),
                GrantSpec::RefreshToken => GRANT_REFRESH_TOKEN.to_owned(),
            })
            .collect();
        let refresh_tokens = spec_c.refresh_tokens.unwrap_or(false);
        if refresh_tokens && !grants.iter().any(|g| g == GRANT_REFRESH_TOKEN) {
            context.err(
                c.loc,
                &path,
                "refresh_tokens: true needs refresh_token in grants",
            );
        }
        if spec_c
            .scopes
            .iter()
            .any(|s| s.is_empty() || s.contains([' ', '"', '\\']))
        {
            context.err(
                c.loc,
                &path,
                "a scope is a non-empty word without spaces or quotes",
            );
        }
        let client = Client {
            id: spec_c.id.clone(),
            secret_sha256: digest,
            grants,
            scopes: spec_c.scopes.clone(),
            token_format: format(spec_c.token_format),
            refresh_tokens,
            introspect_any: spec_c.introspect == Some(IntrospectSpec::Any),
        };
        if clients.insert(client.id.clone(), client).is_some() {
            context.err(
                c.loc,
                &path,
                format!("client \"{}\" is listed twice", spec_c.id),
            );
        }
    }
    clients
}

/// The platforms trusted for the jwt-bearer grant.
fn trusted_issuers(
    token_service: &TokenServiceSpec,
    context: &mut CompileContext<'_>,
) -> Vec<TrustedIssuer> {
    let mut trusted = Vec::new();
    let mut seen = HashSet::new();
    for (i, t) in token_service.trusted_issuers.iter().enumerate() {
        let Some(t) = t.get() else { continue };
        let path = format!("token_service.trusted_issuers[{i}]");
        let s = &t.value;
        if !seen.insert(s.issuer.clone()) {
            context.err(
                t.loc,
                &path,
                format!("issuer \"{}\" is listed twice", s.issuer),
            );
        }
        if s.accounts.is_empty() {
            context.err(
                t.loc,
                &path,
                "list the role accounts that may obtain tokens under `accounts:`",
            );
        }
        let min_refresh = s
            .min_refresh_interval
            .as_ref()
            .map_or(DEFAULT_MIN_REFRESH, |d| d.0);
        let Some(keys) = context.remote_key_set(
            &s.keys_url,
            s.keys_format,
            min_refresh,
            &format!("{path}.keys_url"),
        ) else {
            continue;
        };
        trusted.push(TrustedIssuer {
            issuer: s.issuer.clone(),
            keys,
            algorithms: algorithms(s.algorithms.as_ref()),
            client_id: s.client.clone(),
            token_format: format(s.token_format),
            refresh_tokens: s.refresh_tokens.unwrap_or(false),
            leeway: s.leeway.as_ref().map_or(DEFAULT_LEEWAY, |d| d.0).as_secs(),
            max_lifetime: s
                .max_assertion_lifetime
                .as_ref()
                .map_or(3600, |d| i64::try_from(d.0.as_secs()).unwrap_or(i64::MAX)),
            require_jti: s.require_jti.unwrap_or(true),
            accounts: s
                .accounts
                .iter()
                .map(|(sub, a)| (sub.clone(), a.scopes.clone()))
                .collect(),
        });
    }
    trusted
}
