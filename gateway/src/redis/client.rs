//! [`RedisClient`]: one shared connection to a Redis server or Cluster, with a deadline on
//! every call and a circuit breaker in front.
//!
//! **A runtime of its own.** The shared connection's driver tasks run on a small tokio
//! runtime owned by the client (one thread), never on a caller's. Callers come from everywhere:
//! Pingora's per-thread runtimes, the throw-away runtimes of `store::wait` (policy load,
//! the CLI), tests. A multiplexed connection whose driver lived on a throw-away runtime
//! would die with it; here it lives as long as the client. Each call is spawned onto that
//! runtime and awaited through its join handle, which any runtime can await. A call whose
//! caller went away still runs to its deadline, so the breaker always learns its outcome.
//!
//! **And one per serving runtime** (`local.rs`): once Pingora's runtime has its own
//! connection, a request's call runs on it inline, without the hand-off.
//!
//! **Deadlines.** Every call is bounded by the per-call timeout (default 50 ms), including
//! the wait for a connection that is not up yet: no caller waits past it. Connecting runs
//! apart from the calls (a connect may take longer than one call may wait: a TLS
//! handshake across a data centre), retried with backoff until it succeeds; after that
//! the crate's connection manager (standalone) or cluster client reconnects on its own.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::{
    Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue, IntoConnectionInfo,
    RedisError, RedisResult, ServerErrorKind, TlsCertificates,
};
use tokio::sync::watch;

use super::breaker::{Admission, BreakerStats, CircuitBreaker};
use super::connection::Connection;
use super::{RedisSettings, RedisUnavailable};

/// The longest wait between two attempts to make the first connection.
const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(2);

/// What the client has done, for the metrics. Counters only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Calls made (refused ones included).
    pub calls: u64,
    /// Calls that failed: an error, a timeout or the breaker.
    pub failures: u64,
    /// Calls that failed because they passed their deadline.
    pub timeouts: u64,
    /// Connections made by serving runtimes (first ones and reconnections after an outage).
    pub connects: u64,
    /// Pub/sub subscriptions made (first ones and re-subscriptions after a drop).
    pub subscriptions: u64,
    pub breaker: BreakerStats,
}

/// A connection to one Redis deployment. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The redacted URL, for errors and logs.
    target: String,
    timeout: Duration,
    breaker: CircuitBreaker,
    connection: watch::Receiver<Option<Connection>>,
    calls: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    runtime: OwnRuntime,
    /// For [`RedisClient::subscribe`]: one client per node the URL names.
    subscribers: Subscribers,
    /// How long answered calls took (refused and failed ones are counted apart).
    latency: prometheus::Histogram,
    /// The serving runtimes' own connections.
    local: super::local::LocalConnections,
    /// Pub/sub subscriptions made.
    subscriptions: Arc<AtomicU64>,
}

/// Plain clients hold the password: never shown by `Debug`.
struct Subscribers(Vec<Client>);

impl std::fmt::Debug for Subscribers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} node(s)", self.0.len())
    }
}

/// The client's own runtime. Dropped with `shutdown_background`, because the last clone
/// of a client may well be dropped inside another runtime, where a blocking shutdown
/// panics.
#[derive(Debug)]
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// How the client reaches the deployment, built once from the settings.
enum Connector {
    Standalone(Client, ConnectionManagerConfig),
    Cluster(ClusterClient),
}

impl RedisClient {
    /// Builds the client and starts connecting in the background; returns at once (use
    /// [`RedisClient::ping`] to wait for the server).
    ///
    /// # Errors
    /// The settings cannot make a client (an unreadable CA bundle), or no thread could
    /// be started for its runtime.
    pub fn connect(settings: &RedisSettings) -> Result<RedisClient, RedisUnavailable> {
        let target = settings.url.to_string();
        let invalid = |message: String| RedisUnavailable::Failed {
            target: target.clone(),
            message,
        };
        let (connector, subscribers) =
            connector(settings).map_err(|error| invalid(error.to_string()))?;
        let local_connector = match &connector {
            Connector::Standalone(client, _) => super::local::LocalConnector::Standalone(
                client.clone(),
                ::redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(settings.timeout)),
            ),
            Connector::Cluster(client) => super::local::LocalConnector::Cluster(client.clone()),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("portcullis-redis")
            .enable_all()
            .build()
            .map_err(|error| invalid(format!("cannot start the redis runtime: {error}")))?;
        let latency =
            latency_histogram().map_err(|error| invalid(format!("latency histogram: {error}")))?;
        let own_runtime = Some(runtime.handle().id());
        let (publish, connection) = watch::channel(None);
        runtime.spawn(keep_connecting(connector, publish, target.clone()));
        Ok(RedisClient {
            inner: Arc::new(Inner {
                target,
                timeout: settings.timeout,
                breaker: CircuitBreaker::new(settings.breaker, &settings.url.to_string()),
                connection,
                calls: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
                runtime: OwnRuntime(Some(runtime)),
                subscribers: Subscribers(subscribers),
                latency,
                local: super::local::LocalConnections::new(local_connector, own_runtime),
                subscriptions: Arc::default(),
            }),
        })
    }

