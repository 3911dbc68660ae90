//! Test harness: a real HTTP backend (hyper, independent of Pingora) that records what
//! reaches it, and the real gateway on ephemeral loopback ports, stopped on drop.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use portcullis::server::ShutdownOnDrop;
use portcullis::state::GatewayState;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The admin token the shipped policies read (`fixtures/demo-admin-token`).
pub fn demo_admin_token() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo-admin-token");
    std::fs::read_to_string(path)
        .expect("token")
        .trim()
        .to_owned()
}

/// What reached the backend.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    /// The gateway-side address of the connection it came on.
    pub peer: SocketAddr,
}

/// A real HTTP/1.1 backend. `/slow...` answers after 3 s; `/status/NNN` with that status;
/// anything else 200 with a small JSON body.
pub struct Backend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _rt: tokio::runtime::Runtime,
}

async fn handle(
    seen: Arc<Mutex<Vec<Seen>>>,
    peer: SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    seen.lock().expect("lock").push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
        peer,
    });
    if path.starts_with("/slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(200);
    let json = format!(
        "{{\"backend\":true,\"path\":\"{path}\",\"body_len\":{}}}",
        body.len()
    );
    let resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("server", "test-backend/1.0")
        .header("x-internal-debug", "secret-stack-info")
        .body(Full::new(Bytes::from(json)))
        .expect("response");
    Ok(resp)
}

impl Backend {
    pub fn start() -> Backend {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A backend on `addr` (port 0: any free port); dropping it closes the listener and
    /// every connection, as a killed backend would.
    pub fn start_at(addr: SocketAddr) -> Backend {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let seen2 = seen.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(seen.clone(), peer, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            addr,
            seen,
            _rt: rt,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listening on {addr}");
}

/// The gateway, running in-process on ephemeral ports.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
    pub state: Arc<GatewayState>,
    _server: ShutdownOnDrop,
}

/// Fills `{listen}`, `{admin}`, `{backend}` and `{dir}` in a policy template.
pub fn render(
    template: &str,
    listen: SocketAddr,
    admin: SocketAddr,
    backend: &str,
    dir: &std::path::Path,
) -> String {
    template
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{backend}", backend)
        .replace("{dir}", &dir.display().to_string())
}

/// The header every test policy starts with.
pub const PREAMBLE: &str = "listen: {listen}\nworkers: 1\naccess_log: {file: {dir}/access.log}\nadmin:\n  listen: {admin}\n  token: admin_token\nsecrets:\n  admin_token: {file: admin-token}\n";

impl TestGateway {
    /// Starts the gateway with `PREAMBLE` + `services` (placeholders filled in).
    pub fn start(services: &str, backend: &str) -> TestGateway {
        Self::start_with_files(services, backend, &[])
    }

    /// [`TestGateway::start`] with `files` (name, content) written beside the policy first.
    pub fn start_with_files(services: &str, backend: &str, files: &[(&str, &str)]) -> TestGateway {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).expect("token");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("file");
        }
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let text = render(
            &format!("{PREAMBLE}{services}"),
            listen,
            admin,
            backend,
            dir.path(),
        );
        Self::launch(dir, "portcullis.yaml", &text, listen, admin)
    }

    /// Writes the policy, loads it and serves it until the guard is dropped.
    fn launch(
        dir: tempfile::TempDir,
        name: &str,
        text: &str,
        listen: SocketAddr,
        admin: SocketAddr,
    ) -> TestGateway {
        // The access log goes to the test's folder, where `access_log()` reads it.
        let text = if text.contains("access_log:") {
            text.to_owned()
        } else {
            format!(
                "access_log: {{file: {}/access.log}}\n{text}",
                dir.path().display()
            )
        };
        let config = dir.path().join(name);
        std::fs::write(&config, text).expect("write policy");
        let state = match GatewayState::load(&config) {
            Ok(s) => s,
            Err(e) => panic!("policy does not load:\n{e}"),
        };
        let server = portcullis::server::spawn(portcullis::server::build(&state, None));
        wait_for_port(listen);
        wait_for_port(admin);
        TestGateway {
            addr: listen,
            admin,
            config,
            dir,
            state,
            _server: server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Starts the gateway with one of the shipped policies, moved to free ports: its
    /// `127.0.0.1:8080` / `127.0.0.1:9901` listeners and `http://127.0.0.1:9090` upstream are
    /// replaced, and `../fixtures/` paths made absolute.
    pub fn from_policy(name: &str, backend: &str) -> TestGateway {
        Self::from_policy_with(name, backend, &[])
    }

    /// [`TestGateway::from_policy`] with more text replaced (e.g. key-set URLs).
    pub fn from_policy_with(name: &str, backend: &str, more: &[(&str, String)]) -> TestGateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let text = std::fs::read_to_string(repo.join("policies").join(name)).expect("policy");
        let text = text
            .replace("127.0.0.1:8080", &listen.to_string())
            .replace("127.0.0.1:9901", &admin.to_string())
            .replace("http://127.0.0.1:9090", backend)
            .replace(
                "../fixtures/",
                &format!("{}/", repo.join("fixtures").display()),
            );
        let text = more.iter().fold(text, |t, (from, to)| t.replace(from, to));
        Self::launch(dir, name, &text, listen, admin)
    }

    /// Rewrites the policy file with new services (same preamble and ports).
    pub fn rewrite(&self, services: &str, backend: &str) {
        let text = render(
            &format!("{PREAMBLE}{services}"),
            self.addr,
            self.admin,
            backend,
            self.dir.path(),
        );
        std::fs::write(&self.config, text).expect("write policy");
    }

    /// `POST /api/reload` with the admin token.
    pub fn reload(&self) -> reqwest::blocking::Response {
        client()
            .post(self.admin_url("/api/reload"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .expect("send")
    }

    /// A GET on the admin API with the admin token, as JSON.
    pub fn admin_json(&self, path: &str) -> serde_json::Value {
        client()
            .get(self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .expect("send")
            .json()
            .expect("json")
    }

    /// The access log so far (the writer flushes after each batch).
    pub fn access_log(&self) -> String {
        std::thread::sleep(Duration::from_millis(150));
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// The problem `type` code of a problem+json response, checking the content type.
pub fn problem_code(resp: reqwest::blocking::Response) -> (u16, String, serde_json::Value) {
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(ctype, "application/problem+json", "status {status}");
    let body: serde_json::Value = resp.json().expect("json");
    let code = body["type"]
        .as_str()
        .and_then(|t| t.strip_prefix("urn:portcullis:problem:"))
        .unwrap_or("")
        .to_owned();
    assert_eq!(body["status"].as_u64(), Some(u64::from(status)));
    (status, code, body)
}
