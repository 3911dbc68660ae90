//! The policy language as YAML sees it: `*Spec` types, deserialised with unknown fields
//! denied, validated value by value (addresses, CIDRs, header names, sizes, durations) as
//! they are read, so each mistake is reported at its own `line:col`.
//!
//! Nothing here runs per request: [`super::compile`] turns these into runtime types.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

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
    /// Worker threads for the proxy. Default: the number of CPUs.
    #[serde(default)]
    pub workers: Lenient<Option<Spanned<usize>>>,
    /// Where the JSON access log goes: `stdout` (default), `off`, or `{file: PATH}`.
    #[serde(default)]
    pub access_log: Lenient<Option<AccessLogSpec>>,
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
    /// `sqlite://PATH` (relative to this file) or `memory`. Default `sqlite://portcullis.db`.
    /// Takes effect at start.
    #[serde(default)]
    pub state: Option<Spanned<String>>,
    /// The OAuth 2.0 token service: token, introspection and revocation endpoints, JWKS and
    /// metadata, served on the proxy listener.
    #[serde(default)]
    pub token_service: Lenient<Option<Spanned<TokenServiceSpec>>>,
    /// Other policy files (glob patterns, relative to this file) that add services and secrets.
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    /// The services this gateway fronts.
    #[serde(default)]
    pub services: Vec<Lenient<Spanned<ServiceSpec>>>,
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
    /// Where allowed requests go.
    pub upstream: Lenient<Spanned<UpstreamSpec>>,
    /// Largest request body accepted (`413` past it), e.g. `1MiB`. Default `10MiB`.
    #[serde(default)]
    pub max_request_body: Lenient<Option<ByteSize>>,
    /// Methods this service takes (`405` otherwise). Default: GET, HEAD, POST, PUT, PATCH,
    /// DELETE, OPTIONS. `TRACE` and `CONNECT` are never proxied.
    #[serde(default)]
    pub methods: Option<Vec<Spanned<String>>>,
    /// Steps run on the way in, before the upstream is contacted.
    #[serde(default)]
    pub request: Vec<Lenient<Spanned<AssertionSpec>>>,
    /// Steps run on the response head on the way back.
    #[serde(default)]
    pub response: Vec<Lenient<Spanned<AssertionSpec>>>,
}

/// Host and path-prefix match. Host is matched first, then the longest path prefix.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Exact host (port ignored, case-insensitive), or `*.example.com`. Absent: any host.
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    /// Path prefix, on segment boundaries (`/widgets` matches `/widgets/7`, not `/widgetsx`). Default `/`.
    /// Matched against the request path in canonical form (escapes of unreserved characters
    /// decoded, `;` parameters cut, `//` collapsed, trailing dots trimmed).
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// `insensitive` for upstreams that ignore letter case in paths (IIS and the like), so
    /// `/PRIVATE` is routed as `/private`. Default `sensitive`.
    #[serde(default)]
    pub path_case: Option<Spanned<PathCaseSpec>>,
    /// Path forms this service's upstream is known to read as the gateway does; requests
    /// holding any other such form are refused with `400 ambiguous-path`. Default: none.
    #[serde(default)]
    pub allow_path_forms: Vec<PathFormSpec>,
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

