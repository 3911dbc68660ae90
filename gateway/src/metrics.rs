//! Prometheus metrics. Label sets are resolved to counter handles when a policy is
//! compiled, so the request path only does atomic adds.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;

use portcullis_assertions::shadow::{ShadowOutcome, ShadowRecord};
use portcullis_assertions::{Assertion, Verdict};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The gateway's metric families, kept across reloads.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    steps: IntCounterVec,
    shadow_outcomes: IntCounterVec,
    shadow_items: IntCounterVec,
    reloads: IntCounterVec,
    body_items: IntCounterVec,
    credentials_stripped: IntCounterVec,
    pub log_dropped: IntCounter,
    key_sets: IntGaugeVec,
    token_answers: IntCounterVec,
    /// Client connections: open now, refused at accept, cut off for being slow.
    pub connections_open: IntGauge,
    connections_refused: IntCounterVec,
    client_timeouts: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

impl Metrics {
    /// Creates and registers every family.
    ///
    /// # Panics
    /// Never in practice: the names and labels are constants that register once.
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "portcullis_requests_total",
                "Requests answered, by service and status.",
            ),
            &["service", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_request_duration_seconds",
                "Time from request head to the end of the response.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["service"],
        )
        .expect("valid metric");
        let steps = IntCounterVec::new(
            Opts::new(
                "portcullis_assertion_outcomes_total",
                "Pipeline step outcomes, by service, step and outcome.",
            ),
            &["service", "phase", "assertion", "outcome"],
        )
        .expect("valid metric");
        let shadow_outcomes = IntCounterVec::new(
            Opts::new(
                "portcullis_shadow_outcomes_total",
                "What steps in shadow mode would have done (would_allow, would_change, would_deny, error), by service and step; none of it was enforced.",
            ),
            &["service", "step", "outcome"],
        )
        .expect("valid metric");
        let shadow_items = IntCounterVec::new(
            Opts::new(
                "portcullis_shadow_items_total",
                "Items (card numbers) steps in shadow mode would have changed in bodies, by service and step.",
            ),
            &["service", "step"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new("portcullis_reloads_total", "Policy reloads, by result."),
            &["result"],
        )
        .expect("valid metric");
        let body_items = IntCounterVec::new(
            Opts::new(
                "portcullis_pans_masked_total",
                "Card numbers masked in response bodies, by service.",
            ),
            &["service"],
        )
        .expect("valid metric");
        let credentials_stripped = IntCounterVec::new(
            Opts::new(
                "portcullis_credentials_stripped_total",
                "Requests that went upstream without the caller's credentials, by service and the rule that stripped them.",
            ),
            &["service", "rule"],
        )
        .expect("valid metric");
        let log_dropped = IntCounter::new(
            "portcullis_access_log_dropped_total",
            "Access-log lines dropped because the writer fell behind.",
        )
        .expect("valid metric");
        let key_sets = IntGaugeVec::new(
            Opts::new(
                "portcullis_key_set_up",
                "1 when a remote key set (JWKS or certificate map) is held, 0 when it was never fetched.",
            ),
            &["url"],
        )
        .expect("valid metric");
        let token_answers = IntCounterVec::new(
            Opts::new(
                "portcullis_token_endpoint_answers_total",
                "Token service answers, by endpoint and OAuth error (ok on success).",
            ),
            &["endpoint", "result"],
        )
        .expect("valid metric");
        let connections_open = IntGauge::new(
            "portcullis_client_connections",
            "Client connections open on the proxy listener.",
        )
        .expect("valid metric");
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "portcullis_client_connections_refused_total",
                "Client connections refused at accept, by the cap that was reached.",
            ),
            &["limit"],
        )
        .expect("valid metric");
        let client_timeouts = IntCounterVec::new(
            Opts::new(
                "portcullis_client_cutoffs_total",
                "Client connections cut off while sending a request: head or body too slow, head too large, TLS handshake too slow.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for c in [
            Box::new(key_sets.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(connections_open.clone()),
            Box::new(connections_refused.clone()),
            Box::new(client_timeouts.clone()),
            Box::new(token_answers.clone()),
            Box::new(requests.clone()),
            Box::new(duration.clone()),
            Box::new(steps.clone()),
            Box::new(shadow_outcomes.clone()),
            Box::new(shadow_items.clone()),
            Box::new(reloads.clone()),
            Box::new(body_items.clone()),
            Box::new(credentials_stripped.clone()),
            Box::new(log_dropped.clone()),
        ] {
            registry.register(c).expect("registers once");
        }
        Metrics {
            registry,
            requests,
            duration,
            steps,
            shadow_outcomes,
            shadow_items,
            reloads,
            body_items,
            credentials_stripped,
            log_dropped,
            key_sets,
            token_answers,
            connections_open,
            connections_refused,
            client_timeouts,
        }
    }

    /// The counter of requests a service's `rule` stripped of the caller's credentials,
    /// resolved when the policy is compiled.
    #[must_use]
    pub fn credentials_stripped(&self, service: &str, rule: &str) -> IntCounter {
        self.credentials_stripped
            .with_label_values(&[service, rule])
    }

    /// A connection refused at accept because `limit` was reached.
    pub fn connection_refused(&self, limit: &str) {
        self.connections_refused.with_label_values(&[limit]).inc();
    }

    /// The counter of clients cut off while sending a request, by reason (`head`, `body`,
    /// `head_too_large`), for the connection guards.
    #[must_use]
    pub fn client_cutoffs(&self) -> IntCounterVec {
        self.client_timeouts.clone()
    }

    /// Whether a remote key set is held.
    pub fn key_set_up(&self, url: &str, up: bool) {
        self.key_sets.with_label_values(&[url]).set(i64::from(up));
    }

    /// One answer of the token service.
    pub fn token_answer(&self, endpoint: &str, result: &str) {
        self.token_answers
            .with_label_values(&[endpoint, result])
            .inc();
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "invalid" }])
            .inc();
    }

    /// Adds a collector that reads its values at scrape time (the Redis client's
    /// counters). Called once per collector: they are carried across reloads, as these are.
    pub fn register_collector(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(error) = self.registry.register(collector) {
            log::warn!("metrics not exported: {error}");
        }
    }

    /// The text exposition format.
    #[must_use]
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// The text exposition format, with each rate_limit step's counters (kept by the steps
    /// themselves as atomics, so counting costs the request path no label lookup).
    #[must_use]
    pub fn render_with_rate_limits(&self, steps: &[RateLimitCounting]) -> Vec<u8> {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering;
        let mut out = self.render();
        if steps.is_empty() {
            return out;
        }
        let mut text = String::from(
            "# HELP portcullis_rate_limit_events_total Rate-limit decisions other than allowed: refused (429), keys_full (503, the local limiter holds as many live keys as it may), store_unavailable (the shared store did not answer in time), decided_locally (of those, decided by the fail_open fallback).\n# TYPE portcullis_rate_limit_events_total counter\n",
        );
        for step in steps {
            let counters = &step.counters;
            for (event, value) in [
                ("refused", &counters.refused),
                ("keys_full", &counters.keys_full),
                ("store_unavailable", &counters.store_unavailable),
                ("decided_locally", &counters.decided_locally),
            ] {
                let _ = writeln!(
                    text,
                    "portcullis_rate_limit_events_total{{service=\"{}\",step=\"{}\",event=\"{event}\"}} {}",
                    label_value(&step.service),
                    label_value(&step.step),
                    value.load(Ordering::Relaxed)
                );
            }
        }
        out.extend_from_slice(text.as_bytes());
        out
    }

    /// The token usage waiting to be written to the state store, and what was dropped
    /// because too much waited (the store was down for long).
    #[must_use]
    pub fn render_usage_buffer(buffered: usize, dropped: u64) -> String {
        format!(
            "# HELP portcullis_usage_buffered_tokens Tokens whose usage waits to be written to the state store.\n# TYPE portcullis_usage_buffered_tokens gauge\nportcullis_usage_buffered_tokens {buffered}\n# HELP portcullis_usage_dropped_total Token uses not counted because the buffer of unwritten usage was full.\n# TYPE portcullis_usage_dropped_total counter\nportcullis_usage_dropped_total {dropped}\n"
        )
    }

    /// Counts a request that matched no service.
    pub fn unrouted(&self, status: u16) {
        self.requests
            .with_label_values(&["", &status.to_string()])
            .inc();
    }
}

