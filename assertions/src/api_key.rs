//! `require_api_key`: the caller presents a key in a header; keys are stored as SHA-256
//! digests, so neither the policy file nor memory holds a usable key.
//!
//! Lookup is by digest: timing can reveal at most something about a digest, never about a
//! key. A key sent in the query string is refused outright (query strings end up in logs,
//! caches and browser history) with a reason that says which header to use.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use crate::exchange::{Exchange, VarId};
use crate::verdict::{Rejection, Verdict};
use crate::{Assertion, Request};

/// Who a key belongs to, and what it sets for the steps after it.
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub id: Arc<str>,
    /// `(variable, value)` pairs set when this key is presented, e.g. `client.tier`.
    pub attributes: Vec<(VarId, Arc<str>)>,
}

/// The compiled `require_api_key` step.
#[derive(Debug)]
pub struct RequireApiKey {
    header: HeaderName,
    /// Strip this prefix from the header value (e.g. `ApiKey ` in `Authorization`).
    prefix: Option<String>,
    keys: HashMap<[u8; 32], Arc<ApiClient>>,
    query_params: Vec<String>,
    client_id: VarId,
    missing: Rejection,
    invalid: Rejection,
    in_query: Rejection,
}

/// SHA-256 of a key, as stored in policies (`portcullis hash-key` prints it).
#[must_use]
pub fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// Query parameter names refused by default.
pub const DEFAULT_QUERY_PARAMS: &[&str] = &["api_key", "apikey", "api-key", "x-api-key"];

impl RequireApiKey {
    /// `keys` maps key digests to their clients; `query_params` are the parameter names
    /// that mark a key sent in the query string (compared case-insensitively).
    #[must_use]
    pub fn new(
        header: HeaderName,
        prefix: Option<String>,
        keys: HashMap<[u8; 32], Arc<ApiClient>>,
        query_params: Vec<String>,
        client_id: VarId,
    ) -> Self {
        let use_header = format!("send the API key in the {} header", canonical(&header));
        let challenge = HeaderValue::from_str(&format!("ApiKey header=\"{}\"", canonical(&header)))
            .unwrap_or_else(|_| HeaderValue::from_static("ApiKey"));
        RequireApiKey {
            missing: Rejection::new(StatusCode::UNAUTHORIZED, "missing-api-key", format!("no API key: {use_header}"))
                .with_header(http::header::WWW_AUTHENTICATE, challenge.clone()),
            invalid: Rejection::new(StatusCode::UNAUTHORIZED, "invalid-api-key", "the API key is not valid")
                .with_header(http::header::WWW_AUTHENTICATE, challenge),
            in_query: Rejection::new(
                StatusCode::BAD_REQUEST,
                "api-key-in-query",
                format!("API keys are not accepted in the query string, where they leak into logs and caches: {use_header}"),
            ),
            header,
            prefix,
            keys,
            query_params: query_params.into_iter().map(|p| p.to_ascii_lowercase()).collect(),
            client_id,
        }
    }

    /// Names are compared after form decoding: `ap%69_key` is `api_key` to the upstream.
    fn key_in_query(&self, query: &str) -> bool {
        crate::query::decoded_names(query).any(|name| {
            self.query_params
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&name))
        })
    }
}