    /// The URL it talks to, password redacted.
    #[must_use]
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// The deadline of each call.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    #[must_use]
    pub fn stats(&self) -> RedisStats {
        RedisStats {
            calls: self.inner.calls.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
            timeouts: self.inner.timeouts.load(Ordering::Relaxed),
            connects: self.inner.local.connects(),
            subscriptions: self.inner.subscriptions.load(Ordering::Relaxed),
            breaker: self.inner.breaker.stats(),
        }
    }

    /// The latency of answered calls, for the metrics.
    #[must_use]
    pub fn latency(&self) -> &prometheus::Histogram {
        &self.inner.latency
    }

    /// `PING`, under the call deadline.
    ///
    /// # Errors
    /// Redis did not answer `PONG` in time.
    pub async fn ping(&self) -> Result<(), RedisUnavailable> {
        self.ping_within(self.inner.timeout).await
    }

    /// `PING` with a deadline of its own (a start-up check may wait longer than a call).
    ///
    /// # Errors
    /// Redis did not answer `PONG` within `deadline`.
    pub async fn ping_within(&self, deadline: Duration) -> Result<(), RedisUnavailable> {
        let reply: String = self
            .call_within(deadline, |mut connection| async move {
                ::redis::cmd("PING").query_async(&mut connection).await
            })
            .await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(self.failed(format!("PING answered {reply:?}")))
        }
    }

    /// Runs one command.
    ///
    /// # Errors
    /// Redis is unreachable, too slow, the breaker is open, or Redis refused the command.
    pub async fn query<T: FromRedisValue + Send + 'static>(
        &self,
        command: Cmd,
    ) -> Result<T, RedisUnavailable> {
        self.call(move |mut connection| async move { command.query_async(&mut connection).await })
            .await
    }

    /// Runs a Lua script (`EVALSHA`, loading it on `NOSCRIPT`) with its keys and
    /// arguments. In a Cluster every key must hash to one slot: give them one hash tag.
    ///
    /// # Errors
    /// As [`RedisClient::query`]; a script error (`ERR ... user_script`) too.
    pub async fn run_script<T: FromRedisValue + Send + 'static>(
        &self,
        script: &'static ::redis::Script,
        keys: Vec<String>,
        args: Vec<Vec<u8>>,
    ) -> Result<T, RedisUnavailable> {
        self.run_script_within(self.inner.timeout, script, keys, args)
            .await
    }

    /// [`RedisClient::run_script`] with a deadline of its own: for the few scripts that
    /// walk a whole key space (listing, revoking by filter, purging), which run off the
    /// request path and may take longer than one request may wait.
    ///
    /// # Errors
    /// As [`RedisClient::run_script`].
    pub async fn run_script_within<T: FromRedisValue + Send + 'static>(
        &self,
        deadline: Duration,
        script: &'static ::redis::Script,
        keys: Vec<String>,
        args: Vec<Vec<u8>>,
    ) -> Result<T, RedisUnavailable> {
        self.call_within(deadline, move |mut connection| async move {
            let mut invocation = script.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            for arg in &args {
                invocation.arg(arg.as_slice());
            }
            invocation.invoke_async(&mut connection).await
        })
        .await
    }

    async fn call<T, F, Fut>(&self, work: F) -> Result<T, RedisUnavailable>
    where
        T: Send + 'static,
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = RedisResult<T>> + Send,
    {
        self.call_within(self.inner.timeout, work).await
    }

    /// Every call goes through here: the breaker, the deadline, the counters.
    async fn call_within<T, F, Fut>(
        &self,
        deadline: Duration,
        work: F,
    ) -> Result<T, RedisUnavailable>
    where
        T: Send + 'static,
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = RedisResult<T>> + Send,
    {
        let inner = &self.inner;
        inner.calls.fetch_add(1, Ordering::Relaxed);
        if inner.breaker.admit(Instant::now()) == Admission::Refused {
            inner.failures.fetch_add(1, Ordering::Relaxed);
            return Err(RedisUnavailable::CircuitOpen {
                target: inner.target.clone(),
            });
        }
        let started = Instant::now();
        let outcome = if let Some(connection) = inner.local.for_current_runtime() {
            // On the caller's own runtime: no hand-off to the client's thread.
            let outcome = match tokio::time::timeout(deadline, work(connection)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) if error.is_timeout() => Err(Failure::Timeout),
                Ok(Err(error)) => Err(Failure::Redis(error)),
                Err(_elapsed) => Err(Failure::Timeout),
            };
            if matches!(&outcome, Err(Failure::Redis(error)) if is_outage(error))
                || matches!(outcome, Err(Failure::Timeout))
            {
                inner.local.forget_current();
            }
            outcome
        } else {
            let Some(handle) = inner.runtime.handle() else {
                return Err(self.failed("the redis runtime has stopped".to_owned()));
            };
            let mut connection = inner.connection.clone();
            let task = handle.spawn(tokio::time::timeout(deadline, async move {
                let ready = connection
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| RedisError::from((ErrorKind::Client, "the connector stopped")))?
                    .clone();
                match ready {
                    Some(connection) => work(connection).await,
                    None => Err(RedisError::from((ErrorKind::Client, "not connected"))),
                }
            }));
            match task.await {
                Ok(Ok(Ok(value))) => Ok(value),
                // The crate's own response timeout (the same deadline) may fire first.
                Ok(Ok(Err(error))) if error.is_timeout() => Err(Failure::Timeout),
                Ok(Ok(Err(error))) => Err(Failure::Redis(error)),
                Ok(Err(_elapsed)) => Err(Failure::Timeout),
                Err(join) => Err(Failure::Task(join.to_string())),
            }
        };
        let now = Instant::now();
        if !matches!(outcome, Err(Failure::Timeout | Failure::Task(_))) {
            inner
                .latency
                .observe(now.duration_since(started).as_secs_f64());
        }
        match outcome {
            Ok(value) => {
                inner.breaker.record(None, now);
                Ok(value)
            }
            Err(Failure::Redis(error)) if !is_outage(&error) => {
                // Redis answered (a wrong type, a script error): it is up; this caller's
                // request was wrong, so the breaker counts a success.
                inner.breaker.record(None, now);
                Err(self.failed(error.to_string()))
            }
            Err(failure) => {
                inner.failures.fetch_add(1, Ordering::Relaxed);
                let error = match failure {
                    Failure::Timeout => {
                        inner.timeouts.fetch_add(1, Ordering::Relaxed);
                        RedisUnavailable::Timeout {
                            target: inner.target.clone(),
                            timeout: deadline,
                        }
                    }
                    Failure::Redis(error) => RedisUnavailable::Failed {
                        target: inner.target.clone(),
                        message: error.to_string(),
                    },
                    Failure::Task(message) => RedisUnavailable::Failed {
                        target: inner.target.clone(),
                        message,
                    },
                };
                inner.breaker.record(Some(&error.to_string()), now);
                Err(error)
            }
        }
    }

    /// Follows a pub/sub channel on a connection of its own (see `pubsub.rs`), on the
    /// client's runtime, for as long as the returned receiver is held.
    #[must_use]
    pub fn subscribe(&self, channel: String) -> Option<watch::Receiver<super::pubsub::Heard>> {
        let handle = self.inner.runtime.handle()?;
        let (publish, heard) = watch::channel(super::pubsub::Heard::default());
        handle.spawn(super::pubsub::follow(
            self.inner.subscribers.0.clone(),
            channel,
            publish,
            self.inner.target.clone(),
            Arc::clone(&self.inner.subscriptions),
        ));
        Some(heard)
    }

    fn failed(&self, message: String) -> RedisUnavailable {
        RedisUnavailable::Failed {
            target: self.inner.target.clone(),
            message,
        }
    }
}

