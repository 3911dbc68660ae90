//! `all` and `any`: sequences and alternatives of steps.
//!
//! Both decide on heads only. A step that also rewrites a body or edits the upstream request
//! cannot sit in one (which branch's rewrite would apply?); the constructors refuse it, and
//! a top-level `all` is flattened into its pipeline by the compiler, where every phase runs.
//! So there are only two hooks to forward here, and none can be left out.

use std::fmt::Write as _;

use http::StatusCode;

use crate::exchange::Exchange;
use crate::head::{RequestView, ResponseHead};
use crate::verdict::{Rejection, Verdict};
use crate::{needs_of, run_request, run_response, Assertion, Needs, Phases, Request};

/// A step that cannot sit in a composite, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} cannot sit inside `{composite}`: it {why}, and `{composite}` decides on request and response heads only")]
pub struct NotComposable {
    /// Index of the refused step among the composite's steps.
    pub index: usize,
    pub kind: &'static str,
    pub composite: &'static str,
    pub why: String,
}

/// Refuses steps with phases beyond the heads.
fn head_steps_only(
    steps: &[Box<dyn Assertion>],
    composite: &'static str,
) -> Result<Phases, NotComposable> {
    let mut phases = Phases::default();
    for (index, step) in steps.iter().enumerate() {
        let step_phases = step.phases();
        let beyond = step_phases.beyond_heads();
        if !beyond.is_empty() {
            return Err(NotComposable {
                index,
                kind: step.kind(),
                composite,
                why: beyond.join(" and "),
            });
        }
        phases = phases.union(step_phases);
    }
    Ok(phases)
}

/// Every step must pass, in order. As a pipeline's own sequence it is flattened at load;
/// it remains as a branch of `any`.
#[derive(Debug)]
pub struct All {
    steps: Vec<Box<dyn Assertion>>,
    phases: Phases,
}

impl All {
    /// # Errors
    /// A step with phases beyond the heads.
    pub fn new(steps: Vec<Box<dyn Assertion>>) -> Result<Self, NotComposable> {
        let phases = head_steps_only(&steps, "all")?;
        Ok(All { steps, phases })
    }
}

impl Assertion for All {
    fn prefetch(&self, req: &dyn crate::RequestView) -> Option<crate::PrefetchWork> {
        crate::prefetch_all(&self.steps, req)
    }

    fn kind(&self) -> &'static str {
        "all"
    }

    fn parts(&self) -> &[Box<dyn Assertion>] {
        &self.steps
    }

    fn credential_places(&self) -> Option<crate::CredentialPlaces> {
        crate::credential_places::of_steps(&self.steps)
    }

    fn phases(&self) -> Phases {
        self.phases
    }

    fn needs(&self) -> Needs {
        needs_of(&self.steps)
    }

    fn on_request(&self, req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        x.descend();
        let verdict = run_request(&self.steps, req, x);
        x.ascend();
        verdict
    }

    fn on_response(
        &self,
        req: &dyn RequestView,
        resp: &mut dyn ResponseHead,
        x: &mut Exchange,
    ) -> Verdict {
        x.descend();
        let verdict = run_response(&self.steps, req, resp, x);
        x.ascend();
        verdict
    }
}

/// At least one branch must pass; branches are tried in order and the first that passes
/// wins. When none does, the refusal lists every branch's reason, with the status of the
/// first branch.
#[derive(Debug)]
pub struct Any {
    branches: Vec<Box<dyn Assertion>>,
    phases: Phases,
}

impl Any {
    /// # Errors
    /// A branch with phases beyond the heads.
    pub fn new(branches: Vec<Box<dyn Assertion>>) -> Result<Self, NotComposable> {
        let phases = head_steps_only(&branches, "any")?;
        Ok(Any { branches, phases })
    }

    fn combine(failures: Vec<Rejection>) -> Verdict {
        let mut detail = format!("none of {} alternatives passed:", failures.len());
        for (i, f) in failures.iter().enumerate() {
            let _ = write!(detail, " [{}] {}: {};", i + 1, f.code, f.detail);
        }
        detail.pop();
        let first = failures.into_iter().next();
        let status = first.as_ref().map_or(StatusCode::FORBIDDEN, |f| f.status);
        let mut rejection = Rejection::new(status, "no-alternative-passed", detail);
        if let Some(first) = first {
            rejection.headers = first.headers;
        }
        Verdict::Reject(rejection)
    }
}

