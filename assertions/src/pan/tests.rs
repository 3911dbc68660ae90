//! Tests for PAN detection, masking and streaming.

use std::borrow::Cow;

use proptest::prelude::*;

use super::detect::{brand, contains_pan, luhn_valid, mask_in_place, mask_str, Keep, MaskStyle};
use super::stream::StreamMasker;

const CARDS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/pan/cards.txt"
));

struct Card {
    number: String,
    /// A real card number: Luhn-valid and not a trap.
    positive: bool,
}

fn cards() -> Vec<Card> {
    let cards: Vec<Card> = CARDS
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let number = parts.next().expect("number").to_owned();
            let luhn = parts.next().expect("luhn column") == "luhn=True";
            let label: Vec<&str> = parts.collect();
            let trap = label.join(" ").contains("trap");
            Card {
                number,
                positive: luhn && !trap,
            }
        })
        .collect();
    assert!(cards.len() >= 30, "fixture read: {} cards", cards.len());
    assert!(cards.iter().filter(|c| c.positive).count() >= 24);
    cards
}

fn mask_all(input: &[u8], style: MaskStyle) -> (Vec<u8>, usize) {
    let mut buf = input.to_vec();
    let n = mask_in_place(&mut buf, style);
    (buf, n)
}

fn masked(s: &str) -> String {
    String::from_utf8(mask_all(s.as_bytes(), MaskStyle::default()).0).expect("utf-8")
}

/// The expected masking of a PAN written with any separators: every digit but the kept ones
/// becomes `*`.
fn expected_mask(pan: &str, keep: Keep) -> String {
    let total = pan.bytes().filter(u8::is_ascii_digit).count();
    let mut k = 0;
    pan.chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            let kept = k + 4 >= total || (keep == Keep::FirstSixLastFour && k < 6);
            k += 1;
            if kept {
                c
            } else {
                '*'
            }
        })
        .collect()
}

fn group(digits: &str, sep: char) -> String {
    let sizes: Vec<usize> =
        if digits.len() == 15 && (digits.starts_with("34") || digits.starts_with("37")) {
            vec![4, 6, 5]
        } else {
            let mut v = vec![4; digits.len() / 4];
            if !digits.len().is_multiple_of(4) {
                v.push(digits.len() % 4);
            }
            v
        };
    let mut out = String::new();
    let mut at = 0;
    for (i, s) in sizes.iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        out.push_str(&digits[at..at + s]);
        at += s;
    }
    out
}

/// Every way the card is written (bare and grouped), each in JSON, XML and plain text.
fn documents(number: &str) -> Vec<(String, String)> {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    let forms = [number.to_owned(), group(&digits, ' '), group(&digits, '-')];
    let mut docs = Vec::new();
    for form in forms {
        docs.push((format!("{{\"card\":\"{form}\"}}"), form.clone()));
        docs.push((format!("<pan>{form}</pan>"), form.clone()));
        docs.push((format!("Paid with {form} today."), form.clone()));
        docs.push((form.clone(), form));
    }
    docs
}

fn stream_chunks(chunks: &[&[u8]], style: MaskStyle) -> (Vec<u8>, usize) {
    let mut m = StreamMasker::new(style);
    let mut out = Vec::new();
    let mut n = 0;
    for c in chunks {
        n += m.push(c, &mut out);
        assert!(m.held() <= 40, "held {}", m.held());
    }
    n += m.finish(&mut out);
    assert_eq!(m.held(), 0);
    assert_eq!(m.masked(), n);
    (out, n)
}

/// The gateway's path: each chunk masked where it lies when nothing is held, else copied.
fn stream_chunks_in_place(chunks: &[&[u8]], style: MaskStyle) -> (Vec<u8>, usize) {
    let mut m = StreamMasker::new(style);
    let mut out = Vec::new();
    let mut n = 0;
    for (i, c) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let mut owned = c.to_vec();
        match m.push_in_place(&mut owned, last) {
            Some((emit, k)) => {
                out.extend_from_slice(&owned[..emit]);
                n += k;
            }
            None => {
                n += m.push(c, &mut out);
                if last {
                    n += m.finish(&mut out);
                }
            }
        }
    }
    n += m.finish(&mut out);
    assert_eq!(m.held(), 0);
    (out, n)
}

