use std::collections::HashMap;

use http::HeaderName;
use proptest::prelude::*;

use super::*;
use crate::api_key::{digest, ApiClient, RequireApiKey, DEFAULT_QUERY_PARAMS};
use crate::exchange::{VarRegistry, CLIENT_ID};
use crate::headers::RemoveHeader;
use crate::pan::{MaskPan, MaskStyle, Mode};
use crate::process_body;

fn exchange() -> Exchange {
    Exchange::new(4, [127, 0, 0, 1].into(), [127, 0, 0, 1].into())
}

fn api_key() -> Box<dyn Assertion> {
    let client = Arc::new(ApiClient {
        id: Arc::from("acme"),
        attributes: Vec::new(),
    });
    Box::new(RequireApiKey::new(
        HeaderName::from_static("x-api-key"),
        None,
        HashMap::from([(digest(b"s3cret-key"), client)]),
        DEFAULT_QUERY_PARAMS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        VarRegistry::new().define("client.id"),
    ))
}

fn request(headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().uri("/w");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("request").into_parts().0
}

fn shadow(inner: Box<dyn Assertion>) -> Shadow {
    Shadow::new(inner, Arc::from("request[0].step"), 0)
}

#[test]
fn a_refusal_is_recorded_and_not_enforced() {
    let step = shadow(api_key());
    let mut head = request(&[]);
    let mut x = exchange();
    let verdict = step.on_request(
        &mut Request {
            head: &mut head,
            body: None,
        },
        &mut x,
    );
    assert!(verdict.is_continue());
    assert_eq!(x.denied_by, None);
    let [record] = x.shadow_records() else {
        panic!("one record: {:?}", x.shadow_records())
    };
    assert_eq!(record.outcome(), ShadowOutcome::WouldDeny);
    assert_eq!(record.code(), Some("missing-api-key"));
    assert_eq!(&*record.step, "request[0].step");
}

#[test]
fn a_shadowed_authentication_sets_no_variable_and_strips_nothing() {
    let step = shadow(api_key());
    assert_eq!(step.credential_places(), None);
    assert!(step.inner().credential_places().is_some());
    let mut head = request(&[("x-api-key", "s3cret-key")]);
    let mut x = exchange();
    assert!(step
        .on_request(
            &mut Request {
                head: &mut head,
                body: None,
            },
            &mut x,
        )
        .is_continue());
    // The inner step would have set ${client.id}; later steps must not see it.
    assert_eq!(x.get(CLIENT_ID), None);
    assert_eq!(x.shadow_records()[0].outcome(), ShadowOutcome::WouldAllow);
    assert_eq!(x.shadow_records()[0].code(), None);
}

#[test]
fn a_shadowed_edit_changes_nothing_and_says_it_would() {
    let step = shadow(Box::new(RemoveHeader::new(vec![HeaderName::from_static(
        "x-internal",
    )])));
    let mut head = request(&[("x-internal", "1")]);
    let mut x = exchange();
    assert!(step
        .on_request(
            &mut Request {
                head: &mut head,
                body: None,
            },
            &mut x,
        )
        .is_continue());
    assert_eq!(
        head.headers.get("x-internal").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_eq!(x.shadow_records()[0].outcome(), ShadowOutcome::WouldChange);
}

#[test]
fn a_shadowed_request_masker_leaves_the_body_and_counts() {
    let step = shadow(Box::new(MaskPan::for_requests(MaskStyle::default())));
    let original = b"{\"card\":\"4111 1111 1111 1111\",\"other\":\"5500005555555559\"}".to_vec();
    let mut body = original.clone();
    let mut x = exchange();
    assert_eq!(step.rewrite_request_body(&mut body, &mut x), 0);
    assert_eq!(body, original);
    let record = &x.shadow_records()[0];
    assert_eq!(record.outcome(), ShadowOutcome::WouldChange);
    assert_eq!(record.items(), 2);
}

#[test]
fn one_record_per_step_keeps_the_gravest_outcome() {
    let mut record = ShadowRecord::new(0, Arc::from("s"));
    record.merge(ShadowOutcome::WouldChange, 1, None);
    record.merge(ShadowOutcome::WouldDeny, 0, Some("no"));
    record.merge(ShadowOutcome::WouldAllow, 2, None);
    assert_eq!(record.outcome(), ShadowOutcome::WouldDeny);
    assert_eq!(record.code(), Some("no"));
    assert_eq!(record.items(), 3);
}

fn response(content_type: &str) -> http::response::Parts {
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, content_type)
        .body(())
        .expect("response")
        .into_parts()
        .0
}

/// Streams `body` in chunks of `size` through the processors a pipeline of `steps` makes.
fn stream(steps: &[Box<dyn Assertion>], body: &[u8], size: usize) -> (Vec<u8>, Exchange) {
    let req = request(&[]);
    let mut resp = response("application/json");
    let mut x = exchange();
    let mut processors = crate::response_bodies(steps, &req, &mut resp, &mut x);
    let mut sent = Vec::new();
    let chunks: Vec<&[u8]> = body.chunks(size.max(1)).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let (out, _) = process_body(&mut processors, chunk, i + 1 == chunks.len());
        sent.extend_from_slice(&out);
    }
    if chunks.is_empty() {
        let (out, _) = process_body(&mut processors, &[], true);
        sent.extend_from_slice(&out);
    }
    (sent, x)
}

fn response_masker(mode: Mode) -> Box<dyn Assertion> {
    Box::new(MaskPan::new(
        MaskStyle::default(),
        mode,
        vec!["application/json".to_owned()],
    ))
}

#[test]
fn a_shadowed_blocker_lets_the_response_through_and_says_it_would_block() {
    let step: Vec<Box<dyn Assertion>> = vec![Box::new(shadow(response_masker(Mode::Block)))];
    assert!(!step[0].needs().whole_response);
    let body = b"{\"pan\":\"4111111111111111\"}";
    let (sent, x) = stream(&step, body, 7);
    assert_eq!(sent, body);
    let record = &x.shadow_records()[0];
    assert_eq!(record.outcome(), ShadowOutcome::WouldDeny);
    assert_eq!(record.code(), Some("cardholder-data-blocked"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::test_cases(64)))]

    /// Whatever the body and however it is cut, a shadowed masker sends it byte for byte and
    /// counts exactly the card numbers masking the whole body at once finds.
    #[test]
    fn a_shadowed_masker_sends_the_body_unchanged_and_counts_what_it_would_mask(
        pieces in proptest::collection::vec(
            prop_oneof![
                Just(b"4111111111111111".to_vec()),
                Just(b"5500 0055 5555 5559".to_vec()),
                Just(b"4111111111111112".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..40),
            ],
            0..12,
        ),
        size in 1usize..64,
    ) {
        let body: Vec<u8> = pieces.concat();
        let step: Vec<Box<dyn Assertion>> = vec![Box::new(shadow(response_masker(Mode::Mask)))];
        let (sent, x) = stream(&step, &body, size);
        prop_assert_eq!(&sent, &body);
        let mut reference = body.clone();
        let expected = crate::pan::mask_in_place(&mut reference, MaskStyle::default()) as u64;
        let items = x.shadow_records().first().map_or(0, ShadowRecord::items);
        prop_assert_eq!(items, expected);
    }
}
