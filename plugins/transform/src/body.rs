//! `request.body` and `response.body`: JSON Pointer edits and JSON <-> XML
//! conversion of buffered bodies.

use crate::json::{self, Node};
use crate::xml::{self, ConvertError};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::fmt;
use tollgate_policy_sdk::{header_str, header_values, ConfigError, Header};

/// The body access limit when `max-bytes` is not given.
pub const DEFAULT_MAX_BYTES: u32 = 1 << 20;
/// The largest `max-bytes`.
pub const MAX_MAX_BYTES: u32 = 16 << 20;
/// A converted body may be at most this many times `max-bytes`.
pub const CONVERTED_FACTOR: usize = 4;

// ---------------------------------------------------------------------------
// Configuration as written

/// `[config.request.body]` / `[config.response.body]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BodyConfig {
    /// How much of the body the step reads (default 1MiB).
    #[serde(rename = "max-bytes")]
    pub max_bytes: Option<ByteSize>,
    /// Edits of JSON bodies.
    pub json: JsonConfig,
    /// A conversion between JSON and XML.
    pub convert: Option<Convert>,
    /// Options of the XML side of conversions.
    pub xml: XmlConfig,
}

/// `json.set`, `json.remove`, `json.rename`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JsonConfig {
    /// JSON Pointer -> value to put there.
    pub set: ValueTable,
    /// JSON Pointers of values to remove.
    pub remove: Vec<String>,
    /// JSON Pointer -> JSON Pointer to move the value to.
    pub rename: crate::Pairs,
}

/// `xml.root`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct XmlConfig {
    /// The root element of `json-to-xml` output (default `root`).
    pub root: Option<String>,
}

/// `convert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Convert {
    /// A JSON body becomes XML (after the JSON edits).
    JsonToXml,
    /// An XML body becomes JSON (before the JSON edits).
    XmlToJson,
}

