//! What gathering ([`super::gather`]) read for a policy: the only place building looks for
//! secrets, addresses and file contents. Kept apart from the gathering itself so the
//! compile context can hold it without depending on the policy's spec types.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::files::{read_bounded, FileKind};
use crate::runtime::Secret;

/// What gathering found; building reads only this.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    /// Secrets by name; one that could not be read was reported and is absent.
    pub(crate) secrets: HashMap<String, Secret>,
    /// Upstream host and port → the addresses it resolved to (`None`: it did not).
    pub(crate) addresses: HashMap<(String, u16), Option<Vec<SocketAddr>>>,
    /// Files the policy names (CA bundles, signing keys) → their bytes, or why not.
    pub(crate) files: HashMap<PathBuf, Result<Vec<u8>, String>>,
}

impl Gathered {
    /// The address an upstream's host resolved to.
    pub(crate) fn address(&self, host: &str, port: u16) -> Option<SocketAddr> {
        self.all_addresses(host, port)
            .and_then(|found| found.first().copied())
    }

    /// Every address an upstream's host resolved to (for a pool that follows a DNS name).
    pub(crate) fn all_addresses(&self, host: &str, port: u16) -> Option<&[SocketAddr]> {
        self.addresses
            .get(&(host.to_owned(), port))
            .and_then(Option::as_deref)
    }

    /// A file's bytes, or why it could not be read.
    pub(crate) fn file(&self, path: &Path) -> Result<&[u8], String> {
        match self.files.get(path) {
            Some(Ok(bytes)) => Ok(bytes),
            Some(Err(why)) => Err(why.clone()),
            None => Err(format!("{} was not read", path.display())),
        }
    }
}

impl Gathered {
    pub(crate) fn read(&mut self, path: PathBuf, kind: FileKind) {
        self.files
            .entry(path)
            .or_insert_with_key(|path| read_bounded(path, kind).map_err(|e| e.to_string()));
    }
}
