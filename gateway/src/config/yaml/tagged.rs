//! Internally tagged enums read with positions kept (see [`TAGGED_PREFIX`]): the tag's value
//! names the variant, and the same mapping, less the tag, holds the variant's options.

#[allow(clippy::wildcard_imports)]
use super::*;

impl<'a> De<'a> {
    /// An internally tagged enum (see [`TAGGED_PREFIX`]): `tag`'s value names the variant,
    /// the mapping itself (less the tag) is the variant's content.
    pub(super) fn tagged_enum<'de, V: Visitor<'de>>(
        &self,
        tag: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let NodeKind::Map(pairs) = &self.node.kind else {
            return Err(self.mismatch("a mapping"));
        };
        let Some((tag_node, variant_node)) = pairs.iter().find(|(k, _)| key_text(k) == tag) else {
            return Err(self.err(format!("missing field \"{tag}\"")));
        };
        visitor.visit_enum(TaggedEnumDe {
            tag_node,
            variant_node,
            mapping: self.node,
            tag,
            path: self.path,
        })
    }
}

pub(super) struct TaggedEnumDe<'a> {
    tag_node: &'a Node,
    variant_node: &'a Node,
    mapping: &'a Node,
    tag: &'static str,
    path: &'a Path<'a>,
}

impl<'de, 'a> EnumAccess<'de> for TaggedEnumDe<'a> {
    type Error = Error;
    type Variant = TaggedVariantDe<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let path = Path::Key(self.path, key_text(self.tag_node));
        let variant = seed
            .deserialize(De::new(self.variant_node, &path))
            .map_err(|e| e.attach(self.variant_node.loc, &path))?;
        Ok((
            variant,
            TaggedVariantDe {
                mapping: self.mapping,
                tag: self.tag,
                path: self.path,
            },
        ))
    }
}

pub(super) struct TaggedVariantDe<'a> {
    mapping: &'a Node,
    tag: &'static str,
    path: &'a Path<'a>,
}

impl TaggedVariantDe<'_> {
    fn content(&self) -> De<'_> {
        De {
            node: self.mapping,
            path: self.path,
            lenient: false,
            tag_key: Some(self.tag),
        }
    }
}

impl<'de> VariantAccess<'de> for TaggedVariantDe<'_> {
    type Error = Error;

    /// A variant without options: any key beside the tag is a mistake.
    fn unit_variant(self) -> Result<(), Error> {
        let NodeKind::Map(pairs) = &self.mapping.kind else {
            return Ok(());
        };
        match pairs.iter().find(|(k, _)| key_text(k) != self.tag) {
            None => Ok(()),
            Some((key, _)) => {
                let path = Path::Key(self.path, key_text(key));
                Err(Error {
                    loc: Some(key.loc),
                    path: path.render(),
                    message: format!(
                        "unknown field \"{}\": this {} takes no options",
                        key_text(key),
                        self.tag
                    ),
                })
            }
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self.content())
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.content().deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.content().deserialize_struct("", fields, visitor)
    }
}
