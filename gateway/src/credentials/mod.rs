//! Credential forwarding control: whether the caller's credentials reach a service's
//! upstream.
//!
//! A proxy that strips `Authorization` breaks API calls that need it; one that forwards it
//! everywhere leaks credentials. So each service decides, once per request, after its
//! request pipeline passed ([`CredentialPolicy::decide`]):
//!
//! - **pass through**: no step authenticates callers and the policy says nothing; the head
//!   goes upstream as the pipeline left it (the behaviour before `credentials:` existed);
//! - **strip**: the caller's `Authorization`, `Proxy-Authorization`, whatever an
//!   authenticating step read (its header, its query parameters) and the configured
//!   headers, cookies and query parameters never reach the upstream. The default once a step
//!   authenticates the caller, and what `forward` falls back to when a condition fails;
//! - **forward**: every condition holds (upstream host, client CIDR, group, variables), so
//!   the caller's credentials go upstream unchanged.
//!
//! Values the caller sent are captured before the pipeline runs ([`CredentialPolicy::capture`]),
//! so stripping removes those and never a value a step wrote (`set_header: Authorization`,
//! an injected token); `sign_hmac` signs after stripping (see `proxy/upstream.rs`).

mod strip;

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use portcullis_assertions::ip::IpList;
use portcullis_assertions::template::Source;
use portcullis_assertions::{Exchange, RequestView};

pub use strip::{without_cookies, without_query_params};

/// Most places one service may treat as credentials (each is a bit in [`CredentialOutcome`]).
pub const MAX_PLACES: usize = 64;

/// One place a caller's credential can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Every value of a header the caller sent.
    Header(HeaderName),
    /// A cookie, by name (compared without regard to ASCII case, after percent-decoding).
    Cookie(String),
    /// A query parameter, by name (form-decoded, without regard to ASCII case).
    QueryParam(String),
}

impl Place {
    /// `authorization`, `cookie session`, `query api_key`: for logs and `eval`.
    #[must_use]
    pub fn label(&self) -> String {
        match self {
            Place::Header(name) => name.as_str().to_owned(),
            Place::Cookie(name) => format!("cookie {name}"),
            Place::QueryParam(name) => format!("query {name}"),
        }
    }
}

/// What a service does with the caller's credentials.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Nothing authenticates callers and the policy has no `credentials:`.
    PassThrough,
    /// Always strip, for the reason the rule names.
    Strip(Rule),
    /// Forward when every condition holds; the rule names the forwarding itself.
    Forward {
        conditions: Vec<Condition>,
        rule: Rule,
    },
}

/// A named rule, as the access log, `eval` and the metric show it.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `authenticated`, `strip`, `when.client_cidrs`, `always`, ...
    pub name: Arc<str>,
    /// Why, for `eval` and the log's hint.
    pub why: Arc<str>,
    /// `portcullis_credentials_stripped_total` for this service and rule.
    pub stripped: Option<prometheus::IntCounter>,
}

impl Rule {
    #[must_use]
    pub fn new(name: &str, why: &str) -> Rule {
        Rule {
            name: Arc::from(name),
            why: Arc::from(why),
            stripped: None,
        }
    }
}

/// One `when:` condition of `credentials: forward`.
#[derive(Debug, Clone)]
pub struct Condition {
    /// What failing this condition is called: `when.client_cidrs`.
    pub rule: Rule,
    pub test: Test,
}

/// What a condition checks.
#[derive(Debug, Clone)]
pub enum Test {
    /// The service's upstream host is one of the listed ones: known when the policy loads.
    UpstreamHost { holds: bool },
    /// The client address (after trusted-proxy handling) is in one of the blocks.
    ClientCidr(IpList),
    /// A variable holding a comma-separated group list names one of these groups.
    Groups { source: Source, any_of: Vec<String> },
    /// A variable equals one of these values.
    Equals { source: Source, one_of: Vec<String> },
}

