//! The gateway's own token-signing keys: the first one listed signs, every one listed
//! verifies and is published at `/.well-known/jwks.json`, so a new key can be added ahead
//! of the switch and an old one kept until the last token it signed has expired.

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// One signing key.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    pub jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 PEM private key for `algorithm` (ES256 or RS256).
    ///
    /// # Errors
    /// The key does not parse or does not fit the algorithm.
    pub fn from_pem(kid: &str, algorithm: Algorithm, pem: &[u8]) -> Result<SigningKey, String> {
        let encoding = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            other => {
                return Err(format!(
                    "{other:?} is not a signing algorithm the gateway uses: ES256 or RS256"
                ))
            }
        }
        .map_err(|e| format!("not a PKCS#8 PEM private key for {algorithm:?}: {e}"))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm)
            .map_err(|e| format!("cannot derive the public key: {e}"))?;
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(match algorithm {
            Algorithm::RS256 => KeyAlgorithm::RS256,
            _ => KeyAlgorithm::ES256,
        });
        let decoding =
            DecodingKey::from_jwk(&jwk).map_err(|e| format!("cannot build the verifier: {e}"))?;
        Ok(SigningKey {
            kid: kid.to_owned(),
            algorithm,
            encoding,
            decoding,
            jwk,
        })
    }
}

/// The key ring: signing key first.
#[derive(Debug)]
pub struct SigningKeys {
    keys: Vec<SigningKey>,
    /// The JWKS document, rendered once.
    pub jwks_json: Vec<u8>,
}

impl SigningKeys {
    /// # Errors
    /// No key, or two with the same kid.
    pub fn new(keys: Vec<SigningKey>) -> Result<SigningKeys, String> {
        if keys.is_empty() {
            return Err("the token service needs at least one signing key".to_owned());
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.kid == k.kid) {
                return Err(format!("signing key id \"{}\" is listed twice", k.kid));
            }
        }
        let set = JwkSet {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
        };
        let jwks_json = serde_json::to_vec(&set).unwrap_or_default();
        Ok(SigningKeys { keys, jwks_json })
    }

    /// The key new tokens are signed with.
    #[must_use]
    pub fn active(&self) -> &SigningKey {
        &self.keys[0]
    }

    #[must_use]
    pub fn by_kid(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    #[must_use]
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut a: Vec<Algorithm> = self.keys.iter().map(|k| k.algorithm).collect();
        a.dedup();
        a
    }
}
