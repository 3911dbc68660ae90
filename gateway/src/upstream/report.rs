//! What the pools know, for `/metrics` and the admin API: per target requests, errors,
//! latency, requests in flight and health; per pool retries.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use super::{Availability, Pool};
use crate::metrics::label_value;

/// The text exposition of every pool's counters. Kept by the targets as atomics, so the
/// request path does no label lookup.
#[must_use]
pub fn metrics_text<'a>(pools: impl Iterator<Item = (&'a str, &'a Pool)>) -> String {
    let mut requests = String::from("# HELP portcullis_upstream_requests_total Attempts sent to an upstream target, by outcome: answered (below 500), server_error (5xx), connect_error, exchange_error (broken after connecting).\n# TYPE portcullis_upstream_requests_total counter\n");
    let mut latency = String::from("# HELP portcullis_upstream_response_seconds Time from choosing a target to its answer's head.\n# TYPE portcullis_upstream_response_seconds summary\n");
    let mut health = String::from("# HELP portcullis_upstream_target_up Whether a target takes requests (1), or is unhealthy or ejected (0).\n# TYPE portcullis_upstream_target_up gauge\n");
    let mut in_flight = String::from("# HELP portcullis_upstream_in_flight Requests in flight to a target.\n# TYPE portcullis_upstream_in_flight gauge\n");
    let mut ejections = String::from("# HELP portcullis_upstream_ejections_total Times a target was ejected by passive health checks.\n# TYPE portcullis_upstream_ejections_total counter\n");
    let mut retries = String::from("# HELP portcullis_upstream_retries_total Retries on another target: retried, or refused by the retry budget.\n# TYPE portcullis_upstream_retries_total counter\n");
    for (service, pool) in pools {
        let service = label_value(service);
        let now = pool.now_ms();
        for target in pool.members().targets.iter() {
            let state = &target.state;
            let labels = format!(
                "service=\"{service}\",target=\"{}\"",
                label_value(&target.label)
            );
            let answered = state.answered.load(Relaxed);
            let server_errors = state.server_errors.load(Relaxed);
            for (outcome, value) in [
                ("answered", answered.saturating_sub(server_errors)),
                ("server_error", server_errors),
                ("connect_error", state.connect_errors.load(Relaxed)),
                ("exchange_error", state.exchange_errors.load(Relaxed)),
            ] {
                let _ = writeln!(
                    requests,
                    "portcullis_upstream_requests_total{{{labels},outcome=\"{outcome}\"}} {value}"
                );
            }
            let seconds = state.latency_micros.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(
                latency,
                "portcullis_upstream_response_seconds_sum{{{labels}}} {seconds}"
            );
            let _ = writeln!(
                latency,
                "portcullis_upstream_response_seconds_count{{{labels}}} {answered}"
            );
            let up = u8::from(target.availability(now) == Availability::Available);
            let _ = writeln!(health, "portcullis_upstream_target_up{{{labels}}} {up}");
            let _ = writeln!(
                in_flight,
                "portcullis_upstream_in_flight{{{labels}}} {}",
                state.in_flight.load(Relaxed)
            );
            let _ = writeln!(
                ejections,
                "portcullis_upstream_ejections_total{{{labels}}} {}",
                state.ejections.load(Relaxed)
            );
        }
        for (outcome, value) in [
            ("retried", pool.budget.retried.load(Relaxed)),
            ("budget_exhausted", pool.budget.refused.load(Relaxed)),
        ] {
            let _ = writeln!(
                retries,
                "portcullis_upstream_retries_total{{service=\"{service}\",outcome=\"{outcome}\"}} {value}"
            );
        }
    }
    [requests, latency, health, in_flight, ejections, retries].concat()
}

/// A pool as the admin API shows it.
#[must_use]
pub fn describe(service: &str, pool: &Pool) -> serde_json::Value {
    let now = pool.now_ms();
    let members = pool.members();
    let targets: Vec<serde_json::Value> = members
        .targets
        .iter()
        .map(|target| {
            let state = &target.state;
            let answered = state.answered.load(Relaxed);
            let mean_ms = (answered > 0)
                .then(|| state.latency_micros.load(Relaxed) as f64 / answered as f64 / 1000.0);
            serde_json::json!({
                "target": &*target.label,
                "address": target.addr.to_string(),
                "weight": target.weight,
                "state": target.availability(now).label(),
                "active_check": if target.check_healthy() { "passing" } else { "failing" },
                "in_flight": state.in_flight.load(Relaxed),
                "requests": state.requests.load(Relaxed),
                "server_errors": state.server_errors.load(Relaxed),
                "connect_errors": state.connect_errors.load(Relaxed),
                "exchange_errors": state.exchange_errors.load(Relaxed),
                "ejections": state.ejections.load(Relaxed),
                "mean_response_ms": mean_ms,
            })
        })
        .collect();
    serde_json::json!({
        "service": service,
        "balance": pool.settings.balance.name(),
        "healthy": pool.any_available(),
        "health_check": pool.settings.health_check.as_ref().map(|check| serde_json::json!({
            "path": check.path,
            "interval_ms": super::millis(check.interval),
        })),
        "resolves": pool.settings.resolve.as_ref().map(|resolve| serde_json::json!({
            "host": resolve.host,
            "every_ms": super::millis(resolve.every),
        })),
        "retries": {
            "attempts": pool.budget.policy().attempts,
            "retried": pool.budget.retried.load(Relaxed),
            "budget_exhausted": pool.budget.refused.load(Relaxed),
        },
        "targets": targets,
    })
}
