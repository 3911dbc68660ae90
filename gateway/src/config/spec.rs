//! The policy language as YAML sees it, but for the steps (in [`super::steps`], one file
//! per kind) and the value types (in [`super::values`]): `*Spec` types, deserialised with unknown fields
//! denied, validated value by value (addresses, CIDRs, header names, sizes, durations) as
//! they are read, so each mistake is reported at its own `line:col`.
//!
//! Nothing here runs per request: [`super::compile`] turns these into runtime types.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

pub use super::credentials::CredentialsSpec;
pub use super::identity_api::IdentityApiSpec;
pub use super::outbound_broker::OutboundBrokerSpec;
pub use super::providers::{OProxySpec, ProviderSpec};
pub use super::saml_issuer::{PemFileSpec, SamlIssuerSpec};
pub use super::steps::{AssertionSpec, StepModeSpec, StepSpec};
pub use super::upstream_pool::{
    BalanceSpec, HealthCheckSpec, PassiveHealthSpec, RetriesSpec, TargetSpec,
};
#[allow(clippy::wildcard_imports)]
pub use super::values::*;
use super::yaml::{Lenient, Spanned};

/// A whole policy file.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "Portcullis policy",
    description = "A Portcullis gateway configuration: listeners, admin API, secrets and the services it fronts, each with its request and response pipelines."
)]
pub struct ConfigSpec {
    /// Addresses the proxy listens on, `HOST:PORT` (one or a list). Default `0.0.0.0:8080`.
    #[serde(default)]
    pub listen: Lenient<Option<Listen>>,
    /// HTTPS listeners: addresses, certificate and key, and whether HTTP/2 is offered. With
    /// `tls:` and no `listen:`, the gateway has no plain-HTTP proxy listener.
    #[serde(default)]
    pub tls: Lenient<Option<Spanned<crate::config::tls_listener::TlsListenerSpec>>>,
    /// The admin API listener (health, metrics, reload, config).
    #[serde(default)]
    pub admin: Lenient<Option<AdminSpec>>,
    /// Proxies whose `X-Forwarded-For` is believed when working out the client address.
    #[serde(default)]
    pub trusted_proxies: Lenient<Vec<Cidr>>,
    /// Run as this user once the listeners are bound (the gateway is started as root to bind
    /// low ports). Takes effect at start.
    #[serde(default)]
    pub user: Option<Spanned<String>>,
    /// With `user`: the group to run as. Default: the user's primary group.
    #[serde(default)]
    pub group: Option<Spanned<String>>,
    /// On SIGTERM the listeners close at once and requests in flight get this long to
    /// finish; the process exits as soon as they have. Default `30s`. Takes effect at start.
    #[serde(default)]
    pub drain_timeout: Option<Spanned<DurationSpec>>,
    /// Worker threads for the proxy. Default: the number of CPUs.
    #[serde(default)]
    pub workers: Lenient<Option<Spanned<usize>>>,
    /// Where the JSON access log goes: `stdout` (default), `off`, or `{file: PATH}`.
    #[serde(default)]
    pub access_log: Lenient<Option<AccessLogSpec>>,
    /// Capture mode of the access log, for `portcullis replay`: each line also carries the
    /// request as the gateway received it (`request`), every credential value replaced by a
    /// keyed hash and every card number masked. Off unless set.
    #[serde(default)]
    pub capture: Lenient<Option<CaptureSpec>>,
    /// Which forwarding headers the upstream gets: `x-forwarded` (default: `X-Forwarded-For`,
    /// `-Proto`, `-Host` and `X-Real-IP`), `forwarded` (RFC 7239 `Forwarded`), `both`, or `none`.
    /// Whatever the client sent in any of them is replaced or removed, except from trusted proxies.
    #[serde(default)]
    pub forwarded_headers: Option<ForwardedHeadersSpec>,
    /// What one client connection may take: time to send a request, connections held.
    #[serde(default)]
    pub client_limits: Lenient<Option<Spanned<ClientLimitsSpec>>>,
    /// Named secrets, each read from an environment variable or a file. Never printed.
    #[serde(default)]
    pub secrets: BTreeMap<String, Spanned<SecretSpec>>,
    /// Named HMAC key sets (access key id → client and secrets), used by `require_hmac` and `sign_hmac`.
    #[serde(default)]
    pub keys: BTreeMap<String, Spanned<Vec<Spanned<HmacKeySpec>>>>,
    /// Where shared state (tokens, revocations, usage, replay markers) lives:
    /// `sqlite://PATH` (relative to this file), `memory`, or Redis, shared by a fleet of
    /// gateways: `redis://HOST:PORT[/DB]`, `rediss://...` (TLS), or
    /// `redis+cluster://HOST:PORT,HOST:PORT,...` (`rediss+cluster://` with TLS); its password
    /// and other options go under `redis:`. Default `sqlite://portcullis.db`. Takes effect
    /// at start.
    #[serde(default)]
    pub state: Option<Spanned<String>>,
    /// Options for a Redis `state:` URL: the password (as a secret's name), deadlines, the
    /// CA for TLS, the key prefix and the circuit breaker.
    #[serde(default)]
    pub redis: Lenient<Option<Spanned<RedisSpec>>>,
    /// The OAuth 2.0 token service: token, introspection and revocation endpoints, JWKS and
    /// metadata, served on the proxy listener.
    #[serde(default)]
    pub token_service: Lenient<Option<Spanned<TokenServiceSpec>>>,
    /// The SAML issuer: `POST /saml/token` exchanges HTTP Basic credentials of a users file
    /// for a signed SAML 2.0 bearer assertion (`Authorization: SAML`), served on the proxy
    /// listener.
    #[serde(default)]
    pub saml_issuer: Lenient<Option<Spanned<SamlIssuerSpec>>>,
    /// The userauth API (`/api/oper/userauth` on the admin listener, compatible with the
    /// cOS Core REST API): a DHCP server or NAC registers who has which address, for
    /// `require_ip_identity`. See docs/ip-identity.md.
    #[serde(default)]
    pub identity_api: Lenient<Option<Spanned<IdentityApiSpec>>>,
    /// Third-party OAuth 2.0 providers the gateway holds sessions with, by name (for
    /// `oproxy:`). See docs/oauth-broker.md.
    #[serde(default)]
    pub providers: BTreeMap<String, Spanned<ProviderSpec>>,
    /// The OProxy-compatible token broker: integrations register once in a browser, then
    /// exchange encrypted Tokens for provider access tokens at `POST /oproxy/token`,
    /// served on the proxy listener. See docs/oauth-broker.md.
    #[serde(default)]
    pub oproxy: Lenient<Option<Spanned<OProxySpec>>>,
    /// Provider sessions the gateway holds for the outbound proxy (handshakes at
    /// `/broker/{provider}` on the admin listener), whose access tokens
    /// `inject_oauth_token` sends upstream. See docs/oauth-broker.md.
    #[serde(default)]
    pub outbound_broker: Lenient<Option<Spanned<OutboundBrokerSpec>>>,
    /// Other policy files (glob patterns, relative to this file) that add services and secrets.
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    /// A file in hosts(5) format (`ADDRESS NAME...` per line) where upstream host names are
    /// looked up before DNS, relative to this file. It is read afresh at each lookup, so with
    /// `resolve_every` an edit moves traffic without a reload.
    #[serde(default)]
    pub hosts_file: Option<Spanned<String>>,
    /// The services this gateway fronts.
    #[serde(default)]
    pub services: Vec<Lenient<Spanned<ServiceSpec>>>,
}

