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

/// A wrk script sending `count` GETs to `/?n=N` (`N` from `first`), each signed afresh
/// with AWS SigV4 (the scenarios' key, signed now), then the [`DONE_SCRIPT`] hook. The
/// warm-up and the measured run get scripts with different `first`, so the measured run
/// replays nothing the warm-up sent. The signatures are made here,
/// before the run, so wrk only picks the next one; they travel as one long string because
/// LuaJIT limits the constants of one function. Past `count`, requests repeat (and are
/// refused as replays: counted as non-2xx).
///
/// # Errors
/// A request could not be signed.
pub fn unique_sigv4_script(port: u16, first: usize, count: usize) -> Result<String, String> {
    use portcullis_assertions::hmac::sign::{sign_sigv4, SigV4Params};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let params = SigV4Params {
        access_key: "AKIDBENCH",
        secret: super::scenarios::HMAC_SECRET.as_bytes(),
        region: "eu-west-1",
        service: "bench",
        content_sha256_header: false,
        normalize_path: true,
    };
    let mut signatures = String::with_capacity(count * 64);
    let (mut prefix, mut date) = (String::new(), String::new());
    let count = count.max(1);
    for n in first..first + count {
        let (mut parts, ()) = http::Request::get(format!("http://127.0.0.1:{port}/?n={n}"))
            .header("host", format!("127.0.0.1:{port}"))
            .body(())
            .map_err(|e| e.to_string())?
            .into_parts();
        sign_sigv4(&mut parts, b"", &params, now)?;
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| format!("the signer set no {name}"))
        };
        let authorization = header("authorization")?;
        let (head, signature) = authorization
            .rsplit_once("Signature=")
            .ok_or("no signature")?;
        if n == first {
            prefix = format!("{head}Signature=");
            date = header("x-amz-date")?;
        }
        signatures.push_str(signature);
    }
    Ok(format!(
        "local signatures = [[{signatures}]]\nlocal count = {count}\nlocal n = 0\n\
         request = function()\n  local i = n % count\n  n = n + 1\n  \
         return wrk.format(\"GET\", \"/?n=\" .. ({first} + i), {{[\"Authorization\"] = \"{prefix}\" .. \
         string.sub(signatures, i * 64 + 1, i * 64 + 64), [\"X-Amz-Date\"] = \"{date}\"}})\nend\n{DONE_SCRIPT}"
    ))
}

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