impl Test {
    /// A variable that is not set fails every test: forwarding needs a reason.
    fn holds(&self, req: &dyn RequestView, x: &Exchange) -> bool {
        match self {
            Test::UpstreamHost { holds } => *holds,
            Test::ClientCidr(blocks) => blocks.contains(x.client_ip),
            Test::Groups { source, any_of } => source.value(req, x).is_some_and(|groups| {
                groups
                    .split(',')
                    .map(str::trim)
                    .any(|group| any_of.iter().any(|wanted| wanted == group))
            }),
            Test::Equals { source, one_of } => source
                .value(req, x)
                .is_some_and(|value| one_of.iter().any(|wanted| **wanted == *value)),
        }
    }
}

/// A service's compiled `credentials:` (or its default).
#[derive(Debug, Clone)]
pub struct CredentialPolicy {
    pub mode: Mode,
    /// Where the caller's credentials can be, at most [`MAX_PLACES`].
    places: Vec<Place>,
    /// The cookie and query-parameter places by their index, so a request allocates no list.
    cookies: Vec<(usize, String)>,
    query_params: Vec<(usize, String)>,
}

impl Default for CredentialPolicy {
    fn default() -> Self {
        CredentialPolicy::new(Mode::PassThrough, Vec::new())
    }
}

/// The header values the caller sent in credential headers, before any step ran.
#[derive(Debug, Clone, Default)]
pub struct CallerHeaders(Vec<(usize, HeaderValue)>);

/// What the policy decided for one request.
#[derive(Debug, Clone, Default)]
pub enum Decision {
    #[default]
    PassThrough,
    Forward(Rule),
    Strip(Rule),
}

/// The decision with what it needs at the upstream: the caller's own header values.
#[derive(Debug, Clone, Default)]
pub struct CredentialPlan {
    pub decision: Decision,
    caller: CallerHeaders,
    /// For `eval`: how each condition went.
    pub notes: Vec<String>,
}

/// What happened to the caller's credentials on the way up, when it had any.
#[derive(Debug, Clone)]
pub struct CredentialOutcome {
    pub stripped: bool,
    pub rule: Rule,
    /// Bit `i` set: `places[i]` was present (and, when stripped, removed).
    pub places: u64,
}

