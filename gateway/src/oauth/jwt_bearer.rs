//! The JWT-bearer grant (RFC 7523 §2.1): a cloud app proves it is a role account with a JWT
//! signed by a key its platform publishes. Checks, in order: the header's algorithm is on
//! the issuer's allow-list (never `none`, never an HMAC, so a public key cannot be used as a
//! shared secret); the issuer is trusted; the key named by `kid` is in the issuer's
//! published set (fetched again once for an unknown kid); signature; `aud` names our token
//! endpoint or issuer; `exp` (required), `nbf`, `iat` within the leeway, and a bounded
//! lifetime; `sub` present; `jti` not seen before. Only then the policy: may this role
//! account have the scopes it asks for?

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::error::ErrorCode;
use super::remote::{KeyError, RemoteKeySet};
use super::{printable, Grant, OAuthError, TokenService, GRANT_JWT_BEARER};
use crate::store::{now_secs, TokenFormat};

/// Largest assertion read.
pub const MAX_ASSERTION: usize = 16 * 1024;

/// A platform whose role accounts may exchange assertions for tokens.
#[derive(Debug)]
pub struct TrustedIssuer {
    pub issuer: String,
    pub keys: Arc<RemoteKeySet>,
    pub algorithms: Vec<Algorithm>,
    /// The client id the issued tokens are recorded under.
    pub client_id: String,
    pub token_format: TokenFormat,
    pub refresh_tokens: bool,
    pub leeway: u64,
    /// Longest `exp - iat` (or `exp - now`) accepted, seconds.
    pub max_lifetime: i64,
    pub require_jti: bool,
    /// Role account (`sub`) → the scopes it may be granted.
    pub accounts: HashMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    sub: Option<String>,
    jti: Option<String>,
    iat: Option<i64>,
    exp: i64,
}

#[derive(Deserialize)]
struct IssOnly {
    iss: Option<String>,
}

fn invalid(why: impl Into<std::borrow::Cow<'static, str>>) -> OAuthError {
    ErrorCode::InvalidGrant.error(why)
}

/// The `iss` of an assertion, read before its signature is checked, only to pick the
/// issuer whose keys will check it.
fn unverified_issuer(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<IssOnly>(&bytes).ok()?.iss
}

