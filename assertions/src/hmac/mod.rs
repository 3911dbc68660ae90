//! `require_hmac`: the caller signs the request with a shared secret instead of sending it.
//!
//! Schemes: AWS Signature Version 4 (Authorization header or presigned URL), AWS Signature
//! Version 2 (S3 REST: header or query form), and `template`, an operator-defined
//! string-to-sign for APIs with their own HMAC scheme. Every scheme checks the key, the
//! signature (constant time, every active secret of the key), the request time against a
//! clock-skew window, and refuses a signature already seen inside that window.
//!
//! Which file owns what:
//! - `step.rs`: what the step holds ([`RequireHmac`], [`Scheme`]) and the decision every
//!   scheme shares (key lookup, constant-time comparison, replay, the unsigned refusal);
//!   `require.rs`: the step's run (scheme dispatch, time window, variables).
//! - `verify_sigv4.rs`, `verify_sigv2.rs`: a request's SigV4 (header or presigned) and
//!   SigV2 (header or query) signature, found and checked; `custom.rs` the same for
//!   `template` schemes.
//! - `sigv4.rs`, `sigv2.rs`: the schemes themselves as pure functions (parsing,
//!   canonicalisation, string to sign, HMAC), checked against the AWS test vectors.
//! - `clock.rs`: the clock, the date forms requests carry, the skew and expiry window.
//! - `signing_key_cache.rs`: derived SigV4 signing keys, sharded and bounded.
//! - `keys.rs`: key sets (access key → client, secrets); `replay.rs`: signatures seen.
//! - `sign.rs`, `outbound.rs`: signing requests (`portcullis sign`, `sign_hmac` upstream).
//! - `tests.rs` (AWS vectors, parser fuzzing), `verify_tests.rs` (the step end to end).

pub mod custom;
pub mod keys;
pub mod outbound;
pub mod replay;
pub mod sign;
pub mod sigv2;
pub mod sigv4;

mod clock;
mod require;
mod signing_key_cache;
mod step;
mod verify_sigv2;
mod verify_sigv4;

pub use clock::{parse_amz_date, parse_any_date, parse_http_date, Clock, FixedClock, SystemClock};
pub use keys::{HmacKey, KeySet, SecretBytes};
pub use replay::{ReplayCache, Seen};
pub use signing_key_cache::SigningKeyCache;
pub use step::{sha256_hex, Replay, RequireHmac, Scheme, SharedReplay, EMPTY_SHA256};
pub use verify_sigv2::percent_decode;

pub(crate) use step::{fail, verify_with_key, Claim};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod verify_tests;
