//! What the proxy keeps per request, from the first hook to the log line.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use portcullis_assertions::{process_body, BodyProcessor, Exchange, Rejection};

use crate::connection::ConnectionControl;
use crate::credentials::{CredentialOutcome, CredentialPlan};
use crate::runtime::{Runtime, Service};

/// Per-request state.
pub struct RequestCtx {
    /// The policy the request started on (it finishes on it, whatever reloads happen).
    pub(super) runtime: Option<Arc<Runtime>>,
    /// The service the request was routed to, with the policy that holds it.
    pub(super) routed: Option<Routed>,
    pub exchange: Exchange,
    pub(super) start: Instant,
    /// Body bytes seen while streaming (for the size limit).
    pub(super) body_seen: u64,
    /// The refusal code, for the log.
    pub(super) reason: Option<&'static str>,
    /// A response-side refusal replaces the upstream body with this.
    pub(super) replace_body: Option<Bytes>,
    /// The request body, when the pipeline read it (outbound signing hashes it).
    pub(super) body: Option<Bytes>,
    /// What the response pipeline does to this response's body (masking, recompression).
    pub(super) processors: Vec<Box<dyn BodyProcessor>>,
    /// When the request body was rewritten: how much of the replay has been swapped so far.
    pub(super) replay_rewritten: Option<usize>,
    /// The canonical path to forward, when it differs from the one the client sent.
    pub forwarded_path: Option<String>,
    /// A refusal reached after Pingora took over (the upstream phase), answered as it is
    /// by `fail_to_proxy`.
    pub(super) pending_refusal: Option<Rejection>,
    /// An HTTP/2 stream's place under the connection caps, held until the request ends.
    pub(super) stream_permit: Option<crate::connection::Permit>,
    /// The stream was one too many for the caps: refused before anything else.
    pub(super) stream_refused: Option<crate::connection::Refusal>,
    /// The connection's deadlines, moved on as the request is read and answered.
    pub(super) connection: Option<Arc<ConnectionControl>>,
    /// What to do with the caller's credentials upstream, decided after the pipeline passed.
    pub(super) credentials: CredentialPlan,
    /// What was done with them, once the request went upstream (for the log).
    pub(super) credential_outcome: Option<CredentialOutcome>,
    /// The request as received, in the access log's capture mode.
    pub(super) captured: Option<crate::capture::CapturedRequest>,
    /// The target of the current attempt, holding its slot until the request ends.
    pub(super) attempt: Option<crate::upstream::Lease>,
    /// Targets tried and failed (a mask of member indices), so a retry goes elsewhere.
    pub(super) tried: u64,
    /// Attempts made so far.
    pub(super) tries: u32,
    /// Counted in the gateway's requests in flight (until the log line is written).
    pub(super) in_flight: bool,
}

/// A routed request's service, held with the policy it belongs to: the index can only be
/// read against that policy.
#[derive(Clone)]
pub struct Routed {
    runtime: Arc<Runtime>,
    service: usize,
}

impl Routed {
    /// `None` when `service` is not one of `runtime`'s.
    #[must_use]
    pub fn new(runtime: Arc<Runtime>, service: usize) -> Option<Routed> {
        (service < runtime.services.len()).then_some(Routed { runtime, service })
    }

    #[must_use]
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    #[must_use]
    pub fn service(&self) -> &Service {
        &self.runtime.services[self.service]
    }
}

impl RequestCtx {
    /// The service this request was routed to, with its policy.
    pub(super) fn routed(&self) -> Option<Routed> {
        self.routed.clone()
    }

    pub(super) fn service(&self) -> Option<&Service> {
        self.routed.as_ref().map(Routed::service)
    }

    /// Like [`RequestCtx::process_chunk`], masking Pingora's own buffer when it is not
    /// shared and a single processor can work in place (no copy of the chunk).
    pub fn process_owned_chunk(&mut self, chunk: Option<Bytes>, end: bool) -> Option<Bytes> {
        let chunk = match chunk {
            Some(bytes) if !bytes.is_empty() && self.processors.len() == 1 => {
                match bytes.try_into_mut() {
                    Ok(mut owned) => {
                        let done = self
                            .processors
                            .first_mut()
                            .and_then(|p| p.process_in_place(&mut owned, end));
                        if let Some((emit, changed)) = done {
                            self.count_changed(changed);
                            owned.truncate(emit);
                            return (emit > 0 || end).then(|| owned.freeze());
                        }
                        Some(owned.freeze())
                    }
                    Err(shared) => Some(shared),
                }
            }
            other => other,
        };
        self.process_chunk(chunk.as_deref(), end)
    }

    /// Runs a response body chunk through this response's processors; `None` when nothing
    /// is to be sent yet.
    pub fn process_chunk(&mut self, chunk: Option<&[u8]>, end: bool) -> Option<Bytes> {
        let (out, changed) = process_body(&mut self.processors, chunk.unwrap_or_default(), end);
        self.count_changed(changed);
        (!out.is_empty() || end).then(|| Bytes::from(out))
    }

    /// Counts items (card numbers) a body processor changed, for the service's metric.
    fn count_changed(&self, changed: usize) {
        if changed > 0 {
            if let Some(svc) = self.service() {
                svc.metrics.body_items_changed(changed);
            }
        }
    }

    /// A refusal a body processor reached after seeing the whole body.
    #[must_use]
    pub fn body_refusal(&self) -> Option<Rejection> {
        self.processors.iter().find_map(|p| p.refusal())
    }

    /// True when the client was cut off for sending its body too slowly.
    pub(super) fn body_timed_out(&self) -> bool {
        self.connection.as_ref().is_some_and(|c| c.body_timed_out())
    }

    /// Records why a request was refused, for the log.
    pub fn refused(&mut self, code: &'static str) {
        self.reason = Some(code);
    }

    /// When a response-side refusal replaced the body: `Some(None)` for a chunk to drop,
    /// `Some(Some(problem))` at the end. `None` when the body passes unchanged.
    pub fn take_replacement(&mut self, end: bool) -> Option<Option<Bytes>> {
        self.replace_body.as_ref()?;
        Some(if end { self.replace_body.take() } else { None })
    }
}
