//! JSON <-> XML conversion. XML is read with `quick-xml`; JSON is read with
//! `serde_json` and written as XML while it is read, without building it.
//!
//! The mapping is documented in `README.md` ("JSON to XML", "XML to JSON").

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use quick_xml::XmlVersion;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// The deepest element nesting either conversion accepts (the root is 1).
pub(crate) const MAX_DEPTH: usize = 64;
/// The most elements plus attributes an XML body may have.
pub(crate) const MAX_NODES: usize = 50_000;

/// Why a conversion failed.
#[derive(Debug, PartialEq)]
pub(crate) enum ConvertError {
    /// The input is not acceptable (syntax, nesting, DOCTYPE, ...).
    Invalid(String),
    /// The output would be larger than allowed.
    TooLarge(String),
}

// ---------------------------------------------------------------------------
// XML names

/// XML 1.0 (fifth edition) `NameStartChar`, including `:`.
fn is_name_start(c: char) -> bool {
    matches!(c,
        ':' | 'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// XML 1.0 (fifth edition) `NameChar`.
fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// An XML `Name` (qualified names such as `soap:Body` included).
pub(crate) fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
}

/// An XML name without `:` (usable without a namespace declaration).
pub(crate) fn is_ncname(s: &str) -> bool {
    is_name(s) && !s.contains(':')
}

/// An element name for a JSON key: the key itself if it is a name without
/// `:`; otherwise every character that may not stand where it is (and `:`)
/// becomes `_xHHHH_` (`_xHHHHHHHH_` above U+FFFF), upper-case hex of the code
/// point, and a `_` followed by `x` becomes `_x005F_` so that decoding is
/// unambiguous (the scheme of .NET's `XmlConvert.EncodeLocalName`). The
/// empty key becomes `_`.
pub(crate) fn element_name(key: &str) -> String {
    if key.is_empty() {
        return "_".to_string();
    }
    let mut out = String::with_capacity(key.len());
    let mut chars = key.chars().peekable();
    let mut first = true;
    while let Some(c) = chars.next() {
        let fits = c != ':'
            && if first {
                is_name_start(c)
            } else {
                is_name_char(c)
            };
        if c == '_' && chars.peek() == Some(&'x') {
            out.push_str("_x005F_");
        } else if fits {
            out.push(c);
        } else if (c as u32) > 0xFFFF {
            let _ = write!(out, "_x{:08X}_", c as u32);
        } else {
            let _ = write!(out, "_x{:04X}_", c as u32);
        }
        first = false;
    }
    out
}

/// Whether XML 1.0 allows `c` in a document at all.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Append `s` as element text: the five special characters as entities,
/// CR as `&#xD;` (parsers would turn a raw CR into LF), and characters XML
/// cannot carry (most C0 controls, U+FFFE, U+FFFF) as U+FFFD.
fn push_text(out: &mut String, s: &str) {
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let replacement = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\'' => "&apos;",
            '\r' => "&#xD;",
            c if is_xml_char(c) => continue,
            _ => "\u{FFFD}",
        };
        out.push_str(&s[plain..i]);
        out.push_str(replacement);
        plain = i + c.len_utf8();
    }
    out.push_str(&s[plain..]);
}

// ---------------------------------------------------------------------------
// JSON to XML

struct XmlOut {
    buf: String,
    depth: usize,
    limit: usize,
    /// The reason for a failure the visitor reported as a serde error.
    failure: Option<ConvertError>,
}

impl XmlOut {
    fn fail<E: serde::de::Error>(&mut self, err: ConvertError) -> E {
        let message = match &err {
            ConvertError::Invalid(m) | ConvertError::TooLarge(m) => m.clone(),
        };
        self.failure = Some(err);
        E::custom(message)
    }

    fn check_size<E: serde::de::Error>(&mut self) -> Result<(), E> {
        if self.buf.len() > self.limit {
            let limit = self.limit;
            return Err(self.fail(ConvertError::TooLarge(format!(
                "would be larger than {limit} bytes as XML"
            ))));
        }
        Ok(())
    }

    fn tag(&mut self, open: &str, name: &str, close: &str) {
        self.buf.push_str(open);
        self.buf.push_str(name);
        self.buf.push_str(close);
    }

