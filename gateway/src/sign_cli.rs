//! `portcullis sign`: signs a request the way a client must, and prints the headers (or a
//! ready curl command, or a presigned URL), so a policy author can test `require_hmac` by
//! hand; `sign jwt-bearer`, `sign jwks` and `sign saml` make credentials the token service
//! and `require_saml` accept. The secret is read from an environment variable or a file, never from the command
//! line (where it would land in shell history and process lists).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand};
use http::{HeaderName, HeaderValue};
use portcullis_assertions::hmac::sign::{presign_sigv4, sign_sigv2, sign_sigv4, SigV4Params};
use portcullis_assertions::hmac::Clock as _;
use portcullis_assertions::hmac::SystemClock;

/// Which scheme to sign with.
#[derive(Debug, Subcommand)]
pub enum SignScheme {
    /// AWS Signature Version 4 (Authorization header, or a presigned URL with --presign).
    AwsSigv4 {
        #[command(flatten)]
        common: Common,
        /// The region of the credential scope, e.g. eu-west-1.
        #[arg(long)]
        region: String,
        /// The service of the credential scope, e.g. orders.
        #[arg(long)]
        service: String,
        /// Also send and sign x-amz-content-sha256.
        #[arg(long)]
        content_sha256: bool,
        /// Print a presigned URL valid for this many seconds instead of headers.
        #[arg(long, value_name = "SECONDS")]
        presign: Option<u64>,
    },
    /// AWS Signature Version 2 (S3 REST, Authorization header).
    AwsSigv2 {
        #[command(flatten)]
        common: Common,
    },
    /// A JWT-bearer assertion (RFC 7523) signed with a PEM private key, as a cloud platform makes it.
    JwtBearer(crate::sign_jwt::AssertionArgs),
    /// The JWKS that publishes the public halves of PEM private keys (to serve as a trusted issuer's keys_url).
    Jwks(crate::sign_jwt::JwksArgs),
    /// A signed SAML 2.0 bearer assertion, as the /saml/token issuer makes it (header credentials, XML, or the RFC 7522 grant's parameter).
    Saml(crate::sign_saml::SamlArgs),
}

/// What every scheme takes.
#[derive(Debug, Args)]
pub struct Common {
    /// The access key id.
    #[arg(long)]
    access_key: String,
    /// Environment variable holding the secret.
    #[arg(long, conflicts_with = "secret_file")]
    secret_env: Option<String>,
    /// File holding the secret (a trailing newline is dropped).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Request body.
    #[arg(long, conflicts_with = "data_file")]
    data: Option<String>,
    /// File holding the request body.
    #[arg(long)]
    data_file: Option<PathBuf>,
    /// Print a ready curl command instead of the headers.
    #[arg(long)]
    curl: bool,
    /// Sign as of this time (seconds since the epoch) instead of now.
    #[arg(long, value_name = "EPOCH_SECONDS")]
    at: Option<u64>,
    /// HTTP method.
    method: String,
    /// Full URL, e.g. http://127.0.0.1:8080/partner/orders?b=2
    url: String,
}

impl Common {
    fn secret(&self) -> anyhow::Result<Vec<u8>> {
        let text = match (&self.secret_env, &self.secret_file) {
            (Some(var), _) => std::env::var(var)
                .with_context(|| format!("environment variable {var} is not set"))?,
            (None, Some(file)) => {
                crate::files::read_bounded_text(file, crate::files::FileKind::Secret)?
            }
            (None, None) => bail!("give the secret with --secret-env VAR or --secret-file FILE"),
        };
        let text = text.strip_suffix('\n').unwrap_or(&text);
        Ok(text.strip_suffix('\r').unwrap_or(text).as_bytes().to_vec())
    }

    fn body(&self) -> anyhow::Result<Vec<u8>> {
        Ok(match (&self.data, &self.data_file) {
            (Some(d), _) => d.as_bytes().to_vec(),
            (None, Some(f)) => crate::files::read_bounded(f, crate::files::FileKind::Request)?,
            (None, None) => Vec::new(),
        })
    }

    fn request(&self) -> anyhow::Result<http::request::Parts> {
        let uri: http::Uri = self
            .url
            .parse()
            .with_context(|| format!("\"{}\" is not a URL", self.url))?;
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow!("the URL needs a host"))?
            .to_string();
        let path_and_query = uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let mut builder = http::Request::builder()
            .method(self.method.as_str())
            .uri(path_and_query)
            .header("host", authority);
        for h in &self.headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| anyhow!("header \"{h}\" is not of the form Name: value"))?;
            builder = builder.header(
                HeaderName::from_bytes(name.trim().as_bytes())?,
                HeaderValue::from_str(value.trim())?,
            );
        }
        Ok(builder.body(())?.into_parts().0)
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs `portcullis sign`; returns what to print.
///
/// # Errors
/// A bad URL, header, secret source or body file.
pub fn run(scheme: &SignScheme) -> anyhow::Result<String> {
    let common = match scheme {
        SignScheme::AwsSigv4 { common, .. } | SignScheme::AwsSigv2 { common } => common,
        SignScheme::JwtBearer(a) => return crate::sign_jwt::assertion(a),
        SignScheme::Jwks(a) => return crate::sign_jwt::jwks(a),
        SignScheme::Saml(a) => return crate::sign_saml::assertion(a),
    };
    let secret = common.secret()?;
    let body = common.body()?;
    let mut head = common.request()?;
    let before = head.headers.clone();
    let now = common.at.unwrap_or_else(|| SystemClock.now());
    match scheme {
        SignScheme::AwsSigv4 {
            region,
            service,
            content_sha256,
            presign,
            ..
        } => {
            let p = SigV4Params {
                access_key: &common.access_key,
                secret: &secret,
                region,
                service,
                content_sha256_header: *content_sha256,
                normalize_path: true,
            };
            if let Some(expires) = presign {
                let query =
                    presign_sigv4(&head, &body, &p, now, *expires).map_err(|e| anyhow!(e))?;
                let base = common.url.split('?').next().unwrap_or(&common.url);
                return Ok(format!("{base}?{query}\n"));
            }
            sign_sigv4(&mut head, &body, &p, now).map_err(|e| anyhow!(e))?;
        }
        SignScheme::AwsSigv2 { .. } => {
            sign_sigv2(&mut head, &common.access_key, &secret, now).map_err(|e| anyhow!(e))?;
        }
        SignScheme::JwtBearer(_) | SignScheme::Jwks(_) | SignScheme::Saml(_) => {}
    }
    // The headers the signature added or changed, plus those the user gave.
    let mut lines = Vec::new();
    for (name, value) in &head.headers {
        if name == http::header::HOST {
            continue;
        }
        let changed = before.get(name) != Some(value);
        let given = common.headers.iter().any(|h| {
            h.split(':')
                .next()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case(name.as_str()))
        });
        if changed || given {
            lines.push(format!("{}: {}", name, value.to_str().unwrap_or("")));
        }
    }
    let mut out = String::new();
    if common.curl {
        let _ = write!(
            out,
            "curl -X {} {}",
            common.method,
            shell_quote(&common.url)
        );
        for l in &lines {
            let _ = write!(out, " -H {}", shell_quote(l));
        }
        if !body.is_empty() {
            let _ = write!(
                out,
                " --data-binary {}",
                shell_quote(&String::from_utf8_lossy(&body))
            );
        }
        out.push('\n');
    } else {
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    Ok(out)
}
