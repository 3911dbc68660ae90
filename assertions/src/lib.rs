//! Portcullis assertions: each policy step as pure code over HTTP parts and bytes.
//!
//! Nothing here knows about Pingora or YAML. The gateway compiles a policy file into
//! values of these types once per (re)load and runs them per request through the
//! [`Assertion`] trait; `eval`, the tests and the benchmarks run exactly the same code
//! over `http::request::Parts`.

pub mod api_key;
pub mod bearer;
pub mod composite;
pub mod credential_places;
pub mod exchange;
pub mod gcra;
pub mod head;
pub mod headers;
pub mod hmac;
pub mod ip;
pub mod ip_identity;
pub mod json_body;
pub mod local_limiter;
pub mod once;
pub mod pan;
pub mod pipeline;
pub mod prefetch;
pub mod query;
pub mod quota;
pub mod rate_limit;
pub mod saml;
pub mod shadow;
pub mod template;
pub mod verdict;

use std::fmt;

pub use credential_places::CredentialPlaces;
pub use exchange::{Exchange, TraceStep, VarId, VarRegistry};
pub use head::{RequestHead, RequestView, ResponseHead};
pub use pipeline::Pipeline;
pub use prefetch::{Awaited, AwaitedWork, PrefetchWork};
pub use verdict::{Rejection, Verdict};

/// What an assertion needs from the request before it can decide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// The whole request body must be read (up to the service's limit) before the
    /// pipeline runs, and before the upstream is contacted.
    pub request_body: bool,
    /// The whole response must be seen before any of it goes to the client (a step may
    /// replace it, e.g. `mask_pan` in block mode).
    pub whole_response: bool,
}

impl Needs {
    /// Headers only: the cheap path.
    pub const HEADERS: Needs = Needs {
        request_body: false,
        whole_response: false,
    };
    /// The whole request body.
    pub const BODY: Needs = Needs {
        request_body: true,
        whole_response: false,
    };

    /// What a sequence of assertions needs together.
    #[must_use]
    pub fn union(self, other: Needs) -> Needs {
        Needs {
            request_body: self.request_body || other.request_body,
            whole_response: self.whole_response || other.whole_response,
        }
    }
}

/// The phases of an exchange a step takes part in. Composites (`all` under `any`, `any`)
/// decide on heads only, so a step with any other phase cannot sit inside one: the
/// compiler refuses it and [`composite`] constructors check it again, which is what keeps a
/// body or upstream hook from being silently skipped (fail open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// [`Assertion::on_request`] decides or edits the request head.
    pub request: bool,
    /// [`Assertion::rewrite_request_body`] rewrites the buffered request body.
    pub request_body: bool,
    /// [`Assertion::on_upstream_request`] edits or signs the head that goes upstream.
    pub upstream_request: bool,
    /// [`Assertion::on_response`] decides or edits the response head.
    pub response: bool,
    /// [`Assertion::response_body`] processes the response body.
    pub response_body: bool,
    /// [`Assertion::awaits`] asks the gateway for I/O at the step's own place in the
    /// request pipeline (a shared store's round trip).
    pub awaits_io: bool,
    /// The step counts the request against a limit or quota: it must run exactly once per
    /// request, so never inside a composite whose branches may run and then not count.
    pub charges: bool,
}

impl Phases {
    /// The request head only.
    pub const REQUEST: Phases = Phases {
        request: true,
        request_body: false,
        upstream_request: false,
        response: false,
        response_body: false,
        awaits_io: false,
        charges: false,
    };
    /// Either head, as the step's side decides (header edits).
    pub const HEADS: Phases = Phases {
        request: true,
        request_body: false,
        upstream_request: false,
        response: true,
        response_body: false,
        awaits_io: false,
        charges: false,
    };

