use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;

use super::*;
use crate::exchange::VarRegistry;
use crate::{run_request_from, Progress};

const SECOND: Duration = Duration::from_secs(1);

struct Fixture {
    registry: VarRegistry,
    clock: Arc<ManualClock>,
    local: Arc<LocalLimiter>,
}

impl Fixture {
    fn new() -> Fixture {
        let mut registry = VarRegistry::new();
        registry.define("client.tier");
        Fixture {
            registry,
            clock: Arc::new(ManualClock::default()),
            local: Arc::new(LocalLimiter::new(10_000)),
        }
    }

    fn rule(&self, name: &str, count: u64, period: Duration, burst: u64, key: &str) -> LimitRule {
        LimitRule {
            name: name.into(),
            limit: Limit::new(count, period, burst).expect("limit"),
            count,
            period,
            key: Template::parse(key, &self.registry).expect("template"),
            key_text: key.into(),
        }
    }

    fn step(
        &self,
        rules: Vec<LimitRule>,
        cost: Cost,
        missing: MissingKey,
        scope: Scope,
    ) -> Box<dyn Assertion> {
        Box::new(
            RateLimit::new(RateLimitParts {
                bucket_prefix: "svc/request[0]".into(),
                rules,
                cost,
                missing,
                headers_on_allowed: true,
                local: self.local.clone(),
                scope,
                clock: self.clock.clone(),
                counters: Arc::default(),
            })
            .expect("step"),
        )
    }

    fn per_client(&self, count: u64, burst: u64) -> Box<dyn Assertion> {
        self.step(
            vec![self.rule("per-second", count, SECOND, burst, "${client.id}")],
            Cost::Fixed(1),
            MissingKey::Refuse,
            Scope::Local,
        )
    }
}

fn request(headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().uri("/orders");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("request").into_parts().0
}

/// Runs steps as the gateway's driver does: awaits a step's work where it stands (the test
/// doubles answer at once) and resumes there.
fn run(
    steps: &[Box<dyn Assertion>],
    client: Option<&str>,
    body: Option<&[u8]>,
) -> (Verdict, Exchange) {
    let registry_len = 4;
    let ip = "192.0.2.7".parse().expect("ip");
    let mut x = Exchange::new(registry_len, ip, ip);
    if let Some(client) = client {
        x.set(crate::exchange::CLIENT_ID, client.into());
    }
    let mut head = request(&[("x-cost", "3")]);
    let mut start = 0;
    loop {
        let progress = run_request_from(
            steps,
            start,
            &mut Request {
                head: &mut head,
                body,
            },
            &mut x,
        );
        match progress {
            Progress::Done(verdict) => return (verdict, x),
            Progress::Await { step, mut work } => {
                let mut context = Context::from_waker(Waker::noop());
                let Poll::Ready(result) = work.as_mut().poll(&mut context) else {
                    panic!("test doubles answer at once");
                };
                x.put_awaited(result);
                start = step;
            }
        }
    }
}

fn code(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Continue => "passed",
        Verdict::Reject(rejection) => rejection.code,
    }
}

fn header<'a>(verdict: &'a Verdict, name: &str) -> Option<&'a str> {
    match verdict {
        Verdict::Reject(rejection) => rejection
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok()),
        Verdict::Continue => None,
    }
}

