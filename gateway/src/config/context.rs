//! The compile-time state (where we are, what is wrong so far, what we know), and the
//! one spelling suggester every "did you mean" uses.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portcullis_assertions::hmac::KeySet;
use portcullis_assertions::VarRegistry;

use crate::config::gathered::Gathered;
use crate::config::values::KeysFormatSpec;
use crate::config::yaml::{Location, Spanned};
use crate::config::Diagnostic;
use crate::oauth::remote::{KeysFormat, RemoteKeySet};
use crate::runtime::Secret;

/// Which pipeline a step sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Request,
    Response,
}

impl Side {
    /// The list's name in a service: `request` or `response`.
    pub(crate) fn list_name(self) -> &'static str {
        match self {
            Side::Request => "request",
            Side::Response => "response",
        }
    }
}

/// The compile-time state: where we are, what we found wrong, what we know.
pub(crate) struct CompileContext<'a> {
    pub(crate) file: Arc<Path>,
    /// Folder of the main policy file: relative paths start here.
    pub(crate) base: PathBuf,
    /// The policy has HTTPS listeners (`tls:`).
    pub(crate) https_listeners: bool,
    pub(crate) errors: &'a mut Vec<Diagnostic>,
    /// What gathering read: secrets, addresses, files.
    pub(crate) gathered: &'a Gathered,
    /// Secrets that are defined but could not be read (already reported).
    pub(crate) unreadable: HashSet<String>,
    pub(crate) registry: VarRegistry,
    pub(crate) key_sets: HashMap<String, Arc<KeySet>>,
    pub(crate) carry: &'a crate::config::Carry,
    /// Serving, or `check`/`eval` (which open no state file and write nothing).
    pub(crate) mode: crate::config::LoadMode,
    /// What is worth saying but does not stop the load (printed by check, run and reload).
    pub(crate) warnings: Vec<String>,
    /// The state store the policy names, once `state:` has been read.
    pub(crate) state_url: Option<crate::store::StoreUrl>,
    /// How many `any` composites the step being compiled sits in.
    pub(crate) any_depth: usize,
    /// The SAML issuer, when the policy has one that compiled (for `issue_saml`).
    pub(crate) saml_issuer: Option<Arc<crate::saml_issuer::SamlIssuer>>,
    /// The policy has a `saml_issuer:` section (which may have failed to compile).
    pub(crate) saml_issuer_declared: bool,
    /// The token service, when the policy has one (for `require_bearer`).
    pub(crate) token_service: Option<Arc<crate::oauth::TokenService>>,
    /// The policy has a `token_service:` section (which may have failed to compile).
    pub(crate) token_service_declared: bool,
    /// Every remote key set the policy names (for the refresher and readiness).
    pub(crate) key_set_list: Vec<Arc<RemoteKeySet>>,
    /// The service being compiled (the default realm of `require_bearer`).
    pub(crate) service_name: String,
    /// Where `scope: cluster` rate limits decide (the Redis state store), when there is one.
    pub(crate) shared_limiter: Option<Arc<dyn portcullis_assertions::rate_limit::SharedLimiter>>,
    /// The state store, once opened (quotas count in it).
    pub(crate) state_store: Option<crate::store::StateStore>,
    /// The outbound proxy's OAuth broker, when the policy has one (for `inject_oauth_token`).
    pub(crate) outbound_broker: Option<Arc<crate::broker::outbound::OutboundBroker>>,
    /// Every quota step, for the admin API.
    pub(crate) quotas: Vec<crate::runtime::QuotaInfo>,
    /// Every rate_limit step's counters, for `/metrics`.
    pub(crate) rate_limits: Vec<crate::metrics::RateLimitCounting>,
    /// Shadow mode in the service being compiled.
    pub(crate) shadow: ShadowScope,
}

/// Shadow mode while a service's steps compile.
#[derive(Debug, Default)]
pub(crate) struct ShadowScope {
    /// The service has `shadow: true`: every step is shadowed.
    pub(crate) service: bool,
    /// The steps being compiled come from a shadowed `all`.
    pub(crate) inherited: bool,
    /// The service's shadowed steps so far, by slot (`request[1].require_api_key`).
    pub(crate) steps: Vec<Arc<str>>,
}

