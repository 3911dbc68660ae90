//! A real `portcullis run` process (not the in-process gateway the other tests use): what a
//! fleet test needs to show that gateways share state only through the store.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::{client, free_port, wait_for_port, ADMIN_TOKEN};

/// A `portcullis run` process on ephemeral ports, killed on drop.
pub struct GatewayProcess {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GatewayProcess {
    /// Runs the policy `body` (no listeners, no `secrets:`: those come first, with the
    /// admin token; a body may continue `secrets:` on its first lines) from `dir/NAME.yaml`.
    pub fn start(dir: &Path, name: &str, body: &str) -> GatewayProcess {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        std::fs::write(dir.join("admin-token"), ADMIN_TOKEN).expect("token");
        let policy = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &policy,
            format!(
                "listen: {addr}\nworkers: 1\naccess_log: off\nadmin: {{listen: {admin}, token: admin}}\nsecrets:\n  admin: {{file: admin-token}}\n{body}"
            ),
        )
        .expect("policy");
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "-c", policy.to_str().expect("utf8")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn portcullis");
        wait_for_port(addr);
        wait_for_port(admin);
        GatewayProcess { child, addr, admin }
    }

    pub fn url(&self) -> String {
        format!("http://{}/x", self.addr)
    }

    pub fn url_of(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .expect("metrics")
            .text()
            .expect("text")
    }
}
