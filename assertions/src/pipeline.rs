//! A service's steps for one side (request or response), and the one place they run.
//!
//! The gateway, `eval` and the benchmarks all run a side through a [`Pipeline`]: each phase
//! of the exchange is a method here, and every step that declares the phase takes part.
//! Composites never hold steps with phases beyond the heads (see [`crate::composite`]), so
//! walking the top-level steps reaches every hook of every step.

use crate::exchange::Exchange;
use crate::head::{RequestHead, RequestView, ResponseHead};
use crate::verdict::Verdict;
use crate::PrefetchWork;
use crate::{
    needs_of, prefetch_all, response_bodies, run_request_from, run_response, run_upstream,
    Assertion, BodyProcessor, Needs, Phases, Progress, Request,
};

/// The compiled steps of one side of a service.
#[derive(Debug, Default)]
pub struct Pipeline {
    steps: Vec<Box<dyn Assertion>>,
    needs: Needs,
    phases: Phases,
}

impl Pipeline {
    #[must_use]
    pub fn new(steps: Vec<Box<dyn Assertion>>) -> Self {
        let needs = needs_of(&steps);
        let phases = steps
            .iter()
            .fold(Phases::default(), |acc, s| acc.union(s.phases()));
        Pipeline {
            steps,
            needs,
            phases,
        }
    }

    /// The top-level steps, in order (for metrics and traces).
    #[must_use]
    pub fn steps(&self) -> &[Box<dyn Assertion>] {
        &self.steps
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// What the steps need together.
    #[must_use]
    pub fn needs(&self) -> Needs {
        self.needs
    }

    /// The phases the steps take part in together.
    #[must_use]
    pub fn phases(&self) -> Phases {
        self.phases
    }

    /// Remote work to await before [`Pipeline::run_request`] (key sets, introspection).
    #[must_use]
    pub fn prefetch(&self, req: &dyn RequestView) -> Option<PrefetchWork> {
        prefetch_all(&self.steps, req)
    }

    /// The request head (and body, when needed) from step `start`: stops at the first
    /// refusal, or at a step that needs I/O first (see [`Progress::Await`]).
    pub fn run_request_from(
        &self,
        start: usize,
        req: &mut Request<'_>,
        x: &mut Exchange,
    ) -> Progress {
        run_request_from(&self.steps, start, req, x)
    }

    /// Rewrites a copy of the buffered request body (same length); `None` when no step
    /// rewrites bodies. Also returns how many items were changed.
    pub fn rewrite_request_body(&self, body: &[u8], x: &mut Exchange) -> Option<(Vec<u8>, usize)> {
        if !self.phases.request_body {
            return None;
        }
        let mut copy = body.to_vec();
        let changed = self
            .steps
            .iter()
            .filter(|s| s.phases().request_body)
            .map(|s| s.rewrite_request_body(&mut copy, x))
            .sum();
        Some((copy, changed))
    }

    /// The head about to go upstream, after the gateway's own rewriting.
    pub fn run_upstream(
        &self,
        head: &mut dyn RequestHead,
        body: Option<&[u8]>,
        x: &mut Exchange,
    ) -> Verdict {
        if !self.phases.upstream_request {
            return Verdict::Continue;
        }
        run_upstream(&self.steps, head, body, x)
    }

    /// The response head: stops at the first refusal.
    pub fn run_response(
        &self,
        req: &dyn RequestView,
        resp: &mut dyn ResponseHead,
        x: &mut Exchange,
    ) -> Verdict {
        run_response(&self.steps, req, resp, x)
    }

    /// The processors this response's body goes through, in step order.
    pub fn response_bodies(
        &self,
        req: &dyn RequestView,
        resp: &mut dyn ResponseHead,
        x: &mut Exchange,
    ) -> Vec<Box<dyn BodyProcessor>> {
        if !self.phases.response_body {
            return Vec::new();
        }
        response_bodies(&self.steps, req, resp, x)
    }
}
