//! Driving `wrk` and reading what it measured. A small Lua `done` hook prints the
//! percentiles (p50, p99, p99.9 in µs), the request count and the error counts on lines of
//! their own, so nothing depends on wrk's human-readable units.

use std::path::Path;
use std::process::Command;

/// The hook wrk runs at the end.
pub const DONE_SCRIPT: &str = r#"done = function(summary, latency, requests)
  io.write(string.format("BENCH latency_us %d %d %d\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
  io.write(string.format("BENCH requests %d %d\n", summary.requests, summary.duration))
  io.write(string.format("BENCH errors %d %d %d %d %d\n", summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout))
end
"#;

/// One load run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    pub requests: u64,
    /// Seconds the run took, as wrk counted it.
    pub seconds: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
    /// Answers that were not 2xx or 3xx.
    pub non_2xx: u64,
}

impl Measured {
    #[must_use]
    pub fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Reads the hook's lines out of wrk's output.
///
/// # Errors
/// The lines are missing (wrk failed, or the hook did not run).
pub fn parse(out: &str) -> Result<Measured, String> {
    let mut m = Measured::default();
    let mut seen = 0;
    for line in out.lines() {
        let mut w = line.split_whitespace();
        if w.next() != Some("BENCH") {
            continue;
        }
        let what = w.next();
        let nums: Vec<u64> = w.filter_map(|n| n.parse().ok()).collect();
        match (what, nums.as_slice()) {
            (Some("latency_us"), [a, b, c]) => {
                (m.p50_us, m.p99_us, m.p999_us) = (*a, *b, *c);
                seen += 1;
            }
            (Some("requests"), [n, d]) => {
                m.requests = *n;
                m.seconds = *d as f64 / 1e6;
                seen += 1;
            }
            (Some("errors"), [c, r, wr, status, t]) => {
                m.socket_errors = c + r + wr + t;
                m.non_2xx = *status;
                seen += 1;
            }
            _ => {}
        }
    }
    if seen == 3 {
        Ok(m)
    } else {
        Err(format!("wrk printed no results:\n{out}"))
    }
}

/// Runs wrk pinned to `cpu` against `url` with `headers`.
///
/// # Errors
/// wrk could not run or printed no results.
pub fn run(
    cpu: u32,
    connections: u32,
    seconds: u64,
    url: &str,
    headers: &[String],
    script: &Path,
) -> Result<Measured, String> {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(cpu.to_string())
        .arg("wrk")
        .arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout")
        .arg("5s")
        .arg("-s")
        .arg(script);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    let out = cmd
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    parse(&String::from_utf8_lossy(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_lines_are_read() {
        let out = "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 10 connections\n\
            BENCH latency_us 812 2500 4100\nBENCH requests 70000 2000150\nBENCH errors 0 1 0 3 2\n";
        let m = parse(out).expect("parsed");
        assert_eq!((m.p50_us, m.p99_us, m.p999_us), (812, 2500, 4100));
        assert_eq!(m.requests, 70000);
        assert!((m.rps() - 34_997.4).abs() < 1.0, "{}", m.rps());
        assert_eq!((m.socket_errors, m.non_2xx), (3, 3));
        assert!(parse("unable to connect").is_err());
    }
}