/// Both streaming paths give the whole-buffer result.
fn stream_both(chunks: &[&[u8]], style: MaskStyle) -> (Vec<u8>, usize) {
    let copied = stream_chunks(chunks, style);
    assert_eq!(
        stream_chunks_in_place(chunks, style),
        copied,
        "in place vs copied"
    );
    copied
}

fn assert_stream_splits(doc: &[u8]) {
    let whole = mask_all(doc, MaskStyle::default());
    for i in 0..=doc.len() {
        let (a, b) = doc.split_at(i);
        assert_eq!(
            stream_both(&[a, b], MaskStyle::default()),
            whole,
            "split at {i} of {:?}",
            String::from_utf8_lossy(doc)
        );
    }
    // Byte by byte, and a few pseudo-random partitions.
    let bytes: Vec<&[u8]> = doc.chunks(1).collect();
    assert_eq!(stream_both(&bytes, MaskStyle::default()), whole);
    let mut seed = doc.len() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for _ in 0..8 {
        let mut parts = Vec::new();
        let mut rest = doc;
        while !rest.is_empty() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let take = ((seed >> 33) as usize % 7).min(rest.len());
            let (a, b) = rest.split_at(take);
            parts.push(a);
            rest = b;
        }
        assert_eq!(stream_both(&parts, MaskStyle::default()), whole);
    }
}

#[test]
fn fixture_cards_are_masked_exactly_and_negatives_left_alone() {
    for card in cards() {
        for (doc, form) in documents(&card.number) {
            let (out, n) = mask_all(doc.as_bytes(), MaskStyle::default());
            let out = String::from_utf8(out).expect("utf-8");
            if card.positive {
                assert_eq!(n, 1, "{doc}");
                assert_eq!(
                    out,
                    doc.replace(&form, &expected_mask(&form, Keep::LastFour)),
                    "{doc}"
                );
                let style = MaskStyle {
                    mask: b'#',
                    keep: Keep::FirstSixLastFour,
                };
                let (six, _) = mask_all(doc.as_bytes(), style);
                let want = doc.replace(
                    &form,
                    &expected_mask(&form, Keep::FirstSixLastFour).replace('*', "#"),
                );
                assert_eq!(String::from_utf8(six).expect("utf-8"), want);
                assert!(contains_pan(doc.as_bytes()), "{doc}");
            } else {
                assert_eq!(n, 0, "{doc}");
                assert_eq!(out, doc, "negative changed");
                assert!(!contains_pan(doc.as_bytes()), "{doc}");
            }
        }
    }
}

#[test]
fn fixture_positives_have_a_brand_and_pass_luhn() {
    for card in cards().iter().filter(|c| c.positive) {
        let d = card.number.as_bytes();
        assert!(luhn_valid(d), "{}", card.number);
        assert!(brand(d).is_some(), "{}", card.number);
    }
}

#[test]
fn every_split_of_every_fixture_document_matches_whole_buffer() {
    for card in cards() {
        for (doc, _) in documents(&card.number) {
            assert_stream_splits(doc.as_bytes());
        }
    }
}

#[test]
fn a_long_mixed_document_streams_like_whole_buffer() {
    let mut doc = String::new();
    for card in cards() {
        for (d, _) in documents(&card.number) {
            doc.push_str(&d);
            doc.push('\n');
        }
    }
    doc.push_str("12345678901234567890123 4111111111111111");
    let whole = mask_all(doc.as_bytes(), MaskStyle::default());
    assert!(whole.1 >= 24 * 12);
    for size in [1, 2, 3, 5, 7, 13, 16, 19, 38, 39, 40, 64, 1000] {
        let chunks: Vec<&[u8]> = doc.as_bytes().chunks(size).collect();
        assert_eq!(
            stream_both(&chunks, MaskStyle::default()),
            whole,
            "chunks of {size}"
        );
    }
}

