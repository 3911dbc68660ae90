//! A third-party OAuth provider (`providers:` in the policy) and the gateway's client of
//! its token endpoint: authorization-code exchange (with PKCE), refresh, client
//! credentials. Outbound calls have a deadline and the answer a size limit; the provider's
//! own OAuth error code is kept so it can be passed on.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The provider's client secret. Never printed: `Debug` shows `[redacted]`. (Its own type,
/// not the runtime's, so the broker does not depend on the runtime that holds it.)
#[derive(Clone)]
pub struct ClientSecret(std::sync::Arc<str>);

impl ClientSecret {
    #[must_use]
    pub fn new(value: &str) -> ClientSecret {
        ClientSecret(std::sync::Arc::from(value))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Largest token-endpoint answer read.
pub const MAX_PROVIDER_ANSWER: usize = 64 * 1024;

/// How the gateway authenticates at the provider's token endpoint.
#[derive(Debug, Clone)]
pub enum TokenAuth {
    /// `Authorization: Basic` with the form-encoded id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form.
    ClientSecretPost,
    /// A JWT signed with the gateway's private key in `client_assertion` (RFC 7523 §2.2).
    PrivateKeyJwt(std::sync::Arc<super::client_assertion::ClientAssertionKey>),
}

/// One provider, compiled.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    /// Where the browser is sent to consent (absent: client credentials only).
    pub authorize_url: Option<String>,
    /// The token endpoint; `{tenant}` in it is replaced by a registration's tenant.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Option<ClientSecret>,
    pub scopes: Vec<String>,
    /// Extra parameters of the authorization request (`prompt`, `access_type`, ...).
    pub authorize_params: Vec<(String, String)>,
    pub token_auth: TokenAuth,
    pub pkce: bool,
    pub timeout: Duration,
    http: reqwest::Client,
}

/// What a token endpoint answered on success.
#[derive(Debug, Clone)]
pub struct ProviderTokens {
    pub access_token: String,
    /// Present when the provider issued (or rotated) a refresh token.
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
}

/// Why the provider gave no tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderFailure {
    /// The provider answered an OAuth error (`invalid_grant`, ...), with its status.
    Refused {
        status: u16,
        error: String,
        description: Option<String>,
    },
    /// No usable answer: unreachable, timed out, too large, not JSON.
    Unavailable(String),
}

impl ProviderFailure {
    /// The OAuth error code to pass on (`temporarily_unavailable` when there is none).
    #[must_use]
    pub fn code(&self) -> &str {
        match self {
            ProviderFailure::Refused { error, .. } => error,
            ProviderFailure::Unavailable(_) => "temporarily_unavailable",
        }
    }

    /// True when the provider said the grant (refresh token, code) is no good.
    #[must_use]
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, ProviderFailure::Refused { error, .. } if error == "invalid_grant")
    }
}

/// What a token request asks for.
#[derive(Debug)]
pub enum Grant<'a> {
    AuthorizationCode {
        code: &'a str,
        redirect_uri: &'a str,
        verifier: Option<&'a str>,
    },
    RefreshToken {
        refresh_token: &'a str,
        scope: Option<&'a str>,
    },
    ClientCredentials {
        tenant: Option<&'a str>,
        scope: Option<&'a str>,
    },
}

