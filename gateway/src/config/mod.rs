//! Loading a policy: read the file and its includes, parse YAML with positions, deserialise
//! into [`spec`] types, compile into a [`Runtime`]. `check`, `eval`, `run` and reload all go
//! through [`load`], so a file that passes `check` is a file `run` accepts.

pub(crate) mod api_keys_file;
pub mod compile;
pub(crate) mod context;
pub mod credentials;
pub(crate) mod gather;
pub(crate) mod gathered;
pub mod identity_api;
mod issue_saml;
pub mod outbound_broker;
pub mod providers;
pub mod saml_bearer;
pub mod saml_issuer;
mod saml_trust;
pub mod spec;
pub mod steps;
pub mod tls_listener;
pub mod upstream_pool;
pub mod users_file;
pub mod values;
pub mod yaml;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use portcullis_assertions::hmac::ReplayCache;
use portcullis_assertions::local_limiter::LocalLimiter;

use crate::identity::directory::StoreIdentityDirectory;
use crate::metrics::Metrics;
use crate::oauth::live::LiveTokens;
use crate::oauth::remote::{KeysFormat, RemoteKeySet};
use crate::runtime::Runtime;
use crate::store::{StateStore, StoreUrl};

pub use yaml::Location;

/// Most files one policy may include.
pub const MAX_INCLUDES: usize = 1000;

/// One thing wrong with a policy, printed `file:line:col: message (at path)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: Arc<Path>,
    pub loc: Option<Location>,
    /// Where in the document: `services[0].request[1]`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(loc) = self.loc {
            write!(f, ":{}:{}", loc.line, loc.col)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.path.is_empty() {
            write!(f, " (at {})", self.path)?;
        }
        Ok(())
    }
}

/// Every problem found in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPolicy(pub Vec<Diagnostic>);

impl fmt::Display for InvalidPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidPolicy {}

/// A parsed document and the file it came from.
pub(crate) struct Parsed<T> {
    pub file: Arc<Path>,
    pub spec: T,
}

/// Reads and parses one file into `T`, adding what is wrong to `errors`. `named_at` is
/// where another policy file named this one (an `include:` line): a file that cannot be
/// read is reported there.
pub(crate) fn read_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    named_at: Option<(&Arc<Path>, Location)>,
    errors: &mut Vec<Diagnostic>,
) -> Option<Parsed<T>> {
    let file: Arc<Path> = Arc::from(path);
    let text = match crate::files::read_bounded_text(path, crate::files::FileKind::Policy) {
        Ok(text) => text,
        Err(e) => {
            errors.push(Diagnostic {
                file: named_at.map_or_else(|| file.clone(), |(f, _)| f.clone()),
                loc: named_at.map(|(_, loc)| loc),
                path: if named_at.is_some() {
                    "include".to_owned()
                } else {
                    String::new()
                },
                message: e.to_string(),
            });
            return None;
        }
    };
    parse_text(file, &text, errors)
}

pub(crate) fn parse_text<T: serde::de::DeserializeOwned>(
    file: Arc<Path>,
    text: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<Parsed<T>> {
    let to_diag = |e: yaml::Error| Diagnostic {
        file: file.clone(),
        loc: e.loc,
        path: e.path,
        message: e.message,
    };
    let node = match yaml::parse(text, &yaml::Limits::default()) {
        Ok(n) => n,
        Err(e) => {
            errors.push(to_diag(e));
            return None;
        }
    };
    let (spec, errs) = yaml::from_node_collect::<T>(&node);
    errors.extend(errs.into_iter().map(to_diag));
    spec.map(|spec| Parsed { file, spec })
}

/// The store a first load opened, with the URL it was opened from.
pub type OpenStore = (StoreUrl, StateStore);

/// Remote key sets by URL and publication format.
pub type KeySetsByUrl = HashMap<(String, KeysFormat), Arc<RemoteKeySet>>;

/// What outlives a reload: metric families, and the replay caches of `require_hmac` (one per
/// key set), so a reload does not open a window for replaying signatures seen before it.
#[derive(Debug, Clone, Default)]
pub struct Carry {
    pub metrics: Metrics,
    pub replay: Arc<Mutex<HashMap<String, Arc<ReplayCache>>>>,
    /// The state store, opened by the first load.
    pub store: Arc<Mutex<Option<OpenStore>>>,
    /// Verified-token cache, revocation epoch and pending usage.
    pub live: Arc<LiveTokens>,
    /// Remote key sets by URL and format, so fetched keys survive a reload.
    pub key_sets: Arc<Mutex<KeySetsByUrl>>,
    /// Each local rate_limit step's buckets, by service, step and size, so a reload does not
    /// hand every client a full bucket.
    pub rate_limiters: Arc<Mutex<HashMap<String, Arc<LocalLimiter>>>>,
    /// Who is behind which address (cache and traffic waiting to be written), for
    /// `require_ip_identity` and the userauth API: made on first use.
    pub identities: Arc<Mutex<Option<StoreIdentityDirectory>>>,
    /// The clock of steps that read the time (signatures, assertions, rate limits,
    /// quotas): `None` for the system's; `portcullis test` sets one by hand.
    pub clock: Option<Arc<crate::clock::SettableClock>>,
}

impl Carry {
    /// Wall-clock time for steps (seconds since the epoch).
    #[must_use]
    pub fn wall_clock(&self) -> Arc<dyn portcullis_assertions::hmac::Clock> {
        match &self.clock {
            Some(clock) => clock.clone(),
            None => Arc::new(portcullis_assertions::hmac::SystemClock),
        }
    }

    /// Monotonic time for rate limits.
    #[must_use]
    pub fn monotonic_clock(&self) -> Arc<dyn portcullis_assertions::rate_limit::MonotonicClock> {
        match &self.clock {
            Some(clock) => clock.clone(),
            None => Arc::new(portcullis_assertions::rate_limit::ProcessClock),
        }
    }

    /// The identity directory over `store`, made on first use (again if a load opened
    /// another store).
    #[must_use]
    pub fn identity_directory(
        &self,
        store: &Arc<dyn crate::store::IdentityStore>,
    ) -> StoreIdentityDirectory {
        let mut held = self
            .identities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*held {
            Some(directory) if directory.reads(store) => directory.clone(),
            _ => {
                let directory = StoreIdentityDirectory::new(store.clone());
                *held = Some(directory.clone());
                directory
            }
        }
    }

    /// The identity directory over `store`, if a step made one (the userauth API tells it
    /// what it changed; without one there is no cache to tell).
    #[must_use]
    pub fn identity_directory_for(
        &self,
        store: &Arc<dyn crate::store::IdentityStore>,
    ) -> Option<StoreIdentityDirectory> {
        self.identities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .filter(|directory| directory.reads(store))
            .cloned()
    }

    /// The replay cache for a key set, created on first use.
    #[must_use]
    pub fn replay_cache(&self, key_set: &str, capacity: usize) -> Arc<ReplayCache> {
        let mut caches = self
            .replay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        caches
            .entry(format!("{key_set}/{capacity}"))
            .or_insert_with(|| Arc::new(ReplayCache::new(capacity)))
            .clone()
    }

    /// The buckets of the rate_limit step `bucket_prefix` (service and step), created on
    /// first use; a step whose size changed starts afresh.
    #[must_use]
    pub fn rate_limiter(&self, bucket_prefix: &str, max_keys: usize) -> Arc<LocalLimiter> {
        let mut limiters = self
            .rate_limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        limiters
            .entry(format!("{bucket_prefix}/{max_keys}"))
            .or_insert_with(|| Arc::new(LocalLimiter::new(max_keys)))
            .clone()
    }
}

/// Whether a load may open the state store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// `run` and reloads: the store is opened (once, then carried).
    Serve,
    /// `check` and `eval`: no state file is opened or created; an empty memory store stands
    /// in, and nothing is written.
    DryRun,
}

