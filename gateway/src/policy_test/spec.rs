//! The test-file format of `portcullis test` as YAML sees it (documented in
//! docs/policy-testing.md; `portcullis schema --tests` prints its JSON Schema). Read with the
//! policy files' YAML machinery, so every mistake is reported at its `file:line:col`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::yaml::Spanned;

/// A file of golden cases for one policy.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "Portcullis policy tests",
    description = "Golden cases for one policy: requests, the upstream's stubbed answers, and what the gateway must do with them. Run with `portcullis test`."
)]
pub struct TestFileSpec {
    /// The policy under test, relative to this file.
    pub policy: Spanned<String>,
    /// The time every case runs at (seconds since the Unix epoch) unless the case says
    /// otherwise; `portcullis test --at` overrides it. Default: the time of the run.
    #[serde(default)]
    pub at: Option<Spanned<u64>>,
    /// Values the cases use as `${secret.NAME}` in header values, query strings and bodies,
    /// read from files relative to this file (a trailing newline is dropped).
    #[serde(default)]
    pub secrets: BTreeMap<String, FileRefSpec>,
    /// Key sets that stand in for remote ones (`keys_url` of `require_bearer` issuers and
    /// trusted issuers): the URL as the policy writes it, and a file holding the document
    /// that URL would publish. Nothing is fetched from the network.
    #[serde(default)]
    pub key_sets: BTreeMap<String, FileRefSpec>,
    /// Who is behind which address, for `require_ip_identity`: written to the in-memory
    /// state store before the first case.
    #[serde(default)]
    pub identities: Vec<Spanned<IdentitySpec>>,
    /// Access tokens issued by the policy's token service before the first case, used as
    /// `${token.NAME}`.
    #[serde(default)]
    pub tokens: Vec<Spanned<TokenSpec>>,
    /// The cases, run in order against one loaded policy: state (rate-limit buckets, replay
    /// caches, quotas) carries from one case to the next, as in the gateway.
    pub cases: Vec<Spanned<CaseSpec>>,
}

/// A file, relative to the test file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRefSpec {
    pub file: Spanned<String>,
}

/// An address registration as the userauth API would make it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    pub ip: Spanned<String>,
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub interface: Option<String>,
    /// Seconds the registration lasts from the test's time. Default one day.
    #[serde(default)]
    pub session_timeout: Option<u64>,
}

/// An access token issued to one of the token service's clients.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// The name cases use: `${token.NAME}`.
    pub name: String,
    /// The client the token is issued to (as the policy lists it).
    pub client: Spanned<String>,
    /// The scopes granted (each must be one the client may have).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The token's subject. Default: the client.
    #[serde(default)]
    pub subject: Option<String>,
}

/// One golden case.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseSpec {
    /// What the case shows, printed when it fails.
    pub name: String,
    pub request: Spanned<RequestSpec>,
    /// Send the request this many times (the expectations are checked on the last): for
    /// rate limits, quotas and replay checks. Default 1.
    #[serde(default)]
    pub repeat: Option<Spanned<u32>>,
    /// Seconds the clock moves on between repetitions. Default 0 (all at one instant).
    #[serde(default)]
    pub interval: Option<u64>,
    /// The upstream's answer when the request gets through. Default: `200` with no headers
    /// and an empty body.
    #[serde(default)]
    pub upstream: Option<StubSpec>,
    pub expect: Spanned<ExpectSpec>,
}

/// The request, as the client sends it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Default `GET`.
    #[serde(default)]
    pub method: Option<Spanned<String>>,
    /// The path, e.g. `/widgets/1` (a query may follow `?`, or go in `query`).
    pub path: Spanned<String>,
    /// The query string, without `?`.
    #[serde(default)]
    pub query: Option<String>,
    /// `Host`. Default `gateway.test`.
    #[serde(default)]
    pub host: Option<String>,
    /// Header fields (`${secret.NAME}` and `${token.NAME}` are replaced in values).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body as text.
    #[serde(default)]
    pub body: Option<String>,
    /// The body from a file relative to the test file (instead of `body`).
    #[serde(default)]
    pub body_file: Option<Spanned<String>>,
    /// A body of this many bytes of `x` (instead of `body`), for size limits and rate limits
    /// that count bytes. At most 64 MiB.
    #[serde(default)]
    pub body_bytes: Option<Spanned<usize>>,
    /// The TCP peer's address. Default `127.0.0.1`.
    #[serde(default)]
    pub client: Option<Spanned<String>>,
    /// The request comes in over HTTPS (a `tls:` listener). Default `false`.
    #[serde(default)]
    pub https: bool,
    /// When the request arrives (seconds since the Unix epoch). Default: the file's `at`.
    #[serde(default)]
    pub time: Option<Spanned<u64>>,
}

/// The upstream's stubbed answer.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StubSpec {
    /// Default `200`.
    #[serde(default)]
    pub status: Option<Spanned<u16>>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    /// The body from a file relative to the test file (instead of `body`).
    #[serde(default)]
    pub body_file: Option<Spanned<String>>,
}

/// `allow` (the request reaches the upstream), `deny` (the gateway refuses it), or
/// `answered` (the gateway answers it itself: the token service's endpoints, the SAML
/// issuer, a service with `issue_saml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerdictSpec {
    Allow,
    Deny,
    Answered,
}

/// What must hold. Everything is optional; what is left out is not checked.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    #[serde(default)]
    pub verdict: Option<VerdictSpec>,
    /// The status the client gets.
    #[serde(default)]
    pub status: Option<u16>,
    /// The refusal's problem type: its code (`invalid-api-key`) or the whole URI
    /// (`urn:portcullis:problem:invalid-api-key`).
    #[serde(default)]
    pub problem: Option<String>,
    /// The step that refused (`require_api_key`).
    #[serde(default)]
    pub denied_by: Option<String>,
    /// The service that took the request.
    #[serde(default)]
    pub service: Option<String>,
    /// What the upstream receives (only with `verdict: allow`).
    #[serde(default)]
    pub upstream: Option<MessageExpectSpec>,
    /// What the client gets back.
    #[serde(default)]
    pub response: Option<MessageExpectSpec>,
    /// Variables the steps set, by name (`client.id: acme-mobile`).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Variables that must not be set.
    #[serde(default)]
    pub variables_unset: Vec<String>,
}

/// Expectations on one message (the request that goes upstream, or the client's answer).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageExpectSpec {
    /// The request target upstream (path and query), e.g. `/accounts?x=1`.
    #[serde(default)]
    pub path: Option<String>,
    /// The response status.
    #[serde(default)]
    pub status: Option<u16>,
    /// Headers that must be present with exactly these values (names without regard to case).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose value must hold this text (a signature's credential, say).
    #[serde(default)]
    pub headers_containing: BTreeMap<String, String>,
    /// Headers that must be present, whatever their value.
    #[serde(default)]
    pub headers_present: Vec<String>,
    /// Headers that must be absent.
    #[serde(default)]
    pub headers_absent: Vec<String>,
    /// The whole body.
    #[serde(default)]
    pub body: Option<String>,
    /// Text the body must hold.
    #[serde(default)]
    pub body_contains: Vec<String>,
    /// Text the body must not hold (a card number, a secret).
    #[serde(default)]
    pub body_excludes: Vec<String>,
}
