//! The live gateway state: the current compiled policy (swapped atomically on reload),
//! metrics and the access log. Requests pin the policy they started with, so in-flight
//! requests finish on the old policy while new ones use the new.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::access_log::AccessLog;
use crate::config::{self, Carry, InvalidPolicy};
use crate::metrics::Metrics;
use crate::runtime::{Runtime, Settings};

/// What every proxy, admin and background task shares.
#[derive(Debug)]
pub struct GatewayState {
    pub config_path: PathBuf,
    runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    pub log: AccessLog,
    /// Metric families and replay caches, kept across reloads.
    carry: Carry,
    /// The settings the server was started with (listeners, workers, log target).
    started: Settings,
    reload_lock: Mutex<()>,
    /// Failed authentications at the gateway's own endpoints, kept across reloads.
    pub auth_failures: crate::auth_failures::AuthFailures,
    /// Requests being handled on the proxy listener (a drain waits for none).
    pub requests_in_flight: std::sync::atomic::AtomicUsize,
}

impl Drop for GatewayState {
    /// Last chance for usage counted since the last flush (in-process servers, tests).
    fn drop(&mut self) {
        self.flush_before_exit();
    }
}

impl GatewayState {
    /// Loads the policy at `path` and starts the access log it names.
    ///
    /// # Errors
    /// Every problem with the policy, or the log file that cannot be opened.
    pub fn load(path: &Path) -> Result<Arc<Self>, anyhow::Error> {
        let carry = Carry::default();
        let metrics = carry.metrics.clone();
        let runtime = config::load(path, &carry, 1)?;
        for warning in &runtime.warnings {
            log::warn!("{warning}");
        }
        let log = AccessLog::start(&runtime.settings.access_log, metrics.clone())?;
        Ok(Arc::new(GatewayState {
            config_path: path.to_path_buf(),
            started: runtime.settings.clone(),
            carry,
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            log,
            reload_lock: Mutex::new(()),
            auth_failures: crate::auth_failures::AuthFailures::default(),
            requests_in_flight: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    /// What outlives reloads (store, token cache, key sets).
    #[must_use]
    pub fn carry(&self) -> &Carry {
        &self.carry
    }

    /// Writes pending token usage to the store now (the upkeep's beat, the admin listing);
    /// a refused batch is logged and kept for the next flush. Returns how many tokens' usage
    /// was written.
    pub async fn flush_usage_now(&self) -> usize {
        let runtime = self.current();
        let written = self
            .carry
            .live
            .flush_usage(&runtime.store, runtime.token_service.as_deref())
            .await;
        written.unwrap_or_else(|error| {
            log::error!("usage statistics: {error}; will retry");
            0
        })
    }

    /// Writes the traffic `require_ip_identity` noted (for idle timeouts) to the store;
    /// a refused batch is logged and kept for the next flush.
    pub async fn flush_identity_touches_now(&self) {
        let held = self
            .carry
            .identities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(directory) = held {
            if let Err(error) = directory.flush().await {
                log::error!("identity idle timeouts: {error}; will retry");
            }
        }
    }

    /// [`GatewayState::flush_usage_now`] from synchronous code (at shutdown, when the state
    /// is dropped).
    pub fn flush_usage(&self) -> usize {
        crate::store::wait(async { Ok(self.flush_usage_now().await) }).unwrap_or_else(|error| {
            log::error!("usage statistics: {error}; will retry");
            0
        })
    }

    /// Writes what is held in memory for the store (token usage, the traffic noted for
    /// idle timeouts); returns how many tokens' usage was written.
    pub fn flush_before_exit(&self) -> usize {
        let written = self.flush_usage();
        let _ = crate::store::wait(async {
            self.flush_identity_touches_now().await;
            Ok(())
        });
        written
    }

    /// The policy in force now.
    #[must_use]
    pub fn current(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// [`GatewayState::reload`] on a blocking thread: reading files and resolving upstream
    /// names waits on disks and DNS, which must not hold up a runtime thread that serves
    /// requests (the admin API and the SIGHUP listener run on such runtimes).
    ///
    /// # Errors
    /// As [`GatewayState::reload`].
    pub async fn reload_off_runtime(
        self: &Arc<Self>,
    ) -> Result<(Arc<Runtime>, Vec<String>), InvalidPolicy> {
        let state = self.clone();
        match tokio::task::spawn_blocking(move || state.reload()).await {
            Ok(result) => result,
            Err(e) => Err(InvalidPolicy(vec![config::Diagnostic {
                file: Arc::from(self.config_path.as_path()),
                loc: None,
                path: String::new(),
                message: format!("the reload did not finish: {e}"),
            }])),
        }
    }

    /// Re-reads the policy file; swaps it in only if it is valid. Settings that only apply
    /// at start (listeners, workers, log target) are reported when they changed.
    ///
    /// # Errors
    /// The problems of an invalid file; the old policy keeps serving.
    pub fn reload(&self) -> Result<(Arc<Runtime>, Vec<String>), InvalidPolicy> {
        let _serial = self
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.current();
        match config::load(&self.config_path, &self.carry, old.generation + 1) {
            Ok(new) if new.settings.tls_listen.is_empty() != self.started.tls_listen.is_empty() => {
                // HTTPS listeners are bound at start: removed, the bound ones would fail every
                // handshake; added, none would exist (and `https_only` services would refuse
                // everything).
                self.metrics.reload(false);
                Err(InvalidPolicy(vec![config::Diagnostic {
                    file: Arc::from(self.config_path.as_path()),
                    loc: None,
                    path: "tls".to_owned(),
                    message: if self.started.tls_listen.is_empty() {
                        "`tls:` was added: its HTTPS listeners are bound at start, so restart the gateway to add them".to_owned()
                    } else {
                        "the HTTPS listeners of `tls:` are bound: keep `tls:` (its listeners change only at a restart)".to_owned()
                    },
                }]))
            }
            Ok(new) => {
                let mut warnings: Vec<String> = new.warnings.clone();
                if new.settings != self.started {
                    warnings.push(
                        "listen, tls.listen, admin.listen, workers, access_log, user, group and drain_timeout take effect only after a restart".to_owned(),
                    );
                }
                new.inherit_upstream_state(&old);
                let new = Arc::new(new);
                self.runtime.store(new.clone());
                self.metrics.reload(true);
                Ok((new, warnings))
            }
            Err(e) => {
                self.metrics.reload(false);
                Err(e)
            }
        }
    }
}
