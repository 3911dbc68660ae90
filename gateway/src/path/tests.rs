use proptest::prelude::*;

use super::*;
use crate::router::Router;

fn routed(raw: &str) -> (String, String, PathForms) {
    let c = canonicalize(raw).expect("canonical");
    (c.forwarded.into_owned(), c.routing.into_owned(), c.forms)
}

#[test]
fn plain_paths_are_borrowed_unchanged() {
    for raw in [
        "/",
        "/a",
        "/a/b/",
        "/v1.2/x",
        "/a/..b/c",
        "/.well-known/jwks.json",
    ] {
        let c = canonicalize(raw).expect(raw);
        assert!(matches!(c.forwarded, Cow::Borrowed(_)), "{raw}");
        assert!(matches!(c.routing, Cow::Borrowed(_)), "{raw}");
        assert_eq!(c.forms, PathForms::default(), "{raw}");
    }
}

#[test]
fn unreserved_escapes_are_decoded_and_hex_upper_cased() {
    assert_eq!(routed("/priv%61te").0, "/private");
    assert_eq!(routed("/widgets/%61dmin/x").1, "/widgets/admin/x");
    assert_eq!(routed("/a%7e%2D%5f").0, "/a~-_");
    assert_eq!(routed("/caf%c3%a9").0, "/caf%C3%A9");
    assert_eq!(routed("/items/a%20b").0, "/items/a%20b");
}

#[test]
fn stack_dependent_forms_are_flagged_and_taken_out_of_the_routing_key() {
    let (forwarded, routing, forms) = routed("/private;x");
    assert_eq!(
        (forwarded.as_str(), routing.as_str()),
        ("/private;x", "/private")
    );
    assert!(forms.parameters);
    let (_, routing, forms) = routed("/widgets//admin");
    assert_eq!(routing, "/widgets/admin");
    assert!(forms.empty_segments);
    let (_, routing, forms) = routed("/private.");
    assert_eq!(routing, "/private");
    assert!(forms.trailing_dots);
    let (_, routing, forms) = routed("/private%20/x");
    assert_eq!(routing, "/private/x");
    assert!(forms.trailing_dots);
    let (_, routing, forms) = routed("/private%3bx/y");
    assert_eq!(routing, "/private/y");
    assert!(forms.parameters);
    assert_eq!(routed("//").1, "/");
    assert_eq!(routed("/a/").1, "/a/");
}

#[test]
fn paths_no_upstream_reads_alike_are_refused() {
    let cases = [
        ("/a/../b", PathRefusal::DotSegment),
        ("/a/./b", PathRefusal::DotSegment),
        ("/..", PathRefusal::DotSegment),
        ("/a/%2e%2e/b", PathRefusal::DotSegment),
        ("/a/%2E/b", PathRefusal::DotSegment),
        ("/public/..;/private", PathRefusal::DotSegment),
        ("/public/..%3B/private", PathRefusal::DotSegment),
        ("/a/.../b", PathRefusal::DotSegment),
        ("/a/.%20/b", PathRefusal::DotSegment),
        ("/a%00", PathRefusal::EncodedSeparator),
        ("/a\\b", PathRefusal::EncodedSeparator),
        ("/a/%5c", PathRefusal::EncodedSeparator),
        ("/a/..%2Fb", PathRefusal::EncodedSeparator),
        ("/a%0d%0a", PathRefusal::EncodedSeparator),
        ("/a%7F", PathRefusal::EncodedSeparator),
        ("/a%", PathRefusal::MalformedEscape),
        ("/a%4", PathRefusal::MalformedEscape),
        ("/a%zz", PathRefusal::MalformedEscape),
        ("/a%u0061", PathRefusal::MalformedEscape),
        ("/widgets/%2561dmin", PathRefusal::DoubleEncoded),
        ("widgets", PathRefusal::NotAbsolute),
    ];
    for (raw, why) in cases {
        assert_eq!(canonicalize(raw), Err(why), "{raw}");
    }
    // A literal percent sign that is not followed by hex digits is only a percent sign.
    assert_eq!(routed("/100%25").0, "/100%25");
}

