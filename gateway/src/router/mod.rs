//! Service selection. A request's route is chosen in this order:
//!
//! 1. **Host**: the routes for its exact host (port ignored, case-insensitive), then those
//!    of the longest matching `*.suffix` wildcard, then the routes for any host. A group
//!    with no route for the request falls through to the next.
//! 2. **Path**, within a group: segment by segment, a literal segment beats a `{param}`,
//!    which beats the end of a prefix; a path that ends where an exact route ends takes it
//!    before a prefix ending there. So `/orders/new` beats `/orders/{id}`, which beats
//!    `/orders`, and `/` is the last resort.
//! 3. **Conditions**, among routes with the same path: the one asking more (a method list,
//!    each header, each query parameter count one) first; a route whose conditions fail is
//!    skipped for the next candidate.
//!
//! Two routes that could take the same request at the same precedence are a `check` error
//! (see [`crate::config`]), so the choice never depends on the order of the policy.
//!
//! Paths are matched in their routing form ([`crate::path::CanonicalPath::routing`]), so an
//! escape, a `;` parameter or a doubled slash cannot carry a request past a route. Finding a
//! route costs one tree step per path segment and one hash lookup per host label, whatever
//! the number of services, and allocates nothing.

mod conditions;
mod pattern;
mod tree;

use std::collections::HashMap;

pub use conditions::{form_decode, Conditions, RouteRequest};
pub use pattern::{path_segments, Pattern, Segment, Tail, MAX_PARAMS};
pub use tree::Entry;
use tree::PathTree;

/// Longest host name looked up (DNS allows 253 characters).
const MAX_HOST: usize = 255;

#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<Box<str>, PathTree>,
    /// Keyed by the suffix with its dot: `.example.com` for `*.example.com`.
    wildcard: HashMap<Box<str>, PathTree>,
    any_host: PathTree,
}

/// Lower-cases a host and drops a port and trailing dots.
#[must_use]
pub fn normalize_host(host: &str) -> String {
    let mut buffer = [0; MAX_HOST];
    normalized_host(host, &mut buffer).map_or_else(|| host.to_ascii_lowercase(), str::to_owned)
}

/// [`normalize_host`] into a caller's buffer, so routing allocates nothing. `None` for a host
/// longer than any name can be.
fn normalized_host<'b>(host: &str, buffer: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let host = host.trim();
    let without_port = if let Some(end) = host.strip_prefix('[').and_then(|h| h.find(']')) {
        &host[..end + 2]
    } else if host.bytes().filter(|&b| b == b':').count() == 1 {
        host.split(':').next().unwrap_or(host)
    } else {
        host
    };
    let name = without_port.trim_end_matches('.').as_bytes();
    let target = buffer.get_mut(..name.len())?;
    for (out, byte) in target.iter_mut().zip(name) {
        *out = byte.to_ascii_lowercase();
    }
    std::str::from_utf8(target).ok()
}

/// The route a request took.
pub struct RouteMatch<'r> {
    pub service: usize,
    pub entry: &'r Entry,
}

impl Router {
    /// Adds a route; `host` is `None` for any host, `*.suffix` for a wildcard.
    pub fn add(&mut self, host: Option<&str>, entry: Entry) {
        let tree = match host.map(normalize_host) {
            None => &mut self.any_host,
            Some(host) => match host.strip_prefix('*') {
                Some(suffix) => self.wildcard.entry(suffix.into()).or_default(),
                None => self.exact.entry(host.into()).or_default(),
            },
        };
        tree.insert(entry);
    }

    /// The route for a request, if any.
    #[must_use]
    pub fn route<'r>(&'r self, request: &RouteRequest<'_>) -> Option<RouteMatch<'r>> {
        let found = self
            .by_host(request)
            .or_else(|| self.any_host.find(request))?;
        Some(RouteMatch {
            service: found.service,
            entry: found,
        })
    }

    fn by_host(&self, request: &RouteRequest<'_>) -> Option<&Entry> {
        // Without host-specific routes there is nothing to look the host up for.
        if self.exact.is_empty() && self.wildcard.is_empty() {
            return None;
        }
        let mut buffer = [0; MAX_HOST];
        let host = normalized_host(request.host?, &mut buffer)?;
        if let Some(found) = self.exact.get(host).and_then(|tree| tree.find(request)) {
            return Some(found);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        // Longest suffix first: from the dot after the first label rightwards.
        host.match_indices('.')
            .filter(|(index, _)| *index > 0)
            .filter_map(|(index, _)| self.wildcard.get(&host[index..]))
            .find_map(|tree| tree.find(request))
    }

    /// Gives back growth slack once every route is in.
    pub fn shrink_to_fit(&mut self) {
        self.exact.shrink_to_fit();
        self.wildcard.shrink_to_fit();
        for tree in self
            .exact
            .values_mut()
            .chain(self.wildcard.values_mut())
            .chain(std::iter::once(&mut self.any_host))
        {
            tree.shrink_to_fit();
        }
    }

    /// The service for a GET without headers or query, for tests.
    #[cfg(test)]
    #[must_use]
    pub fn route_path(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let headers = http::HeaderMap::new();
        let request = RouteRequest {
            host,
            path,
            method: &http::Method::GET,
            headers: &headers,
            query: None,
        };
        self.route(&request).map(|found| found.service)
    }

    /// Whether no route was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.any_host.is_empty()
            && self.exact.values().all(PathTree::is_empty)
            && self.wildcard.values().all(PathTree::is_empty)
    }
}

#[cfg(test)]
mod tests;
