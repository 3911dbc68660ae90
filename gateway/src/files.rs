//! Every file a policy names is read here: regular files only, and never more than the
//! limit for its kind.
//!
//! A size taken from metadata says nothing for `/dev/zero`, `/proc` files or a FIFO (which
//! would block the loader forever), and a policy, a secret or a CA bundle read whole could
//! take all memory. The same loader runs on `run`, `/api/reload` and SIGHUP, so a bad name
//! in a reloaded file must fail like any other mistake, not hang or abort the gateway.

use std::fmt;
use std::io::Read as _;
use std::path::Path;

/// What a file is for, which sets how large it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// The policy or an included file.
    Policy,
    /// A secret (`secrets: {name: {file: ...}}`).
    Secret,
    /// A PEM bundle of CA certificates.
    Certificates,
    /// A private or public key in PEM.
    Key,
    /// A raw HTTP request for `eval`.
    Request,
    /// The SAML issuer's users file.
    Users,
    /// An identity provider's SAML metadata.
    Metadata,
    /// Captured requests for `portcullis replay` (JSON lines).
    Capture,
    /// The policy's `hosts_file` (upstream names and their addresses).
    Hosts,
    /// A `require_api_key` step's `keys_file` (a million keys is about 72 MB).
    ApiKeys,
}

impl FileKind {
    /// The most bytes a file of this kind may hold.
    #[must_use]
    pub fn limit(self) -> u64 {
        match self {
            FileKind::Policy => 4 * 1024 * 1024,
            FileKind::Secret | FileKind::Key => 64 * 1024,
            FileKind::Certificates => 1024 * 1024,
            FileKind::Request => 16 * 1024 * 1024,
            FileKind::Users => 4 * 1024 * 1024,
            FileKind::Metadata => 4 * 1024 * 1024,
            FileKind::Capture => 1024 * 1024 * 1024,
            FileKind::Hosts => 1024 * 1024,
            FileKind::ApiKeys => 512 * 1024 * 1024,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            FileKind::Policy => "policy file",
            FileKind::Secret => "secret file",
            FileKind::Certificates => "certificate file",
            FileKind::Key => "key file",
            FileKind::Request => "request file",
            FileKind::Users => "users file",
            FileKind::Metadata => "SAML metadata file",
            FileKind::Capture => "capture file",
            FileKind::Hosts => "hosts file",
            FileKind::ApiKeys => "API keys file",
        }
    }
}

/// Why a file was not read. Its text names the file and never its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError(String);

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FileError {}

/// Reads `path` whole if it is a regular file within `kind`'s limit.
///
/// # Errors
/// A message naming the file: missing, unreadable, not a regular file, or too large.
pub fn read_bounded(path: &Path, kind: FileKind) -> Result<Vec<u8>, FileError> {
    let noun = kind.noun();
    let shown = path.display();
    let fail = |why: String| FileError(format!("cannot read {noun} {shown}: {why}"));
    // Checked before opening: opening a FIFO blocks until someone writes to it.
    let metadata = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if !metadata.is_file() {
        return Err(fail("not a regular file".to_owned()));
    }
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(fail("not a regular file".to_owned()));
    }
    let limit = kind.limit();
    let mut out = Vec::with_capacity(usize::try_from(metadata.len().min(limit)).unwrap_or(0));
    // One byte past the limit tells a file that is too large from one that fits exactly.
    file.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| fail(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(fail(format!(
            "larger than the {limit} bytes a {noun} may hold"
        )));
    }
    Ok(out)
}

/// [`read_bounded`] for text.
///
/// # Errors
/// As [`read_bounded`], or the file is not UTF-8.
pub fn read_bounded_text(path: &Path, kind: FileKind) -> Result<String, FileError> {
    let bytes = read_bounded(path, kind)?;
    String::from_utf8(bytes).map_err(|_| {
        FileError(format!(
            "cannot read {} {}: not UTF-8 text",
            kind.noun(),
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, b"s3cret\n").expect("write");
        assert_eq!(
            read_bounded(&path, FileKind::Secret).expect("read"),
            b"s3cret\n"
        );
        let exact = vec![b'a'; 64 * 1024];
        std::fs::write(&path, &exact).expect("write");
        assert_eq!(
            read_bounded(&path, FileKind::Secret).expect("read").len(),
            exact.len()
        );
    }

    #[test]
    fn devices_fifos_folders_and_oversized_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 64 * 1024 + 1]).expect("write");
        let err = read_bounded(&big, FileKind::Secret).expect_err("too large");
        assert!(
            err.to_string()
                .contains("larger than the 65536 bytes a secret file may hold"),
            "{err}"
        );
        for special in [Path::new("/dev/zero"), dir.path()] {
            let err = read_bounded(special, FileKind::Policy).expect_err("special");
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let err = read_bounded(&fifo, FileKind::Secret).expect_err("fifo");
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
        let err = read_bounded(&dir.path().join("missing"), FileKind::Key).expect_err("missing");
        assert!(err.to_string().starts_with("cannot read key file"), "{err}");
    }
}
