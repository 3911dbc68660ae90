//! The serde deserializer over [`Node`]s: scalars, sequences, maps, enums, and the
//! [`Spanned`] / [`Lenient`] wrappers.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn is_null(node: &Node) -> bool {
    matches!(&node.kind, NodeKind::Scalar { value, quoted: false } if is_null_text(value))
}

pub(super) fn is_null_text(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

pub(super) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Integer per the core schema: decimal with optional sign, `0x`, `0o`.
pub(super) fn parse_int(s: &str) -> Option<i128> {
    if let Some(hex) = s.strip_prefix("0x") {
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return i128::from_str_radix(hex, 16).ok();
        }
        return None;
    }
    if let Some(oct) = s.strip_prefix("0o") {
        if !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return i128::from_str_radix(oct, 8).ok();
        }
        return None;
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i128>().ok();
    }
    None
}

/// Float per the core schema (integers are accepted too).
pub(super) fn parse_float(s: &str) -> Option<f64> {
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    let negative = s.starts_with('-');
    match unsigned {
        ".inf" | ".Inf" | ".INF" => {
            return Some(if negative {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            })
        }
        ".nan" | ".NaN" | ".NAN" if unsigned.len() == s.len() => return Some(f64::NAN),
        _ => {}
    }
    // [0-9]* ( . [0-9]* )? ( [eE] [-+]? [0-9]+ )? with at least one mantissa digit
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((a, b)) => (a, b),
        None => (mantissa, ""),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !all_digits(int_part) || !all_digits(frac_part) {
        return None;
    }
    if let Some(exp) = exponent {
        let e = exp.strip_prefix(['-', '+']).unwrap_or(exp);
        if e.is_empty() || !all_digits(e) {
            return None;
        }
    }
    s.parse::<f64>().ok()
}

/// A lazily rendered path from the document root.
#[derive(Clone, Copy)]
pub(super) enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    pub(super) fn write(&self, out: &mut String) {
        match self {
            Path::Root => {}
            Path::Key(parent, key) => {
                parent.write(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Path::Index(parent, i) => {
                parent.write(out);
                out.push_str(&format!("[{i}]"));
            }
        }
    }
}

pub(super) fn key_text(node: &Node) -> &str {
    match &node.kind {
        NodeKind::Scalar { value, .. } => value,
        _ => "?",
    }
}

pub(super) struct De<'a> {
    pub(super) node: &'a Node,
    pub(super) path: &'a Path<'a>,
    /// Set for the deserializer handed to a `Lenient` visitor: an error is
    /// recorded in the sink and replaced by the recovery marker.
    pub(super) lenient: bool,
    /// The tag key of an internally tagged enum whose options this mapping holds: skipped,
    /// since it named the variant already.
    pub(super) tag_key: Option<&'static str>,
}

impl<'a> De<'a> {
    pub(super) fn new(node: &'a Node, path: &'a Path<'a>) -> Self {
        De {
            node,
            path,
            lenient: false,
            tag_key: None,
        }
    }

    pub(super) fn err(&self, message: impl Into<String>) -> Error {
        Error {
            loc: Some(self.node.loc),
            path: self.path.render(),
            message: message.into(),
        }
    }