#[test]
fn a_burst_passes_then_429_with_retry_after_and_the_ratelimit_fields() {
    let fixture = Fixture::new();
    let steps = [fixture.per_client(2, 3)];
    // An interval of half a second: each request pushes the full-again time half a second on.
    for (remaining, full_in) in [(2, 1), (1, 1), (0, 2)] {
        let (verdict, x) = run(&steps, Some("acme"), None);
        assert_eq!(code(&verdict), "passed");
        let fields: Vec<(&str, &str)> = x
            .response_headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().expect("ascii")))
            .collect();
        assert_eq!(
            fields,
            [
                (
                    "ratelimit-policy",
                    "\"per-second\";q=2;w=1;portcullis-burst=3"
                ),
                (
                    "ratelimit",
                    &*format!("\"per-second\";r={remaining};t={full_in}")
                ),
            ]
        );
    }
    let (verdict, _) = run(&steps, Some("acme"), None);
    assert_eq!(code(&verdict), "rate-limited");
    let Verdict::Reject(rejection) = &verdict else {
        unreachable!()
    };
    assert_eq!(rejection.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&verdict, "retry-after"),
        Some("1"),
        "half a second, rounded up"
    );
    assert_eq!(
        header(&verdict, "ratelimit"),
        Some("\"per-second\";r=0;t=2")
    );
    // Another client has its own bucket.
    assert_eq!(code(&run(&steps, Some("globex"), None).0), "passed");
    // Half a second later one request fits again.
    fixture.clock.advance(SECOND / 2);
    assert_eq!(code(&run(&steps, Some("acme"), None).0), "passed");
    assert_eq!(code(&run(&steps, Some("acme"), None).0), "rate-limited");
}

#[test]
fn a_refusal_by_one_limit_consumes_nothing_from_the_others() {
    let fixture = Fixture::new();
    let steps = [fixture.step(
        vec![
            fixture.rule(
                "per-minute",
                100,
                Duration::from_secs(60),
                100,
                "${client.id}",
            ),
            fixture.rule("per-ip", 1, Duration::from_secs(60), 1, "${client.ip}"),
        ],
        Cost::Fixed(1),
        MissingKey::Refuse,
        Scope::Local,
    )];
    assert_eq!(code(&run(&steps, Some("acme"), None).0), "passed");
    for _ in 0..20 {
        let (verdict, _) = run(&steps, Some("acme"), None);
        assert!(header(&verdict, "retry-after").is_some());
        assert_eq!(code(&verdict), "rate-limited");
        assert_eq!(header(&verdict, "ratelimit"), Some("\"per-ip\";r=0;t=60"));
    }
    // The per-minute limit was charged once, by the one request that passed.
    let other_ip = [fixture.step(
        vec![fixture.rule(
            "per-minute",
            100,
            Duration::from_secs(60),
            100,
            "${client.id}",
        )],
        Cost::Fixed(1),
        MissingKey::Refuse,
        Scope::Local,
    )];
    let (_, x) = run(&other_ip, Some("acme"), None);
    let left = x.response_headers()[1]
        .1
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(left.starts_with("\"per-minute\";r=98;"), "{left}");
}

#[test]
fn an_unset_key_is_refused_or_counted_in_the_default_bucket() {
    let fixture = Fixture::new();
    let refuse = [fixture.per_client(1, 1)];
    let (verdict, _) = run(&refuse, None, None);
    assert_eq!(code(&verdict), "rate-limit-key-missing");
    let Verdict::Reject(rejection) = verdict else {
        unreachable!()
    };
    assert!(
        rejection.detail.contains("${client.id}"),
        "{}",
        rejection.detail
    );

    let shared_default = [fixture.step(
        vec![fixture.rule("anon", 1, SECOND, 2, "${client.id}")],
        Cost::Fixed(1),
        MissingKey::Default("anonymous".into()),
        Scope::Local,
    )];
    assert_eq!(code(&run(&shared_default, None, None).0), "passed");
    assert_eq!(code(&run(&shared_default, None, None).0), "passed");
    assert_eq!(code(&run(&shared_default, None, None).0), "rate-limited");
    // A client whose id is literally the default's name is not in that bucket.
    assert_eq!(
        code(&run(&shared_default, Some("anonymous"), None).0),
        "passed"
    );
}

