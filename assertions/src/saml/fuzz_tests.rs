//! Robustness: mutated tokens (bit flips, truncations, insertions of DOCTYPEs, entities,
//! comments and deep nesting, in every encoding) go through decoding, parsing and
//! verification without panicking and within the configured limits. A seeded loop, so
//! a failure reproduces; plus a property test feeding arbitrary bytes to the parser.

use super::tests::{pem_keys, read};
use super::token::{decode_token, AllowedEncodings};
use super::xml::{parse, XmlLimits};
use super::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use proptest::prelude::*;
use std::io::Write;

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).expect("valid test input")
    }
}

const INSERTS: &[&str] = &[
    "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>",
    "<!DOCTYPE saml:Assertion>",
    "&e;",
    "&#0;",
    "&#x110000;",
    "<!---->",
    "<?pi x?>",
    "<![CDATA[<]]>",
    "<x:y/>",
    "xmlns:ds=\"\" ",
    "\u{feff}",
    "\"",
    "<",
    ">",
    "</saml:Assertion>",
    "<saml:Assertion>",
];

fn mutate(rng: &mut Rng, doc: &[u8]) -> Vec<u8> {
    let mut out = doc.to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.truncate(at),
            2 => {
                let s = INSERTS[rng.below(INSERTS.len())];
                out.splice(at..at, s.bytes());
            }
            3 => {
                let depth = 1 + rng.below(200);
                let nest = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
                out.splice(at..at, nest.bytes());
            }
            4 if at < out.len() => {
                let end = (at + rng.below(64)).min(out.len());
                out.drain(at..end);
            }
            _ => {
                let b = u8::try_from(rng.below(256)).expect("valid test input");
                out.insert(at.min(out.len()), b);
            }
        }
    }
    out
}

fn encode(rng: &mut Rng, xml: &[u8]) -> String {
    let raw = match rng.below(3) {
        0 => xml.to_vec(),
        1 => {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(xml).expect("valid test input");
            e.finish().expect("valid test input")
        }
        _ => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(xml).expect("valid test input");
            e.finish().expect("valid test input")
        }
    };
    let mut token = STANDARD.encode(raw);
    if rng.below(10) == 0 && !token.is_empty() {
        // Damage the base64 itself.
        let i = rng.below(token.len());
        token.replace_range(i..=i, ["*", "-", " ", "=", "A"][rng.below(5)]);
    }
    token
}

#[test]
fn mutated_tokens_never_panic_and_stay_within_limits() {
    let limits = XmlLimits {
        max_bytes: 16 * 1024,
        max_depth: 24,
        max_attributes: 16,
        max_nodes: 512,
    };
    let options = VerifyOptions {
        limits,
        ..VerifyOptions::default()
    };
    let v = Verifier::new(pem_keys("xmlsec1/rsa2048.cert.pem"), options).expect("valid test input");
    let seeds = [
        read("xmlsec1/signed-rsa.xml"),
        read("xmlsec1/signed-comment.xml"),
        read("xmlsec1/signed-default-ns.xml"),
        read("pysaml2/xsw/signed-xsw-assertion-wrapper.xml"),
    ];
    for seed in &seeds {
        assert!(seed.len() <= limits.max_bytes);
    }
    let mut rng = Rng(0x5eed_5a41_0000_0001);
    let mut verified = 0;
    for _ in 0..1500 {
        let seed = &seeds[rng.below(seeds.len())];
        let doc = mutate(&mut rng, seed);
        let token = encode(&mut rng, &doc);
        if let Ok((xml, _)) = decode_token(&token, AllowedEncodings::default(), limits.max_bytes) {
            assert!(xml.len() <= limits.max_bytes);
        }
        match v.verify_token(&token) {
            Ok(a) => {
                verified += 1;
                // A mutation that survives verification must not change what was signed.
                assert!(
                    [
                        "_8f0c1d2e3a4b5c6d7e8f901a2b3c4d5e",
                        "_d3f4a1b2c3d4e5f60718293a4b5c6d7e"
                    ]
                    .contains(&a.id.as_str()),
                    "{}",
                    a.id
                );
                assert!(
                    [
                        "alice@example.com",
                        "user@evil.com.example.com",
                        "CORP\\alice"
                    ]
                    .contains(&a.subject.name_id.as_str()),
                    "{}",
                    a.subject.name_id
                );
            }
            Err(e) => assert!(e.code().starts_with("saml-")),
        }
        if let Ok(d) = parse(&doc, &limits) {
            assert!(d.len() <= limits.max_nodes);
        }
    }
    // Some mutations are harmless (whitespace, comments outside the digest); most are not.
    assert!(verified < 1500);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes, &XmlLimits::default());
        let _ = decode_token(&String::from_utf8_lossy(&bytes), AllowedEncodings::default(), 4096);
    }

    #[test]
    fn arbitrary_markup_never_panics_the_parser(s in "(<[a-z:]{0,3}( [a-z:]{1,3}=\"[a-z&;#0-9]{0,4}\")?/?>|</[a-z:]{0,3}>|&[a-z#0-9]{0,4};|<!--|-->|<!\\[CDATA\\[|\\]\\]>|[a-z ]){0,40}") {
        if let Ok(doc) = parse(s.as_bytes(), &XmlLimits::default()) {
            let _ = super::c14n::canonicalize(&doc, doc.root(), None, &super::c14n::C14nMethod::exclusive());
        }
    }
}