    pub(super) fn finish<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        let r = r.map_err(|e| e.attach(self.node.loc, self.path));
        match r {
            Err(e) if self.lenient && !e.is_recovered_marker() => {
                push_error(e);
                Err(Error::msg(RECOVERED_MARKER))
            }
            other => other,
        }
    }

    pub(super) fn mismatch(&self, expected: &str) -> Error {
        self.err(format!(
            "expected {expected}, found {}",
            describe_node(self.node)
        ))
    }

    /// Scalar text usable as a string (null excluded).
    pub(super) fn text(&self, expected: &str) -> Result<&'a str, Error> {
        match &self.node.kind {
            NodeKind::Scalar { value, .. } if !is_null(self.node) => Ok(value),
            _ => Err(self.mismatch(expected)),
        }
    }

    pub(super) fn int<T: TryFrom<i128>>(&self, expected: &str) -> Result<T, Error> {
        let s = match &self.node.kind {
            NodeKind::Scalar { value, .. } if !is_null(self.node) => value.trim(),
            _ => return Err(self.mismatch(expected)),
        };
        let n =
            parse_int(s).ok_or_else(|| self.err(format!("expected {expected}, found {s:?}")))?;
        T::try_from(n).map_err(|_| self.err(format!("integer {s} is out of range for {expected}")))
    }

    pub(super) fn float(&self) -> Result<f64, Error> {
        let s = match &self.node.kind {
            NodeKind::Scalar { value, .. } if !is_null(self.node) => value.trim(),
            _ => return Err(self.mismatch("a number")),
        };
        parse_float(s).ok_or_else(|| self.err(format!("expected a number, found {s:?}")))
    }

    pub(super) fn any<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            NodeKind::Scalar {
                value,
                quoted: true,
            } => visitor.visit_str(value),
            NodeKind::Scalar { value, .. } => {
                if is_null_text(value) {
                    visitor.visit_unit()
                } else if let Some(b) = parse_bool(value) {
                    visitor.visit_bool(b)
                } else if let Some(n) = parse_int(value) {
                    if let Ok(n) = i64::try_from(n) {
                        visitor.visit_i64(n)
                    } else if let Ok(n) = u64::try_from(n) {
                        visitor.visit_u64(n)
                    } else {
                        visitor.visit_str(value)
                    }
                } else if let Some(f) = parse_float(value) {
                    visitor.visit_f64(f)
                } else {
                    visitor.visit_str(value)
                }
            }
            NodeKind::Seq(_) => self.seq(visitor),
            NodeKind::Map(_) => self.map(visitor),
        }
    }

    pub(super) fn seq<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            NodeKind::Seq(items) => {
                let mut access = SeqDe {
                    items,
                    index: 0,
                    path: self.path,
                };
                let v = visitor.visit_seq(&mut access)?;
                Ok(v)
            }
            _ => Err(self.mismatch("a list")),
        }
    }

    pub(super) fn map<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            NodeKind::Map(pairs) => visitor.visit_map(MapDe {
                pairs,
                index: 0,
                path: self.path,
                fields: None,
                skip_key: self.tag_key,
            }),
            _ => Err(self.mismatch("a mapping")),
        }
    }

    /// A struct: keys that name no field are reported (with a suggestion) and skipped, so
    /// the rest of the struct is still read and checked. Every spec type denies unknown
    /// fields, so this reports exactly what serde would, without stopping there.
    pub(super) fn struct_map<'de, V: Visitor<'de>>(
        &self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let NodeKind::Map(pairs) = &self.node.kind else {
            return Err(self.mismatch("a mapping"));
        };
        // Fields that a misspelt key was probably meant to be: their "missing field" error
        // would only repeat the "did you mean" already reported.
        let present = |f: &str| {
            pairs
                .iter()
                .any(|(k, _)| matches!(&k.kind, NodeKind::Scalar { value, .. } if value == f))
        };
        let typo_for: Vec<&str> = pairs
            .iter()
            .filter(|(k, _)| Some(key_text(k)) != self.tag_key)
            .filter_map(|(k, _)| match &k.kind {
                NodeKind::Scalar { value, .. } if !fields.contains(&value.as_str()) => {
                    suggest(value, fields)
                }
                _ => None,
            })
            .filter(|f| !present(f))
            .collect();
        let r = visitor.visit_map(MapDe {
            pairs,
            index: 0,
            path: self.path,
            fields: (!fields.is_empty()).then_some(fields),
            skip_key: self.tag_key,
        });
        match r {
            Err(e)
                if typo_for
                    .iter()
                    .any(|f| e.message == format!("missing field \"{f}\"")) =>
            {
                Err(Error::msg(RECOVERED_MARKER))
            }
            other => other,
        }
    }

    pub(super) fn lenient_newtype<'de, V: Visitor<'de>>(
        &self,
        visitor: V,
    ) -> Result<V::Value, Error> {
        STATE.with(|s| s.borrow_mut().lenient_active += 1);
        let inner = De {
            node: self.node,
            path: self.path,
            lenient: true,
            tag_key: None,
        };
        let r = visitor.visit_newtype_struct(inner);
        let pending = STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.lenient_active -= 1;
            s.pending.take()
        });
        if let Some(message) = pending {
            push_error(self.err(message));
        }
        r
    }

    pub(super) fn spanned<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(SpannedDe {
            de: De::new(self.node, self.path),
            stage: 0,
        })
    }

    pub(super) fn enum_<'de, V: Visitor<'de>>(
        &self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if let Some(tag) = name.strip_prefix(TAGGED_PREFIX) {
            return self.tagged_enum(tag, visitor);
        }
        let noun = enum_noun(name);
        match &self.node.kind {
            NodeKind::Scalar { .. } if !is_null(self.node) => visitor.visit_enum(EnumDe {
                key: self.node,
                value: None,
                path: self.path,
                noun,
            }),
            NodeKind::Map(pairs) if pairs.len() == 1 => {
                let (k, v) = &pairs[0];
                visitor.visit_enum(EnumDe {
                    key: k,
                    value: Some(v),
                    path: self.path,
                    noun,
                })
            }
            NodeKind::Map(pairs) => {
                let keys: Vec<&str> = pairs.iter().map(|(k, _)| key_text(k)).collect();
                Err(self.err(format!(
                    "expected a single key naming the {noun}, found {} keys{}{}",
                    pairs.len(),
                    if keys.is_empty() { "" } else { ": " },
                    keys.join(", ")
                )))
            }
            _ => Err(self.mismatch(&format!("the name of a {noun}"))),
        }
    }
}

