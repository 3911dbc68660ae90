//! The error codes of the token service's answers (RFC 6749 §5.2, reused by introspection
//! (RFC 7662) and revocation (RFC 7009)), as an enum: the wire string and the HTTP status
//! of each in one place.
//!
//! [`OAuthError`] carries one; [`ErrorCode::error`] builds it.

use std::borrow::Cow;

use http::StatusCode;

use super::OAuthError;

/// An RFC 6749 §5.2 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A parameter missing, repeated or malformed, or another malformed request.
    InvalidRequest,
    /// Client authentication failed (unknown client, wrong secret, no authentication).
    InvalidClient,
    /// The grant (refresh token, jwt-bearer assertion) is invalid, expired or revoked.
    InvalidGrant,
    /// The client may not use this grant type (or act on this token).
    UnauthorizedClient,
    /// The grant type is not one the service supports.
    UnsupportedGrantType,
    /// A requested scope is unknown or beyond what the client may have.
    InvalidScope,
    /// RFC 6749 §4.1.2.1: the store or an issuer's keys cannot be reached; retry later.
    TemporarilyUnavailable,
    /// RFC 6749 §4.1.2.1: the service failed unexpectedly.
    ServerError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidClient,
        ErrorCode::InvalidGrant,
        ErrorCode::UnauthorizedClient,
        ErrorCode::UnsupportedGrantType,
        ErrorCode::InvalidScope,
        ErrorCode::TemporarilyUnavailable,
        ErrorCode::ServerError,
    ];

    /// The code as it goes in the `error` member of the answer.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::ServerError => "server_error",
        }
    }

    /// The code named by `error`, if it is one of these.
    #[must_use]
    pub fn parse(error: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == error)
    }

    /// The HTTP status (RFC 6749 §5.2): 400, except `invalid_client`, 401 (the RFC
    /// requires it when the client authenticated with the `Authorization` header and
    /// allows it otherwise; the service always uses it). The two §4.1.2.1 codes carry the
    /// status they stand for: 503 and 500.
    #[must_use]
    pub const fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidGrant
            | ErrorCode::UnauthorizedClient
            | ErrorCode::UnsupportedGrantType
            | ErrorCode::InvalidScope => StatusCode::BAD_REQUEST,
        }
    }

    /// The `WWW-Authenticate` challenge the answer carries: for `invalid_client` when the
    /// client authenticated with the `Authorization` header (RFC 6749 §5.2 "MUST").
    #[must_use]
    pub fn challenge(self, used_authorization: bool) -> Option<&'static str> {
        (self == ErrorCode::InvalidClient && used_authorization)
            .then_some("Basic realm=\"portcullis\"")
    }

    /// An error with this code.
    pub fn error(self, description: impl Into<Cow<'static, str>>) -> OAuthError {
        OAuthError::new(self, description)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(code.error("why").code, code);
        }
        assert_eq!(ErrorCode::parse("access_denied"), None);
    }

    #[test]
    fn only_invalid_client_with_authorization_is_challenged() {
        for code in ErrorCode::ALL {
            assert_eq!(code.challenge(false), None);
            assert_eq!(
                code.challenge(true).is_some(),
                code == ErrorCode::InvalidClient
            );
        }
    }
}
