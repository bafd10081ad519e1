//! Reading an OpenAPI document, YAML or JSON, into a JSON value with
//! bounded cost, and finding the line of a JSON pointer in its text.
//!
//! JSON goes through `serde_json` (fast; its nesting limit of 128 bounds
//! the depth); YAML through `saphyr-parser`'s event stream, built into a
//! value here with an explicit stack (no recursion), the YAML 1.2 core
//! schema for plain scalars, and every node counted, aliases included: an
//! alias copies its anchor's value, so "billion laughs" documents hit
//! [`MAX_NODES`] instead of the memory.

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Value};

/// Largest document read, in bytes.
pub const MAX_BYTES: usize = 16 << 20;
/// Most values in a document (an alias counts its anchor's values again).
pub const MAX_NODES: usize = 4_000_000;
/// Deepest nesting of a YAML document (JSON: `serde_json`'s 128).
pub const MAX_DEPTH: usize = 128;

/// Where a document could not be read, 1-based (0: not known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl DocError {
    fn at(line: usize, column: usize, message: impl Into<String>) -> Self {
        DocError {
            line,
            column,
            message: message.into(),
        }
    }
}

/// Whether `text` is JSON rather than YAML (by its first character).
fn is_json(text: &str) -> bool {
    text.trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with('{')
}

/// Parse a document: JSON when it starts with `{`, else YAML (one
/// document).
pub fn parse(text: &str) -> Result<Value, DocError> {
    if text.len() > MAX_BYTES {
        return Err(DocError::at(
            0,
            0,
            format!(
                "the document is {} bytes; at most {} MiB are read",
                text.len(),
                MAX_BYTES >> 20
            ),
        ));
    }
    if is_json(text) {
        let v: Value = serde_json::from_str(text.trim_start_matches('\u{feff}'))
            .map_err(|e| DocError::at(e.line(), e.column(), format!("invalid JSON: {e}")))?;
        let n = count(&v);
        if n > MAX_NODES {
            return Err(DocError::at(
                0,
                0,
                format!("the document has {n} values; at most {MAX_NODES} are read"),
            ));
        }
        return Ok(v);
    }
    yaml(text)
}

/// A container being built.
enum Frame {
    Seq(Vec<Value>, usize),
    /// The map, the key waiting for its value, the anchor.
    Map(Map<String, Value>, Option<String>, usize),
}

