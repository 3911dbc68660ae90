//! Processes under test: start pinned to a CPU, wait until they answer, read their CPU time
//! and peak memory from `/proc`, stop them (and everything they started) at the end.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now, on 127.0.0.1.
///
/// # Panics
/// When no port can be bound at all.
#[must_use]
#[allow(clippy::expect_used)]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A started process, stopped (with its children) on drop.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Starts `program args...` pinned to `cpu` with `taskset`, output to `log`.
    ///
    /// # Errors
    /// The program cannot be started.
    pub fn start(
        name: &str,
        cpu: u32,
        program: &str,
        args: &[&str],
        log: &Path,
    ) -> std::io::Result<Proc> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = Command::new("taskset")
            .arg("-c")
            .arg(cpu.to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        Ok(Proc {
            name: name.to_owned(),
            child,
        })
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.pid();
        for p in tree(pid).into_iter().rev() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(p.to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The process and its descendants (nginx and HAProxy work in child processes).
#[must_use]
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        all.extend(children(parent));
        i += 1;
    }
    all
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            stat_fields(*p)
                .is_some_and(|f| f.get(1).and_then(|s| s.parse::<u32>().ok()) == Some(pid))
        })
        .collect()
}

/// `/proc/PID/stat` after the command name: field 3 (state) first.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = text.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// Clock ticks per second for `/proc` CPU times.
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process tree so far.
#[must_use]
pub fn cpu_seconds(pid: u32) -> f64 {
    let hz = ticks_per_second();
    tree(pid)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| {
            // utime and stime are fields 14 and 15 of stat: 11 and 12 after the name.
            let n = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
            (n(11) + n(12)) / hz
        })
        .sum()
}

/// Peak resident memory (VmHWM) of a process tree, KiB.
#[must_use]
pub fn peak_rss_kib(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// Waits until `GET path` on `addr` answers `expect`.
///
/// # Errors
/// Nothing answered that way in time.
pub fn wait_for(addr: SocketAddr, path: &str, expect: u16) -> Result<(), String> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).is_ok() {
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf) {
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    if head.split(' ').nth(1) == Some(&expect.to_string()) {
                        return Ok(());
                    }
                    last = head.lines().next().unwrap_or_default().to_owned();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "{addr}{path} did not answer {expect} (last: {last})"
    ))
}

/// The first line of a command's output (versions for the report), or `not found`.
#[must_use]
pub fn version_of(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        }
        Err(_) => "not found".to_owned(),
    }
}

/// True when `program` is on PATH.
#[must_use]
pub fn on_path(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}