#[test]
fn brands_and_lengths() {
    assert_eq!(brand(b"4111111111111111"), Some("Visa"));
    assert_eq!(brand(b"4222222222222"), Some("Visa"));
    assert_eq!(brand(b"490154203237518"), None, "Visa prefix, 15 digits");
    assert_eq!(brand(b"378282246310005"), Some("Amex"));
    assert_eq!(brand(b"3782822463100050"), None, "Amex is 15 digits");
    assert_eq!(brand(b"2223003122003222"), Some("Mastercard"));
    assert_eq!(brand(b"2721003122003222"), None);
    assert_eq!(brand(b"6011111111111117"), Some("Discover"));
    assert_eq!(brand(b"6451111111111111"), Some("Discover"));
    assert_eq!(brand(b"36227206271667"), Some("Diners"));
    assert_eq!(brand(b"3566002020360505"), Some("JCB"));
    assert_eq!(brand(b"6200000000000005"), Some("UnionPay"));
    assert_eq!(brand(b"6759649826438453"), Some("Maestro"));
    assert_eq!(brand(b"5019717010103742"), Some("Maestro"));
    assert_eq!(brand(b"122000000000003"), Some("UATP"));
    assert_eq!(brand(b"1234567812345670"), None);
    assert_eq!(brand(b"0000000000000000"), None);
    assert_eq!(brand(b"411111111111"), None, "too short");
    assert_eq!(brand(b"41111111111111111111"), None, "too long");
    assert_eq!(brand(b"4111x11111111111"), None);
}

#[test]
fn luhn() {
    assert!(luhn_valid(b"4111111111111111"));
    assert!(!luhn_valid(b"4111111111111112"));
    assert!(luhn_valid(b"0000000000000000"));
    assert!(!luhn_valid(b""));
    assert!(!luhn_valid(b"41a1"));
    assert!(luhn_valid(b"79927398713"));
}

#[test]
fn traps_are_left_alone() {
    for t in [
        "0000000000000000",
        "1234567812345670",
        "490154203237518",
        "046454286",
    ] {
        assert!(luhn_valid(t.as_bytes()), "{t} is a Luhn-valid trap");
        assert_eq!(masked(&format!("x {t} y")), format!("x {t} y"));
    }
}

#[test]
fn boundaries_inside_words_and_hex() {
    for s in [
        "ORD4111111111111111X",
        "ORD-4111111111111111X",
        "ORD4111111111111111-x",
        "a4111111111111111",
        "4111111111111111z",
        "deadbeef4111111111111111cafe",
        "0x4111111111111111",
    ] {
        assert_eq!(masked(s), s);
    }
    // Underscores and dashes are not letters: these are boundaries.
    assert_eq!(masked("x_4111111111111111_y"), "x_************1111_y");
    assert_eq!(masked("ORD-4111111111111111-x"), "ORD-************1111-x");
}

#[test]
fn punctuation_is_a_boundary() {
    assert_eq!(masked("(4111111111111111)"), "(************1111)");
    assert_eq!(masked("-4111111111111111"), "-************1111");
    assert_eq!(masked("4111111111111111."), "************1111.");
    assert_eq!(masked("a,4111111111111111;b"), "a,************1111;b");
    assert_eq!(
        masked("card=4111111111111111&x=1"),
        "card=************1111&x=1"
    );
    assert_eq!(
        masked("é4111111111111111é"),
        "é************1111é",
        "non-ASCII is not a letter here"
    );
}