    /// Elements nest at most [`MAX_DEPTH`] deep, leaves included.
    fn check_depth<E: serde::de::Error>(&mut self, depth: usize) -> Result<(), E> {
        if depth > MAX_DEPTH {
            return Err(self.fail(ConvertError::Invalid(format!(
                "would nest XML elements deeper than {MAX_DEPTH} levels"
            ))));
        }
        Ok(())
    }

    fn leaf<E: serde::de::Error>(&mut self, name: &str, text: &str) -> Result<(), E> {
        self.check_depth(self.depth + 1)?;
        self.tag("<", name, ">");
        push_text(&mut self.buf, text);
        self.tag("</", name, ">");
        self.check_size()
    }

    fn open<E: serde::de::Error>(&mut self, name: &str) -> Result<(), E> {
        self.depth += 1;
        self.check_depth(self.depth)?;
        self.tag("<", name, ">");
        self.check_size()
    }

    fn close<E: serde::de::Error>(&mut self, name: &str) -> Result<(), E> {
        self.depth -= 1;
        self.tag("</", name, ">");
        self.check_size()
    }
}

/// Writes one JSON value as the element `name` (or, if `repeat` and the
/// value is an array, as one `name` element per item).
struct Element<'n, 'o> {
    name: &'n str,
    out: &'o mut XmlOut,
    repeat: bool,
}

impl<'de> DeserializeSeed<'de> for Element<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.out.check_depth(self.out.depth + 1)?;
        self.out.tag("<", self.name, "/>");
        self.out.check_size()
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.out.leaf(self.name, if v { "true" } else { "false" })
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.out.leaf(self.name, &v.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.out.leaf(self.name, &v.to_string())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json's own formatting (the shortest text that reads back
        // as the same double, `1e+300` rather than 301 digits); JSON has no
        // NaN or infinity.
        let text = serde_json::Number::from_f64(v).map_or_else(String::new, |n| n.to_string());
        self.out.leaf(self.name, &text)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.out.leaf(self.name, v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.repeat {
            let name = self.name;
            while seq
                .next_element_seed(Element {
                    name,
                    out: &mut *self.out,
                    repeat: false,
                })?
                .is_some()
            {}
            return Ok(());
        }
        self.out.open(self.name)?;
        while seq
            .next_element_seed(Element {
                name: "item",
                out: &mut *self.out,
                repeat: false,
            })?
            .is_some()
        {}
        self.out.close(self.name)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.out.open(self.name)?;
        while let Some(key) = map.next_key::<String>()? {
            let name = element_name(&key);
            map.next_value_seed(Element {
                name: &name,
                out: &mut *self.out,
                repeat: true,
            })?;
        }
        self.out.close(self.name)
    }
}

const XML_DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";

/// Convert a JSON text to an XML document whose root element is `root`
/// (an NCName). The output may be at most `limit` bytes.
pub(crate) fn json_to_xml(json: &str, root: &str, limit: usize) -> Result<String, ConvertError> {
    let mut out = XmlOut {
        buf: String::with_capacity((json.len() + json.len() / 2 + 64).min(limit)),
        depth: 0,
        limit,
        failure: None,
    };
    out.buf.push_str(XML_DECLARATION);
    let mut de = serde_json::Deserializer::from_str(json);
    let result = Element {
        name: root,
        out: &mut out,
        repeat: false,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match result {
        Ok(()) => Ok(out.buf),
        Err(e) => Err(out
            .failure
            .take()
            .unwrap_or_else(|| ConvertError::Invalid(format!("is not valid JSON: {e}")))),
    }
}

// ---------------------------------------------------------------------------
// XML to JSON

/// An element read from the document. Names and text borrow the input
/// where they can, so that a large document costs few allocations.
#[derive(Default)]
struct Elem<'a> {
    attrs: Vec<(Cow<'a, str>, String)>,
    children: Vec<(Cow<'a, str>, Elem<'a>)>,
    text: Cow<'a, str>,
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// `@name` as a JSON key.
struct AttrKey<'k>(&'k str);

impl Serialize for AttrKey<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("@{}", self.0))
    }
}

/// Repeated children (by index), as an array.
struct Group<'e, 'a>(&'e [(Cow<'a, str>, Elem<'a>)], &'e [usize]);

impl Serialize for Group<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.1.iter().map(|&i| &self.0[i].1))
    }
}

