//! JSON Pointer (RFC 6901) edits on a JSON document that is parsed lazily.
//!
//! The document starts as one raw slice of the body. Only the containers an
//! edit walks through are parsed, one level at a time, into [`Node::Obj`] or
//! [`Node::Arr`] whose children stay raw slices. Serialising writes raw
//! slices back byte for byte, so whatever no edit touches keeps its exact
//! text (number formats, escapes, whitespace inside it), and memory grows
//! with the containers on the edit paths, not with the document.

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeSet;
use std::fmt;

/// The most reference tokens a pointer may have (edits walk and rebuild
/// the document that deep, recursively).
pub(crate) const MAX_TOKENS: usize = 64;

/// Parse a JSON Pointer into its unescaped reference tokens.
pub(crate) fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "{pointer:?} is not a JSON Pointer: it must be empty (the whole body) or start with \"/\""
        ));
    };
    if rest.split('/').count() > MAX_TOKENS {
        return Err(format!(
            "{pointer:?} is too deep: a pointer may have at most {MAX_TOKENS} reference tokens"
        ));
    }
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                match c {
                    '~' => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(format!(
                                "{pointer:?} is not a valid JSON Pointer: \"~\" must be followed \
                                 by \"0\" (for \"~\") or \"1\" (for \"/\")"
                            ))
                        }
                    },
                    c => out.push(c),
                }
            }
            Ok(out)
        })
        .collect()
}

/// An array index token: `0` or digits without a leading zero.
fn index(token: &str) -> Option<usize> {
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if valid {
        token.parse().ok()
    } else {
        None
    }
}

