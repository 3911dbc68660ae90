//! Query-string parameter names as the application behind the gateway reads them.
//!
//! Refusals that look for a parameter by name (an API key or an access token sent in the
//! URL) must match the name after form decoding (`+` and percent-escapes), or
//! `ap%69_key=...` walks past a check that the upstream then reads as `api_key`.

use std::borrow::Cow;

/// The decoded name of each `name=value` pair of `query` (pairs without `=` are names).
pub fn decoded_names(query: &str) -> impl Iterator<Item = Cow<'_, str>> {
    query
        .split('&')
        .map(|pair| pair.split('=').next().unwrap_or_default())
        .map(decode_component)
}

/// Form-decodes one query component; invalid escapes stay as they are.
#[must_use]
pub fn decode_component(component: &str) -> Cow<'_, str> {
    if !component.contains(['%', '+']) {
        return Cow::Borrowed(component);
    }
    let spaced = component.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy();
    Cow::Owned(decoded.into_owned())
}

/// True when `query` has a parameter whose decoded name equals `name`, ignoring ASCII case.
#[must_use]
pub fn has_name(query: &str, name: &str) -> bool {
    decoded_names(query).any(|n| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_matched_after_form_decoding() {
        assert!(has_name("ap%69_key=1", "api_key"));
        assert!(has_name("x=1&API%5Fkey=2", "api_key"));
        assert!(has_name("access%5ftoken=abc", "access_token"));
        assert!(has_name("api+key=1", "api key"));
        assert!(!has_name("api_keys=1", "api_key"));
        assert!(!has_name("q=api_key", "api_key"));
        assert!(has_name("%zz&api_key", "api_key"));
    }
}
