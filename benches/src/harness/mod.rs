//! The end-to-end load harness (`cargo run --release -p portcullis-benches --bin bench --
//! --scenarios all`): one backend, each system and scenario in turn behind it, the same
//! load, the same CPU for every proxy, one report.
//!
//! The proxy under test runs pinned to one core (`--proxy-cpu`, default 0); the backend
//! (nginx serving fixed bodies) and wrk share the other (`--load-cpu`, default 1). Each
//! proxy gets one worker. Its CPU seconds during the measured run come from `/proc`, so
//! the report gives CPU time per request beside requests per second: on a 2-core machine
//! the load generator's core caps the rate, and CPU per request is the steadier figure.
//! Everything binds 127.0.0.1, runs for a fixed time, and is stopped at the end.

pub mod credentials;
mod peers;
pub mod procs;
pub mod report;
pub mod scenarios;
pub mod wrk;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;

use procs::{cpu_seconds, free_port, on_path, peak_rss_kib, version_of, wait_for, Proc};
use report::{Report, Row};
use scenarios::{Credential, Scenario, NOT_BUILT, SCENARIOS};

/// Command-line options.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "bench",
    about = "Portcullis against nginx, HAProxy and Caddy (and Praxis with --with-praxis), per assertion, in one run"
)]
pub struct Options {
    /// Portcullis scenarios to run, comma-separated, or `all`.
    #[arg(long, default_value = "all")]
    pub scenarios: String,
    /// Seconds each measured run lasts.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of load before each measured run (not counted).
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Open connections wrk keeps.
    #[arg(long, default_value_t = 50)]
    pub connections: u32,
    /// About a minute and a half in all (after the build): 3 s runs, 1 s warm-ups.
    #[arg(long)]
    pub quick: bool,
    /// Leave out nginx, HAProxy, Caddy and Praxis (Portcullis and the bare Pingora proxy only).
    #[arg(long)]
    pub no_reference: bool,
    /// Add Praxis (a Pingora-based proxy), building it with `cargo install praxis-proxy`
    /// when it is not installed (a long build).
    #[arg(long)]
    pub with_praxis: bool,
    /// Where the report goes (JSON, Markdown, SVG; `latest.*` is the newest).
    #[arg(long, default_value = "benches/results")]
    pub out: PathBuf,
    /// The core the proxy under test runs on.
    #[arg(long, default_value_t = 0)]
    pub proxy_cpu: u32,
    /// The core wrk and the backend run on.
    #[arg(long, default_value_t = 1)]
    pub load_cpu: u32,
    /// Measure nothing: write the Markdown and SVG of a saved JSON report again (beside it).
    #[arg(long, value_name = "REPORT.json")]
    pub replot: Option<PathBuf>,
    /// The port of the Redis the run starts for `rate-limit-redis` (set by the run itself).
    #[arg(skip)]
    pub redis_port: u16,
    /// That Redis's process, whose own CPU is reported beside the proxy's.
    #[arg(skip)]
    pub redis_pid: Option<u32>,
}

/// What one measured run is.
struct Plan {
    system: &'static str,
    scenario: String,
    about: String,
    path: &'static str,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn ensure_tools() -> Result<(), String> {
    let missing: Vec<&str> = [
        ("wrk", "wrk"),
        ("nginx", "nginx-light"),
        ("haproxy", "haproxy"),
        ("taskset", "util-linux"),
        ("curl", "curl"),
        ("redis-server", "redis-server"),
    ]
    .into_iter()
    .filter(|(p, _)| !on_path(p))
    .map(|(_, pkg)| pkg)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !is_root {
        return Err(format!(
            "missing tools; install them first: sudo apt-get install -y {}",
            missing.join(" ")
        ));
    }
    eprintln!(
        "installing {} from the distribution's packages",
        missing.join(" ")
    );
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {}",
            missing.join(" ")
        ))
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(format!("could not install {}", missing.join(" ")))
    }
}

fn build(root: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let ok = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "portcullis",
            "-p",
            "portcullis-benches",
            "--bin",
            "portcullis",
            "--bin",
            "minimal-pingora-proxy",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err("the release build failed".to_owned())
    }
}

