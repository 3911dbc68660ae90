//! A small owned XML tree for signed SAML documents, parsed with quick-xml under limits.
//!
//! What XML-DSig needs and nothing more: elements with namespace-resolved names and the
//! namespace declarations they carry, attributes, text, and comments kept as nodes (so
//! canonicalisation with comments works, and a comment injected into a value can be seen).
//! Everything a signed token has no use for and attackers love is refused: DOCTYPE/DTD
//! (so no entity declarations and no external entities), entity references other than
//! the five predefined ones and numeric character references, processing instructions,
//! undeclared prefixes. CDATA is accepted and becomes ordinary text (C14N renders it
//! escaped). Depth, attributes per element, node count and input size are bounded.

use quick_xml::events::attributes::Attribute as QAttribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// The namespace bound to the `xml` prefix by definition.
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace reserved for `xmlns` attributes.
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// Bounds on what the parser accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlLimits {
    /// Input size in bytes.
    pub max_bytes: usize,
    /// Element nesting depth (the root is depth 1).
    pub max_depth: usize,
    /// Attributes (namespace declarations included) on one element.
    pub max_attributes: usize,
    /// Elements, text and comment nodes in the whole document.
    pub max_nodes: usize,
}

impl Default for XmlLimits {
    fn default() -> Self {
        XmlLimits {
            max_bytes: 64 * 1024,
            max_depth: 32,
            max_attributes: 32,
            max_nodes: 4096,
        }
    }
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the document is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("the document is not UTF-8")]
    NotUtf8,
    #[error("the document declares encoding {0:?}; only UTF-8 is accepted")]
    UnsupportedEncoding(String),
    #[error("DOCTYPE declarations are not accepted")]
    Doctype,
    #[error("processing instructions are not accepted")]
    ProcessingInstruction,
    #[error("entity reference &{0}; is not one of the predefined entities")]
    UnknownEntity(String),
    #[error("elements nest deeper than {0}")]
    TooDeep(usize),
    #[error("an element has more than {0} attributes")]
    TooManyAttributes(usize),
    #[error("the document has more than {0} nodes")]
    TooManyNodes(usize),
    #[error("namespace prefix {0:?} is not declared")]
    UndeclaredPrefix(String),
    #[error("invalid namespace declaration for prefix {0:?}")]
    BadNamespaceDeclaration(String),
    #[error("invalid name {0:?}")]
    BadName(String),
    #[error("attribute {0:?} appears twice on one element")]
    DuplicateAttribute(String),
    #[error("the document has no root element")]
    NoRoot,
    #[error("content outside the root element")]
    ContentOutsideRoot,
    #[error("malformed XML: {0}")]
    Malformed(String),
}

/// A node's index in its [`Document`].
pub type NodeId = usize;

/// A namespace-resolved name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// The prefix as written (`""` for none).
    pub prefix: String,
    /// The local part.
    pub local: String,
    /// The namespace URI the prefix resolves to (`""` for no namespace).
    pub ns: String,
}

impl Name {
    /// True when this name is `{ns}local`.
    #[must_use]
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.local == local && self.ns == ns
    }

    /// The name as written, `prefix:local` or `local`.
    #[must_use]
    pub fn qualified(&self) -> String {
        if self.prefix.is_empty() {
            self.local.clone()
        } else {
            format!("{}:{}", self.prefix, self.local)
        }
    }
}

/// An attribute (namespace declarations are kept apart, in [`Element::ns_decls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: Name,
    /// The value after entity expansion and attribute-value normalisation.
    pub value: String,
}

/// An element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: Name,
    pub attributes: Vec<Attribute>,
    /// Namespace declarations written on this element: (prefix, URI), `""` prefix for the
    /// default namespace, `""` URI for an undeclaration (`xmlns=""`).
    pub ns_decls: Vec<(String, String)>,
}

impl Element {
    /// The value of the unqualified attribute `local`.
    #[must_use]
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name.ns.is_empty() && a.name.local == local)
            .map(|a| a.value.as_str())
    }
}

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Element(Element),
    /// Character data (CDATA sections included), entities expanded, line ends normalised.
    Text(String),
    Comment(String),
}

/// A node with its place in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    pub parent: Option<NodeId>,
    pub children: Vec<NodeId>,
}

/// A parsed document: nodes in document order, the root element first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    nodes: Vec<Node>,
}

