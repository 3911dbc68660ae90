//! Named HMAC key sets: access key id → the client it stands for, its attributes, and one or
//! more secrets (several while a secret is being rotated: any of them verifies).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::exchange::VarId;

/// A secret's bytes. `Debug` never shows them.
#[derive(Clone)]
pub struct SecretBytes(pub Arc<[u8]>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One access key.
#[derive(Debug, Clone)]
pub struct HmacKey {
    pub access_key: Arc<str>,
    /// Becomes `${client.id}`.
    pub client: Arc<str>,
    /// Current secret first; older ones still accepted during rotation.
    pub secrets: Vec<SecretBytes>,
    pub attributes: Vec<(VarId, Arc<str>)>,
}

/// A key set, looked up by access key id.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    by_id: HashMap<Arc<str>, Arc<HmacKey>>,
}

impl KeySet {
    #[must_use]
    pub fn new(keys: Vec<HmacKey>) -> Self {
        KeySet {
            by_id: keys
                .into_iter()
                .map(|k| (k.access_key.clone(), Arc::new(k)))
                .collect(),
        }
    }

    #[must_use]
    pub fn get(&self, access_key: &str) -> Option<&Arc<HmacKey>> {
        self.by_id.get(access_key)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
