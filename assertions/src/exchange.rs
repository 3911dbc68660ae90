//! Per-request state shared by the steps of a pipeline.
//!
//! Variables are interned to small integer ids when the policy is compiled
//! ([`VarRegistry`]), so a request carries a flat slot vector rather than a string map.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::verdict::Verdict;

/// A compiled reference to a named variable such as `client.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VarId(pub u16);

/// The names of the variables steps can set, fixed when a policy is compiled.
#[derive(Debug, Clone, Default)]
pub struct VarRegistry {
    names: Vec<Arc<str>>,
}

/// Variables every policy knows, whether or not a step sets them.
pub const WELL_KNOWN: &[&str] = &["client.id"];

/// The id of `client.id` in every registry.
pub const CLIENT_ID: VarId = VarId(0);

impl VarRegistry {
    #[must_use]
    pub fn new() -> Self {
        let mut r = VarRegistry::default();
        for name in WELL_KNOWN {
            r.define(name);
        }
        r
    }

    /// The id for `name`, allocating one on first use.
    pub fn define(&mut self, name: &str) -> VarId {
        if let Some(id) = self.lookup(name) {
            return id;
        }
        self.names.push(Arc::from(name));
        VarId(u16::try_from(self.names.len() - 1).unwrap_or(u16::MAX))
    }

    #[must_use]
    pub fn lookup(&self, name: &str) -> Option<VarId> {
        self.names
            .iter()
            .position(|n| &**n == name)
            .and_then(|i| u16::try_from(i).ok())
            .map(VarId)
    }

    #[must_use]
    pub fn name(&self, id: VarId) -> &str {
        self.names.get(usize::from(id.0)).map_or("?", |n| n)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|n| &**n)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.names.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// One line of an `eval` trace: which step ran, what it decided and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    pub kind: &'static str,
    pub passed: bool,
    pub reason: String,
    /// Extra lines a step wants a policy author to see (never secrets).
    pub notes: Vec<String>,
    /// Nesting: 0 for a pipeline's own steps, 1 inside an `any`/`all`, and so on. Children
    /// are recorded before the composite that holds them.
    pub depth: usize,
    /// For a step in shadow mode, what it would have done (`would_deny`): `passed` is then
    /// always true, since nothing was enforced.
    pub shadow: Option<&'static str>,
}

/// The state of one request as it moves through its pipelines.
#[derive(Debug)]
pub struct Exchange {
    /// The client address after trusted-proxy resolution of `X-Forwarded-For`.
    pub client_ip: IpAddr,
    /// The address of the TCP peer.
    pub peer_ip: IpAddr,
    vars: Vec<Option<Arc<str>>>,
    /// The step that refused the request, if one did.
    pub denied_by: Option<&'static str>,
    /// Index of the refusing step in the sequence that ran last.
    pub denied_step: Option<usize>,
    trace: Option<Vec<TraceStep>>,
    pending_notes: Vec<String>,
    /// The shadow outcome of the step now running, for its trace line.
    pending_shadow: Option<&'static str>,
    depth: usize,
    /// Hex SHA-256 of the request body, once a step has computed it (`${body.sha256}`).
    body_sha256: Option<String>,
    /// The result of the I/O the step about to run asked for ([`crate::Assertion::awaits`]).
    awaited: Option<crate::Awaited>,
    /// Headers steps add to the response the client gets (the RateLimit fields).
    response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// What each shadowed step would have done (see [`crate::shadow`]); empty (and not
    /// allocated) when the service shadows nothing.
    shadow: Vec<crate::shadow::record::ShadowRecord>,
    /// The `Authorization` a step chose for the upstream (a brokered provider token),
    /// written on the head that goes upstream, after the caller's credentials were removed.
    upstream_authorization: Option<RedactedHeader>,
}

/// A header value `Debug` never shows.
struct RedactedHeader(http::HeaderValue);

