//! `portcullis eval`: a dry run of a raw HTTP request through the gateway's front gates and
//! the request pipeline of the service it reaches, the same functions the proxy runs
//! (`proxy::admit_request`, `proxy::run_request_pipeline`), without contacting the upstream.
//! Prints each step's verdict and why.

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{anyhow, bail, Context as _};
use pingora::http::RequestHeader;
use portcullis_assertions::{Exchange, Rejection, TraceStep, Verdict};

use crate::credentials::{CredentialPlan, Decision};
use crate::proxy::{admit_request, check_body_size, request_host, run_request_pipeline, Admitted};
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
    let version = match req.version {
        Some(0) => http::Version::HTTP_10,
        _ => http::Version::HTTP_11,
    };
    let mut builder = http::Request::builder()
        .method(method)
        .uri(target)
        .version(version);
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let (parts, ()) = builder.body(()).context("invalid request")?.into_parts();
    let body = raw.get(head_len..).unwrap_or_default().to_vec();
    Ok(RawRequest { parts, body })
}

/// Runs the request through the gateway's own front gates and the request pipeline of the
/// service it reaches (remote work such as key fetches included), without contacting the
/// upstream; returns the report and whether the request would be allowed.
pub async fn evaluate(runtime: &Runtime, request: RawRequest, peer: IpAddr) -> (String, bool) {
    let mut out = String::new();
    let mut head = match pingora_head(&request.parts) {
        Ok(head) => head,
        Err(e) => {
            let _ = writeln!(out, "verdict: DENY 400 malformed-request: {e}");
            return (out, false);
        }
    };
    let host = request_host(&head).map(str::to_owned);
    let path = head.uri.path().to_owned();
    // `eval` reads a raw HTTP/1.1 request: as on a plain listener.
    let (client, admitted) = admit_request(runtime, &mut head, (peer, false));
    let _ = writeln!(
        out,
        "request: {} {} (host {}, client {client})",
        head.method,
        path,
        host.as_deref().unwrap_or("-")
    );
    let decision = match admitted {
        Ok(Admitted::Service(decision)) => decision,
        Ok(Admitted::TokenEndpoint(endpoint)) => {
            let _ = writeln!(
                out,
                "verdict: ANSWERED by the token service's {} endpoint (no service pipeline runs)",
                endpoint.name()
            );
            return (out, true);
        }
        Ok(Admitted::SamlIssuer) => {
            let _ = writeln!(
                out,
                "verdict: ANSWERED by the SAML issuer (no service pipeline runs)"
            );
            return (out, true);
        }
        Ok(Admitted::OProxy(_)) => {
            let _ = writeln!(
                out,
                "verdict: ANSWERED by the OProxy broker (no service pipeline runs)"
            );
            return (out, true);
        }
        Err(rejection) => {
            print_refusal(&mut out, &rejection, None);
            return (out, false);
        }
    };
    let Some(service) = runtime.services.get(decision.service) else {
        return (out, false);
    };
    let _ = writeln!(
        out,
        "service: {} (route {}, upstream {})",
        service.name, service.route, service.upstream.url
    );
    if let Some(forwarded) = &decision.forwarded {
        let _ = writeln!(out, "forwarded path: {forwarded} (canonical form)");
    }
    if let Err(rejection) = check_body_size(service, request.body.len() as u64) {
        print_refusal(&mut out, &rejection, None);
        return (out, false);
    }
    let mut exchange = Exchange::new(runtime.registry.len(), client, peer);
    exchange.enable_trace();
    decision.set_params(&mut exchange);
    for (var, value) in &decision.params {
        let _ = writeln!(out, "${{{}}} = {value}", runtime.registry.name(*var));
    }
    let body = service
        .needs
        .request_body
        .then_some(request.body.as_slice());
    let mut credentials = CredentialPlan::default();
    let verdict =
        run_request_pipeline(service, &mut head, body, &mut exchange, &mut credentials).await;
    write_trace(&mut out, exchange.take_trace());
    print_shadowed(&mut out, &exchange);
    let variables: Vec<String> = exchange
        .set_vars(&runtime.registry)
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    if !variables.is_empty() {
        let _ = writeln!(out, "variables: {}", variables.join(", "));
    }
    match verdict {
        Verdict::Continue => {
            print_credentials(&mut out, service, &credentials, &head);
            let _ = writeln!(
                out,
                "verdict: ALLOW (would be sent to {})",
                service.upstream.url
            );
            (out, true)
        }
        Verdict::Reject(rejection) => {
            print_refusal(
                &mut out,
                &rejection,
                Some(exchange.denied_by.unwrap_or("?")),
            );
            (out, false)
        }
    }
}

