//! Spec → runtime for the state store, the token service and `require_bearer`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use portcullis_assertions::bearer::{BearerVars, RequireBearer, ScopeMatch, TokenResolver};
use portcullis_assertions::Assertion;

use super::Cx;
use crate::config::spec::{
    ConfigSpec, GrantSpec, IntrospectSpec, JwtAlgorithmSpec, KeysFormatSpec, RequireBearerSpec,
    ScopeMatchSpec, SigningAlgorithmSpec, TokenFormatSpec, TokenServiceSpec,
};
use crate::config::yaml::{Location, Spanned};
use crate::oauth::introspection::IntrospectionResolver;
use crate::oauth::jwt_bearer::TrustedIssuer;
use crate::oauth::keys::{SigningKey, SigningKeys};
use crate::oauth::live::LiveTokens;
use crate::oauth::remote::{KeysFormat, RemoteKeySet};
use crate::oauth::resolver::{LocalResolver, RemoteJwtResolver};
use crate::oauth::{
    Client, TokenService, UsagePolicy, GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN,
};
use crate::store::{ClientRecord, StateStore, StoreUrl, TokenFormat};

pub const DEFAULT_STATE: &str = "sqlite://portcullis.db";

/// Opens the store `state:` names, or reuses the one opened by an earlier load. `check` and
/// `eval` (a dry run) never open a file: they get a memory store.
pub(super) fn open_state(spec: &ConfigSpec, cx: &mut Cx<'_>) -> Option<StateStore> {
    let (text, loc) = spec
        .state
        .as_ref()
        .map_or((DEFAULT_STATE, None), |s| (s.value.as_str(), Some(s.loc)));
    let url = match StoreUrl::parse(text, &cx.base) {
        Ok(u) => u,
        Err(message) => {
            cx.err(loc.unwrap_or_default(), "state", message);
            return None;
        }
    };
    *cx.carry
        .state_url
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(url.clone());
    if cx.carry.dry_run {
        return Some(StateStore::memory());
    }
    let mut slot = cx
        .carry
        .store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((open_url, store)) = slot.as_ref() {
        if *open_url != url {
            log::warn!("state: {url} takes effect after a restart; {open_url} stays in use");
        }
        return Some(store.clone());
    }
    match url.open() {
        Ok(store) => {
            *slot = Some((url, store.clone()));
            Some(store)
        }
        Err(e) => {
            cx.err(loc.unwrap_or_default(), "state", e.to_string());
            None
        }
    }
}

fn jwt_algorithm(a: JwtAlgorithmSpec) -> Algorithm {
    match a {
        JwtAlgorithmSpec::RS256 => Algorithm::RS256,
        JwtAlgorithmSpec::RS384 => Algorithm::RS384,
        JwtAlgorithmSpec::RS512 => Algorithm::RS512,
        JwtAlgorithmSpec::PS256 => Algorithm::PS256,
        JwtAlgorithmSpec::PS384 => Algorithm::PS384,
        JwtAlgorithmSpec::PS512 => Algorithm::PS512,
        JwtAlgorithmSpec::ES256 => Algorithm::ES256,
        JwtAlgorithmSpec::ES384 => Algorithm::ES384,
        JwtAlgorithmSpec::EdDSA => Algorithm::EdDSA,
    }
}

fn algorithms(list: Option<&Vec<JwtAlgorithmSpec>>) -> Vec<Algorithm> {
    list.map_or_else(
        || vec![Algorithm::RS256, Algorithm::ES256],
        |l| l.iter().copied().map(jwt_algorithm).collect(),
    )
}

fn format(f: Option<TokenFormatSpec>) -> TokenFormat {
    match f {
        Some(TokenFormatSpec::Opaque) => TokenFormat::Opaque,
        _ => TokenFormat::Jwt,
    }
}

/// The key set at `url`, shared by every step and issuer naming it and kept across reloads
/// (so a reload does not throw away fetched keys).
fn key_set(
    url: &Spanned<String>,
    format: Option<KeysFormatSpec>,
    min_refresh: Duration,
    path: &str,
    cx: &mut Cx<'_>,
) -> Option<Arc<RemoteKeySet>> {
    let parsed: Result<http::Uri, _> = url.value.parse();
    if !parsed
        .as_ref()
        .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
    {
        cx.err(
            url.loc,
            path,
            format!("\"{}\" is not an http(s) URL", url.value),
        );
        return None;
    }
    let format = match format {
        Some(KeysFormatSpec::X509Map) => KeysFormat::X509Map,
        _ => KeysFormat::Jwks,
    };
    let set = cx
        .carry
        .key_sets
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry((url.value.clone(), format))
        .or_insert_with(|| Arc::new(RemoteKeySet::new(&url.value, format, min_refresh)))
        .clone();
    if !cx.key_set_list.iter().any(|k| Arc::ptr_eq(k, &set)) {
        cx.key_set_list.push(set.clone());
    }
    Some(set)
}