/// One rate_limit step's counters, named for `/metrics`.
#[derive(Debug, Clone)]
pub struct RateLimitCounting {
    pub service: String,
    /// The step in the policy: `services[0].request[1]`.
    pub step: String,
    pub counters: std::sync::Arc<portcullis_assertions::rate_limit::RateLimitCounters>,
}

/// A label value as the text format writes it (`\\`, `\"` and newlines escaped).
pub(crate) fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Pass/deny counters of one step.
#[derive(Debug, Clone)]
struct StepCounters {
    pass: IntCounter,
    deny: IntCounter,
}

/// A service's resolved metric handles.
#[derive(Debug)]
pub struct ServiceMetrics {
    name: String,
    family: IntCounterVec,
    /// By status code: resolved on first use (the slots too, so an idle service holds none).
    by_status: OnceLock<Box<StatusCounters>>,
    /// Resolved on first use, like the counters by status: a service that is never asked
    /// for costs no histogram (about a kilobyte each).
    duration: OnceLock<prometheus::Histogram>,
    durations: HistogramVec,
    request_steps: Vec<StepCounters>,
    response_steps: Vec<StepCounters>,
    body_items: OnceLock<IntCounter>,
    body_item_counts: IntCounterVec,
    /// By shadow slot: each outcome's counter (in [`ShadowOutcome::ALL`] order) and the
    /// items counter.
    shadow: Vec<([IntCounter; 4], IntCounter)>,
}

