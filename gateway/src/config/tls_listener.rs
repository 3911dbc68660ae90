//! `tls:`: the proxy's HTTPS listeners. The addresses take effect at start; the certificate
//! and key are read at every load, so a reload with renewed files serves them to the next
//! connection (and a reload with a broken, mismatched or expired pair is refused, keeping
//! the running one).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::context::CompileContext;
use super::values::Listen;
use super::yaml::Spanned;
use crate::files::FileKind;
use crate::tls_termination::TlsTermination;

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerSpec {
    /// Addresses the HTTPS listeners bind, `HOST:PORT` (one or a list). Takes effect at start.
    pub listen: Listen,
    /// PEM file of the certificate chain, the gateway's certificate first (relative to the
    /// policy file).
    pub certificate: Spanned<String>,
    /// PEM file of the private key (PKCS#8, PKCS#1 or SEC1), relative to the policy file.
    pub key: Spanned<String>,
    /// Offer HTTP/2 (ALPN `h2`, then `http/1.1`). Default `false`: HTTP/1.1 only.
    #[serde(default)]
    pub http2: bool,
}

/// The files `tls:` names, for gathering.
pub(crate) fn files(spec: &TlsListenerSpec) -> [(&str, FileKind); 2] {
    [
        (spec.certificate.value.as_str(), FileKind::Certificates),
        (spec.key.value.as_str(), FileKind::Key),
    ]
}

/// The acceptor of `tls:`; `None` when a file is missing or wrong (reported at its option).
pub(crate) fn compile(
    spec: &Spanned<TlsListenerSpec>,
    context: &mut CompileContext<'_>,
) -> Option<TlsTermination> {
    let tls = &spec.value;
    if tls.listen.0.is_empty() {
        context.err(
            spec.loc,
            "tls.listen",
            "tls.listen needs at least one address",
        );
    }
    let certificate = read(&tls.certificate, "tls.certificate", context);
    let key = read(&tls.key, "tls.key", context);
    let (certificate, key) = (certificate?, key?);
    // Checked against the system clock: a policy test's settable clock has no say over
    // whether a certificate served now has expired.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        });
    match crate::tls_termination::build(&certificate, &key, tls.http2, now) {
        Ok(termination) => Some(termination),
        Err(message) => {
            let (loc, option) = if message.contains("key file") {
                (tls.key.loc, "tls.key")
            } else {
                (tls.certificate.loc, "tls.certificate")
            };
            context.err(loc, option, message);
            None
        }
    }
}

fn read(file: &Spanned<String>, option: &str, context: &mut CompileContext<'_>) -> Option<Vec<u8>> {
    let full = context.base.join(&file.value);
    match context.gathered.file(&full) {
        Ok(bytes) => Some(bytes.to_vec()),
        Err(e) => {
            context.err(file.loc, option, e);
            None
        }
    }
}
