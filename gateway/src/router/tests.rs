//! The router against a brute-force reference, and each precedence rule by example.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;

use super::*;
use crate::path::PathCase;

/// A route as the tests write it.
#[derive(Debug, Clone)]
struct Spec {
    host: Option<&'static str>,
    path: String,
    exact: bool,
    case: PathCase,
    methods: Option<Vec<Method>>,
    header: Option<&'static str>,
    query: Option<&'static str>,
}

fn spec(host: Option<&'static str>, path: &str) -> Spec {
    Spec {
        host,
        path: path.to_owned(),
        exact: false,
        case: PathCase::Sensitive,
        methods: None,
        header: None,
        query: None,
    }
}

fn entry(spec: &Spec, service: usize) -> Entry {
    let pattern = Pattern::parse(&spec.path, spec.exact, spec.case).expect(&spec.path);
    Entry {
        service,
        conditions: Conditions {
            methods: spec.methods.clone().map(Vec::into_boxed_slice),
            headers: spec
                .header
                .map(|v| (HeaderName::from_static("x-v"), HeaderValue::from_static(v)))
                .into_iter()
                .collect(),
            query: spec
                .query
                .map(|v| ("v".into(), v.into()))
                .into_iter()
                .collect(),
        },
        params: Box::new([]),
        pattern,
    }
}

fn router(specs: &[Spec]) -> Router {
    let mut router = Router::default();
    for (service, spec) in specs.iter().enumerate() {
        router.add(spec.host, entry(spec, service));
    }
    router
}

#[derive(Debug)]
struct Req {
    host: Option<&'static str>,
    path: String,
    method: Method,
    headers: HeaderMap,
    query: Option<&'static str>,
}

fn req(host: Option<&'static str>, path: &str) -> Req {
    Req {
        host,
        path: path.to_owned(),
        method: Method::GET,
        headers: HeaderMap::new(),
        query: None,
    }
}

impl Req {
    fn view(&self) -> RouteRequest<'_> {
        RouteRequest {
            host: self.host,
            path: &self.path,
            method: &self.method,
            headers: &self.headers,
            query: self.query,
        }
    }
}

fn route(router: &Router, request: &Req) -> Option<usize> {
    router.route(&request.view()).map(|found| found.service)
}

// ---- the reference: every route tested against the request, the best kept ----

fn literal_matches(literal: &str, actual: &str, case: PathCase) -> bool {
    match case {
        PathCase::Sensitive => literal == actual,
        PathCase::Insensitive => literal.eq_ignore_ascii_case(actual),
    }
}

/// The precedence key of a route that matches `path`, or `None`.
fn path_rank(pattern: &Pattern, path: &str) -> Option<Vec<u8>> {
    let actual: Vec<&str> = path_segments(path).collect();
    let wanted = pattern.segments.len();
    let long_enough = match pattern.tail {
        Tail::Exact => actual.len() == wanted,
        Tail::PrefixWithMore => actual.len() > wanted,
        Tail::Prefix => actual.len() >= wanted,
    };
    if !long_enough {
        return None;
    }
    let mut rank = Vec::new();
    for (segment, actual) in pattern.segments.iter().zip(&actual) {
        match segment {
            Segment::Literal(literal) if literal_matches(literal, actual, pattern.case) => {
                rank.push(3);
            }
            Segment::Param(_) if !actual.is_empty() => rank.push(2),
            _ => return None,
        }
    }
    rank.push(match pattern.tail {
        Tail::Exact | Tail::PrefixWithMore => 1,
        Tail::Prefix => 0,
    });
    Some(rank)
}

fn reference(specs: &[Spec], request: &Req) -> Option<usize> {
    let host = request.host.map(normalize_host);
    // Host groups in order: exact, wildcards by suffix length, any host.
    let group_of = |spec: &Spec| -> Option<usize> {
        match spec.host.map(normalize_host) {
            None => Some(usize::MAX),
            Some(wanted) => {
                let host = host.as_deref()?;
                match wanted.strip_prefix('*') {
                    Some(suffix) => (host.ends_with(suffix) && host.len() > suffix.len())
                        .then(|| 1000 - suffix.len()),
                    None => (host == wanted).then_some(0),
                }
            }
        }
    };
    let mut groups: Vec<usize> = specs.iter().filter_map(group_of).collect();
    groups.sort_unstable();
    groups.dedup();
    let view = request.view();
    for group in groups {
        let mut best: Option<(Vec<u8>, usize, usize)> = None;
        for (service, spec) in specs.iter().enumerate() {
            if group_of(spec) != Some(group) {
                continue;
            }
            let entry = entry(spec, service);
            let Some(rank) = path_rank(&entry.pattern, &request.path) else {
                continue;
            };
            if !entry.conditions.matches(&view) {
                continue;
            }
            let specificity = entry.conditions.specificity();
            let better = best
                .as_ref()
                .is_none_or(|(best_rank, best_specificity, _)| {
                    (&rank, specificity) > (best_rank, *best_specificity)
                });
            if better {
                best = Some((rank, specificity, service));
            }
        }
        if let Some((_, _, service)) = best {
            return Some(service);
        }
    }
    None
}