/// How the gateway talks to the Redis that `state:` names. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSpec {
    /// The name of a secret (under `secrets:`) holding the password (`AUTH`). Keep the
    /// password out of the URL: the policy file then holds nothing secret.
    #[serde(default)]
    pub password_secret: Option<Spanned<String>>,
    /// The ACL user to authenticate as, with the password. Default: Redis's default user.
    #[serde(default)]
    pub username: Option<Spanned<String>>,
    /// The longest a request waits for one Redis call; past it the call fails and the
    /// request follows its failure mode. Default `50ms`.
    #[serde(default)]
    pub timeout: Option<Spanned<DurationSpec>>,
    /// The longest one connection attempt may take (connecting is retried with backoff,
    /// apart from requests). Default `1s`.
    #[serde(default)]
    pub connect_timeout: Option<Spanned<DurationSpec>>,
    /// With `rediss://`: a PEM file of the CA certificates to trust (relative to this
    /// file). Default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    /// Prefix of every key the gateway writes, so several fleets can share one Redis.
    /// Default `portcullis`.
    #[serde(default)]
    pub key_prefix: Option<Spanned<String>>,
    /// After this many consecutive failed calls, calls fail at once (without the network)
    /// for `breaker_cool_off`, then one probe call decides. Default `5`.
    #[serde(default)]
    pub breaker_failures: Option<Spanned<u32>>,
    /// How long the breaker stays open before a probe (up to 5m). Default `1s`.
    #[serde(default)]
    pub breaker_cool_off: Option<Spanned<DurationSpec>>,
}