impl Serialize for Elem<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.attrs.is_empty() && self.children.is_empty() {
            return if self.text.is_empty() {
                s.serialize_unit()
            } else {
                s.serialize_str(&self.text)
            };
        }
        let mut map = s.serialize_map(None)?;
        for (name, value) in &self.attrs {
            map.serialize_entry(&AttrKey(name), value)?;
        }
        // Children grouped by name, in the order each name first appears.
        let children = &self.children;
        if let [(name, only)] = children.as_slice() {
            map.serialize_entry(&**name, only)?;
        } else if !children.is_empty() {
            // Indexes sorted by name (then position): each name is a run.
            let mut by_name: Vec<usize> = (0..children.len()).collect();
            by_name.sort_unstable_by(|&a, &b| children[a].0.cmp(&children[b].0).then(a.cmp(&b)));
            // (first position, start of the run, length of the run)
            let mut runs: Vec<(usize, usize, usize)> = Vec::new();
            let mut start = 0;
            while let Some(&first) = by_name.get(start) {
                let len = by_name[start..]
                    .iter()
                    .take_while(|&&i| children[i].0 == children[first].0)
                    .count();
                runs.push((first, start, len));
                start += len;
            }
            runs.sort_unstable();
            for (first, start, len) in runs {
                let name = &*children[first].0;
                if len == 1 {
                    map.serialize_entry(name, &children[first].1)?;
                } else {
                    map.serialize_entry(name, &Group(children, &by_name[start..start + len]))?;
                }
            }
        }
        let text = self.text.trim_matches(is_xml_space);
        if !text.is_empty() {
            map.serialize_entry("#text", text)?;
        }
        map.end()
    }
}

/// `{"root-name": value}`.
struct Document<'e, 'a>(&'e str, &'e Elem<'a>);

impl Serialize for Document<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.0, self.1)?;
        map.end()
    }
}

fn invalid(message: impl fmt::Display) -> ConvertError {
    ConvertError::Invalid(format!("is not acceptable XML: {message}"))
}

fn check_name(kind: &str, name: &str) -> Result<(), ConvertError> {
    if is_name(name) {
        Ok(())
    } else {
        Err(invalid(format_args!("{name:?} is not a valid {kind} name")))
    }
}

/// The text a reference stands for: a character reference or one of the
/// five predefined entities. Anything else is refused (there is no DTD to
/// define it, and defining entities is how entity-expansion bombs work).
fn resolve_reference(name: &str) -> Result<char, ConvertError> {
    if name.starts_with('#') {
        let r = quick_xml::events::BytesRef::new(name);
        return match r.resolve_char_ref() {
            Ok(Some(c)) if is_xml_char(c) => Ok(c),
            Ok(_) => Err(invalid(format_args!(
                "&{name}; is not a character XML allows"
            ))),
            Err(e) => Err(invalid(format_args!("&{name};: {e}"))),
        };
    }
    match name {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        _ => Err(invalid(format_args!(
            "&{name}; is not defined (only &lt; &gt; &amp; &apos; &quot; and character references are)"
        ))),
    }
}

/// `part` with the lifetime of `whole` if it is a slice of it (the reader
/// lends out views of its input for less time than the input lives),
/// otherwise a copy.
fn reborrow<'a>(whole: &'a str, part: &str) -> Cow<'a, str> {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    match whole.get(start..start.wrapping_add(part.len())) {
        Some(slice) if std::ptr::eq(slice.as_ptr(), part.as_ptr()) => Cow::Borrowed(slice),
        _ => Cow::Owned(part.to_string()),
    }
}

/// Append text to an element.
fn push_text_piece<'a>(text: &mut Cow<'a, str>, piece: Cow<'a, str>) {
    if text.is_empty() {
        *text = piece;
    } else {
        text.to_mut().push_str(&piece);
    }
}