/// Buckets from a loopback round trip (~0.1 ms) to the longest deadline a policy sets.
fn latency_histogram() -> prometheus::Result<prometheus::Histogram> {
    prometheus::Histogram::with_opts(
        prometheus::HistogramOpts::new(
            "portcullis_redis_call_seconds",
            "Time Redis took to answer calls (calls that passed their deadline are counted by portcullis_redis_timeouts_total).",
        )
        .buckets(vec![
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        ]),
    )
}

enum Failure {
    Redis(RedisError),
    Timeout,
    Task(String),
}

/// Whether an error says Redis is unreachable or not serving (what the breaker counts),
/// rather than that it refused this one request.
fn is_outage(error: &RedisError) -> bool {
    !matches!(
        error.kind(),
        ErrorKind::Parse
            | ErrorKind::UnexpectedReturnType
            | ErrorKind::Server(
                ServerErrorKind::ResponseError
                    | ServerErrorKind::ExecAbort
                    | ServerErrorKind::NoScript
                    | ServerErrorKind::CrossSlot
                    | ServerErrorKind::NoPerm
            )
    )
}

/// The connector for calls, and one plain client per node for pub/sub subscriptions (a
/// subscription holds a connection of its own; in a Cluster any node relays every message).
fn connector(settings: &RedisSettings) -> RedisResult<(Connector, Vec<Client>)> {
    let url = &settings.url;
    let password = settings
        .password
        .as_ref()
        .or(url.password.as_ref())
        .map(|secret| secret.expose().to_owned());
    let nodes = url
        .nodes
        .iter()
        .map(|(host, port)| {
            let addr = if url.tls {
                ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host.clone(), *port)
            };
            let mut redis = ::redis::RedisConnectionInfo::default().set_db(url.db);
            if let Some(user) = &url.username {
                redis = redis.set_username(user);
            }
            if let Some(password) = &password {
                redis = redis.set_password(password);
            }
            Ok(addr.into_connection_info()?.set_redis_settings(redis))
        })
        .collect::<RedisResult<Vec<ConnectionInfo>>>()?;
    let certificates = settings.ca_pem.as_ref().map(|pem| TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.clone()),
    });
    // Reconnection is retried with backoff by the crate; every call is bounded by our own
    // deadline, which these response timeouts only back up.
    let connect_timeout = settings.connect_timeout;
    let mut subscribers = Vec::with_capacity(nodes.len());
    for node in &nodes {
        subscribers.push(match &certificates {
            Some(certificates) if url.tls => {
                Client::build_with_tls(node.clone(), certificates.clone())?
            }
            _ => Client::open(node.clone())?,
        });
    }
    if url.cluster {
        let mut builder = ClusterClientBuilder::new(nodes)
            .connection_timeout(connect_timeout)
            .response_timeout(settings.timeout)
            .retries(2)
            .min_retry_wait(5)
            .max_retry_wait(100);
        if let Some(certificates) = certificates {
            builder = builder.certs(certificates);
        }
        Ok((Connector::Cluster(builder.build()?), subscribers))
    } else {
        let Some(node) = nodes.into_iter().next() else {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "no node",
            )));
        };
        let client = match certificates {
            Some(certificates) if url.tls => Client::build_with_tls(node, certificates)?,
            _ => Client::open(node)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(MAX_CONNECT_BACKOFF)
            .set_number_of_retries(3);
        Ok((Connector::Standalone(client, config), subscribers))
    }
}

