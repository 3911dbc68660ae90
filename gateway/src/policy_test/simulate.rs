//! One request through a loaded policy in this process, on the functions the proxy runs:
//! the front gates and the request pipeline ([`admit_request`], [`run_request_pipeline`],
//! as `eval` runs them), request-body rewriting, the head that goes upstream
//! ([`prepare_upstream_request`], the upstream phase), then a stubbed upstream answer
//! through the response phase ([`run_response_phase`]) and the body processors. Nothing
//! is sent anywhere. Used by `portcullis test` and `portcullis replay`.

use std::net::IpAddr;

use http::{HeaderMap, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use portcullis_assertions::{process_body, Exchange, Rejection, TraceStep, Verdict};

use crate::credentials::CredentialPlan;
use crate::proxy::{
    admit_request, check_body_size, prepare_upstream_request, run_request_pipeline,
    run_response_phase, with_response_headers, Admitted, PingoraRequest, PingoraRequestView,
    ResponseBody,
};
use crate::runtime::{Runtime, Service};

/// A request as the client sends it.
pub struct SimRequest {
    pub head: RequestHeader,
    pub body: Vec<u8>,
    /// The TCP peer.
    pub peer: IpAddr,
    /// The request came in over HTTPS (a `tls:` listener).
    pub https: bool,
}

/// The upstream's stubbed answer.
#[derive(Debug, Clone)]
pub struct StubAnswer {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Default for StubAnswer {
    fn default() -> Self {
        StubAnswer {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

/// What the gateway decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The request went upstream.
    Allowed,
    /// The gateway answered with a refusal: status, problem code, and the step that
    /// refused (none for the front gates).
    Denied {
        status: u16,
        code: &'static str,
        detail: String,
        step: Option<&'static str>,
    },
    /// The gateway answered itself (token endpoint, SAML issuer, `issue_saml`).
    Answered(&'static str),
}

/// The request as it went upstream.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The answer the client gets.
#[derive(Debug, Clone)]
pub struct ClientAnswer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Everything observed of one request.
#[derive(Debug)]
pub struct Outcome {
    pub service: Option<String>,
    /// The service's index in the policy, when the request reached one.
    pub service_index: Option<usize>,
    pub decision: Decision,
    /// The index of the request step that refused, among its pipeline's top-level steps.
    pub denied_step: Option<usize>,
    pub upstream: Option<UpstreamRequest>,
    pub response: Option<ClientAnswer>,
    /// Variables set by the steps, by name.
    pub variables: Vec<(String, String)>,
    /// The request steps' trace (as `eval` prints it).
    pub request_trace: Vec<TraceStep>,
    /// The response steps' trace.
    pub response_trace: Vec<TraceStep>,
}

impl Outcome {
    fn refused(service: Option<(&Service, usize)>, rejection: &Rejection) -> Outcome {
        let answer = crate::problem::render(rejection);
        let mut headers = HeaderMap::new();
        for (name, value) in answer.headers {
            headers.append(name, value);
        }
        Outcome {
            service: service.map(|(s, _)| s.name.to_string()),
            service_index: service.map(|(_, index)| index),
            decision: Decision::Denied {
                status: rejection.status.as_u16(),
                code: rejection.code,
                detail: rejection.detail.to_string(),
                step: None,
            },
            denied_step: None,
            upstream: None,
            response: Some(ClientAnswer {
                status: answer.status.as_u16(),
                headers,
                body: answer.body.to_vec(),
            }),
            variables: Vec::new(),
            request_trace: Vec::new(),
            response_trace: Vec::new(),
        }
    }
}

/// Runs `request` through `runtime` as the gateway would, with `stub` as the upstream's
/// answer when the request gets through.
pub async fn simulate(runtime: &Runtime, request: SimRequest, stub: &StubAnswer) -> Outcome {
    let SimRequest {
        mut head,
        body,
        peer,
        https,
    } = request;
    let (client, admitted) = admit_request(runtime, &mut head, (peer, https));
    let decision = match admitted {
        Ok(Admitted::Service(decision)) => decision,
        Ok(Admitted::TokenEndpoint(endpoint)) => {
            return answered(endpoint.name());
        }
        Ok(Admitted::SamlIssuer) => return answered("saml_issuer"),
        Ok(Admitted::OProxy(_)) => return answered("oproxy"),
        Err(rejection) => return Outcome::refused(None, &rejection),
    };
    let Some(service) = runtime.services.get(decision.service) else {
        return answered("no service");
    };
    let at = Some((service, decision.service));
    if let Err(rejection) = check_body_size(service, body.len() as u64) {
        return Outcome::refused(at, &rejection);
    }
    let mut exchange = Exchange::new(runtime.registry.len(), client, peer);
    exchange.enable_trace();
    decision.set_params(&mut exchange);
    let read_body = service.needs.request_body.then_some(body.as_slice());
    let mut credentials = CredentialPlan::default();
    let verdict = run_request_pipeline(
        service,
        &mut head,
        read_body,
        &mut exchange,
        &mut credentials,
    )
    .await;
    let request_trace = exchange.take_trace();
    let mut outcome = match verdict {
        Verdict::Reject(rejection) => {
            let mut outcome = Outcome::refused(at, &with_response_headers(&rejection, &exchange));
            outcome.decision = Decision::Denied {
                status: rejection.status.as_u16(),
                code: rejection.code,
                detail: rejection.detail.to_string(),
                step: exchange.denied_by,
            };
            outcome.denied_step = exchange.denied_step;
            outcome
        }
        Verdict::Continue => {
            exchange.enable_trace();
            let mut outcome = if let Some(issuing) = service.issue_saml.clone() {
                issue_saml(&issuing, &head, &exchange, at).await
            } else {
                let body = match read_body {
                    Some(read) => service
                        .rewrite_request_body(read, &mut exchange)
                        .unwrap_or_else(|| read.to_vec()),
                    None => body,
                };
                let forwarded = decision.forwarded.as_deref();
                let mut outcome = proxied(
                    (runtime, service, at),
                    (&head, forwarded, body, https),
                    &mut exchange,
                    &credentials,
                    stub,
                );
                outcome.response_trace = exchange.take_trace();
                outcome
            };
            outcome.service = Some(service.name.to_string());
            outcome
        }
    };
    outcome.variables = exchange
        .set_vars(&runtime.registry)
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    outcome.request_trace = request_trace;
    outcome
}

fn answered(by: &'static str) -> Outcome {
    Outcome {
        service: None,
        service_index: None,
        decision: Decision::Answered(by),
        denied_step: None,
        upstream: None,
        response: None,
        variables: Vec::new(),
        request_trace: Vec::new(),
        response_trace: Vec::new(),
    }
}

/// A service that answers with a SAML assertion instead of an upstream.
async fn issue_saml(
    issuing: &crate::saml_issuer::pipeline::PipelineIssuance,
    head: &RequestHeader,
    exchange: &Exchange,
    at: Option<(&Service, usize)>,
) -> Outcome {
    let signed = match issuing.claims(&PingoraRequestView(head), exchange) {
        Ok(claims) => issuing.sign(claims).await,
        Err(rejection) => Err(rejection),
    };
    match signed {
        Ok(json) => {
            let mut outcome = answered("issue_saml");
            outcome.service_index = at.map(|(_, index)| index);
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            outcome.response = Some(ClientAnswer {
                status: 200,
                headers,
                body: json,
            });
            outcome
        }
        Err(rejection) => Outcome::refused(at, &rejection),
    }
}

/// The allowed request's way upstream and the stubbed answer's way back.
fn proxied(
    (runtime, service, at): (&Runtime, &Service, Option<(&Service, usize)>),
    (head, forwarded, body, https): (&RequestHeader, Option<&str>, Vec<u8>, bool),
    exchange: &mut Exchange,
    credentials: &CredentialPlan,
    stub: &StubAnswer,
) -> Outcome {
    let internal = |what: &str| {
        Rejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            format!("the gateway could not build {what}"),
        )
    };
    let mut upstream = head.clone();
    let trusted = runtime.trusted_proxies.contains(exchange.peer_ip);
    // The first target stands for whichever the pool would choose.
    let host = service.upstream.pool.members().targets[0]
        .host_header
        .clone();
    if prepare_upstream_request(
        service,
        &host,
        forwarded,
        &mut upstream,
        exchange,
        (
            runtime.forwarded_headers,
            crate::proxy::Arrival {
                trusted_peer: trusted,
                https,
            },
        ),
        credentials,
    )
    .is_err()
    {
        return Outcome::refused(at, &internal("the upstream request"));
    }
    let read = service.needs.request_body.then_some(body.as_slice());
    if let Verdict::Reject(rejection) =
        service.run_upstream(&mut PingoraRequest(&mut upstream), read, exchange)
    {
        // The proxy answers an upstream-phase refusal as it is (`fail_to_proxy`).
        let mut outcome = Outcome::refused(at, &rejection);
        if let Decision::Denied { step, .. } = &mut outcome.decision {
            *step = exchange.denied_by;
        }
        return outcome;
    }
    let sent = UpstreamRequest {
        method: upstream.method.to_string(),
        target: upstream.uri.path_and_query().map_or_else(
            || upstream.uri.path().to_owned(),
            |pq| pq.as_str().to_owned(),
        ),
        headers: upstream.headers.clone(),
        body,
    };
    let answer = match stubbed_response(service, head, exchange, stub) {
        Ok(answer) => answer,
        Err(rejection) => {
            let mut outcome = Outcome::refused(at, &rejection);
            outcome.decision = Decision::Allowed;
            outcome.upstream = Some(sent);
            return outcome;
        }
    };
    Outcome {
        service: Some(service.name.to_string()),
        service_index: at.map(|(_, index)| index),
        decision: Decision::Allowed,
        denied_step: None,
        upstream: Some(sent),
        response: Some(answer),
        variables: Vec::new(),
        request_trace: Vec::new(),
        response_trace: Vec::new(),
    }
}

/// The stubbed answer through the response phase and the body processors, as the proxy
/// runs them (a refusal reached over the whole body withholds it).
fn stubbed_response(
    service: &Service,
    head: &RequestHeader,
    exchange: &mut Exchange,
    stub: &StubAnswer,
) -> Result<ClientAnswer, Rejection> {
    let bad_stub = || {
        Rejection::new(
            StatusCode::BAD_GATEWAY,
            "upstream-unavailable",
            "the stubbed upstream answer is not a valid response head",
        )
    };
    let mut resp =
        ResponseHeader::build(stub.status, Some(stub.headers.len())).map_err(|_| bad_stub())?;
    for (name, value) in &stub.headers {
        resp.append_header(name.clone(), value.as_str())
            .map_err(|_| bad_stub())?;
    }
    let body = run_response_phase(service, head, &mut resp, exchange).map_err(|_| bad_stub())?;
    let body = match body {
        ResponseBody::Replaced { body, .. } => body.to_vec(),
        ResponseBody::Processed(mut processors) => {
            let (out, _changed) = process_body(&mut processors, &stub.body, true);
            if let Some(refusal) = processors.iter().find_map(|p| p.refusal()) {
                return Err(refusal);
            }
            out
        }
    };
    Ok(ClientAnswer {
        status: resp.status.as_u16(),
        headers: resp.headers.clone(),
        body,
    })
}
