//! Every assertion kind gives the same verdict and the same effect on the upstream request
//! and the client's response at the top of its list, inside `all`, inside `all` inside
//! `all`, and inside `any` where it may sit there; where it may not, `check` refuses it.
//!
//! Runs the compiled policy in process through the same `Service` methods the proxy calls,
//! in the proxy's order: request, body rewrite, upstream, response head, response body.

use std::path::{Path, PathBuf};

use portcullis::config;
use portcullis::runtime::Runtime;
use portcullis_assertions::{process_body, Exchange, Verdict};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What a client and an upstream would see of one exchange.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Refused {
        status: u16,
        code: String,
    },
    Passed {
        upstream_headers: Vec<(String, String)>,
        upstream_body: Vec<u8>,
        response_headers: Vec<(String, String)>,
        response_body: Vec<u8>,
    },
}

/// Headers in order of name, with signatures and dates reduced to their presence (they
/// change with the clock between two runs).
fn headers(map: &http::HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = map
        .iter()
        .map(|(name, value)| {
            let volatile = matches!(name.as_str(), "authorization" | "x-amz-date" | "date");
            let value = if volatile {
                "(present)".to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    out.sort();
    out
}

const CARD_BODY: &str = r#"{"card":"4111111111111111","order":"ORD-1"}"#;

fn exchange(rt: &Runtime, request: &Sample) -> Outcome {
    let svc = &rt.services[0];
    let mut builder = http::Request::builder()
        .method(request.method)
        .uri(request.path);
    for (name, value) in request.headers {
        builder = builder.header(*name, *value);
    }
    let (mut parts, ()) = builder.body(()).expect("request").into_parts();
    let body = request.body.as_bytes().to_vec();
    let ip = "10.1.2.3".parse().expect("ip");
    let mut x = Exchange::new(rt.registry.len(), ip, ip);
    let refused = |verdict: Verdict| match verdict {
        Verdict::Continue => None,
        Verdict::Reject(r) => Some(Outcome::Refused {
            status: r.status.as_u16(),
            code: r.code.to_owned(),
        }),
    };
    let offered = svc.needs.request_body.then_some(body.as_slice());
    // The real pipeline driver, which awaits a step's store round trip where it stands.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let verdict = runtime.block_on(svc.run_request(&mut parts, offered, &mut x));
    if let Some(outcome) = refused(verdict) {
        return outcome;
    }
    let upstream_body = svc.rewrite_request_body(&body, &mut x).unwrap_or(body);
    if let Some(outcome) = refused(svc.run_upstream(&mut parts, Some(&upstream_body), &mut x)) {
        return outcome;
    }
    let (mut response, ()) = http::Response::builder()
        .header("content-type", "application/json")
        .header("server", "backend/1.0")
        .body(())
        .expect("response")
        .into_parts();
    if let Some(outcome) = refused(svc.run_response(&parts, &mut response, &mut x)) {
        return outcome;
    }
    let mut processors = svc.response.response_bodies(&parts, &mut response, &mut x);
    let (response_body, _) = process_body(&mut processors, CARD_BODY.as_bytes(), true);
    if let Some(r) = processors.iter().find_map(|p| p.refusal()) {
        return Outcome::Refused {
            status: r.status.as_u16(),
            code: r.code.to_owned(),
        };
    }
    Outcome::Passed {
        upstream_headers: headers(&parts.headers),
        upstream_body,
        response_headers: headers(&response.headers),
        response_body,
    }
}

struct Sample {
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
}

const GET: Sample = Sample {
    method: "GET",
    path: "/x",
    headers: &[],
    body: "",
};
const WITH_KEY: Sample = Sample {
    method: "GET",
    path: "/x",
    headers: &[("x-api-key", "demo-key-123")],
    body: "",
};
const WRONG_KEY: Sample = Sample {
    method: "GET",
    path: "/x",
    headers: &[("x-api-key", "nope")],
    body: "",
};
const JSON: Sample = Sample {
    method: "POST",
    path: "/x",
    headers: &[("content-type", "application/json")],
    body: CARD_BODY,
};
const BAD_JSON: Sample = Sample {
    method: "POST",
    path: "/x",
    headers: &[("content-type", "application/json")],
    body: "{\"a\":",
};
const BEARER: Sample = Sample {
    method: "GET",
    path: "/x",
    headers: &[("authorization", "Bearer not-a-token")],
    body: "",
};
const UNSIGNED: Sample = Sample { method: "GET", path: "/x", headers: &[("authorization", "AWS4-HMAC-SHA256 Credential=AKIDPARTNERONE/20260101/eu-west-1/orders/aws4_request, SignedHeaders=host, Signature=00")], body: "" };

/// One kind on one side, with requests that pass and that are refused.
struct Case {
    side: &'static str,
    step: &'static str,
    /// False for steps with body, upstream or charging phases: `check` must refuse them in `any`.
    in_any: bool,
    samples: &'static [&'static Sample],
}

const CASES: &[Case] = &[
    Case { side: "request", step: "require_api_key: {keys: [{client: acme, sha256: a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873}]}", in_any: true, samples: &[&WITH_KEY, &WRONG_KEY, &GET] },
    Case { side: "request", step: "allow_ip: [10.0.0.0/8]", in_any: true, samples: &[&GET] },
    Case { side: "request", step: "allow_ip: [192.168.0.0/16]", in_any: true, samples: &[&GET] },
    Case { side: "request", step: "deny_ip: [10.1.0.0/16]", in_any: true, samples: &[&GET] },
    Case { side: "request", step: "set_header: {name: X-Client, value: \"${client.ip} ${request.method}\"}", in_any: true, samples: &[&GET] },
    Case { side: "request", step: "remove_header: [X-Api-Key]", in_any: true, samples: &[&WITH_KEY] },
    Case { side: "request", step: "validate_json: {}", in_any: true, samples: &[&JSON, &BAD_JSON] },
    Case { side: "request", step: "require_bearer: {scopes: [a]}", in_any: true, samples: &[&BEARER, &GET] },
    Case { side: "request", step: "require_hmac: {scheme: aws-sigv4, keys: partners, region: eu-west-1, service: orders}", in_any: true, samples: &[&UNSIGNED, &GET] },
    Case { side: "request", step: "require_saml: {certificates: {fixtures}/saml/xmlsec1/p256.cert.pem, issuers: [i], audience: a, one_time_use: off}", in_any: true, samples: &[&BEARER, &GET] },
    Case { side: "request", step: "require_saml: {certificates: {fixtures}/saml/xmlsec1/p256.cert.pem, issuers: [i], audience: a}", in_any: false, samples: &[&GET] },
    Case { side: "request", step: "sign_hmac: {scheme: aws-sigv4, keys: partners, access_key: AKIDPARTNERONE, region: eu-west-1, service: orders}", in_any: false, samples: &[&JSON] },
    Case { side: "request", step: "mask_pan: {}", in_any: false, samples: &[&JSON] },
    Case { side: "request", step: "rate_limit: {key: \"${client.ip}\", rate: 100/min}", in_any: false, samples: &[&GET] },
    Case { side: "request", step: "quota: {key: \"${client.ip}\", limit: 100, period: day}", in_any: false, samples: &[&GET] },
    Case { side: "response", step: "set_header: {name: X-Served-By, value: \"gw ${request.method}\"}", in_any: true, samples: &[&GET] },
    Case { side: "response", step: "remove_header: [Server]", in_any: true, samples: &[&GET] },
    Case { side: "response", step: "mask_pan: {}", in_any: false, samples: &[&GET] },
    Case { side: "response", step: "mask_pan: {mode: block}", in_any: false, samples: &[&GET] },
];

fn policy(dir: &Path, side: &str, list: &str) -> PathBuf {
    let fixtures = repo().join("fixtures");
    let text = format!(
        "listen: 127.0.0.1:8080\nstate: memory\nsecrets:\n  partner: {{file: {f}/hmac/partner-one-current.secret}}\nkeys:\n  partners:\n    - {{access_key: AKIDPARTNERONE, client: partner-one, secrets: [partner]}}\ntoken_service:\n  issuer: https://gw.test\n  signing_keys: [{{kid: k, file: {f}/oauth/gateway-es256-2026b.pem}}]\n  clients: []\nservices:\n  - name: s\n    upstream: http://127.0.0.1:9\n    {side}:\n      - {list}\n",
        f = fixtures.display()
    );
    let text = text.replace("{fixtures}", &fixtures.display().to_string());
    let path = dir.join("policy.yaml");
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn every_kind_acts_the_same_at_top_level_inside_all_and_inside_any() {
    let dir = tempfile::tempdir().expect("tempdir");
    for case in CASES {
        let load = |list: String| {
            let path = policy(dir.path(), case.side, &list);
            config::load_dry_run(&path)
        };
        let top = load(case.step.to_owned()).unwrap_or_else(|e| panic!("{}: {e}", case.step));
        let mut wrapped = vec![
            ("all", format!("all: [{{{}}}]", case.step)),
            ("all in all", format!("all: [{{all: [{{{}}}]}}]", case.step)),
        ];
        let any = format!("any: [{{{}}}]", case.step);
        if case.in_any {
            wrapped.push(("any", any));
        } else {
            let refused = load(any).expect_err("refused inside any");
            assert!(
                refused.to_string().contains("cannot sit inside `any`"),
                "{}: {refused}",
                case.step
            );
        }
        for (how, list) in wrapped {
            let rt = load(list).unwrap_or_else(|e| panic!("{} ({how}): {e}", case.step));
            for sample in case.samples {
                let expected = exchange(&top, sample);
                let got = exchange(&rt, sample);
                // `any` renames a refusal (`no-alternative-passed`) but keeps its status.
                let same = match (&expected, &got, how) {
                    (
                        Outcome::Refused { status: a, .. },
                        Outcome::Refused { status: b, code },
                        "any",
                    ) => a == b && code == "no-alternative-passed",
                    _ => expected == got,
                };
                assert!(
                    same,
                    "{} on the {} side ({how}), {} {}:\n top: {expected:?}\n got: {got:?}",
                    case.step, case.side, sample.method, sample.path
                );
            }
        }
    }
}

/// The refusal in `any` points at the step, for every kind that may not sit there.
#[test]
fn steps_with_body_or_upstream_phases_are_refused_inside_any_with_their_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    for case in CASES.iter().filter(|c| !c.in_any) {
        let path = policy(
            dir.path(),
            case.side,
            &format!("any:\n          - {}", case.step),
        );
        let refused = config::load_dry_run(&path).expect_err("refused");
        let first = &refused.0[0];
        assert_eq!(
            first.loc.map(|l| (l.line, l.col)),
            Some((17, 13)),
            "{}: {refused}",
            case.step
        );
        assert!(
            first
                .message
                .contains(&format!("put it in the {} list itself", case.side)),
            "{refused}"
        );
    }
}