fn arbitrary_spec() -> impl Strategy<Value = Spec> {
    let segment = prop_oneof!["a", "b", "A", Just("{p}".to_owned())];
    (
        prop::sample::select(vec![None, Some("h.test"), Some("*.test"), Some("*.x.test")]),
        prop::collection::vec(segment, 0..4),
        0..3u8,
        any::<bool>(),
        prop::sample::select(vec![
            None,
            Some(vec![Method::GET]),
            Some(vec![Method::POST]),
        ]),
        prop::sample::select(vec![None, Some("1"), Some("2")]),
        prop::sample::select(vec![None, Some("1")]),
    )
        .prop_map(
            |(host, segments, tail, insensitive, methods, header, query)| {
                let mut path = String::new();
                for (index, segment) in segments.iter().enumerate() {
                    path.push('/');
                    // One parameter name per position keeps names unique within a pattern.
                    if segment == "{p}" {
                        path.push_str(&format!("{{p{index}}}"));
                    } else {
                        path.push_str(segment);
                    }
                }
                let exact = tail == 1;
                if tail == 2 || path.is_empty() {
                    path.push('/');
                }
                Spec {
                    host,
                    path,
                    exact,
                    case: if insensitive {
                        PathCase::Insensitive
                    } else {
                        PathCase::Sensitive
                    },
                    methods,
                    header,
                    query,
                }
            },
        )
}