fn bit(index: usize) -> u64 {
    1u64.checked_shl(u32::try_from(index).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

impl CredentialPolicy {
    /// A policy over `places` (at most [`MAX_PLACES`]; more are never looked at).
    #[must_use]
    pub fn new(mode: Mode, mut places: Vec<Place>) -> Self {
        places.truncate(MAX_PLACES);
        let named = |cookie: bool| {
            places
                .iter()
                .enumerate()
                .filter_map(|(index, place)| match place {
                    Place::Cookie(name) if cookie => Some((index, name.clone())),
                    Place::QueryParam(name) if !cookie => Some((index, name.clone())),
                    _ => None,
                })
                .collect()
        };
        CredentialPolicy {
            cookies: named(true),
            query_params: named(false),
            mode,
            places,
        }
    }

    /// Where the caller's credentials can be.
    #[must_use]
    pub fn places(&self) -> &[Place] {
        &self.places
    }

    /// The caller's values of every credential header, taken before the pipeline runs
    /// (nothing is kept when the policy passes everything through).
    #[must_use]
    pub fn capture(&self, req: &dyn RequestView) -> CallerHeaders {
        if matches!(self.mode, Mode::PassThrough) {
            return CallerHeaders::default();
        }
        let mut caller = Vec::new();
        for (index, place) in self.places.iter().enumerate() {
            if let Place::Header(name) = place {
                for value in req.headers().get_all(name) {
                    caller.push((index, value.clone()));
                }
            }
        }
        CallerHeaders(caller)
    }

    /// Decides for a request whose pipeline passed. When the exchange keeps a trace
    /// (`eval`), the plan's notes say how each condition went.
    #[must_use]
    pub fn decide(
        &self,
        caller: CallerHeaders,
        req: &dyn RequestView,
        x: &Exchange,
    ) -> CredentialPlan {
        let mut notes = Vec::new();
        let decision = match &self.mode {
            Mode::PassThrough => Decision::PassThrough,
            Mode::Strip(rule) => Decision::Strip(rule.clone()),
            Mode::Forward { conditions, rule } => {
                let mut failed = None;
                for condition in conditions {
                    let holds = condition.test.holds(req, x);
                    if x.tracing() {
                        let mark = if holds { "holds" } else { "fails" };
                        // The address is the one input eval can vary (--client-ip).
                        let client = match condition.test {
                            Test::ClientCidr(_) => format!(" (client {})", x.client_ip),
                            _ => String::new(),
                        };
                        notes.push(format!(
                            "{} {mark}: {}{client}",
                            condition.rule.name, condition.rule.why
                        ));
                    }
                    if !holds {
                        failed = Some(condition.rule.clone());
                        break;
                    }
                }
                failed.map_or_else(|| Decision::Forward(rule.clone()), Decision::Strip)
            }
        };
        CredentialPlan {
            decision,
            caller,
            notes,
        }
    }

    /// Resolves each stripping rule's counter for `service`.
    pub fn count_in(&mut self, metrics: &crate::metrics::Metrics, service: &str) {
        let resolve = |rule: &mut Rule| {
            rule.stripped = Some(metrics.credentials_stripped(service, &rule.name));
        };
        match &mut self.mode {
            Mode::PassThrough => {}
            Mode::Strip(rule) => resolve(rule),
            Mode::Forward { conditions, .. } => {
                conditions.iter_mut().for_each(|c| resolve(&mut c.rule));
            }
        }
    }

    /// Labels of the places whose bits are set in `places`.
    #[must_use]
    pub fn labels(&self, places: u64) -> Vec<String> {
        self.places
            .iter()
            .enumerate()
            .filter(|(index, _)| places & bit(*index) != 0)
            .map(|(_, place)| place.label())
            .collect()
    }
}

impl CredentialPlan {
    /// Applies the decision to the head about to go upstream: strips the caller's
    /// credentials, or notes which ones go up. `None` when the policy passes everything
    /// through or the caller sent no credential.
    ///
    /// # Errors
    /// A stripped query that no longer makes a valid request target (it always should).
    pub fn apply(
        &self,
        policy: &CredentialPolicy,
        head: &mut RequestHeader,
    ) -> pingora::Result<Option<CredentialOutcome>> {
        let (stripped, rule) = match &self.decision {
            Decision::PassThrough => return Ok(None),
            Decision::Forward(rule) => (false, rule),
            Decision::Strip(rule) => (true, rule),
        };
        let places = if stripped {
            self.strip(policy, head)?
        } else {
            self.present(policy, head)
        };

        Ok((places != 0).then(|| CredentialOutcome {
            stripped,
            rule: rule.clone(),
            places,
        }))
    }

    fn strip(&self, policy: &CredentialPolicy, head: &mut RequestHeader) -> pingora::Result<u64> {
        let mut removed = 0;
        for (index, place) in policy.places.iter().enumerate() {
            if let Place::Header(name) = place {
                if self.strip_header(index, name, head)? {
                    removed |= bit(index);
                }
            }
        }
        if !policy.cookies.is_empty() {
            removed |= strip_cookies(&policy.cookies, head)?;
        }
        if !policy.query_params.is_empty() {
            if let Some((query, found)) = head
                .uri
                .query()
                .and_then(|q| without_query_params(q, &policy.query_params))
            {
                let mut target = head.uri.path().to_owned();
                if !query.is_empty() {
                    target.push('?');
                    target.push_str(&query);
                }
                let uri = target.parse::<http::Uri>().map_err(|_| {
                    pingora::Error::explain(
                        pingora::ErrorType::InvalidHTTPHeader,
                        "bad upstream path after removing credentials",
                    )
                })?;
                head.set_uri(uri);
                removed |= found;
            }
        }
        Ok(removed)
    }

    /// Removes the caller's values of one header, keeping any a step wrote.
    fn strip_header(
        &self,
        index: usize,
        name: &HeaderName,
        head: &mut RequestHeader,
    ) -> pingora::Result<bool> {
        let sent_by_caller = |value: &HeaderValue| {
            self.caller
                .0
                .iter()
                .any(|(at, sent)| *at == index && sent == value)
        };
        if !head.headers.get_all(name).iter().any(sent_by_caller) {
            return Ok(false);
        }
        // Usually empty: then nothing is allocated.
        let kept: Vec<HeaderValue> = head
            .headers
            .get_all(name)
            .iter()
            .filter(|value| !sent_by_caller(value))
            .cloned()
            .collect();
        head.remove_header(name);
        for value in kept {
            head.append_header(name.clone(), value)?;
        }
        Ok(true)
    }
}

/// Removes the named cookies from every `Cookie` line (a line left empty goes).
fn strip_cookies(names: &[(usize, String)], head: &mut RequestHeader) -> pingora::Result<u64> {
    let cookie = http::header::COOKIE;
    let mut removed = 0;
    let mut lines = Vec::new();
    for line in head.headers.get_all(&cookie) {
        let text = String::from_utf8_lossy(line.as_bytes());
        match without_cookies(&text, names) {
            Some((rest, found)) => {
                removed |= found;
                if !rest.is_empty() {
                    lines.push(HeaderValue::from_str(&rest).map_err(|_| {
                        pingora::Error::explain(
                            pingora::ErrorType::InvalidHTTPHeader,
                            "bad Cookie after removing credentials",
                        )
                    })?);
                }
            }
            None => lines.push(line.clone()),
        }
    }
    if removed != 0 {
        head.remove_header(&cookie);
        for line in lines {
            head.append_header(cookie.clone(), line)?;
        }
    }
    Ok(removed)
}

impl CredentialPlan {
    /// Which of the caller's credentials are in `head` (for a forwarded request's log
    /// line): a header counts when a value the caller sent is still there, not one a step
    /// wrote.
    fn present(&self, policy: &CredentialPolicy, head: &RequestHeader) -> u64 {
        let mut found = 0;
        for (index, place) in policy.places.iter().enumerate() {
            if let Place::Header(name) = place {
                let sent = head.headers.get_all(name).iter().any(|value| {
                    self.caller
                        .0
                        .iter()
                        .any(|(at, sent)| *at == index && sent == value)
                });
                if sent {
                    found |= bit(index);
                }
            }
        }
        // One pass over each Cookie line and over the query, for all names at once.
        if !policy.cookies.is_empty() {
            for line in head.headers.get_all(http::header::COOKIE) {
                let text = String::from_utf8_lossy(line.as_bytes());
                if let Some((_, bits)) = without_cookies(&text, &policy.cookies) {
                    found |= bits;
                }
            }
        }
        if let Some(query) = head.uri.query().filter(|_| !policy.query_params.is_empty()) {
            if let Some((_, bits)) = without_query_params(query, &policy.query_params) {
                found |= bits;
            }
        }
        found
    }
}

impl CredentialOutcome {
    /// The access log's hint when the upstream refused a request whose credentials the
    /// gateway stripped: the answer to "why am I unauthenticated through the gateway".
    #[must_use]
    pub fn hint(&self, status: u16, policy: &CredentialPolicy) -> Option<String> {
        if !self.stripped || !matches!(status, 401 | 403) {
            return None;
        }
        Some(format!(
            "the upstream answered {status} to a request the gateway had stripped of the caller's credentials ({}) under rule {}: {}; to let them through, give the service `credentials: forward` with conditions this request meets",
            policy.labels(self.places).join(", "),
            self.rule.name,
            self.rule.why
        ))
    }
}

#[cfg(test)]
mod tests;