/// A new element for a start tag at nesting `depth` (0 for the root),
/// counted in `nodes` with its attributes.
fn open<'a>(
    xml: &'a str,
    start: &BytesStart<'_>,
    depth: usize,
    nodes: &mut usize,
) -> Result<(Cow<'a, str>, Elem<'a>), ConvertError> {
    if depth >= MAX_DEPTH {
        return Err(invalid(format_args!(
            "elements nest deeper than {MAX_DEPTH} levels"
        )));
    }
    let name = start.name();
    let name: &str = name.as_ref();
    check_name("element", name)?;
    let mut count = || {
        *nodes += 1;
        if *nodes > MAX_NODES {
            return Err(invalid(format_args!(
                "more than {MAX_NODES} elements and attributes"
            )));
        }
        Ok(())
    };
    count()?;
    let mut elem = Elem::default();
    for attr in start.attributes() {
        count()?;
        let attr = attr.map_err(invalid)?;
        let key: &str = attr.key.as_ref();
        check_name("attribute", key)?;
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(invalid)?;
        elem.attrs.push((reborrow(xml, key), value.into_owned()));
    }
    Ok((reborrow(xml, name), elem))
}

type Open<'a> = (Cow<'a, str>, Elem<'a>);

/// Close the innermost open element: attach it to its parent, or make it
/// the root.
fn close<'a>(stack: &mut Vec<Open<'a>>, root: &mut Option<Open<'a>>) {
    if let Some(done) = stack.pop() {
        match stack.last_mut() {
            Some((_, parent)) => parent.children.push(done),
            None => *root = Some(done),
        }
    }
}

/// Convert an XML document (UTF-8) to a JSON text of at most `limit` bytes.
pub(crate) fn xml_to_json(xml: &str, limit: usize) -> Result<String, ConvertError> {
    let xml = xml.strip_prefix('\u{FEFF}').unwrap_or(xml);
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Open<'_>> = Vec::new();
    let mut root: Option<Open<'_>> = None;
    let mut nodes = 0usize;
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                return Err(invalid(format_args!(
                    "{e} (at byte {})",
                    reader.error_position()
                )))
            }
        };
        match event {
            Event::Decl(decl) => {
                if let Some(encoding) = decl.encoding() {
                    let encoding = encoding.map_err(invalid)?;
                    if !encoding.eq_ignore_ascii_case("utf-8")
                        && !encoding.eq_ignore_ascii_case("us-ascii")
                    {
                        return Err(invalid(format_args!(
                            "the document declares encoding {encoding:?}; only UTF-8 is supported"
                        )));
                    }
                }
            }
            Event::DocType(_) => {
                return Err(invalid(
                    "DOCTYPE declarations are not accepted (no DTDs, no entity definitions)",
                ))
            }
            Event::Start(start) => {
                if root.is_some() {
                    return Err(invalid("more than one root element"));
                }
                stack.push(open(xml, &start, stack.len(), &mut nodes)?);
            }
            Event::Empty(start) => {
                if root.is_some() {
                    return Err(invalid("more than one root element"));
                }
                stack.push(open(xml, &start, stack.len(), &mut nodes)?);
                close(&mut stack, &mut root);
            }
            Event::End(_) => close(&mut stack, &mut root),
            Event::Text(text) => {
                let text = text.xml10_content();
                match stack.last_mut() {
                    Some((_, elem)) => push_text_piece(&mut elem.text, text),
                    None if text.chars().all(is_xml_space) => {}
                    None => return Err(invalid("text outside the root element")),
                }
            }
            Event::CData(cdata) => match stack.last_mut() {
                Some((_, elem)) => push_text_piece(&mut elem.text, cdata.xml10_content()),
                None => return Err(invalid("CDATA outside the root element")),
            },
            Event::GeneralRef(reference) => {
                let c = resolve_reference(&reference)?;
                match stack.last_mut() {
                    Some((_, elem)) => elem.text.to_mut().push(c),
                    None => return Err(invalid("a reference outside the root element")),
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if let Some((name, _)) = stack.last() {
        return Err(invalid(format_args!("the document ends before </{name}>")));
    }
    let Some((name, elem)) = root else {
        return Err(invalid("there is no root element"));
    };
    let mut out = Vec::with_capacity(xml.len().min(limit));
    serde_json::to_writer(&mut out, &Document(&name, &elem))
        .map_err(|e| ConvertError::Invalid(format!("could not be written as JSON: {e}")))?;
    if out.len() > limit {
        return Err(ConvertError::TooLarge(format!(
            "would be larger than {limit} bytes as JSON"
        )));
    }
    String::from_utf8(out)
        .map_err(|e| ConvertError::Invalid(format!("could not be written as JSON: {e}")))
}
