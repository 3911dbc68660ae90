//! The compiled gateway: what a policy file becomes after loading, shared by every request
//! until the next reload swaps in a new one.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use portcullis_assertions::ip::IpList;
use portcullis_assertions::{
    Exchange, Needs, Pipeline, Progress, Request, RequestHead, RequestView, ResponseHead,
    VarRegistry, Verdict,
};

use crate::metrics::ServiceMetrics;
use crate::router::Router;

/// A secret's value. Never printed: `Debug` shows `[redacted]`.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    #[must_use]
    pub fn new(value: &str) -> Self {
        Secret(Arc::from(value))
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    Off,
    File(std::path::PathBuf),
}

/// Settings that only take effect at start (listeners, workers, log target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub listen: Vec<SocketAddr>,
    /// The HTTPS listeners (`tls.listen`).
    pub tls_listen: Vec<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub workers: usize,
    pub access_log: AccessLogTarget,
    /// The identity to take once the listeners are bound.
    pub run_as: Option<crate::privileges::RunAs>,
    /// Time requests in flight get to finish after SIGTERM.
    pub drain_timeout: Duration,
}

/// How to reach a service's upstream: settings its targets share, and the pool of targets.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// As written in the policy (the URL, or the targets' URLs), for `/api/config`, `eval`
    /// and messages.
    pub url: String,
    pub tls: bool,
    pub verify_tls: bool,
    pub preserve_host: bool,
    /// Path prefix of the upstream URL, without a trailing slash (may be empty).
    pub base_path: String,
    pub strip_prefix: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Trust anchors for this upstream instead of the system's (`ca_file`).
    pub ca: Option<Arc<[pingora::utils::tls::WrappedX509]>>,
    /// Keeps pooled connections of upstreams that differ only in trust anchors apart:
    /// Pingora's pool key does not include the CA list.
    pub pool_group: u64,
    /// The targets and how one is chosen.
    pub pool: Arc<crate::upstream::Pool>,
}

impl Upstream {
    /// The stand-in upstream of a service that answers itself (`issue_saml`): the request
    /// is answered in the request phase and never proxied; were it ever, port 0 refuses
    /// the connection, so the failure is closed.
    #[must_use]
    pub fn answered_by_the_gateway() -> Self {
        use crate::upstream::{Balance, Passive, Pool, PoolSettings, RetryPolicy, Target};
        let nowhere = Target::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            1,
            HeaderValue::from_static("localhost"),
            String::new(),
        );
        let settings = PoolSettings {
            balance: Balance::RoundRobin,
            max_connections: None,
            passive: Passive::default(),
            health_check: None,
            resolve: None,
        };
        let no_retries = RetryPolicy {
            attempts: 0,
            ..RetryPolicy::default()
        };
        Upstream {
            url: "(answered by the gateway: issue_saml)".to_owned(),
            tls: false,
            verify_tls: true,
            preserve_host: false,
            base_path: String::new(),
            strip_prefix: false,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            ca: None,
            pool_group: 0,
            pool: Arc::new(Pool::new(settings, no_retries, vec![Arc::new(nowhere)])),
        }
    }
}

/// One fronted service, compiled.
#[derive(Debug)]
pub struct Service {
    pub name: Arc<str>,
    /// The matched path prefix (canonical form), for logs and `strip_prefix`.
    pub route: Arc<str>,
    /// How many segments `route` spans (what `strip_prefix` removes).
    pub route_segments: usize,
    /// Stack-dependent path forms this service accepts (others are refused).
    pub path_forms: crate::path::PathForms,
    pub upstream: Upstream,
    /// The service answers allowed requests itself with a SAML assertion (its `upstream`
    /// is then a stand-in that is never contacted).
    pub issue_saml: Option<Arc<crate::saml_issuer::pipeline::PipelineIssuance>>,
    pub request: Pipeline,
    pub response: Pipeline,
    pub needs: Needs,
    /// Methods this service takes (others: `405`). Services with the standard list share one.
    pub methods: Arc<[http::Method]>,
    pub max_request_body: u64,
    /// Requests that came in plain are refused (`https_only`).
    pub https_only: bool,
    pub metrics: ServiceMetrics,
    /// What happens to the caller's credentials on the way to the upstream.
    pub credentials: crate::credentials::CredentialPolicy,
}

