//! Which steps of a policy the cases exercised: a step is covered when some case ran it,
//! and a branch of `any` when some case was let through by it (a branch that only ever
//! refused has not shown that it admits anyone).

use portcullis_assertions::Assertion;

use super::simulate::Outcome;
use crate::eval::{trace_tree, TraceNode};
use crate::runtime::Runtime;

/// One step and what the cases did with it.
#[derive(Debug, Clone)]
pub struct StepCoverage {
    pub kind: &'static str,
    pub ran: bool,
    pub passed: bool,
    /// A composite's steps (the branches of `any`).
    pub parts: Vec<StepCoverage>,
}

impl StepCoverage {
    fn of(step: &dyn Assertion) -> StepCoverage {
        StepCoverage {
            kind: step.kind(),
            ran: false,
            passed: false,
            parts: step
                .parts()
                .iter()
                .map(|p| StepCoverage::of(p.as_ref()))
                .collect(),
        }
    }

    fn record(&mut self, node: &TraceNode) {
        self.ran = true;
        self.passed |= node.step.passed;
        for (part, child) in self.parts.iter_mut().zip(&node.children) {
            part.record(child);
        }
    }
}

/// One service's steps.
#[derive(Debug, Clone)]
pub struct ServiceCoverage {
    pub name: String,
    pub request: Vec<StepCoverage>,
    pub response: Vec<StepCoverage>,
}

/// A policy's steps, service by service.
#[derive(Debug, Clone)]
pub struct PolicyCoverage {
    pub services: Vec<ServiceCoverage>,
}

impl PolicyCoverage {
    #[must_use]
    pub fn of(runtime: &Runtime) -> PolicyCoverage {
        let steps = |list: &[Box<dyn Assertion>]| {
            list.iter()
                .map(|s| StepCoverage::of(s.as_ref()))
                .collect::<Vec<_>>()
        };
        PolicyCoverage {
            services: runtime
                .services
                .iter()
                .map(|s| ServiceCoverage {
                    name: s.name.to_string(),
                    request: steps(s.request.steps()),
                    response: steps(s.response.steps()),
                })
                .collect(),
        }
    }

    /// Marks what one request exercised (top-level steps run in order, so the trace's
    /// n-th top-level entry is the n-th step).
    pub fn record(&mut self, outcome: &Outcome) {
        let Some(service) = outcome
            .service_index
            .and_then(|index| self.services.get_mut(index))
        else {
            return;
        };
        for (step, node) in service
            .request
            .iter_mut()
            .zip(trace_tree(outcome.request_trace.clone()).iter())
        {
            step.record(node);
        }
        for (step, node) in service
            .response
            .iter_mut()
            .zip(trace_tree(outcome.response_trace.clone()).iter())
        {
            step.record(node);
        }
    }

    /// Every gap, as `service: request[2] rate_limit never ran` lines.
    #[must_use]
    pub fn gaps(&self) -> Vec<String> {
        let mut out = Vec::new();
        for service in &self.services {
            for (side, steps) in [
                ("request", &service.request),
                ("response", &service.response),
            ] {
                for (index, step) in steps.iter().enumerate() {
                    gaps_of(&service.name, &format!("{side}[{index}]"), step, &mut out);
                }
            }
        }
        out
    }

    /// Steps (composites' parts included) and how many were exercised.
    #[must_use]
    pub fn counts(&self) -> (usize, usize) {
        fn count(step: &StepCoverage, totals: &mut (usize, usize)) {
            totals.0 += 1;
            totals.1 += usize::from(step.ran);
            for part in &step.parts {
                count(part, totals);
            }
        }
        let mut totals = (0, 0);
        for service in &self.services {
            for step in service.request.iter().chain(&service.response) {
                count(step, &mut totals);
            }
        }
        totals
    }
}

fn gaps_of(service: &str, at: &str, step: &StepCoverage, out: &mut Vec<String>) {
    if !step.ran {
        out.push(format!("{service}: {at} {} never ran", step.kind));
        return;
    }
    for (index, part) in step.parts.iter().enumerate() {
        let part_at = format!("{at}.{}[{index}]", step.kind);
        if step.kind == "any" && part.ran && !part.passed {
            out.push(format!(
                "{service}: {part_at} {} never let a request through",
                part.kind
            ));
        }
        gaps_of(service, &part_at, part, out);
    }
}