impl TokenService {
    /// Validates a jwt-bearer assertion and the role account's rights; returns the grant
    /// to issue (its `jti` is consumed when it is issued).
    ///
    /// # Errors
    /// `invalid_grant`, `invalid_scope`, or `temporarily_unavailable` when the issuer's
    /// keys cannot be had.
    // Long on purpose: RFC 7523 §3's checks in the RFC's order, each a few lines, so a reader
    // can tick them off against the RFC.
    pub async fn jwt_bearer(
        &self,
        assertion: &str,
        scope: Option<&str>,
    ) -> Result<Grant, OAuthError> {
        if assertion.len() > MAX_ASSERTION {
            return Err(invalid("the assertion is too long"));
        }
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| invalid("the assertion is not a signed JWT with a supported algorithm"))?;
        let iss = unverified_issuer(assertion)
            .ok_or_else(|| invalid("the assertion has no iss claim"))?;
        let Some(trusted) = self.trusted.iter().find(|t| t.issuer == iss) else {
            return Err(invalid(format!(
                "assertions from issuer \"{}\" are not accepted",
                printable(&iss)
            )));
        };
        if !trusted.algorithms.contains(&header.alg) {
            return Err(invalid(format!(
                "algorithm {:?} is not accepted for this issuer",
                header.alg
            )));
        }
        let key = match trusted.keys.key(header.kid.as_deref()).await {
            Ok(k) => k,
            Err(KeyError::UnknownKid(kid)) => {
                return Err(invalid(format!(
                    "the assertion is signed by key \"{}\", which the issuer does not publish",
                    printable(&kid)
                )))
            }
            Err(KeyError::Unavailable(why)) => {
                log::warn!("jwt-bearer: {why}");
                return Err(ErrorCode::TemporarilyUnavailable.error(
                    "the issuer's signing keys cannot be fetched right now; try again later",
                ));
            }
        };
        if key.algorithm.is_some_and(|a| a != header.alg) {
            return Err(invalid("the assertion's algorithm does not match its key"));
        }
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&trusted.issuer]);
        let endpoint = self.token_endpoint.as_str();
        v.set_audience(&[endpoint, self.issuer.as_str()]);
        v.leeway = trusted.leeway;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        let data =
            jsonwebtoken::decode::<AssertionClaims>(assertion, &key.key, &v).map_err(|e| {
                invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => "the assertion has expired",
                    ErrorKind::ImmatureSignature => "the assertion is not valid yet (nbf)",
                    ErrorKind::InvalidAudience => {
                        "the assertion's aud does not name this token endpoint"
                    }
                    ErrorKind::InvalidIssuer => "the assertion's iss is wrong",
                    ErrorKind::InvalidSignature => "the assertion's signature does not verify",
                    ErrorKind::InvalidAlgorithm => "the assertion's algorithm does not fit its key",
                    ErrorKind::MissingRequiredClaim(c) if c == "sub" => {
                        "the assertion has no sub claim"
                    }
                    ErrorKind::MissingRequiredClaim(c) if c == "exp" => {
                        "the assertion has no exp claim"
                    }
                    ErrorKind::MissingRequiredClaim(c) if c == "aud" => {
                        "the assertion has no aud claim"
                    }
                    _ => "the assertion is malformed",
                })
            })?;
        let claims = data.claims;
        let now = now_secs();
        let leeway = i64::try_from(trusted.leeway).unwrap_or(0);
        if let Some(iat) = claims.iat {
            if iat > now + leeway {
                return Err(invalid("the assertion was issued in the future (iat)"));
            }
        }
        let born = claims.iat.unwrap_or(now);
        if claims.exp - born > trusted.max_lifetime {
            return Err(invalid(format!(
                "the assertion lives longer than the {} s this issuer may use",
                trusted.max_lifetime
            )));
        }
        let sub = claims.sub.unwrap_or_default();
        if sub.is_empty() {
            return Err(invalid("the assertion has no sub claim"));
        }
        let once = match (&claims.jti, trusted.require_jti) {
            (Some(jti), _) => Some((
                format!("jwt-bearer\n{}\n{jti}", trusted.issuer),
                claims.exp + leeway,
            )),
            (None, true) => return Err(invalid("the assertion has no jti claim")),
            (None, false) => None,
        };
        let Some(allowed) = trusted.accounts.get(&sub) else {
            return Err(invalid(format!(
                "role account \"{}\" may not obtain tokens here",
                printable(&sub)
            )));
        };
        let whom = format!("role account \"{}\"", printable(&sub));
        let scope = Self::grant_scope(scope, allowed, &whom)?;
        Ok(Grant {
            client_id: trusted.client_id.clone(),
            subject: sub,
            scope,
            grant_type: GRANT_JWT_BEARER,
            format: trusted.token_format,
            refresh: trusted.refresh_tokens,
            family_id: None,
            previous_refresh: None,
            source: Some(format!(
                "{} {}",
                trusted.issuer,
                claims.jti.as_deref().unwrap_or("-")
            )),
            once,
        })
    }
}

/// The part of an assertion read before its signature is checked, over any input.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::test_cases(4096)))]

        #[test]
        fn unverified_issuer_never_panics(token in "[A-Za-z0-9._=-]{0,200}", payload in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = unverified_issuer(&token);
            let _ = crate::oauth::looks_like_jwt(&token);
            let crafted = format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(&payload));
            let _ = unverified_issuer(&crafted);
            let _ = jsonwebtoken::decode_header(&token);
        }
    }
}