/// Forwarding headers set for the upstream.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeadersSpec {
    XForwarded,
    Forwarded,
    Both,
    None,
}

/// Limits on client connections. Every field is optional; a reload applies them to new
/// connections.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientLimitsSpec {
    /// Total time to send a request head, from its first byte (`408` past it). Default `10s`.
    #[serde(default)]
    pub header_timeout: Option<DurationSpec>,
    /// Time a kept-alive connection may wait for its next request. Default `60s`.
    #[serde(default)]
    pub idle_timeout: Option<DurationSpec>,
    /// Time allowed for a request body before `body_min_rate` extends it (`408` past it). Default `20s`.
    #[serde(default)]
    pub body_timeout: Option<DurationSpec>,
    /// Each this many body bytes received earn one more second, e.g. `500` or `1KiB`. Default `500`.
    #[serde(default)]
    pub body_min_rate: Option<ByteSize>,
    /// Largest request head (`431` past it). Default `64KiB`.
    #[serde(default)]
    pub max_header_bytes: Option<ByteSize>,
    /// Client connections open at once (`503` past it). Default: half the open-file limit, at most 10000.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Client connections open at once from one address, trusted proxies apart (`429` past it). Default `256`.
    #[serde(default)]
    pub max_connections_per_ip: Option<usize>,
    /// Failed authentications one client address may make at the token endpoint and the admin API before it must wait (`429`), as a rate: `20/min` (the default) allows 20 at once, then one every 3 s.
    #[serde(default)]
    pub failed_auth_per_ip: Option<RateSpec>,
    /// Failed authentications for one client id at the token endpoint, from anywhere, before that id must wait (`429`). Default `10/min`.
    #[serde(default)]
    pub failed_auth_per_client: Option<RateSpec>,
}

/// A file pulled in by `include:`: more services and secrets.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IncludeSpec {
    #[serde(default)]
    pub secrets: BTreeMap<String, Spanned<SecretSpec>>,
    #[serde(default)]
    pub keys: BTreeMap<String, Spanned<Vec<Spanned<HmacKeySpec>>>>,
    #[serde(default)]
    pub services: Vec<Lenient<Spanned<ServiceSpec>>>,
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretSpec {
    /// The value of this environment variable.
    Env(String),
    /// The contents of this file (a trailing newline is dropped).
    File(String),
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminSpec {
    /// Default `127.0.0.1:9901`. Keep it off public interfaces.
    #[serde(default)]
    pub listen: Option<Addr>,
    /// Name of the secret (under `secrets:`) holding the admin bearer token.
    pub token: Spanned<String>,
}

/// The access log's capture mode.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    /// Name of the secret (under `secrets:`) keying the hashes of credentials (HMAC-SHA256):
    /// equal values hash alike, and only someone holding the key can test a guess or, with
    /// `portcullis replay --capture-key --credentials`, put known values back.
    pub hash_key: Spanned<String>,
}

/// Access-log destination.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum AccessLogSpec {
    Stdout,
    Off,
    /// Append JSON lines to this file.
    File(String),
}

