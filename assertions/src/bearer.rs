//! `require_bearer`: an OAuth 2.0 bearer token (RFC 6750) must come with the request.
//!
//! This module finds the token (the `Authorization` header; the `access_token` query
//! parameter only when the policy allows it), checks the scopes the step requires and sets
//! `${client.id}`, `${token.sub}` and `${token.scope}`. Whether a token is valid is the
//! [`TokenResolver`]'s business: the gateway supplies one that verifies its own JWTs and
//! opaque tokens against its state store, or a third party's against a published key set.
//! Refusals carry `WWW-Authenticate: Bearer realm=..., error=..., error_description=...`.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};

use crate::{Assertion, Exchange, PrefetchWork, Rejection, Request, RequestView, VarId, Verdict};

/// Longest token looked at; anything longer is refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A token that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidToken {
    /// The token's id (`jti`, or the digest of an opaque token): for usage and logs.
    pub id: Arc<str>,
    pub client_id: Arc<str>,
    pub subject: Arc<str>,
    /// Space-separated scopes.
    pub scope: Arc<str>,
    /// Unix seconds.
    pub expires_at: i64,
}

impl ValidToken {
    /// True when the token carries `scope`.
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Expired, revoked, malformed, unknown, wrong signature, audience or issuer: 401
    /// `invalid_token` with this description.
    Invalid(Cow<'static, str>),
    /// Validation could not be done (store down, key set never fetched): 503, fail closed.
    Unavailable(Cow<'static, str>),
}

/// Validates tokens for `require_bearer`.
pub trait TokenResolver: Send + Sync + fmt::Debug {
    /// Validates `token`, presented by `client_ip` (counted in the token's usage).
    ///
    /// # Errors
    /// Why the token is not accepted.
    fn resolve(&self, token: &str, client_ip: IpAddr) -> Result<Arc<ValidToken>, TokenError>;

    /// Work that must happen before [`TokenResolver::resolve`] can answer for this token.
    fn prefetch(&self, _token: &str) -> Option<PrefetchWork> {
        None
    }

    /// True when [`TokenResolver::prefetch`] may ever have work, so a step whose resolver
    /// answers from memory alone does not look for the token twice per request.
    fn prefetches(&self) -> bool {
        false
    }
}

/// Whether every required scope must be present, or one is enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeMatch {
    All,
    Any,
}

/// The variables `require_bearer` sets.
#[derive(Debug, Clone, Copy)]
pub struct BearerVars {
    pub client_id: VarId,
    pub subject: VarId,
    pub scope: VarId,
}

#[derive(Debug)]
pub struct RequireBearer {
    realm: String,
    scopes: Vec<String>,
    scope_match: ScopeMatch,
    allow_query: bool,
    resolver: Arc<dyn TokenResolver>,
    vars: BearerVars,
    /// `Bearer realm="..."`, sent when no token came.
    challenge: HeaderValue,
}

/// Where the token was found.
enum Found<'a> {
    Token(&'a str),
    Missing,
    Refused(Rejection),
}

impl RequireBearer {
    /// # Errors
    /// The realm holds characters a header cannot carry.
    pub fn new(
        realm: &str,
        scopes: Vec<String>,
        scope_match: ScopeMatch,
        allow_query: bool,
        resolver: Arc<dyn TokenResolver>,
        vars: BearerVars,
    ) -> Result<Self, String> {
        if !realm
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err("realm must be printable ASCII without quotes or backslashes".to_owned());
        }
        let challenge = HeaderValue::from_str(&format!("Bearer realm=\"{realm}\""))
            .map_err(|_| "realm cannot be sent in a header".to_owned())?;
        Ok(RequireBearer {
            realm: realm.to_owned(),
            scopes,
            scope_match,
            allow_query,
            resolver,
            vars,
            challenge,
        })
    }

    /// An RFC 6750 refusal: `status`, the `error` code and its description.
    fn refuse(&self, status: StatusCode, error: &'static str, description: &str) -> Rejection {
        let mut value = format!(
            "Bearer realm=\"{}\", error=\"{error}\", error_description=\"{}\"",
            self.realm,
            sanitize(description)
        );
        if error == "insufficient_scope" {
            value.push_str(&format!(", scope=\"{}\"", self.scopes.join(" ")));
        }
        let header = HeaderValue::from_str(&value).unwrap_or_else(|_| self.challenge.clone());
        let code = match error {
            "invalid_request" => "invalid-request",
            "insufficient_scope" => "insufficient-scope",
            _ => "invalid-token",
        };
        Rejection::new(status, code, description.to_owned()).with_header(WWW_AUTHENTICATE, header)
    }

