//! Positioned parsing: saphyr-parser events into a tree of [`Node`]s, with anchors, aliases
//! and the size and depth limits.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) enum Frame {
    Seq {
        loc: Location,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        loc: Location,
        anchor: usize,
        pairs: Vec<(Node, Node)>,
        key: Option<Node>,
        seen: HashMap<String, Location>,
    },
}

pub(super) struct Anchored {
    pub(super) node: Node,
    pub(super) size: usize,
    pub(super) depth: usize,
}

pub(super) struct Builder<'l> {
    pub(super) limits: &'l Limits,
    pub(super) stack: Vec<Frame>,
    pub(super) anchors: HashMap<usize, Anchored>,
    pub(super) total: usize,
    pub(super) root: Option<Node>,
}

pub(super) fn subtree_size(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 1,
        NodeKind::Seq(items) => 1 + items.iter().map(subtree_size).sum::<usize>(),
        NodeKind::Map(pairs) => {
            1 + pairs
                .iter()
                .map(|(k, v)| subtree_size(k) + subtree_size(v))
                .sum::<usize>()
        }
    }
}

pub(super) fn subtree_depth(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 0,
        NodeKind::Seq(items) => 1 + items.iter().map(subtree_depth).max().unwrap_or(0),
        NodeKind::Map(pairs) => {
            1 + pairs
                .iter()
                .map(|(k, v)| subtree_depth(k).max(subtree_depth(v)))
                .max()
                .unwrap_or(0)
        }
    }
}

impl Builder<'_> {
    pub(super) fn count(&mut self, n: usize, loc: Location) -> Result<(), Error> {
        self.total = self.total.saturating_add(n);
        if self.total > self.limits.max_nodes {
            return Err(Error::new(
                loc,
                format!(
                    "document too large after alias expansion (more than {} nodes)",
                    self.limits.max_nodes
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn open(&mut self, frame: Frame, loc: Location) -> Result<(), Error> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(Error::new(
                loc,
                format!(
                    "document nested too deeply (more than {} levels)",
                    self.limits.max_depth
                ),
            ));
        }
        self.count(1, loc)?;
        self.stack.push(frame);
        Ok(())
    }

    pub(super) fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    size: subtree_size(node),
                    depth: subtree_depth(node),
                },
            );
        }
    }

    pub(super) fn finish(&mut self, node: Node) -> Result<(), Error> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                pairs, key, seen, ..
            }) => {
                if let Some(k) = key.take() {
                    pairs.push((k, node));
                    return Ok(());
                }
                if let NodeKind::Scalar { value, quoted } = &node.kind {
                    if !quoted && value == "<<" {
                        return Err(Error::new(node.loc, "merge keys (<<) are not supported"));
                    }
                    if let Some(first) = seen.get(value) {
                        return Err(Error::new(
                            node.loc,
                            format!("duplicate key \"{value}\" (first at {first})"),
                        ));
                    }
                    seen.insert(value.clone(), node.loc);
                }
                *key = Some(node);
                Ok(())
            }
        }
    }

    pub(super) fn close(&mut self, loc: Location) -> Result<(), Error> {
        let (node, anchor) = match self.stack.pop() {
            Some(Frame::Seq { loc, anchor, items }) => (
                Node {
                    loc,
                    kind: NodeKind::Seq(items),
                },
                anchor,
            ),
            Some(Frame::Map {
                loc, anchor, pairs, ..
            }) => (
                Node {
                    loc,
                    kind: NodeKind::Map(pairs),
                },
                anchor,
            ),
            None => return Err(Error::new(loc, "unbalanced YAML events")),
        };
        self.remember(anchor, &node);
        self.finish(node)
    }
}

pub(super) fn check_tag(tag: Option<&saphyr_parser::Tag>, loc: Location) -> Result<bool, Error> {
    match tag {
        None => Ok(false),
        Some(t) if t.is_yaml_core_schema() => Ok(t.suffix == "str"),
        Some(_) => Err(Error::new(loc, "YAML tags are not supported")),
    }
}

/// Parses one YAML document into a located node tree.
pub fn parse(src: &str, limits: &Limits) -> Result<Node, Error> {
    let mut b = Builder {
        limits,
        stack: Vec::new(),
        anchors: HashMap::new(),
        total: 0,
        root: None,
    };
    let mut documents = 0usize;
    for item in Parser::new_from_str(src) {
        let (event, span) = item.map_err(|e| {
            Error::new(
                Location {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                },
                e.info().to_string(),
            )
        })?;
        let loc = Location::from_span(&span);
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(Error::new(
                        loc,
                        "only one YAML document is allowed per file",
                    ));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let forced_str = check_tag(tag.as_deref(), loc)?;
                b.count(1, loc)?;
                if b.stack.len() >= limits.max_depth {
                    return Err(Error::new(
                        loc,
                        format!(
                            "document nested too deeply (more than {} levels)",
                            limits.max_depth
                        ),
                    ));
                }
                let node = Node {
                    loc,
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        quoted: forced_str || style != ScalarStyle::Plain,
                    },
                };
                b.remember(anchor, &node);
                b.finish(node)?;
            }
            Event::SequenceStart(anchor, tag) => {
                check_tag(tag.as_deref(), loc)?;
                b.open(
                    Frame::Seq {
                        loc,
                        anchor,
                        items: Vec::new(),
                    },
                    loc,
                )?;
            }
            Event::MappingStart(anchor, tag) => {
                check_tag(tag.as_deref(), loc)?;
                b.open(
                    Frame::Map {
                        loc,
                        anchor,
                        pairs: Vec::new(),
                        key: None,
                        seen: HashMap::new(),
                    },
                    loc,
                )?;
            }
            Event::SequenceEnd | Event::MappingEnd => b.close(loc)?,
            Event::Alias(id) => {
                let Some(a) = b.anchors.get(&id) else {
                    return Err(Error::new(loc, "unknown alias"));
                };
                let (size, depth) = (a.size, a.depth);
                b.count(size, loc)?;
                if b.stack.len() + depth >= limits.max_depth {
                    return Err(Error::new(
                        loc,
                        format!(
                            "document nested too deeply (more than {} levels)",
                            limits.max_depth
                        ),
                    ));
                }
                let node = b.anchors.get(&id).map(|a| a.node.clone());
                if let Some(node) = node {
                    b.finish(node)?;
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    let empty = Node {
        loc: Location { line: 1, col: 1 },
        kind: NodeKind::Map(Vec::new()),
    };
    match b.root {
        None => Ok(empty),
        Some(node) if is_null(&node) => Ok(empty),
        Some(node) => Ok(node),
    }
}

// ---------------------------------------------------------------------------
// Scalar resolution (YAML 1.2 core schema)
// ---------------------------------------------------------------------------