/// The upstream: a URL, or a mapping with the URL and connection settings.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(untagged)]
pub enum UpstreamSpec {
    /// `http://host:port[/base]` or `https://...`.
    Url(String),
    Detailed(UpstreamDetail),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamDetail {
    /// `http://host:port[/base]` or `https://...`.
    pub url: String,
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
                f.write_str("an upstream URL or a mapping with `url`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UpstreamSpec, E> {
                Ok(UpstreamSpec::Url(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UpstreamSpec, A::Error> {
                UpstreamDetail::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(UpstreamSpec::Detailed)
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
                url: url.clone(),
                connect_timeout: None,
                read_timeout: None,
                verify_tls: None,
                ca_file: None,
                sni: None,
                preserve_host: None,
                strip_prefix: None,
            },
            UpstreamSpec::Detailed(d) => d.clone(),
        }
    }
}

/// One step of a pipeline, written `- name: options`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssertionSpec {
    /// Require an API key in a header.
    RequireApiKey(ApiKeySpec),
    /// Only these client addresses (CIDR list) pass.
    AllowIp(Vec<Cidr>),
    /// These client addresses (CIDR list) are refused.
    DenyIp(Vec<Cidr>),
    /// Set a header (request side: to the upstream; response side: to the client).
    SetHeader(SetHeaderSpec),
    /// Remove headers (list of names).
    RemoveHeader(Vec<HeaderNameSpec>),
    /// The request body must be well-formed JSON.
    ValidateJson(ValidateJsonSpec),
    /// The request must carry a valid HMAC signature (AWS SigV4, SigV2, or a custom template).
    RequireHmac(RequireHmacSpec),
    /// Sign the request going upstream with a key of a key set.
    SignHmac(SignHmacSpec),
    /// Mask card numbers (PANs) in response bodies.
    MaskPan(MaskPanSpec),
    /// Require an OAuth 2.0 bearer token (RFC 6750) with the given scopes.
    RequireBearer(RequireBearerSpec),
    /// Every step must pass, in order.
    All(Vec<Lenient<Spanned<AssertionSpec>>>),
    /// At least one step must pass; the failure lists every branch's reason.
    Any(Vec<Lenient<Spanned<AssertionSpec>>>),
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    /// Header carrying the key. Default `X-Api-Key`.
    #[serde(default)]
    pub header: Option<HeaderNameSpec>,
    /// A prefix the header value must start with, stripped before lookup (e.g. `ApiKey `).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Query parameters that mark a key sent in the URL (refused). Default `api_key, apikey, api-key, x-api-key`.
    #[serde(default)]
    pub query_params: Option<Vec<String>>,
    /// The accepted keys.
    pub keys: Vec<Spanned<ApiKeyEntrySpec>>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntrySpec {
    /// The client this key identifies; becomes `${client.id}`.
    pub client: String,
    /// Hex SHA-256 of the key (`portcullis hash-key` prints it). Exactly one of `sha256` and `secret`.
    #[serde(default)]
    pub sha256: Option<Sha256Hex>,
    /// Name of a secret holding the key itself. Exactly one of `sha256` and `secret`.
    #[serde(default)]
    pub secret: Option<Spanned<String>>,
    /// Extra variables set for this client: `tier: gold` sets `${client.tier}`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
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

/// Which HMAC scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HmacSchemeSpec {
    /// AWS Signature Version 4 (HMAC-SHA256, Authorization header or presigned URL).
    AwsSigv4,
    /// AWS Signature Version 2 (S3 REST, HMAC-SHA1, header or query form).
    AwsSigv2,
    /// An operator-defined string to sign.
    Template,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithmSpec {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncodingSpec {
    Base64,
    Hex,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequireHmacSpec {
    pub scheme: HmacSchemeSpec,
    /// Name of a key set under `keys:`.
    pub keys: Spanned<String>,
    /// aws-sigv4: the region the credential scope must name (required).
    #[serde(default)]
    pub region: Option<String>,
    /// aws-sigv4: the service the credential scope must name (required).
    #[serde(default)]
    pub service: Option<String>,
    /// aws-sigv4: accept presigned URLs (X-Amz-Signature in the query). Default `true`.
    #[serde(default)]
    pub allow_presigned: Option<bool>,
    /// aws-sigv4: sign the path as every AWS service but S3 does (dot segments and duplicate
    /// slashes normalised, the path as sent encoded once more). `false`: S3 style (kept as sent,
    /// encoded once). Default `true`.
    #[serde(default)]
    pub normalize_path: Option<bool>,
    /// aws-sigv4: accept `x-amz-content-sha256: UNSIGNED-PAYLOAD`. Default `false`.
    #[serde(default)]
    pub allow_unsigned_payload: Option<bool>,
    /// aws-sigv2: accept the query form (AWSAccessKeyId, Expires, Signature). Default `true`.
    #[serde(default)]
    pub allow_query: Option<bool>,
    /// Largest accepted difference between the request's time and the gateway's. Default `5m`.
    #[serde(default)]
    pub max_skew: Option<DurationSpec>,
    /// Refuse a signature already used inside the skew window. Default `true`.
    #[serde(default)]
    pub replay_protection: Option<bool>,
    /// Most signatures remembered at once per key set; past it new requests get 503. Default 100000.
    #[serde(default)]
    pub replay_capacity: Option<usize>,
    /// template: the header carrying key id and signature. Default `Authorization`.
    #[serde(default)]
    pub header: Option<HeaderNameSpec>,
    /// template: the header format, with `${key_id}` and `${signature}`. Default `HMAC ${key_id}:${signature}`.
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    /// template: the HMAC hash. Default `sha256`.
    #[serde(default)]
    pub algorithm: Option<HmacAlgorithmSpec>,
    /// template: how the signature is written. Default `base64`.
    #[serde(default)]
    pub encoding: Option<SignatureEncodingSpec>,
    /// template: the string to sign, with `${...}` variables (`${body.sha256}` is the body's hex SHA-256).
    #[serde(default)]
    pub string_to_sign: Option<Spanned<String>>,
    /// template: the header with the request time (checked against max_skew). Default `X-Date`.
    #[serde(default)]
    pub date_header: Option<HeaderNameSpec>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignHmacSpec {
    pub scheme: HmacSchemeSpec,
    /// Name of a key set under `keys:`.
    pub keys: Spanned<String>,
    /// The access key of that set to sign with (its first secret signs).
    pub access_key: Spanned<String>,
    /// aws-sigv4: the region of the credential scope (required).
    #[serde(default)]
    pub region: Option<String>,
    /// aws-sigv4: the service of the credential scope (required).
    #[serde(default)]
    pub service: Option<String>,
    /// aws-sigv4: also send and sign `x-amz-content-sha256`. Default `true`.
    #[serde(default)]
    pub content_sha256_header: Option<bool>,
    /// aws-sigv4: sign the path as non-S3 AWS services do (normalised, encoded again); `false`: S3 style. Default `true`.
    #[serde(default)]
    pub normalize_path: Option<bool>,
    /// template: the header to write. Default `Authorization`.
    #[serde(default)]
    pub header: Option<HeaderNameSpec>,
    /// template: the header format, with `${key_id}` and `${signature}`. Default `HMAC ${key_id}:${signature}`.
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    /// template: the HMAC hash. Default `sha256`.
    #[serde(default)]
    pub algorithm: Option<HmacAlgorithmSpec>,
    /// template: how the signature is written. Default `base64`.
    #[serde(default)]
    pub encoding: Option<SignatureEncodingSpec>,
    /// template: the string to sign, with `${...}` variables.
    #[serde(default)]
    pub string_to_sign: Option<Spanned<String>>,
    /// template: the date header (set to the current HTTP date when absent). Default `X-Date`.
    #[serde(default)]
    pub date_header: Option<HeaderNameSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MaskModeSpec {
    Mask,
    Block,
}

/// Which digits of a card number stay visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeepSpec {
    /// `************1111`
    LastFour,
    /// `411111******1111`
    FirstSixLastFour,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskPanSpec {
    /// `mask` (default): mask and send on, streaming. `block`: withhold a response that holds
    /// a card number, answering 502 (the whole response is read before any of it is sent).
    #[serde(default)]
    pub mode: Option<MaskModeSpec>,
    /// Digits left visible. Default `last_four`.
    #[serde(default)]
    pub keep: Option<KeepSpec>,
    /// The mask character (one ASCII character, not a digit). Default `*`.
    #[serde(default)]
    pub mask_char: Option<Spanned<String>>,
    /// Content types scanned: exact types, prefixes ending in `/` (`text/`), or suffixes
    /// starting with `+` (`+json`). Default: application/json, application/xml,
    /// application/x-www-form-urlencoded, text/, +json, +xml (and bodies without a type).
    #[serde(default)]
    pub content_types: Option<Vec<String>>,
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

/// Algorithms accepted on signed JWTs from others: asymmetric only (`none` and HMAC cannot
/// be named).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum JwtAlgorithmSpec {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeysFormatSpec {
    /// A JSON Web Key Set (RFC 7517).
    Jwks,
    /// A JSON object of key id → PEM X.509 certificate (as Google publishes).
    X509Map,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeMatchSpec {
    All,
    Any,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequireBearerSpec {
    /// The realm named in `WWW-Authenticate`. Default: the service name.
    #[serde(default)]
    pub realm: Option<Spanned<String>>,
    /// Scopes the token must carry.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `all` (default): every listed scope; `any`: one of them.
    #[serde(default)]
    pub scope_match: Option<ScopeMatchSpec>,
    /// Accept `?access_token=` when there is no Authorization header (RFC 6750 §2.3; it leaks
    /// into logs). Default `false`: refused with 400 invalid_request.
    #[serde(default)]
    pub allow_query_token: Option<bool>,
    /// Validate another issuer's JWTs against its published keys instead of this gateway's tokens.
    #[serde(default)]
    pub issuer: Option<RemoteIssuerSpec>,
    /// Validate tokens at another issuer's RFC 7662 introspection endpoint instead.
    #[serde(default)]
    pub introspection: Option<IntrospectionSpec>,
}

/// A remote RFC 7662 introspection endpoint.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionSpec {
    /// The endpoint URL (http or https).
    pub url: Spanned<String>,
    /// The gateway's client id at that issuer.
    pub client_id: String,
    /// Name of the secret holding the gateway's client secret there.
    pub client_secret: Spanned<String>,
    /// Longest time an active answer is reused without asking again (never past the token's
    /// `exp`). A revocation at the issuer is seen after at most this long. Default `30s`; `0s`
    /// asks on every request.
    #[serde(default)]
    pub cache_ttl: Option<DurationSpec>,
}

/// Another issuer's JWT access tokens.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteIssuerSpec {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// Where it publishes its keys.
    pub keys_url: Spanned<String>,
    /// `jwks` (default) or `x509_map`.
    #[serde(default)]
    pub keys_format: Option<KeysFormatSpec>,
    /// The `aud` the tokens must name; absent: not checked.
    #[serde(default)]
    pub audience: Option<String>,
    /// Default `[RS256, ES256]`.
    #[serde(default)]
    pub algorithms: Option<Vec<JwtAlgorithmSpec>>,
    /// Clock skew allowed. Default `60s`.
    #[serde(default)]
    pub leeway: Option<DurationSpec>,
    /// Least time between two fetches caused by unknown key ids. Default `10s`.
    #[serde(default)]
    pub min_refresh_interval: Option<DurationSpec>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetHeaderSpec {
    pub name: HeaderNameSpec,
    /// Text with `${...}` variables.
    pub value: Spanned<String>,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateJsonSpec {
    /// Deepest nesting of arrays/objects allowed. Default 32.
    #[serde(default)]
    pub max_depth: Option<usize>,
    /// Whether an empty body passes. Default `true`.
    #[serde(default)]
    pub allow_empty: Option<bool>,
}

/// Defines a string newtype validated when it is read, with a plain string schema.
macro_rules! validated_string {
    ($(#[$meta:meta])* $name:ident($inner:ty), $what:literal, |$s:ident| $parse:expr, |$v:ident| $show:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name(pub $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let $s = String::deserialize(d)?;
                let parsed: Result<$inner, String> = $parse;
                parsed.map($name).map_err(de::Error::custom)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let $v = &self.0;
                s.collect_str(&$show)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "description": $what })
            }
        }
    };
}

validated_string!(
    /// A socket address `HOST:PORT`.
    Addr(SocketAddr), "an address HOST:PORT, e.g. 127.0.0.1:8080",
    |s| s.parse().map_err(|_| format!("\"{s}\" is not an address of the form HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)")),
    |v| v
);

validated_string!(
    /// An IPv4 or IPv6 CIDR block; a bare address means a single host.
    Cidr(IpNet), "a CIDR block such as 10.0.0.0/8 or 2001:db8::/32, or a single address",
    |s| s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("\"{s}\" is not a CIDR block (e.g. 10.0.0.0/8) or an IP address")),
    |v| v
);

validated_string!(
    /// An HTTP header name.
    HeaderNameSpec(HeaderName), "an HTTP header name",
    |s| HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("\"{s}\" is not a valid header name")),
    |v| v
);

validated_string!(
    /// A hex SHA-256 digest.
    Sha256Hex([u8; 32]), "64 hex digits: the SHA-256 of an API key",
    |s| {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out)
            .map(|()| out)
            .map_err(|_| "expected 64 hex digits (the SHA-256 of the key; `portcullis hash-key` prints it)".to_owned())
    },
    |v| hex::encode(v)
);

validated_string!(
    /// A size: bytes, or with a unit `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`.
    ByteSize(u64), "a size such as 65536, 64KiB or 10MiB",
    |s| parse_size(&s).ok_or_else(|| format!("\"{s}\" is not a size (e.g. 65536, 64KiB, 10MiB)")),
    |v| v
);

validated_string!(
    /// A duration such as `5s`, `250ms`, `2m`.
    DurationSpec(Duration), "a duration such as 250ms, 5s or 2m",
    |s| humantime::parse_duration(&s).map_err(|_| format!("\"{s}\" is not a duration (e.g. 250ms, 5s, 2m)")),
    |v| humantime::format_duration(*v)
);

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1024,
        "MB" => 1000 * 1000,
        "MiB" => 1024 * 1024,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// One listen address or a list of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Listen(pub Vec<SocketAddr>);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Listen;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address HOST:PORT or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Listen, E> {
                Addr::deserialize(de::value::StrDeserializer::<E>::new(v))
                    .map(|a| Listen(vec![a.0]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Listen, A::Error> {
                let mut out = Vec::new();
                while let Some(a) = seq.next_element::<Addr>()? {
                    out.push(a.0);
                }
                Ok(Listen(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Listen {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Listen")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "oneOf": [
                { "type": "string", "description": "HOST:PORT" },
                { "type": "array", "items": { "type": "string", "description": "HOST:PORT" } }
            ]
        })
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T: Serialize> Serialize for Lenient<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Serialize for Listen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        T::json_schema(g)
    }
}

impl<T: JsonSchema> JsonSchema for Lenient<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        T::json_schema(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("10MiB"), Some(10 * 1024 * 1024));
        assert_eq!(parse_size("1 GB"), Some(1_000_000_000));
        assert_eq!(parse_size("12XB"), None);
        assert_eq!(parse_size("MiB"), None);
    }
}