    /// Every phase either set takes part in.
    #[must_use]
    pub fn union(self, other: Phases) -> Phases {
        Phases {
            request: self.request || other.request,
            request_body: self.request_body || other.request_body,
            upstream_request: self.upstream_request || other.upstream_request,
            response: self.response || other.response,
            response_body: self.response_body || other.response_body,
            awaits_io: self.awaits_io || other.awaits_io,
            charges: self.charges || other.charges,
        }
    }

    /// The phases beyond the two heads, named for an error message; empty when there are none.
    #[must_use]
    pub fn beyond_heads(self) -> Vec<&'static str> {
        [
            (self.request_body, "rewrites the request body"),
            (
                self.upstream_request,
                "edits the request that goes upstream",
            ),
            (self.response_body, "rewrites the response body"),
            (
                self.awaits_io,
                "waits for a store at its own place in the pipeline",
            ),
            (self.charges, "counts the request against a limit"),
        ]
        .into_iter()
        .filter_map(|(present, what)| present.then_some(what))
        .collect()
    }
}

/// The request as an assertion sees it: its head (mutable, so header edits flow to the
/// upstream request), its body when some assertion asked for it, and the addresses.
pub struct Request<'a> {
    pub head: &'a mut dyn RequestHead,
    /// The buffered body, present when the pipeline declared [`Needs::BODY`].
    pub body: Option<&'a [u8]>,
}

/// Per-response body processing (masking, recompression), made by a step for one response.
pub trait BodyProcessor: Send + Sync {
    /// Takes the next chunk (`end` on the last call, possibly with an empty chunk) and
    /// appends what may be sent on to `out`. Returns how many items it changed (e.g. card
    /// numbers masked), for metrics.
    fn process(&mut self, chunk: &[u8], end: bool, out: &mut Vec<u8>) -> usize;

    /// Processes `chunk` where it lies when the processor can (same length out as in):
    /// returns how many leading bytes to send, the rest being held by the processor, and
    /// the items changed. `None`: use [`BodyProcessor::process`].
    fn process_in_place(&mut self, _chunk: &mut [u8], _end: bool) -> Option<(usize, usize)> {
        None
    }

    /// After the last chunk: a refusal that replaces the whole response (only honoured when
    /// the step declared [`Needs::whole_response`]).
    fn refusal(&self) -> Option<Rejection> {
        None
    }
}

/// One compiled policy step.
///
/// Implementations are immutable after compilation and shared by all requests; per-request
/// state lives in the [`Exchange`]. They never do network I/O: anything remote (key sets,
/// shared counters) is refreshed elsewhere and read here from a snapshot.
pub trait Assertion: Send + Sync + fmt::Debug {
    /// The policy-language name (`require_api_key`), used in logs, metrics and traces.
    fn kind(&self) -> &'static str;

    /// What this assertion needs before it can run.
    fn needs(&self) -> Needs {
        Needs::HEADERS
    }

    /// The steps a composite holds (the branches of `any`, the steps of `all`), in order,
    /// for `portcullis test --coverage`; empty for every other step.
    fn parts(&self) -> &[Box<dyn Assertion>] {
        &[]
    }

    /// The phases this step takes part in. No default: every step says, so a composite or
    /// a pipeline can never miss one.
    fn phases(&self) -> Phases;

    /// For a step that authenticates the caller: where it reads the caller's credential.
    /// The gateway then keeps those places (with `Authorization` and
    /// `Proxy-Authorization`) from the upstream unless the service's `credentials:` says to
    /// forward them. `None` (the default) for every step that authenticates no one.
    fn credential_places(&self) -> Option<CredentialPlaces> {
        None
    }

    /// Work the gateway awaits before the request pipeline runs (a key set to fetch for an
    /// unknown key id, a remote introspection), so [`Assertion::on_request`] can answer
    /// from memory. Most steps have none.
    fn prefetch(&self, _req: &dyn RequestView) -> Option<PrefetchWork> {
        None
    }

