//! Redis URLs as a policy writes them: `redis://[user[:pass]@]host[:port][/db]`,
//! `rediss://` (TLS), `redis+cluster://host1:port,host2:port,...` and
//! `rediss+cluster://...` (Cluster, seed nodes; the client learns the rest).
//!
//! A password may sit in the URL (for a quick local test), but a committed policy names a
//! secret instead (`redis: {password_secret: ...}`), so the URL in a policy file stays
//! printable. Either way `Display` and `Debug` redact the password: a URL is shown in
//! logs, `/healthz`, `check` and errors, and none of them may leak it.

use std::fmt;

use crate::runtime::Secret;

/// The port Redis listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 6379;

/// A parsed Redis URL.
#[derive(Clone)]
pub struct RedisUrl {
    /// `rediss`: TLS to every node.
    pub tls: bool,
    /// Cluster (seed nodes) or one server.
    pub cluster: bool,
    /// host and port of the server, or of each seed node; never empty.
    pub nodes: Vec<(String, u16)>,
    /// The ACL user (`AUTH user pass`); none: the default user.
    pub username: Option<String>,
    /// The password written in the URL, if any (a policy should use a secret instead).
    pub password: Option<Secret>,
    /// The logical database (standalone only: Cluster has just database 0).
    pub db: i64,
}

impl RedisUrl {
    /// Whether `text` is meant as a Redis URL (so its errors are about Redis).
    #[must_use]
    pub fn is_redis(text: &str) -> bool {
        [
            "redis://",
            "rediss://",
            "redis+cluster://",
            "rediss+cluster://",
        ]
        .iter()
        .any(|scheme| text.trim().starts_with(scheme))
    }

    /// Parses one of the four forms.
    ///
    /// # Errors
    /// A message saying what is wrong and what the form is; it never contains the
    /// password.
    pub fn parse(text: &str) -> Result<RedisUrl, String> {
        let text = text.trim();
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("not a Redis URL: {}", redact(text)))?;
        let (tls, cluster) = match scheme {
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis+cluster" => (false, true),
            "rediss+cluster" => (true, true),
            other => {
                return Err(format!(
                    "unknown scheme {other}://: use redis://, rediss://, redis+cluster:// or rediss+cluster://"
                ))
            }
        };
        if rest.contains(['?', '#']) {
            return Err(format!(
                "{scheme}:// takes no query or fragment; set options under redis:"
            ));
        }
        // The credentials end at the last '@' (a password may contain '@' unescaped).
        let (credentials, location) = match rest.rsplit_once('@') {
            Some((credentials, location)) => (Some(credentials), location),
            None => (None, rest),
        };
        let (username, password) = match credentials {
            None => (None, None),
            Some(credentials) => {
                let (user, password) = match credentials.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (credentials, None),
                };
                let user = percent_decode(user).ok_or("the user name is not valid UTF-8")?;
                let password = password
                    .map(|p| percent_decode(p).ok_or("the password is not valid UTF-8"))
                    .transpose()?;
                (
                    Some(user).filter(|u| !u.is_empty()),
                    password.filter(|p| !p.is_empty()).map(|p| Secret::new(&p)),
                )
            }
        };
        let (hosts, db) = match location.split_once('/') {
            None => (location, 0),
            Some((hosts, "")) => (hosts, 0),
            Some((hosts, db)) => (
                hosts,
                db.parse::<i64>()
                    .ok()
                    .filter(|db| *db >= 0)
                    .ok_or_else(|| format!("\"/{db}\" is not a database number"))?,
            ),
        };
        if cluster && db != 0 {
            return Err("Redis Cluster has only database 0: drop the /db".to_owned());
        }
        let nodes = hosts
            .split(',')
            .map(parse_host_port)
            .collect::<Result<Vec<_>, String>>()?;
        if !cluster && nodes.len() > 1 {
            return Err(format!(
                "{scheme}:// names one server; for several Cluster nodes use {scheme}+cluster://"
            ));
        }
        Ok(RedisUrl {
            tls,
            cluster,
            nodes,
            username,
            password,
            db,
        })
    }

    fn scheme(&self) -> &'static str {
        match (self.tls, self.cluster) {
            (false, false) => "redis",
            (true, false) => "rediss",
            (false, true) => "redis+cluster",
            (true, true) => "rediss+cluster",
        }
    }
}

