//! How [`Spanned`] and [`Lenient`] deserialize: a position beside the value, and an error
//! recorded instead of returned.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) struct SpannedDe<'a> {
    pub(super) de: De<'a>,
    pub(super) stage: usize,
}

impl<'de> MapAccess<'de> for SpannedDe<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match SPANNED_FIELDS.get(self.stage) {
            Some(name) => seed.deserialize(name.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let stage = self.stage;
        self.stage += 1;
        let loc = self.de.node.loc;
        match stage {
            0 => seed.deserialize((loc.line as u64).into_deserializer()),
            1 => seed.deserialize((loc.col as u64).into_deserializer()),
            _ => seed
                .deserialize(De::new(self.de.node, self.de.path))
                .map_err(|e| e.attach(loc, self.de.path)),
        }
    }
}

// ---------------------------------------------------------------------------
// Deserialize impls for the wrapper types
// ---------------------------------------------------------------------------

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpannedVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for SpannedVisitor<T> {
            type Value = Spanned<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value with its source location")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Spanned<T>, A::Error> {
                let mut line = None;
                let mut col = None;
                let mut value = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        SPANNED_LINE => line = Some(map.next_value::<u64>()?),
                        SPANNED_COL => col = Some(map.next_value::<u64>()?),
                        SPANNED_VALUE => value = Some(map.next_value::<T>()?),
                        other => {
                            return Err(de::Error::unknown_field(other, SPANNED_FIELDS));
                        }
                    }
                }
                let (Some(line), Some(col), Some(value)) = (line, col, value) else {
                    return Err(de::Error::custom(
                        "Spanned<T> can only be read by the Portcullis YAML deserializer",
                    ));
                };
                Ok(Spanned {
                    loc: Location {
                        line: usize::try_from(line).unwrap_or(usize::MAX),
                        col: usize::try_from(col).unwrap_or(usize::MAX),
                    },
                    value,
                })
            }
        }

        deserializer.deserialize_struct(
            SPANNED_NAME,
            SPANNED_FIELDS,
            SpannedVisitor(std::marker::PhantomData),
        )
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LenientVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for LenientVisitor<T> {
            type Value = Lenient<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }

            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Lenient<T>, D::Error> {
                match T::deserialize(deserializer) {
                    Ok(v) => Ok(Lenient(Some(v))),
                    Err(e) => {
                        let message = e.to_string();
                        if message == RECOVERED_MARKER {
                            // Already recorded, with its location, by our deserializer.
                            return Ok(Lenient(None));
                        }
                        let recorded = STATE.with(|s| {
                            let mut s = s.borrow_mut();
                            if s.lenient_active > 0 {
                                s.pending = Some(message);
                                true
                            } else {
                                false
                            }
                        });
                        if recorded {
                            Ok(Lenient(None))
                        } else {
                            Err(e)
                        }
                    }
                }
            }
        }

        deserializer
            .deserialize_newtype_struct(LENIENT_NAME, LenientVisitor(std::marker::PhantomData))
    }
}
