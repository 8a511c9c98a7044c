//! Size caps enforced *while* deserializing, not after.
//!
//! YAML aliases let a 1 MiB manifest describe far more data than it holds: an anchored 500 KiB
//! string referenced 100,000 times from a list would be copied 100,000 times by a plain
//! `Vec<String>`. serde_yaml_ng bounds nesting and the number of alias expansions, but not the
//! size of what each expansion copies. So every list of the manifest is read through these
//! helpers, which stop at a maximum number of entries, a maximum length per string and a
//! maximum total, before allocating more. Single (non-list) fields appear a fixed number of
//! times in the schema, so each is already bounded by the manifest's own size.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// The total bytes of strings one list may hold. Without aliases no list can exceed the
/// manifest itself, so this never refuses a manifest that does not use aliases.
const MAX_LIST_BYTES: usize = crate::MAX_MANIFEST_BYTES;

/// A string of at most `.0` bytes.
struct BoundedStr(usize);

impl<'de> Visitor<'de> for BoundedStr {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string of at most {} bytes", self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if v.len() > self.0 {
            return Err(E::custom(format_args!(
                "a string of {} bytes is longer than the limit of {} bytes",
                v.len(),
                self.0
            )));
        }
        Ok(v.to_owned())
    }
}

impl<'de> DeserializeSeed<'de> for BoundedStr {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

/// A string field of at most `MAX` bytes.
pub(crate) fn string<'de, D: Deserializer<'de>, const MAX: usize>(
    d: D,
) -> Result<String, D::Error> {
    BoundedStr(MAX).deserialize(d)
}

/// An optional string field of at most `MAX` bytes. Use with `#[serde(default)]`.
pub(crate) fn opt_string<'de, D: Deserializer<'de>, const MAX: usize>(
    d: D,
) -> Result<Option<String>, D::Error> {
    d.deserialize_option(OptionOf(BoundedStr(MAX)))
}

/// A list of at most `MAX_ITEMS` strings of at most `MAX_LEN` bytes each.
pub(crate) fn strings<'de, D: Deserializer<'de>, const MAX_ITEMS: usize, const MAX_LEN: usize>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    d.deserialize_seq(StringList {
        max_items: MAX_ITEMS,
        max_len: MAX_LEN,
    })
}

/// An optional list of strings (see [`strings`]). Use with `#[serde(default)]`.
pub(crate) fn opt_strings<
    'de,
    D: Deserializer<'de>,
    const MAX_ITEMS: usize,
    const MAX_LEN: usize,
>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    d.deserialize_option(OptionOf(StringList {
        max_items: MAX_ITEMS,
        max_len: MAX_LEN,
    }))
}

/// A list of at most `MAX_ITEMS` values of `T`. `T`'s own string fields must be bounded.
pub(crate) fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>, const MAX_ITEMS: usize>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(List {
        max_items: MAX_ITEMS,
        marker: PhantomData,
    })
}

struct StringList {
    max_items: usize,
    max_len: usize,
}

impl<'de> Visitor<'de> for StringList {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        let mut total = 0usize;
        while let Some(item) = seq.next_element_seed(BoundedStr(self.max_len))? {
            if out.len() == self.max_items {
                return Err(too_many(self.max_items));
            }
            total = total.saturating_add(item.len());
            if total > MAX_LIST_BYTES {
                return Err(de::Error::custom(format_args!(
                    "the list's strings add up to more than {MAX_LIST_BYTES} bytes"
                )));
            }
            out.push(item);
        }
        Ok(out)
    }
}

impl<'de> DeserializeSeed<'de> for StringList {
    type Value = Vec<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_seq(self)
    }
}

struct List<T> {
    max_items: usize,
    marker: PhantomData<fn() -> T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for List<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<T>()? {
            if out.len() == self.max_items {
                return Err(too_many(self.max_items));
            }
            out.push(item);
        }
        Ok(out)
    }
}

fn too_many<E: de::Error>(max: usize) -> E {
    E::custom(format_args!("the list has more than {max} entries"))
}

/// Wraps a seed so that YAML `null` (or an absent value) gives `None`.
struct OptionOf<S>(S);

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for OptionOf<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an optional value")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}
