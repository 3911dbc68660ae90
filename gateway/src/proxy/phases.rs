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
    drop_response_hop_by_hop(resp);
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

/// Headers of the upstream's answer meant for the gateway alone (RFC 9110 §7.6.1): those
/// its `Connection` names, and the hop-by-hop ones. Passed on, an upstream's
/// `Connection: X-Internal` would make the client's next hop drop a header, and an
/// `Upgrade: h2c` or `Keep-Alive` would speak for a connection that is not the client's. A
/// `101` keeps `Upgrade` (the switch it announces is the client's).
fn drop_response_hop_by_hop(resp: &mut ResponseHeader) {
    let switching = resp.status == http::StatusCode::SWITCHING_PROTOCOLS;
    // `close` and `keep-alive`, what nearly every answer says, are connection options, not
    // header names: left out, the usual answer collects nothing (and allocates nothing).
    let nominated: Vec<http::HeaderName> = resp
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| {
            !token.eq_ignore_ascii_case(b"close") && !token.eq_ignore_ascii_case(b"keep-alive")
        })
        .filter_map(|token| http::HeaderName::from_bytes(token).ok())
        .filter(|name| !(switching && name == http::header::UPGRADE))
        .filter(|name| {
            *name != http::header::CONTENT_LENGTH && *name != http::header::TRANSFER_ENCODING
        })
        .collect();
    for name in &nominated {
        resp.remove_header(name);
    }
    for name in ["keep-alive", "proxy-connection", "te"] {
        resp.remove_header(name);
    }
    if !switching {
        resp.remove_header(&http::header::UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstreams_hop_by_hop_headers_stop_at_the_gateway() {
        let mut resp = ResponseHeader::build(200, None).expect("head");
        for (name, value) in [
            ("connection", "X-Secret, close"),
            ("x-secret", "internal"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("content-length", "5"),
            ("x-kept", "yes"),
        ] {
            resp.append_header(name, value).expect("header");
        }
        drop_response_hop_by_hop(&mut resp);
        for gone in [
            "x-secret",
            "keep-alive",
            "proxy-connection",
            "upgrade",
            "te",
        ] {
            assert!(!resp.headers.contains_key(gone), "{gone}");
        }
        assert_eq!(resp.headers["x-kept"], "yes");
        assert_eq!(resp.headers["content-length"], "5");

        let mut switching = ResponseHeader::build(101, None).expect("head");
        switching
            .append_header("connection", "Upgrade")
            .expect("header");
        switching
            .append_header("upgrade", "websocket")
            .expect("header");
        drop_response_hop_by_hop(&mut switching);
        assert_eq!(switching.headers["upgrade"], "websocket");
    }
}