impl Service {
    /// Runs the request pipeline; counts each top-level step's outcome. A step that needs
    /// I/O at its place (a shared counter) stops the pipeline there: its work is awaited and
    /// the pipeline resumes at that step.
    pub async fn run_request<H: RequestHead + Send>(
        &self,
        head: &mut H,
        body: Option<&[u8]>,
        x: &mut Exchange,
    ) -> Verdict {
        let mut start = 0;
        let verdict = loop {
            let progress = self
                .request
                .run_request_from(start, &mut Request { head, body }, x);
            match progress {
                Progress::Done(verdict) => break verdict,
                Progress::Await { step, work } => {
                    x.put_awaited(work.await);
                    start = step;
                }
            }
        };
        self.metrics
            .count_steps(self.request.steps(), &verdict, x.denied_step, true);
        verdict
    }

    /// Runs the upstream phase on the head about to go upstream: what response steps need
    /// to ask of the upstream (`mask_pan` asks for an uncompressed answer), then outbound
    /// signing from the request side, last, over the final head.
    pub fn run_upstream(
        &self,
        head: &mut dyn RequestHead,
        body: Option<&[u8]>,
        x: &mut Exchange,
    ) -> Verdict {
        match self.response.run_upstream(head, body, x) {
            Verdict::Continue => self.request.run_upstream(head, body, x),
            refused @ Verdict::Reject(_) => refused,
        }
    }

    /// Applies the request steps' in-place body rewriting (card-number masking); `None` when
    /// no step rewrites bodies.
    pub fn rewrite_request_body(&self, body: &[u8], x: &mut Exchange) -> Option<Vec<u8>> {
        let (copy, changed) = self.request.rewrite_request_body(body, x)?;
        if changed > 0 {
            self.metrics.body_items_changed(changed);
        }
        Some(copy)
    }

    /// Runs the response pipeline on the response head.
    pub fn run_response(
        &self,
        req: &dyn RequestView,
        resp: &mut dyn ResponseHead,
        x: &mut Exchange,
    ) -> Verdict {
        let verdict = self.response.run_response(req, resp, x);
        self.metrics
            .count_steps(self.response.steps(), &verdict, x.denied_step, false);
        verdict
    }
}

/// A quota a service counts, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuotaInfo {
    pub service: String,
    pub name: String,
    pub limit: u64,
    pub period: String,
}

/// Everything a request needs from the loaded policy.
#[derive(Debug)]
pub struct Runtime {
    /// Increases by one on every successful (re)load.
    pub generation: u64,
    /// Every rate_limit step's counters, for `/metrics`.
    pub rate_limits: Vec<crate::metrics::RateLimitCounting>,
    /// Every quota step, for the admin API.
    pub quotas: Vec<QuotaInfo>,
    pub settings: Settings,
    pub router: Router,
    pub services: Vec<Service>,
    pub registry: VarRegistry,
    pub trusted_proxies: IpList,
    pub admin_token: Option<Secret>,
    /// The access log's capture mode: the key of credential hashes, when it is on.
    pub capture: Option<crate::capture::CaptureKey>,
    /// The effective configuration with secrets redacted, for `GET /api/config`: compact
    /// JSON, gzip-compressed (see `config::compile::effective`); read it with
    /// [`Runtime::effective_config`].
    pub effective: Box<[u8]>,
    /// The OAuth token service, when the policy has one.
    pub token_service: Option<Arc<crate::oauth::TokenService>>,
    /// The SAML issuer (`/saml/token`), when the policy has one.
    pub saml_issuer: Option<Arc<crate::saml_issuer::SamlIssuer>>,
    /// The userauth API (`identity_api:`), when the policy has one.
    pub identity_api: Option<Arc<crate::identity::api::IdentityApi>>,
    /// The OProxy-compatible token broker (`oproxy:`), when the policy has one.
    pub oproxy: Option<Arc<crate::oproxy::OProxy>>,
    /// The outbound proxy's OAuth broker (`outbound_broker:`), when the policy has one.
    pub outbound_broker: Option<Arc<crate::broker::outbound::OutboundBroker>>,
    /// The HTTPS listeners' certificate and acceptor (`tls:`), read at every load.
    pub tls: Option<Arc<crate::tls_termination::TlsTermination>>,
    /// The state store (opened once, kept across reloads).
    pub store: crate::store::StateStore,
    /// The state store the policy names (`None` when it keeps no state); on a dry run the
    /// store above is an empty memory one instead.
    pub state_url: Option<crate::store::StoreUrl>,
    /// Key sets published by others that steps and issuers rely on.
    pub key_sets: Vec<Arc<crate::oauth::remote::RemoteKeySet>>,
    /// Which forwarding headers the upstream gets.
    pub forwarded_headers: ForwardedHeaders,
    /// What one client connection may take.
    pub client_limits: ClientLimits,
    /// What `check` reports without refusing the policy.
    pub warnings: Vec<String>,
    /// Where upstream names are looked up before DNS (`hosts_file:`).
    pub hosts_file: Option<std::path::PathBuf>,
}

