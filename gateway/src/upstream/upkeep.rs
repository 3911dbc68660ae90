//! Off the request path: active health checks of every pool's targets, and re-resolution of
//! pools that follow a DNS name.
//!
//! One loop looks at the current policy every 100 ms and starts, for each pool that is due,
//! a task that checks its targets concurrently (each check bounded by its timeout) or looks
//! its name up again. A pool never has two such tasks at once.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::{ActiveCheck, Target};
use crate::runtime::{Runtime, Upstream};
use crate::state::GatewayState;

/// How often the loop looks for due work.
const TICK: Duration = Duration::from_millis(100);

/// The background service.
pub struct UpstreamUpkeep {
    pub state: Arc<GatewayState>,
}

#[async_trait]
impl BackgroundService for UpstreamUpkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => start_due_work(&self.state.current()),
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn start_due_work(runtime: &Arc<Runtime>) {
    for (index, service) in runtime.services.iter().enumerate() {
        let pool = &service.upstream.pool;
        if pool.settings.health_check.is_none() && pool.settings.resolve.is_none() {
            continue;
        }
        let now = pool.now_ms();
        let due = now >= pool.next_check_ms.load(Relaxed) && pool.settings.health_check.is_some()
            || now >= pool.next_resolve_ms.load(Relaxed);
        if !due || pool.upkeep_running.swap(true, Relaxed) {
            continue;
        }
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let service = &runtime.services[index];
            // Cleared however the task ends, so one failed round does not stop the checks.
            let _running = Running(&service.upstream.pool.upkeep_running);
            upkeep(&service.upstream, &service.name, runtime.hosts_file.clone()).await;
        });
    }
}

/// Clears a pool's "upkeep running" flag when dropped.
struct Running<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Relaxed);
    }
}

async fn upkeep(upstream: &Upstream, service: &str, hosts_file: Option<std::path::PathBuf>) {
    let pool = &upstream.pool;
    if let Some(resolve) = &pool.settings.resolve {
        if pool.now_ms() >= pool.next_resolve_ms.load(Relaxed) {
            match super::resolve::lookup(resolve.host.clone(), resolve.port, hosts_file).await {
                Ok(addrs) if !addrs.is_empty() => {
                    let changed = pool.replace_addresses(addrs, |addr| {
                        Target::new(addr, 1, resolve.host_header.clone(), resolve.sni.clone())
                    });
                    if changed {
                        let members = pool.members();
                        let now: Vec<&str> = members.targets.iter().map(|t| &*t.label).collect();
                        log::info!(
                            "service {service}: {} now resolves to {}",
                            resolve.host,
                            now.join(", ")
                        );
                    }
                }
                // The previous addresses keep serving: an empty or failed lookup is more
                // likely a resolver's hiccup than every instance gone.
                Ok(_) => log::warn!(
                    "service {service}: {} has no address; keeping the previous ones",
                    resolve.host
                ),
                Err(error) => log::warn!(
                    "service {service}: cannot resolve {}: {error}; keeping the previous addresses",
                    resolve.host
                ),
            }
            pool.next_resolve_ms
                .store(pool.now_ms() + super::millis(resolve.every), Relaxed);
        }
    }
    if let Some(check) = &pool.settings.health_check {
        if pool.now_ms() >= pool.next_check_ms.load(Relaxed) {
            check_all(upstream, check, service).await;
            pool.next_check_ms
                .store(pool.now_ms() + super::millis(check.interval), Relaxed);
        }
    }
}

/// Checks every target of the pool at once.
async fn check_all(upstream: &Upstream, check: &ActiveCheck, service: &str) {
    let members = upstream.pool.members();
    let checks = members
        .targets
        .iter()
        .map(|target| check_one(upstream, check, target));
    let results = futures_util::future::join_all(checks).await;
    for (target, result) in members.targets.iter().zip(results) {
        let passed = result.is_ok();
        match target.record_check(passed, (check.healthy_after, check.unhealthy_after)) {
            Some(true) => log::info!(
                "service {service}: upstream target {} is healthy again",
                target.label
            ),
            Some(false) => log::warn!(
                "service {service}: upstream target {} is unhealthy: {}",
                target.label,
                result.err().unwrap_or_default()
            ),
            None => {}
        }
    }
}

/// One check of one target with Pingora's HTTP health check (its connector, the upstream's
/// TLS settings); passes on any 2xx or 3xx answer within the timeout.
async fn check_one(
    upstream: &Upstream,
    check: &ActiveCheck,
    target: &Target,
) -> Result<(), String> {
    let host = target.host_header.to_str().unwrap_or("localhost");
    let mut probe = HttpHealthCheck::new(host, upstream.tls);
    let mut req =
        RequestHeader::build("GET", check.path.as_bytes(), None).map_err(|e| e.to_string())?;
    req.insert_header(http::header::HOST, target.host_header.clone())
        .map_err(|e| e.to_string())?;
    req.insert_header(http::header::USER_AGENT, "portcullis-health-check")
        .map_err(|e| e.to_string())?;
    probe.req = req;
    let mut peer = crate::proxy::peer_for(upstream, target);
    peer.options.connection_timeout = Some(check.timeout);
    peer.options.read_timeout = Some(check.timeout);
    probe.peer_template = peer;
    probe.validator = Some(Box::new(|head| {
        if (200..400).contains(&head.status.as_u16()) {
            Ok(())
        } else {
            pingora::Error::e_explain(
                pingora::ErrorType::CustomCode("health check answer", head.status.as_u16()),
                "the health check answered outside 2xx and 3xx",
            )
        }
    }));
    let backend = Backend::new(&target.addr.to_string()).map_err(|e| e.to_string())?;
    match tokio::time::timeout(check.timeout * 2, probe.check(&backend)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    }
}