impl Document {
    /// The root element.
    #[must_use]
    pub fn root(&self) -> NodeId {
        0
    }

    /// A node.
    ///
    /// # Panics
    /// When `id` does not come from this document.
    #[must_use]
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// The element at `id`, if it is one.
    #[must_use]
    pub fn element(&self, id: NodeId) -> Option<&Element> {
        match &self.nodes.get(id)?.kind {
            NodeKind::Element(e) => Some(e),
            _ => None,
        }
    }

    /// Number of nodes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true for a parsed document (it has a root).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every element id in document order.
    pub fn elements(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.nodes.len()).filter(|&i| matches!(self.nodes[i].kind, NodeKind::Element(_)))
    }

    /// The child elements of `id`.
    pub fn child_elements(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes[id]
            .children
            .iter()
            .copied()
            .filter(|&c| matches!(self.nodes[c].kind, NodeKind::Element(_)))
    }

    /// The child elements of `id` named `{ns}local`.
    pub fn children_named<'a>(
        &'a self,
        id: NodeId,
        ns: &'a str,
        local: &'a str,
    ) -> impl Iterator<Item = NodeId> + 'a {
        self.child_elements(id)
            .filter(move |&c| self.element(c).is_some_and(|e| e.name.is(ns, local)))
    }

    /// True when `ancestor` is `id` or one of its ancestors.
    #[must_use]
    pub fn is_within(&self, id: NodeId, ancestor: NodeId) -> bool {
        let mut at = Some(id);
        while let Some(n) = at {
            if n == ancestor {
                return true;
            }
            at = self.nodes[n].parent;
        }
        false
    }

    /// The text directly inside `id`, its text children concatenated; comments between
    /// them are skipped, so `a<!---->b` reads `ab`. `None` when `id` has child elements.
    #[must_use]
    pub fn text_content(&self, id: NodeId) -> Option<String> {
        let mut out = String::new();
        for &c in &self.nodes[id].children {
            match &self.nodes[c].kind {
                NodeKind::Text(t) => out.push_str(t),
                NodeKind::Comment(_) => {}
                NodeKind::Element(_) => return None,
            }
        }
        Some(out)
    }

    /// The namespaces in scope at element `id`: (prefix, URI), nearest declaration wins,
    /// undeclarations (`xmlns=""`) dropped, sorted by prefix. The `xml` prefix is implicit
    /// and not listed.
    #[must_use]
    pub fn in_scope_namespaces(&self, id: NodeId) -> Vec<(String, String)> {
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut at = Some(id);
        while let Some(n) = at {
            if let NodeKind::Element(e) = &self.nodes[n].kind {
                for (p, u) in &e.ns_decls {
                    if !seen.iter().any(|(sp, _)| sp == p) {
                        seen.push((p.clone(), u.clone()));
                    }
                }
            }
            at = self.nodes[n].parent;
        }
        seen.retain(|(_, u)| !u.is_empty());
        seen.sort();
        seen
    }

    /// The URI `prefix` resolves to at element `id` (`""` prefix: the default namespace).
    #[must_use]
    pub fn lookup_namespace(&self, id: NodeId, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(XML_NS);
        }
        let mut at = Some(id);
        while let Some(n) = at {
            if let NodeKind::Element(e) = &self.nodes[n].kind {
                if let Some((_, u)) = e.ns_decls.iter().find(|(p, _)| p == prefix) {
                    return if u.is_empty() { None } else { Some(u) };
                }
            }
            at = self.nodes[n].parent;
        }
        None
    }
}