impl Runtime {
    /// The effective configuration as compact JSON text (`GET /api/config`).
    #[must_use]
    pub fn effective_config(&self) -> String {
        use std::io::Read as _;
        let mut text = String::new();
        let _ = flate2::read::GzDecoder::new(&self.effective[..]).read_to_string(&mut text);
        text
    }

    /// Takes over what the previous policy knew of its upstream targets' health (by service
    /// name and address), so a reload neither forgets an outage nor waits for checks to
    /// find it again.
    pub fn inherit_upstream_state(&self, earlier: &Runtime) {
        let by_name: std::collections::HashMap<&str, &Service> = earlier
            .services
            .iter()
            .map(|service| (&*service.name, service))
            .collect();
        for service in &self.services {
            if let Some(old) = by_name.get(&*service.name) {
                service.upstream.pool.inherit(&old.upstream.pool);
            }
        }
    }
}

/// Which forwarding headers the upstream gets. Whatever a client sent in any of them is
/// replaced or removed, so the upstream never reads a client's claim as the gateway's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardedHeaders {
    /// `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Real-IP`.
    pub x_forwarded: bool,
    /// RFC 7239 `Forwarded`.
    pub forwarded: bool,
}

impl ForwardedHeaders {
    pub const X_FORWARDED: ForwardedHeaders = ForwardedHeaders {
        x_forwarded: true,
        forwarded: false,
    };
    pub const FORWARDED: ForwardedHeaders = ForwardedHeaders {
        x_forwarded: false,
        forwarded: true,
    };
}

/// Limits on what one client connection may take. Read from the policy at every accept, so
/// a reload changes them for new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Total time from a request head's first byte to its last.
    pub header_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time allowed for a request body before `body_min_rate` extends it.
    pub body_timeout: Duration,
    /// Each this many body bytes received earn one more second (0: no extension).
    pub body_min_rate: u64,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Open client connections, in all.
    pub max_connections: usize,
    /// Open client connections from one address (trusted proxies are not counted).
    pub max_connections_per_ip: usize,
    /// Failed authentications at the gateway's own endpoints, per client address.
    pub failed_auth_per_ip: portcullis_assertions::gcra::Limit,
    /// Failed client authentications at the token endpoint, per client id.
    pub failed_auth_per_client: portcullis_assertions::gcra::Limit,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(20),
            body_min_rate: 500,
            max_header_bytes: 64 * 1024,
            max_connections: default_max_connections(),
            max_connections_per_ip: 256,
            failed_auth_per_ip: portcullis_assertions::gcra::Limit::per_minute(
                DEFAULT_FAILED_AUTH_PER_IP,
            ),
            failed_auth_per_client: portcullis_assertions::gcra::Limit::per_minute(
                DEFAULT_FAILED_AUTH_PER_CLIENT,
            ),
        }
    }
}

/// Failed authentications an address may make per minute by default (all at once, then one
/// every 3 s): enough for a person mistyping, far too few to guess a secret.
pub const DEFAULT_FAILED_AUTH_PER_IP: u64 = 20;
/// Failed authentications per client id per minute by default.
pub const DEFAULT_FAILED_AUTH_PER_CLIENT: u64 = 10;

/// Half the process's file-descriptor limit (each client connection may need an upstream
/// one too), between 64 and 10,000.
fn default_max_connections() -> usize {
    let soft_limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|soft| soft.parse::<usize>().ok())
        .unwrap_or(1024);
    (soft_limit / 2).clamp(64, 10_000)
}
