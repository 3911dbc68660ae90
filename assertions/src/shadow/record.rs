//! What a shadowed step would have done to one request: the outcome, and the tally a body
//! processor fills in as the body streams by.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use http::StatusCode;

use crate::verdict::Rejection;

/// What a shadowed step would have done to one request. Ordered: when several phases of a
/// step ran, the record keeps the greatest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShadowOutcome {
    /// It would have let the request (or response) through unchanged.
    WouldAllow,
    /// It would have changed a head or a body (set or removed a header, signed, masked).
    WouldChange,
    /// It would have refused.
    WouldDeny,
    /// It could not decide: its store or key set was unavailable (a 500, 503 or 504
    /// refusal).
    Error,
}

impl ShadowOutcome {
    /// Every outcome, in metric order.
    pub const ALL: [ShadowOutcome; 4] = [
        ShadowOutcome::WouldAllow,
        ShadowOutcome::WouldChange,
        ShadowOutcome::WouldDeny,
        ShadowOutcome::Error,
    ];

    /// The name used in metrics, the access log and traces.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            ShadowOutcome::WouldAllow => "would_allow",
            ShadowOutcome::WouldChange => "would_change",
            ShadowOutcome::WouldDeny => "would_deny",
            ShadowOutcome::Error => "error",
        }
    }

    /// A refusal's outcome: a failure to decide, or a denial.
    pub(crate) fn of(rejection: &Rejection) -> Self {
        match rejection.status {
            StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => ShadowOutcome::Error,
            _ => ShadowOutcome::WouldDeny,
        }
    }
}

/// What a shadowed body processor found, filled in as the body streams by (the access log
/// and the metrics read it once the response is done).
#[derive(Debug, Default)]
pub struct BodyTally {
    pub(crate) items: AtomicU64,
    pub(crate) refused: OnceLock<&'static str>,
}

/// One shadowed step's verdict on one request.
#[derive(Debug, Clone)]
pub struct ShadowRecord {
    /// The step's number among its service's shadowed steps (for resolved metric handles).
    pub slot: u16,
    /// The step, named by its list, position and kind: `request[1].require_api_key`.
    pub step: Arc<str>,
    outcome: ShadowOutcome,
    items: u64,
    code: Option<&'static str>,
    pub(crate) body: Option<Arc<BodyTally>>,
}

impl ShadowRecord {
    pub(crate) fn new(slot: u16, step: Arc<str>) -> Self {
        ShadowRecord {
            slot,
            step,
            outcome: ShadowOutcome::WouldAllow,
            items: 0,
            code: None,
            body: None,
        }
    }

    pub(crate) fn merge(&mut self, outcome: ShadowOutcome, items: u64, code: Option<&'static str>) {
        if outcome > self.outcome {
            self.outcome = outcome;
            self.code = code.or(self.code);
        }
        self.items += items;
    }

    /// What the step would have done, body included.
    #[must_use]
    pub fn outcome(&self) -> ShadowOutcome {
        let body = self
            .body
            .as_ref()
            .map_or(ShadowOutcome::WouldAllow, |tally| {
                if tally.refused.get().is_some() {
                    ShadowOutcome::WouldDeny
                } else if tally.items.load(Ordering::Relaxed) > 0 {
                    ShadowOutcome::WouldChange
                } else {
                    ShadowOutcome::WouldAllow
                }
            });
        self.outcome.max(body)
    }

    /// How many items (card numbers) the step would have changed in bodies.
    #[must_use]
    pub fn items(&self) -> u64 {
        self.items
            + self
                .body
                .as_ref()
                .map_or(0, |tally| tally.items.load(Ordering::Relaxed))
    }

    /// The problem code the step would have answered with, when it would have refused.
    #[must_use]
    pub fn code(&self) -> Option<&'static str> {
        if self.outcome() < ShadowOutcome::WouldDeny {
            return None;
        }
        self.code
            .or_else(|| self.body.as_ref().and_then(|t| t.refused.get().copied()))
    }
}