/// Loads, validates and compiles the policy at `path` to serve it.
///
/// # Errors
/// Every problem with the policy.
pub fn load(path: &Path, carry: &Carry, generation: u64) -> Result<Runtime, InvalidPolicy> {
    load_as(path, carry, generation, LoadMode::Serve)
}

/// Loads the policy at `path` as `check` and `eval` do: [`LoadMode::DryRun`], with nothing
/// carried from an earlier load.
///
/// # Errors
/// Every problem with the policy.
pub fn load_dry_run(path: &Path) -> Result<Runtime, InvalidPolicy> {
    load_as(path, &Carry::default(), 1, LoadMode::DryRun)
}

/// Loads the policy at `path` as a dry run with what `carry` holds (a test clock, key sets
/// fed by a test file), for `portcullis test` and `replay`.
///
/// # Errors
/// Every problem with the policy.
pub fn load_dry_run_with(path: &Path, carry: &Carry) -> Result<Runtime, InvalidPolicy> {
    load_as(path, carry, 1, LoadMode::DryRun)
}

fn load_as(
    path: &Path,
    carry: &Carry,
    generation: u64,
    mode: LoadMode,
) -> Result<Runtime, InvalidPolicy> {
    let mut errors = Vec::new();
    let main: Option<Parsed<spec::ConfigSpec>> = read_file(path, None, &mut errors);
    let Some(main) = main else {
        return Err(InvalidPolicy(errors));
    };
    let base = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let includes = compile::read_includes(&main, &base, &mut errors);
    let gathered = gather::gather(&main, &includes, &base, &mut errors);
    let runtime = compile::compile(
        &main,
        &includes,
        &gathered,
        carry,
        mode,
        generation,
        &mut errors,
    );
    // Report in reading order: by file, then position.
    errors.sort_by(|a, b| {
        let key = |d: &Diagnostic| (d.loc.map_or(0, |l| l.line), d.loc.map_or(0, |l| l.col));
        a.file.cmp(&b.file).then_with(|| key(a).cmp(&key(b)))
    });
    match runtime {
        Some(rt) if errors.is_empty() => Ok(rt),
        _ => Err(InvalidPolicy(errors)),
    }
}

/// The policy loader over any text, and over every shipped policy with bytes dropped,
/// doubled or replaced: errors with positions, never a panic (a stable stand-in for a fuzz
/// target).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn load_text(text: &str) {
        let mut errors = Vec::new();
        let file: Arc<Path> = Arc::from(Path::new("fuzz.yaml"));
        let _ = parse_text::<spec::ConfigSpec>(file, text, &mut errors);
        for e in &errors {
            assert!(!e.message.is_empty());
        }
    }

    fn shipped() -> Vec<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::test_cases(1024)))]

        #[test]
        fn any_text_loads_or_is_explained(text in "\\PC{0,300}") {
            load_text(&text);
        }

        #[test]
        fn damaged_shipped_policies_load_or_are_explained(
            which in 0usize..16,
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..8),
        ) {
            let policies = shipped();
            prop_assume!(!policies.is_empty());
            let mut text: Vec<char> = policies[which % policies.len()].chars().collect();
            for (at, kind, c) in edits {
                if text.is_empty() {
                    break;
                }
                let i = at.index(text.len());
                match kind {
                    0 => { text.remove(i); }
                    1 => { let d = text[i]; text.insert(i, d); }
                    _ => text[i] = c,
                }
            }
            load_text(&text.into_iter().collect::<String>());
        }
    }
}
