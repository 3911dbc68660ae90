//! `portcullis eval`: a dry run of a raw HTTP request through the request pipeline of the
//! service it matches, without contacting the upstream. Prints each step's verdict and why.

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{anyhow, bail, Context as _};
use portcullis_assertions::ip::client_ip;
use portcullis_assertions::{Exchange, TraceStep, Verdict};

use crate::proxy::route_request;
use crate::runtime::Runtime;

/// Largest request file read.
const MAX_REQUEST_FILE: usize = 16 * 1024 * 1024;

/// A raw request parsed from a `.http` file.
#[derive(Debug)]
pub struct RawRequest {
    pub parts: http::request::Parts,
    pub body: Vec<u8>,
}

/// Parses `METHOD target HTTP/1.1`, headers, a blank line and an optional body. Bare `\n`
/// line endings are accepted, since such files are written in editors.
///
/// # Errors
/// A request that does not parse, with what is wrong.
pub fn parse_request(raw: &[u8]) -> anyhow::Result<RawRequest> {
    if raw.len() > MAX_REQUEST_FILE {
        bail!("request file larger than {MAX_REQUEST_FILE} bytes");
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let status = req
        .parse(raw)
        .map_err(|e| anyhow!("not an HTTP request: {e}"))?;
    let httparse::Status::Complete(head_len) = status else {
        bail!("the request head is incomplete: it needs a blank line after the headers");
    };
    let method = req.method.ok_or_else(|| anyhow!("no method"))?;
    let target = req.path.ok_or_else(|| anyhow!("no request target"))?;
    let mut builder = http::Request::builder().method(method).uri(target);
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let (parts, ()) = builder.body(()).context("invalid request")?.into_parts();
    let body = raw.get(head_len..).unwrap_or_default().to_vec();
    Ok(RawRequest { parts, body })
}

/// Runs the request; returns the report and whether the request would be allowed.
#[must_use]
pub fn evaluate(rt: &Runtime, mut req: RawRequest, peer: IpAddr) -> (String, bool) {
    let mut out = String::new();
    let host = req
        .parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.parts.uri.host().map(str::to_owned));
    let path = req.parts.uri.path().to_owned();
    let client = client_ip(
        peer,
        req.parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok()),
        &rt.trusted_proxies,
    );
    let _ = writeln!(
        out,
        "request: {} {} (host {}, client {client})",
        req.parts.method,
        path,
        host.as_deref().unwrap_or("-")
    );
    let decision = route_request(rt, host.as_deref(), &path);
    let Some((svc, decision)) = (match decision {
        Ok(d) => rt.services.get(d.service).map(|svc| (svc, d)),
        Err(r) => {
            let _ = writeln!(
                out,
                "verdict: DENY {} {}: {}",
                r.status.as_u16(),
                r.code,
                r.detail
            );
            return (out, false);
        }
    }) else {
        return (out, false);
    };
    let _ = writeln!(
        out,
        "service: {} (route {}, upstream {})",
        svc.name, svc.route, svc.upstream.url
    );
    if let Some(forwarded) = &decision.forwarded {
        let _ = writeln!(out, "forwarded path: {forwarded} (canonical form)");
    }
    if req.body.len() as u64 > svc.max_request_body {
        let _ = writeln!(
            out,
            "verdict: DENY 413 body-too-large: {} bytes, the service accepts {}",
            req.body.len(),
            svc.max_request_body
        );
        return (out, false);
    }
    let mut x = Exchange::new(rt.registry.len(), client, peer);
    x.enable_trace();
    let body = svc.needs.request_body.then_some(req.body.as_slice());
    let verdict = svc.run_request(&mut req.parts, body, &mut x);
    for (i, node) in trace_tree(x.take_trace()).iter().enumerate() {
        print_step(&mut out, node, &format!("{:>2}.", i + 1), 2);
    }
    let vars: Vec<String> = x
        .set_vars(&rt.registry)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !vars.is_empty() {
        let _ = writeln!(out, "variables: {}", vars.join(", "));
    }
    match verdict {
        Verdict::Continue => {
            let _ = writeln!(
                out,
                "verdict: ALLOW (would be sent to {})",
                svc.upstream.url
            );
            (out, true)
        }
        Verdict::Reject(r) => {
            let _ = writeln!(
                out,
                "verdict: DENY {} {} by {}: {}",
                r.status.as_u16(),
                r.code,
                x.denied_by.unwrap_or("?"),
                r.detail
            );
            (out, false)
        }
    }
}

/// A trace step with the steps it held.
struct TraceNode {
    step: TraceStep,
    children: Vec<TraceNode>,
}

/// Rebuilds nesting from a flat trace in which children precede their composite.
fn trace_tree(trace: Vec<TraceStep>) -> Vec<TraceNode> {
    let mut pending: Vec<Vec<TraceNode>> = Vec::new();
    for step in trace {
        let d = step.depth;
        if pending.len() < d + 2 {
            pending.resize_with(d + 2, Vec::new);
        }
        let children = std::mem::take(&mut pending[d + 1]);
        pending[d].push(TraceNode { step, children });
    }
    pending.into_iter().next().unwrap_or_default()
}

fn print_step(out: &mut String, node: &TraceNode, label: &str, indent: usize) {
    let step = &node.step;
    let mark = if step.passed { "PASS" } else { "DENY" };
    let pad = " ".repeat(indent);
    // Verdicts line up in one column whatever the nesting.
    let width = 22usize
        .saturating_sub(indent + label.len())
        .max(step.kind.len());
    let _ = writeln!(
        out,
        "{pad}{label} {:<width$} {mark}  {}",
        step.kind, step.reason
    );
    for note in &step.notes {
        let _ = writeln!(out, "{pad}      {note}");
    }
    for child in &node.children {
        print_step(out, child, "-", indent + 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_crlf_and_lf_requests_with_bodies() {
        let r =
            parse_request(b"POST /w?x=1 HTTP/1.1\r\nHost: a.test\r\nX-Api-Key: k\r\n\r\n{\"a\":1}")
                .expect("parses");
        assert_eq!(r.parts.method, http::Method::POST);
        assert_eq!(r.parts.uri.path(), "/w");
        assert_eq!(r.parts.headers["x-api-key"], "k");
        assert_eq!(r.body, b"{\"a\":1}");
        let r = parse_request(b"GET / HTTP/1.1\nHost: a.test\n\n").expect("parses LF");
        assert!(r.body.is_empty());
    }

    #[test]
    fn incomplete_requests_are_explained() {
        let e = parse_request(b"GET / HTTP/1.1\r\nHost: a").expect_err("incomplete");
        assert!(e.to_string().contains("blank line"), "{e}");
        assert!(parse_request(b"\x01\x02").is_err());
    }
}