/// One fronted service.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Unique name, used in logs and metrics.
    pub name: Spanned<String>,
    /// Which requests belong to this service.
    #[serde(rename = "match", default)]
    pub matcher: Lenient<MatchSpec>,
    /// Where allowed requests go. Required, unless the service answers itself (`issue_saml`).
    #[serde(default)]
    pub upstream: Lenient<Option<Spanned<UpstreamSpec>>>,
    /// Answer allowed requests with a SAML assertion for the caller the request steps
    /// authenticated, signed by the `saml_issuer:` section, instead of going upstream.
    #[serde(default)]
    pub issue_saml: Option<Spanned<super::saml_issuer::IssueSamlSpec>>,
    /// Largest request body accepted (`413` past it), e.g. `1MiB`. Default `10MiB`.
    #[serde(default)]
    pub max_request_body: Lenient<Option<ByteSize>>,
    /// Serve this service only to requests that came in over HTTPS (a `tls:` listener); one
    /// that came in plain is refused `403 https-required` before any step runs. Default
    /// `false`.
    #[serde(default)]
    pub https_only: Option<Spanned<bool>>,
    /// Methods this service takes (`405` otherwise). Default: GET, HEAD, POST, PUT, PATCH,
    /// DELETE, OPTIONS. `TRACE` and `CONNECT` are never proxied.
    #[serde(default)]
    pub methods: Option<Vec<Spanned<String>>>,
    /// Steps run on the way in, before the upstream is contacted.
    #[serde(default)]
    pub request: Vec<Lenient<Spanned<StepSpec>>>,
    /// Steps run on the response head on the way back.
    #[serde(default)]
    pub response: Vec<Lenient<Spanned<StepSpec>>>,
    /// Run every step of this service in shadow mode: each is evaluated and its verdict
    /// recorded (`portcullis_shadow_outcomes_total`, the access log's `shadow` field), but
    /// none is enforced. Default `false`. See `mode:` on a step to shadow one step.
    #[serde(default)]
    pub shadow: Option<Spanned<bool>>,
    /// Whether the caller's credentials (`Authorization`, `Proxy-Authorization`, what an
    /// authenticating step read, the headers, cookies and query parameters listed here)
    /// reach the upstream: `strip`, or `forward` when every `when` condition holds. Default:
    /// `strip` once a step authenticates callers, else everything passes through.
    #[serde(default)]
    pub credentials: Lenient<Option<Spanned<CredentialsSpec>>>,
}

/// Which requests a service takes. The host is matched first (exact, then the longest
/// `*.` wildcard, then any host), then the most specific path (segment by segment: a literal
/// beats a `{parameter}`, which beats the end of a prefix), then the route asking more of
/// methods, headers and query. Two services that could take the same request at the same
/// precedence are refused by `check`. See docs/policy.md, "Routing".
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Exact host (port ignored, case-insensitive), or `*.example.com` (any name under
    /// example.com, not example.com itself). Absent: any host.
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    /// Path pattern. Default `/`. A prefix on segment boundaries (`/widgets` matches
    /// `/widgets/7`, not `/widgetsx`) unless `path_match: exact`. A segment `{name}` matches
    /// any one non-empty segment and sets `${path.name}` (`/orders/{id}`). Matched against the
    /// request path in canonical form (escapes of unreserved characters decoded, `;`
    /// parameters cut, `//` collapsed, trailing dots trimmed).
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// `prefix` (default): `path` and anything below it; `exact`: `path` only.
    #[serde(default)]
    pub path_match: Option<Spanned<PathMatchSpec>>,
    /// Route only these methods here (other methods look for another route). Default: any.
    /// Every method listed must be one the service takes (`methods:`).
    #[serde(default)]
    pub methods: Option<Vec<Spanned<String>>>,
    /// Route here only requests carrying these headers with exactly these values (every
    /// copy of a repeated header must have the value).
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// Route here only requests whose query has these parameters with exactly these values
    /// (after percent and `+` decoding; every copy of a repeated parameter must have it).
    #[serde(default)]
    pub query: BTreeMap<String, Spanned<String>>,
    /// `insensitive` for upstreams that ignore letter case in paths (IIS and the like), so
    /// `/PRIVATE` is routed as `/private`. Default `sensitive`.
    #[serde(default)]
    pub path_case: Option<Spanned<PathCaseSpec>>,
    /// Path forms this service's upstream is known to read as the gateway does; requests
    /// holding any other such form are refused with `400 ambiguous-path`. Default: none.
    #[serde(default)]
    pub allow_path_forms: Vec<PathFormSpec>,
}

