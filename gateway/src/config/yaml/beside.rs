//! Keys written beside an externally tagged enum's key, in the same mapping (see
//! [`BESIDE_KIND_NAME`]): `- require_api_key: {...}` with `mode: shadow` under it. The
//! struct's own fields are read from their keys; every other key of the mapping is handed,
//! as one mapping that keeps its positions, to the field renamed [`KIND_FIELD`], so the
//! enum reports an unknown or a second kind exactly as it would alone.

#[allow(clippy::wildcard_imports)]
use super::*;

impl<'a> De<'a> {
    /// A struct read by [`BESIDE_KIND_NAME`]: `fields` (less [`KIND_FIELD`]) from their
    /// keys, the rest of the mapping as the [`KIND_FIELD`] value.
    pub(super) fn beside_kind<'de, V: Visitor<'de>>(
        &self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let own = |key: &Node| {
            let text = key_text(key);
            text != KIND_FIELD && fields.contains(&text)
        };
        let siblings: Vec<&(Node, Node)> = match &self.node.kind {
            NodeKind::Map(pairs) => pairs.iter().filter(|(k, _)| own(k)).collect(),
            _ => Vec::new(),
        };
        // Without siblings the kind is the node itself (a scalar too, which the enum then
        // explains); with them, the same mapping less those keys.
        let less_siblings;
        let rest = match &self.node.kind {
            NodeKind::Map(pairs) if !siblings.is_empty() => {
                less_siblings = Node {
                    loc: self.node.loc,
                    kind: NodeKind::Map(pairs.iter().filter(|(k, _)| !own(k)).cloned().collect()),
                };
                &less_siblings
            }
            _ => self.node,
        };
        visitor.visit_map(BesideKindDe {
            siblings,
            index: 0,
            rest,
            path: self.path,
        })
    }
}

struct BesideKindDe<'a> {
    siblings: Vec<&'a (Node, Node)>,
    index: usize,
    rest: &'a Node,
    path: &'a Path<'a>,
}

impl<'de> MapAccess<'de> for BesideKindDe<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.siblings.get(self.index) {
            Some((key, _)) => {
                let path = Path::Key(self.path, key_text(key));
                seed.deserialize(De::new(key, &path))
                    .map(Some)
                    .map_err(|e| e.attach(key.loc, &path))
            }
            None if self.index == self.siblings.len() => {
                let key: de::value::StrDeserializer<'_, Error> = KIND_FIELD.into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let index = self.index;
        self.index += 1;
        match self.siblings.get(index) {
            Some((key, value)) => {
                let path = Path::Key(self.path, key_text(key));
                seed.deserialize(De::new(value, &path))
                    .map_err(|e| e.attach(value.loc, &path))
            }
            None => seed
                .deserialize(De::new(self.rest, self.path))
                .map_err(|e| e.attach(self.rest.loc, self.path)),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.siblings.len() + 1 - self.index.min(self.siblings.len() + 1))
    }
}