/// Parses `input` into a [`Document`] under `limits`.
///
/// # Errors
/// An [`XmlError`] naming the first thing refused.
pub fn parse(input: &[u8], limits: &XmlLimits) -> Result<Document, XmlError> {
    if input.len() > limits.max_bytes {
        return Err(XmlError::TooLarge {
            size: input.len(),
            limit: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(input).map_err(|_| XmlError::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Builder::new(limits).run(text)
}

struct Builder<'l> {
    limits: &'l XmlLimits,
    nodes: Vec<Node>,
    /// Open elements, innermost last.
    open: Vec<NodeId>,
    /// The root element has been closed.
    done: bool,
    /// Text being gathered (text, references and CDATA merge into one node).
    pending_text: String,
    seen_anything: bool,
}

impl<'l> Builder<'l> {
    fn new(limits: &'l XmlLimits) -> Self {
        Builder {
            limits,
            nodes: Vec::new(),
            open: Vec::new(),
            done: false,
            pending_text: String::new(),
            seen_anything: false,
        }
    }

    fn run(mut self, text: &str) -> Result<Document, XmlError> {
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        loop {
            let event = reader
                .read_event()
                .map_err(|e| XmlError::Malformed(e.to_string()))?;
            let first = !self.seen_anything;
            self.seen_anything = true;
            match event {
                Event::Decl(d) => {
                    if !first {
                        return Err(XmlError::Malformed("misplaced XML declaration".into()));
                    }
                    if let Some(enc) = d.encoding() {
                        let enc = enc.map_err(|e| XmlError::Malformed(e.to_string()))?;
                        if !enc.eq_ignore_ascii_case("utf-8") {
                            return Err(XmlError::UnsupportedEncoding(enc.into_owned()));
                        }
                    }
                }
                Event::DocType(_) => return Err(XmlError::Doctype),
                Event::PI(_) => return Err(XmlError::ProcessingInstruction),
                Event::Start(s) => self.start(&s, false)?,
                Event::Empty(s) => self.start(&s, true)?,
                Event::End(_) => self.end()?,
                Event::Text(t) => self.text(&t.xml10_content())?,
                Event::CData(c) => self.text(&c.xml10_content())?,
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c,
                        Ok(None) => predefined_entity(&r)
                            .ok_or_else(|| XmlError::UnknownEntity(truncate(&r, 32)))?,
                        Err(e) => return Err(XmlError::Malformed(e.to_string())),
                    };
                    check_char(resolved)?;
                    let mut buf = [0u8; 4];
                    self.text(resolved.encode_utf8(&mut buf))?;
                }
                Event::Comment(c) => {
                    let content = c.xml10_content().into_owned();
                    if self.open.is_empty() {
                        // Comments outside the root element play no part in a signed subtree.
                        continue;
                    }
                    self.flush_text()?;
                    self.push(NodeKind::Comment(content))?;
                }
                Event::Eof => break,
            }
        }
        if !self.open.is_empty() {
            return Err(XmlError::Malformed("unclosed element".into()));
        }
        if self.nodes.is_empty() {
            return Err(XmlError::NoRoot);
        }
        Ok(Document { nodes: self.nodes })
    }

    fn push(&mut self, kind: NodeKind) -> Result<NodeId, XmlError> {
        if self.nodes.len() >= self.limits.max_nodes {
            return Err(XmlError::TooManyNodes(self.limits.max_nodes));
        }
        let id = self.nodes.len();
        let parent = self.open.last().copied();
        self.nodes.push(Node {
            kind,
            parent,
            children: Vec::new(),
        });
        if let Some(p) = parent {
            self.nodes[p].children.push(id);
        }
        Ok(id)
    }

    fn text(&mut self, s: &str) -> Result<(), XmlError> {
        if self.open.is_empty() {
            if s.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) {
                return Ok(());
            }
            return Err(XmlError::ContentOutsideRoot);
        }
        if let Some(c) = s.chars().find(|&c| !is_xml_char(c)) {
            return Err(XmlError::Malformed(format!(
                "character U+{:04X} is not allowed",
                u32::from(c)
            )));
        }
        self.pending_text.push_str(s);
        Ok(())
    }

    fn flush_text(&mut self) -> Result<(), XmlError> {
        if !self.pending_text.is_empty() {
            let t = std::mem::take(&mut self.pending_text);
            self.push(NodeKind::Text(t))?;
        }
        Ok(())
    }

    fn start(&mut self, s: &BytesStart<'_>, empty: bool) -> Result<(), XmlError> {
        if self.done {
            return Err(XmlError::ContentOutsideRoot);
        }
        self.flush_text()?;
        if self.open.len() >= self.limits.max_depth {
            return Err(XmlError::TooDeep(self.limits.max_depth));
        }
        let mut ns_decls: Vec<(String, String)> = Vec::new();
        let mut raw_attrs: Vec<(String, String)> = Vec::new();
        let mut count = 0usize;
        for attr in s.attributes().with_checks(true) {
            let attr: QAttribute<'_> = attr.map_err(|e| XmlError::Malformed(e.to_string()))?;
            count += 1;
            if count > self.limits.max_attributes {
                return Err(XmlError::TooManyAttributes(self.limits.max_attributes));
            }
            let key: &str = attr.key.as_ref();
            let value = attribute_value(&attr.value)?;
            if key == "xmlns" {
                if value == XML_NS || value == XMLNS_NS {
                    return Err(XmlError::BadNamespaceDeclaration(String::new()));
                }
                ns_decls.push((String::new(), value));
            } else if let Some(prefix) = key.strip_prefix("xmlns:") {
                check_ncname(prefix)?;
                let bad_xml = prefix == "xml" && value != XML_NS;
                if value.is_empty()
                    || prefix == "xmlns"
                    || bad_xml
                    || (prefix != "xml" && (value == XML_NS || value == XMLNS_NS))
                {
                    return Err(XmlError::BadNamespaceDeclaration(prefix.to_string()));
                }
                if prefix != "xml" {
                    ns_decls.push((prefix.to_string(), value));
                }
            } else {
                raw_attrs.push((key.to_string(), value));
            }
        }
        // Resolve names against the declarations of this element and its ancestors.
        let qname = s.name();
        let (prefix, local) = split_qname(qname.as_ref())?;
        let parent = self.open.last().copied();
        let resolve = |p: &str, is_attr: bool| -> Result<String, XmlError> {
            if is_attr && p.is_empty() {
                return Ok(String::new());
            }
            if p == "xml" {
                return Ok(XML_NS.to_string());
            }
            if let Some((_, u)) = ns_decls.iter().find(|(dp, _)| dp == p) {
                if u.is_empty() && !p.is_empty() {
                    return Err(XmlError::UndeclaredPrefix(p.to_string()));
                }
                return Ok(u.clone());
            }
            let found = parent.and_then(|pid| self.lookup(pid, p));
            match found {
                Some(u) => Ok(u),
                None if p.is_empty() => Ok(String::new()),
                None => Err(XmlError::UndeclaredPrefix(truncate(p, 32))),
            }
        };
        let name = Name {
            ns: resolve(prefix, false)?,
            prefix: prefix.to_string(),
            local: local.to_string(),
        };
        let mut attributes: Vec<Attribute> = Vec::with_capacity(raw_attrs.len());
        for (key, value) in raw_attrs {
            let (p, l) = split_qname(&key)?;
            let attr_name = Name {
                ns: resolve(p, true)?,
                prefix: p.to_string(),
                local: l.to_string(),
            };
            if attributes
                .iter()
                .any(|a| a.name.ns == attr_name.ns && a.name.local == attr_name.local)
            {
                return Err(XmlError::DuplicateAttribute(truncate(&key, 64)));
            }
            attributes.push(Attribute {
                name: attr_name,
                value,
            });
        }
        let id = self.push(NodeKind::Element(Element {
            name,
            attributes,
            ns_decls,
        }))?;
        if empty {
            if self.open.is_empty() {
                self.done = true;
            }
        } else {
            self.open.push(id);
        }
        Ok(())
    }

    fn lookup(&self, from: NodeId, prefix: &str) -> Option<String> {
        let mut at = Some(from);
        while let Some(n) = at {
            if let NodeKind::Element(e) = &self.nodes[n].kind {
                if let Some((_, u)) = e.ns_decls.iter().find(|(p, _)| p == prefix) {
                    return if u.is_empty() { None } else { Some(u.clone()) };
                }
            }
            at = self.nodes[n].parent;
        }
        None
    }

    fn end(&mut self) -> Result<(), XmlError> {
        self.flush_text()?;
        if self.open.pop().is_none() {
            return Err(XmlError::Malformed("unexpected end tag".into()));
        }
        if self.open.is_empty() {
            self.done = true;
        }
        Ok(())
    }
}

