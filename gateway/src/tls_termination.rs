//! HTTPS on the proxy listeners (`tls:` in the policy): the certificate and key, checked at
//! load, and the acceptor the connection guard runs each handshake with.
//!
//! The handshake is run by [`crate::proxy::GuardedProxy`] after the connection was counted
//! against the caps and under the head deadline, not by Pingora's TLS listener, which runs
//! it before any of our code sees the connection (uncounted, with a fixed 60 s limit). The
//! acceptor lives in the runtime, so a reload with a renewed certificate takes effect for
//! the next connection.

use std::sync::Arc;

use pingora::listeners::tls::Acceptor;
use pingora::tls::{version, CertificateDer, PrivateKeyDer, ServerConfig};

/// The ALPN name of HTTP/2 and of HTTP/1.1.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// What a TLS listener answers with.
pub struct TlsTermination {
    pub acceptor: Acceptor,
    /// HTTP/2 is offered (ALPN `h2` before `http/1.1`).
    pub http2: bool,
    /// The leaf certificate's subject and end of validity (seconds since the epoch), for
    /// `/api/config` and the expiry gauge.
    pub subject: String,
    pub not_after: i64,
}

impl std::fmt::Debug for TlsTermination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTermination")
            .field("http2", &self.http2)
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl TlsTermination {
    /// When the served certificate expires, for alerting before it does.
    #[must_use]
    pub fn metrics_text(&self) -> String {
        format!(
            "# HELP portcullis_tls_certificate_not_after_seconds End of validity of the certificate the HTTPS listeners serve (Unix time).\n\
             # TYPE portcullis_tls_certificate_not_after_seconds gauge\n\
             portcullis_tls_certificate_not_after_seconds {}\n",
            self.not_after
        )
    }
}

/// What is wrong with the certificate and key, by the file it is in (for the message's
/// position in the policy). Neither names the key's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFileProblem {
    Certificate(String),
    Key(String),
}

impl std::fmt::Display for TlsFileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFileProblem::Certificate(message) | TlsFileProblem::Key(message) => {
                f.write_str(message)
            }
        }
    }
}

/// Builds the acceptor from a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1); `now` (seconds since the epoch) is when it must be valid.
///
/// # Errors
/// What is wrong, naming neither the key nor its bytes.
pub fn build(
    chain_pem: &[u8],
    key_pem: &[u8],
    http2: bool,
    now: i64,
) -> Result<TlsTermination, TlsFileProblem> {
    let mut reader = chain_pem;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut reader)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsFileProblem::Certificate("the certificate file is not PEM".to_owned()))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsFileProblem::Certificate(
            "the certificate file holds no PEM certificate".to_owned(),
        ));
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|_| {
        TlsFileProblem::Certificate("the first certificate of the file does not parse".to_owned())
    })?;
    let validity = parsed.validity();
    let not_after = validity.not_after.timestamp();
    if validity.not_before.timestamp() > now {
        return Err(TlsFileProblem::Certificate(format!(
            "the certificate is not valid before {}",
            validity.not_before
        )));
    }
    if not_after <= now {
        return Err(TlsFileProblem::Certificate(format!(
            "the certificate expired on {}",
            validity.not_after
        )));
    }
    let subject = parsed.subject().to_string();
    let mut reader = key_pem;
    let key: PrivateKeyDer<'static> = match rustls_pemfile::private_key(&mut reader) {
        Ok(Some(key)) => key,
        Ok(None) if key_pem.windows(9).any(|w| w == b"ENCRYPTED") => {
            return Err(TlsFileProblem::Key("the key file holds an encrypted private key: give it unencrypted (keep the file readable by the gateway only)".to_owned()))
        }
        Ok(None) => {
            return Err(TlsFileProblem::Key(
                "the key file holds no PEM private key".to_owned(),
            ))
        }
        Err(_) => return Err(TlsFileProblem::Key("the key file is not PEM".to_owned())),
    };
    pingora::tls::install_default_crypto_provider();
    let mut config =
        ServerConfig::builder_with_protocol_versions(&[&version::TLS12, &version::TLS13])
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                TlsFileProblem::Certificate(format!("the key does not go with the certificate ({e}); the gateway's own certificate comes first in the file, its chain after it"))
            })?;
    config.alpn_protocols = if http2 {
        vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
    } else {
        vec![ALPN_HTTP11.to_vec()]
    };
    Ok(TlsTermination {
        acceptor: Acceptor::from_server_config(Arc::new(config)),
        http2,
        subject,
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tls");
        std::fs::read(root.join(name)).expect("fixture")
    }

    const JAN_2027: i64 = 1_798_761_600;

    #[test]
    fn a_matching_certificate_and_key_build_an_acceptor() {
        let built = build(
            &fixture("server.pem"),
            &fixture("server.key"),
            true,
            JAN_2027,
        )
        .expect("builds");
        assert!(built.http2);
        assert!(built.subject.contains("localhost"), "{}", built.subject);
    }

    #[test]
    fn mistakes_are_named_without_the_key() {
        let cert = fixture("server.pem");
        let key = fixture("server.key");
        let other_key = fixture("other.key.pem");
        let cases: [(&[u8], &[u8], i64, &str); 5] = [
            (b"", &key, JAN_2027, "holds no PEM certificate"),
            (&cert, b"", JAN_2027, "holds no PEM private key"),
            (
                &cert,
                &other_key,
                JAN_2027,
                "does not go with the certificate",
            ),
            (&cert, &key, 4_102_444_800, "expired"),
            (&cert, &key, 0, "not valid before"),
        ];
        for (chain, key_pem, now, expected) in cases {
            let error = build(chain, key_pem, false, now)
                .expect_err(expected)
                .to_string();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("PRIVATE KEY"), "{error}");
        }
    }
}
