//! Every error in a TOML file, not just the first, each at its own line and
//! column; and where a dotted field path of a table is in the text.
//!
//! serde stops at the first error. To find the next one, [`collect`] blanks
//! out the part of the text the error is about (the key and its value, or a
//! whole table), with spaces so that every other byte keeps its offset, and
//! deserialises again, until the text deserialises or nothing more can be
//! cut. Each error is shown against the original text, in toml's own format.
//! An error that only follows from a cut (a required field that was cut
//! because its value was wrong is then missing) is not reported.

use std::ops::Range;
use toml_edit::{ImDocument, InlineTable, Item, Key, Table, Value};

/// Most errors reported for one file; a file with more is a wrong file.
pub const MAX_ERRORS: usize = 50;

/// Deserialise `text`; on failure, every error found, each rendered like
/// toml renders one (`TOML parse error at line L, column C`, the line, a
/// caret, the message).
pub fn collect<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Vec<String>> {
    let first = match toml::from_str::<T>(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let mut errors = vec![first.to_string().trim_end().to_string()];
    // Keys cut for an error in their value, with the start of their table:
    // a later `missing field` there is that same error again.
    let mut cut_keys: Vec<(String, usize)> = Vec::new();
    let mut current = text.as_bytes().to_vec();
    let mut err = first;
    for _ in 0..MAX_ERRORS * 2 {
        if errors.len() >= MAX_ERRORS {
            break;
        }
        let Some(span) = err.span() else { break };
        let Ok(cur) = std::str::from_utf8(&current) else {
            break;
        };
        // A syntax error: nothing below it can be read.
        let Ok(doc) = ImDocument::parse(cur) else {
            break;
        };
        let Some(cut) = find_cut(&doc, &span) else {
            break;
        };
        let mut changed = false;
        for r in &cut.ranges {
            let Some(bytes) = current.get_mut(r.clone()) else {
                continue;
            };
            for b in bytes {
                if *b != b' ' {
                    *b = b' ';
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
        if let Some(key) = cut.key {
            cut_keys.push((key, cut.table_start));
        }
        let Ok(next) = std::str::from_utf8(&current) else {
            break;
        };
        // The cut must leave valid TOML, or the next error is ours.
        if ImDocument::parse(next).is_err() {
            break;
        }
        match toml::from_str::<T>(next) {
            Ok(_) => break,
            Err(e) => {
                if !follows_from_cut(&e, &cut_keys) {
                    errors.push(render(text, &e));
                }
                err = e;
            }
        }
    }
    Err(errors)
}

/// `missing field `k`` in a table where `k` was cut.
fn follows_from_cut(e: &toml::de::Error, cut_keys: &[(String, usize)]) -> bool {
    let Some(rest) = e.message().strip_prefix("missing field `") else {
        return false;
    };
    let Some(name) = rest.strip_suffix('`') else {
        return false;
    };
    let start = e.span().map(|s| s.start);
    cut_keys
        .iter()
        .any(|(k, table)| k == name && Some(*table) == start)
}

/// `e` against the original `text`, as toml shows an error.
fn render(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.to_string().trim_end().to_string();
    };
    let (line, column) = position(text, span.start);
    let line_num = line + 1;
    let gutter = " ".repeat(line_num.to_string().len() + 1);
    let content = text.split('\n').nth(line).unwrap_or("");
    let highlight = span
        .end
        .saturating_sub(span.start)
        .min(content.len().saturating_sub(column))
        .max(1);
    format!(
        "TOML parse error at line {line_num}, column {}\n{gutter}|\n{line_num} | {content}\n{gutter}|{} {}\n{}",
        column + 1,
        " ".repeat(column),
        "^".repeat(highlight),
        e.message()
    )
}

/// 0-based line and column (in characters) of byte `index`, as toml counts.
fn position(text: &str, index: usize) -> (usize, usize) {
    let index = index.min(text.len());
    let before = text.get(..index).unwrap_or(text);
    let line = before.matches('\n').count();
    let line_start = before.rfind('\n').map_or(0, |n| n + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count());
    (line, column)
}

/// What to blank out for one error.
struct Cut {
    ranges: Vec<Range<usize>>,
    /// The key cut, when the error was in its value.
    key: Option<String>,
    /// Where the table holding that key starts.
    table_start: usize,
}

/// One thing that could be cut: an entry (key and value, or a table with
/// everything under it) or one table of an array of tables.
struct Candidate {
    ranges: Vec<Range<usize>>,
    /// Spans an error about exactly this thing carries.
    exact: Vec<Range<usize>>,
    key: Option<String>,
    table_start: usize,
}

impl Candidate {
    fn whole(&self) -> Range<usize> {
        let start = self.ranges.iter().map(|r| r.start).min().unwrap_or(0);
        let end = self.ranges.iter().map(|r| r.end).max().unwrap_or(0);
        start..end
    }
}

/// The smallest thing whose key, value or table is exactly the error's
/// span; else the smallest entry that contains it. Never the whole file.
fn find_cut(doc: &ImDocument<&str>, span: &Range<usize>) -> Option<Cut> {
    let raw = doc.raw().as_bytes();
    let mut all = Vec::new();
    candidates_in_table(raw, doc.as_table(), 0, &mut all);
    let size = |c: &Candidate| c.whole().len();
    let pick = all
        .iter()
        .filter(|c| c.exact.iter().any(|e| e == span))
        .min_by_key(|c| size(c))
        .or_else(|| {
            all.iter()
                .filter(|c| {
                    let w = c.whole();
                    w.start <= span.start && span.end <= w.end && !w.is_empty()
                })
                .min_by_key(|c| size(c))
        })?;
    Some(Cut {
        ranges: pick.ranges.clone(),
        key: pick.key.clone(),
        table_start: pick.table_start,
    })
}

fn candidates_in_table(raw: &[u8], t: &Table, table_start: usize, out: &mut Vec<Candidate>) {
    for (name, item) in t.iter() {
        let Some((key, _)) = t.get_key_value(name) else {
            continue;
        };
        candidates_in_entry(raw, key, item, table_start, out);
    }
}

fn candidates_in_entry(
    raw: &[u8],
    key: &Key,
    item: &Item,
    table_start: usize,
    out: &mut Vec<Candidate>,
) {
    let key_span = key.span();
    let name = key.get().to_string();
    match item {
        Item::None => {}
        Item::Value(v) => {
            let (Some(ks), Some(vs)) = (key_span.clone(), v.span()) else {
                return;
            };
            out.push(Candidate {
                ranges: vec![entry_range(raw, ks.start, vs.end)],
                exact: vec![ks, vs.clone()],
                key: Some(name),
                table_start,
            });
            candidates_in_value(raw, v, out);
        }
        Item::Table(t) => {
            let ranges = table_ranges(raw, t);
            if ranges.is_empty() {
                return;
            }
            let inner_start = t
                .span()
                .or(key_span.clone())
                .map_or(table_start, |s| s.start);
            let mut exact: Vec<Range<usize>> = key_span.into_iter().collect();
            exact.extend(t.span());
            out.push(Candidate {
                ranges,
                exact,
                key: Some(name),
                table_start,
            });
            candidates_in_table(raw, t, inner_start, out);
        }
        Item::ArrayOfTables(a) => {
            let mut all = Vec::new();
            for t in a.iter() {
                let ranges = table_ranges(raw, t);
                all.extend(ranges.iter().cloned());
                out.push(Candidate {
                    ranges,
                    exact: t.span().into_iter().collect(),
                    key: None,
                    table_start,
                });
                let inner_start = t.span().map_or(table_start, |s| s.start);
                candidates_in_table(raw, t, inner_start, out);
            }
            if all.is_empty() {
                return;
            }
            let mut exact: Vec<Range<usize>> = key_span.into_iter().collect();
            exact.extend(a.span());
            out.push(Candidate {
                ranges: all,
                exact,
                key: Some(name),
                table_start,
            });
        }
    }
}

/// Entries inside a value: the keys of inline tables, also inside arrays.
fn candidates_in_value(raw: &[u8], v: &Value, out: &mut Vec<Candidate>) {
    match v {
        Value::InlineTable(t) => candidates_in_inline(raw, t, out),
        Value::Array(a) => {
            for v in a.iter() {
                candidates_in_value(raw, v, out);
            }
        }
        _ => {}
    }
}

fn candidates_in_inline(raw: &[u8], t: &InlineTable, out: &mut Vec<Candidate>) {
    let start = t.span().map_or(0, |s| s.start);
    for (name, _) in t.iter() {
        let Some((key, item)) = t.get_key_value(name) else {
            continue;
        };
        candidates_in_entry(raw, key, item, start, out);
    }
}

/// The text of a table: its header and body, and every table under it
/// that has a header of its own (which may be further down the file).
fn table_ranges(raw: &[u8], t: &Table) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    if t.is_dotted() {
        // `a.b = 1`: the entries are in the body of the table above.
        for (name, item) in t.iter() {
            if let (Some((key, _)), Item::Value(v)) = (t.get_key_value(name), item) {
                if let (Some(ks), Some(vs)) = (key.span(), v.span()) {
                    ranges.push(entry_range(raw, ks.start, vs.end));
                }
            } else if let Item::Table(sub) = item {
                ranges.extend(table_ranges(raw, sub));
            }
        }
        return ranges;
    }
    ranges.extend(t.span());
    for (_, item) in t.iter() {
        match item {
            Item::Table(sub) if !sub.is_dotted() => ranges.extend(table_ranges(raw, sub)),
            Item::ArrayOfTables(a) => {
                for sub in a.iter() {
                    ranges.extend(table_ranges(raw, sub));
                }
            }
            _ => {}
        }
    }
    ranges
}

/// `key = value` from the key's start (before any dotted prefix such as
/// `a.b.` of `a.b.key`) to the value's end, with one neighbouring comma when
/// the entry is inside an inline table.
fn entry_range(raw: &[u8], mut start: usize, mut end: usize) -> Range<usize> {
    let blank = |b: u8| b == b' ' || b == b'\t';
    // Dotted prefix.
    loop {
        let mut i = start;
        while i > 0 && blank(raw[i - 1]) {
            i -= 1;
        }
        if i == 0 || raw[i - 1] != b'.' {
            break;
        }
        i -= 1;
        while i > 0 && blank(raw[i - 1]) {
            i -= 1;
        }
        if i == 0 {
            break;
        }
        match raw[i - 1] {
            q @ (b'"' | b'\'') => {
                i -= 1;
                while i > 0 && raw[i - 1] != q {
                    i -= 1;
                }
                i = i.saturating_sub(1);
            }
            _ => {
                while i > 0
                    && (raw[i - 1].is_ascii_alphanumeric() || matches!(raw[i - 1], b'-' | b'_'))
                {
                    i -= 1;
                }
            }
        }
        start = i;
    }
    // A comma after, else one before.
    let mut j = end;
    while j < raw.len() && blank(raw[j]) {
        j += 1;
    }
    if j < raw.len() && raw[j] == b',' {
        end = j + 1;
    } else {
        let mut i = start;
        while i > 0 && blank(raw[i - 1]) {
            i -= 1;
        }
        if i > 0 && raw[i - 1] == b',' {
            start = i - 1;
        }
    }
    start..end.min(raw.len())
}

/// Where the key at `path` (dotted, array elements by index, e.g.
/// `request.set.0.name`) is inside `value`, whose own span is the
/// fallback: the span of the deepest part of the path that exists.
/// Dots inside a key are tried too (`x.y` as one key).
pub fn path_span(item: &Item, path: &str) -> Option<Range<usize>> {
    let parts: Vec<&str> = path.split('.').collect();
    let mut best = None;
    walk_path(item, &parts, &mut best);
    best
}

fn walk_path(item: &Item, parts: &[&str], best: &mut Option<Range<usize>>) {
    if parts.is_empty() {
        return;
    }
    // Array element by index.
    if let Ok(i) = parts[0].parse::<usize>() {
        let next = match item {
            Item::ArrayOfTables(a) => a.get(i).map(|t| (t.span(), Item::Table(t.clone()))),
            Item::Value(Value::Array(a)) => a.get(i).map(|v| (v.span(), Item::Value(v.clone()))),
            _ => None,
        };
        if let Some((span, next)) = next {
            if span.is_some() {
                *best = span;
            }
            walk_path(&next, &parts[1..], best);
            return;
        }
    }
    // A key, possibly with dots in it: the longest that exists.
    for n in (1..=parts.len()).rev() {
        let name = parts[..n].join(".");
        let found = match item {
            Item::Table(t) => t.get_key_value(&name).map(|(k, v)| (k.span(), v.clone())),
            Item::Value(Value::InlineTable(t)) => {
                t.get_key_value(&name).map(|(k, v)| (k.span(), v.clone()))
            }
            _ => None,
        };
        if let Some((span, next)) = found {
            if span.is_some() {
                *best = span;
            }
            walk_path(&next, &parts[n..], best);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Top {
        name: String,
        #[serde(default)]
        port: u16,
        #[serde(default)]
        item: Vec<Entry>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Entry {
        id: String,
        #[serde(default)]
        size: u32,
        sub: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        a: u8,
        #[serde(default)]
        b: u8,
    }

    fn errors(text: &str) -> Vec<String> {
        collect::<Top>(text).expect_err("should fail")
    }

    /// The first line of each error: `TOML parse error at line L, column C`,
    /// and its message (the last line).
    fn short(errs: &[String]) -> Vec<String> {
        errs.iter()
            .map(|e| {
                let first = e.lines().next().unwrap();
                let last = e.lines().last().unwrap();
                format!(
                    "{} :: {last}",
                    first.trim_start_matches("TOML parse error at ")
                )
            })
            .collect()
    }

    #[test]
    fn every_unknown_field_at_its_own_place() {
        let text = "name = \"x\"\nnmae = 1\n\n[[item]]\nid = \"a\"\nsise = 3\n\n[[item]]\nid = \"b\"\nsub = { a = 1, c = 2 }\n\n[inner]\na = 1\nz = true\n";
        let e = errors(text);
        assert_eq!(
            short(&e),
            vec![
                "line 2, column 1 :: unknown field `nmae`, expected one of `name`, `port`, `item`, `inner`",
                "line 6, column 1 :: unknown field `sise`, expected one of `id`, `size`, `sub`",
                "line 10, column 16 :: unknown field `c`, expected `a` or `b`",
                "line 14, column 1 :: unknown field `z`, expected `a` or `b`",
            ]
        );
        // Rendered against the original text, as toml does.
        assert_eq!(
            e[2],
            "TOML parse error at line 10, column 16\n   |\n10 | sub = { a = 1, c = 2 }\n   |                ^\nunknown field `c`, expected `a` or `b`"
        );
    }

    #[test]
    fn the_first_error_is_tomls_own() {
        let text = "name = \"x\"\nport = \"eighty\"\nbogus = 1\n";
        let e = errors(text);
        let toml_says = toml::from_str::<Top>(text).unwrap_err().to_string();
        assert_eq!(e[0], toml_says.trim_end());
        assert_eq!(e.len(), 2, "{e:#?}");
    }

    #[test]
    fn a_bad_required_value_is_not_reported_again_as_missing() {
        // `id` is required: cutting it must not add "missing field `id`".
        let text =
            "name = \"x\"\n[[item]]\nid = 5\nsize = \"big\"\n[[item]]\nid = \"b\"\nextra = 1\n";
        let e = short(&errors(text));
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(
            e[0].starts_with("line 3, column 6 :: invalid type: integer `5`"),
            "{e:#?}"
        );
        assert!(
            e[1].starts_with("line 4, column 8 :: invalid type: string"),
            "{e:#?}"
        );
        assert!(
            e[2].starts_with("line 7, column 1 :: unknown field `extra`"),
            "{e:#?}"
        );
        assert!(!e.iter().any(|e| e.contains("missing field")), "{e:#?}");
    }

    #[test]
    fn a_missing_field_drops_its_table_and_goes_on() {
        let text = "name = \"x\"\n[[item]]\nsize = 1\n[[item]]\nid = \"b\"\nextra = 1\n";
        let e = short(&errors(text));
        assert_eq!(
            e,
            vec![
                "line 2, column 1 :: missing field `id`",
                "line 6, column 1 :: unknown field `extra`, expected one of `id`, `size`, `sub`",
            ]
        );
    }

    #[test]
    fn syntax_errors_stop_at_the_first() {
        let e = errors("name = \"x\nport = 1\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("line 1"), "{e:?}");
    }

    #[test]
    fn dotted_keys_are_cut_whole() {
        let e = short(&errors(
            "name = \"x\"\ninner.a = 1\ninner.zz = 2\nport = \"p\"\n",
        ));
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].starts_with("line 3, column 7 :: unknown field `zz`"),
            "{e:#?}"
        );
        assert!(
            e[1].starts_with("line 4, column 8 :: invalid type"),
            "{e:#?}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            "=",
            "[[item]]\n[[item]]\n",
            "a.b.c = 1\n[a]\n",
            "name = 1\nname = 2\n",
            "item = [{ id = 1, size = \"x\", q = 1 }, 3]\n",
            "\u{e9} = 1\ninner = { a = \"\u{e9}\" }\n",
        ] {
            let _ = collect::<Top>(text);
        }
    }

    #[test]
    fn paths_to_spans() {
        let text = "[c]\nrequest = { headers = { set = { \"x.y\" = 1 } }, path = \"p\" }\nlist = [{ name = \"a\" }, { name = \"b\" }]\n";
        let doc = ImDocument::parse(text).unwrap();
        let root = doc.as_item();
        let at = |p: &str| {
            let s = path_span(&root["c"], p).unwrap();
            &text[s]
        };
        assert_eq!(at("request.path"), "path");
        assert_eq!(at("request.headers.set.x.y"), "\"x.y\"");
        assert_eq!(at("request.headers.nothing"), "headers");
        assert_eq!(at("list.1.name"), "name");
        assert_eq!(
            path_span(&root["c"], "list.1.name").unwrap().start,
            text.rfind("name").unwrap()
        );
        assert_eq!(path_span(&root["c"], "nothing"), None);
    }
}