#[test]
fn over_long_runs_are_not_pans_nor_any_part() {
    assert_eq!(masked("41111111111111111111"), "41111111111111111111");
    assert_eq!(masked("4111 1111 1111 1111 2"), "4111 1111 1111 1111 2");
    assert_eq!(
        masked("4111-1111-1111-1111-1111"),
        "4111-1111-1111-1111-1111"
    );
    assert_eq!(
        masked("123 4111111111111111"),
        "123 4111111111111111",
        "one 19-digit run"
    );
    let long = "9".repeat(40) + "4111111111111111";
    assert_eq!(masked(&long), long);
    assert_stream_splits(long.as_bytes());
    assert_stream_splits(b"1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 4111111111111111 x");
}

#[test]
fn separators_single_and_not_at_the_ends() {
    // A separator at either end is not part of the run.
    assert_eq!(masked("4111 1111 1111 1111 "), "**** **** **** 1111 ");
    assert_eq!(masked(" 4111-1111-1111-1111-"), " ****-****-****-1111-");
    assert_eq!(masked("4111 1111 1111 1111 x"), "**** **** **** 1111 x");
    // Two in a row split the run.
    assert_eq!(masked("4111  1111 1111 1111"), "4111  1111 1111 1111");
    assert_eq!(masked("4111--1111-1111-1111"), "4111--1111-1111-1111");
    assert_eq!(masked("12  4111111111111111"), "12  ************1111");
    // Mixed kinds are not a PAN.
    assert_eq!(masked("4111-1111 1111 1111"), "4111-1111 1111 1111");
    // Odd groupings are fine.
    assert_eq!(masked("41 11 11 11 11 11 11 11"), "** ** ** ** ** ** 11 11");
    assert_eq!(masked("3782-822463-10005"), "****-******-*0005");
}

#[test]
fn timestamps_are_left_alone() {
    for s in [
        "2026-11-23T10:41:14Z",
        "2026-11-23 10:41:14",
        "{\"at\":\"2026-11-23T10:41:14.123+01:00\"}",
        "20261123104114",
        "2026112310411400",
    ] {
        assert_eq!(masked(s), s);
    }
    // 13-digit epoch millis: prefix 1, 13 digits; no brand takes 1 at that length (UATP is 15),
    // and this one also fails Luhn.
    assert!(!luhn_valid(b"1700000000123"));
    assert_eq!(brand(b"1700000000123"), None);
    assert_eq!(masked("{\"ts\":1700000000123}"), "{\"ts\":1700000000123}");
    assert_eq!(masked("{\"ts\":1700000000124}"), "{\"ts\":1700000000124}");
}

#[test]
fn phone_numbers_are_left_alone() {
    for s in [
        "+1-555-867-5309",
        "+44 20 7946 0958",
        "(415) 555-2671",
        "+49 30 901820 0",
        "tel:+6281234567890",
        "0049 30 9018 2000",
    ] {
        assert_eq!(masked(s), s);
    }
}

#[test]
fn uuids_and_hashes_are_left_alone() {
    for s in [
        "123e4567-e89b-12d3-a456-426614174000",
        "12345678-1234-1234-1234-123456789012",
        "41111111-1111-1111-1111-111111111111",
        "sha256:4111111111111111ab4111111111111111",
    ] {
        assert_eq!(masked(s), s);
    }
}

#[test]
fn several_pans_and_counts() {
    let mut buf = b"4111111111111111,5555555555554444; 378282246310005".to_vec();
    assert_eq!(mask_in_place(&mut buf, MaskStyle::default()), 3);
    assert_eq!(
        buf,
        b"************1111,************4444; ***********0005".to_vec()
    );
    let mut none = b"no cards here 12345".to_vec();
    assert_eq!(mask_in_place(&mut none, MaskStyle::default()), 0);
}