pub(super) fn compile_token_service(
    spec: &Spanned<TokenServiceSpec>,
    store: StateStore,
    cx: &mut Cx<'_>,
) -> Option<Arc<TokenService>> {
    let ts = &spec.value;
    let issuer = ts.issuer.value.trim().to_owned();
    if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
        cx.err(
            ts.issuer.loc,
            "token_service.issuer",
            "the issuer must be an http(s) URL (RFC 8414), e.g. https://gateway.example.com",
        );
    }
    let mut keys = Vec::new();
    for (i, k) in ts.signing_keys.iter().enumerate() {
        let path = format!("token_service.signing_keys[{i}]");
        let alg = match k.value.algorithm.unwrap_or(SigningAlgorithmSpec::ES256) {
            SigningAlgorithmSpec::ES256 => Algorithm::ES256,
            SigningAlgorithmSpec::RS256 => Algorithm::RS256,
        };
        let file = cx.base.join(&k.value.file.value);
        match crate::files::read_bounded(&file, crate::files::FileKind::Key) {
            Ok(pem) => match SigningKey::from_pem(&k.value.kid, alg, &pem) {
                Ok(key) => keys.push(key),
                Err(e) => cx.err(k.value.file.loc, &path, format!("{}: {e}", file.display())),
            },
            Err(e) => cx.err(k.value.file.loc, &path, e.to_string()),
        }
    }
    let unreadable_keys = keys.len() < ts.signing_keys.len();
    // Reported once; the rest is still checked so every mistake shows.
    let keys = match SigningKeys::new(keys) {
        Ok(k) => Some(k),
        Err(e) => {
            if !unreadable_keys {
                cx.err(spec.loc, "token_service.signing_keys", e);
            }
            None
        }
    };

    let mut clients = HashMap::new();
    for (i, c) in ts.clients.iter().enumerate() {
        let Some(c) = c.get() else { continue };
        let path = format!("token_service.clients[{i}]");
        let spec_c = &c.value;
        let digest = match (&spec_c.secret_sha256, &spec_c.secret) {
            (Some(d), None) => d.0,
            (None, Some(name)) => {
                let Some(s) = cx.secret(name, &path) else {
                    continue;
                };
                portcullis_assertions::api_key::digest(s.expose().as_bytes())
            }
            _ => {
                cx.err(
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
            cx.err(
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
            cx.err(
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
            cx.err(
                c.loc,
                &path,
                format!("client \"{}\" is listed twice", spec_c.id),
            );
        }
    }

    let mut trusted = Vec::new();
    let mut seen = HashSet::new();
    for (i, t) in ts.trusted_issuers.iter().enumerate() {
        let Some(t) = t.get() else { continue };
        let path = format!("token_service.trusted_issuers[{i}]");
        let s = &t.value;
        if !seen.insert(s.issuer.clone()) {
            cx.err(
                t.loc,
                &path,
                format!("issuer \"{}\" is listed twice", s.issuer),
            );
        }
        if s.accounts.is_empty() {
            cx.err(
                t.loc,
                &path,
                "list the role accounts that may obtain tokens under `accounts:`",
            );
        }
        let min_refresh = s
            .min_refresh_interval
            .as_ref()
            .map_or(Duration::from_secs(10), |d| d.0);
        let Some(keys) = key_set(
            &s.keys_url,
            s.keys_format,
            min_refresh,
            &format!("{path}.keys_url"),
            cx,
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
            leeway: s.leeway.as_ref().map_or(60, |d| d.0.as_secs()),
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

    let usage = ts.usage.as_ref();
    let secs = |d: Option<&crate::config::spec::DurationSpec>, default: u64| -> i64 {
        i64::try_from(d.map_or(default, |d| d.0.as_secs())).unwrap_or(i64::MAX)
    };
    let flush = usage
        .and_then(|u| u.flush_interval.as_ref())
        .map_or(Duration::from_secs(1), |d| d.0);
    if flush < Duration::from_millis(50) || flush > Duration::from_secs(3600) {
        cx.err(
            spec.loc,
            "token_service.usage.flush_interval",
            "flush_interval must be between 50ms and 1h",
        );
    }
    let access_ttl = secs(ts.access_token_ttl.as_ref(), 3600);
    if access_ttl < 1 {
        cx.err(
            spec.loc,
            "token_service.access_token_ttl",
            "access_token_ttl must be at least 1s",
        );
    }

    // The clients as the store keeps them (for the admin API), secrets as digests only.
    if !cx.carry.dry_run {
        for c in clients.values() {
            let rec = ClientRecord {
                id: c.id.clone(),
                secret_sha256: Some(c.secret_sha256),
                grants: c.grants.clone(),
                scopes: c.scopes.clone(),
                token_format: c.token_format,
            };
            // Loading is synchronous (also on reload, inside the server's runtime).
            if let Err(e) = crate::store::wait(store.tokens().put_client(&rec)) {
                cx.err(spec.loc, "token_service.clients", e.to_string());
                break;
            }
        }
    }

    let keys = keys?;
    let metadata = TokenService::metadata(&issuer, !trusted.is_empty());
    let base = issuer.trim_end_matches('/');
    Some(Arc::new(TokenService {
        token_endpoint: format!("{base}/oauth2/token"),
        audience: ts.audience.clone().unwrap_or_else(|| issuer.clone()),
        issuer,
        access_ttl,
        refresh_ttl: secs(ts.refresh_token_ttl.as_ref(), 30 * 24 * 3600),
        keys,
        clients,
        trusted,
        store,
        live: cx.carry.live.clone(),
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

pub(super) fn compile_require_bearer(
    spec: &RequireBearerSpec,
    service_name: &str,
    loc: Location,
    path: &str,
    cx: &mut Cx<'_>,
) -> Option<Box<dyn Assertion>> {
    if spec.issuer.is_some() && spec.introspection.is_some() {
        cx.err(
            loc,
            path,
            "give `issuer:` (JWTs checked with its keys) or `introspection:` (RFC 7662), not both",
        );
        return None;
    }
    if let Some(i) = &spec.introspection {
        let ok =
            i.url.value.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
        if !ok {
            cx.err(
                i.url.loc,
                &format!("{path}.introspection.url"),
                format!("\"{}\" is not an http(s) URL", i.url.value),
            );
            return None;
        }
        let secret = cx.secret(
            &i.client_secret,
            &format!("{path}.introspection.client_secret"),
        )?;
        let ttl = i
            .cache_ttl
            .as_ref()
            .map_or(Duration::from_secs(30), |d| d.0);
        let resolver = IntrospectionResolver::new(&i.url.value, &i.client_id, secret, ttl);
        return finish_bearer(spec, service_name, loc, path, resolver, cx);
    }
    let resolver: Arc<dyn TokenResolver> = match &spec.issuer {
        Some(remote) => {
            let keys = key_set(
                &remote.keys_url,
                remote.keys_format,
                remote
                    .min_refresh_interval
                    .as_ref()
                    .map_or(Duration::from_secs(10), |d| d.0),
                &format!("{path}.issuer.keys_url"),
                cx,
            )?;
            Arc::new(RemoteJwtResolver {
                issuer: remote.issuer.clone(),
                audience: remote.audience.clone(),
                algorithms: algorithms(remote.algorithms.as_ref()),
                keys,
                leeway: remote.leeway.as_ref().map_or(60, |d| d.0.as_secs()),
                cache: LiveTokens::default(),
            })
        }
        None => match &cx.token_service {
            Some(ts) => Arc::new(LocalResolver {
                service: ts.clone(),
            }),
            // A token service that failed to compile has reported why already.
            None if cx.token_service_declared => return None,
            None => {
                cx.err(
                    loc,
                    path,
                    "require_bearer checks tokens of this gateway's token_service, and there is none: add `token_service:`, or give `issuer:` to check another issuer's JWTs",
                );
                return None;
            }
        },
    };
    finish_bearer(spec, service_name, loc, path, resolver, cx)
}

fn finish_bearer(
    spec: &RequireBearerSpec,
    service_name: &str,
    loc: Location,
    path: &str,
    resolver: Arc<dyn TokenResolver>,
    cx: &mut Cx<'_>,
) -> Option<Box<dyn Assertion>> {
    let vars = BearerVars {
        client_id: cx.registry.define("client.id"),
        subject: cx.registry.define("token.sub"),
        scope: cx.registry.define("token.scope"),
    };
    let realm = spec
        .realm
        .as_ref()
        .map_or(service_name, |r| r.value.as_str());
    let scope_match = match spec.scope_match {
        Some(ScopeMatchSpec::Any) => ScopeMatch::Any,
        _ => ScopeMatch::All,
    };
    match RequireBearer::new(
        realm,
        spec.scopes.clone(),
        scope_match,
        spec.allow_query_token.unwrap_or(false),
        resolver,
        vars,
    ) {
        Ok(step) => Some(Box::new(step)),
        Err(e) => {
            cx.err(spec.realm.as_ref().map_or(loc, |r| r.loc), path, e);
            None
        }
    }
}