impl Assertion for Any {
    fn prefetch(&self, req: &dyn crate::RequestView) -> Option<crate::PrefetchWork> {
        crate::prefetch_all(&self.branches, req)
    }

    fn kind(&self) -> &'static str {
        "any"
    }

    fn parts(&self) -> &[Box<dyn Assertion>] {
        &self.branches
    }

    fn credential_places(&self) -> Option<crate::CredentialPlaces> {
        crate::credential_places::of_steps(&self.branches)
    }

    fn phases(&self) -> Phases {
        self.phases
    }

    fn needs(&self) -> Needs {
        needs_of(&self.branches)
    }

    fn on_request(&self, req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        let mut failures = Vec::new();
        x.descend();
        for branch in &self.branches {
            let verdict = branch.on_request(req, x);
            x.record(branch.kind(), &verdict);
            match verdict {
                Verdict::Continue => {
                    x.ascend();
                    x.clear_denial();
                    return Verdict::Continue;
                }
                Verdict::Reject(r) => failures.push(r),
            }
        }
        x.ascend();
        Self::combine(failures)
    }

    fn on_response(
        &self,
        req: &dyn RequestView,
        resp: &mut dyn ResponseHead,
        x: &mut Exchange,
    ) -> Verdict {
        let mut failures = Vec::new();
        x.descend();
        for branch in &self.branches {
            let verdict = branch.on_response(req, resp, x);
            x.record(branch.kind(), &verdict);
            match verdict {
                Verdict::Continue => {
                    x.ascend();
                    x.clear_denial();
                    return Verdict::Continue;
                }
                Verdict::Reject(r) => failures.push(r),
            }
        }
        x.ascend();
        Self::combine(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::{AllowIp, IpList};

    fn allow(cidr: &str) -> Box<dyn Assertion> {
        Box::new(AllowIp::new(IpList::new(vec![cidr.parse().expect("cidr")])))
    }

    fn run(a: &dyn Assertion, ip: &str) -> Verdict {
        let (mut parts, ()) = http::Request::builder()
            .body(())
            .expect("request")
            .into_parts();
        let ip = ip.parse().expect("ip");
        let mut x = Exchange::new(1, ip, ip);
        a.on_request(
            &mut Request {
                head: &mut parts,
                body: None,
            },
            &mut x,
        )
    }

    #[test]
    fn any_passes_on_one_branch_and_reports_every_failure() {
        let any = Any::new(vec![allow("10.0.0.0/8"), allow("192.168.0.0/16")]).expect("heads");
        assert!(run(&any, "192.168.4.4").is_continue());
        let Verdict::Reject(r) = run(&any, "8.8.8.8") else {
            panic!("must fail")
        };
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(
            r.detail,
            "none of 2 alternatives passed: [1] ip-not-allowed: the client address is not allowed; [2] ip-not-allowed: the client address is not allowed"
        );
    }

    #[test]
    fn steps_with_body_or_upstream_phases_are_refused() {
        let masker = || -> Box<dyn Assertion> {
            Box::new(crate::pan::MaskPan::new(
                crate::pan::MaskStyle::default(),
                crate::pan::Mode::Mask,
                vec!["application/json".to_owned()],
            ))
        };
        let err = Any::new(vec![allow("10.0.0.0/8"), masker()]).expect_err("any");
        assert_eq!(err.index, 1);
        assert_eq!(err.to_string(), "mask_pan cannot sit inside `any`: it edits the request that goes upstream and rewrites the response body, and `any` decides on request and response heads only");
        assert!(All::new(vec![masker()]).is_err());
        let request_masker: Box<dyn Assertion> = Box::new(crate::pan::MaskPan::for_requests(
            crate::pan::MaskStyle::default(),
        ));
        assert!(Any::new(vec![request_masker]).is_err());
    }

    #[test]
    fn all_needs_every_step() {
        let all = All::new(vec![allow("10.0.0.0/8"), allow("10.1.0.0/16")]).expect("heads");
        assert!(run(&all, "10.1.2.3").is_continue());
        assert!(!run(&all, "10.2.2.3").is_continue());
    }
}
