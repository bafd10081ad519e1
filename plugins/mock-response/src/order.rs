//! The order of keys in the document as the gateway sent it. `serde_json`
//! maps (without `preserve_order`, which would change every crate of the
//! workspace) sort their keys, but "the first example" and "the first media
//! type" mean the first as written: this keeps the key order, and nothing
//! else, of one more parse of the document at configure.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// The shape of a JSON document: objects' keys in order, arrays' items.
#[derive(Debug, Default)]
pub enum Keys {
    /// An object.
    Map(Vec<(String, Keys)>),
    /// An array.
    List(Vec<Keys>),
    /// Anything else.
    #[default]
    Leaf,
}

impl Keys {
    /// The keys of the object at `pointer`, in document order.
    pub fn at(&self, pointer: &str) -> Vec<&str> {
        let mut node = self;
        for raw in pointer.split('/').skip(1) {
            let segment = raw.replace("~1", "/").replace("~0", "~");
            node = match node {
                Keys::Map(entries) => match entries.iter().find(|(k, _)| *k == segment) {
                    Some((_, child)) => child,
                    None => return Vec::new(),
                },
                Keys::List(items) => match segment.parse::<usize>().ok().and_then(|i| items.get(i))
                {
                    Some(child) => child,
                    None => return Vec::new(),
                },
                Keys::Leaf => return Vec::new(),
            };
        }
        match node {
            Keys::Map(entries) => entries.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Keys, E> {
                Ok(Keys::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Keys, E> {
                Ok(Keys::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Keys, E> {
                Ok(Keys::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Keys, E> {
                Ok(Keys::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<Keys, E> {
                Ok(Keys::Leaf)
            }
            fn visit_unit<E>(self) -> Result<Keys, E> {
                Ok(Keys::Leaf)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Keys, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Keys::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Keys>()? {
                    entries.push(entry);
                }
                Ok(Keys::Map(entries))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_order() {
        let k: Keys =
            serde_json::from_str(r#"{"a/b": {"z": 1, "y": [{"q": 1, "p": 2}], "x": 3}}"#).unwrap();
        assert_eq!(k.at("/a~1b"), ["z", "y", "x"]);
        assert_eq!(k.at("/a~1b/y/0"), ["q", "p"]);
        assert!(k.at("/nope").is_empty());
    }
}
