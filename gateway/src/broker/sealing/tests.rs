//! The OProxy vectors (made with Python's `cryptography` AESGCM, the integrations'
//! library): every valid case opens to its plaintext, every negative case is refused, and
//! what we seal opens by the vectors' own procedure.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;

use super::*;

fn vectors() -> Vec<serde_json::Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/oproxy/vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("vectors");
    let all: serde_json::Value = serde_json::from_str(&text).expect("json");
    all["cases"].as_array().expect("cases").clone()
}

fn text(case: &serde_json::Value, field: &str) -> String {
    case[field].as_str().expect(field).to_owned()
}

/// The vectors' procedure, written from their description alone: split the decoded bytes
/// at 12, AES-GCM-open the rest.
fn reference_open(key_b64: &str, encrypted: &str) -> Option<Vec<u8>> {
    let key = STANDARD.decode(key_b64).ok()?;
    let raw = STANDARD.decode(encrypted).ok()?;
    if raw.len() < 28 {
        return None;
    }
    let (nonce, sealed) = raw.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    Cipher::new(&key).ok()?.decrypt(&nonce, sealed).ok()
}

#[test]
fn every_valid_vector_opens_to_its_plaintext() {
    let mut valid = 0;
    for case in vectors().iter().filter(|c| c["expect"] == "decrypts") {
        let key = STANDARD.decode(text(case, "key_b64")).expect("key");
        let opened = open_wire(&key, &text(case, "encrypted_token"))
            .unwrap_or_else(|e| panic!("{}: {e}", text(case, "note")));
        assert_eq!(
            String::from_utf8(opened.plaintext).expect("utf-8"),
            text(case, "plaintext"),
            "{}",
            text(case, "note")
        );
        assert_eq!(hex::encode(opened.nonce), text(case, "nonce_hex"));
        valid += 1;
    }
    assert_eq!(valid, 5, "the vectors hold five valid cases");
}

#[test]
fn every_negative_vector_is_refused() {
    let mut refused = 0;
    for case in vectors().iter().filter(|c| c["expect"] == "refused") {
        let key = STANDARD.decode(text(case, "key_b64")).expect("key");
        let outcome = open_wire(&key, &text(case, "encrypted_token"));
        assert!(outcome.is_err(), "{} was accepted", text(case, "note"));
        refused += 1;
    }
    assert_eq!(refused, 5, "the vectors hold five negative cases");
}

#[test]
fn what_we_seal_opens_by_the_vectors_procedure_and_matches_them_byte_for_byte() {
    for case in vectors().iter().filter(|c| c["expect"] == "decrypts") {
        let key = STANDARD.decode(text(case, "key_b64")).expect("key");
        let nonce: [u8; 12] = hex::decode(text(case, "nonce_hex"))
            .expect("hex")
            .try_into()
            .expect("12 bytes");
        let sealed = seal_wire(&key, &nonce, text(case, "plaintext").as_bytes()).expect("seal");
        assert_eq!(
            sealed,
            text(case, "encrypted_token"),
            "{}",
            text(case, "note")
        );
        let opened = reference_open(&text(case, "key_b64"), &sealed).expect("opens");
        assert_eq!(opened, text(case, "plaintext").as_bytes());
    }
}

#[test]
fn wrong_key_lengths_and_oversize_input_are_refused() {
    assert_eq!(open_wire(&[0; 20], "AAAA").err(), Some(SealError::BadKey));
    let huge = "A".repeat(MAX_WIRE_CHARS + 4);
    assert_eq!(open_wire(&[0; 32], &huge).err(), Some(SealError::TooLong));
}

#[test]
fn sealed_at_rest_opens_only_for_its_purpose_and_key() {
    let key = SealKey::new(derive_key(b"master", "at-rest"));
    let sealed = key.seal("registration-key", b"value").expect("seal");
    assert_eq!(
        key.open("registration-key", &sealed).expect("open"),
        b"value"
    );
    assert!(
        key.open("refresh-token", &sealed).is_err(),
        "purpose is bound"
    );
    let other = SealKey::new(derive_key(b"other", "at-rest"));
    assert!(other.open("registration-key", &sealed).is_err());
    assert_ne!(
        key.seal("registration-key", b"value").expect("seal"),
        sealed,
        "a fresh nonce each time"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::test_cases(64)))]

    /// Any plaintext round-trips; flipping any bit of the sealed bytes is refused.
    #[test]
    fn round_trip_and_any_flipped_bit_is_refused(
        key in prop::collection::vec(any::<u8>(), 32),
        nonce in any::<[u8; 12]>(),
        plain in prop::collection::vec(any::<u8>(), 0..200),
        flip in any::<prop::sample::Index>(),
    ) {
        let sealed = seal_wire(&key, &nonce, &plain).expect("seal");
        prop_assert_eq!(&open_wire(&key, &sealed).expect("open").plaintext, &plain);
        let mut raw = STANDARD.decode(&sealed).expect("b64");
        let bit = flip.index(raw.len() * 8);
        raw[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(open_wire(&key, &STANDARD.encode(raw)).is_err());
    }
}
