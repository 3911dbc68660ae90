//! The upstream and response phases of a service's pipelines, shared by the proxy's hooks
//! and the buffering forwarder.

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::ErrorType;
use portcullis_assertions::{BodyProcessor, Exchange, Verdict};

use super::context::RequestCtx;
use super::heads::{PingoraRequestView, PingoraResponse};
use crate::runtime::Service;

/// A refusal in the upstream phase (outbound signing failed) stops the proxying; the
/// rejection itself, with its code, detail and headers, is what `fail_to_proxy` answers.
pub fn upstream_verdict(verdict: Verdict, ctx: &mut RequestCtx) -> Result<()> {
    match verdict {
        Verdict::Continue => Ok(()),
        Verdict::Reject(r) => {
            ctx.reason = Some(r.code);
            let status = r.status.as_u16();
            ctx.pending_refusal = Some(r);
            Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "upstream phase refused the request",
            ))
        }
    }
}

/// Runs the response pipeline on an upstream response head; a refusal turns the response
/// into a problem+json answer whose body replaces the upstream's.
pub fn apply_response_pipeline(
    svc: &Service,
    req: &RequestHeader,
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    match run_response_phase(svc, req, resp, &mut ctx.exchange)? {
        ResponseBody::Replaced { code, body } => {
            ctx.reason = Some(code);
            ctx.replace_body = Some(body);
        }
        ResponseBody::Processed(processors) => ctx.processors = processors,
    }
    Ok(())
}

/// What becomes of the upstream's response body after the response head's phase.
pub enum ResponseBody {
    /// A response step refused: the body is this problem+json answer (`code` for the log).
    Replaced { code: &'static str, body: Bytes },
    /// The body goes through these processors (masking, recompression), in step order;
    /// none when no step changes bodies.
    Processed(Vec<Box<dyn BodyProcessor>>),
}

/// The response head's phase as the proxy runs it, for the proxy and `portcullis test`:
/// the response steps, then the headers request steps asked for. A refusal replaces the
/// head in `resp` and says what replaces the body.
///
/// # Errors
/// A header Pingora cannot build.
pub fn run_response_phase(
    svc: &Service,
    req: &RequestHeader,
    resp: &mut ResponseHeader,
    exchange: &mut Exchange,
) -> Result<ResponseBody> {
    let body = run_response_steps(svc, req, resp, exchange)?;
    // Headers request steps asked for (the RateLimit fields) go on whatever answers, in
    // place of the upstream's own of those names; several steps' fields of one name are all
    // sent (two rate_limit steps' RateLimit items make one list on the wire).
    let added = exchange.response_headers();
    for (name, _) in added {
        resp.remove_header(name);
    }
    for (name, value) in added {
        resp.append_header(name.clone(), value.clone())?;
    }
    Ok(body)
}

fn run_response_steps(
    svc: &Service,
    req: &RequestHeader,
    resp: &mut ResponseHeader,
    exchange: &mut Exchange,
) -> Result<ResponseBody> {
    if svc.response.is_empty() {
        return Ok(ResponseBody::Processed(Vec::new()));
    }
    let verdict = svc.run_response(
        &PingoraRequestView(req),
        &mut PingoraResponse(resp),
        exchange,
    );
    if let Verdict::Reject(r) = verdict {
        // The refusal replaces the upstream's answer whole: none of its headers (cookies,
        // redirects, internal names, ranges) reach the client, nor its body.
        let answer = crate::problem::render(&r);
        let mut refusal = ResponseHeader::build(answer.status, Some(answer.headers.len()))?;
        for (name, value) in answer.headers {
            refusal.append_header(name, value)?;
        }
        *resp = refusal;
        return Ok(ResponseBody::Replaced {
            code: r.code,
            body: answer.body,
        });
    }
    Ok(ResponseBody::Processed(svc.response.response_bodies(
        &PingoraRequestView(req),
        &mut PingoraResponse(resp),
        exchange,
    )))
}
