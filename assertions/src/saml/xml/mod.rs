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
//!
//! `mod.rs` holds the tree and its navigation, `parse.rs` the parser, `tests.rs` its tests.

mod parse;

pub use parse::parse;

/// The namespace bound to the `xml` prefix by definition.
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace reserved for `xmlns` attributes.
pub(crate) const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

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
    pub(super) nodes: Vec<Node>,
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

    /// The text of every text node under `id`, in document order (comments skipped):
    /// the value of an element with element content, e.g. an `AttributeValue` holding a
    /// `NameID` (Shibboleth's eduPersonTargetedID).
    #[must_use]
    pub fn descendant_text(&self, id: NodeId) -> String {
        let mut out = String::new();
        let mut stack: Vec<NodeId> = self.nodes[id].children.iter().rev().copied().collect();
        while let Some(n) = stack.pop() {
            match &self.nodes[n].kind {
                NodeKind::Text(t) => out.push_str(t),
                NodeKind::Comment(_) => {}
                NodeKind::Element(_) => stack.extend(self.nodes[n].children.iter().rev()),
            }
        }
        out
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

#[cfg(test)]
mod tests;
