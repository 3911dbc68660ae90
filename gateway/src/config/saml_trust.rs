//! Where a SAML verifier's trust comes from, for `require_saml` and for the token service's
//! `saml_issuers`: a PEM bundle of the IdP's signing certificates, the IdP's SAML metadata
//! file, or both (while moving from one to the other). Both files were read by gathering;
//! this turns them into keys, reporting problems at the option that named the file.

use portcullis_assertions::saml::metadata;
use portcullis_assertions::saml::TrustedKey;

use super::context::CompileContext;
use super::yaml::{Location, Spanned};

/// Smallest RSA key accepted from either file.
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// The trust options of one verifier, as the policy wrote them.
pub(crate) struct TrustSources<'a> {
    /// `certificates:`: a PEM bundle.
    pub(crate) certificates: Option<&'a Spanned<String>>,
    /// `metadata:`: an IdP metadata file.
    pub(crate) metadata: Option<&'a Spanned<String>>,
    /// Which entity of the metadata file (needed when it describes several IdPs).
    pub(crate) entity_id: Option<&'a str>,
    /// Where the options sit (`services.api.request[0].require_saml`), for messages.
    pub(crate) path: &'a str,
    /// The whole entry's location, for a message about the pair.
    pub(crate) loc: Location,
}

/// What the files yield.
pub(crate) struct Trust {
    pub(crate) keys: Vec<TrustedKey>,
    /// The metadata's entity ID: the issuer its assertions carry.
    pub(crate) metadata_entity: Option<String>,
}

impl TrustSources<'_> {
    /// The trusted keys of both files; `None` after reporting why there are none.
    pub(crate) fn compile(&self, context: &mut CompileContext<'_>) -> Option<Trust> {
        if self.certificates.is_none() && self.metadata.is_none() {
            context.err(
                self.loc,
                self.path,
                "name the IdP's signing certificates (`certificates:`, a PEM file) or its SAML metadata (`metadata:`)",
            );
            return None;
        }
        let mut keys = Vec::new();
        let mut failed = false;
        if let Some(file) = self.certificates {
            match self.read(file, "certificates", context).map(|bytes| {
                TrustedKey::from_certificates_pem(&String::from_utf8_lossy(&bytes), MIN_RSA_BITS)
            }) {
                Some(Ok(found)) => keys.extend(found),
                Some(Err(error)) => {
                    self.report(file, "certificates", error, context);
                    failed = true;
                }
                None => failed = true,
            }
        }
        let mut metadata_entity = None;
        if let Some(file) = self.metadata {
            match self.read(file, "metadata", context).map(|bytes| {
                metadata::identity_provider(
                    &bytes,
                    self.entity_id,
                    jiff::Timestamp::now(),
                    MIN_RSA_BITS,
                )
            }) {
                Some(Ok(provider)) => {
                    keys.extend(provider.keys);
                    metadata_entity = Some(provider.entity_id);
                }
                Some(Err(error)) => {
                    self.report(file, "metadata", error, context);
                    failed = true;
                }
                None => failed = true,
            }
        }
        (!failed).then_some(Trust {
            keys,
            metadata_entity,
        })
    }

    fn read(
        &self,
        file: &Spanned<String>,
        option: &str,
        context: &mut CompileContext<'_>,
    ) -> Option<Vec<u8>> {
        let path = context.base.join(&file.value);
        match context.gathered.file(&path) {
            Ok(bytes) => Some(bytes.to_vec()),
            Err(why) => {
                context.err(file.loc, &format!("{}.{option}", self.path), why);
                None
            }
        }
    }

    fn report(
        &self,
        file: &Spanned<String>,
        option: &str,
        error: impl std::fmt::Display,
        context: &mut CompileContext<'_>,
    ) {
        let path = context.base.join(&file.value);
        context.err(
            file.loc,
            &format!("{}.{option}", self.path),
            format!("{}: {error}", path.display()),
        );
    }
}
