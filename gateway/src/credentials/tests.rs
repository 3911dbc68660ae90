use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderName;
use pingora::http::RequestHeader;
use portcullis_assertions::ip::IpList;
use portcullis_assertions::template::Source;
use portcullis_assertions::{Exchange, VarId};

use super::*;
use crate::proxy::PingoraRequestView;

fn head(target: &str, lines: &[(&str, &str)]) -> RequestHeader {
    let mut req = RequestHeader::build("GET", target.as_bytes(), None).expect("head");
    for (name, value) in lines {
        req.append_header(name.to_string(), *value).expect("header");
    }
    req
}

fn policy(mode: Mode) -> CredentialPolicy {
    CredentialPolicy::new(
        mode,
        vec![
            Place::Header(http::header::AUTHORIZATION),
            Place::Header(http::header::PROXY_AUTHORIZATION),
            Place::Header(HeaderName::from_static("x-api-key")),
            Place::Cookie("session".to_owned()),
            Place::QueryParam("api_key".to_owned()),
        ],
    )
}

fn strip_all() -> Mode {
    Mode::Strip(Rule::new("strip", "test"))
}

fn exchange(ip: &str) -> Exchange {
    let ip: IpAddr = ip.parse().expect("ip");
    Exchange::new(2, ip, ip)
}

/// Captures, lets `edit` play the pipeline, decides and applies: the head as it goes up.
fn through(
    policy: &CredentialPolicy,
    mut req: RequestHeader,
    x: &Exchange,
    edit: impl FnOnce(&mut RequestHeader),
) -> (RequestHeader, Option<CredentialOutcome>) {
    let caller = policy.capture(&PingoraRequestView(&req));
    edit(&mut req);
    let plan = policy.decide(caller, &PingoraRequestView(&req), x);
    let outcome = plan.apply(policy, &mut req).expect("applies");
    (req, outcome)
}

#[test]
fn cookies_are_taken_out_by_name_whatever_the_case_or_encoding() {
    let names = [(0, "session"), (3, "sid")];
    assert_eq!(
        without_cookies("a=1; SESSION=x; b=2", &names),
        Some(("a=1; b=2".to_owned(), 1))
    );
    assert_eq!(
        without_cookies("sess%69on=x;sid=y", &names),
        Some((String::new(), 0b1001))
    );
    assert_eq!(without_cookies("sessions=x; a=session", &names), None);
}

#[test]
fn query_parameters_are_taken_out_as_the_upstream_decodes_them() {
    let names = [(2, "api_key")];
    assert_eq!(
        without_query_params("a=1&ap%69_KEY=s&b=%20x", &names),
        Some(("a=1&b=%20x".to_owned(), 4))
    );
    assert_eq!(
        without_query_params("api_key=1&API_KEY=2", &names),
        Some((String::new(), 4))
    );
    assert_eq!(without_query_params("api_keys=1&q=api_key", &names), None);
}

#[test]
fn stripping_removes_every_caller_credential_and_nothing_else() {
    let policy = policy(strip_all());
    let req = head(
        "/w?x=1&Api_Key=k&y=2",
        &[
            ("host", "a"),
            ("Authorization", "Bearer one"),
            ("AUTHORIZATION", "Bearer two"),
            ("proxy-authorization", "Basic cDpx"),
            ("X-API-KEY", "key"),
            ("cookie", "theme=dark; Session=s1"),
            ("cookie", "session=s2"),
            ("x-other", "stays"),
        ],
    );
    let (up, outcome) = through(&policy, req, &exchange("10.0.0.1"), |_| {});
    for gone in ["authorization", "proxy-authorization", "x-api-key"] {
        assert!(!up.headers.contains_key(gone), "{gone} went up");
    }
    let cookies: Vec<_> = up.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["theme=dark"]);
    assert_eq!(
        up.uri.path_and_query().map(|p| p.as_str()),
        Some("/w?x=1&y=2")
    );
    assert_eq!(up.headers["x-other"], "stays");
    let outcome = outcome.expect("stripped");
    assert!(outcome.stripped);
    assert_eq!(
        policy.labels(outcome.places),
        [
            "authorization",
            "proxy-authorization",
            "x-api-key",
            "cookie session",
            "query api_key"
        ]
    );
    assert!(outcome.hint(401, &policy).is_some());
    assert!(outcome.hint(200, &policy).is_none());
}