/// What the upstream would get of the caller's credentials, and the rule that decided.
fn print_credentials(
    out: &mut String,
    service: &crate::runtime::Service,
    plan: &CredentialPlan,
    head: &RequestHeader,
) {
    let policy = &service.credentials;
    // The same stripping the proxy does, on a copy of the head.
    let outcome = plan.apply(policy, &mut head.clone()).ok().flatten();
    let sent = outcome
        .as_ref()
        .map(|o| policy.labels(o.places).join(", "))
        .filter(|labels| !labels.is_empty())
        .unwrap_or_else(|| "(none present)".to_owned());
    let _ = match &plan.decision {
        Decision::PassThrough => writeln!(
            out,
            "credentials: PASS THROUGH (no step authenticates callers and the service has no `credentials:` setting: the head goes upstream as the steps left it)"
        ),
        Decision::Forward(rule) => writeln!(
            out,
            "credentials: FORWARD {sent} (rule {}: {})",
            rule.name, rule.why
        ),
        Decision::Strip(rule) => writeln!(
            out,
            "credentials: STRIP {sent} (rule {}: {})",
            rule.name, rule.why
        ),
    };
    for note in &plan.notes {
        let _ = writeln!(out, "  {note}");
    }
}

/// The steps in shadow mode and what each would have done (none of it was enforced).
fn print_shadowed(out: &mut String, exchange: &Exchange) {
    let records = exchange.shadow_records();
    if records.is_empty() {
        return;
    }
    let _ = writeln!(out, "shadowed steps (recorded, not enforced):");
    for record in records {
        let code = record
            .code()
            .map(|code| format!(" ({code})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} SHADOW {}{code}",
            record.step,
            record.outcome().label()
        );
    }
}

fn print_refusal(out: &mut String, rejection: &Rejection, step: Option<&str>) {
    let by = step.map(|step| format!(" by {step}")).unwrap_or_default();
    let _ = writeln!(
        out,
        "verdict: DENY {} {}{by}: {}",
        rejection.status.as_u16(),
        rejection.code,
        rejection.detail
    );
}

/// The request as Pingora would hand it to the gateway.
fn pingora_head(parts: &http::request::Parts) -> anyhow::Result<RequestHeader> {
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    // Pingora answers an absolute-form target beside a Host header itself, and otherwise
    // hands the gateway the path and query only.
    if parts.uri.authority().is_some() && parts.headers.contains_key(http::header::HOST) {
        bail!("an absolute-form target beside a Host header (the gateway answers 400 malformed-request)");
    }
    let mut head = RequestHeader::build(parts.method.clone(), target.as_bytes(), None)
        .map_err(|e| anyhow!("{e}"))?;
    head.set_version(parts.version);
    for (name, value) in &parts.headers {
        head.append_header(name.clone(), value.clone())
            .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(head)
}

/// Writes a pipeline's trace as `eval` prints it: one numbered line per step, composites'
/// steps indented beneath them (also used by `portcullis test` for a failing case).
pub fn write_trace(out: &mut String, trace: Vec<TraceStep>) {
    for (index, node) in trace_tree(trace).iter().enumerate() {
        print_step(out, node, &format!("{:>2}.", index + 1), 2);
    }
}

/// A trace step with the steps it held.
pub struct TraceNode {
    pub step: TraceStep,
    pub children: Vec<TraceNode>,
}

/// Rebuilds nesting from a flat trace in which children precede their composite.
#[must_use]
pub fn trace_tree(trace: Vec<TraceStep>) -> Vec<TraceNode> {
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
    let mark = match (step.shadow, step.passed) {
        (Some(_), _) => "SHADOW",
        (None, true) => "PASS",
        (None, false) => "DENY",
    };
    let reason = match step.shadow {
        Some(outcome) => format!("{outcome} (not enforced)"),
        None => step.reason.clone(),
    };
    let pad = " ".repeat(indent);
    // Verdicts line up in one column whatever the nesting.
    let width = 22usize
        .saturating_sub(indent + label.len())
        .max(step.kind.len());
    let _ = writeln!(out, "{pad}{label} {:<width$} {mark}  {reason}", step.kind);
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