#[test]
fn strip_prefix_removes_routed_segments() {
    assert_eq!(strip_segments("/widgets/7", 1), "/7");
    assert_eq!(strip_segments("/widgets", 1), "");
    assert_eq!(strip_segments("/widgets;x/7", 1), "/7");
    assert_eq!(strip_segments("//widgets//7", 1), "//7");
    assert_eq!(strip_segments("/api/v1/keys/", 2), "/keys/");
    assert_eq!(strip_segments("/a", 0), "/a");
    assert_eq!(segment_count("/"), 0);
    assert_eq!(segment_count("/a/b/"), 2);
}

#[test]
fn prefixes_match_on_segment_boundaries_in_either_case_mode() {
    assert!(prefix_matches(
        "/widgets",
        "/widgets/7",
        PathCase::Sensitive
    ));
    assert!(!prefix_matches(
        "/widgets",
        "/widgetsx",
        PathCase::Sensitive
    ));
    assert!(!prefix_matches("/widgets", "/WIDGETS", PathCase::Sensitive));
    assert!(prefix_matches(
        "/widgets",
        "/WIDGETS/7",
        PathCase::Insensitive
    ));
    assert!(prefix_matches("/w/", "/w/x", PathCase::Sensitive));
    assert!(prefix_matches("/", "/anything", PathCase::Sensitive));
    // A multi-byte character straddling the prefix length is no match, not a panic.
    assert!(!prefix_matches("/ab", "/a\u{e9}", PathCase::Sensitive));
}

/// The services of the property test: nested prefixes, a catch-all, one case-insensitive
/// route and one that accepts every stack-dependent form.
const ROUTES: &[(&str, PathCase, PathForms)] = &[
    (
        "/",
        PathCase::Sensitive,
        PathForms {
            parameters: false,
            empty_segments: false,
            trailing_dots: false,
        },
    ),
    (
        "/public",
        PathCase::Sensitive,
        PathForms {
            parameters: false,
            empty_segments: false,
            trailing_dots: false,
        },
    ),
    (
        "/private",
        PathCase::Sensitive,
        PathForms {
            parameters: false,
            empty_segments: false,
            trailing_dots: false,
        },
    ),
    (
        "/widgets",
        PathCase::Sensitive,
        PathForms {
            parameters: false,
            empty_segments: false,
            trailing_dots: false,
        },
    ),
    (
        "/widgets/admin",
        PathCase::Sensitive,
        PathForms {
            parameters: false,
            empty_segments: false,
            trailing_dots: false,
        },
    ),
    (
        "/api/v1",
        PathCase::Sensitive,
        PathForms {
            parameters: true,
            empty_segments: true,
            trailing_dots: true,
        },
    ),
    (
        "/api/v1/keys",
        PathCase::Insensitive,
        PathForms {
            parameters: false,
            empty_segments: false,
            trailing_dots: false,
        },
    ),
    (
        "/legacy",
        PathCase::Insensitive,
        PathForms {
            parameters: true,
            empty_segments: true,
            trailing_dots: true,
        },
    ),
];

/// What the gateway does: the service it forwards to and the path it forwards, or `None`
/// when it refuses.
fn gateway_decision(router: &Router, raw: &str) -> Option<(usize, String)> {
    let canonical = canonicalize(raw).ok()?;
    let service = router.route_path(None, &canonical.routing)?;
    if canonical.forms.exceeds(ROUTES[service].2) {
        return None;
    }
    Some((service, canonical.forwarded.into_owned()))
}

