//! C14N against the examples of the W3C specifications, escaping, and properties over
//! generated documents (idempotence, and a canonical form parses back to itself).

use super::*;
use crate::saml::xml::{parse, XmlLimits};
use proptest::prelude::*;

fn c14n(xml: &str, apex: NodeId, method: &C14nMethod) -> String {
    let doc = parse(xml.as_bytes(), &XmlLimits::default()).expect("valid test input");
    String::from_utf8(canonicalize(&doc, apex, None, method)).expect("valid test input")
}

fn inclusive() -> C14nMethod {
    C14nMethod::Inclusive {
        with_comments: false,
    }
}

/// Exclusive XML Canonicalization 1.0, section 2.2: the same subtree, inclusive and
/// exclusive.
#[test]
fn exc_c14n_spec_example() {
    let xml = r#"<n0:local xmlns:n0="foo:bar" xmlns:n3="ftp://example.org"><n1:elem2 xmlns:n1="http://example.net" xml:lang="en"><n3:stuff xmlns:n3="ftp://example.org"/></n1:elem2></n0:local>"#;
    assert_eq!(
        c14n(xml, 1, &inclusive()),
        r#"<n1:elem2 xmlns:n0="foo:bar" xmlns:n1="http://example.net" xmlns:n3="ftp://example.org" xml:lang="en"><n3:stuff></n3:stuff></n1:elem2>"#
    );
    assert_eq!(
        c14n(xml, 1, &C14nMethod::exclusive()),
        r#"<n1:elem2 xmlns:n1="http://example.net" xml:lang="en"><n3:stuff xmlns:n3="ftp://example.org"></n3:stuff></n1:elem2>"#
    );
    // n0 listed as inclusive: rendered on the apex like inclusive C14N would.
    let listed = C14nMethod::Exclusive {
        with_comments: false,
        inclusive_prefixes: vec!["n0".into(), "absent".into()],
    };
    assert_eq!(
        c14n(xml, 1, &listed),
        r#"<n1:elem2 xmlns:n0="foo:bar" xmlns:n1="http://example.net" xml:lang="en"><n3:stuff xmlns:n3="ftp://example.org"></n3:stuff></n1:elem2>"#
    );
}

/// Canonical XML 1.0, example 3.3 (start and end tags): attribute and namespace order,
/// superfluous declarations dropped, `xmlns=""` only where it changes something.
#[test]
fn c14n_spec_attribute_order_and_default_namespace() {
    let xml = r#"<doc><e1   /><e2   ></e2   ><e3   name = "elem3"   id="elem3"   /><e4   name="elem4"   id="elem4"   ></e4><e5 a:attr="out" b:attr="sorted" attr2="all" attr="I'm"
      xmlns:b="http://www.ietf.org"
      xmlns:a="http://www.w3.org"
      xmlns="http://example.org"/><e6 xmlns="" xmlns:a="http://www.w3.org"><e7 xmlns="http://www.ietf.org"><e8 xmlns="" xmlns:a="http://www.w3.org"><e9 xmlns="" xmlns:a="http://www.ietf.org"/></e8></e7></e6></doc>"#;
    assert_eq!(
        c14n(xml, 0, &inclusive()),
        r#"<doc><e1></e1><e2></e2><e3 id="elem3" name="elem3"></e3><e4 id="elem4" name="elem4"></e4><e5 xmlns="http://example.org" xmlns:a="http://www.w3.org" xmlns:b="http://www.ietf.org" attr="I'm" attr2="all" b:attr="sorted" a:attr="out"></e5><e6 xmlns:a="http://www.w3.org"><e7 xmlns="http://www.ietf.org"><e8 xmlns=""><e9 xmlns:a="http://www.ietf.org"></e9></e8></e7></e6></doc>"#
    );
    assert_eq!(
        c14n(xml, 0, &C14nMethod::exclusive()),
        r#"<doc><e1></e1><e2></e2><e3 id="elem3" name="elem3"></e3><e4 id="elem4" name="elem4"></e4><e5 xmlns="http://example.org" xmlns:a="http://www.w3.org" xmlns:b="http://www.ietf.org" attr="I'm" attr2="all" b:attr="sorted" a:attr="out"></e5><e6><e7 xmlns="http://www.ietf.org"><e8 xmlns=""><e9></e9></e8></e7></e6></doc>"#
    );
}

/// Canonical XML 1.0, example 3.4 (character modifications) as far as no DTD is
/// involved, plus the escapes of attribute values.
#[test]
fn escaping_rules() {
    let xml = "<doc><text>First line&#x0d;&#10;Second line</text><value>&#x32;</value><compute><![CDATA[value>\"0\" && value<\"10\" ?\"valid\":\"error\"]]></compute><compute expr='value>\"0\" &amp;&amp; value&lt;\"10\" ?\"valid\":\"error\"'>valid</compute><norm attr=' &apos;   &#x20;&#13;&#xa;&#9;   &apos; '/></doc>";
    assert_eq!(
        c14n(xml, 0, &C14nMethod::exclusive()),
        "<doc><text>First line&#xD;\nSecond line</text><value>2</value><compute>value&gt;\"0\" &amp;&amp; value&lt;\"10\" ?\"valid\":\"error\"</compute><compute expr=\"value>&quot;0&quot; &amp;&amp; value&lt;&quot;10&quot; ?&quot;valid&quot;:&quot;error&quot;\">valid</compute><norm attr=\" '    &#xD;&#xA;&#x9;   ' \"></norm></doc>"
    );
}

