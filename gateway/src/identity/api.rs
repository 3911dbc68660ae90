//! The compiled `identity_api:` section: who may use the userauth API and what it accepts.

use std::collections::HashSet;
use std::fmt;

use portcullis_assertions::ip::IpList;

use crate::basic_auth::Users;

/// The compiled `identity_api:` section.
pub struct IdentityApi {
    pub allow_from: IpList,
    pub users: Option<Users>,
    /// Users of the file who may add and delete.
    pub writers: HashSet<String>,
    /// The interfaces entries may name; empty: any.
    pub interfaces: Vec<String>,
    /// Bounds the argon2 verifications running at once.
    pub verifications: tokio::sync::Semaphore,
}

impl fmt::Debug for IdentityApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityApi")
            .field("allow_from", &self.allow_from)
            .field("users", &self.users)
            .field("writers", &self.writers.len())
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}