impl<'a> CompileContext<'a> {
    /// A file the policy names at `option` (relative to the policy file), as gathering read
    /// it, with its full path; `None` when it could not be read (reported at `option`).
    pub(crate) fn named_file(
        &mut self,
        file: &Spanned<String>,
        option: &str,
    ) -> Option<(PathBuf, &'a [u8])> {
        let full = self.base.join(&file.value);
        let gathered: &'a Gathered = self.gathered;
        match gathered.file(&full) {
            Ok(bytes) => Some((full, bytes)),
            Err(e) => {
                self.err(file.loc, option, e);
                None
            }
        }
    }

    /// [`CompileContext::named_file`] as text; one that is not UTF-8 is reported as not
    /// being `kind` (`UTF-8 text`, `PEM text`).
    pub(crate) fn named_text(
        &mut self,
        file: &Spanned<String>,
        option: &str,
        kind: &str,
    ) -> Option<(PathBuf, &'a str)> {
        let (full, bytes) = self.named_file(file, option)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Some((full, text)),
            Err(_) => {
                self.err(
                    file.loc,
                    option,
                    format!("{} is not {kind}", full.display()),
                );
                None
            }
        }
    }

    pub(crate) fn err(&mut self, loc: Location, path: &str, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            file: self.file.clone(),
            loc: Some(loc),
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub(crate) fn secret(&mut self, name: &Spanned<String>, path: &str) -> Option<Secret> {
        if let Some(s) = self.gathered.secrets.get(&name.value) {
            return Some(s.clone());
        }
        if self.unreadable.contains(&name.value) {
            return None;
        }
        let known: Vec<&str> = self.gathered.secrets.keys().map(String::as_str).collect();
        let message = unknown_name("secret", &name.value, &known, "secrets:");
        self.err(name.loc, path, message);
        None
    }
}

impl CompileContext<'_> {
    /// The HMAC key set named `name` (under `keys:`), or an error with a suggestion.
    pub(crate) fn hmac_key_set(
        &mut self,
        name: &Spanned<String>,
        path: &str,
    ) -> Option<Arc<KeySet>> {
        if let Some(keys) = self.key_sets.get(&name.value) {
            return Some(keys.clone());
        }
        let known: Vec<&str> = self.key_sets.keys().map(String::as_str).collect();
        let message = unknown_name("key set", &name.value, &known, "keys:");
        self.err(name.loc, path, message);
        None
    }

    /// The key set published at `url`, shared by every step and issuer naming it and kept
    /// across reloads (so a reload does not throw away fetched keys).
    pub(crate) fn remote_key_set(
        &mut self,
        url: &Spanned<String>,
        format: Option<KeysFormatSpec>,
        min_refresh: Duration,
        path: &str,
    ) -> Option<Arc<RemoteKeySet>> {
        if !is_http_url(&url.value) {
            self.err(
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
        let set = self
            .carry
            .key_sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((url.value.clone(), format))
            .or_insert_with(|| Arc::new(RemoteKeySet::new(&url.value, format, min_refresh)))
            .clone();
        if !self
            .key_set_list
            .iter()
            .any(|known| Arc::ptr_eq(known, &set))
        {
            self.key_set_list.push(set.clone());
        }
        Some(set)
    }
}

/// An absolute `http` or `https` URL with a host.
pub(crate) fn is_http_url(text: &str) -> bool {
    text.parse::<http::Uri>()
        .is_ok_and(|uri| matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some())
}

/// "unknown secret \"x\"; did you mean \"y\"?", or where to define it.
fn unknown_name(what: &str, name: &str, known: &[&str], section: &str) -> String {
    let hint = suggest(name, known).map_or_else(
        || format!("; define it under `{section}`"),
        |k| format!("; did you mean \"{k}\"?"),
    );
    format!("unknown {what} \"{name}\"{hint}")
}

pub(crate) fn suggest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::normalized_damerau_levenshtein(word, k), *k))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}
