//! Service selection: host first (exact, then `*.suffix` wildcard, then any host), then the
//! longest path prefix on segment boundaries within that host group. A host group with no
//! matching prefix falls through to the less specific groups.
//!
//! Paths are matched in their routing form ([`crate::path::CanonicalPath::routing`]), so an
//! escape, a `;` parameter or a doubled slash cannot carry a request past a prefix.

use std::collections::HashMap;

use crate::path::{prefix_matches, PathCase};

/// One `match:` entry.
#[derive(Debug, Clone)]
struct Route {
    prefix: String,
    case: PathCase,
    service: usize,
}

#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, Vec<Route>>,
    /// `(".example.com", routes)` for `*.example.com`.
    wildcard: Vec<(String, Vec<Route>)>,
    any_host: Vec<Route>,
}

/// Lower-cases a host and drops a port.
#[must_use]
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if let Some(end) = host.strip_prefix('[').and_then(|h| h.find(']')) {
        &host[..end + 2]
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or(host)
    } else {
        host
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

impl Router {
    /// Adds a service; `host` is `None` for any host.
    pub fn add(&mut self, host: Option<&str>, prefix: &str, case: PathCase, service: usize) {
        let route = Route {
            prefix: prefix.to_owned(),
            case,
            service,
        };
        let list = match host.map(normalize_host) {
            None => &mut self.any_host,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => {
                    let suffix = suffix.to_owned();
                    if let Some(i) = self.wildcard.iter().position(|(s, _)| *s == suffix) {
                        &mut self.wildcard[i].1
                    } else {
                        self.wildcard.push((suffix, Vec::new()));
                        let last = self.wildcard.len() - 1;
                        &mut self.wildcard[last].1
                    }
                }
                None => self.exact.entry(h).or_default(),
            },
        };
        list.push(route);
        list.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        self.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
    }

    /// The service for this host and path (in its routing form), if any.
    #[must_use]
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let find = |routes: &[Route]| {
            routes
                .iter()
                .find(|r| prefix_matches(&r.prefix, path, r.case))
                .map(|r| r.service)
        };
        // Without host-specific routes there is nothing to normalise the host for.
        let by_host = !self.exact.is_empty() || !self.wildcard.is_empty();
        if let Some(host) = host.filter(|_| by_host).map(normalize_host) {
            if let Some(s) = self.exact.get(&host).and_then(|r| find(r)) {
                return Some(s);
            }
            for (suffix, routes) in &self.wildcard {
                if host.ends_with(suffix.as_str()) && host.len() > suffix.len() {
                    if let Some(s) = find(routes) {
                        return Some(s);
                    }
                }
            }
        }
        find(&self.any_host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_then_longest_prefix() {
        let mut r = Router::default();
        let sensitive = PathCase::Sensitive;
        r.add(None, "/", sensitive, 0);
        r.add(None, "/widgets", sensitive, 1);
        r.add(None, "/widgets/admin", sensitive, 2);
        r.add(Some("API.example.com"), "/widgets", sensitive, 3);
        r.add(Some("*.example.com"), "/", sensitive, 4);
        assert_eq!(r.route(Some("other"), "/widgets/7"), Some(1));
        assert_eq!(r.route(Some("other"), "/widgets/admin/x"), Some(2));
        assert_eq!(r.route(Some("other"), "/widgetsx"), Some(0));
        assert_eq!(r.route(Some("api.example.com:8443"), "/widgets"), Some(3));
        // Exact host group without a matching prefix falls through to the wildcard.
        assert_eq!(r.route(Some("api.example.com"), "/other"), Some(4));
        assert_eq!(r.route(Some("eu.example.com"), "/widgets"), Some(4));
        assert_eq!(r.route(Some("example.com"), "/x"), Some(0));
        assert_eq!(r.route(None, "/widgets/admin"), Some(2));
    }

    #[test]
    fn no_route_without_a_catch_all() {
        let mut r = Router::default();
        r.add(Some("a.test"), "/v1", PathCase::Sensitive, 0);
        assert_eq!(r.route(Some("a.test"), "/v2"), None);
        assert_eq!(r.route(Some("b.test"), "/v1"), None);
    }

    #[test]
    fn case_insensitive_routes_match_any_case() {
        let mut r = Router::default();
        r.add(None, "/", PathCase::Sensitive, 0);
        r.add(None, "/Private", PathCase::Insensitive, 1);
        r.add(None, "/public", PathCase::Sensitive, 2);
        assert_eq!(r.route(None, "/PRIVATE/x"), Some(1));
        assert_eq!(r.route(None, "/private"), Some(1));
        assert_eq!(r.route(None, "/privatex"), Some(0));
        assert_eq!(r.route(None, "/PUBLIC"), Some(0));
    }

    #[test]
    fn hosts_normalize() {
        assert_eq!(normalize_host("Example.COM:80"), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("example.com."), "example.com");
    }
}
