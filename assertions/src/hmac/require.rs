//! The `require_hmac` step's run: the scheme finds and checks the claimed signature
//! (`verify_sigv4.rs`, `verify_sigv2.rs`, `custom.rs`), then what every scheme shares
//! (`step.rs`): the time window, replay protection, and the client's variables.

use super::clock::check_request_time;
use super::step::{RequireHmac, Scheme};
use super::{verify_sigv2, verify_sigv4};
use crate::exchange::Exchange;
use crate::verdict::Verdict;
use crate::{Assertion, Needs, Request};

impl Assertion for RequireHmac {
    fn kind(&self) -> &'static str {
        "require_hmac"
    }

    fn phases(&self) -> crate::Phases {
        crate::Phases::REQUEST
    }

    fn needs(&self) -> Needs {
        Needs::BODY
    }

    fn on_request(&self, req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        let body = req.body.unwrap_or_default();
        let outcome = match &self.scheme {
            Scheme::SigV4 { .. } => verify_sigv4::check(self, req, body, x),
            Scheme::SigV2 { .. } => verify_sigv2::check(self, req, body, x),
            Scheme::Custom(custom) => custom.check(self, req, body, x),
        };
        let (claim, key) = match outcome {
            Ok(Some(found)) => found,
            Ok(None) => return Verdict::Reject(self.missing()),
            Err(refusal) => return Verdict::Reject(refusal),
        };
        let now = self.clock.now();
        let checked = check_request_time(claim.time, claim.expires, now, self.max_skew)
            .and_then(|until| self.check_replay(&claim, now, until));
        if let Err(refusal) = checked {
            return Verdict::Reject(refusal);
        }
        x.set(self.client_id, key.client.clone());
        x.set(self.key_id_var, key.access_key.clone());
        for (var, value) in &key.attributes {
            x.set(*var, value.clone());
        }
        x.note(|| format!("key {} of client \"{}\"", claim.access_key, key.client));
        Verdict::Continue
    }
}