impl std::fmt::Debug for RedactedHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Exchange {
    /// A fresh exchange with room for every variable of the registry.
    #[must_use]
    pub fn new(vars: usize, client_ip: IpAddr, peer_ip: IpAddr) -> Self {
        Exchange {
            client_ip,
            peer_ip,
            vars: vec![None; vars],
            denied_by: None,
            denied_step: None,
            trace: None,
            pending_notes: Vec::new(),
            pending_shadow: None,
            depth: 0,
            body_sha256: None,
            awaited: None,
            response_headers: Vec::new(),
            shadow: Vec::new(),
            upstream_authorization: None,
        }
    }

    /// What the shadowed steps that ran would have done, one record per step.
    #[must_use]
    pub fn shadow_records(&self) -> &[crate::shadow::record::ShadowRecord] {
        &self.shadow
    }

    /// The record of the shadowed step in `slot`, made on the step's first phase.
    pub(crate) fn shadow_record(
        &mut self,
        slot: u16,
        step: &Arc<str>,
    ) -> &mut crate::shadow::record::ShadowRecord {
        let at = match self.shadow.iter().position(|r| r.slot == slot) {
            Some(at) => at,
            None => {
                self.shadow
                    .push(crate::shadow::record::ShadowRecord::new(slot, step.clone()));
                self.shadow.len() - 1
            }
        };
        &mut self.shadow[at]
    }

    /// What a shadowed step could change in the exchange that later steps, the credentials
    /// plan or the response would trust: taken before it runs and put back after.
    pub(crate) fn shadow_snapshot(&self) -> ExchangeSnapshot {
        ExchangeSnapshot {
            vars: self.vars.clone(),
            denied_by: self.denied_by,
            denied_step: self.denied_step,
            response_headers: self.response_headers.len(),
            upstream_authorization: self
                .upstream_authorization
                .as_ref()
                .map(|header| header.0.clone()),
        }
    }

    /// Undoes what a shadowed step did to the exchange since `snapshot`: variables it set
    /// (`${client.id}`), the refusal it noted, headers it asked to add to the response, the
    /// provider token it chose for the upstream.
    pub(crate) fn restore(&mut self, snapshot: ExchangeSnapshot) {
        self.vars = snapshot.vars;
        self.denied_by = snapshot.denied_by;
        self.denied_step = snapshot.denied_step;
        self.response_headers.truncate(snapshot.response_headers);
        self.upstream_authorization = snapshot.upstream_authorization.map(RedactedHeader);
    }

    /// Keep a trace of every step (for `eval`).
    pub fn enable_trace(&mut self) {
        self.trace = Some(Vec::new());
    }

    #[must_use]
    pub fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    pub fn take_trace(&mut self) -> Vec<TraceStep> {
        self.trace.take().unwrap_or_default()
    }

    /// A note for the trace of the step now running; dropped when not tracing.
    pub fn note(&mut self, line: impl FnOnce() -> String) {
        if self.trace.is_some() {
            self.pending_notes.push(line());
        }
    }

    /// Records a step's verdict in the trace, with the notes it left.
    pub fn record(&mut self, kind: &'static str, verdict: &Verdict) {
        if let Some(trace) = self.trace.as_mut() {
            let (passed, reason) = match verdict {
                Verdict::Continue => (true, "passed".to_owned()),
                Verdict::Reject(r) => (
                    false,
                    format!("{} {}: {}", r.status.as_u16(), r.code, r.detail),
                ),
            };
            trace.push(TraceStep {
                kind,
                passed,
                reason,
                notes: std::mem::take(&mut self.pending_notes),
                depth: self.depth,
                shadow: self.pending_shadow.take(),
            });
        }
    }

    /// Marks the step now running as shadowed, with what it would have done, for its trace
    /// line; dropped when not tracing.
    pub(crate) fn note_shadow(&mut self, outcome: &'static str) {
        if self.trace.is_some() {
            self.pending_shadow = Some(outcome);
        }
    }

    pub fn set_body_sha256(&mut self, hex: String) {
        self.body_sha256 = Some(hex);
    }

    #[must_use]
    pub fn body_sha256(&self) -> Option<&str> {
        self.body_sha256.as_deref()
    }