/// How a service's `path` matches.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PathMatchSpec {
    Prefix,
    Exact,
}

/// Letter case in path matching.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PathCaseSpec {
    Sensitive,
    Insensitive,
}

/// A path form that upstream stacks read differently.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PathFormSpec {
    /// `;` path parameters (`/a;jsessionid=1/b`): routed without them, forwarded with them.
    Parameters,
    /// Doubled slashes (`/a//b`): routed collapsed, forwarded as sent.
    EmptySegments,
    /// Segments ending in `.` or an encoded space: routed trimmed, forwarded as sent.
    TrailingDots,
}

/// The upstream: a URL, or a mapping with the URL (or several targets) and connection,
/// balancing, health and retry settings.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(untagged)]
pub enum UpstreamSpec {
    /// `http://host:port[/base]` or `https://...`.
    Url(String),
    Detailed(Box<UpstreamDetail>),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamDetail {
    /// `http://host:port[/base]` or `https://...`. One of `url` and `targets`.
    #[serde(default)]
    pub url: Option<String>,
    /// Several targets, each a URL or `{url, weight}`; all with the same scheme and base path.
    #[serde(default)]
    pub targets: Option<Vec<Spanned<TargetSpec>>>,
    /// Look the `url`'s host name up again this often; every address it has is a target.
    /// Without it the name is resolved once, at load.
    #[serde(default)]
    pub resolve_every: Option<Spanned<DurationSpec>>,
    /// `round_robin` (default), `least_connections` or `consistent_hash`.
    #[serde(default)]
    pub balance: Option<Spanned<BalanceSpec>>,
    /// With `consistent_hash`: the key, a template such as `${client.id}`.
    #[serde(default)]
    pub hash_on: Option<Spanned<String>>,
    /// Requests in flight per target; past it the next target takes the request, and with
    /// every target full the answer is `503 upstream-busy`. Default: no limit.
    #[serde(default)]
    pub max_connections: Option<Spanned<u32>>,
    /// An HTTP check of each target, off the request path.
    #[serde(default)]
    pub health_check: Option<Spanned<HealthCheckSpec>>,
    /// Targets that fail requests in a row are left out for a while.
    #[serde(default)]
    pub passive_health: Option<Spanned<PassiveHealthSpec>>,
    /// Retries on another target (connect failures; idempotent or fully buffered requests).
    #[serde(default)]
    pub retries: Option<Spanned<RetriesSpec>>,
    /// Default `5s`.
    #[serde(default)]
    pub connect_timeout: Option<DurationSpec>,
    /// Time allowed between reads from the upstream. Default `60s`.
    #[serde(default)]
    pub read_timeout: Option<DurationSpec>,
    /// Verify the upstream's TLS certificate (https only). Default `true`.
    #[serde(default)]
    pub verify_tls: Option<bool>,
    /// PEM file of CA certificates to trust for this upstream instead of the system's.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// TLS server name to send and verify. Default: the URL's host.
    #[serde(default)]
    pub sni: Option<String>,
    /// Forward the client's `Host` header instead of the upstream's. Default `false`.
    #[serde(default)]
    pub preserve_host: Option<bool>,
    /// Remove the matched path prefix before forwarding. Default `false`.
    #[serde(default)]
    pub strip_prefix: Option<bool>,
}

impl<'de> Deserialize<'de> for UpstreamSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UpstreamSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an upstream URL or a mapping with `url` or `targets`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UpstreamSpec, E> {
                Ok(UpstreamSpec::Url(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UpstreamSpec, A::Error> {
                UpstreamDetail::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|detail| UpstreamSpec::Detailed(Box::new(detail)))
            }
        }
        d.deserialize_any(V)
    }
}

impl UpstreamSpec {
    #[must_use]
    pub fn detail(&self) -> UpstreamDetail {
        match self {
            UpstreamSpec::Url(url) => UpstreamDetail {
                url: Some(url.clone()),
                targets: None,
                resolve_every: None,
                balance: None,
                hash_on: None,
                max_connections: None,
                health_check: None,
                passive_health: None,
                retries: None,
                connect_timeout: None,
                read_timeout: None,
                verify_tls: None,
                ca_file: None,
                sni: None,
                preserve_host: None,
                strip_prefix: None,
            },
            UpstreamSpec::Detailed(d) => (**d).clone(),
        }
    }
}