/// A decoding upstream, written as plainly as possible: percent-decode everything, cut `;`
/// parameters, trim trailing dots and spaces, drop empty segments.
fn upstream_segments(path: &str) -> Vec<Vec<u8>> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
            decoded.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    decoded
        .split(|&b| b == b'/')
        .map(|segment| {
            let mut segment = segment
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .to_vec();
            while segment.last().is_some_and(|&b| b == b'.' || b == b' ') {
                segment.pop();
            }
            segment
        })
        .filter(|segment| !segment.is_empty())
        .collect()
}

/// The service such an upstream's own prefix table maps `path` to.
fn upstream_service(path: &str) -> usize {
    let segments = upstream_segments(path);
    let mut best = (0, 0);
    for (index, (prefix, case, _)) in ROUTES.iter().enumerate() {
        let wanted: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
        let matches = wanted.len() <= segments.len()
            && wanted.iter().zip(&segments).all(|(w, s)| match case {
                PathCase::Sensitive => w.as_bytes() == s.as_slice(),
                PathCase::Insensitive => w.as_bytes().eq_ignore_ascii_case(s),
            });
        if matches && wanted.len() >= best.1 {
            best = (index, wanted.len());
        }
    }
    best.0
}

fn router() -> Router {
    let mut router = Router::default();
    for (index, (prefix, case, _)) in ROUTES.iter().enumerate() {
        router.add(None, crate::router::Entry::prefix(index, prefix, *case));
    }
    router
}

/// One segment of a generated path, written in one of the ways a client can write it.
fn segment_strategy() -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec![
        "public", "private", "widgets", "admin", "api", "v1", "keys", "legacy", "x", "Private",
        "ADMIN", "", ".", "..", "a b",
    ]);
    let suffix = prop::sample::select(vec![
        "", "", "", ";x", ";", ".", "..", "%20", "%2e", "%3Bjs=1", "%2f", "%5C",
    ]);
    (
        word,
        suffix,
        prop::collection::vec(any::<(bool, bool, bool)>(), 8),
    )
        .prop_map(|(word, suffix, choices)| {
            let mut out = String::new();
            for (i, c) in word.chars().enumerate() {
                let (encode, lower_hex, flip_case) =
                    choices.get(i % 8).copied().unwrap_or_default();
                let c = if flip_case { c.to_ascii_uppercase() } else { c };
                if encode || c == ' ' {
                    let hex = format!("%{:02X}", c as u32);
                    out.push_str(&if lower_hex { hex.to_lowercase() } else { hex });
                } else {
                    out.push(c);
                }
            }
            out.push_str(suffix);
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::test_cases(4096)))]

    /// Whatever way a path is written, the gateway either refuses it or forwards it to the
    /// service a decoding upstream would map the forwarded path to.
    #[test]
    fn gateway_and_decoding_upstream_agree(
        segments in prop::collection::vec(segment_strategy(), 0..5),
        trailing_slash in any::<bool>(),
    ) {
        let mut raw = String::from("/");
        raw.push_str(&segments.join("/"));
        if trailing_slash {
            raw.push('/');
        }
        let router = router();
        if let Some((service, forwarded)) = gateway_decision(&router, &raw) {
            prop_assert_eq!(service, upstream_service(&forwarded), "raw {} forwarded {}", raw, forwarded);
            // The forwarded path is itself canonical: routing it again changes nothing.
            prop_assert_eq!(gateway_decision(&router, &forwarded), Some((service, forwarded.clone())));
        }
    }

    /// Plainly written paths are never refused.
    #[test]
    fn plain_paths_are_always_routed(
        words in prop::collection::vec(prop::sample::select(vec!["public", "private", "widgets", "admin", "api", "v1", "x"]), 0..5),
    ) {
        let raw = format!("/{}", words.join("/"));
        let decision = gateway_decision(&router(), &raw);
        prop_assert_eq!(decision.map(|d| d.0), Some(upstream_service(&raw)));
    }

    /// The canonicaliser never panics, on any string.
    #[test]
    fn any_input_is_canonicalised_or_refused(raw in "/[ -~]{0,40}") {
        let _ = canonicalize(&raw);
    }
}