    /// Hands the result of a step's awaited I/O to that step, which runs next.
    pub fn put_awaited(&mut self, result: crate::Awaited) {
        self.awaited = Some(result);
    }

    /// Whether a result waits for the step about to run.
    #[must_use]
    pub fn holds_awaited(&self) -> bool {
        self.awaited.is_some()
    }

    /// The result of this step's awaited I/O, when it is of the type the step expects.
    pub fn take_awaited<T: 'static>(&mut self) -> Option<T> {
        let result = self.awaited.take()?;
        result.downcast::<T>().ok().map(|boxed| *boxed)
    }

    /// Adds a header to the response the client gets, whatever answers it (the upstream or
    /// a refusal by a later step).
    pub fn add_response_header(&mut self, name: http::HeaderName, value: http::HeaderValue) {
        self.response_headers.push((name, value));
    }

    /// The headers steps asked to add to the response.
    #[must_use]
    pub fn response_headers(&self) -> &[(http::HeaderName, http::HeaderValue)] {
        &self.response_headers
    }

    /// Sets the `Authorization` the upstream gets (kept out of variables, so no template,
    /// log or trace can show it).
    pub fn set_upstream_authorization(&mut self, value: http::HeaderValue) {
        self.upstream_authorization = Some(RedactedHeader(value));
    }

    /// Takes the `Authorization` chosen for the upstream, once.
    pub fn take_upstream_authorization(&mut self) -> Option<http::HeaderValue> {
        self.upstream_authorization.take().map(|header| header.0)
    }

    /// Drops a result its step did not take, so it can never reach another step.
    pub fn discard_awaited(&mut self) {
        self.awaited = None;
    }

    /// Steps recorded from now on are children of a composite.
    pub fn descend(&mut self) {
        self.depth += 1;
    }

    /// Back to the composite's own level.
    pub fn ascend(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// Forgets a refusal from a branch that did not decide the outcome (an `any` branch
    /// that failed before another passed).
    pub fn clear_denial(&mut self) {
        self.denied_by = None;
        self.denied_step = None;
    }

    pub fn set(&mut self, id: VarId, value: Arc<str>) {
        if let Some(slot) = self.vars.get_mut(usize::from(id.0)) {
            *slot = Some(value);
        }
    }

    #[must_use]
    pub fn get(&self, id: VarId) -> Option<&str> {
        self.vars.get(usize::from(id.0)).and_then(|v| v.as_deref())
    }

    /// Every variable that is set, for traces.
    pub fn set_vars<'r>(
        &'r self,
        registry: &'r VarRegistry,
    ) -> impl Iterator<Item = (&'r str, &'r str)> {
        self.vars.iter().enumerate().filter_map(move |(i, v)| {
            let id = VarId(u16::try_from(i).ok()?);
            v.as_deref().map(|v| (registry.name(id), v))
        })
    }
}

/// The parts of an [`Exchange`] a shadowed step must leave as it found them.
#[derive(Debug)]
pub(crate) struct ExchangeSnapshot {
    vars: Vec<Option<Arc<str>>>,
    denied_by: Option<&'static str>,
    denied_step: Option<usize>,
    response_headers: usize,
    upstream_authorization: Option<http::HeaderValue>,
}

impl Default for Exchange {
    /// An exchange without variable slots (no allocation), replaced once a request is routed.
    fn default() -> Self {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Exchange::new(0, any, any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_interns_names_once() {
        let mut r = VarRegistry::new();
        let a = r.define("token.scope");
        let b = r.define("token.scope");
        assert_eq!(a, b);
        assert_eq!(r.lookup("client.id"), Some(VarId(0)));
        assert_eq!(r.name(a), "token.scope");
    }

    #[test]
    fn variables_round_trip_and_unknown_ids_are_ignored() {
        let mut x = Exchange::new(
            2,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        );
        x.set(VarId(1), Arc::from("gold"));
        x.set(VarId(9), Arc::from("ignored"));
        assert_eq!(x.get(VarId(1)), Some("gold"));
        assert_eq!(x.get(VarId(0)), None);
        assert_eq!(x.get(VarId(9)), None);
    }
}
