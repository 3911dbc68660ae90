//! XML canonicalisation of an element subtree, as XML-DSig computes digests and signs
//! `SignedInfo`: Exclusive XML Canonicalization 1.0 (`xml-exc-c14n#`, with or without
//! comments, with an InclusiveNamespaces PrefixList) and Canonical XML 1.0 (inclusive,
//! `REC-xml-c14n-20010315`), optionally leaving out one descendant (the enveloped
//! `ds:Signature`).
//!
//! The subtree is a whole-element node set (what a same-document reference selects), so
//! the rules reduce to: attributes in canonical order and escaping, empty elements as
//! start/end pairs, and namespace declarations emitted where the output needs them:
//! visibly utilised ones (exclusive) or all in-scope ones that differ from the output
//! parent's (inclusive).

use super::xml::{Document, Element, NodeId, NodeKind, XML_NS};

/// Exclusive C14N 1.0, comments omitted.
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// Exclusive C14N 1.0 with comments.
pub const EXC_C14N_WITH_COMMENTS: &str = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments";
/// Canonical XML 1.0 (inclusive), comments omitted.
pub const C14N_10: &str = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315";
/// Canonical XML 1.0 (inclusive) with comments.
pub const C14N_10_WITH_COMMENTS: &str =
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments";

/// A canonicalisation method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum C14nMethod {
    /// Exclusive C14N; `inclusive_prefixes` is the InclusiveNamespaces PrefixList
    /// (`"#default"` written as `""`).
    Exclusive {
        with_comments: bool,
        inclusive_prefixes: Vec<String>,
    },
    /// Canonical XML 1.0.
    Inclusive { with_comments: bool },
}

impl C14nMethod {
    /// Exclusive C14N without comments and without a prefix list.
    #[must_use]
    pub fn exclusive() -> Self {
        C14nMethod::Exclusive {
            with_comments: false,
            inclusive_prefixes: Vec::new(),
        }
    }

    /// The method an algorithm URI names, `None` for any other URI.
    #[must_use]
    pub fn from_uri(uri: &str, inclusive_prefixes: Vec<String>) -> Option<Self> {
        Some(match uri {
            EXC_C14N => C14nMethod::Exclusive {
                with_comments: false,
                inclusive_prefixes,
            },
            EXC_C14N_WITH_COMMENTS => C14nMethod::Exclusive {
                with_comments: true,
                inclusive_prefixes,
            },
            C14N_10 => C14nMethod::Inclusive {
                with_comments: false,
            },
            C14N_10_WITH_COMMENTS => C14nMethod::Inclusive {
                with_comments: true,
            },
            _ => return None,
        })
    }

    fn with_comments(&self) -> bool {
        match self {
            C14nMethod::Exclusive { with_comments, .. }
            | C14nMethod::Inclusive { with_comments } => *with_comments,
        }
    }

    /// The same method without comments: a same-document reference (`#id`) selects no
    /// comment nodes, whatever the transform says.
    #[must_use]
    pub fn without_comments(&self) -> Self {
        match self {
            C14nMethod::Exclusive {
                inclusive_prefixes, ..
            } => C14nMethod::Exclusive {
                with_comments: false,
                inclusive_prefixes: inclusive_prefixes.clone(),
            },
            C14nMethod::Inclusive { .. } => C14nMethod::Inclusive {
                with_comments: false,
            },
        }
    }
}

/// Canonicalises the subtree rooted at element `apex`, leaving out the subtree of
/// `exclude` (the enveloped signature) when given.
#[must_use]
pub fn canonicalize(
    doc: &Document,
    apex: NodeId,
    exclude: Option<NodeId>,
    method: &C14nMethod,
) -> Vec<u8> {
    let mut out = String::with_capacity(1024);
    let mut c = Canonicalizer {
        doc,
        exclude,
        method,
        out: &mut out,
    };
    // Nothing is rendered above the apex: the default namespace counts as empty.
    let rendered: Vec<(String, String)> = vec![(String::new(), String::new())];
    c.element(apex, &rendered, true);
    out.into_bytes()
}

struct Canonicalizer<'a> {
    doc: &'a Document,
    exclude: Option<NodeId>,
    method: &'a C14nMethod,
    out: &'a mut String,
}

