//! Where an authenticating step reads the caller's credential (a header, a query
//! parameter), declared by the step so the gateway can keep exactly that credential from the
//! upstream: a production user expects the key the gateway checked not to travel on.

use http::HeaderName;

/// The places a step reads a caller's credential from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialPlaces {
    /// Header names (`Authorization`, `X-Api-Key`, a SAML header).
    pub headers: Vec<HeaderName>,
    /// Query parameter names, matched after form decoding and without regard to ASCII case
    /// (a presigned URL's `X-Amz-Signature`, `access_token`, `api_key`).
    pub query_params: Vec<String>,
    /// The kinds of the steps that authenticate (`require_api_key`), for messages.
    pub steps: Vec<&'static str>,
}

impl CredentialPlaces {
    /// The places of one authenticating step of `kind`.
    #[must_use]
    pub fn of(kind: &'static str) -> Self {
        CredentialPlaces {
            steps: vec![kind],
            ..CredentialPlaces::default()
        }
    }

    /// Adds a header, once.
    #[must_use]
    pub fn header(mut self, name: HeaderName) -> Self {
        if !self.headers.contains(&name) {
            self.headers.push(name);
        }
        self
    }

    /// Adds query parameter names, once each (compared without regard to ASCII case).
    #[must_use]
    pub fn query_params<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        for name in names {
            if !self
                .query_params
                .iter()
                .any(|p| p.eq_ignore_ascii_case(name))
            {
                self.query_params.push(name.to_owned());
            }
        }
        self
    }

    /// Everything `other` reads too.
    pub fn merge(&mut self, other: CredentialPlaces) {
        for name in other.headers {
            if !self.headers.contains(&name) {
                self.headers.push(name);
            }
        }
        let params = std::mem::take(&mut self.query_params);
        self.query_params = CredentialPlaces {
            query_params: params,
            ..CredentialPlaces::default()
        }
        .query_params(other.query_params.iter().map(String::as_str))
        .query_params;
        for kind in other.steps {
            if !self.steps.contains(&kind) {
                self.steps.push(kind);
            }
        }
    }
}

/// The union of what a sequence's steps read; `None` when no step authenticates.
#[must_use]
pub fn of_steps(steps: &[Box<dyn crate::Assertion>]) -> Option<CredentialPlaces> {
    let mut found: Option<CredentialPlaces> = None;
    for places in steps.iter().filter_map(|s| s.credential_places()) {
        match found.as_mut() {
            Some(all) => all.merge(places),
            None => found = Some(places),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_each_place_once() {
        let mut a = CredentialPlaces::of("require_api_key")
            .header(HeaderName::from_static("x-api-key"))
            .query_params(["api_key"]);
        a.merge(
            CredentialPlaces::of("require_bearer")
                .header(http::header::AUTHORIZATION)
                .header(HeaderName::from_static("x-api-key"))
                .query_params(["API_KEY", "access_token"]),
        );
        assert_eq!(a.headers.len(), 2);
        assert_eq!(a.query_params, ["api_key", "access_token"]);
        assert_eq!(a.steps, ["require_api_key", "require_bearer"]);
    }
}