/// How often the shared connection is checked while the serving runtimes use their own.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(1);

/// Sends a `PING` on the shared connection every [`KEEP_ALIVE_EVERY`] until the client is
/// gone. Requests mostly go through the serving runtimes' own connections, so without this
/// the shared one would learn of a Redis restart only from the next caller's failed call
/// (the connection manager reconnects when a call fails).
async fn keep_alive(mut connection: Connection, publish: &watch::Sender<Option<Connection>>) {
    while !publish.is_closed() {
        tokio::time::sleep(KEEP_ALIVE_EVERY).await;
        let ping = ::redis::cmd("PING");
        let _ = tokio::time::timeout(
            KEEP_ALIVE_EVERY,
            ping.query_async::<String>(&mut connection),
        )
        .await;
    }
}

/// Makes the first connection, retrying with backoff, and publishes it, then keeps it alive.
/// Runs on the client's runtime until the client is gone (the connection reconnects by
/// itself once made).
async fn keep_connecting(
    connector: Connector,
    publish: watch::Sender<Option<Connection>>,
    target: String,
) {
    let mut backoff = Duration::from_millis(20);
    let mut attempts = 0u32;
    loop {
        let attempt = match &connector {
            Connector::Standalone(client, config) => {
                ConnectionManager::new_with_config(client.clone(), config.clone())
                    .await
                    .map(Connection::Standalone)
            }
            Connector::Cluster(client) => {
                client.get_async_connection().await.map(Connection::Cluster)
            }
        };
        match attempt {
            Ok(connection) => {
                if attempts > 0 {
                    log::info!("redis {target}: connected after {attempts} failed attempt(s)");
                }
                let _ = publish.send(Some(connection.clone()));
                keep_alive(connection, &publish).await;
                return;
            }
            Err(error) => {
                attempts += 1;
                if attempts == 1 {
                    log::warn!("redis {target}: cannot connect yet ({error}); retrying");
                }
            }
        }
        if publish.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_CONNECT_BACKOFF);
    }
}