#[test]
fn costs_come_from_a_number_a_variable_or_the_body() {
    let fixture = Fixture::new();
    let by_header = [fixture.step(
        vec![fixture.rule("units", 5, SECOND, 5, "${client.id}")],
        Cost::Template(Template::parse("${request.header.x-cost}", &fixture.registry).expect("t")),
        MissingKey::Refuse,
        Scope::Local,
    )];
    // x-cost: 3, a bucket of 5: one request, then the next needs 3 and 2 are left.
    assert_eq!(code(&run(&by_header, Some("a"), None).0), "passed");
    assert_eq!(code(&run(&by_header, Some("a"), None).0), "rate-limited");

    let by_body = [fixture.step(
        vec![fixture.rule("bytes", 1000, SECOND, 1000, "${client.id}")],
        Cost::BodyBytes,
        MissingKey::Refuse,
        Scope::Local,
    )];
    assert!(by_body[0].needs().request_body);
    assert_eq!(code(&run(&by_body, Some("b"), Some(&[0; 600])).0), "passed");
    assert_eq!(
        code(&run(&by_body, Some("b"), Some(&[0; 600])).0),
        "rate-limited"
    );
    assert_eq!(code(&run(&by_body, Some("b"), Some(&[0; 400])).0), "passed");

    let bad = Template::parse("${request.header.x-bad}", &fixture.registry).expect("t");
    let step = fixture.step(
        vec![fixture.rule("units", 5, SECOND, 5, "${client.id}")],
        Cost::Template(bad),
        MissingKey::Refuse,
        Scope::Local,
    );
    let ip = "192.0.2.7".parse().expect("ip");
    let mut x = Exchange::new(4, ip, ip);
    x.set(crate::exchange::CLIENT_ID, "c".into());
    let mut head = request(&[("x-bad", "-1")]);
    let verdict = step.on_request(
        &mut Request {
            head: &mut head,
            body: None,
        },
        &mut x,
    );
    assert_eq!(code(&verdict), "invalid-rate-limit-cost");
}

#[test]
fn every_limit_name_must_be_a_ratelimit_policy_name_and_cluster_limits_share_a_key() {
    let fixture = Fixture::new();
    let build = |rules, scope| {
        RateLimit::new(RateLimitParts {
            bucket_prefix: "p".into(),
            rules,
            cost: Cost::Fixed(1),
            missing: MissingKey::Refuse,
            headers_on_allowed: false,
            local: fixture.local.clone(),
            scope,
            clock: fixture.clock.clone(),
            counters: Arc::default(),
        })
    };
    assert!(build(vec![fixture.rule("a b", 1, SECOND, 1, "x")], Scope::Local).is_err());
    assert!(build(Vec::new(), Scope::Local).is_err());
    let cluster = Scope::Cluster {
        store: Arc::new(Unreachable),
        on_failure: StoreFailure::FailClosed,
    };
    let two_keys = vec![
        fixture.rule("a", 1, SECOND, 1, "${client.id}"),
        fixture.rule("b", 1, SECOND, 1, "${client.ip}"),
    ];
    assert!(build(two_keys, cluster).is_err());
}

/// A shared store that never answers in time.
#[derive(Debug)]
struct Unreachable;

impl SharedLimiter for Unreachable {
    fn charge(&self, _charges: Vec<SharedCharge>) -> shared::SharedDecision {
        Box::pin(async { Err(SharedUnavailable) })
    }
}

/// A shared store answering from one in-process GCRA map, recording the keys it was sent.
#[derive(Debug, Default)]
struct InProcess {
    tats: Mutex<std::collections::HashMap<String, u64>>,
    keys: Mutex<Vec<String>>,
}

impl SharedLimiter for Arc<InProcess> {
    fn charge(&self, charges: Vec<SharedCharge>) -> shared::SharedDecision {
        let mut tats = self.tats.lock().expect("lock");
        let decisions: Vec<Decision> = charges
            .iter()
            .map(|c| crate::gcra::decide(c.limit, tats.get(&c.key).copied(), 0, c.cost))
            .collect();
        if decisions.iter().all(|d| d.allowed) {
            for (charge, decision) in charges.iter().zip(&decisions) {
                tats.insert(charge.key.clone(), decision.new_tat.unwrap_or_default());
            }
        }
        self.keys
            .lock()
            .expect("lock")
            .extend(charges.into_iter().map(|c| c.key));
        Box::pin(async move { Ok(decisions) })
    }
}