macro_rules! forward_int {
    ($($method:ident $visit:ident $ty:ty, $expected:literal;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                let r = self.int::<$ty>($expected).and_then(|n| visitor.$visit(n));
                self.finish(r)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for De<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.any(visitor);
        self.finish(r)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.text("a boolean").and_then(|s| {
            parse_bool(s.trim())
                .ok_or_else(|| self.err(format!("expected a boolean, found {s:?}")))
                .and_then(|b| visitor.visit_bool(b))
        });
        self.finish(r)
    }

    forward_int! {
        deserialize_i8 visit_i8 i8, "a signed 8-bit integer";
        deserialize_i16 visit_i16 i16, "a signed 16-bit integer";
        deserialize_i32 visit_i32 i32, "a signed 32-bit integer";
        deserialize_i64 visit_i64 i64, "a signed 64-bit integer";
        deserialize_i128 visit_i128 i128, "a signed 128-bit integer";
        deserialize_u8 visit_u8 u8, "an unsigned 8-bit integer";
        deserialize_u16 visit_u16 u16, "an unsigned 16-bit integer";
        deserialize_u32 visit_u32 u32, "an unsigned 32-bit integer";
        deserialize_u64 visit_u64 u64, "an unsigned 64-bit integer";
        deserialize_u128 visit_u128 u128, "an unsigned 128-bit integer";
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.float().and_then(|f| visitor.visit_f32(f as f32));
        self.finish(r)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.float().and_then(|f| visitor.visit_f64(f));
        self.finish(r)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.text("a single character").and_then(|s| {
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => visitor.visit_char(c),
                _ => Err(self.err(format!("expected a single character, found {s:?}"))),
            }
        });
        self.finish(r)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.text("a string").and_then(|s| visitor.visit_str(s));
        self.finish(r)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self
            .text("a string")
            .and_then(|s| visitor.visit_bytes(s.as_bytes()));
        self.finish(r)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = if is_null(self.node) {
            visitor.visit_none()
        } else {
            visitor.visit_some(De::new(self.node, self.path))
        };
        self.finish(r)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = if is_null(self.node) {
            visitor.visit_unit()
        } else {
            Err(self.mismatch("null"))
        };
        self.finish(r)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let r = if name == LENIENT_NAME {
            self.lenient_newtype(visitor)
        } else {
            visitor.visit_newtype_struct(De::new(self.node, self.path))
        };
        self.finish(r)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.seq(visitor);
        self.finish(r)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = self.map(visitor);
        self.finish(r)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let r = if name == SPANNED_NAME {
            self.spanned(visitor)
        } else if name == BESIDE_KIND_NAME {
            self.beside_kind(fields, visitor)
        } else {
            self.struct_map(fields, visitor)
        };
        self.finish(r)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let r = self.enum_(name, visitor);
        self.finish(r)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = match &self.node.kind {
            NodeKind::Scalar { value, .. } => visitor.visit_str(value),
            _ => Err(self.mismatch("a name")),
        };
        self.finish(r)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = visitor.visit_unit();
        self.finish(r)
    }
}

pub(super) struct SeqDe<'a> {
    pub(super) items: &'a [Node],
    pub(super) index: usize,
    pub(super) path: &'a Path<'a>,
}

