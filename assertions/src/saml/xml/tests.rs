//! The parser: namespaces, refused constructs, text and references, limits.
use super::*;

fn p(s: &str) -> Result<Document, XmlError> {
    parse(s.as_bytes(), &XmlLimits::default())
}

#[test]
fn namespaces_resolve_and_undeclared_prefixes_are_refused() {
    let d = p(r#"<a:r xmlns:a="urn:a" xmlns="urn:d"><b a:x="1" y="2"/></a:r>"#)
        .expect("valid test input");
    let r = d.element(0).expect("valid test input");
    assert!(r.name.is("urn:a", "r"));
    let b = d.element(1).expect("valid test input");
    assert!(b.name.is("urn:d", "b"));
    assert_eq!(b.attributes[0].name.ns, "urn:a");
    assert_eq!(b.attributes[1].name.ns, "");
    assert_eq!(
        d.in_scope_namespaces(1),
        vec![("".into(), "urn:d".into()), ("a".into(), "urn:a".into())]
    );
    assert_eq!(p("<x:r/>"), Err(XmlError::UndeclaredPrefix("x".into())));
    assert_eq!(
        p(r#"<r xmlns:x="urn:x"><x:a/></r><x:b/>"#).expect_err("refused"),
        XmlError::ContentOutsideRoot
    );
    assert!(matches!(
        p(r#"<r xmlns:x=""/>"#),
        Err(XmlError::BadNamespaceDeclaration(_))
    ));
}

#[test]
fn dtd_entities_and_processing_instructions_are_refused() {
    assert_eq!(
        p(r#"<!DOCTYPE r [<!ENTITY e "x">]><r>&e;</r>"#),
        Err(XmlError::Doctype)
    );
    assert_eq!(p("<r>&e;</r>"), Err(XmlError::UnknownEntity("e".into())));
    assert_eq!(
        p(r#"<r a="&e;"/>"#),
        Err(XmlError::UnknownEntity("e".into()))
    );
    assert_eq!(p("<r><?pi x?></r>"), Err(XmlError::ProcessingInstruction));
    assert!(p("<?xml version=\"1.0\" encoding=\"UTF-8\"?><r/>").is_ok());
    assert_eq!(
        p("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><r/>"),
        Err(XmlError::UnsupportedEncoding("ISO-8859-1".into()))
    );
    assert!(matches!(p("<r>&#0;</r>"), Err(XmlError::Malformed(_))));
    assert_eq!(
        p("<?xml version=\"1.1\"?><r/>"),
        Err(XmlError::Malformed("only XML 1.0 is accepted".into()))
    );
    assert!(matches!(
        p(" <?xml version=\"1.0\"?><r/>"),
        Err(XmlError::Malformed(_))
    ));
}

#[test]
fn text_references_cdata_and_comments() {
    let d = p("<r>a&amp;b&#x41;<![CDATA[<&>]]>c\r\nd<!--k-->e</r>").expect("valid test input");
    assert_eq!(d.node(1).kind, NodeKind::Text("a&bA<&>c\nd".into()));
    assert_eq!(d.node(2).kind, NodeKind::Comment("k".into()));
    assert_eq!(d.text_content(0).as_deref(), Some("a&bA<&>c\nde"));
    let d = p("<r a=\"x\ty&#9;z\r\nw\"/>").expect("valid test input");
    assert_eq!(
        d.element(0).expect("valid test input").attr("a"),
        Some("x y\tz w")
    );
}

#[test]
fn limits_are_enforced() {
    let limits = XmlLimits {
        max_bytes: 100,
        max_depth: 3,
        max_attributes: 2,
        max_nodes: 5,
    };
    let deep = "<a><a><a><a/></a></a></a>";
    assert_eq!(parse(deep.as_bytes(), &limits), Err(XmlError::TooDeep(3)));
    let attrs = r#"<a x="1" y="2" z="3"/>"#;
    assert_eq!(
        parse(attrs.as_bytes(), &limits),
        Err(XmlError::TooManyAttributes(2))
    );
    let many = "<a><b/><b/><b/><b/><b/></a>";
    assert_eq!(
        parse(many.as_bytes(), &limits),
        Err(XmlError::TooManyNodes(5))
    );
    let big = format!("<a>{}</a>", "x".repeat(200));
    assert!(matches!(
        parse(big.as_bytes(), &limits),
        Err(XmlError::TooLarge { .. })
    ));
    assert!(matches!(
        p(r#"<a x="1" x="2"/>"#),
        Err(XmlError::Malformed(_) | XmlError::DuplicateAttribute(_))
    ));
    assert_eq!(
        p(r#"<a xmlns:p="u" xmlns:q="u" p:x="1" q:x="2"/>"#),
        Err(XmlError::DuplicateAttribute("q:x".into()))
    );
}

#[test]
fn descendant_text_skips_comments_and_walks_elements_in_order() {
    let d = p("<r>a<x>b<!--c--><y>d</y></x>e</r>").expect("valid test input");
    assert_eq!(d.descendant_text(0), "abde");
    assert_eq!(d.text_content(0), None);
}