#[test]
fn styles() {
    let style = MaskStyle {
        mask: b'X',
        keep: Keep::FirstSixLastFour,
    };
    assert_eq!(
        mask_str("4111 1111 1111 1111", style),
        Cow::<str>::Owned("4111 11XX XXXX 1111".to_owned())
    );
    assert_eq!(
        MaskStyle::default(),
        MaskStyle {
            mask: b'*',
            keep: Keep::LastFour
        }
    );
    // A non-ASCII mask byte must not break UTF-8.
    let odd = MaskStyle {
        mask: 0xE9,
        keep: Keep::LastFour,
    };
    assert_eq!(mask_str("é 4111111111111111", odd), "é ************1111");
}

#[test]
fn mask_str_borrows_when_clean() {
    assert!(matches!(
        mask_str("order 12345 ok", MaskStyle::default()),
        Cow::Borrowed(_)
    ));
    let m = mask_str("pan 4111111111111111 ok", MaskStyle::default());
    assert!(matches!(m, Cow::Owned(_)));
    assert_eq!(m, "pan ************1111 ok");
}

#[test]
fn streaming_holds_little_and_counts() {
    let mut m = StreamMasker::new(MaskStyle::default());
    let mut out = Vec::new();
    assert_eq!(m.push(b"{\"card\":\"4111 1111", &mut out), 0);
    assert_eq!(m.held(), 9);
    assert_eq!(out, b"{\"card\":\"".to_vec());
    assert_eq!(m.push(b" 1111 1111\"}", &mut out), 1);
    assert_eq!(m.held(), 0);
    assert_eq!(m.push(b" 5555555555554444", &mut out), 0);
    assert_eq!(m.held(), 16);
    assert_eq!(m.finish(&mut out), 1);
    assert_eq!(m.masked(), 2);
    assert_eq!(
        out,
        b"{\"card\":\"**** **** **** 1111\"} ************4444".to_vec()
    );
    // A run past 19 digits is let through at once.
    let mut m = StreamMasker::new(MaskStyle::default());
    let mut out = Vec::new();
    m.push(&[b'7'; 25], &mut out);
    assert_eq!(m.held(), 0);
    assert_eq!(out.len(), 25);
    m.push(b"4111111111111111", &mut out);
    assert_eq!(m.held(), 0, "still inside the over-long run");
    m.push(b" 4111111111111111", &mut out);
    m.finish(&mut out);
    assert_eq!(m.masked(), 0);
}

/// A text piece: a fixture card in some form, a random Luhn-invalid long number, or noise.
fn piece() -> impl Strategy<Value = String> {
    let positives: Vec<String> = cards()
        .into_iter()
        .filter(|c| c.positive)
        .map(|c| c.number)
        .collect();
    prop_oneof![
        (prop::sample::select(positives), 0..3usize).prop_map(|(n, g)| match g {
            0 => n,
            1 => group(&n, ' '),
            _ => group(&n, '-'),
        }),
        "[0-9]{1,22}",
        "[0-9 -]{1,30}",
        "[a-zA-Z\"{}:,<>/. -]{1,12}",
        Just("\u{e9}".to_owned()),
    ]
}