/// How many distinct status codes a service's counters keep at hand.
const STATUS_SLOTS: usize = 12;

/// A service's request counters by status code, resolved on first use of each code. A few
/// slots claimed with a compare-and-swap rather than one per possible code: a table of 600
/// made each service cost some 14 KiB, which mattered with thousands of services. No lock
/// on the request path.
#[derive(Debug, Default)]
struct StatusCounters {
    slots: [(AtomicU16, OnceLock<IntCounter>); STATUS_SLOTS],
}

impl StatusCounters {
    /// The counter for `status`, made by `resolve` the first time; `None` when every slot
    /// holds another code.
    fn get(&self, status: u16, resolve: impl Fn() -> IntCounter) -> Option<&IntCounter> {
        for (code, counter) in &self.slots {
            let claimed = match code.load(Ordering::Acquire) {
                0 => match code.compare_exchange(0, status, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => true,
                    Err(other) => other == status,
                },
                other => other == status,
            };
            if claimed {
                return Some(counter.get_or_init(&resolve));
            }
        }
        None
    }
}

impl ServiceMetrics {
    #[must_use]
    pub fn new(
        metrics: &Metrics,
        name: &str,
        request: &[Box<dyn Assertion>],
        response: &[Box<dyn Assertion>],
    ) -> Self {
        let counters = |phase: &str, steps: &[Box<dyn Assertion>]| {
            steps
                .iter()
                .map(|s| StepCounters {
                    pass: metrics
                        .steps
                        .with_label_values(&[name, phase, s.kind(), "pass"]),
                    deny: metrics
                        .steps
                        .with_label_values(&[name, phase, s.kind(), "deny"]),
                })
                .collect()
        };
        ServiceMetrics {
            name: name.to_owned(),
            family: metrics.requests.clone(),
            by_status: OnceLock::new(),
            duration: OnceLock::new(),
            durations: metrics.duration.clone(),
            body_items: OnceLock::new(),
            body_item_counts: metrics.body_items.clone(),
            request_steps: counters("request", request),
            response_steps: counters("response", response),
            shadow: Vec::new(),
        }
    }

