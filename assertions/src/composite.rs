//! `all` and `any`: sequences and alternatives of steps.

use std::fmt::Write as _;

use http::StatusCode;

use crate::exchange::Exchange;
use crate::head::{RequestHead, RequestView, ResponseHead};
use crate::verdict::{Rejection, Verdict};
use crate::{needs_of, run_request, run_response, run_upstream, Assertion, Needs, Request};

/// Every step must pass, in order (the default for a pipeline).
#[derive(Debug)]
pub struct All {
    steps: Vec<Box<dyn Assertion>>,
}

impl All {
    #[must_use]
    pub fn new(steps: Vec<Box<dyn Assertion>>) -> Self {
        All { steps }
    }
}

impl Assertion for All {
    fn prefetch(&self, req: &dyn crate::RequestView) -> Option<crate::bearer::Prefetch> {
        crate::prefetch_all(&self.steps, req)
    }

    fn kind(&self) -> &'static str {
        "all"
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

    fn on_upstream_request(
        &self,
        head: &mut dyn RequestHead,
        body: Option<&[u8]>,
        x: &mut Exchange,
    ) -> Verdict {
        run_upstream(&self.steps, head, body, x)
    }

    fn rewrites_request_body(&self) -> bool {
        self.steps.iter().any(|s| s.rewrites_request_body())
    }

    fn rewrite_request_body(&self, body: &mut [u8], x: &mut Exchange) -> usize {
        self.steps
            .iter()
            .map(|s| s.rewrite_request_body(body, x))
            .sum()
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
}

impl Any {
    #[must_use]
    pub fn new(branches: Vec<Box<dyn Assertion>>) -> Self {
        Any { branches }
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
    fn prefetch(&self, req: &dyn crate::RequestView) -> Option<crate::bearer::Prefetch> {
        crate::prefetch_all(&self.branches, req)
    }

    fn kind(&self) -> &'static str {
        "any"
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
        let any = Any::new(vec![allow("10.0.0.0/8"), allow("192.168.0.0/16")]);
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
    fn all_needs_every_step() {
        let all = All::new(vec![allow("10.0.0.0/8"), allow("10.1.0.0/16")]);
        assert!(run(&all, "10.1.2.3").is_continue());
        assert!(!run(&all, "10.2.2.3").is_continue());
    }
}
