//! Looking up an upstream's host name: first in the policy's `hosts_file` (hosts(5) format,
//! read afresh at each lookup, so editing it moves traffic without a reload), then the
//! system resolver.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;

/// The addresses `host` has in the hosts file at `path` (`None`: the file does not name it).
///
/// # Errors
/// The file cannot be read, is not a regular file, or is larger than 1 MiB.
pub fn from_hosts_file(path: &Path, host: &str, port: u16) -> io::Result<Option<Vec<SocketAddr>>> {
    let text = crate::files::read_bounded(path, crate::files::FileKind::Hosts)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let text = String::from_utf8_lossy(&text);
    Ok(parse_hosts(&text, host, port))
}

fn parse_hosts(text: &str, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if fields.any(|name| name.eq_ignore_ascii_case(host)) {
            found.push(SocketAddr::new(ip, port));
        }
    }
    (!found.is_empty()).then_some(found)
}

/// Every address of `host` (an IP literal is its own), blocking: for loading a policy.
///
/// # Errors
/// The hosts file cannot be read, or the name does not resolve.
pub fn lookup_blocking(
    host: &str,
    port: u16,
    hosts_file: Option<&Path>,
) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if let Some(path) = hosts_file {
        if let Some(found) = from_hosts_file(path, host, port)? {
            return Ok(found);
        }
    }
    let found: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    if found.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no address"));
    }
    Ok(found)
}

/// [`lookup_blocking`] off the async threads.
///
/// # Errors
/// As [`lookup_blocking`].
pub async fn lookup(
    host: String,
    port: u16,
    hosts_file: Option<std::path::PathBuf>,
) -> io::Result<Vec<SocketAddr>> {
    tokio::task::spawn_blocking(move || lookup_blocking(&host, port, hosts_file.as_deref()))
        .await
        .map_err(|_| io::Error::other("lookup stopped"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lines_match_any_alias_case_insensitively_and_skip_comments() {
        let text = "# pool\n10.0.0.1 orders.internal orders\n10.0.0.2\tORDERS.internal # second\n#10.0.0.3 orders.internal\n::1 other\n";
        let found = parse_hosts(text, "orders.internal", 8080).expect("named");
        assert_eq!(
            found,
            [
                SocketAddr::from(([10, 0, 0, 1], 8080)),
                SocketAddr::from(([10, 0, 0, 2], 8080))
            ]
        );
        assert_eq!(parse_hosts(text, "orders", 80).map(|f| f.len()), Some(1));
        assert_eq!(parse_hosts(text, "missing", 80), None);
    }
}