#[test]
fn comments_are_kept_only_with_comments_and_the_excluded_subtree_is_left_out() {
    let xml =
        "<r xmlns:ds=\"urn:ds\"><a>x<!--c-->y</a><ds:Signature><ds:V>1</ds:V></ds:Signature></r>";
    let doc = parse(xml.as_bytes(), &XmlLimits::default()).expect("valid test input");
    let sig = doc
        .elements()
        .find(|&e| doc.element(e).expect("valid test input").name.local == "Signature");
    let with = C14nMethod::Exclusive {
        with_comments: true,
        inclusive_prefixes: vec![],
    };
    assert_eq!(
        canonicalize(&doc, 0, sig, &with),
        b"<r><a>x<!--c-->y</a></r>".to_vec()
    );
    assert_eq!(
        canonicalize(&doc, 0, sig, &C14nMethod::exclusive()),
        b"<r><a>xy</a></r>".to_vec()
    );
    assert_eq!(
        canonicalize(&doc, 0, None, &C14nMethod::exclusive()),
        b"<r><a>xy</a><ds:Signature xmlns:ds=\"urn:ds\"><ds:V>1</ds:V></ds:Signature></r>".to_vec()
    );
}

/// A small random element tree written as XML text, using a few prefixes, attributes,
/// text with characters C14N escapes, comments and CDATA.
fn arb_document() -> impl Strategy<Value = String> {
    let text = proptest::string::string_regex("[a-z &<>\"'\r\n\t]{0,8}").expect("valid test input");
    let leaf = text.prop_map(|t| escape_for_source(&t));
    let tree = leaf.prop_recursive(4, 32, 4, |inner| {
        (
            0usize..4,
            0usize..4,
            proptest::collection::vec((0usize..4, "[a-c]", "[a-z&<\"\t\n]{0,5}"), 0..3),
            proptest::collection::vec(inner, 0..4),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(elem_prefix, declare, attrs, children, comment, cdata)| {
                const NS: [(&str, &str); 4] = [
                    ("", "urn:d"),
                    ("a", "urn:a"),
                    ("b", "urn:b"),
                    ("c", "urn:a"),
                ];
                let (ep, _) = NS[elem_prefix];
                let name = if ep.is_empty() {
                    "e".to_string()
                } else {
                    format!("{ep}:e")
                };
                let mut s = format!("<{name}");
                // Every prefix is declared on every element that uses it (keeps the
                // generator simple); `declare` adds a redundant or changing default.
                for (p, u) in NS.iter().skip(1) {
                    s.push_str(&format!(" xmlns:{p}=\"{u}\""));
                }
                match declare {
                    0 => s.push_str(" xmlns=\"urn:d\""),
                    1 => s.push_str(" xmlns=\"\""),
                    _ => {}
                }
                let mut seen = Vec::new();
                for (p, local, value) in attrs {
                    let (ap, _) = NS[p];
                    let key = if ap.is_empty() {
                        local.clone()
                    } else {
                        format!("{ap}:{local}")
                    };
                    let expanded = (NS[p].1, local.clone());
                    // a: and c: share a namespace: the same local name twice is invalid.
                    let ns = if ap.is_empty() { "" } else { NS[p].1 };
                    if seen.contains(&(ns, expanded.1.clone())) {
                        continue;
                    }
                    seen.push((ns, expanded.1));
                    s.push_str(&format!(" {key}=\"{}\"", escape_for_source(&value)));
                }
                s.push('>');
                for child in children {
                    s.push_str(&child);
                }
                if comment {
                    s.push_str("<!-- c&<> -->");
                }
                if cdata {
                    s.push_str("<![CDATA[<x>&amp;]]>");
                }
                s.push_str(&format!("</{name}>"));
                s
            })
    });
    tree.prop_map(|t| format!("<root xmlns:a=\"urn:a\">{t}</root>"))
}

fn escape_for_source(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
        .replace('\r', "&#13;")
        .replace('\t', "&#9;")
        .replace('\n', "&#10;")
}

proptest! {
    #[test]
    fn canonical_forms_are_stable(xml in arb_document(), comments in any::<bool>(), exclusive in any::<bool>()) {
        let method = if exclusive {
            C14nMethod::Exclusive { with_comments: comments, inclusive_prefixes: vec![] }
        } else {
            C14nMethod::Inclusive { with_comments: comments }
        };
        let doc = parse(xml.as_bytes(), &XmlLimits::default()).expect("valid test input");
        for apex in doc.elements().take(6).collect::<Vec<_>>() {
            let once = canonicalize(&doc, apex, None, &method);
            prop_assert_eq!(&once, &canonicalize(&doc, apex, None, &method));
            let reparsed = parse(&once, &XmlLimits::default()).expect("valid test input");
            let twice = canonicalize(&reparsed, reparsed.root(), None, &method);
            prop_assert_eq!(String::from_utf8_lossy(&once), String::from_utf8_lossy(&twice));
        }
    }
}