    fn find<'r>(&self, req: &'r dyn RequestView) -> Found<'r> {
        let mut headers = req.headers().get_all(AUTHORIZATION).iter();
        let first = headers.next();
        if headers.next().is_some() {
            return Found::Refused(self.refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "more than one Authorization header",
            ));
        }
        // By decoded name: `access%5Ftoken` is `access_token` to the upstream.
        let in_query = req
            .query()
            .is_some_and(|q| crate::query::decoded_names(q).any(|n| n == "access_token"));
        if in_query && !self.allow_query {
            return Found::Refused(self.refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "tokens in the query string are refused (they end up in logs and caches): send it in the Authorization header",
            ));
        }
        let from_header = first.and_then(|v| bearer_credentials(v.as_bytes()));
        match (from_header, in_query) {
            (Some(_), true) => Found::Refused(self.refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the token came both in the Authorization header and in the query string",
            )),
            (Some(Ok(token)), false) => Found::Token(token),
            (Some(Err(why)), false) => {
                Found::Refused(self.refuse(StatusCode::UNAUTHORIZED, "invalid_token", why))
            }
            (None, true) => match query_token(req.query().unwrap_or_default()) {
                Some(t) => Found::Token(t),
                None => Found::Refused(self.refuse(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "the access_token parameter is empty or malformed",
                )),
            },
            (None, false) => Found::Missing,
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header; `None` for another scheme.
fn bearer_credentials(value: &[u8]) -> Option<Result<&str, &'static str>> {
    let scheme_end = value.iter().position(|&b| b == b' ').unwrap_or(value.len());
    if !value[..scheme_end].eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = value[scheme_end..].trim_ascii();
    if token.is_empty() {
        return Some(Err("the Authorization header has no token after Bearer"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Some(Err("the token is longer than the gateway accepts"));
    }
    if !is_b64token(token) {
        return Some(Err("the token holds characters a bearer token cannot have"));
    }
    Some(std::str::from_utf8(token).map_err(|_| "the token is not ASCII"))
}

/// RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(t: &[u8]) -> bool {
    let body_end = t.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    body_end > 0
        && t[..body_end]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// The `access_token` query parameter, when it is a well-formed token.
fn query_token(query: &str) -> Option<&str> {
    let value = query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (crate::query::decode_component(name) == "access_token").then_some(value)
    })?;
    (!value.is_empty() && value.len() <= MAX_TOKEN_BYTES && is_b64token(value.as_bytes()))
        .then_some(value)
}

/// Keeps a description within what a quoted header parameter may hold.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

impl Assertion for RequireBearer {
    fn kind(&self) -> &'static str {
        "require_bearer"
    }

    /// `Authorization`, and `access_token` in the query (allowed or not).
    fn credential_places(&self) -> Option<crate::CredentialPlaces> {
        Some(
            crate::CredentialPlaces::of(self.kind())
                .header(AUTHORIZATION)
                .query_params(["access_token"]),
        )
    }

    fn phases(&self) -> crate::Phases {
        crate::Phases::REQUEST
    }

    fn prefetch(&self, req: &dyn RequestView) -> Option<PrefetchWork> {
        if !self.resolver.prefetches() {
            return None;
        }
        match self.find(req) {
            Found::Token(t) => self.resolver.prefetch(t),
            _ => None,
        }
    }

    fn on_request(&self, req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        let token = match self.find(&*req.head) {
            Found::Token(t) => t,
            Found::Missing => {
                return Verdict::Reject(
                    Rejection::new(
                        StatusCode::UNAUTHORIZED,
                        "missing-token",
                        "this API needs an OAuth 2.0 bearer token in the Authorization header",
                    )
                    .with_header(WWW_AUTHENTICATE, self.challenge.clone()),
                )
            }
            Found::Refused(r) => return Verdict::Reject(r),
        };
        let valid = match self.resolver.resolve(token, x.client_ip) {
            Ok(v) => v,
            Err(TokenError::Invalid(why)) => {
                return Verdict::Reject(self.refuse(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    &why,
                ))
            }
            Err(TokenError::Unavailable(why)) => {
                return Verdict::Reject(Rejection::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "token-validation-unavailable",
                    why,
                ))
            }
        };
        let scoped = match self.scope_match {
            ScopeMatch::All => self.scopes.iter().all(|s| valid.has_scope(s)),
            ScopeMatch::Any => {
                self.scopes.is_empty() || self.scopes.iter().any(|s| valid.has_scope(s))
            }
        };
        if !scoped {
            let what = match self.scope_match {
                ScopeMatch::All => "the token lacks a scope this API requires",
                ScopeMatch::Any => "the token has none of the scopes this API accepts",
            };
            return Verdict::Reject(self.refuse(StatusCode::FORBIDDEN, "insufficient_scope", what));
        }
        x.note(|| {
            format!(
                "token {} of client {} for {}",
                valid.id, valid.client_id, valid.subject
            )
        });
        x.set(self.vars.client_id, valid.client_id.clone());
        x.set(self.vars.subject, valid.subject.clone());
        x.set(self.vars.scope, valid.scope.clone());
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests;
