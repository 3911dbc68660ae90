//! `tls:`: the proxy's HTTPS listeners, as the policy writes them (compiled by
//! `config::compile::tls`). The addresses take effect at start; the certificate and key are
//! read at every load.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::Listen;
use super::yaml::Spanned;
use crate::files::FileKind;

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
