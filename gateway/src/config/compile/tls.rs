//! `tls:` compiled: the certificate and key read and checked, the acceptor built. A reload
//! with renewed files serves them to the next connection; one with a broken, mismatched or
//! expired pair is refused, keeping the running one.

use crate::config::context::CompileContext;
use crate::config::tls_listener::TlsListenerSpec;
use crate::config::yaml::Spanned;
use crate::tls_termination::{TlsFileProblem, TlsTermination};

/// The acceptor of `tls:`; `None` when a file is missing or wrong (reported at its option).
pub(super) fn compile_tls(
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
    let certificate = context.named_file(&tls.certificate, "tls.certificate");
    let key = context.named_file(&tls.key, "tls.key");
    let ((_, certificate), (_, key)) = (certificate?, key?);
    // Checked against the system clock: a policy test's settable clock has no say over
    // whether a certificate served now has expired.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        });
    match crate::tls_termination::build(certificate, key, tls.http2, now) {
        Ok(termination) => Some(termination),
        Err(problem) => {
            let (loc, option) = match &problem {
                TlsFileProblem::Key(_) => (tls.key.loc, "tls.key"),
                TlsFileProblem::Certificate(_) => (tls.certificate.loc, "tls.certificate"),
            };
            context.err(loc, option, problem.to_string());
            None
        }
    }
}