/// Build the YAML document's value.
fn yaml(text: &str) -> Result<Value, DocError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: std::collections::HashMap<usize, (Value, usize)> = Default::default();
    let mut nodes = 0usize;
    let mut root: Option<Value> = None;
    let mut documents = 0;
    for ev in Parser::new_from_str(text) {
        let (ev, span) = ev.map_err(|e| {
            DocError::at(
                e.marker().line(),
                e.marker().col() + 1,
                format!("invalid YAML: {}", e.info()),
            )
        })?;
        let (line, col) = (span.start.line(), span.start.col() + 1);
        // A complete value: (value, anchor, its node count).
        let done: Option<(Value, usize, usize)> = match ev {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => None,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(DocError::at(
                        line,
                        col,
                        "a second YAML document: give one document per file",
                    ));
                }
                None
            }
            Event::Alias(id) => {
                let Some((v, n)) = anchors.get(&id) else {
                    return Err(DocError::at(line, col, "an alias to an unknown anchor"));
                };
                Some((v.clone(), 0, *n))
            }
            Event::Scalar(s, style, anchor, tag) => {
                let v = if let Some(t) = tag.as_deref().filter(|t| t.is_yaml_core_schema()) {
                    tagged(&s, &t.suffix).ok_or_else(|| {
                        DocError::at(line, col, format!("`{s}` is not a valid !!{}", t.suffix))
                    })?
                } else if style == ScalarStyle::Plain && tag.is_none() {
                    plain(&s)
                } else {
                    Value::String(s.into_owned())
                };
                Some((v, anchor, 1))
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(DocError::at(
                        line,
                        col,
                        format!("nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                check_not_key(&stack, line, col)?;
                stack.push(match ev {
                    Event::SequenceStart(..) => Frame::Seq(Vec::new(), anchor),
                    _ => Frame::Map(Map::new(), None, anchor),
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(items, anchor)) => {
                    let n = 1 + items.iter().map(count).sum::<usize>();
                    Some((Value::Array(items), anchor, n))
                }
                _ => return Err(DocError::at(line, col, "unbalanced sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(map, None, anchor)) => {
                    let n = 1 + map.values().map(count).sum::<usize>();
                    Some((Value::Object(map), anchor, n))
                }
                _ => return Err(DocError::at(line, col, "unbalanced mapping")),
            },
        };
        let Some((value, anchor, n)) = done else {
            continue;
        };
        nodes = nodes.saturating_add(n);
        if nodes > MAX_NODES {
            return Err(DocError::at(
                line,
                col,
                format!(
                    "the document has more than {MAX_NODES} values (aliases counted as copies)"
                ),
            ));
        }
        if anchor > 0 {
            anchors.insert(anchor, (value.clone(), n));
        }
        match stack.last_mut() {
            None => root = Some(value),
            Some(Frame::Seq(items, _)) => items.push(value),
            Some(Frame::Map(map, key @ None, _)) => {
                let k = match value {
                    Value::String(s) => s,
                    Value::Null => "null".into(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(DocError::at(line, col, "a mapping key must be a scalar")),
                };
                if map.contains_key(&k) {
                    return Err(DocError::at(
                        line,
                        col,
                        format!("duplicate key `{k}` in a mapping"),
                    ));
                }
                *key = Some(k);
            }
            Some(Frame::Map(map, key @ Some(_), _)) => {
                let k = key.take().unwrap_or_default();
                map.insert(k, value);
            }
        }
    }
    root.ok_or_else(|| DocError::at(1, 1, "the document is empty"))
}

/// A sequence or mapping as a mapping key is refused (JSON cannot say it).
fn check_not_key(stack: &[Frame], line: usize, col: usize) -> Result<(), DocError> {
    if let Some(Frame::Map(_, None, _)) = stack.last() {
        return Err(DocError::at(line, col, "a mapping key must be a scalar"));
    }
    Ok(())
}

/// Values in `v`, itself included.
pub fn count(v: &Value) -> usize {
    let mut n = 0;
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        n += 1;
        match v {
            Value::Array(a) => todo.extend(a),
            Value::Object(o) => todo.extend(o.values()),
            _ => {}
        }
    }
    n
}

/// A scalar with an explicit core-schema tag (`!!str`, `!!int` ...).
fn tagged(s: &str, suffix: &str) -> Option<Value> {
    match suffix {
        "str" => Some(Value::String(s.to_string())),
        "null" => Some(Value::Null),
        "bool" => match plain(s) {
            v @ Value::Bool(_) => Some(v),
            _ => None,
        },
        "int" | "float" => match plain(s) {
            v @ Value::Number(_) => Some(v),
            _ => None,
        },
        _ => Some(Value::String(s.to_string())),
    }
}

/// A plain scalar by the YAML 1.2 core schema: null, booleans, integers
/// (decimal, `0o`, `0x`), floats; anything else a string. `.inf` and
/// `.nan` stay strings: JSON has no such numbers.
fn plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let b = s.as_bytes();
    let digits = |t: &[u8]| !t.is_empty() && t.iter().all(u8::is_ascii_digit);
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits(unsigned.as_bytes()) {
        if let Ok(i) = s.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(u) = s.trim_start_matches('+').parse::<u64>() {
            return Value::from(u);
        }
    }
    if let Some(o) = s.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(o, 8) {
            return Value::from(i);
        }
    }
    if let Some(x) = s.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(x, 16) {
            return Value::from(i);
        }
    }
    // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let f = unsigned.as_bytes();
    let (mant, exp) = match f.iter().position(|&c| c == b'e' || c == b'E') {
        Some(i) => (&f[..i], Some(&f[i + 1..])),
        None => (f, None),
    };
    let mant_ok = match mant.iter().position(|&c| c == b'.') {
        Some(i) => {
            let (int, frac) = (&mant[..i], &mant[i + 1..]);
            (digits(int) && frac.iter().all(u8::is_ascii_digit)) || (int.is_empty() && digits(frac))
        }
        None => digits(mant),
    };
    let exp_ok =
        exp.is_none_or(|e| digits(e.strip_prefix(b"-").or(e.strip_prefix(b"+")).unwrap_or(e)));
    if mant_ok && exp_ok && !b.is_empty() {
        if let Some(n) = s.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(s.to_string())
}

/// The 1-based line and column where the value at JSON pointer `pointer`
/// starts in the document `text`, if the text parses that far.
pub fn locate(text: &str, pointer: &str) -> Option<(usize, usize)> {
    locate_all(text, &[pointer]).pop().flatten()
}