impl<'de> SeqAccess<'de> for SeqDe<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(node) = self.items.get(self.index) else {
            return Ok(None);
        };
        let path = Path::Index(self.path, self.index);
        self.index += 1;
        seed.deserialize(De::new(node, &path))
            .map(Some)
            .map_err(|e| e.attach(node.loc, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.index)
    }
}

pub(super) struct MapDe<'a> {
    pub(super) pairs: &'a [(Node, Node)],
    pub(super) index: usize,
    pub(super) path: &'a Path<'a>,
    /// For structs: the field names; other keys are reported and skipped.
    pub(super) fields: Option<&'static [&'static str]>,
    /// A key that is not part of this value (an internally tagged enum's tag).
    pub(super) skip_key: Option<&'static str>,
}

impl<'de> MapAccess<'de> for MapDe<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        // Past the keys that are not this value's: an internally tagged enum's tag (it named
        // the variant already), and for structs the keys that name no field (reported).
        let key = loop {
            let Some((key, _)) = self.pairs.get(self.index) else {
                return Ok(None);
            };
            if Some(key_text(key)) == self.skip_key {
                self.index += 1;
                continue;
            }
            match (self.fields, &key.kind) {
                (Some(fields), NodeKind::Scalar { value, .. })
                    if !fields.contains(&value.as_str()) =>
                {
                    let path = Path::Key(self.path, key_text(key));
                    push_error(
                        <Error as de::Error>::unknown_field(value, fields).attach(key.loc, &path),
                    );
                    self.index += 1;
                }
                _ => break key,
            }
        };
        let path = Path::Key(self.path, key_text(key));
        seed.deserialize(De::new(key, &path))
            .map(Some)
            .map_err(|e| e.attach(key.loc, &path))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((key, value)) = self.pairs.get(self.index) else {
            return Err(Error::msg("value requested past the end of a mapping"));
        };
        self.index += 1;
        let path = Path::Key(self.path, key_text(key));
        seed.deserialize(De::new(value, &path))
            .map_err(|e| e.attach(value.loc, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.pairs.len() - self.index)
    }
}

pub(super) struct EnumDe<'a> {
    pub(super) key: &'a Node,
    pub(super) value: Option<&'a Node>,
    pub(super) path: &'a Path<'a>,
    pub(super) noun: &'static str,
}

impl<'de, 'a> EnumAccess<'de> for EnumDe<'a> {
    type Error = Error;
    type Variant = VariantDe<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let path = Path::Key(self.path, key_text(self.key));
        STATE.with(|s| s.borrow_mut().enum_noun.push(self.noun));
        let r = seed.deserialize(De::new(self.key, &path));
        STATE.with(|s| s.borrow_mut().enum_noun.pop());
        let v = r.map_err(|e| e.attach(self.key.loc, &path))?;
        Ok((
            v,
            VariantDe {
                key: self.key,
                value: self.value,
                path: self.path,
            },
        ))
    }
}

pub(super) struct VariantDe<'a> {
    pub(super) key: &'a Node,
    pub(super) value: Option<&'a Node>,
    pub(super) path: &'a Path<'a>,
}

impl VariantDe<'_> {
    pub(super) fn with_value<T>(
        &self,
        f: impl FnOnce(De<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let path = Path::Key(self.path, key_text(self.key));
        match self.value {
            Some(node) => f(De::new(node, &path)).map_err(|e| e.attach(node.loc, &path)),
            None => Err(Error {
                loc: Some(self.key.loc),
                path: path.render(),
                message: format!(
                    "\"{}\" needs a value: write it as a mapping `{}: ...`",
                    key_text(self.key),
                    key_text(self.key)
                ),
            }),
        }
    }
}

impl<'de> VariantAccess<'de> for VariantDe<'_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.value {
            None => Ok(()),
            Some(node) if is_null(node) => Ok(()),
            Some(node) => {
                let path = Path::Key(self.path, key_text(self.key));
                Err(Error {
                    loc: Some(node.loc),
                    path: path.render(),
                    message: format!(
                        "\"{}\" takes no value, found {}",
                        key_text(self.key),
                        describe_node(node)
                    ),
                })
            }
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        self.with_value(|de| seed.deserialize(de))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.with_value(|de| de.deserialize_seq(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.with_value(|de| de.deserialize_map(visitor))
    }
}
