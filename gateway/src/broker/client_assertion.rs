//! `private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core §9): the gateway authenticates at a
//! provider's token endpoint with a short-lived JWT signed by its own private key instead of
//! a shared client secret. The provider holds only the public key, so nothing that lets
//! someone act as the gateway is ever sent or stored at its end.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The form parameter's fixed value (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long an assertion is valid: long enough for one call, short enough that a captured
/// one is of no use later (the provider also refuses a `jti` seen twice).
const LIFETIME_SECS: i64 = 60;

/// The gateway's key for one provider.
pub struct ClientAssertionKey {
    key_id: Option<String>,
    algorithm: Algorithm,
    key: EncodingKey,
}

impl std::fmt::Debug for ClientAssertionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAssertionKey")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: i64,
    exp: i64,
}

impl ClientAssertionKey {
    /// A PKCS#8 PEM private key for `algorithm` (`RS256` or `ES256`).
    ///
    /// # Errors
    /// The key does not parse or does not fit the algorithm.
    pub fn from_pem(
        pem: &[u8],
        algorithm: Algorithm,
        key_id: Option<String>,
    ) -> Result<ClientAssertionKey, String> {
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            other => return Err(format!("{other:?} is not supported: RS256 or ES256")),
        }
        .map_err(|error| format!("not a PEM private key for {algorithm:?}: {error}"))?;
        Ok(ClientAssertionKey {
            key_id,
            algorithm,
            key,
        })
    }

    /// A signed assertion for one call to `token_url`: issuer and subject the client id,
    /// audience the token endpoint, a random `jti`, valid for a minute from `now`.
    ///
    /// # Errors
    /// No randomness, or signing failed.
    pub fn assertion(&self, client_id: &str, token_url: &str, now: i64) -> Result<String, String> {
        let jti = super::sealing::random_bytes::<16>()
            .map(hex::encode)
            .map_err(|error| format!("no randomness for the assertion's jti: {error}"))?;
        let mut header = Header::new(self.algorithm);
        header.kid.clone_from(&self.key_id);
        let claims = Claims {
            iss: client_id,
            sub: client_id,
            aud: token_url,
            jti,
            iat: now,
            exp: now + LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|error| format!("signing the client assertion failed: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn assertions_verify_with_the_public_key_and_carry_the_rfc_7523_claims() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let private =
            std::fs::read(root.join("fixtures/oauth/cloud-rs256-a.key.pem")).expect("key");
        let public = std::fs::read(root.join("fixtures/oauth/cloud-rs256-a.pub.pem")).expect("pub");
        let key = ClientAssertionKey::from_pem(&private, Algorithm::RS256, Some("k1".into()))
            .expect("key");
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let one = key
            .assertion("gateway-client", "https://idp.test/token", now)
            .expect("one");
        let two = key
            .assertion("gateway-client", "https://idp.test/token", now)
            .expect("two");
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["https://idp.test/token"]);
        validation.set_issuer(&["gateway-client"]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        let decoding = DecodingKey::from_rsa_pem(&public).expect("public");
        let data = jsonwebtoken::decode::<serde_json::Value>(&one, &decoding, &validation)
            .expect("verifies");
        assert_eq!(data.header.kid.as_deref(), Some("k1"));
        assert_eq!(data.claims["sub"], "gateway-client");
        assert_eq!(data.claims["exp"].as_i64(), Some(now + 60));
        let jti = |token: &str| {
            jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation)
                .expect("verifies")
                .claims["jti"]
                .clone()
        };
        assert_ne!(jti(&one), jti(&two), "every assertion has its own jti");
        // Another audience is refused by the provider's check.
        validation.set_audience(&["https://other.test/token"]);
        assert!(jsonwebtoken::decode::<serde_json::Value>(&one, &decoding, &validation).is_err());
        assert!(ClientAssertionKey::from_pem(&private, Algorithm::ES256, None).is_err());
    }
}
