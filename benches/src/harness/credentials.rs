//! What each scenario's requests must carry (an API key, a SigV4 signature, a token from the
//! gateway's own token endpoint, a SAML assertion), made against the running gateway.

use std::path::Path;
use std::process::Command;

use super::scenarios::{self, Credential, Scenario};

/// The headers a scenario's requests carry, made against the running gateway.
///
/// # Errors
/// The signer or the token endpoint could not be run or answered nothing usable.
pub fn headers(s: &Scenario, port: u16, root: &Path) -> Result<Vec<String>, String> {
    match s.credential {
        // Made per request by the scenario's own wrk script (see `unique_sigv4_script`).
        Credential::None | Credential::SigV4Unique => Ok(vec!["X-Bench: 1".to_owned()]),
        Credential::ApiKey => Ok(vec![format!("X-Api-Key: {}", scenarios::API_KEY)]),
        Credential::Saml => Ok(vec![format!(
            "Authorization: {}",
            scenarios::saml_authorization(root)?
        )]),
        Credential::SigV4 => {
            let out = Command::new(root.join("target/release/portcullis"))
                .env("BENCH_HMAC_SECRET", scenarios::HMAC_SECRET)
                .args([
                    "sign",
                    "aws-sigv4",
                    "--access-key",
                    "AKIDBENCH",
                    "--secret-env",
                    "BENCH_HMAC_SECRET",
                    "--region",
                    "eu-west-1",
                    "--service",
                    "bench",
                    "GET",
                ])
                .arg(format!("http://127.0.0.1:{port}/"))
                .output()
                .map_err(|e| format!("portcullis sign: {e}"))?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect())
        }
        Credential::Jwt | Credential::Opaque => {
            let client = if s.credential == Credential::Jwt {
                "jwt-client"
            } else {
                "opaque-client"
            };
            let out = Command::new("curl")
                .args([
                    "-s",
                    "-u",
                    &format!("{client}:{}", scenarios::CLIENT_SECRET),
                    "-d",
                    "grant_type=client_credentials",
                ])
                .arg(format!("http://127.0.0.1:{port}/oauth2/token"))
                .output()
                .map_err(|e| format!("curl: {e}"))?;
            let body: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| format!("token endpoint: {e}"))?;
            let token = body["access_token"]
                .as_str()
                .ok_or_else(|| format!("no token: {body}"))?;
            Ok(vec![format!("Authorization: Bearer {token}")])
        }
    }
}