/// [`locate`] for several pointers, in one pass over the text.
pub fn locate_all(text: &str, pointers: &[&str]) -> Vec<Option<(usize, usize)>> {
    let mut found: Vec<Option<(usize, usize)>> = vec![None; pointers.len()];
    let mut wanted: std::collections::HashMap<Vec<String>, Vec<usize>> = Default::default();
    for (i, p) in pointers.iter().enumerate() {
        if p.is_empty() {
            found[i] = Some((1, 1));
            continue;
        }
        let Some(rest) = p.strip_prefix('/') else {
            continue;
        };
        let path = rest
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        wanted.entry(path).or_default().push(i);
    }
    if wanted.is_empty() {
        return found;
    }
    // The path to the value being read: for each open container, the key
    // or index of the child being read.
    enum Open {
        Seq(usize),
        Map(Option<String>),
    }
    let mut stack: Vec<Open> = Vec::new();
    // Where the last mapping key was read: a member is located at its key.
    let mut key_at = (1, 1);
    let path_of = |stack: &[Open]| -> Vec<String> {
        stack
            .iter()
            .map(|o| match o {
                Open::Seq(i) => i.to_string(),
                Open::Map(k) => k.clone().unwrap_or_default(),
            })
            .collect()
    };
    let mut left = wanted.len();
    for ev in Parser::new_from_str(text) {
        let Ok((ev, span)) = ev else { break };
        let here = (span.start.line(), span.start.col() + 1);
        let is_key = matches!(stack.last(), Some(Open::Map(None)));
        let starts_value = matches!(
            ev,
            Event::Scalar(..)
                | Event::Alias(_)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
        );
        if starts_value && !is_key {
            if let Some(ids) = wanted.remove(&path_of(&stack)) {
                let at = match stack.last() {
                    Some(Open::Map(_)) => key_at,
                    _ => here,
                };
                for i in ids {
                    found[i] = Some(at);
                }
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
        // After a value completes in a container, move to the next child.
        let finish = |stack: &mut Vec<Open>| match stack.last_mut() {
            Some(Open::Seq(i)) => *i += 1,
            Some(Open::Map(k)) => *k = None,
            None => {}
        };
        match ev {
            Event::Scalar(s, ..) => {
                if is_key {
                    if let Some(Open::Map(k)) = stack.last_mut() {
                        *k = Some(s.into_owned());
                        key_at = here;
                    }
                } else {
                    finish(&mut stack);
                }
            }
            Event::Alias(_) => finish(&mut stack),
            Event::SequenceStart(..) => stack.push(Open::Seq(0)),
            Event::MappingStart(..) => stack.push(Open::Map(None)),
            Event::SequenceEnd | Event::MappingEnd => {
                stack.pop();
                finish(&mut stack);
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_core_schema() {
        let v = parse(
            "a: 1\nb: -2.5e3\nc: true\nd: ~\ne: '1'\nf: 0x1F\ng: yes\nh: .inf\n\"200\": x\n400: y\ni: [1, \"two\"]\n",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"a":1,"b":-2500.0,"c":true,"d":null,"e":"1","f":31,"g":"yes","h":".inf","200":"x","400":"y","i":[1,"two"]})
        );
    }

    #[test]
    fn json_and_yaml_agree() {
        let j = parse(r#"{"openapi": "3.1.0", "paths": {"/a": {"get": {}}}}"#).unwrap();
        let y = parse("openapi: 3.1.0\npaths:\n  /a:\n    get: {}\n").unwrap();
        assert_eq!(j, y);
    }

    #[test]
    fn aliases_copy_and_are_counted() {
        let v = parse("a: &x {k: 1}\nb: *x\n").unwrap();
        assert_eq!(v, json!({"a":{"k":1},"b":{"k":1}}));
        // Billion laughs: 10 levels of 10 aliases each.
        let mut y = String::from("l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n");
        for i in 1..10 {
            let p = i - 1;
            y.push_str(&format!(
                "l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
            ));
        }
        let e = parse(&y).unwrap_err();
        assert!(e.message.contains("more than"), "{e:?}");
    }

    #[test]
    fn bad_documents_say_where() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!((e.line, e.message.contains("duplicate key `a`")), (2, true));
        let e = parse("a: [1, 2\n").unwrap_err();
        assert!(e.message.starts_with("invalid YAML"), "{e:?}");
        let e = parse("{\"a\": }").unwrap_err();
        assert!(
            e.message.starts_with("invalid JSON") && e.line == 1,
            "{e:?}"
        );
        assert!(parse("a: 1\n---\nb: 2\n")
            .unwrap_err()
            .message
            .contains("second"));
        assert!(parse("? [a]\n: 1\n").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&format!("a: {deep}")).is_err());
        assert!(parse(&format!("{{\"a\": {deep}}}")).is_err());
        let y: String = (0..200)
            .map(|i| format!("{}k:\n", "  ".repeat(i)))
            .collect();
        assert!(parse(&y).unwrap_err().message.contains("nested deeper"));
    }

    #[test]
    fn pointers_are_located() {
        let text = "openapi: 3.0.0\npaths:\n  /pets/{id}:\n    get:\n      responses:\n        '200':\n          description: ok\n  /x:\n    - a\n    - b\n";
        assert_eq!(locate(text, "/paths/~1pets~1{id}/get"), Some((4, 5)));
        assert_eq!(
            locate(text, "/paths/~1pets~1{id}/get/responses/200/description"),
            Some((7, 11))
        );
        assert_eq!(locate(text, "/paths/~1x/1"), Some((10, 7)));
        assert_eq!(locate(text, "/nope"), None);
        let json = "{\n  \"a\": {\n    \"b\": [1,\n 2]\n  }\n}";
        assert_eq!(locate(json, "/a/b/1"), Some((4, 2)));
        assert_eq!(locate(json, "/a/b"), Some((3, 5)));
        assert_eq!(
            locate_all(
                text,
                &["/paths/~1x", "", "/paths/~1x/0", "/nope", "/paths/~1x"]
            ),
            [Some((8, 3)), Some((1, 1)), Some((9, 7)), None, Some((8, 3))]
        );
    }
}