fn parse_host_port(node: &str) -> Result<(String, u16), String> {
    let node = node.trim();
    let (host, port) = if let Some(bracketed) = node.strip_prefix('[') {
        // [v6]:port or [v6]
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("\"{node}\": an IPv6 address needs its closing ]"))?;
        (host, after.strip_prefix(':'))
    } else {
        match node.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (node, None),
        }
    };
    if host.is_empty() {
        return Err("a Redis URL needs a host, e.g. redis://127.0.0.1:6379".to_owned());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("\"{port}\" is not a port"))?,
    };
    Ok((host.to_owned(), port))
}

/// `%XX` escapes decoded (a password may hold `:`, `/` or `@` written escaped).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(byte) = u8::from_str_radix(hex, 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Text that failed to parse, with whatever could be a password hidden.
fn redact(text: &str) -> String {
    match text.rsplit_once('@') {
        Some((_, location)) => format!("***@{location}"),
        None => text.to_owned(),
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme())?;
        match (&self.username, &self.password) {
            (Some(user), Some(_)) => write!(f, "{user}:***@")?,
            (Some(user), None) => write!(f, "{user}@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (None, None) => {}
        }
        for (i, (host, port)) in self.nodes.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if host.contains(':') {
                write!(f, "[{host}]:{port}")?;
            } else {
                write!(f, "{host}:{port}")?;
            }
        }
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

impl PartialEq for RedisUrl {
    fn eq(&self, other: &Self) -> bool {
        self.tls == other.tls
            && self.cluster == other.cluster
            && self.nodes == other.nodes
            && self.username == other.username
            && self.password.as_ref().map(Secret::expose)
                == other.password.as_ref().map(Secret::expose)
            && self.db == other.db
    }
}

impl Eq for RedisUrl {}

#[cfg(test)]
mod tests {
    use super::RedisUrl;

    fn nodes(url: &RedisUrl) -> Vec<String> {
        url.nodes.iter().map(|(h, p)| format!("{h}/{p}")).collect()
    }

    #[test]
    fn the_four_forms_parse() {
        let plain = RedisUrl::parse("redis://10.0.0.5:6380/2").expect("parse");
        assert!(!plain.tls && !plain.cluster);
        assert_eq!(nodes(&plain), ["10.0.0.5/6380"]);
        assert_eq!(plain.db, 2);

        let tls = RedisUrl::parse("rediss://cache.internal").expect("parse");
        assert!(tls.tls);
        assert_eq!(nodes(&tls), ["cache.internal/6379"]);

        let cluster =
            RedisUrl::parse("redis+cluster://10.0.0.1:7000,10.0.0.2,[::1]:7002").expect("parse");
        assert!(cluster.cluster && !cluster.tls);
        assert_eq!(
            nodes(&cluster),
            ["10.0.0.1/7000", "10.0.0.2/6379", "::1/7002"]
        );
        assert_eq!(
            cluster.to_string(),
            "redis+cluster://10.0.0.1:7000,10.0.0.2:6379,[::1]:7002"
        );

        let tls_cluster = RedisUrl::parse("rediss+cluster://a:1,b:2").expect("parse");
        assert!(tls_cluster.tls && tls_cluster.cluster);
    }

    #[test]
    fn a_password_is_decoded_and_never_shown() {
        let url = RedisUrl::parse("redis://gateway:p%40ss:w@rd@127.0.0.1:6379/1").expect("parse");
        assert_eq!(url.username.as_deref(), Some("gateway"));
        assert_eq!(
            url.password.as_ref().map(crate::runtime::Secret::expose),
            Some("p@ss:w@rd")
        );
        for shown in [url.to_string(), format!("{url:?}")] {
            assert!(!shown.contains("ss:w"), "{shown}");
            assert!(shown.contains("gateway:***@127.0.0.1:6379/1"), "{shown}");
        }
        let only_password = RedisUrl::parse("redis://:hunter2@h").expect("parse");
        assert_eq!(only_password.username, None);
        assert_eq!(only_password.to_string(), "redis://:***@h:6379");
    }

    #[test]
    fn mistakes_are_explained_without_the_password() {
        for (text, expected) in [
            ("redis+cluster://a:1,b:2/3", "only database 0"),
            ("redis://a:1,b:2", "use redis+cluster://"),
            ("redis://h:99999", "is not a port"),
            ("redis://h/x", "not a database number"),
            ("redis://", "needs a host"),
            ("redis://h?protocol=resp3", "no query"),
            ("valkey://h", "unknown scheme"),
            ("redis://[::1", "closing ]"),
        ] {
            let error = RedisUrl::parse(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
        let error = RedisUrl::parse("redis://u:topsecret@h:1/x").expect_err("db");
        assert!(!error.contains("topsecret"), "{error}");
    }
}
