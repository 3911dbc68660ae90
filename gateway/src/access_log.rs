//! One JSON line per request, written by a background thread so the request path never
//! blocks on a disk or a pipe. Lines hold no header values and no query string: nothing a
//! client sends as a credential (Authorization, API keys, cookies) can reach the log; and
//! every line goes through the card-number masker. In capture mode (`capture:` in the
//! policy) a line also holds the request as received, for `portcullis replay`, with every
//! credential value replaced by a keyed hash (see [`crate::capture`]).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::SystemTime;

use serde::Serialize;

use crate::metrics::Metrics;
use crate::runtime::AccessLogTarget;

/// How many lines may wait for the writer before new ones are dropped (and counted).
const QUEUE: usize = 16 * 1024;

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    /// When the request finished (RFC 3339), logged as `ts`.
    #[serde(rename = "ts")]
    pub timestamp: String,
    pub service: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    /// The path only; the query string is never logged.
    pub path: &'a str,
    pub status: u16,
    pub latency_ms: f64,
    pub client_ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// `stripped` or `forwarded`, when the caller sent credentials and the service decides
    /// about them (absent when it passes everything through).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<&'static str>,
    /// The rule that decided: `authenticated`, `strip`, `when.client_cidrs`, `forward`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_rule: Option<&'a str>,
    /// Which credentials (names only: `authorization`, `cookie session`, `query api_key`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credentials_places: Vec<String>,
    /// Why an upstream's 401/403 may have come: its credentials were stripped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// What each step in shadow mode would have done (nothing of it was enforced).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<ShadowEntry<'a>>,
    pub generation: u64,
    /// The request as received, in capture mode (`capture:` in the policy): credentials
    /// hashed, card numbers masked; what `portcullis replay` reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<&'a crate::capture::CapturedRequest>,
}

/// One shadowed step's verdict on the request, as logged.
#[derive(Debug, Serialize)]
pub struct ShadowEntry<'a> {
    /// The step: `request[1].require_api_key`.
    pub step: &'a str,
    /// `would_allow`, `would_change`, `would_deny` or `error`.
    pub outcome: &'static str,
    /// The problem code it would have answered with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// Items (card numbers) it would have changed.
    #[serde(skip_serializing_if = "is_zero")]
    pub items: u64,
}

impl<'a> ShadowEntry<'a> {
    #[must_use]
    pub fn of(record: &'a portcullis_assertions::shadow::ShadowRecord) -> Self {
        ShadowEntry {
            step: &record.step,
            outcome: record.outcome().label(),
            code: record.code(),
            items: record.items(),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The access-log sink.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<Vec<u8>>>,
    metrics: Metrics,
    /// Lines queued and lines written, so a shutdown can wait for the queue to empty.
    progress: std::sync::Arc<(AtomicU64, AtomicU64)>,
}

impl AccessLog {
    /// Starts the writer for `target`.
    ///
    /// # Errors
    /// When the log file cannot be opened.
    pub fn start(target: &AccessLogTarget, metrics: Metrics) -> std::io::Result<Self> {
        let mut out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Off => {
                return Ok(AccessLog {
                    tx: None,
                    metrics,
                    progress: std::sync::Arc::default(),
                })
            }
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let progress: std::sync::Arc<(AtomicU64, AtomicU64)> = std::sync::Arc::default();
        let written = progress.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(&line);
                    let mut batch = 1;
                    // Drain what is queued before flushing, to write in batches under load.
                    while let Ok(line) = rx.try_recv() {
                        let _ = out.write_all(&line);
                        batch += 1;
                    }
                    let _ = out.flush();
                    written.1.fetch_add(batch, Ordering::Release);
                }
            })?;
        Ok(AccessLog {
            tx: Some(tx),
            metrics,
            progress,
        })
    }

    /// False when the log is off: callers skip building records.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Waits (up to `timeout`) until every line queued so far is written and flushed: the
    /// last thing before the process exits.
    pub fn wait_written(&self, timeout: std::time::Duration) {
        let queued = self.progress.0.load(Ordering::Acquire);
        let deadline = std::time::Instant::now() + timeout;
        while self.progress.1.load(Ordering::Acquire) < queued
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Queues a record; drops it (and counts the drop) when the writer is behind.
    pub fn write(&self, record: &AccessRecord<'_>) {
        let Some(tx) = &self.tx else { return };
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        // Whatever a policy says, no card number reaches a log (a PAN in a path, say).
        portcullis_assertions::pan::mask_in_place(
            &mut line,
            portcullis_assertions::pan::MaskStyle::default(),
        );
        line.push(b'\n');
        match tx.try_send(line) {
            Ok(()) => {
                self.progress.0.fetch_add(1, Ordering::Release);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.log_dropped.inc()
            }
        }
    }
}

/// The current time as RFC 3339 with milliseconds.
#[must_use]
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