impl Canonicalizer<'_> {
    fn element(&mut self, id: NodeId, rendered: &[(String, String)], apex: bool) {
        let Some(e) = self.doc.element(id) else {
            return;
        };
        let decls = self.namespaces_to_render(id, e, rendered);
        self.out.push('<');
        push_qname(self.out, &e.name.prefix, &e.name.local);
        for (prefix, uri) in &decls {
            if prefix.is_empty() {
                self.out.push_str(" xmlns=\"");
            } else {
                self.out.push_str(" xmlns:");
                self.out.push_str(prefix);
                self.out.push_str("=\"");
            }
            escape_attr(self.out, uri);
            self.out.push('"');
        }
        let mut attrs: Vec<(&str, &str, &str, &str)> = e
            .attributes
            .iter()
            .map(|a| {
                (
                    a.name.ns.as_str(),
                    a.name.local.as_str(),
                    a.name.prefix.as_str(),
                    a.value.as_str(),
                )
            })
            .collect();
        let inherited;
        if apex && matches!(self.method, C14nMethod::Inclusive { .. }) {
            // Canonical XML 1.0: xml:* attributes of ancestors are inherited by the apex.
            inherited = self.inherited_xml_attributes(id, e);
            attrs.extend(
                inherited
                    .iter()
                    .map(|(l, v)| (XML_NS, l.as_str(), "xml", v.as_str())),
            );
        }
        attrs.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (_, local, prefix, value) in attrs {
            self.out.push(' ');
            push_qname(self.out, prefix, local);
            self.out.push_str("=\"");
            escape_attr(self.out, value);
            self.out.push('"');
        }
        self.out.push('>');

        let mut now_rendered: Vec<(String, String)> = rendered.to_vec();
        for (p, u) in decls {
            match now_rendered.iter_mut().find(|(rp, _)| *rp == p) {
                Some(slot) => slot.1 = u,
                None => now_rendered.push((p, u)),
            }
        }
        for &child in &self.doc.node(id).children {
            if Some(child) == self.exclude {
                continue;
            }
            match &self.doc.node(child).kind {
                NodeKind::Element(_) => self.element(child, &now_rendered, false),
                NodeKind::Text(t) => escape_text(self.out, t),
                NodeKind::Comment(c) => {
                    if self.method.with_comments() {
                        self.out.push_str("<!--");
                        self.out.push_str(c);
                        self.out.push_str("-->");
                    }
                }
            }
        }
        self.out.push_str("</");
        push_qname(self.out, &e.name.prefix, &e.name.local);
        self.out.push('>');
    }

    /// The namespace declarations element `id` gets in the output, sorted by prefix.
    fn namespaces_to_render(
        &self,
        id: NodeId,
        e: &Element,
        rendered: &[(String, String)],
    ) -> Vec<(String, String)> {
        let rendered_as = |p: &str| -> Option<&str> {
            rendered
                .iter()
                .find(|(rp, _)| rp == p)
                .map(|(_, u)| u.as_str())
        };
        let mut out: Vec<(String, String)> = Vec::new();
        match self.method {
            C14nMethod::Inclusive { .. } => {
                for (p, u) in self.doc.in_scope_namespaces(id) {
                    if rendered_as(&p) != Some(u.as_str()) {
                        out.push((p, u));
                    }
                }
                // An undeclared default namespace under a rendered non-empty one.
                if self.doc.lookup_namespace(id, "").is_none()
                    && rendered_as("").is_some_and(|u| !u.is_empty())
                {
                    out.push((String::new(), String::new()));
                }
            }
            C14nMethod::Exclusive {
                inclusive_prefixes, ..
            } => {
                let mut used: Vec<&str> = vec![e.name.prefix.as_str()];
                for a in &e.attributes {
                    if !a.name.prefix.is_empty() {
                        used.push(a.name.prefix.as_str());
                    }
                }
                for p in inclusive_prefixes {
                    // Listed prefixes are treated as in inclusive C14N, when in scope.
                    if self.doc.lookup_namespace(id, p).is_some() || p.is_empty() {
                        used.push(p.as_str());
                    }
                }
                for p in used {
                    if p == "xml" || out.iter().any(|(op, _)| op == p) {
                        continue;
                    }
                    let uri = self.doc.lookup_namespace(id, p).unwrap_or("");
                    // The default namespace always has a rendered value (empty at the
                    // apex), so `xmlns=""` appears only under a non-empty default.
                    if rendered_as(p) != Some(uri) {
                        out.push((p.to_string(), uri.to_string()));
                    }
                }
            }
        }
        out.sort();
        out
    }

    fn inherited_xml_attributes(&self, id: NodeId, e: &Element) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = Vec::new();
        let mut at = self.doc.node(id).parent;
        while let Some(n) = at {
            if let Some(anc) = self.doc.element(n) {
                for a in &anc.attributes {
                    if a.name.ns == XML_NS
                        && !e
                            .attributes
                            .iter()
                            .any(|x| x.name.ns == XML_NS && x.name.local == a.name.local)
                        && !found.iter().any(|(l, _)| *l == a.name.local)
                    {
                        found.push((a.name.local.clone(), a.value.clone()));
                    }
                }
            }
            at = self.doc.node(n).parent;
        }
        found
    }
}

fn push_qname(out: &mut String, prefix: &str, local: &str) {
    if !prefix.is_empty() {
        out.push_str(prefix);
        out.push(':');
    }
    out.push_str(local);
}

/// C14N text escaping: `&`, `<`, `>` and carriage return.
pub fn escape_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(c),
        }
    }
}

/// C14N attribute-value escaping: `&`, `<`, `"`, tab, line feed and carriage return.
pub fn escape_attr(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
#[path = "c14n_tests.rs"]
mod tests;