impl Provider {
    #[allow(clippy::too_many_arguments)]
    #[must_use]
    pub fn new(
        name: String,
        authorize_url: Option<String>,
        token_url: String,
        client_id: String,
        client_secret: Option<ClientSecret>,
        scopes: Vec<String>,
        authorize_params: Vec<(String, String)>,
        token_auth: TokenAuth,
        pkce: bool,
        timeout: Duration,
    ) -> Provider {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // A token endpoint that redirects is misconfigured; never resend secrets.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Provider {
            name,
            authorize_url,
            token_url,
            client_id,
            client_secret,
            scopes,
            authorize_params,
            token_auth,
            pkce,
            timeout,
            http,
        }
    }

    /// The URL the browser is sent to: the provider's authorization endpoint with the
    /// client, redirect URI, scopes, state, the PKCE challenge and the extra parameters.
    #[must_use]
    pub fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        verifier: Option<&str>,
        scopes: &[String],
    ) -> Option<String> {
        let base = self.authorize_url.as_deref()?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state);
        if !scopes.is_empty() {
            query.append_pair("scope", &scopes.join(" "));
        }
        if let Some(verifier) = verifier {
            query
                .append_pair("code_challenge", &pkce_challenge(verifier))
                .append_pair("code_challenge_method", "S256");
        }
        for (name, value) in &self.authorize_params {
            query.append_pair(name, value);
        }
        let separator = if base.contains('?') { '&' } else { '?' };
        Some(format!("{base}{separator}{}", query.finish()))
    }

    /// Calls the token endpoint.
    ///
    /// # Errors
    /// The provider's OAuth error, or why no answer could be had.
    pub async fn token(&self, grant: &Grant<'_>) -> Result<ProviderTokens, ProviderFailure> {
        let mut form: Vec<(&str, &str)> = Vec::with_capacity(8);
        let mut url = self.token_url.clone();
        match grant {
            Grant::AuthorizationCode {
                code,
                redirect_uri,
                verifier,
            } => {
                form.push(("grant_type", "authorization_code"));
                form.push(("code", code));
                form.push(("redirect_uri", redirect_uri));
                if let Some(verifier) = verifier {
                    form.push(("code_verifier", verifier));
                }
            }
            Grant::RefreshToken {
                refresh_token,
                scope,
            } => {
                form.push(("grant_type", "refresh_token"));
                form.push(("refresh_token", refresh_token));
                if let Some(scope) = scope.filter(|s| !s.is_empty()) {
                    form.push(("scope", scope));
                }
            }
            Grant::ClientCredentials { tenant, scope } => {
                form.push(("grant_type", "client_credentials"));
                if let Some(scope) = scope.filter(|s| !s.is_empty()) {
                    form.push(("scope", scope));
                }
                if let Some(tenant) = tenant {
                    url = url.replace("{tenant}", &encode_path_segment(tenant));
                }
            }
        }
        let secret = self.client_secret.as_ref().map(ClientSecret::expose);
        let mut request = self.http.post(&url).header("accept", "application/json");
        let assertion;
        match (&self.token_auth, secret) {
            (TokenAuth::PrivateKeyJwt(key), _) => {
                assertion = key
                    .assertion(&self.client_id, &url, crate::store::now_secs())
                    .map_err(ProviderFailure::Unavailable)?;
                form.push(("client_id", &self.client_id));
                form.push((
                    "client_assertion_type",
                    super::client_assertion::ASSERTION_TYPE,
                ));
                form.push(("client_assertion", &assertion));
            }
            (TokenAuth::ClientSecretBasic, Some(secret)) => {
                let pair = format!("{}:{}", form_encode(&self.client_id), form_encode(secret));
                request =
                    request.header("authorization", format!("Basic {}", STANDARD.encode(pair)));
            }
            (TokenAuth::ClientSecretPost, Some(secret)) => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", secret));
            }
            (_, None) => form.push(("client_id", &self.client_id)),
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish();
        let response = request
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|error| {
                ProviderFailure::Unavailable(format!(
                    "the token endpoint of provider {} did not answer: {}",
                    self.name,
                    without_url(&error)
                ))
            })?;
        let status = response.status().as_u16();
        let bytes = read_bounded(response).await.map_err(|why| {
            ProviderFailure::Unavailable(format!("provider {}: {why}", self.name))
        })?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
            ProviderFailure::Unavailable(format!(
                "provider {} answered {status} without JSON",
                self.name
            ))
        })?;
        if !(200..300).contains(&status) {
            let error = json["error"]
                .as_str()
                .filter(|code| is_oauth_code(code))
                .unwrap_or("server_error")
                .to_owned();
            return Err(ProviderFailure::Refused {
                status,
                error,
                description: json["error_description"]
                    .as_str()
                    .map(|text| text.chars().take(200).collect()),
            });
        }
        let access_token = json["access_token"]
            .as_str()
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                ProviderFailure::Unavailable(format!(
                    "provider {} answered without an access_token",
                    self.name
                ))
            })?
            .to_owned();
        Ok(ProviderTokens {
            access_token,
            refresh_token: json["refresh_token"]
                .as_str()
                .filter(|token| !token.is_empty())
                .map(str::to_owned),
            expires_in: json["expires_in"]
                .as_u64()
                .or_else(|| json["expires_in"].as_str().and_then(|s| s.parse().ok())),
            scope: json["scope"].as_str().map(str::to_owned),
        })
    }
}

/// The S256 PKCE challenge of a verifier (RFC 7636 §4.2).
#[must_use]
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// An OAuth error code as RFC 6749 §5.2 allows it (printable ASCII, no quote or
/// backslash), short: anything else is not passed on.
fn is_oauth_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

fn form_encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn encode_path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A reqwest error without the URL (it may hold a tenant) or anything of the form.
fn without_url(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    }
}

/// The body, refused past [`MAX_PROVIDER_ANSWER`].
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|length| length > MAX_PROVIDER_ANSWER as u64)
    {
        return Err("the answer is too large".to_owned());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| "the answer could not be read".to_owned())?
    {
        if body.len() + chunk.len() > MAX_PROVIDER_ANSWER {
            return Err("the answer is too large".to_owned());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_unpadded_base64url_of_sha256() {
        // Computed independently: base64.urlsafe_b64encode(sha256(verifier)).rstrip("=").
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW-gFWFOEjXk"),
            "90EpwHQr_xi9uDtjYyz5mq9Z4RekugHRqg5ijpXC3FQ"
        );
    }

    #[test]
    fn only_plain_error_codes_are_passed_on() {
        assert!(is_oauth_code("invalid_grant"));
        assert!(!is_oauth_code("bad\"code"));
        assert!(!is_oauth_code(""));
        assert!(!is_oauth_code(&"x".repeat(65)));
    }

    #[test]
    fn the_authorization_url_carries_state_pkce_and_extra_parameters() {
        let provider = Provider::new(
            "p".into(),
            Some("https://idp.example/authorize?tenant=t".into()),
            "https://idp.example/token".into(),
            "client one".into(),
            None,
            vec!["offline_access".into(), "mail.read".into()],
            vec![("prompt".into(), "consent".into())],
            TokenAuth::ClientSecretBasic,
            true,
            Duration::from_secs(5),
        );
        let url = provider
            .authorization_url("https://gw/cb", "st", Some("verifier"), &provider.scopes)
            .expect("url");
        assert!(url.starts_with("https://idp.example/authorize?tenant=t&response_type=code"));
        assert!(url.contains("client_id=client+one"));
        assert!(url.contains("state=st"));
        assert!(url.contains("scope=offline_access+mail.read"));
        assert!(url.contains("code_challenge_method=S256"));
        assert!(url.contains(&format!("code_challenge={}", pkce_challenge("verifier"))));
        assert!(url.ends_with("prompt=consent"));
    }
}