fn luhn_invalid(mut digits: Vec<u8>) -> Vec<u8> {
    if luhn_valid(&digits) {
        if let Some(last) = digits.last_mut() {
            *last = b'0' + (*last - b'0' + 1) % 10;
        }
    }
    digits
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn text_without_digits_is_unchanged(s in "[a-zA-Z \"{}:,<>/.\\-\u{e9}\u{4e2d}]{0,300}") {
        prop_assert_eq!(masked(&s), s.clone());
        prop_assert!(matches!(mask_str(&s, MaskStyle::default()), Cow::Borrowed(_)));
    }

    #[test]
    fn luhn_invalid_numbers_are_unchanged(
        runs in prop::collection::vec(
            (prop::collection::vec(b'0'..=b'9', 13..=19), "[a-z,;:\"]{0,3}"), 0..20),
    ) {
        let mut doc = Vec::new();
        for (digits, glue) in runs {
            doc.extend_from_slice(&luhn_invalid(digits));
            doc.push(b',');
            doc.extend_from_slice(glue.as_bytes());
            doc.push(b';');
        }
        prop_assert_eq!(mask_all(&doc, MaskStyle::default()), (doc.clone(), 0));
    }

    #[test]
    fn length_is_kept_and_only_digits_change(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let (out, _) = mask_all(&bytes, MaskStyle::default());
        prop_assert_eq!(out.len(), bytes.len());
        for (a, b) in bytes.iter().zip(&out) {
            prop_assert!(a == b || (a.is_ascii_digit() && *b == b'*'));
        }
    }

    #[test]
    fn streaming_equals_whole_buffer(
        pieces in prop::collection::vec(piece(), 0..12),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let doc: String = pieces.concat();
        let doc = doc.as_bytes();
        let whole = mask_all(doc, MaskStyle::default());
        prop_assert_eq!(whole.0.len(), doc.len());
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(doc.len() + 1)).collect();
        at.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for a in at {
            chunks.push(&doc[prev..a]);
            prev = a;
        }
        chunks.push(&doc[prev..]);
        prop_assert_eq!(stream_both(&chunks, MaskStyle::default()), whole);
    }

    #[test]
    fn streaming_equals_whole_buffer_on_arbitrary_bytes(
        bytes in prop::collection::vec(prop::sample::select(b"0123456789 -a,".to_vec()), 0..200),
        cut in any::<prop::sample::Index>(),
    ) {
        let whole = mask_all(&bytes, MaskStyle::default());
        let (a, b) = bytes.split_at(cut.index(bytes.len() + 1));
        prop_assert_eq!(stream_both(&[a, b], MaskStyle::default()), whole);
    }
}

#[test]
fn cards_at_every_offset_of_digit_dense_text_are_found() {
    // Order lines: short digit groups every few bytes, as in the load harness's document,
    // where whole 64-byte blocks are skipped. A card at any offset, in any grouping, inside
    // or across those blocks must still be masked, and nothing else touched. Two spaces on
    // each side keep it from joining a neighbouring digit group into a longer run.
    let filler = r#"{"id": 100123, "qty": 3, "price": "33.99", "date": "2026-11-23"}, "#.repeat(6);
    let mut checked = 0;
    for card in cards().into_iter().filter(|c| c.positive) {
        for sep in ['\0', ' ', '-'] {
            let number = if sep == '\0' {
                card.number.clone()
            } else {
                group(&card.number, sep)
            };
            for offset in 0..filler.len().min(200) {
                if !filler.is_char_boundary(offset) {
                    continue;
                }
                let mut doc = filler.clone();
                doc.insert_str(offset, &format!("  {number}  "));
                let (out, n) = mask_all(doc.as_bytes(), MaskStyle::default());
                let expected = doc.replace(&number, &expected_mask(&number, Keep::LastFour));
                assert_eq!(n, 1, "{number} at {offset} not found");
                assert_eq!(
                    String::from_utf8(out).expect("utf8"),
                    expected,
                    "{number} at {offset}"
                );
                let (streamed, m) = stream_both(
                    &[&doc.as_bytes()[..offset / 2], &doc.as_bytes()[offset / 2..]],
                    MaskStyle::default(),
                );
                assert_eq!(
                    (streamed, m),
                    (expected.into_bytes(), 1),
                    "streamed, {number} at {offset}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

#[test]
fn a_card_glued_to_a_word_stays_unmasked_across_every_split() {
    for doc in [
        &b"order ORD4111111111111111 shipped"[..],
        b"x 4111111111111111Z y",
        b"ref4111111111111111",
    ] {
        let whole = mask_all(doc, MaskStyle::default());
        assert_eq!(whole.1, 0, "{:?}", String::from_utf8_lossy(doc));
        for i in 0..=doc.len() {
            let (a, b) = doc.split_at(i);
            assert_eq!(
                stream_both(&[a, b], MaskStyle::default()),
                whole,
                "split at {i}"
            );
        }
    }
}
