//! What a relying party checks once the signature holds: issuer, validity window,
//! audience, and a bearer subject confirmation that is still valid and meant for us.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::assertion::{VerifiedAssertion, BEARER};

/// What this relying party expects of an assertion.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    /// Accepted issuers (entity IDs); the assertion's `Issuer` must be one.
    pub issuers: &'a [String],
    /// Our entity ID: every `AudienceRestriction` must name it.
    pub audience: &'a str,
    /// When set, a bearer confirmation's `Recipient` must equal it (e.g. the token URL).
    pub recipient: Option<&'a str>,
    /// The current time (a parameter, so tests use a fixed clock).
    pub now: Timestamp,
    /// Clock skew tolerated on every time bound.
    pub skew: Duration,
    /// Refuse assertions without an `AudienceRestriction` (recommended).
    pub require_audience: bool,
}

/// Why a verified assertion is not acceptable here and now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("the assertion's issuer is not one this gateway trusts")]
    WrongIssuer,
    #[error("the assertion is not valid yet")]
    NotYetValid,
    #[error("the assertion has expired")]
    Expired,
    #[error("the assertion is not addressed to this audience")]
    WrongAudience,
    #[error("the assertion has no audience restriction")]
    NoAudience,
    #[error("the assertion has no bearer subject confirmation")]
    NoBearerConfirmation,
    #[error("the bearer subject confirmation has no NotOnOrAfter")]
    BearerWithoutExpiry,
    #[error("the bearer subject confirmation has expired")]
    BearerExpired,
    #[error("the bearer subject confirmation is not valid yet")]
    BearerNotYetValid,
    #[error("the bearer subject confirmation names another recipient")]
    WrongRecipient,
}

impl VerifiedAssertion {
    /// Checks the assertion against `exp`, first failure reported.
    ///
    /// # Errors
    /// A [`ValidationError`] naming the first check that fails.
    pub fn validate(&self, exp: &Expectations<'_>) -> Result<(), ValidationError> {
        let skew = SignedDuration::try_from(exp.skew).unwrap_or(SignedDuration::MAX);
        let late = exp.now.checked_add(skew).unwrap_or(Timestamp::MAX);
        let early = exp.now.checked_sub(skew).unwrap_or(Timestamp::MIN);

        if !exp.issuers.contains(&self.issuer) {
            return Err(ValidationError::WrongIssuer);
        }
        if let Some(ri) = &self.response_issuer {
            if !exp.issuers.iter().any(|i| i == ri) {
                return Err(ValidationError::WrongIssuer);
            }
        }

        if let Some(c) = &self.conditions {
            if c.not_before.is_some_and(|nb| late < nb) {
                return Err(ValidationError::NotYetValid);
            }
            if c.not_on_or_after.is_some_and(|noa| early >= noa) {
                return Err(ValidationError::Expired);
            }
        }

        let restrictions = self
            .conditions
            .as_ref()
            .map(|c| c.audience_restrictions.as_slice())
            .unwrap_or_default();
        if restrictions.is_empty() {
            if exp.require_audience {
                return Err(ValidationError::NoAudience);
            }
        } else if !restrictions
            .iter()
            .all(|r| r.iter().any(|a| a == exp.audience))
        {
            return Err(ValidationError::WrongAudience);
        }

        // At least one bearer confirmation must hold; report why the first one fails.
        let mut first_failure = None;
        for c in self.confirmations.iter().filter(|c| c.method == BEARER) {
            let verdict = match (c.not_before, c.not_on_or_after) {
                (Some(nb), _) if late < nb => Err(ValidationError::BearerNotYetValid),
                (_, None) => Err(ValidationError::BearerWithoutExpiry),
                (_, Some(noa)) if early >= noa => Err(ValidationError::BearerExpired),
                _ => match exp.recipient {
                    Some(r) if c.recipient.as_deref() != Some(r) => {
                        Err(ValidationError::WrongRecipient)
                    }
                    _ => Ok(()),
                },
            };
            match verdict {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first_failure.get_or_insert(e);
                }
            }
        }
        Err(first_failure.unwrap_or(ValidationError::NoBearerConfirmation))
    }
}
