//! Real Redis servers for tests and benches: a standalone `redis-server` and a local
//! 3-master Redis Cluster, each on ephemeral 127.0.0.1 ports with its own temporary
//! directory, stopped (and the directory removed) when dropped. No persistence
//! (`--save '' --appendonly no`): a test's data lives as long as its server.
//!
//! It is a public module of the library rather than a test-only one, because the
//! gateway's unit tests, its integration tests (`gateway/tests/`) and the benches
//! (`benches/`) all start servers with it, and only a public item of the library reaches
//! all three; it is `#[doc(hidden)]` in `redis/mod.rs` because it is not part of the
//! gateway's API. It needs `redis-server` and `redis-cli` on the `PATH`
//! (`scripts/test.sh` installs them).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections, and a cluster to agree on its slots.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One `redis-server` process on a 127.0.0.1 port of its own.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    password: Option<String>,
    /// Extra arguments it was started with (cluster mode), so a restart matches.
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A standalone server without a password.
    ///
    /// # Panics
    /// `redis-server` is missing or does not start: a test cannot go on without it.
    #[must_use]
    pub fn start() -> RedisServer {
        RedisServer::spawn(None, Vec::new())
    }

    /// A standalone server that requires `password` (`--requirepass`).
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    #[must_use]
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::spawn(Some(password.to_owned()), Vec::new())
    }

    /// A standalone server that speaks only TLS on its port, with the certificate and key
    /// given (PEM files); clients are not asked for certificates.
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    #[must_use]
    pub fn start_tls(certificate: &std::path::Path, key: &std::path::Path) -> RedisServer {
        let port = free_port();
        let mut server = RedisServer {
            port,
            dir: fresh_dir(),
            password: None,
            extra: vec![
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                certificate.display().to_string(),
                "--tls-key-file".into(),
                key.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            child: None,
        };
        server.restart();
        server
    }

    fn tls(&self) -> bool {
        self.extra.iter().any(|arg| arg == "--tls-port")
    }

    fn spawn(password: Option<String>, extra: Vec<String>) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            dir: fresh_dir(),
            password,
            extra,
            child: None,
        };
        server.restart();
        server
    }

    /// The port it listens on (kept across [`RedisServer::kill`] and restart).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT` (no password: pass it separately, as a policy would).
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the process is running (it was not killed).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the server at once (SIGKILL): the gateway sees connections drop and the port
    /// refuse, as when a Redis host dies. [`RedisServer::restart`] brings it back on the
    /// same port, empty.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing answers, as with
    /// a server stuck in a slow command or a host lost behind a silent network.
    /// [`RedisServer::resume`] thaws it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a [`RedisServer::pause`]d server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(which)
                .arg(child.id().to_string())
                .status()
                .unwrap_or_else(|error| panic!("cannot run kill: {error}"));
            assert!(status.success(), "kill {which} failed");
        }
    }

    /// Starts the server again on its port (after [`RedisServer::kill`]; a running server
    /// is killed first), and waits until it answers `PING`.
    ///
    /// # Panics
    /// It does not start within the start timeout.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("redis-server");
        // A TLS server listens with TLS on its port and nowhere in plain text.
        let plain_port = if self.tls() {
            "0".to_owned()
        } else {
            self.port.to_string()
        };
        command
            .args(["--port", &plain_port])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--logfile", "redis.log"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command.spawn().unwrap_or_else(|error| {
            panic!(
                "cannot start redis-server (is it installed? scripts/test.sh installs it): {error}"
            )
        });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let up = if self.tls() {
                // This helper speaks no TLS: an accepted connection is the sign of life.
                TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1)).is_ok()
            } else {
                self.command(&["PING"]).is_ok_and(|reply| reply == "+PONG")
            };
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING; see {}",
                self.port,
                self.dir.join("redis.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one command (authenticating first when the server has a password) and
    /// returns the first line of the reply, e.g. `+PONG` or `$12`: enough for setup and
    /// for tests that look at the server behind the gateway's back.
    ///
    /// # Errors
    /// The server does not accept the connection or closes it.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut reader = self.send(args)?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "redis closed the connection",
            ));
        }
        Ok(line.trim_end().to_owned())
    }

    /// Like [`RedisServer::command`], but returns the whole of a bulk-string reply (for
    /// `CLUSTER INFO`, `GET`).
    ///
    /// # Errors
    /// As [`RedisServer::command`].
    pub fn bulk(&self, args: &[&str]) -> std::io::Result<String> {
        let mut reader = self.send(args)?;
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let Some(length) = header
            .trim_end()
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return Ok(header.trim_end().to_owned());
        };
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Connects, authenticates when needed (its reply read and dropped), sends `args`.
    fn send(&self, args: &[&str]) -> std::io::Result<BufReader<TcpStream>> {
        let mut stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = Vec::new();
        if let Some(password) = &self.password {
            request.extend(resp(&["AUTH", password]));
        }
        request.extend(resp(args));
        stream.write_all(&request)?;
        let mut reader = BufReader::new(stream);
        if self.password.is_some() {
            let mut auth = String::new();
            reader.read_line(&mut auth)?;
        }
        Ok(reader)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A local Redis Cluster of three masters (no replicas), each slot range on its own
/// `redis-server --cluster-enabled yes`. Dropping it stops all three.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-mode servers, joins them with `redis-cli --cluster create` and
    /// waits until every node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// A server does not start, `redis-cli` fails, or the cluster does not settle in time.
    #[must_use]
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::spawn(
                    None,
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run redis-cli (is it installed?): {error}"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok();
        cluster
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let settled = self.nodes.iter().all(|node| {
                node.bulk(&["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if settled {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    #[must_use]
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The three masters, to look at or to kill and restart one.
    pub fn nodes(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }
}

/// The RESP encoding of one command.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).into_bytes());
        out.extend(arg.as_bytes());
        out.extend(b"\r\n");
    }
    out
}

/// A port free at the time of asking. A cluster node also listens on port + 10000 (the
/// cluster bus), so ports stay below 55536 with that one free too.
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|error| panic!("no free port: {error}"));
        if port < 55_536 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A new empty directory under the system's temporary directory (not `tempfile`: this
/// module is part of the library, and that crate is only a dev-dependency).
fn fresh_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = format!(
        "portcullis-redis-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos())
    );
    let dir = std::env::temp_dir().join(unique);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
    dir
}

#[cfg(test)]
mod tests {
    use super::{RedisCluster, RedisServer};

    #[test]
    fn a_standalone_server_starts_stops_and_restarts() {
        let mut server = RedisServer::start_with_password("s3cret");
        assert_eq!(server.command(&["SET", "k", "v"]).expect("set"), "+OK");
        server.kill();
        assert!(!server.is_running());
        assert!(server.command(&["PING"]).is_err(), "killed means refused");
        server.restart();
        assert_eq!(
            server.command(&["GET", "k"]).expect("get"),
            "$-1",
            "restarted empty"
        );
        let dir = server.dir.clone();
        drop(server);
        assert!(!dir.exists(), "its directory goes with it");
    }

    #[test]
    fn a_cluster_of_three_masters_settles() {
        let mut cluster = RedisCluster::start();
        assert!(cluster.url().starts_with("redis+cluster://127.0.0.1:"));
        for node in cluster.nodes() {
            let info = node.bulk(&["CLUSTER", "INFO"]).expect("info");
            assert!(info.contains("cluster_known_nodes:3"), "{info}");
        }
    }
}
