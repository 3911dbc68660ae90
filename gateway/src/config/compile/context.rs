//! The compile-time state (where we are, what is wrong so far, what we know), and the
//! one spelling suggester every "did you mean" uses.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis_assertions::hmac::KeySet;
use portcullis_assertions::VarRegistry;

use crate::config::yaml::{Location, Spanned};
use crate::config::Diagnostic;
use crate::runtime::Secret;

/// Which pipeline a step sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Request,
    Response,
}

/// The compile-time state: where we are, what we found wrong, what we know.
pub(super) struct Cx<'a> {
    pub(super) file: Arc<Path>,
    /// Folder of the main policy file: relative paths start here.
    pub(super) base: PathBuf,
    pub(super) errors: &'a mut Vec<Diagnostic>,
    pub(super) secrets: &'a HashMap<String, Secret>,
    /// Secrets that are defined but could not be read (already reported).
    pub(super) unreadable: HashSet<String>,
    pub(super) registry: VarRegistry,
    pub(super) key_sets: HashMap<String, Arc<KeySet>>,
    pub(super) carry: &'a crate::config::Carry,
    /// How many `any` composites the step being compiled sits in.
    pub(super) any_depth: usize,
    /// The token service, when the policy has one (for `require_bearer`).
    pub(super) token_service: Option<Arc<crate::oauth::TokenService>>,
    /// The policy has a `token_service:` section (which may have failed to compile).
    pub(super) token_service_declared: bool,
    /// Every remote key set the policy names (for the refresher and readiness).
    pub(super) key_set_list: Vec<Arc<crate::oauth::remote::RemoteKeySet>>,
    /// The service being compiled (the default realm of `require_bearer`).
    pub(super) service_name: String,
}

impl Cx<'_> {
    pub(super) fn err(&mut self, loc: Location, path: &str, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            file: self.file.clone(),
            loc: Some(loc),
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub(super) fn secret(&mut self, name: &Spanned<String>, path: &str) -> Option<Secret> {
        if let Some(s) = self.secrets.get(&name.value) {
            return Some(s.clone());
        }
        if self.unreadable.contains(&name.value) {
            return None;
        }
        let known: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
        let hint = suggest(&name.value, &known).map_or_else(
            || "; define it under `secrets:`".to_owned(),
            |k| format!("; did you mean \"{k}\"?"),
        );
        self.err(
            name.loc,
            path,
            format!("unknown secret \"{}\"{hint}", name.value),
        );
        None
    }
}

pub(super) fn suggest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::normalized_damerau_levenshtein(word, k), *k))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}
