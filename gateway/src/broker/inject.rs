//! `inject_oauth_token`: the request goes upstream with `Authorization: Bearer <the
//! provider session's access token>`. The token is fetched at the step's place in the
//! request pipeline (after the steps before it authenticated the caller), through the
//! pipeline's await seam, and written in the upstream phase, on the head that goes
//! upstream after the caller's own credentials were removed.

use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::{HeaderValue, StatusCode};
use portcullis_assertions::template::Template;
use portcullis_assertions::{
    Assertion, AwaitedWork, Exchange, Phases, Rejection, Request, RequestHead, Verdict,
};

use super::outbound::{BrokerError, OutboundBroker};

/// The compiled step.
#[derive(Debug)]
pub struct InjectOAuthToken {
    pub broker: Arc<OutboundBroker>,
    pub provider: String,
    /// One session per calling identity: the key, e.g. `${client.id}`.
    pub session_key: Option<Template>,
}

/// What the awaited work hands to the step.
type Fetched = Result<Arc<str>, BrokerError>;

impl Assertion for InjectOAuthToken {
    fn kind(&self) -> &'static str {
        "inject_oauth_token"
    }

    fn phases(&self) -> Phases {
        Phases {
            request: true,
            upstream_request: true,
            awaits_io: true,
            ..Phases::default()
        }
    }

    fn awaits(&self, req: &Request<'_>, x: &mut Exchange) -> Option<AwaitedWork> {
        let broker = self.broker.clone();
        let provider = self.provider.clone();
        let session_key = self
            .session_key
            .as_ref()
            .map(|template| template.render(&*req.head, x));
        Some(Box::pin(async move {
            let fetched: Fetched = broker.access_token(&provider, session_key.as_deref()).await;
            Box::new(fetched) as portcullis_assertions::Awaited
        }))
    }

    fn on_request(&self, _req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        let refused = |status, code, detail: String| {
            let rejection = Rejection::new(status, code, detail);
            Verdict::Reject(if status == StatusCode::SERVICE_UNAVAILABLE {
                rejection.with_header(http::header::RETRY_AFTER, HeaderValue::from_static("5"))
            } else {
                rejection
            })
        };
        match x.take_awaited::<Fetched>() {
            Some(Ok(token)) => match HeaderValue::from_str(&format!("Bearer {token}")) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    x.set_upstream_authorization(value);
                    Verdict::Continue
                }
                Err(_) => refused(
                    StatusCode::BAD_GATEWAY,
                    "broker-token-invalid",
                    format!("provider {}'s access token cannot be sent in a header", self.provider),
                ),
            },
            Some(Err(BrokerError::SessionInvalid(why))) => refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker-session-invalid",
                format!(
                    "the gateway's session with provider {} is not usable ({why}): an administrator must make a new handshake",
                    self.provider
                ),
            ),
            Some(Err(BrokerError::Unavailable(why))) => refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker-unavailable",
                format!("no access token for provider {}: {why}", self.provider),
            ),
            None => refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker-unavailable",
                format!("no access token for provider {}", self.provider),
            ),
        }
    }

    fn on_upstream_request(
        &self,
        head: &mut dyn RequestHead,
        _body: Option<&[u8]>,
        x: &mut Exchange,
    ) -> Verdict {
        match x.take_upstream_authorization() {
            Some(value) => {
                head.set_header(AUTHORIZATION, value);
                Verdict::Continue
            }
            // The request phase always sets it before the request may go upstream; going
            // without it would send the request unauthenticated (or with nothing at all).
            None => Verdict::Reject(Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker-unavailable",
                "no access token was prepared for the upstream",
            )),
        }
    }
}