    /// I/O this step needs at its own place in the request pipeline, once every step
    /// before it has passed: a shared counter's round trip, whose key comes from variables
    /// earlier steps set and which a request they refuse must never reach. The pipeline
    /// stops there ([`Progress::Await`]); the gateway awaits the work and resumes at this
    /// step, whose [`Assertion::on_request`] then takes the result with
    /// [`Exchange::take_awaited`]. Only steps that declare [`Phases::awaits_io`] have any,
    /// and those never sit inside a composite. The request's body is in view when the
    /// pipeline declared [`Needs::BODY`]; the exchange is mutable so the step may note
    /// what it decided before the round trip (a verified signature, in the trace).
    fn awaits(&self, _req: &Request<'_>, _x: &mut Exchange) -> Option<AwaitedWork> {
        None
    }

    /// Runs on the way in, before the upstream is contacted.
    fn on_request(&self, _req: &mut Request<'_>, _x: &mut Exchange) -> Verdict {
        Verdict::Continue
    }

    /// After the request pipeline passed: rewrites the buffered request body in place,
    /// keeping its length (e.g. masking card numbers). Returns how many items it changed.
    /// Only called when the step declared [`Phases::request_body`] (and [`Needs::BODY`]).
    fn rewrite_request_body(&self, _body: &mut [u8], _x: &mut Exchange) -> usize {
        0
    }

    /// Runs on the request head about to go upstream, after every request-side step and the
    /// gateway's own rewriting (`Host`, `X-Forwarded-*`): the place to sign outbound requests.
    fn on_upstream_request(
        &self,
        _head: &mut dyn RequestHead,
        _body: Option<&[u8]>,
        _x: &mut Exchange,
    ) -> Verdict {
        Verdict::Continue
    }

    /// After the response head passed: a processor for this response's body, if the step
    /// works on bodies. It may edit the head (e.g. drop `Content-Length` when the length
    /// will change).
    fn response_body(
        &self,
        _req: &dyn RequestView,
        _resp: &mut dyn ResponseHead,
        _x: &mut Exchange,
    ) -> Option<Box<dyn BodyProcessor>> {
        None
    }

    /// Runs on the response head on the way back.
    fn on_response(
        &self,
        _req: &dyn RequestView,
        _resp: &mut dyn ResponseHead,
        _x: &mut Exchange,
    ) -> Verdict {
        Verdict::Continue
    }
}

/// How far a request-side sequence got.
#[must_use]
pub enum Progress {
    /// Every step ran, or one refused.
    Done(Verdict),
    /// The step at `step` needs this I/O first: await it, hand its result to
    /// [`Exchange::put_awaited`] and resume with [`run_request_from`] at `step`.
    Await { step: usize, work: AwaitedWork },
}

/// Runs a request-side sequence that never waits (composite branches): a step asking for
/// I/O here is refused (the compiler and the composite constructors keep such steps out).
pub fn run_request(
    steps: &[Box<dyn Assertion>],
    req: &mut Request<'_>,
    x: &mut Exchange,
) -> Verdict {
    match run_request_from(steps, 0, req, x) {
        Progress::Done(verdict) => verdict,
        Progress::Await { step, .. } => {
            let kind = steps.get(step).map_or("a step", |s| s.kind());
            x.denied_by = Some(kind);
            x.denied_step = Some(step);
            Verdict::Reject(Rejection::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "step-cannot-wait-here",
                format!("{kind} needs a store round trip where none can be awaited"),
            ))
        }
    }
}

/// Runs a request-side sequence from step `start`, recording each step in the exchange's
/// trace when one is kept, and stops at the first rejection, noting which step refused in
/// [`Exchange::denied_by`] and [`Exchange::denied_step`] (the index in `steps`), or at the
/// first step that needs I/O it has not been given yet.
pub fn run_request_from(
    steps: &[Box<dyn Assertion>],
    start: usize,
    req: &mut Request<'_>,
    x: &mut Exchange,
) -> Progress {
    for (i, step) in steps.iter().enumerate().skip(start) {
        // Resumed at this step with its result in hand: it must not ask again.
        let resumed = i == start && x.holds_awaited();
        if !resumed {
            if let Some(work) = step.awaits(req, x) {
                return Progress::Await { step: i, work };
            }
        }
        let verdict = step.on_request(req, x);
        x.discard_awaited();
        x.record(step.kind(), &verdict);
        if let Verdict::Reject(rejection) = verdict {
            x.denied_by = Some(step.kind());
            x.denied_step = Some(i);
            return Progress::Done(Verdict::Reject(rejection));
        }
    }
    Progress::Done(Verdict::Continue)
}

