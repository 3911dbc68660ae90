//! `issue_saml:` on a service: the caller was authenticated by the service's own request
//! pipeline (an API key, an HMAC signature, a bearer token, ...), and instead of going
//! upstream the request is answered with an assertion the `saml_issuer:` section signs,
//! for the subject and attributes the pipeline's variables give.
//!
//! The service's route, methods, limits and every step apply as to any service; only the
//! destination differs (as a direct answer does in other gateways). An empty subject is
//! refused: an assertion never names nobody.

use std::sync::Arc;

use http::StatusCode;
use portcullis_assertions::template::Template;
use portcullis_assertions::{Exchange, Rejection, RequestView};

use super::{Outcome, SamlIssuer};

/// Longest subject or attribute value put into an assertion.
pub const MAX_VALUE_LEN: usize = 1024;

/// A service's issuing, compiled.
#[derive(Debug)]
pub struct PipelineIssuance {
    pub issuer: Arc<SamlIssuer>,
    /// The `NameID`, usually `${client.id}`.
    pub subject: Template,
    /// Attribute name → its value (one value; an empty one leaves the attribute out).
    pub attributes: Vec<(String, Template)>,
}

/// What one request's assertion says, rendered from its variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub subject: String,
    pub attributes: Vec<(String, Vec<String>)>,
}

impl PipelineIssuance {
    /// The subject and attributes for this request.
    ///
    /// # Errors
    /// `403 no-subject` when the subject renders empty (the pipeline authenticated no
    /// one, e.g. an `any` branch that sets no identity), `403 subject-invalid` when a
    /// value is too long or holds control characters.
    pub fn claims(&self, req: &dyn RequestView, exchange: &Exchange) -> Result<Claims, Rejection> {
        let subject = self.subject.render(req, exchange);
        if subject.trim().is_empty() {
            return Err(Rejection::new(
                StatusCode::FORBIDDEN,
                "no-subject",
                "the request was not authenticated as anyone an assertion could name",
            ));
        }
        check_value(&subject)?;
        let mut attributes = Vec::with_capacity(self.attributes.len());
        for (name, template) in &self.attributes {
            let rendered = template.render(req, exchange);
            check_value(&rendered)?;
            // One value, as rendered: a group name may hold commas (`CN=Admins,OU=Groups`).
            if !rendered.is_empty() {
                attributes.push((name.clone(), vec![rendered]));
            }
        }
        Ok(Claims {
            subject,
            attributes,
        })
    }

    /// Signs the assertion for `claims` now, off the async threads (an RSA signature takes
    /// a millisecond or two), at most one per core at once like the Basic endpoint's
    /// checks; answers its JSON.
    ///
    /// # Errors
    /// `503 issuer-busy` when no signing slot frees up in time; `500` when signing failed
    /// (no randomness, a broken key: the gateway's fault, logged).
    pub async fn sign(&self, claims: Claims) -> Outcome {
        let _permit = super::signing_slot(&self.issuer).await?;
        let issuer = self.issuer.clone();
        let signed = tokio::task::spawn_blocking(move || {
            issuer
                .issue_for(&claims.subject, claims.attributes, jiff::Timestamp::now())
                .map(|issued| (issued, claims.subject))
        })
        .await;
        match signed {
            Ok(Ok((issued, subject))) => {
                // The audit line: which assertion named whom (never the token itself).
                log::info!(
                    "issue_saml: assertion {} for subject {subject:?}, valid {} s",
                    issued.assertion_id,
                    issued.expires_in
                );
                Ok(serde_json::to_vec(&issued).unwrap_or_default())
            }
            Ok(Err(e)) => {
                log::error!("issue_saml: cannot sign an assertion: {e}");
                Err(not_signed())
            }
            Err(e) => {
                log::error!("issue_saml: signing task failed: {e}");
                Err(not_signed())
            }
        }
    }
}

/// An assertion that could not be signed: the gateway's fault.
fn not_signed() -> Rejection {
    Rejection::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "assertion-not-signed",
        "the assertion could not be signed",
    )
}

fn check_value(value: &str) -> Result<(), Rejection> {
    if value.len() > MAX_VALUE_LEN || value.chars().any(char::is_control) {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "subject-invalid",
            format!(
                "the identity to put in the assertion is over {MAX_VALUE_LEN} bytes or holds control characters"
            ),
        ));
    }
    Ok(())
}
