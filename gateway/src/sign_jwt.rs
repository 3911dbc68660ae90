//! `portcullis sign jwt-bearer` and `portcullis sign jwks`: what a cloud platform does for
//! the jwt-bearer grant, for trying a policy by hand. The first signs an assertion with a
//! PEM private key; the second prints the JWKS that publishes the public halves.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::oauth::keys::SigningKey;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyAlgorithm {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

impl KeyAlgorithm {
    fn jwt(self) -> Algorithm {
        match self {
            KeyAlgorithm::Rs256 => Algorithm::RS256,
            KeyAlgorithm::Es256 => Algorithm::ES256,
        }
    }
}

/// A jwt-bearer assertion (RFC 7523).
#[derive(Debug, Args)]
pub struct AssertionArgs {
    /// PKCS#8 PEM private key that signs.
    #[arg(long)]
    key: PathBuf,
    /// The key id put in the header (as published in the JWKS).
    #[arg(long)]
    kid: String,
    #[arg(long, value_enum, default_value = "RS256")]
    alg: KeyAlgorithm,
    /// The issuer (`iss`), as the policy's trusted issuer names it.
    #[arg(long)]
    iss: String,
    /// The role account (`sub`).
    #[arg(long)]
    sub: String,
    /// The audience (`aud`): the gateway's token endpoint URL.
    #[arg(long)]
    aud: String,
    /// Seconds the assertion is valid.
    #[arg(long, default_value_t = 300)]
    lifetime: i64,
}

/// A JWKS publishing public keys.
#[derive(Debug, Args)]
pub struct JwksArgs {
    /// PKCS#8 PEM private keys, each followed by its key id: `--key FILE --kid ID` (repeatable).
    #[arg(long, required = true)]
    key: Vec<PathBuf>,
    /// The key id published for the `--key` before it (repeatable, one per key).
    #[arg(long, required = true)]
    kid: Vec<String>,
    /// The algorithm the keys sign with.
    #[arg(long, value_enum, default_value = "RS256")]
    alg: KeyAlgorithm,
}

/// Prints a signed assertion with a fresh `jti`.
///
/// # Errors
/// The key file cannot be read or is not a key for the algorithm.
pub fn assertion(a: &AssertionArgs) -> anyhow::Result<String> {
    let pem = crate::files::read_bounded(&a.key, crate::files::FileKind::Key)?;
    let key = match a.alg {
        KeyAlgorithm::Rs256 => EncodingKey::from_rsa_pem(&pem),
        KeyAlgorithm::Es256 => EncodingKey::from_ec_pem(&pem),
    }
    .with_context(|| {
        format!(
            "{} is not a PKCS#8 PEM key for {:?}",
            a.key.display(),
            a.alg
        )
    })?;
    let now = crate::store::now_secs();
    let jti = crate::oauth::random_token(16).map_err(|e| anyhow::anyhow!("{}", e.description))?;
    let claims = serde_json::json!({
        "iss": a.iss, "sub": a.sub, "aud": a.aud,
        "iat": now, "exp": now + a.lifetime, "jti": jti,
    });
    let mut header = Header::new(a.alg.jwt());
    header.kid = Some(a.kid.clone());
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// Prints the JWKS of the given keys.
///
/// # Errors
/// A key file cannot be read, or the counts of `--key` and `--kid` differ.
pub fn jwks(a: &JwksArgs) -> anyhow::Result<String> {
    if a.key.len() != a.kid.len() {
        bail!("give one --kid for each --key");
    }
    let mut keys = Vec::new();
    for (file, kid) in a.key.iter().zip(&a.kid) {
        let pem = crate::files::read_bounded(file, crate::files::FileKind::Key)?;
        let k = SigningKey::from_pem(kid, a.alg.jwt(), &pem)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        keys.push(k.jwk);
    }
    Ok(serde_json::to_string_pretty(&JwkSet { keys })?)
}