/// The prefetch work of a sequence, joined into one future (`None` when no step has any).
pub fn prefetch_all(steps: &[Box<dyn Assertion>], req: &dyn RequestView) -> Option<PrefetchWork> {
    let mut work: Vec<PrefetchWork> = steps.iter().filter_map(|s| s.prefetch(req)).collect();
    match work.len() {
        0 => None,
        1 => work.pop(),
        _ => Some(Box::pin(async move {
            for w in work {
                w.await;
            }
        })),
    }
}

/// Runs a response-side sequence; same rules as [`run_request`].
pub fn run_response(
    steps: &[Box<dyn Assertion>],
    req: &dyn RequestView,
    resp: &mut dyn ResponseHead,
    x: &mut Exchange,
) -> Verdict {
    for (i, step) in steps.iter().enumerate() {
        let verdict = step.on_response(req, resp, x);
        x.record(step.kind(), &verdict);
        if let Verdict::Reject(rejection) = verdict {
            x.denied_by = Some(step.kind());
            x.denied_step = Some(i);
            return Verdict::Reject(rejection);
        }
    }
    Verdict::Continue
}

/// Runs the upstream-phase hook of a sequence; same rules as [`run_request`].
pub fn run_upstream(
    steps: &[Box<dyn Assertion>],
    head: &mut dyn RequestHead,
    body: Option<&[u8]>,
    x: &mut Exchange,
) -> Verdict {
    for (i, step) in steps.iter().enumerate() {
        let verdict = step.on_upstream_request(head, body, x);
        if let Verdict::Reject(rejection) = verdict {
            x.record(step.kind(), &Verdict::Reject(rejection.clone()));
            x.denied_by = Some(step.kind());
            x.denied_step = Some(i);
            return Verdict::Reject(rejection);
        }
    }
    Verdict::Continue
}

/// The body processors a response pipeline wants for this response, in order.
pub fn response_bodies(
    steps: &[Box<dyn Assertion>],
    req: &dyn RequestView,
    resp: &mut dyn ResponseHead,
    x: &mut Exchange,
) -> Vec<Box<dyn BodyProcessor>> {
    steps
        .iter()
        .filter_map(|s| s.response_body(req, resp, x))
        .collect()
}

/// Runs a chunk through processors in turn; returns the bytes to send and the count of
/// changed items.
pub fn process_body(
    processors: &mut [Box<dyn BodyProcessor>],
    chunk: &[u8],
    end: bool,
) -> (Vec<u8>, usize) {
    let mut changed = 0;
    let Some((first, rest)) = processors.split_first_mut() else {
        return (chunk.to_vec(), 0);
    };
    // The first processor reads the chunk where it is; each later one the one before's output.
    let mut out = Vec::with_capacity(chunk.len() + 64);
    changed += first.process(chunk, end, &mut out);
    for p in rest {
        let mut next = Vec::with_capacity(out.len() + 64);
        changed += p.process(&out, end, &mut next);
        out = next;
    }
    (out, changed)
}

/// What a sequence of steps needs together.
pub fn needs_of(steps: &[Box<dyn Assertion>]) -> Needs {
    steps
        .iter()
        .fold(Needs::HEADERS, |acc, s| acc.union(s.needs()))
}

/// Cases for a property test: `PROPTEST_CASES` when set (long local fuzzing runs), else
/// the test's own count.
#[cfg(test)]
pub(crate) fn test_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
