//! The SigV4 signing-key cache: a signing key costs four chained HMACs and changes only
//! with the secret and the scope's date, so each is derived once per secret and day.

use super::sigv4;

/// SigV4 signing keys already derived, keyed by the secret's address and length (secrets
/// live in the step's key set as long as the step) and the scope date. Bounded: emptied
/// when full.
#[derive(Debug, Default)]
pub struct SigningKeyCache(std::sync::Mutex<std::collections::HashMap<SecretAndDay, [u8; 32]>>);

/// A secret's address and length, and a scope date (`YYYYMMDD`).
type SecretAndDay = (usize, usize, [u8; 8]);

const SIGNING_KEY_CACHE: usize = 4096;

impl SigningKeyCache {
    /// The signing key of `secret` for `scope`, derived once per day and secret.
    pub fn get(&self, secret: &[u8], scope: &sigv4::Scope) -> [u8; 32] {
        let mut date = [0u8; 8];
        let d = scope.date.as_bytes();
        if d.len() != date.len() {
            return sigv4::signing_key(secret, scope);
        }
        date.copy_from_slice(d);
        let id = (secret.as_ptr() as usize, secret.len(), date);
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(k) = map.get(&id) {
            return *k;
        }
        let k = sigv4::signing_key(secret, scope);
        if map.len() >= SIGNING_KEY_CACHE {
            map.clear();
        }
        map.insert(id, k);
        k
    }
}