#[test]
fn cluster_scope_decides_in_the_store_with_one_hash_tag_per_request() {
    let fixture = Fixture::new();
    let store = Arc::new(InProcess::default());
    let steps = [fixture.step(
        vec![
            fixture.rule("per-second", 10, SECOND, 2, "${client.id}"),
            fixture.rule(
                "per-hour",
                100,
                Duration::from_secs(3600),
                100,
                "${client.id}",
            ),
        ],
        Cost::Fixed(1),
        MissingKey::Refuse,
        Scope::Cluster {
            store: Arc::new(store.clone()),
            on_failure: StoreFailure::FailClosed,
        },
    )];
    assert!(steps[0].phases().awaits_io && steps[0].phases().charges);
    assert_eq!(code(&run(&steps, Some("{acme}"), None).0), "passed");
    assert_eq!(code(&run(&steps, Some("{acme}"), None).0), "passed");
    assert_eq!(code(&run(&steps, Some("{acme}"), None).0), "rate-limited");
    let keys = store.keys.lock().expect("lock").clone();
    let tag = |key: &str| key[key.find('{').expect("{")..=key.find('}').expect("}")].to_owned();
    assert_eq!(tag(&keys[0]), tag(&keys[1]), "one slot for both limits");
    assert!(keys[0].ends_with(":per-second") && keys[1].ends_with(":per-hour"));
    assert!(
        !keys[0].contains("acme"),
        "the client's text is hex inside the tag"
    );
    // An unset key is refused without a round trip.
    let before = store.keys.lock().expect("lock").len();
    assert_eq!(code(&run(&steps, None, None).0), "rate-limit-key-missing");
    assert_eq!(store.keys.lock().expect("lock").len(), before);
}

#[test]
fn an_unreachable_store_fails_closed_or_open_at_a_share_of_the_rate() {
    let fixture = Fixture::new();
    let closed = [fixture.step(
        vec![fixture.rule("per-second", 10, SECOND, 10, "${client.id}")],
        Cost::Fixed(1),
        MissingKey::Refuse,
        Scope::Cluster {
            store: Arc::new(Unreachable),
            on_failure: StoreFailure::FailClosed,
        },
    )];
    let (verdict, _) = run(&closed, Some("acme"), None);
    assert_eq!(code(&verdict), "rate-limit-unavailable");
    assert_eq!(header(&verdict, "retry-after"), Some("1"));

    let half = Limit::new(5, SECOND, 5).expect("limit");
    let open = [fixture.step(
        vec![fixture.rule("per-second", 10, SECOND, 10, "${client.id}")],
        Cost::Fixed(1),
        MissingKey::Refuse,
        Scope::Cluster {
            store: Arc::new(Unreachable),
            on_failure: StoreFailure::FailOpen {
                fallback: vec![half],
            },
        },
    )];
    let passed = (0..20)
        .filter(|_| run(&open, Some("acme"), None).0.is_continue())
        .count();
    assert_eq!(passed, 5, "the local fallback holds half the rate");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::test_cases(64)))]

    /// Whatever the arrival pattern, over T seconds a key is admitted at most
    /// rate × T + burst requests, and a client that keeps asking gets exactly that: no
    /// double burst at any boundary.
    #[test]
    fn admitted_never_exceeds_rate_times_time_plus_burst(
        gaps_ms in proptest::collection::vec(0u64..120, 50..400),
        rate in 1u64..50,
        burst in 1u64..20,
    ) {
        let fixture = Fixture::new();
        let steps = [fixture.per_client(rate, burst)];
        let mut admitted = 0u64;
        let mut elapsed = Duration::ZERO;
        for gap in gaps_ms {
            fixture.clock.advance(Duration::from_millis(gap));
            elapsed += Duration::from_millis(gap);
            if run(&steps, Some("k"), None).0.is_continue() {
                admitted += 1;
            }
            let ceiling = (elapsed.as_secs_f64() * rate as f64).floor() as u64 + burst;
            prop_assert!(admitted <= ceiling, "{admitted} > {ceiling} after {elapsed:?}");
        }
    }
}
