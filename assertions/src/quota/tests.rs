use std::collections::HashMap;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use super::*;
use crate::exchange::{VarRegistry, CLIENT_ID};
use crate::hmac::FixedClock;
use crate::{run_request_from, Progress};

/// Counters in a map with the store's semantics (the store conformance suites hold the
/// real backends to the same).
#[derive(Debug, Default)]
struct Counters {
    windows: Mutex<HashMap<String, (u64, i64)>>,
    down: std::sync::atomic::AtomicBool,
}

impl QuotaCounter for Arc<Counters> {
    fn charge(
        &self,
        key: String,
        cost: u64,
        limit: u64,
        window_end: i64,
        now: i64,
    ) -> QuotaDecision {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            return Box::pin(async { Err(QuotaUnavailable) });
        }
        let mut windows = self.windows.lock().expect("lock");
        let (used, resets_at) = windows
            .get(&key)
            .copied()
            .filter(|(_, end)| *end > now)
            .unwrap_or((0, window_end));
        let allowed = used + cost <= limit;
        let used = if allowed { used + cost } else { used };
        if allowed {
            windows.insert(key, (used, resets_at));
        }
        Box::pin(async move {
            Ok(QuotaCharge {
                allowed,
                used,
                resets_at,
            })
        })
    }
}

const NOON: u64 = 1_796_212_800; // 2026-12-02T12:00:00Z

fn quota(
    counters: &Arc<Counters>,
    clock: &Arc<FixedClock>,
    missing: MissingKey,
    fail_open: bool,
) -> Box<dyn Assertion> {
    let registry = VarRegistry::new();
    Box::new(
        Quota::new(QuotaParts {
            name: "daily".into(),
            service: "api".into(),
            limit: 3,
            period: Period::Day,
            reset: Reset::Calendar(jiff::tz::TimeZone::UTC),
            key: Template::parse("${client.id}", &registry).expect("template"),
            key_text: "${client.id}".into(),
            missing,
            cost: 1,
            headers_on_allowed: true,
            fail_open,
            counter: Arc::new(counters.clone()),
            clock: clock.clone(),
        })
        .expect("quota"),
    )
}

fn run(steps: &[Box<dyn Assertion>], client: Option<&str>) -> (Verdict, Exchange) {
    let ip = "192.0.2.1".parse().expect("ip");
    let mut x = Exchange::new(2, ip, ip);
    if let Some(client) = client {
        x.set(CLIENT_ID, client.into());
    }
    let (mut head, ()) = http::Request::builder()
        .uri("/")
        .body(())
        .expect("request")
        .into_parts();
    let mut start = 0;
    loop {
        let progress = run_request_from(
            steps,
            start,
            &mut Request {
                head: &mut head,
                body: None,
            },
            &mut x,
        );
        match progress {
            Progress::Done(verdict) => return (verdict, x),
            Progress::Await { step, mut work } => {
                let Poll::Ready(result) =
                    work.as_mut().poll(&mut Context::from_waker(Waker::noop()))
                else {
                    panic!("the test counters answer at once");
                };
                x.put_awaited(result);
                start = step;
            }
        }
    }
}

fn header<'a>(verdict: &'a Verdict, name: &str) -> Option<&'a str> {
    let Verdict::Reject(rejection) = verdict else {
        return None;
    };
    rejection
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.to_str().ok())
}

#[test]
fn three_calls_a_day_then_429_until_midnight_and_refusals_consume_nothing() {
    let counters = Arc::new(Counters::default());
    let clock = Arc::new(FixedClock::at(NOON));
    let step = [quota(&counters, &clock, MissingKey::Refuse, false)];
    for left in [2, 1, 0] {
        let (verdict, x) = run(&step, Some("acme"));
        assert!(verdict.is_continue());
        let fields: Vec<String> = x
            .response_headers()
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().expect("ascii")))
            .collect();
        assert_eq!(
            fields,
            [
                "ratelimit-policy: \"daily\";q=3;w=86400".to_owned(),
                format!("ratelimit: \"daily\";r={left};t=43200"),
            ]
        );
    }
    for _ in 0..5 {
        let (verdict, _) = run(&step, Some("acme"));
        let Verdict::Reject(rejection) = &verdict else {
            panic!("over the quota")
        };
        assert_eq!(
            (rejection.status.as_u16(), rejection.code),
            (429, "quota-exhausted")
        );
        assert_eq!(
            header(&verdict, "retry-after"),
            Some("43200"),
            "until midnight UTC"
        );
        assert_eq!(header(&verdict, "ratelimit"), Some("\"daily\";r=0;t=43200"));
    }
    let key = store_key("acme", "api", "daily");
    assert_eq!(
        counters.windows.lock().expect("lock")[&key].0,
        3,
        "refusals added nothing"
    );
    // Another client has its own quota; tomorrow the window starts again.
    assert!(run(&step, Some("globex")).0.is_continue());
    clock.set(NOON + 43_200);
    assert!(run(&step, Some("acme")).0.is_continue());
}

#[test]
fn an_unset_key_is_refused_without_a_round_trip_or_counted_in_the_default() {
    let counters = Arc::new(Counters::default());
    let clock = Arc::new(FixedClock::at(NOON));
    let refusing = [quota(&counters, &clock, MissingKey::Refuse, false)];
    let (verdict, _) = run(&refusing, None);
    let Verdict::Reject(rejection) = verdict else {
        panic!("refused")
    };
    assert_eq!(rejection.code, "quota-key-missing");
    assert!(counters.windows.lock().expect("lock").is_empty());
    let defaulting = [quota(
        &counters,
        &clock,
        MissingKey::Default("anonymous".into()),
        false,
    )];
    for _ in 0..3 {
        assert!(run(&defaulting, None).0.is_continue());
    }
    assert!(!run(&defaulting, None).0.is_continue());
    assert!(
        run(&defaulting, Some("anonymous")).0.is_continue(),
        "not the default's bucket"
    );
}

#[test]
fn a_failing_store_refuses_with_503_or_lets_through_when_told() {
    let counters = Arc::new(Counters::default());
    counters
        .down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let clock = Arc::new(FixedClock::at(NOON));
    let closed = [quota(&counters, &clock, MissingKey::Refuse, false)];
    let (verdict, _) = run(&closed, Some("acme"));
    let Verdict::Reject(rejection) = verdict else {
        panic!("refused")
    };
    assert_eq!(
        (rejection.status.as_u16(), rejection.code),
        (503, "quota-unavailable")
    );
    let open = [quota(&counters, &clock, MissingKey::Refuse, true)];
    assert!(run(&open, Some("acme")).0.is_continue());
}

#[test]
fn store_keys_escape_their_parts_so_one_clients_prefix_is_only_its_own() {
    assert_eq!(store_key("acme", "api", "daily"), "quota/acme/api/daily");
    assert_eq!(store_key("a/b", "api", "daily"), "quota/a%2Fb/api/daily");
    assert!(!store_key("acme/x", "api", "daily").starts_with(&key_prefix("acme")));
    assert!(store_key("acme", "api", "daily").starts_with(&key_prefix("acme")));
    let written = store_key("a/b", "my api", "daily%");
    assert_eq!(
        split_store_key(&written, "a/b"),
        Some(("my api".to_owned(), "daily%".to_owned()))
    );
    assert_eq!(split_store_key(&written, "a"), None);
}