/// A table of any values (kept as JSON text), in the order given.
#[derive(Debug, Default)]
pub struct ValueTable(pub Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for ValueTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ValueTable;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of JSON Pointers to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ValueTable, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, Box<RawValue>>()? {
                    pairs.push(pair);
                }
                Ok(ValueTable(pairs))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// A byte count: an integer, or a string with a unit (`512B`, `64KiB`,
/// `1MiB`; `KB`/`K` and `MB`/`M` mean the same as `KiB` and `MiB`), from 1
/// byte to 16MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u32);

fn size_in_range<E: serde::de::Error>(n: u64, written: &dyn fmt::Display) -> Result<ByteSize, E> {
    if (1..=u64::from(MAX_MAX_BYTES)).contains(&n) {
        Ok(ByteSize(n as u32))
    } else {
        Err(E::custom(format!(
            "{written} is out of range: max-bytes must be from 1 byte to 16MiB"
        )))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: a number of bytes or a string such as \"64KiB\" or \"1MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                size_in_range(n, &n)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                match u64::try_from(n) {
                    Ok(n) => size_in_range(n, &n),
                    Err(_) => size_in_range(0, &n),
                }
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                let t = s.trim();
                let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                let (digits, unit) = t.split_at(split);
                let multiplier: u64 = match unit.trim() {
                    "" | "B" => 1,
                    "KiB" | "KB" | "K" => 1 << 10,
                    "MiB" | "MB" | "M" => 1 << 20,
                    "GiB" | "GB" | "G" => 1 << 30,
                    _ => 0,
                };
                match digits.parse::<u64>() {
                    Ok(n) if multiplier != 0 => {
                        size_in_range(n.saturating_mul(multiplier), &format_args!("{s:?}"))
                    }
                    _ => Err(E::custom(format!(
                        "{s:?} is not a size: expected a number of bytes, or a number and a \
                         unit (B, KiB, MiB), e.g. \"64KiB\""
                    ))),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------
// Configuration as checked

/// What a body section does.
#[derive(Debug)]
pub(crate) struct BodyPlan {
    pub(crate) max_bytes: u32,
    /// In the order: rename, remove, set.
    rename: Vec<(Vec<String>, Vec<String>)>,
    remove: Vec<Vec<String>>,
    set: Vec<(Vec<String>, Box<RawValue>)>,
    convert: Option<Convert>,
    root: String,
}

/// Why a body was refused. Messages have no subject: "the request body "
/// or "the response body " goes in front.
#[derive(Debug, PartialEq)]
pub(crate) enum BodyError {
    /// Claims JSON but is not (or cannot be converted): 400 `invalid_json`.
    InvalidJson(String),
    /// Claims XML but is not acceptable: 400 `invalid_xml`.
    InvalidXml(String),
    /// A conversion would exceed its size limit: 413 `body_too_large`.
    TooLarge(String),
}

impl BodyError {
    /// The status, error code and message for a request that is refused.
    pub(crate) fn response_parts(&self) -> (u16, &'static str, &str) {
        match self {
            BodyError::InvalidJson(m) => (400, "invalid_json", m),
            BodyError::InvalidXml(m) => (400, "invalid_xml", m),
            BodyError::TooLarge(m) => (413, "body_too_large", m),
        }
    }

    pub(crate) fn message(&self) -> &str {
        self.response_parts().2
    }
}

/// A new body and, if a conversion happened, its content type.
pub(crate) type NewBody = (Vec<u8>, Option<&'static str>);

fn pointer(field: &str, text: &str) -> Result<Vec<String>, ConfigError> {
    json::parse_pointer(text).map_err(|m| ConfigError::at(field, m))
}

impl BodyPlan {
    /// Check a body section; `prefix` is `request.body` or `response.body`.
    pub(crate) fn new(prefix: &str, config: BodyConfig) -> Result<Self, ConfigError> {
        let BodyConfig {
            max_bytes,
            json,
            convert,
            xml,
        } = config;

        // Tables run in the byte order of their keys, whatever order they
        // arrive in, so that `/a` is set before `/a/b`.
        let mut set_table = json.set.0;
        set_table.sort_by(|a, b| a.0.cmp(&b.0));
        let field = format!("{prefix}.json.set");
        let mut set = Vec::with_capacity(set_table.len());
        for (text, value) in set_table {
            set.push((pointer(&field, &text)?, value));
        }

        let mut remove = Vec::with_capacity(json.remove.len());
        for (i, text) in json.remove.iter().enumerate() {
            let field = format!("{prefix}.json.remove.{i}");
            let tokens = pointer(&field, text)?;
            if tokens.is_empty() {
                return Err(ConfigError::at(
                    field,
                    "\"\" (the whole body) cannot be removed; set \"\" to replace the body",
                ));
            }
            remove.push(tokens);
        }

        let mut rename_table = json.rename.0;
        rename_table.sort_by(|a, b| a.0.cmp(&b.0));
        let field = format!("{prefix}.json.rename");
        let mut rename = Vec::with_capacity(rename_table.len());
        for (from_text, to_text) in rename_table {
            let from = pointer(&field, &from_text)?;
            if from.is_empty() {
                return Err(ConfigError::at(
                    field,
                    "\"\" (the whole body) cannot be moved",
                ));
            }
            let to_field = format!("{field}.{from_text}");
            let to = pointer(&to_field, &to_text)?;
            if to.len() > from.len() && to.starts_with(&from) {
                return Err(ConfigError::at(
                    to_field,
                    format!(
                        "{to_text:?} is inside {from_text:?}: a value cannot be moved into itself"
                    ),
                ));
            }
            rename.push((from, to));
        }

        let root = match xml.root {
            Some(root) => {
                let field = format!("{prefix}.xml.root");
                if convert != Some(Convert::JsonToXml) {
                    return Err(ConfigError::at(
                        field,
                        "xml.root names the root element of convert = \"json-to-xml\", \
                         which this section does not do",
                    ));
                }
                if !xml::is_ncname(&root) {
                    return Err(ConfigError::at(
                        field,
                        format!(
                            "{root:?} is not a valid XML element name: a letter or \"_\", then \
                             letters, digits, \"-\", \"_\" or \".\" (no \":\")"
                        ),
                    ));
                }
                root
            }
            None => "root".to_string(),
        };

        Ok(BodyPlan {
            max_bytes: max_bytes.map_or(DEFAULT_MAX_BYTES, |b| b.0),
            rename,
            remove,
            set,
            convert,
            root,
        })
    }

    fn has_json_edits(&self) -> bool {
        !(self.rename.is_empty() && self.remove.is_empty() && self.set.is_empty())
    }

    fn converted_limit(&self) -> usize {
        (self.max_bytes as usize).saturating_mul(CONVERTED_FACTOR)
    }

    /// Transform `body` given the headers it came with. `Ok(None)`: leave
    /// the body as it is.
    pub(crate) fn apply(
        &self,
        headers: &[Header],
        body: &[u8],
    ) -> Result<Option<NewBody>, BodyError> {
        if !self.has_json_edits() && self.convert.is_none() {
            return Ok(None);
        }
        // A compressed body is not readable here; an empty one has nothing
        // to edit.
        if is_encoded(headers) || body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match (media_kind(headers), self.convert) {
            (MediaKind::Json, convert) => {
                let text = std::str::from_utf8(body).map_err(|e| {
                    BodyError::InvalidJson(format!("is not valid JSON: it is not UTF-8 ({e})"))
                })?;
                let edited = self.edit(text)?;
                if convert == Some(Convert::JsonToXml) {
                    let json = edited.as_deref().unwrap_or(text);
                    let out = xml::json_to_xml(json, &self.root, self.converted_limit()).map_err(
                        |e| match e {
                            ConvertError::Invalid(m) => BodyError::InvalidJson(m),
                            ConvertError::TooLarge(m) => BodyError::TooLarge(m),
                        },
                    )?;
                    Ok(Some((out.into_bytes(), Some("application/xml"))))
                } else {
                    Ok(edited.map(|b| (b.into_bytes(), None)))
                }
            }
            (MediaKind::Xml, Some(Convert::XmlToJson)) => {
                let text = std::str::from_utf8(body).map_err(|e| {
                    BodyError::InvalidXml(format!("is not acceptable XML: it is not UTF-8 ({e})"))
                })?;
                let json = xml::xml_to_json(text, self.converted_limit()).map_err(|e| match e {
                    ConvertError::Invalid(m) => BodyError::InvalidXml(m),
                    ConvertError::TooLarge(m) => BodyError::TooLarge(m),
                })?;
                let out = self.edit(&json)?.unwrap_or(json);
                Ok(Some((out.into_bytes(), Some("application/json"))))
            }
            _ => Ok(None),
        }
    }

    /// Apply the JSON edits to a JSON text. `Ok(None)`: no edit changed
    /// anything (or there are none), the text stands.
    fn edit<'a>(&'a self, text: &'a str) -> Result<Option<String>, BodyError> {
        if !self.has_json_edits() {
            return Ok(None);
        }
        let invalid =
            |e: serde_json::Error| BodyError::InvalidJson(format!("is not valid JSON: {e}"));
        let mut doc = json::parse(text).map_err(invalid)?;
        let mut changed = false;
        for (from, to) in &self.rename {
            changed |= doc.rename(from, to).map_err(invalid)?;
        }
        for tokens in &self.remove {
            changed |= doc.remove(tokens).map_err(invalid)?.is_some();
        }
        for (tokens, value) in &self.set {
            changed |= doc.set(tokens, Node::Raw(value)).map_err(invalid)?.is_ok();
        }
        if !changed {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(text.len() + text.len() / 8 + 64);
        doc.write(&mut out).map_err(invalid)?;
        String::from_utf8(out)
            .map(Some)
            .map_err(|e| BodyError::InvalidJson(format!("could not be written as JSON: {e}")))
    }
}

#[derive(Debug, PartialEq)]
enum MediaKind {
    Json,
    Xml,
    Other,
}

/// JSON: `application/json` or any `+json` type; XML: `application/xml`,
/// `text/xml` or any `+xml` type. Parameters (charset) are ignored.
fn media_kind(headers: &[Header]) -> MediaKind {
    let Some(value) = header_str(headers, "content-type") else {
        return MediaKind::Other;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return MediaKind::Other;
    };
    if (kind == "application" && subtype == "json") || subtype.ends_with("+json") {
        MediaKind::Json
    } else if ((kind == "application" || kind == "text") && subtype == "xml")
        || subtype.ends_with("+xml")
    {
        MediaKind::Xml
    } else {
        MediaKind::Other
    }
}

/// Whether a `content-encoding` other than `identity` applies.
fn is_encoded(headers: &[Header]) -> bool {
    header_values(headers, "content-encoding").any(|v| {
        v.split(|&b| b == b',')
            .map(|c| c.trim_ascii())
            .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"))
    })
}
