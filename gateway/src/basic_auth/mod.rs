//! HTTP Basic authentication (RFC 7617) against a users file of argon2id hashes: the
//! header's parsing and the file ([`users`]), shared by every endpoint that takes Basic
//! credentials (the SAML issuer, the userauth API).

pub mod users;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::HeaderValue;

pub use users::{User, Users};

/// What `Authorization` held. `Debug` never shows the password or the name.
#[derive(PartialEq, Eq)]
pub enum Credentials {
    Missing,
    Malformed,
    Given { name: String, password: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Missing => "Missing",
            Credentials::Malformed => "Malformed",
            Credentials::Given { .. } => "Given(..)",
        })
    }
}

/// Parses RFC 7617's `Basic base64(user-id ":" password)`, UTF-8, the user-id without `:`.
#[must_use]
pub fn basic_credentials(value: Option<&HeaderValue>) -> Credentials {
    let Some(value) = value else {
        return Credentials::Missing;
    };
    let Ok(text) = value.to_str() else {
        return Credentials::Malformed;
    };
    let Some((scheme, rest)) = text.trim().split_once(' ') else {
        return Credentials::Malformed;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        // Another scheme is not Basic credentials at all: ask for them.
        return Credentials::Missing;
    }
    let Ok(raw) = STANDARD.decode(rest.trim()) else {
        return Credentials::Malformed;
    };
    let Ok(raw) = String::from_utf8(raw) else {
        return Credentials::Malformed;
    };
    match raw.split_once(':') {
        Some((name, password)) if !name.is_empty() => Credentials::Given {
            name: name.to_owned(),
            password: password.to_owned(),
        },
        _ => Credentials::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Credentials {
        basic_credentials(Some(&HeaderValue::from_str(v).expect("value")))
    }

    #[test]
    fn basic_credentials_follow_rfc_7617() {
        assert_eq!(basic_credentials(None), Credentials::Missing);
        assert_eq!(
            parse(&format!("Basic {}", STANDARD.encode("alice:pa:ss wörd"))),
            Credentials::Given {
                name: "alice".to_owned(),
                password: "pa:ss wörd".to_owned()
            }
        );
        assert_eq!(
            parse(&format!("basic  {}", STANDARD.encode("bob:"))),
            Credentials::Given {
                name: "bob".to_owned(),
                password: String::new()
            }
        );
        assert_eq!(parse("Bearer abc"), Credentials::Missing);
        assert_eq!(parse("Basic !!!"), Credentials::Malformed);
        assert_eq!(
            parse(&format!("Basic {}", STANDARD.encode("no-colon"))),
            Credentials::Malformed
        );
        assert_eq!(
            parse(&format!("Basic {}", STANDARD.encode(":pw"))),
            Credentials::Malformed
        );
        assert_eq!(parse("Basic"), Credentials::Malformed);
    }
}
