//! The upstream and response phases of a service's pipelines, shared by the proxy's hooks
//! and the buffering forwarder.

use http::header::{CONTENT_ENCODING, TRANSFER_ENCODING};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::ErrorType;
use portcullis_assertions::Verdict;

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
    if svc.response.is_empty() {
        return Ok(());
    }
    let verdict = svc.run_response(
        &PingoraRequestView(req),
        &mut PingoraResponse(resp),
        &mut ctx.exchange,
    );
    if let Verdict::Reject(r) = verdict {
        ctx.reason = Some(r.code);
        // The upstream's head is rewritten into the refusal; its body never reaches the client.
        let answer = crate::problem::render(&r);
        resp.set_status(answer.status)?;
        for name in [CONTENT_ENCODING, TRANSFER_ENCODING] {
            resp.remove_header(&name);
        }
        for (name, _) in &answer.headers {
            resp.remove_header(name);
        }
        for (name, value) in answer.headers {
            resp.append_header(name, value)?;
        }
        ctx.replace_body = Some(answer.body);
        return Ok(());
    }
    ctx.processors = svc.response.response_bodies(
        &PingoraRequestView(req),
        &mut PingoraResponse(resp),
        &mut ctx.exchange,
    );
    Ok(())
}