fn predefined_entity(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => return None,
    })
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn check_char(c: char) -> Result<(), XmlError> {
    if is_xml_char(c) {
        Ok(())
    } else {
        Err(XmlError::Malformed(format!(
            "character reference to U+{:04X} is not allowed",
            u32::from(c)
        )))
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn check_ncname(s: &str) -> Result<(), XmlError> {
    let mut chars = s.chars();
    let ok = match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => chars.all(|c| {
            c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '\u{B7}') || (c as u32) > 0x7f
        }),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(XmlError::BadName(truncate(s, 64)))
    }
}

fn split_qname(q: &str) -> Result<(&str, &str), XmlError> {
    match q.split_once(':') {
        Some((p, l)) => {
            check_ncname(p)?;
            check_ncname(l)?;
            Ok((p, l))
        }
        None => {
            check_ncname(q)?;
            Ok(("", q))
        }
    }
}

/// Expands references in a raw attribute value and applies attribute-value normalisation
/// (literal tab, CR, LF and CRLF become one space each; characters from references stay).
fn attribute_value(raw: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find(['&', '\t', '\n', '\r', '<']) {
        out.push_str(&rest[..pos]);
        let c = rest.as_bytes()[pos];
        rest = &rest[pos + 1..];
        match c {
            b'&' => {
                let end = rest
                    .find(';')
                    .ok_or_else(|| XmlError::Malformed("unterminated reference".into()))?;
                let name = &rest[..end];
                rest = &rest[end + 1..];
                let ch = if let Some(num) = name.strip_prefix('#') {
                    let code = match num.strip_prefix('x') {
                        Some(hex) => u32::from_str_radix(hex, 16),
                        None => num.parse::<u32>(),
                    }
                    .map_err(|_| XmlError::Malformed("bad character reference".into()))?;
                    if num.starts_with('+') || num.starts_with("x+") {
                        return Err(XmlError::Malformed("bad character reference".into()));
                    }
                    char::from_u32(code)
                        .ok_or_else(|| XmlError::Malformed("bad character reference".into()))?
                } else {
                    predefined_entity(name)
                        .ok_or_else(|| XmlError::UnknownEntity(truncate(name, 32)))?
                };
                check_char(ch)?;
                out.push(ch);
            }
            b'<' => return Err(XmlError::Malformed("'<' in an attribute value".into())),
            b'\r' => {
                if rest.starts_with('\n') {
                    rest = &rest[1..];
                }
                out.push(' ');
            }
            _ => out.push(' '),
        }
    }
    out.push_str(rest);
    if let Some(c) = out.chars().find(|&c| !is_xml_char(c)) {
        return Err(XmlError::Malformed(format!(
            "character U+{:04X} is not allowed",
            u32::from(c)
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Document, XmlError> {
        parse(s.as_bytes(), &XmlLimits::default())
    }

    #[test]
    fn namespaces_resolve_and_undeclared_prefixes_are_refused() {
        let d = p(r#"<a:r xmlns:a="urn:a" xmlns="urn:d"><b a:x="1" y="2"/></a:r>"#).unwrap();
        let r = d.element(0).unwrap();
        assert!(r.name.is("urn:a", "r"));
        let b = d.element(1).unwrap();
        assert!(b.name.is("urn:d", "b"));
        assert_eq!(b.attributes[0].name.ns, "urn:a");
        assert_eq!(b.attributes[1].name.ns, "");
        assert_eq!(
            d.in_scope_namespaces(1),
            vec![("".into(), "urn:d".into()), ("a".into(), "urn:a".into())]
        );
        assert_eq!(p("<x:r/>"), Err(XmlError::UndeclaredPrefix("x".into())));
        assert_eq!(
            p(r#"<r xmlns:x="urn:x"><x:a/></r><x:b/>"#).unwrap_err(),
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
        assert_eq!(
            p("<r><?pi x?></r>"),
            Err(XmlError::ProcessingInstruction)
        );
        assert!(p("<?xml version=\"1.0\" encoding=\"UTF-8\"?><r/>").is_ok());
        assert_eq!(
            p("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><r/>"),
            Err(XmlError::UnsupportedEncoding("ISO-8859-1".into()))
        );
        assert!(matches!(p("<r>&#0;</r>"), Err(XmlError::Malformed(_))));
    }

    #[test]
    fn text_references_cdata_and_comments() {
        let d = p("<r>a&amp;b&#x41;<![CDATA[<&>]]>c\r\nd<!--k-->e</r>").unwrap();
        assert_eq!(d.node(1).kind, NodeKind::Text("a&bA<&>c\nd".into()));
        assert_eq!(d.node(2).kind, NodeKind::Comment("k".into()));
        assert_eq!(d.text_content(0).as_deref(), Some("a&bA<&>c\nde"));
        let d = p("<r a=\"x\ty&#9;z\r\nw\"/>").unwrap();
        assert_eq!(d.element(0).unwrap().attr("a"), Some("x y\tz w"));
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
}
