//! Shadow mode: a step that runs on every request and has its verdict recorded, but is
//! never enforced. It is how a new assertion is rolled out: watch what it would refuse or
//! change on real traffic before letting it.
//!
//! [`Shadow`] wraps a compiled step. Each phase of the inner step runs on a scratch copy of
//! the head (and body), so nothing it would set, remove, sign or mask reaches the upstream
//! or the client; what it did to the [`Exchange`] (variables such as `${client.id}`, a
//! refusal noted, headers for the response) is undone, so later enforced steps cannot trust
//! a caller a shadowed step alone authenticated. Its credential places are not reported,
//! so a shadowed authenticating step never makes the gateway strip credentials either.
//! What it would have done is recorded in the exchange, one [`ShadowRecord`] per step per
//! request, for the gateway's metrics and access log and for `eval`'s trace.

pub mod record;

use std::sync::atomic::Ordering;
use std::sync::Arc;

pub use record::{BodyTally, ShadowOutcome, ShadowRecord};

use crate::exchange::Exchange;
use crate::head::{RequestHead, RequestView, ResponseHead};
use crate::prefetch::{AwaitedWork, PrefetchWork};
use crate::verdict::Verdict;
use crate::{Assertion, BodyProcessor, CredentialPlaces, Needs, Phases, Request};

/// A step in shadow mode: run and recorded, never enforced.
#[derive(Debug)]
pub struct Shadow {
    inner: Box<dyn Assertion>,
    step: Arc<str>,
    slot: u16,
}

impl Shadow {
    /// Shadows `inner`, recorded as `step` (`request[1].require_api_key`) in `slot`, its
    /// number among its service's shadowed steps.
    #[must_use]
    pub fn new(inner: Box<dyn Assertion>, step: Arc<str>, slot: u16) -> Self {
        Shadow { inner, step, slot }
    }

    /// The shadowed step.
    #[must_use]
    pub fn inner(&self) -> &dyn Assertion {
        &*self.inner
    }

    /// Runs one phase of the inner step with the exchange restored afterwards, and records
    /// the outcome; `changed` says whether the phase's scratch copy was altered.
    fn judge(
        &self,
        x: &mut Exchange,
        phase: impl FnOnce(&mut Exchange) -> (Verdict, bool),
        trace: bool,
    ) {
        let snapshot = x.shadow_snapshot();
        let (verdict, changed) = phase(x);
        x.restore(snapshot);
        let (outcome, code) = match &verdict {
            Verdict::Reject(rejection) => (ShadowOutcome::of(rejection), Some(rejection.code)),
            Verdict::Continue if changed => (ShadowOutcome::WouldChange, None),
            Verdict::Continue => (ShadowOutcome::WouldAllow, None),
        };
        if trace {
            x.note_shadow(outcome.label());
            if let Verdict::Reject(r) = &verdict {
                x.note(|| {
                    format!(
                        "would refuse: {} {}: {}",
                        r.status.as_u16(),
                        r.code,
                        r.detail
                    )
                });
            }
        }
        x.shadow_record(self.slot, &self.step)
            .merge(outcome, 0, code);
    }
}

/// A copy of a request head for a shadowed step to work on.
fn request_copy(head: &dyn RequestView) -> http::request::Parts {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = head.method().clone();
    parts.uri = head.uri().clone();
    parts.headers = head.headers().clone();
    parts
}

/// A copy of a response head for a shadowed step to work on.
fn response_copy(head: &dyn ResponseHead) -> http::response::Parts {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = head.status();
    parts.headers = head.headers().clone();
    parts
}

impl Assertion for Shadow {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    /// The inner step's needs, but never the whole response: a shadowed step cannot
    /// withhold one, so the response streams as it would without it.
    fn needs(&self) -> Needs {
        Needs {
            whole_response: false,
            ..self.inner.needs()
        }
    }

    fn phases(&self) -> Phases {
        self.inner.phases()
    }

    /// None: a shadowed step authenticates no one, so the credentials it reads are not
    /// stripped on its account.
    fn credential_places(&self) -> Option<CredentialPlaces> {
        None
    }