/// A JSON value, parsed only as far as needed. `'a` is the life of the body
/// and of the configuration, whose values are raw JSON too.
#[derive(Debug)]
pub(crate) enum Node<'a> {
    /// Not parsed: copied as is.
    Raw(&'a RawValue),
    /// An object whose members are unique (the last of duplicates wins).
    Obj(Vec<(String, Node<'a>)>),
    Arr(Vec<Node<'a>>),
}

/// Deserialises any value as an unparsed [`Node::Raw`].
impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(d).map(Node::Raw)
    }
}

/// The number of elements of an array or members of an object, counted
/// without keeping anything, so that the vector for them is allocated once
/// at its final size (a huge array on an edit path costs one node per
/// element, and growing by doubling would need half as much again).
struct Count;

impl<'de> Visitor<'de> for Count {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array or object")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

/// The elements of an array or the members of an object, each value
/// unparsed, in order, in a vector of `capacity`.
struct Entries {
    capacity: usize,
}

enum Parsed<'a> {
    Items(Vec<Node<'a>>),
    Members(Vec<(String, Node<'a>)>),
}

impl<'de> Visitor<'de> for Entries {
    type Value = Parsed<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array or object")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed<'de>, A::Error> {
        let mut items = Vec::with_capacity(self.capacity);
        while let Some(item) = seq.next_element::<Node<'de>>()? {
            items.push(item);
        }
        Ok(Parsed::Items(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed<'de>, A::Error> {
        let mut members = Vec::with_capacity(self.capacity);
        while let Some(member) = map.next_entry::<String, Node<'de>>()? {
            members.push(member);
        }
        Ok(Parsed::Members(members))
    }
}

/// Keep the last of members with the same name (as JavaScript does).
fn dedupe(mut members: Vec<(String, Node<'_>)>) -> Vec<(String, Node<'_>)> {
    if members.len() < 2 {
        return members;
    }
    let mut seen = BTreeSet::new();
    let keep: Vec<bool> = members
        .iter()
        .rev()
        .map(|(k, _)| seen.insert(k.as_str()))
        .collect();
    drop(seen);
    if keep.iter().all(|&k| k) {
        return members;
    }
    let mut keep = keep.into_iter().rev();
    members.retain(|_| keep.next().unwrap_or(true));
    members
}

impl<'a> Node<'a> {
    /// Parse one level of a container; scalars stay as they are.
    fn expand(&mut self) -> Result<(), serde_json::Error> {
        let Node::Raw(raw) = self else {
            return Ok(());
        };
        let text: &'a str = raw.get();
        if !text.starts_with(['{', '[']) {
            return Ok(());
        }
        // A little room for appends, so that adding to a huge array does
        // not double its vector.
        let capacity = serde_json::Deserializer::from_str(text).deserialize_any(Count)? + 8;
        *self =
            match serde_json::Deserializer::from_str(text).deserialize_any(Entries { capacity })? {
                Parsed::Items(items) => Node::Arr(items),
                Parsed::Members(members) => Node::Obj(dedupe(members)),
            };
        Ok(())
    }

    /// The node at `tokens`, creating missing object members (as empty
    /// objects) if `create`. `None` if the path cannot be followed.
    fn walk(
        &mut self,
        tokens: &[String],
        create: bool,
    ) -> Result<Option<&mut Node<'a>>, serde_json::Error> {
        let mut cur = self;
        for token in tokens {
            cur.expand()?;
            cur = match cur {
                Node::Obj(members) => match members.iter().position(|(k, _)| k == token) {
                    Some(i) => &mut members[i].1,
                    None if create => {
                        members.push((token.clone(), Node::Obj(Vec::new())));
                        &mut members.last_mut().expect("just pushed").1
                    }
                    None => return Ok(None),
                },
                Node::Arr(items) => match index(token).and_then(|i| items.get_mut(i)) {
                    Some(item) => item,
                    None => return Ok(None),
                },
                _ => return Ok(None),
            };
        }
        Ok(Some(cur))
    }

    /// Put `value` at `tokens`: replace an existing member or element, add a
    /// member, or append to an array (index `-` or the array's length).
    /// Missing objects on the way are created. Gives the value back if it
    /// cannot be placed (a scalar or an out-of-range index on the way).
    pub(crate) fn set(
        &mut self,
        tokens: &[String],
        value: Node<'a>,
    ) -> Result<Result<(), Node<'a>>, serde_json::Error> {
        let Some((last, parents)) = tokens.split_last() else {
            *self = value;
            return Ok(Ok(()));
        };
        let Some(parent) = self.walk(parents, true)? else {
            return Ok(Err(value));
        };
        parent.expand()?;
        match parent {
            Node::Obj(members) => match members.iter_mut().find(|(k, _)| k == last) {
                Some((_, slot)) => *slot = value,
                None => members.push((last.clone(), value)),
            },
            Node::Arr(items) => {
                let i = if last == "-" {
                    Some(items.len())
                } else {
                    index(last)
                };
                match i {
                    Some(i) if i < items.len() => items[i] = value,
                    Some(i) if i == items.len() => items.push(value),
                    _ => return Ok(Err(value)),
                }
            }
            _ => return Ok(Err(value)),
        }
        Ok(Ok(()))
    }

    /// Take the value at `tokens` out of the document, with its position in
    /// its parent. `tokens` must not be empty.
    pub(crate) fn remove(
        &mut self,
        tokens: &[String],
    ) -> Result<Option<(Node<'a>, usize)>, serde_json::Error> {
        let Some((last, parents)) = tokens.split_last() else {
            return Ok(None);
        };
        let Some(parent) = self.walk(parents, false)? else {
            return Ok(None);
        };
        parent.expand()?;
        Ok(match parent {
            Node::Obj(members) => members
                .iter()
                .position(|(k, _)| k == last)
                .map(|i| (members.remove(i).1, i)),
            Node::Arr(items) => index(last)
                .filter(|&i| i < items.len())
                .map(|i| (items.remove(i), i)),
            _ => None,
        })
    }

    /// Put back what [`Node::remove`] took from `tokens`.
    fn restore(&mut self, tokens: &[String], value: Node<'a>, at: usize) {
        let Some((last, parents)) = tokens.split_last() else {
            return;
        };
        if let Ok(Some(parent)) = self.walk(parents, false) {
            match parent {
                Node::Obj(members) => members.insert(at.min(members.len()), (last.clone(), value)),
                Node::Arr(items) => items.insert(at.min(items.len()), value),
                _ => {}
            }
        }
    }

    /// Move the value at `from` to `to` (as [`Node::set`] places it). If
    /// `from` is missing or `to` cannot be placed, nothing changes.
    pub(crate) fn rename(
        &mut self,
        from: &[String],
        to: &[String],
    ) -> Result<bool, serde_json::Error> {
        let Some((value, at)) = self.remove(from)? else {
            return Ok(false);
        };
        match self.set(to, value)? {
            Ok(()) => Ok(true),
            Err(value) => {
                self.restore(from, value, at);
                Ok(false)
            }
        }
    }
}

impl Node<'_> {
    /// Append the JSON text of this value: raw parts as they are, edited
    /// containers compactly.
    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            Node::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
            Node::Arr(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out)?;
                }
                out.push(b']');
            }
            Node::Obj(members) => {
                out.push(b'{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, key)?;
                    out.push(b':');
                    value.write(out)?;
                }
                out.push(b'}');
            }
        }
        Ok(())
    }
}

/// Check that `text` is one JSON value (validating all of it, without
/// building it) and return it as an unparsed document.
pub(crate) fn parse(text: &str) -> Result<Node<'_>, serde_json::Error> {
    serde_json::from_str::<&RawValue>(text).map(Node::Raw)
}
