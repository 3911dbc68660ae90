//! The routes of one host group as a tree of path segments, so finding a request's route
//! costs one step per segment of the path, whatever the number of routes.
//!
//! Each node has its literal children (found by binary search, letters compared without
//! regard to case), at most one parameter child, and the routes that end there: exact ones,
//! prefixes that need more path (`/files/`), and plain prefixes. The search tries, at each
//! depth, the literal child, then the parameter child, then the prefixes ending there, and
//! backtracks when a subtree has no route for the request. That order *is* the precedence
//! (a literal segment beats a parameter, which beats the end of a prefix), so the first route
//! found whose conditions hold is the most specific one. A node is visited at most once per
//! request (its depth fixes the path segment it sees), so backtracking is bounded by the
//! tree's size.
//!
//! Literals are keyed case-folded so that one child serves both a case-sensitive and a
//! case-insensitive route; a case-sensitive route checks its literals exactly once found.

use std::cmp::Ordering;

use portcullis_assertions::VarId;

use super::conditions::{Conditions, RouteRequest};
use super::pattern::{path_segments, Pattern, Segment, Tail};
use crate::path::PathCase;

/// One route: where it goes and what it asks.
#[derive(Debug, Clone)]
pub struct Entry {
    pub service: usize,
    pub pattern: Pattern,
    pub conditions: Conditions,
    /// Each parameter's segment index and the variable (`path.NAME`) it sets.
    pub params: Box<[(usize, VarId)]>,
}

impl Entry {
    /// A route for any request under `prefix`, for tests.
    #[cfg(test)]
    #[must_use]
    pub fn prefix(service: usize, prefix: &str, case: PathCase) -> Entry {
        Entry {
            service,
            pattern: Pattern::parse(prefix, false, case).expect("a valid prefix"),
            conditions: Conditions::default(),
            params: Box::new([]),
        }
    }

    fn accepts(&self, request: &RouteRequest<'_>) -> bool {
        self.conditions.matches(request) && self.case_matches(request.path)
    }

    /// The tree compared literals without regard to case; a case-sensitive route also
    /// needs them exactly as written.
    fn case_matches(&self, path: &str) -> bool {
        if self.pattern.case == PathCase::Insensitive {
            return true;
        }
        self.pattern
            .segments
            .iter()
            .zip(path_segments(path))
            .all(|(segment, actual)| match segment {
                Segment::Literal(literal) => **literal == *actual,
                Segment::Param(_) => true,
            })
    }
}

#[derive(Debug, Default)]
struct Node {
    /// Case-folded literal and child node, sorted by the literal.
    literals: Vec<(Box<str>, usize)>,
    param: Option<usize>,
    /// Entry indices of the routes ending here, most specific conditions first.
    exact: Vec<usize>,
    prefix_with_more: Vec<usize>,
    prefix: Vec<usize>,
}

impl Node {
    fn literal_child(&self, segment: &str) -> Option<usize> {
        self.literals
            .binary_search_by(|(key, _)| compare_folded(key, segment))
            .ok()
            .map(|found| self.literals[found].1)
    }
}

/// `key` (already lower-case) against `segment` folded to lower case, without allocating.
fn compare_folded(key: &str, segment: &str) -> Ordering {
    key.bytes()
        .cmp(segment.bytes().map(|byte| byte.to_ascii_lowercase()))
}

#[derive(Debug)]
pub struct PathTree {
    nodes: Vec<Node>,
    entries: Vec<Entry>,
}

impl Default for PathTree {
    fn default() -> Self {
        PathTree {
            nodes: vec![Node::default()],
            entries: Vec::new(),
        }
    }
}

impl PathTree {
    pub fn insert(&mut self, entry: Entry) {
        let mut node = 0;
        for segment in &entry.pattern.segments {
            node = match segment {
                Segment::Literal(literal) => self.literal_child_or_new(node, literal),
                Segment::Param(_) => {
                    if let Some(child) = self.nodes[node].param {
                        child
                    } else {
                        let child = self.new_node();
                        self.nodes[node].param = Some(child);
                        child
                    }
                }
            };
        }
        let index = self.entries.len();
        let specificity = entry.conditions.specificity();
        let tail = entry.pattern.tail;
        self.entries.push(entry);
        let list = match tail {
            Tail::Exact => &mut self.nodes[node].exact,
            Tail::PrefixWithMore => &mut self.nodes[node].prefix_with_more,
            Tail::Prefix => &mut self.nodes[node].prefix,
        };
        // After every entry at least as specific, so equals keep their order.
        let position = list
            .iter()
            .position(|&other| self.entries[other].conditions.specificity() < specificity)
            .unwrap_or(list.len());
        list.insert(position, index);
    }

    fn new_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }

    fn literal_child_or_new(&mut self, node: usize, literal: &str) -> usize {
        let folded = literal.to_ascii_lowercase();
        match self.nodes[node]
            .literals
            .binary_search_by(|(key, _)| (**key).cmp(folded.as_str()))
        {
            Ok(found) => self.nodes[node].literals[found].1,
            Err(position) => {
                let child = self.new_node();
                self.nodes[node]
                    .literals
                    .insert(position, (folded.into_boxed_str(), child));
                child
            }
        }
    }

    /// The most specific route for the request, if any.
    pub fn find(&self, request: &RouteRequest<'_>) -> Option<&Entry> {
        let rest = request.path.strip_prefix('/').unwrap_or(request.path);
        let remaining = (!rest.is_empty()).then_some(rest);
        self.search(0, remaining, request)
    }

    /// `remaining`: the path after this node's segment, `None` when the path ends here.
    fn search(
        &self,
        node_index: usize,
        remaining: Option<&str>,
        request: &RouteRequest<'_>,
    ) -> Option<&Entry> {
        let node = &self.nodes[node_index];
        let Some(rest) = remaining else {
            return self
                .first_accepted(&node.exact, request)
                .or_else(|| self.first_accepted(&node.prefix, request));
        };
        let (segment, more) = match rest.split_once('/') {
            Some((segment, more)) => (segment, Some(more)),
            None => (rest, None),
        };
        if let Some(found) = node
            .literal_child(segment)
            .and_then(|child| self.search(child, more, request))
        {
            return Some(found);
        }
        if let Some(found) = node
            .param
            .filter(|_| !segment.is_empty())
            .and_then(|child| self.search(child, more, request))
        {
            return Some(found);
        }
        self.first_accepted(&node.prefix_with_more, request)
            .or_else(|| self.first_accepted(&node.prefix, request))
    }

    fn first_accepted(&self, list: &[usize], request: &RouteRequest<'_>) -> Option<&Entry> {
        list.iter()
            .map(|&index| &self.entries[index])
            .find(|entry| entry.accepts(request))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
        self.nodes.shrink_to_fit();
        for node in &mut self.nodes {
            node.literals.shrink_to_fit();
            node.exact.shrink_to_fit();
            node.prefix_with_more.shrink_to_fit();
            node.prefix.shrink_to_fit();
        }
    }
}