    fn prefetch(&self, req: &dyn RequestView) -> Option<PrefetchWork> {
        self.inner.prefetch(req)
    }

    fn awaits(&self, req: &Request<'_>, x: &mut Exchange) -> Option<AwaitedWork> {
        let snapshot = x.shadow_snapshot();
        let work = self.inner.awaits(req, x);
        x.restore(snapshot);
        work
    }

    fn on_request(&self, req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        let original: &dyn RequestView = &*req.head;
        let mut scratch = request_copy(original);
        let body = req.body;
        self.judge(
            x,
            |x| {
                let verdict = self.inner.on_request(
                    &mut Request {
                        head: &mut scratch,
                        body,
                    },
                    x,
                );
                (verdict, scratch.headers != *original.headers())
            },
            true,
        );
        Verdict::Continue
    }

    fn rewrite_request_body(&self, body: &mut [u8], x: &mut Exchange) -> usize {
        let mut scratch = body.to_vec();
        let snapshot = x.shadow_snapshot();
        let changed = self.inner.rewrite_request_body(&mut scratch, x);
        x.restore(snapshot);
        let outcome = if changed > 0 {
            ShadowOutcome::WouldChange
        } else {
            ShadowOutcome::WouldAllow
        };
        x.shadow_record(self.slot, &self.step)
            .merge(outcome, changed as u64, None);
        0
    }

    fn on_upstream_request(
        &self,
        head: &mut dyn RequestHead,
        body: Option<&[u8]>,
        x: &mut Exchange,
    ) -> Verdict {
        let original: &dyn RequestView = &*head;
        let mut scratch = request_copy(original);
        // A step that rewrites response bodies edits the upstream request only to ask for
        // a body it can read (`Accept-Encoding`): it is judged by the bodies.
        let judged_by_body = self.inner.phases().response_body;
        self.judge(
            x,
            |x| {
                let verdict = self.inner.on_upstream_request(&mut scratch, body, x);
                let changed = scratch.headers != *original.headers() && !judged_by_body;
                (verdict, changed)
            },
            false,
        );
        Verdict::Continue
    }

    fn response_body(
        &self,
        req: &dyn RequestView,
        resp: &mut dyn ResponseHead,
        x: &mut Exchange,
    ) -> Option<Box<dyn BodyProcessor>> {
        let mut scratch = response_copy(resp);
        let snapshot = x.shadow_snapshot();
        let processor = self.inner.response_body(req, &mut scratch, x);
        x.restore(snapshot);
        let inner = processor?;
        let tally = Arc::new(BodyTally::default());
        x.shadow_record(self.slot, &self.step).body = Some(tally.clone());
        Some(Box::new(ShadowBody {
            inner,
            tally,
            scratch: Vec::new(),
        }))
    }

    fn on_response(
        &self,
        req: &dyn RequestView,
        resp: &mut dyn ResponseHead,
        x: &mut Exchange,
    ) -> Verdict {
        let mut scratch = response_copy(resp);
        self.judge(
            x,
            |x| {
                let verdict = self.inner.on_response(req, &mut scratch, x);
                (verdict, scratch.headers != *resp.headers())
            },
            true,
        );
        Verdict::Continue
    }
}

/// A shadowed step's body processor: the inner one sees every chunk and its output is
/// thrown away; the body goes on byte for byte as it came.
struct ShadowBody {
    inner: Box<dyn BodyProcessor>,
    tally: Arc<BodyTally>,
    /// The inner processor's output, cleared for each chunk.
    scratch: Vec<u8>,
}

impl BodyProcessor for ShadowBody {
    fn process(&mut self, chunk: &[u8], end: bool, out: &mut Vec<u8>) -> usize {
        out.extend_from_slice(chunk);
        self.scratch.clear();
        let changed = self.inner.process(chunk, end, &mut self.scratch);
        self.tally
            .items
            .fetch_add(changed as u64, Ordering::Relaxed);
        if end {
            if let Some(refusal) = self.inner.refusal() {
                let _ = self.tally.refused.set(refusal.code);
            }
        }
        // Nothing was changed in what is sent.
        0
    }
}

#[cfg(test)]
mod tests;