fn selected(opts: &Options) -> Result<Vec<&'static Scenario>, String> {
    if opts.scenarios == "all" {
        return Ok(SCENARIOS.iter().collect());
    }
    let mut out: Vec<&'static Scenario> = Vec::new();
    for name in opts
        .scenarios
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match SCENARIOS.iter().find(|s| s.name == name) {
            Some(s) => out.push(s),
            None if NOT_BUILT.iter().any(|(n, _)| *n == name) => {}
            None => {
                let known: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
                return Err(format!(
                    "unknown scenario {name}; known: {}",
                    known.join(", ")
                ));
            }
        }
    }
    // Ratios need the baselines.
    for s in out.clone() {
        if !out.iter().any(|o| o.name == s.baseline) {
            if let Some(b) = SCENARIOS.iter().find(|b| b.name == s.baseline) {
                out.insert(0, b);
            }
        }
    }
    Ok(out)
}

/// Starts a system for one plan; returns the process (if any) and its address.
fn start_system(
    plan: &Plan,
    opts: &Options,
    work: &Path,
    backend: u16,
    root: &Path,
) -> Result<(Option<Proc>, u16), String> {
    let port = free_port();
    let log = work.join(format!("{}-{}.log", plan.system, plan.scenario));
    let cpu = opts.proxy_cpu;
    let io = |e: std::io::Error| format!("cannot start {}: {e}", plan.system);
    let proc = match plan.system {
        "backend-direct" => return Ok((None, backend)),
        // A reference proxy: started by peers, then waited for like the others.
        system if peers::is_peer(system) => {
            peers::start(system, port, backend, work, cpu, &log).ok_or("no such peer")??
        }
        "pingora-minimal" => {
            let bin = root.join("target/release/minimal-pingora-proxy");
            Proc::start(
                "pingora-minimal",
                cpu,
                &bin.to_string_lossy(),
                &[
                    &format!("127.0.0.1:{port}"),
                    &format!("127.0.0.1:{backend}"),
                ],
                &log,
            )
            .map_err(io)?
        }
        _ => {
            let s = SCENARIOS
                .iter()
                .find(|s| s.name == plan.scenario)
                .ok_or("no such scenario")?;
            let policy = work.join(format!("{}.yaml", s.name));
            if s.name == "ip-identity" {
                scenarios::register_bench_identity(&work.join(scenarios::IP_IDENTITY_DB))?;
            }
            std::fs::write(
                &policy,
                scenarios::portcullis_policy(s, port, free_port(), backend, opts.redis_port, root),
            )
            .map_err(|e| e.to_string())?;
            let bin = root.join("target/release/portcullis");
            Proc::start(
                "portcullis",
                cpu,
                &bin.to_string_lossy(),
                &["run", "-c", &policy.to_string_lossy()],
                &log,
            )
            .map_err(io)?
        }
    };
    // Portcullis scenarios with a credential refuse an empty GET; the token service's JWKS answers.
    let probe = SCENARIOS
        .iter()
        .find(|s| s.name == plan.scenario && plan.system == "portcullis");
    let (path, status) = match probe.map(|s| s.credential) {
        Some(Credential::Jwt | Credential::Opaque) => ("/.well-known/jwks.json", 200),
        Some(
            Credential::ApiKey | Credential::SigV4 | Credential::SigV4Unique | Credential::Saml,
        ) => ("/", 401),
        _ => ("/", 200),
    };
    wait_for(
        format!("127.0.0.1:{port}").parse().map_err(|_| "address")?,
        path,
        status,
    )
    .map_err(|e| {
        // The work folder goes at the end: keep what the process said.
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = said.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{} did not come up: {e}; it said: {}",
            plan.system,
            tail.join(" | ")
        )
    })?;
    Ok((Some(proc), port))
}