    /// Resolves the counters of the service's shadowed steps, by slot.
    #[must_use]
    pub fn with_shadow(mut self, metrics: &Metrics, steps: &[std::sync::Arc<str>]) -> Self {
        self.shadow = steps
            .iter()
            .map(|step| {
                let outcome = |o: ShadowOutcome| {
                    metrics.shadow_outcomes.with_label_values(&[
                        self.name.as_str(),
                        step,
                        o.label(),
                    ])
                };
                (
                    ShadowOutcome::ALL.map(outcome),
                    metrics
                        .shadow_items
                        .with_label_values(&[self.name.as_str(), step]),
                )
            })
            .collect();
        self
    }

    /// Counts what each shadowed step would have done to a finished request.
    pub fn count_shadow(&self, records: &[ShadowRecord]) {
        for record in records {
            let Some((outcomes, items)) = self.shadow.get(usize::from(record.slot)) else {
                continue;
            };
            let outcome = record.outcome();
            if let Some(at) = ShadowOutcome::ALL.iter().position(|o| *o == outcome) {
                outcomes[at].inc();
            }
            items.inc_by(record.items());
        }
    }

    /// Counts items changed in response bodies (card numbers masked).
    pub fn body_items_changed(&self, n: usize) {
        self.body_items
            .get_or_init(|| self.body_item_counts.with_label_values(&[&self.name]))
            .inc_by(n as u64);
    }

    /// Counts a finished request.
    pub fn finished(&self, status: u16, seconds: f64) {
        let by_status = self.by_status.get_or_init(Box::default);
        match by_status.get(status, || {
            self.family
                .with_label_values(&[&self.name, &status.to_string()])
        }) {
            Some(counter) => counter.inc(),
            // More distinct statuses than slots: looked up in the family (rare).
            None => self
                .family
                .with_label_values(&[&self.name, &status.to_string()])
                .inc(),
        }
        self.duration
            .get_or_init(|| self.durations.with_label_values(&[&self.name]))
            .observe(seconds);
    }

    /// Counts the outcome of every top-level step that ran.
    pub fn count_steps(
        &self,
        steps: &[Box<dyn Assertion>],
        verdict: &Verdict,
        denied: Option<usize>,
        request: bool,
    ) {
        let counters = if request {
            &self.request_steps
        } else {
            &self.response_steps
        };
        let ran = match verdict {
            Verdict::Continue => steps.len(),
            Verdict::Reject(_) => denied.map_or(0, |d| d + 1),
        };
        for (i, c) in counters.iter().take(ran).enumerate() {
            if matches!(verdict, Verdict::Reject(_)) && Some(i) == denied {
                c.deny.inc();
            } else {
                c.pass.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counters_keep_a_slot_per_code_until_full() {
        let counters = StatusCounters::default();
        let made = std::sync::atomic::AtomicUsize::new(0);
        let resolve = || {
            made.fetch_add(1, Ordering::Relaxed);
            IntCounter::new("c", "c").expect("counter")
        };
        for status in 200..200 + STATUS_SLOTS as u16 {
            counters.get(status, resolve).expect("a slot").inc();
            counters.get(status, resolve).expect("the same slot").inc();
        }
        assert_eq!(made.load(Ordering::Relaxed), STATUS_SLOTS);
        assert_eq!(counters.get(200, resolve).expect("slot").get(), 2);
        assert!(counters.get(599, resolve).is_none());
    }

    #[test]
    fn status_counters_are_claimed_once_under_contention() {
        let counters = std::sync::Arc::new(StatusCounters::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counters = counters.clone();
                std::thread::spawn(move || {
                    for status in [200, 404, 500, 200] {
                        counters
                            .get(status, || IntCounter::new("c", "c").expect("counter"))
                            .expect("slot")
                            .inc();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("join");
        }
        let total: u64 = [200, 404, 500]
            .iter()
            .map(|&s| counters.get(s, || unreachable!()).expect("slot").get())
            .sum();
        assert_eq!(total, 16);
        assert_eq!(counters.get(200, || unreachable!()).expect("slot").get(), 8);
    }
}
