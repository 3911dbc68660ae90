//! Assembling the Pingora server: the proxy listener(s), the admin listener, the optional
//! demo echo upstream, and the SIGHUP reloader.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service as ListeningService;

use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};

use crate::admin::AdminApp;
use crate::connection::ConnectionCounts;
use crate::echo::EchoApp;
use crate::proxy::Gateway;
use crate::proxy::GuardedProxy;
use crate::state::GatewayState;

/// Read buffer of a client connection (Pingora's default is 64 KiB, allocated at accept).
const CLIENT_READ_BUFFER: usize = 0;
/// Write buffer of a client connection: one segment, Pingora's default.
const CLIENT_WRITE_BUFFER: usize = 1460;

/// Re-reads the policy on SIGHUP.
struct SighupReloader {
    state: Arc<GatewayState>,
}

#[async_trait]
impl BackgroundService for SighupReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            log::warn!("cannot listen for SIGHUP; reload through the admin API instead");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => match self.state.reload_off_runtime().await {
                    Ok((rt, warnings)) => {
                        log::info!("policy reloaded on SIGHUP: generation {}", rt.generation);
                        for w in warnings {
                            log::warn!("{w}");
                        }
                    }
                    Err(invalid) => {
                        log::error!("reload on SIGHUP refused; the old policy keeps serving:\n{invalid}");
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Builds the server for a loaded state. `echo` adds the demo echo upstream on that address.
#[must_use]
pub fn build(state: &Arc<GatewayState>, echo: Option<SocketAddr>) -> Server {
    let rt = state.current();
    let conf = ServerConf {
        threads: rt.settings.workers,
        // After SIGTERM Pingora closes the listeners and waits this long before it stops its
        // runtimes (cancelling what still runs); `Drain` ends the wait as soon as no
        // request is in flight.
        grace_period_seconds: Some(rt.settings.drain_timeout.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // Pingora's proxy behind the connection guards (caps, head and body deadlines), on the
    // plain listeners and on the HTTPS ones; both count against the same caps.
    let counts = Arc::new(ConnectionCounts::new(
        state.metrics.connections_open.clone(),
    ));
    let mut http_proxy = pingora::proxy::http_proxy(
        &server.configuration,
        Gateway::new(state.clone(), counts.clone()),
    );
    let mut options = HttpServerOptions::default();
    // An HTTP/2 connection with no stream open is idle like a kept-alive HTTP/1.1 one.
    options.h2_idle_timeout = Some(rt.client_limits.idle_timeout);
    http_proxy.server_options = Some(options);
    // Pingora's HTTP/2 bounds (100 streams), with the head limit of HTTP/1.1 on the header
    // list (set at start).
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_header_list_size(u32::try_from(rt.client_limits.max_header_bytes).unwrap_or(u32::MAX));
    http_proxy.h2_options = Some(h2);
    let http_proxy = Arc::new(http_proxy);
    for (name, addresses, tls) in [
        ("portcullis", &rt.settings.listen, false),
        ("portcullis tls", &rt.settings.tls_listen, true),
    ] {
        if addresses.is_empty() {
            continue;
        }
        let guarded = GuardedProxy {
            proxy: http_proxy.clone(),
            state: state.clone(),
            counts: counts.clone(),
            tls,
        };
        let mut proxy = ListeningService::new(name.to_owned(), guarded);
        for addr in addresses {
            // No 64 KiB read buffer per connection before its first byte: heads are read
            // into Pingora's own 4 KiB buffer, bodies in 64 KiB reads that bypass a small
            // one anyway. The TLS handshake runs in the guard, on this plain TCP listener.
            proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(
                L4BufferSettings::new(CLIENT_READ_BUFFER, CLIENT_WRITE_BUFFER),
            ));
        }
        server.add_service(proxy);
    }

    if let Some(addr) = rt.settings.admin_listen {
        let mut admin = ListeningService::new(
            "portcullis admin".to_owned(),
            AdminApp {
                state: state.clone(),
            },
        );
        admin.add_tcp(&addr.to_string());
        admin.threads = Some(1);
        server.add_service(admin);
    }
    if let Some(addr) = echo {
        let mut app = ListeningService::new("portcullis echo".to_owned(), EchoApp);
        app.add_tcp(&addr.to_string());
        app.threads = Some(1);
        server.add_service(app);
    }
    server.add_service(background_service(
        "token upkeep",
        crate::oauth::background::TokenUpkeep {
            state: state.clone(),
        },
    ));
    server.add_service(background_service(
        "identity upkeep",
        crate::identity::upkeep::IdentityUpkeep {
            state: state.clone(),
        },
    ));
    server.add_service(background_service(
        "revocation watch",
        crate::oauth::revocation_watch::RevocationWatch {
            state: state.clone(),
        },
    ));
    server.add_service(background_service(
        "key refresher",
        crate::oauth::background::KeyRefresher {
            state: state.clone(),
        },
    ));
    server.add_service(background_service(
        "upstream upkeep",
        crate::upstream::upkeep::UpstreamUpkeep {
            state: state.clone(),
        },
    ));
    server.add_service(background_service(
        "sighup reloader",
        SighupReloader {
            state: state.clone(),
        },
    ));
    server
}

/// Ends the process once a graceful shutdown (SIGTERM) has no request left in flight,
/// instead of waiting out the whole `drain_timeout`: what is held for the store is written
/// and the access log flushed first. Only the binary adds it (it exits the process).
struct Drain {
    state: Arc<GatewayState>,
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() || !*shutdown.borrow() {
            return;
        }
        let timeout = self.state.current().settings.drain_timeout;
        let in_flight = || {
            self.state
                .requests_in_flight
                .load(std::sync::atomic::Ordering::Acquire)
        };
        let started = std::time::Instant::now();
        log::info!(
            "draining: listeners closed; {} request(s) in flight get up to {timeout:?} to finish",
            in_flight()
        );
        while in_flight() > 0 {
            if started.elapsed() >= timeout {
                log::warn!(
                    "drain timeout: {} request(s) still in flight are cut off",
                    in_flight()
                );
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let state = self.state.clone();
        let written = tokio::task::spawn_blocking(move || {
            let written = state.flush_before_exit();
            state.log.wait_written(std::time::Duration::from_secs(2));
            written
        })
        .await
        .unwrap_or(0);
        log::info!(
            "drained in {} ms; usage of {written} token(s) written; stopping",
            started.elapsed().as_millis()
        );
        std::process::exit(0);
    }
}

/// Adds the drain watcher to a server the binary runs (see [`Drain`]).
pub fn exit_when_drained(server: &mut Server, state: &Arc<GatewayState>) {
    server.add_service(background_service(
        "drain",
        Drain {
            state: state.clone(),
        },
    ));
}

/// A shutdown trigger for servers run in-process (tests, embedding).
pub struct ShutdownOnDrop {
    tx: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct OneshotSignal(std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for OneshotSignal {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().ok().and_then(|mut g| g.take());
        if let Some(rx) = rx {
            let _ = rx.await;
        } else {
            std::future::pending::<()>().await;
        }
        ShutdownSignal::FastShutdown
    }
}

/// Runs `server` on its own thread (Pingora builds its own runtimes) until the returned
/// guard is dropped.
#[must_use]
pub fn spawn(server: Server) -> ShutdownOnDrop {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        server.run(RunArgs {
            shutdown_signal: Box::new(OneshotSignal(std::sync::Mutex::new(Some(rx)))),
        });
    });
    ShutdownOnDrop {
        tx: Some(tx),
        thread: Some(thread),
    }
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