#[test]
fn a_value_a_step_wrote_is_kept() {
    let policy = policy(strip_all());
    let req = head("/", &[("host", "a"), ("authorization", "Bearer caller")]);
    let (up, outcome) = through(&policy, req, &exchange("10.0.0.1"), |req| {
        req.insert_header("authorization", "Basic Z2F0ZXdheQ==")
            .expect("set");
    });
    assert_eq!(up.headers["authorization"], "Basic Z2F0ZXdheQ==");
    assert!(
        outcome.is_none(),
        "nothing of the caller's went up or was removed"
    );
    // A step copying the caller's value is still the caller's credential.
    let req = head("/", &[("host", "a"), ("x-api-key", "k")]);
    let (up, _) = through(&policy, req, &exchange("10.0.0.1"), |req| {
        req.insert_header("authorization", "k").expect("copy");
    });
    assert!(!up.headers.contains_key("x-api-key"));
    assert_eq!(
        up.headers["authorization"], "k",
        "not the caller's Authorization"
    );
}

#[test]
fn forwarding_needs_every_condition() {
    let groups = VarId(1);
    let forward = Mode::Forward {
        conditions: vec![
            Condition {
                rule: Rule::new("when.client_cidrs", "inside"),
                test: Test::ClientCidr(IpList::new(vec!["10.0.0.0/8".parse().expect("net")])),
            },
            Condition {
                rule: Rule::new("when.groups", "payments"),
                test: Test::Groups {
                    source: Source::Var(groups),
                    any_of: vec!["payments".to_owned()],
                },
            },
        ],
        rule: Rule::new("forward", "all held"),
    };
    let policy = policy(forward);
    let sent = || head("/", &[("host", "a"), ("authorization", "Bearer t")]);

    let mut x = exchange("10.1.2.3");
    x.set(groups, Arc::from("staff, payments"));
    let (up, outcome) = through(&policy, sent(), &x, |_| {});
    assert_eq!(up.headers["authorization"], "Bearer t");
    let outcome = outcome.expect("forwarded");
    assert!(!outcome.stripped);
    assert_eq!(&*outcome.rule.name, "forward");

    let mut outside = exchange("192.0.2.1");
    outside.set(groups, Arc::from("payments"));
    let (up, outcome) = through(&policy, sent(), &outside, |_| {});
    assert!(!up.headers.contains_key("authorization"));
    assert_eq!(&*outcome.expect("stripped").rule.name, "when.client_cidrs");

    let mut not_in_group = exchange("10.1.2.3");
    not_in_group.set(groups, Arc::from("payments-readonly"));
    let (_, outcome) = through(&policy, sent(), &not_in_group, |_| {});
    assert_eq!(&*outcome.expect("stripped").rule.name, "when.groups");

    // No group variable at all: fails closed.
    let (_, outcome) = through(&policy, sent(), &exchange("10.1.2.3"), |_| {});
    assert_eq!(&*outcome.expect("stripped").rule.name, "when.groups");
}

#[test]
fn pass_through_touches_nothing() {
    let policy = policy(Mode::PassThrough);
    let req = head(
        "/?api_key=1",
        &[("host", "a"), ("authorization", "Bearer t")],
    );
    let (up, outcome) = through(&policy, req, &exchange("10.0.0.1"), |_| {});
    assert_eq!(up.headers["authorization"], "Bearer t");
    assert_eq!(up.uri.query(), Some("api_key=1"));
    assert!(outcome.is_none());
}

#[test]
fn a_forwarded_request_names_only_what_the_caller_sent() {
    let always = Mode::Forward {
        conditions: Vec::new(),
        rule: Rule::new("always", "test"),
    };
    let policy = policy(always);
    let req = head("/?api_key=k", &[("host", "a"), ("x-api-key", "k")]);
    let (up, outcome) = through(&policy, req, &exchange("10.0.0.1"), |req| {
        req.insert_header("authorization", "Basic Z2F0ZXdheQ==")
            .expect("set");
    });
    assert_eq!(up.headers["x-api-key"], "k");
    let outcome = outcome.expect("forwarded");
    assert!(!outcome.stripped);
    assert_eq!(
        policy.labels(outcome.places),
        ["x-api-key", "query api_key"]
    );
}
