//! `sign_hmac`: signs the request the gateway sends upstream, after every request-side step
//! and the gateway's own rewriting, so an internal app can call an HMAC-protected API
//! without holding the secret.

use std::sync::Arc;

use http::StatusCode;

use super::custom::CustomScheme;
use super::sign::{sign_custom, sign_sigv2, sign_sigv4, SigV4Params};
use super::{Clock, SecretBytes};
use crate::exchange::Exchange;
use crate::head::RequestHead;
use crate::verdict::{Rejection, Verdict};
use crate::{Assertion, Needs, Request};

/// How to sign.
#[derive(Debug)]
pub enum OutboundScheme {
    SigV4 {
        region: String,
        service: String,
        content_sha256_header: bool,
        normalize_path: bool,
    },
    SigV2,
    Custom(CustomScheme),
}

/// The compiled `sign_hmac` step.
#[derive(Debug)]
pub struct SignHmac {
    pub scheme: OutboundScheme,
    pub access_key: Arc<str>,
    pub secret: SecretBytes,
    pub clock: Arc<dyn Clock>,
}

impl Assertion for SignHmac {
    fn kind(&self) -> &'static str {
        "sign_hmac"
    }

    fn phases(&self) -> crate::Phases {
        // on_request only notes what will happen; the signing is upstream.
        crate::Phases {
            upstream_request: true,
            ..crate::Phases::REQUEST
        }
    }

    fn needs(&self) -> Needs {
        Needs::BODY
    }

    fn on_request(&self, _req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        x.note(|| format!("signs the upstream request with key {}", self.access_key));
        Verdict::Continue
    }

    fn on_upstream_request(
        &self,
        head: &mut dyn RequestHead,
        body: Option<&[u8]>,
        x: &mut Exchange,
    ) -> Verdict {
        let body = body.unwrap_or_default();
        let now = self.clock.now();
        let secret = &self.secret.0;
        let signed = match &self.scheme {
            OutboundScheme::SigV4 {
                region,
                service,
                content_sha256_header,
                normalize_path,
            } => {
                let p = SigV4Params {
                    access_key: &self.access_key,
                    secret,
                    region,
                    service,
                    content_sha256_header: *content_sha256_header,
                    normalize_path: *normalize_path,
                };
                sign_sigv4(head, body, &p, now).map(|(creq, sts)| {
                    x.note(|| format!("outbound canonical request:\n{creq}"));
                    x.note(|| format!("outbound string to sign:\n{sts}"));
                })
            }
            OutboundScheme::SigV2 => sign_sigv2(head, &self.access_key, secret, now).map(|sts| {
                x.note(|| format!("outbound string to sign:\n{sts}"));
            }),
            OutboundScheme::Custom(c) => {
                sign_custom(head, body, c, &self.access_key, secret, now, x).map(|sts| {
                    x.note(|| format!("outbound string to sign:\n{sts}"));
                })
            }
        };
        match signed {
            Ok(()) => Verdict::Continue,
            Err(e) => Verdict::Reject(Rejection::new(
                StatusCode::BAD_GATEWAY,
                "signing-failed",
                format!("the gateway could not sign the upstream request: {e}"),
            )),
        }
    }
}