fn arbitrary_request() -> impl Strategy<Value = Req> {
    let segment = prop::sample::select(vec!["a", "b", "A", "c", ""]);
    (
        prop::sample::select(vec![
            None,
            Some("h.test"),
            Some("a.x.test"),
            Some("H.TEST:8080"),
            Some("other"),
        ]),
        prop::collection::vec(segment, 0..5),
        prop::sample::select(vec![Method::GET, Method::POST]),
        prop::sample::select(vec![None, Some("1"), Some("2")]),
        prop::sample::select(vec![None, Some("v=1"), Some("v=2"), Some("v=1&v=2")]),
    )
        .prop_map(|(host, segments, method, header, query)| {
            let mut headers = HeaderMap::new();
            if let Some(value) = header {
                headers.insert("x-v", HeaderValue::from_static(value));
            }
            let path = if segments.is_empty() {
                "/".to_owned()
            } else {
                format!("/{}", segments.join("/"))
            };
            Req {
                host,
                path,
                method,
                headers,
                query,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The tree picks exactly what testing every route and keeping the most specific picks.
    #[test]
    fn the_tree_agrees_with_the_reference(
        specs in prop::collection::vec(arbitrary_spec(), 0..12),
        requests in prop::collection::vec(arbitrary_request(), 1..8),
    ) {
        let router = router(&specs);
        for request in &requests {
            prop_assert_eq!(
                route(&router, request),
                reference(&specs, request),
                "{} {:?} {}", request.method, request.host, request.path
            );
        }
    }
}

#[test]
fn host_then_most_specific_path() {
    let specs = [
        spec(None, "/"),
        spec(None, "/widgets"),
        spec(None, "/widgets/admin"),
        spec(Some("API.example.com"), "/widgets"),
        spec(Some("*.example.com"), "/"),
    ];
    let r = router(&specs);
    assert_eq!(route(&r, &req(Some("other"), "/widgets/7")), Some(1));
    assert_eq!(route(&r, &req(Some("other"), "/widgets/admin/x")), Some(2));
    assert_eq!(route(&r, &req(Some("other"), "/widgetsx")), Some(0));
    assert_eq!(
        route(&r, &req(Some("api.example.com:8443"), "/widgets")),
        Some(3)
    );
    // An exact host group without a route for the path falls through to the wildcard.
    assert_eq!(route(&r, &req(Some("api.example.com"), "/other")), Some(4));
    assert_eq!(route(&r, &req(Some("eu.example.com"), "/widgets")), Some(4));
    assert_eq!(
        route(&r, &req(Some("deep.eu.example.com."), "/widgets")),
        Some(4)
    );
    assert_eq!(route(&r, &req(Some("example.com"), "/x")), Some(0));
    assert_eq!(route(&r, &req(None, "/widgets/admin")), Some(2));
}

#[test]
fn the_longest_wildcard_wins() {
    let r = router(&[
        spec(Some("*.example.com"), "/"),
        spec(Some("*.eu.example.com"), "/"),
    ]);
    assert_eq!(route(&r, &req(Some("a.eu.example.com"), "/")), Some(1));
    assert_eq!(route(&r, &req(Some("eu.example.com"), "/")), Some(0));
    assert_eq!(route(&r, &req(Some("example.com"), "/")), None);
}

#[test]
fn literal_beats_parameter_beats_prefix_end() {
    let mut exact = spec(None, "/orders");
    exact.exact = true;
    let specs = [
        spec(None, "/orders"),
        spec(None, "/orders/{id}"),
        spec(None, "/orders/new"),
        spec(None, "/orders/{id}/items"),
        exact,
    ];
    let r = router(&specs);
    assert_eq!(route(&r, &req(None, "/orders/new")), Some(2));
    assert_eq!(route(&r, &req(None, "/orders/new/items")), Some(2));
    assert_eq!(route(&r, &req(None, "/orders/7")), Some(1));
    assert_eq!(route(&r, &req(None, "/orders/7/items/3")), Some(3));
    assert_eq!(route(&r, &req(None, "/orders/7/notes")), Some(1));
    assert_eq!(route(&r, &req(None, "/orders")), Some(4));
    assert_eq!(route(&r, &req(None, "/orders/")), Some(0));
    assert_eq!(route(&r, &req(None, "/ordersx")), None);
}

#[test]
fn a_prefix_with_a_trailing_slash_needs_more_path() {
    let r = router(&[spec(None, "/"), spec(None, "/w/"), spec(None, "/w")]);
    assert_eq!(route(&r, &req(None, "/w/x")), Some(1));
    assert_eq!(route(&r, &req(None, "/w/")), Some(1));
    assert_eq!(route(&r, &req(None, "/w")), Some(2));
}

#[test]
fn conditions_choose_among_equal_paths_and_fall_back() {
    let mut v2 = spec(None, "/api");
    v2.header = Some("2");
    let mut post = spec(None, "/api");
    post.methods = Some(vec![Method::POST]);
    let mut v2_post = spec(None, "/api");
    v2_post.header = Some("2");
    v2_post.methods = Some(vec![Method::POST]);
    let r = router(&[spec(None, "/"), v2, post, v2_post]);
    let mut request = req(None, "/api/x");
    assert_eq!(route(&r, &request), Some(0));
    request.method = Method::POST;
    assert_eq!(route(&r, &request), Some(2));
    request.headers.insert("x-v", HeaderValue::from_static("2"));
    assert_eq!(route(&r, &request), Some(3));
    request.method = Method::GET;
    assert_eq!(route(&r, &request), Some(1));
}

#[test]
fn case_insensitive_routes_match_any_case() {
    let mut private = spec(None, "/Private");
    private.case = PathCase::Insensitive;
    let r = router(&[spec(None, "/"), private, spec(None, "/public")]);
    assert_eq!(route(&r, &req(None, "/PRIVATE/x")), Some(1));
    assert_eq!(route(&r, &req(None, "/private")), Some(1));
    assert_eq!(route(&r, &req(None, "/privatex")), Some(0));
    assert_eq!(route(&r, &req(None, "/PUBLIC")), Some(0));
    assert_eq!(route(&r, &req(None, "/public")), Some(2));
}

#[test]
fn no_route_without_a_catch_all() {
    let r = router(&[spec(Some("a.test"), "/v1")]);
    assert_eq!(route(&r, &req(Some("a.test"), "/v2")), None);
    assert_eq!(route(&r, &req(Some("b.test"), "/v1")), None);
    assert_eq!(route(&r, &req(None, "/v1")), None);
}

#[test]
fn many_routes_stay_correct() {
    let specs: Vec<Spec> = (0..10_000)
        .map(|i| spec(None, &format!("/svc{i}/api")))
        .collect();
    let r = router(&specs);
    assert_eq!(route(&r, &req(None, "/svc9999/api/x")), Some(9999));
    assert_eq!(route(&r, &req(None, "/SVC9999/api/x")), None);
    assert_eq!(route(&r, &req(None, "/svc0/api")), Some(0));
    assert_eq!(route(&r, &req(None, "/svc10000/api")), None);
}

#[test]
fn hosts_normalize() {
    assert_eq!(normalize_host("Example.COM:80"), "example.com");
    assert_eq!(normalize_host("[::1]:8080"), "[::1]");
    assert_eq!(normalize_host("example.com."), "example.com");
    let long = "a".repeat(300);
    let mut buffer = [0; MAX_HOST];
    assert!(normalized_host(&long, &mut buffer).is_none());
}