/// One access key of a key set.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HmacKeySpec {
    /// The access key id the client sends (e.g. `AKIDEXAMPLE`).
    pub access_key: String,
    /// The client it stands for; becomes `${client.id}`.
    pub client: String,
    /// Names of secrets (under `secrets:`) holding the signing secret. Several while rotating:
    /// any of them verifies; the first one signs.
    pub secrets: Vec<Spanned<String>>,
    /// Extra variables for this client: `tier: gold` sets `${client.tier}`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// The token service.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenServiceSpec {
    /// The issuer identifier: `iss` of the tokens, base of the metadata's endpoint URLs
    /// (e.g. `https://gateway.example.com`).
    pub issuer: Spanned<String>,
    /// `aud` of the access tokens. Default: the issuer.
    #[serde(default)]
    pub audience: Option<String>,
    /// Lifetime of access tokens. Default `1h`.
    #[serde(default)]
    pub access_token_ttl: Option<DurationSpec>,
    /// Lifetime of refresh tokens. Default `30d`.
    #[serde(default)]
    pub refresh_token_ttl: Option<DurationSpec>,
    /// Keys that sign access tokens: the first signs, all are published and verify (list
    /// the next key second ahead of a rotation; keep the old one listed until its tokens expired).
    pub signing_keys: Vec<Spanned<SigningKeySpec>>,
    /// Registered clients.
    #[serde(default)]
    pub clients: Vec<Lenient<Spanned<OAuthClientSpec>>>,
    /// Platforms whose role accounts may exchange signed JWTs for tokens (RFC 7523 jwt-bearer).
    #[serde(default)]
    pub trusted_issuers: Vec<Lenient<Spanned<TrustedIssuerSpec>>>,
    /// Identity providers whose signed SAML 2.0 assertions may be exchanged for tokens
    /// (RFC 7522 saml2-bearer).
    #[serde(default)]
    pub saml_issuers: Vec<Lenient<Spanned<SamlTrustedIssuerSpec>>>,
    /// Usage statistics and anomaly flags.
    #[serde(default)]
    pub usage: Option<UsageSpec>,
}