fn run_one(
    plan: &Plan,
    opts: &Options,
    work: &Path,
    backend: u16,
    root: &Path,
    script: &Path,
) -> Result<Row, String> {
    let (mut proc, port) = start_system(plan, opts, work, backend, root)?;
    let headers = match SCENARIOS
        .iter()
        .find(|s| s.name == plan.scenario && plan.system == "portcullis")
    {
        Some(s) => credentials::headers(s, port, root)?,
        None => vec!["X-Bench: 1".to_owned()],
    };
    let url = format!("http://127.0.0.1:{port}{}", plan.path);
    // A fresh signature per request: the warm-up and the measured run each get their own.
    let unique = SCENARIOS
        .iter()
        .find(|s| s.name == plan.scenario && plan.system == "portcullis")
        .is_some_and(|s| s.credential == Credential::SigV4Unique);
    let per_second = 80_000usize;
    let fresh_script = |first: usize, seconds: u64, name: &str| -> Result<PathBuf, String> {
        let path = work.join(format!("{}-{name}.lua", plan.scenario));
        let count = per_second * usize::try_from(seconds).unwrap_or(1);
        std::fs::write(&path, wrk::unique_sigv4_script(port, first, count)?)
            .map_err(|e| e.to_string())?;
        Ok(path)
    };
    let warmup_script = if unique {
        fresh_script(0, opts.warmup, "warmup")?
    } else {
        script.to_path_buf()
    };
    let measured_script = if unique {
        fresh_script(per_second * 1000, opts.duration, "run")?
    } else {
        script.to_path_buf()
    };
    if opts.warmup > 0 {
        wrk::run(
            opts.load_cpu,
            opts.connections,
            opts.warmup,
            &url,
            &headers,
            &warmup_script,
        )?;
    }
    let pid = proc.as_ref().map(Proc::pid);
    let before = pid.map(cpu_seconds);
    // A scenario keeping its state in Redis: Redis's own CPU, beside the proxy's.
    let store_pid = SCENARIOS
        .iter()
        .find(|s| s.name == plan.scenario && plan.system == "portcullis")
        .filter(|s| scenarios::uses_redis(s))
        .and(opts.redis_pid);
    let store_before = store_pid.map(cpu_seconds);
    let m = wrk::run(
        opts.load_cpu,
        opts.connections,
        opts.duration,
        &url,
        &headers,
        &measured_script,
    )?;
    let cpu = pid.zip(before).map(|(p, b)| cpu_seconds(p) - b);
    let rss = pid.map(peak_rss_kib);
    if let Some(p) = proc.as_mut() {
        if !p.alive() {
            return Err(format!("{} exited during the run", plan.system));
        }
    }
    drop(proc);
    let about = match store_pid.zip(store_before) {
        Some((store, before)) if m.requests > 0 => format!(
            "{}; Redis's own CPU {:.1} µs/request",
            plan.about,
            (cpu_seconds(store) - before) * 1e6 / m.requests as f64
        ),
        _ => plan.about.clone(),
    };
    Ok(Row::new(plan.system, &plan.scenario, &about, &m, cpu, rss))
}

fn machine(root: &Path, opts: &Options) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut v = vec![
        ("kernel".to_owned(), version_of("uname", &["-srm"])),
        ("cpus".to_owned(), version_of("nproc", &[])),
        ("cpu model".to_owned(), model),
        (
            "memory".to_owned(),
            mem.trim_start_matches("MemTotal:").trim().to_owned(),
        ),
        (
            "portcullis".to_owned(),
            version_of(
                &root.join("target/release/portcullis").to_string_lossy(),
                &["--version"],
            ),
        ),
        ("rustc".to_owned(), version_of("rustc", &["--version"])),
        ("wrk".to_owned(), version_of("wrk", &["-v"])),
    ];
    v.extend(peers::versions(opts));
    v
}

