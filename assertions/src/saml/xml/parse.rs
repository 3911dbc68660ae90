//! The parser: quick-xml events to a [`Document`], refusing what a signed token has no
//! use for and enforcing the limits.

use quick_xml::events::attributes::Attribute as QAttribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::{
    Attribute, Document, Element, Name, Node, NodeId, NodeKind, XmlError, XmlLimits, XMLNS_NS,
    XML_NS,
};

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
            let event = reader.read_event().map_err(|e| malformed(&e))?;
            let first = !self.seen_anything;
            self.seen_anything = true;
            match event {
                Event::Decl(d) => {
                    if !first {
                        return Err(XmlError::Malformed("misplaced XML declaration".into()));
                    }
                    // XML 1.1 normalises line ends differently (NEL, LS): only 1.0.
                    if d.version().map_err(|e| malformed(&e))?.as_ref() != "1.0" {
                        return Err(XmlError::Malformed("only XML 1.0 is accepted".into()));
                    }
                    if let Some(enc) = d.encoding() {
                        let enc = enc.map_err(|e| malformed(&e))?;
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
                        Err(e) => return Err(malformed(&e)),
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
            let attr: QAttribute<'_> = attr.map_err(|e| malformed(&e))?;
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

/// A parser error as a bounded message (an error may quote a name of any length).
fn malformed(e: &dyn std::fmt::Display) -> XmlError {
    XmlError::Malformed(truncate(&e.to_string(), 160))
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