/// A signing key file.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningKeySpec {
    /// The `kid` published and put in token headers.
    pub kid: String,
    /// `ES256` (default) or `RS256`.
    #[serde(default)]
    pub algorithm: Option<SigningAlgorithmSpec>,
    /// PKCS#8 PEM private key file (relative to the policy file).
    pub file: Spanned<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum SigningAlgorithmSpec {
    ES256,
    RS256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenFormatSpec {
    /// A JWT signed by the gateway (validated locally, checked against the store for revocation).
    Jwt,
    /// A random string, stored hashed.
    Opaque,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantSpec {
    ClientCredentials,
    RefreshToken,
}

/// A client of the token service.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientSpec {
    /// The client_id.
    pub id: String,
    /// Hex SHA-256 of the client secret (`portcullis hash-key` prints it). Exactly one of `secret_sha256` and `secret`.
    #[serde(default)]
    pub secret_sha256: Option<Sha256Hex>,
    /// Name of a secret holding the client secret. Exactly one of `secret_sha256` and `secret`.
    #[serde(default)]
    pub secret: Option<Spanned<String>>,
    /// Grants it may use. Default `[client_credentials]`.
    #[serde(default)]
    pub grants: Option<Vec<GrantSpec>>,
    /// Scopes it may be granted; a request without `scope` gets all of them.
    pub scopes: Vec<String>,
    /// `jwt` (default) or `opaque`.
    #[serde(default)]
    pub token_format: Option<TokenFormatSpec>,
    /// Issue a refresh token with each access token (needs the refresh_token grant). Default `false`.
    #[serde(default)]
    pub refresh_tokens: Option<bool>,
    /// `own` (default): introspect its own tokens only; `any`: a resource server that may introspect every token.
    #[serde(default)]
    pub introspect: Option<IntrospectSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntrospectSpec {
    Own,
    Any,
}

/// A platform trusted for the jwt-bearer grant.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerSpec {
    /// The `iss` its assertions carry.
    pub issuer: String,
    /// Where it publishes its signing keys (http or https).
    pub keys_url: Spanned<String>,
    /// `jwks` (default) or `x509_map`.
    #[serde(default)]
    pub keys_format: Option<KeysFormatSpec>,
    /// Algorithms accepted. Default `[RS256, ES256]`.
    #[serde(default)]
    pub algorithms: Option<Vec<JwtAlgorithmSpec>>,
    /// The client id its tokens are recorded under (for statistics and revocation).
    pub client: String,
    /// `jwt` (default) or `opaque`.
    #[serde(default)]
    pub token_format: Option<TokenFormatSpec>,
    /// Issue refresh tokens too. Default `false`.
    #[serde(default)]
    pub refresh_tokens: Option<bool>,
    /// Clock skew allowed on exp, nbf and iat. Default `60s`.
    #[serde(default)]
    pub leeway: Option<DurationSpec>,
    /// Longest assertion lifetime accepted (exp − iat). Default `1h`.
    #[serde(default)]
    pub max_assertion_lifetime: Option<DurationSpec>,
    /// Refuse assertions without `jti` (replay protection needs it). Default `true`.
    #[serde(default)]
    pub require_jti: Option<bool>,
    /// Least time between two fetches caused by unknown key ids. Default `10s`.
    #[serde(default)]
    pub min_refresh_interval: Option<DurationSpec>,
    /// Role accounts (`sub`) that may obtain tokens, and the scopes each may be granted.
    pub accounts: BTreeMap<String, AccountSpec>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    pub scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageSpec {
    /// How often usage counts are written to the store. Default `1s`. A crash (not a
    /// shutdown) loses the counts of at most this long.
    #[serde(default)]
    pub flush_interval: Option<DurationSpec>,
    /// Write each request's use to the store before the request goes upstream, so a crash
    /// loses no count (a store write per request; if it fails the request gets `503`).
    /// Default `false`.
    #[serde(default)]
    pub durable: Option<bool>,
    /// Flag a token used from more distinct client addresses than this.
    #[serde(default)]
    pub max_distinct_ips: Option<u64>,
    /// Flag a token used more often than this per minute.
    #[serde(default)]
    pub max_requests_per_minute: Option<u64>,
    /// Revoke a token as soon as it is flagged. Default `false`.
    #[serde(default)]
    pub auto_revoke: Option<bool>,
}

/// An identity provider trusted for the saml2-bearer grant.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SamlTrustedIssuerSpec {
    /// The `Issuer` (entity ID) its assertions carry; with `metadata`, also the entity read
    /// from the metadata file.
    pub entity_id: String,
    /// PEM file of the certificates whose keys may sign its assertions (relative to the
    /// policy file; list the next one too during a rotation). With `metadata`, the only keys
    /// trusted, never a certificate inside an assertion.
    #[serde(default)]
    pub certificates: Option<Spanned<String>>,
    /// The IdP's SAML 2.0 metadata file: the signing certificates of the entity
    /// `entity_id` are trusted (all of them during a rotation). Refused at load once its
    /// validUntil has passed.
    #[serde(default)]
    pub metadata: Option<Spanned<String>>,
    /// The client id its tokens are recorded under (for statistics and revocation).
    pub client: String,
    /// `jwt` (default) or `opaque`.
    #[serde(default)]
    pub token_format: Option<TokenFormatSpec>,
    /// Issue refresh tokens too. Default `false`.
    #[serde(default)]
    pub refresh_tokens: Option<bool>,
    /// Clock skew allowed on every time bound. Default `60s`.
    #[serde(default)]
    pub leeway: Option<DurationSpec>,
    /// Longest assertion lifetime accepted (`NotOnOrAfter − IssueInstant`). Default `1h`.
    #[serde(default)]
    pub max_assertion_lifetime: Option<DurationSpec>,
    /// The bearer confirmation's `Recipient` must be this token endpoint, as RFC 7522 §3
    /// requires. Turn off only for an identity provider that cannot set it. Default `true`.
    #[serde(default)]
    pub require_recipient: Option<bool>,
    /// Subjects (`NameID`) that may obtain tokens, and the scopes each may be granted.
    pub subjects: BTreeMap<String, AccountSpec>,
}