/// Runs the harness.
#[must_use]
pub fn main() -> ExitCode {
    let mut opts = Options::parse();
    if opts.quick {
        opts.duration = 3;
        opts.warmup = 1;
    }
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn replot(json: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    let report: Report =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
    for (ext, content) in [("md", report.markdown()), ("svg", report.svg())] {
        let path = json.with_extension(ext);
        std::fs::write(&path, content).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

// Long on purpose: the harness's whole procedure (start the systems, warm up, measure each
// scenario in turn, stop everything, write the report) reads top to bottom in one place, and
// each stage is a few lines over helpers already.
fn run(opts: &Options) -> Result<(), String> {
    if let Some(json) = &opts.replot {
        return replot(json);
    }
    let root = root();
    let chosen = selected(opts)?;
    ensure_tools()?;
    build(&root)?;
    let work = std::env::temp_dir().join(format!("portcullis-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let _cleanup = RemoveOnDrop(work.clone());
    // nginx workers read the body file from here.
    let _ = Command::new("chmod").arg("755").arg(&work).status();
    for (name, content) in [
        ("16k.json", scenarios::json_16k()),
        ("admin-token", "bench-admin".to_owned()),
        ("hmac-secret", scenarios::HMAC_SECRET.to_owned()),
        ("done.lua", wrk::DONE_SCRIPT.to_owned()),
    ] {
        std::fs::write(work.join(name), content).map_err(|e| e.to_string())?;
    }
    if chosen.iter().any(|s| s.name == "api-key-1m") {
        std::fs::write(
            work.join(scenarios::API_KEYS_FILE),
            scenarios::api_keys_file(1_000_000),
        )
        .map_err(|e| e.to_string())?;
    }
    let script = work.join("done.lua");

    let backend = free_port();
    let conf = work.join("backend.conf");
    std::fs::write(&conf, scenarios::nginx_backend(backend, &work)).map_err(|e| e.to_string())?;
    let _backend = Proc::start(
        "backend",
        opts.load_cpu,
        "nginx",
        &["-c", &conf.to_string_lossy()],
        &work.join("backend.log"),
    )
    .map_err(|e| e.to_string())?;
    wait_for(
        format!("127.0.0.1:{backend}")
            .parse()
            .map_err(|_| "address")?,
        "/",
        200,
    )?;
    // A Redis beside the backend (on the load CPU) when a scenario keeps its state there.
    let mut opts = opts.clone();
    let _redis = if chosen.iter().any(|s| scenarios::uses_redis(s)) {
        opts.redis_port = free_port();
        let redis = Proc::start(
            "redis",
            opts.load_cpu,
            "redis-server",
            &[
                "--port",
                &opts.redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            &work.join("redis.log"),
        )
        .map_err(|e| e.to_string())?;
        wait_for_redis(opts.redis_port)?;
        opts.redis_pid = Some(redis.pid());
        Some(redis)
    } else {
        None
    };
    let opts = &opts;

    let mut plans = vec![Plan {
        system: "backend-direct",
        scenario: "pass-through".into(),
        about: "wrk straight to the backend".into(),
        path: "/",
    }];
    let mut skipped: Vec<(String, String)> = NOT_BUILT
        .iter()
        .map(|(n, why)| ((*n).to_owned(), (*why).to_owned()))
        .collect();
    if !opts.no_reference {
        peers::plans(opts, &mut plans, &mut skipped);
    }
    plans.push(Plan {
        system: "pingora-minimal",
        scenario: "pass-through".into(),
        about: "Pingora 0.9 forwarding, no logic: the floor under Portcullis".into(),
        path: "/",
    });
    if chosen.iter().any(|s| s.path == "/16k") {
        if !opts.no_reference {
            plans.push(Plan {
                system: "nginx",
                scenario: "pass-through-16k".into(),
                about: "16 KiB JSON answer".into(),
                path: "/16k",
            });
        }
        // What the body path costs Pingora itself, so a 16 KiB ratio is read against its floor.
        plans.push(Plan {
            system: "pingora-minimal",
            scenario: "pass-through-16k".into(),
            about: "16 KiB JSON answer, Pingora 0.9 forwarding, no logic".into(),
            path: "/16k",
        });
    }
    for s in &chosen {
        plans.push(Plan {
            system: "portcullis",
            scenario: s.name.to_owned(),
            about: s.about.to_owned(),
            path: s.path,
        });
    }

    let started = version_of("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
    let settings = vec![
        (
            "load".to_owned(),
            format!(
                "wrk -t1 -c{} -d{}s (after {} s of warm-up), keep-alive",
                opts.connections, opts.duration, opts.warmup
            ),
        ),
        (
            "pinning".to_owned(),
            format!(
                "proxy on CPU {}; wrk and the backend on CPU {}",
                opts.proxy_cpu, opts.load_cpu
            ),
        ),
        (
            "backend".to_owned(),
            format!(
                "nginx, {}-byte body at /, 16 KiB JSON at /16k",
                scenarios::SMALL_BODY_BYTES
            ),
        ),
        (
            "workers".to_owned(),
            "one per proxy (nginx worker_processes 1, HAProxy nbthread 1, Caddy GOMAXPROCS=1, Pingora threads 1)"
                .to_owned(),
        ),
    ];
    println!(
        "{:<40} {:>10} {:>8} {:>8} {:>9} {:>11} {:>9}",
        "system / scenario", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "CPU µs/req", "RSS MiB"
    );
    let mut rows = Vec::new();
    for plan in &plans {
        match run_one(plan, opts, &work, backend, &root, &script) {
            Ok(row) => {
                println!(
                    "{:<40} {:>10.0} {:>8.2} {:>8.2} {:>9.2} {:>11} {:>9}{}",
                    row.label(),
                    row.rps,
                    row.p50_us as f64 / 1000.0,
                    row.p99_us as f64 / 1000.0,
                    row.p999_us as f64 / 1000.0,
                    row.cpu_us_per_request()
                        .map_or("–".to_owned(), |c| format!("{c:.1}")),
                    row.peak_rss_kib
                        .map_or("–".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0)),
                    if row.errors > 0 {
                        format!("  ({} errors: the run is void)", row.errors)
                    } else {
                        String::new()
                    }
                );
                rows.push(row);
            }
            Err(e) => {
                eprintln!("{} / {}: {e}", plan.system, plan.scenario);
                skipped.push((format!("{} / {}", plan.system, plan.scenario), e));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let baselines: Vec<(&str, &str, Option<f64>)> = chosen
        .iter()
        .map(|s| (s.name, s.baseline, s.target))
        .collect();
    let ratios = report::ratios(&rows, &baselines);
    let report = Report {
        started: started.clone(),
        machine: machine(&root, opts),
        settings,
        rows,
        ratios,
        skipped,
    };
    let md = report.markdown();
    println!(
        "\n{}",
        md.split_once("## Ratios")
            .map_or("", |(_, r)| r)
            .split_once("## Scenarios")
            .map_or("", |(r, _)| r)
            .trim()
    );
    write_report(&report, &md, &root.join(&opts.out), &started)
}

fn write_report(report: &Report, md: &str, out: &Path, started: &str) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let stamp: String = started
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    let svg = report.svg();
    for name in [stamp.as_str(), "latest"] {
        for (ext, content) in [("json", json.as_str()), ("md", md), ("svg", svg.as_str())] {
            let path = out.join(format!("{name}.{ext}"));
            std::fs::write(&path, content).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    println!(
        "\nreport: {}/latest.{{md,json,svg}} (and {stamp}.*)",
        out.display()
    );
    Ok(())
}

/// Waits until Redis takes connections.
fn wait_for_redis(port: u16) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            return Err("redis-server did not start".to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Removes the work folder at the end.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_policy_loads_in_the_gateway() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("admin-token"), "t").expect("token");
        std::fs::write(dir.path().join("hmac-secret"), "s").expect("secret");
        std::fs::write(
            dir.path().join(scenarios::API_KEYS_FILE),
            scenarios::api_keys_file(10),
        )
        .expect("keys");
        for s in SCENARIOS {
            let path = dir.path().join(format!("{}.yaml", s.name));
            std::fs::write(
                &path,
                scenarios::portcullis_policy(s, 18080, 19901, 19090, 16379, &root()),
            )
            .expect("policy");
            if let Err(e) = portcullis::config::load_dry_run(&path) {
                panic!("{}: {e}", s.name);
            }
        }
    }

    #[test]
    fn scenario_selection_adds_baselines_and_refuses_unknown_names() {
        let opts = |s: &str| Options::parse_from(["bench", "--scenarios", s]);
        let chosen = selected(&opts("mask-pan-16k")).expect("ok");
        let names: Vec<&str> = chosen.iter().map(|s| s.name).collect();
        assert_eq!(names, ["pass-through-16k", "mask-pan-16k"]);
        assert!(selected(&opts("nope")).is_err());
        assert!(selected(&opts("saml,api-key"))
            .expect("ok")
            .iter()
            .any(|s| s.name == "api-key"));
        assert_eq!(selected(&opts("all")).expect("ok").len(), SCENARIOS.len());
    }
}
