//! The YAML front end's tests: positions, paths, suggestions, limits.
#![allow(dead_code)] // test structs exist to be deserialized, not read

use super::*;
use serde::Deserialize;

fn load<T: DeserializeOwned>(src: &str) -> Result<T, Vec<Error>> {
    let node = parse(src, &Limits::default()).map_err(|e| vec![e])?;
    from_node(&node)
}

fn first_err<T: DeserializeOwned + fmt::Debug>(src: &str) -> Error {
    let errs = load::<T>(src).expect_err("expected an error");
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs[0].clone()
}

fn at(line: usize, col: usize) -> Option<Location> {
    Some(Location { line, col })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKey {
    header: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hmac {
    secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum AssertionSpec {
    RequireApiKey(ApiKey),
    RequireHmac(Hmac),
    AllowAll,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Service {
    name: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    request: Vec<AssertionSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    services: Vec<Service>,
}

#[test]
fn unknown_field_points_at_key_with_suggestion() {
    let src = "services:\n  - name: a\n    requst: []\n";
    let e = first_err::<Config>(src);
    assert_eq!(e.loc, at(3, 5));
    assert_eq!(e.path, "services[0].requst");
    assert_eq!(
        e.message,
        "unknown field \"requst\"; did you mean \"request\"?"
    );
    assert_eq!(
        e.to_string(),
        "3:5: services[0].requst: unknown field \"requst\"; did you mean \"request\"?"
    );
    let e = first_err::<Config>("services:\n  - name: a\n    zzz: 1\n");
    assert_eq!(
        e.message,
        "unknown field \"zzz\"; expected one of: name, port, request"
    );
}

#[test]
fn bad_enum_variant_in_list_item() {
    let src = "services:\n  - name: a\n  - name: b\n    request:\n      - allow_all\n      - requre_hmac: {secret: s}\n";
    let e = first_err::<Config>(src);
    assert_eq!(e.loc, at(6, 9));
    assert_eq!(e.path, "services[1].request[1].requre_hmac");
    assert_eq!(
        e.message,
        "unknown assertion \"requre_hmac\"; did you mean \"require_hmac\"?"
    );
}

#[test]
fn nested_path_text() {
    let src = "services:\n  - name: a\n  - name: b\n    request:\n      - require_api_key:\n          header: 5\n          extra: x\n";
    let e = first_err::<Config>(src);
    assert_eq!(e.path, "services[1].request[0].require_api_key.extra");
    assert_eq!(e.loc, at(7, 11));
}

#[test]
fn enum_map_with_two_keys() {
    let src =
        "services:\n  - name: a\n    request:\n      - {allow_all: ~, require_hmac: {secret: s}}\n";
    let e = first_err::<Config>(src);
    assert_eq!(e.loc, at(4, 9));
    assert_eq!(
        e.message,
        "expected a single key naming the assertion, found 2 keys: allow_all, require_hmac"
    );
}

#[derive(Debug)]
struct Port(u16);

impl TryFrom<String> for Port {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.parse::<u16>() {
            Ok(p) if p != 0 => Ok(Port(p)),
            _ => Err(format!("invalid port {s:?}")),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Port::try_from(s).map_err(de::Error::custom)
    }
}

#[derive(Debug, Deserialize)]
#[serde(try_from = "String")]
struct Name(String);

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.contains(' ') {
            Err(format!("name {s:?} must not contain spaces"))
        } else {
            Ok(Name(s))
        }
    }
}

#[derive(Debug, Deserialize)]
struct Listener {
    name: Name,
    port: Port,
}

#[test]
fn try_from_error_points_at_value() {
    let e = first_err::<Listener>("name: ok\nport:   \"0\"\n");
    assert_eq!(e.loc, at(2, 9));
    assert_eq!(e.path, "port");
    assert_eq!(e.message, "invalid port \"0\"");
    let e = first_err::<Listener>("port: 80\nname:  a b\n");
    assert_eq!(e.loc, at(2, 8));
    assert_eq!(e.message, "name \"a b\" must not contain spaces");
}

#[test]
fn missing_field_points_at_mapping() {
    let src = "services:\n  - name: a\n  - port: 80\n";
    let e = first_err::<Config>(src);
    assert_eq!(e.loc, at(3, 5));
    assert_eq!(e.path, "services[1]");
    assert_eq!(e.message, "missing field \"name\"");
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LenientService {
    name: String,
    #[serde(default)]
    request: Vec<Lenient<AssertionSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LenientConfig {
    services: Vec<Lenient<LenientService>>,
}

#[test]
fn lenient_collects_errors_in_order() {
    let src = "\
services:
  - name: a
    request:
      - require_api_key: {header: X-Api-Key}
      - require_api_key: {hedaer: X}
      - allow_all
      - requre_hmac: {secret: s}
  - name: b
    request:
      - require_hmac: {secret: [1]}
  - name: c
";
    let errs = load::<LenientConfig>(src).expect_err("errors");
    let summary: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(
            summary,
            vec![
                "5:27: services[0].request[1].require_api_key.hedaer: unknown field \"hedaer\"; did you mean \"header\"?",
                "7:9: services[0].request[3].requre_hmac: unknown assertion \"requre_hmac\"; did you mean \"require_hmac\"?",
                "10:32: services[1].request[0].require_hmac.secret: expected a string, found a list",
            ]
        );
}

#[test]
fn lenient_ok_and_try_from_recovery() {
    #[derive(Debug, Deserialize)]
    struct Ports {
        ports: Vec<Lenient<Port>>,
    }
    let errs = load::<Ports>("ports: [80, 0, 443, x]\n").expect_err("errors");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].loc, at(1, 13));
    assert_eq!(errs[0].path, "ports[1]");
    assert_eq!(errs[1].loc, at(1, 21));
    let node = parse("ports: [80, 443]", &Limits::default()).expect("parse");
    let ok: Ports = from_node(&node).expect("ok");
    let ports: Vec<u16> = ok
        .ports
        .iter()
        .filter_map(|p| p.0.as_ref().map(|p| p.0))
        .collect();
    assert_eq!(ports, vec![80, 443]);
}

#[test]
fn spanned_location() {
    #[derive(Debug, Deserialize)]
    struct S {
        a: Spanned<String>,
        b: Vec<Spanned<u32>>,
    }
    let s: S = load("a: hello\nb:\n  - 1\n  -   22\n").expect("ok");
    assert_eq!(s.a.loc, Location { line: 1, col: 4 });
    assert_eq!(&*s.a, "hello");
    assert_eq!(s.b[1].loc, Location { line: 4, col: 7 });
    assert_eq!(s.b[1].value, 22);
    // errors inside a Spanned value keep their location
    let e = first_err::<S>("a: x\nb: [1, nope]\n");
    assert_eq!(e.loc, at(2, 8));
    assert_eq!(e.path, "b[1]");
}

#[test]
fn aliases_are_expanded() {
    #[derive(Debug, Deserialize)]
    struct S {
        base: ApiKey,
        other: ApiKey,
    }
    let s: S = load("base: &k {header: X-Key}\nother: *k\n").expect("ok");
    assert_eq!(s.other.header, "X-Key");
}

#[test]
fn billion_laughs_refused() {
    let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        src.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let e = parse(&src, &Limits::default()).expect_err("refused");
    assert!(
        e.message
            .contains("document too large after alias expansion"),
        "{e}"
    );
    assert!(e.loc.is_some());
}

#[test]
fn depth_limit() {
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let e = parse(&deep, &Limits::default()).expect_err("too deep");
    assert!(e.message.contains("nested too deeply"), "{e}");
    assert!(parse(
        &deep,
        &Limits {
            max_depth: 200,
            max_nodes: 1000
        }
    )
    .is_ok());
}

#[test]
fn duplicate_keys_refused() {
    let e = parse("a: 1\nb:\n  c: 1\n  c: 2\n", &Limits::default()).expect_err("dup");
    assert_eq!(e.loc, at(4, 3));
    assert_eq!(e.message, "duplicate key \"c\" (first at 3:3)");
}

#[test]
fn parse_level_rules() {
    let l = Limits::default();
    let e = parse("a: 1\n---\nb: 2\n", &l).expect_err("two docs");
    assert_eq!(e.loc, at(2, 1));
    let e = parse("a: !custom x\n", &l).expect_err("tag");
    assert_eq!(e.message, "YAML tags are not supported");
    let e = parse("base: &b {x: 1}\nc:\n  <<: *b\n", &l).expect_err("merge");
    assert_eq!(e.message, "merge keys (<<) are not supported");
    assert_eq!(e.loc, at(3, 3));
    let e = parse("a: [1, 2\n", &l).expect_err("scan");
    assert!(e.loc.is_some());
    let n = parse("", &l).expect("empty");
    assert!(matches!(n.kind, NodeKind::Map(ref m) if m.is_empty()));
    assert_eq!(n.loc, Location { line: 1, col: 1 });
    let n = parse("# only a comment\n", &l).expect("empty");
    assert!(matches!(n.kind, NodeKind::Map(ref m) if m.is_empty()));
    let n = parse("a: !!str 12\n", &l).expect("core tag");
    let v: serde_json::Value = from_node(&n).expect("ok");
    assert_eq!(v, serde_json::json!({"a": "12"}));
}

#[test]
fn core_schema_scalars() {
    let src = "\
n1: null
n2: ~
n3:
n4: NULL
b1: true
b2: False
i1: 42
i2: -7
i3: 0x1F
i4: 0o17
i5: 18446744073709551615
f1: 1.5
f2: -.inf
f3: 1e3
s1: hello
s2: \"123\"
s3: 'true'
s4: 1.2.3
s5: yes
l: [1, a]
m: {k: v}
";
    let v: serde_json::Value = load(src).expect("ok");
    assert_eq!(
        v,
        serde_json::json!({
            "n1": null, "n2": null, "n3": null, "n4": null,
            "b1": true, "b2": false,
            "i1": 42, "i2": -7, "i3": 31, "i4": 15, "i5": 18446744073709551615u64,
            "f1": 1.5, "f2": null, "f3": 1000.0,
            "s1": "hello", "s2": "123", "s3": "true", "s4": "1.2.3", "s5": "yes",
            "l": [1, "a"], "m": {"k": "v"}
        })
    );
    #[derive(Debug, Deserialize)]
    struct F {
        x: f64,
    }
    let f: F = load("x: .NaN").expect("nan");
    assert!(f.x.is_nan());
    let f: F = load("x: -.inf").expect("inf");
    assert_eq!(f.x, f64::NEG_INFINITY);
}

#[test]
fn quoted_numbers_into_string_and_u16() {
    #[derive(Debug, Deserialize)]
    struct S {
        s: String,
        p: u16,
    }
    let v: S = load("s: \"123\"\np: \"8080\"\n").expect("ok");
    assert_eq!((v.s.as_str(), v.p), ("123", 8080));
    let v: S = load("s: 123\np: 8080\n").expect("ok");
    assert_eq!((v.s.as_str(), v.p), ("123", 8080));
    let e = first_err::<S>("s: x\np: abc\n");
    assert_eq!(
        e.message,
        "expected an unsigned 16-bit integer, found \"abc\""
    );
    assert_eq!(e.loc, at(2, 4));
    let e = first_err::<S>("s: x\np: 70000\n");
    assert_eq!(
        e.message,
        "integer 70000 is out of range for an unsigned 16-bit integer"
    );
    let e = first_err::<S>("s: ~\np: 1\n");
    assert_eq!(e.message, "expected a string, found null");
    let e = first_err::<S>("s: {a: 1}\np: 1\n");
    assert_eq!(e.message, "expected a string, found a mapping");
}

#[test]
fn option_handling() {
    #[derive(Debug, Deserialize)]
    struct S {
        a: Option<u32>,
        b: Option<String>,
        #[serde(default)]
        c: Option<String>,
        d: Option<String>,
    }
    let v: S = load("a: ~\nb: \"\"\nd: null\n").expect("ok");
    assert_eq!(v.a, None);
    assert_eq!(v.b.as_deref(), Some(""));
    assert_eq!(v.c, None);
    assert_eq!(v.d, None);
    let v: S = load("a: 3\nb: x\nd: 'null'\n").expect("ok");
    assert_eq!(v.a, Some(3));
    assert_eq!(v.d.as_deref(), Some("null"));
}

#[test]
fn enum_shapes() {
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum E {
        Unit,
        New(u8),
        Tup(u8, u8),
        St { a: u8 },
    }
    let v: Vec<E> = load("- unit\n- unit: ~\n- new: 1\n- tup: [1, 2]\n- st: {a: 3}\n").expect("ok");
    assert_eq!(
        v,
        vec![E::Unit, E::Unit, E::New(1), E::Tup(1, 2), E::St { a: 3 }]
    );
    let e = first_err::<Vec<E>>("- uint\n");
    assert_eq!(e.message, "unknown value \"uint\"; did you mean \"unit\"?");
}