/// `X-Api-Key` rather than `x-api-key`, for messages.
fn canonical(name: &HeaderName) -> String {
    name.as_str()
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |c| {
                c.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

impl Assertion for RequireApiKey {
    fn kind(&self) -> &'static str {
        "require_api_key"
    }

    /// The key's header, and the query parameters that would carry a key in the URL: a
    /// request holding one is refused, but with `query_params` listed they count as
    /// credentials all the same.
    fn credential_places(&self) -> Option<crate::CredentialPlaces> {
        Some(
            crate::CredentialPlaces::of(self.kind())
                .header(self.header.clone())
                .query_params(self.query_params.iter().map(String::as_str)),
        )
    }

    fn phases(&self) -> crate::Phases {
        crate::Phases::REQUEST
    }

    fn on_request(&self, req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        if req.head.query().is_some_and(|q| self.key_in_query(q)) {
            return Verdict::Reject(self.in_query.clone());
        }
        let Some(value) = req.head.header(&self.header) else {
            return Verdict::Reject(self.missing.clone());
        };
        let mut presented = value.as_bytes();
        if let Some(prefix) = &self.prefix {
            match presented.get(..prefix.len()) {
                Some(head) if head.eq_ignore_ascii_case(prefix.as_bytes()) => {
                    presented = &presented[prefix.len()..]
                }
                _ => return Verdict::Reject(self.missing.clone()),
            }
        }
        let presented = presented.trim_ascii();
        if presented.is_empty() {
            return Verdict::Reject(self.missing.clone());
        }
        match self.keys.get(&digest(presented)) {
            Some(client) => {
                x.set(self.client_id, client.id.clone());
                for (var, value) in &client.attributes {
                    x.set(*var, value.clone());
                }
                x.note(|| format!("key belongs to client \"{}\"", client.id));
                Verdict::Continue
            }
            None => Verdict::Reject(self.invalid.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::VarRegistry;

    fn assertion(reg: &mut VarRegistry, prefix: Option<&str>) -> RequireApiKey {
        let tier = reg.define("client.tier");
        let client = Arc::new(ApiClient {
            id: Arc::from("acme"),
            attributes: vec![(tier, Arc::from("gold"))],
        });
        let keys = HashMap::from([(digest(b"s3cret-key"), client)]);
        RequireApiKey::new(
            HeaderName::from_static("x-api-key"),
            prefix.map(str::to_owned),
            keys,
            DEFAULT_QUERY_PARAMS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            reg.define("client.id"),
        )
    }

    fn run(a: &RequireApiKey, uri: &str, headers: &[(&str, &str)]) -> (Verdict, Exchange) {
        let mut builder = http::Request::builder().uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let (mut parts, ()) = builder.body(()).expect("request").into_parts();
        let mut x = Exchange::new(4, [127, 0, 0, 1].into(), [127, 0, 0, 1].into());
        let verdict = a.on_request(
            &mut Request {
                head: &mut parts,
                body: None,
            },
            &mut x,
        );
        (verdict, x)
    }

    #[test]
    fn the_key_header_and_its_query_names_are_the_callers_credentials() {
        let a = assertion(&mut VarRegistry::new(), None);
        let places = a.credential_places().expect("authenticates");
        assert_eq!(places.headers, [HeaderName::from_static("x-api-key")]);
        assert_eq!(places.query_params, DEFAULT_QUERY_PARAMS);
        assert_eq!(places.steps, ["require_api_key"]);
        // Inside `any` the composite declares what its branches read.
        let any = crate::composite::Any::new(vec![Box::new(a)]).expect("composable");
        assert_eq!(any.credential_places(), Some(places));
    }

    fn code(v: &Verdict) -> &'static str {
        match v {
            Verdict::Continue => "continue",
            Verdict::Reject(r) => r.code,
        }
    }

    #[test]
    fn a_known_key_passes_and_sets_the_client() {
        let mut reg = VarRegistry::new();
        let a = assertion(&mut reg, None);
        let (v, x) = run(&a, "/w", &[("x-api-key", "s3cret-key")]);
        assert!(v.is_continue());
        assert_eq!(x.get(reg.lookup("client.id").expect("id")), Some("acme"));
        assert_eq!(
            x.get(reg.lookup("client.tier").expect("tier")),
            Some("gold")
        );
    }

    #[test]
    fn missing_wrong_and_empty_keys_are_refused() {
        let mut reg = VarRegistry::new();
        let a = assertion(&mut reg, None);
        assert_eq!(code(&run(&a, "/w", &[]).0), "missing-api-key");
        assert_eq!(
            code(&run(&a, "/w", &[("x-api-key", "  ")]).0),
            "missing-api-key"
        );
        assert_eq!(
            code(&run(&a, "/w", &[("x-api-key", "s3cret-kez")]).0),
            "invalid-api-key"
        );
    }

    #[test]
    fn a_key_in_the_query_string_is_refused_even_when_valid() {
        let mut reg = VarRegistry::new();
        let a = assertion(&mut reg, None);
        let (v, _) = run(
            &a,
            "/w?color=red&API_KEY=s3cret-key",
            &[("x-api-key", "s3cret-key")],
        );
        let Verdict::Reject(r) = v else {
            panic!("must refuse")
        };
        assert_eq!(r.code, "api-key-in-query");
        assert!(r.detail.contains("X-Api-Key header"), "{}", r.detail);
        assert!(!r.detail.contains("s3cret"));
    }

    #[test]
    fn a_key_under_an_encoded_parameter_name_is_refused() {
        let mut reg = VarRegistry::new();
        let a = assertion(&mut reg, None);
        for query in ["/w?ap%69_key=k", "/w?API%5Fkey=k", "/w?x=1&x%2dapi%2Dkey=k"] {
            assert_eq!(code(&run(&a, query, &[]).0), "api-key-in-query", "{query}");
        }
    }

    #[test]
    fn a_prefix_is_required_and_stripped() {
        let mut reg = VarRegistry::new();
        let a = assertion(&mut reg, Some("ApiKey "));
        assert!(run(&a, "/w", &[("x-api-key", "apikey s3cret-key")])
            .0
            .is_continue());
        assert_eq!(
            code(&run(&a, "/w", &[("x-api-key", "s3cret-key")]).0),
            "missing-api-key"
        );
    }
}
