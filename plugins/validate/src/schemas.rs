//! Compiling the document's schemas, once, at configure.
//!
//! The (normalised) document is one resource, `urn:tollgate:openapi`, of a
//! registry built once. Each schema location is compiled as
//! `{"$ref": "urn:tollgate:openapi#<pointer>"}`, so its own `$ref`s
//! (`#/components/schemas/Pet`) resolve against the document, recursive
//! ones included: the compiler links a recursive reference instead of
//! expanding it. Patterns run on the linear-time `regex` engine, so no
//! pattern backtracks; formats are asserted.
//!
//! Locations are gathered first ([`Compiler::schema`]) and compiled
//! together by [`Compiler::finish`], as the subschemas of one schema
//! (`{"$defs": {"0": {"$ref": ...}, ...}}`, the crate's `build_map`): the
//! crate checks a schema against its meta-schema once per build, and on
//! wasm32 it rebuilds the meta-schema's validator each time, about a
//! millisecond — once per document instead of once per location.

use crate::problem::{one_line, In, Violation};
use jsonschema::{Draft, PatternCache, PatternOptions, Registry, ValidationOptions, Validator};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

/// The document's URI in the registry.
const DOC: &str = "urn:tollgate:openapi";
/// Compiled size limits of one pattern (the `regex` crate's NFA and DFA).
const PATTERN_SIZE: usize = 1 << 20;

/// What a fragment keeps unencoded: RFC 3986 `pchar`s, and `/`.
const FRAGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// A schema's validator, set by [`Compiler::finish`] (always set once
/// `configure` succeeded).
pub type Schema = Arc<OnceLock<Validator>>;

/// Compiles schema locations of one document.
pub struct Compiler<'a> {
    doc: &'a Value,
    registry: Registry<'a>,
    /// The schemas asked for, by the pointer of the schema compiled:
    /// locations that are bare `$ref`s to one schema (every body that is a
    /// `Pet`) share its validator.
    wanted: RefCell<Vec<(String, Schema)>>,
}

impl<'a> Compiler<'a> {
    /// The registry over `doc` (normalised), built once.
    pub fn new(doc: &'a Value) -> Result<Self, String> {
        let registry = Registry::new()
            .draft(Draft::Draft202012)
            .add(DOC, doc)
            .and_then(|b| b.prepare())
            .map_err(|e| format!("the document cannot be used for references: {e}"))?;
        Ok(Compiler {
            doc,
            registry,
            wanted: RefCell::default(),
        })
    }

    /// The validator of the schema at `pointer` in the document, once
    /// [`Compiler::finish`] has run.
    pub fn schema(&self, pointer: &str) -> Schema {
        let target = bare_ref_target(self.doc, pointer);
        let mut wanted = self.wanted.borrow_mut();
        if let Some((_, s)) = wanted.iter().find(|(t, _)| *t == target) {
            return s.clone();
        }
        let s = Schema::default();
        wanted.push((target, s.clone()));
        s
    }

    /// Compile every schema asked for; the first that is refused, with its
    /// pointer.
    pub fn finish(self) -> Result<(), String> {
        let wanted = self.wanted.into_inner();
        if wanted.is_empty() {
            return Ok(());
        }
        let defs: Map<String, Value> = wanted
            .iter()
            .enumerate()
            .map(|(i, (target, _))| (i.to_string(), reference(target)))
            .collect();
        let options = options(&self.registry);
        let map = options
            .build_map(&json!({ "$defs": defs }))
            .map_err(|e| format!("the schemas are refused: {}", one_line(&e.to_string())))?;
        for (i, (target, slot)) in wanted.iter().enumerate() {
            let validator = match map.get(&format!("#/$defs/{i}")) {
                Some(v) => v.clone(),
                // `build_map` leaves out what it cannot compile: compile
                // it alone for the reason.
                None => options
                    .build(&reference(target))
                    .map_err(|e| refused(target, &e.to_string()))?,
            };
            let _ = slot.set(validator);
        }
        Ok(())
    }
}

fn options<'r>(registry: &'r Registry<'r>) -> ValidationOptions<'r> {
    jsonschema::options()
        // One compiled regex per pattern, however many validators use it.
        .with_pattern_cache(PatternCache::new())
        .with_draft(Draft::Draft202012)
        .with_registry(registry)
        .should_validate_formats(true)
        .with_pattern_options(
            PatternOptions::regex()
                .size_limit(PATTERN_SIZE)
                .dfa_size_limit(PATTERN_SIZE),
        )
}

/// `{"$ref": "urn:tollgate:openapi#<pointer>"}`.
fn reference(pointer: &str) -> Value {
    json!({ "$ref": format!("{DOC}#{}", utf8_percent_encode(pointer, FRAGMENT)) })
}

fn refused(pointer: &str, error: &str) -> String {
    let mut m = format!("the schema at {pointer} is refused: {}", one_line(error));
    if m.contains("regex") {
        m.push_str(
            " (patterns run on a linear-time engine: no look-around or \
             backreferences, and at most 1MiB compiled)",
        );
    }
    m
}

/// The pointer of the schema that the schema at `pointer` is: where its
/// chain of bare `{"$ref": "#/..."}`s ends (a few hops at most).
fn bare_ref_target(doc: &Value, pointer: &str) -> String {
    let mut at = pointer.to_string();
    for _ in 0..8 {
        let next = doc
            .pointer(&at)
            .and_then(Value::as_object)
            .filter(|o| o.len() == 1)
            .and_then(|o| o.get("$ref"))
            .and_then(Value::as_str)
            .and_then(|r| crate::openapi::local_ref(r).ok());
        match next {
            Some(next) if doc.pointer(&next).is_some() => at = next,
            _ => break,
        }
    }
    at
}

/// At most `max` violations of `instance` against `validator`.
pub fn violations(
    validator: &Validator,
    instance: &Value,
    location: In,
    name: Option<&str>,
    max: usize,
) -> Vec<Violation> {
    validator
        .iter_errors(instance)
        .take(max)
        .map(|e| {
            // Values are not echoed when they are objects or arrays.
            let message = if e.instance().is_object() || e.instance().is_array() {
                e.masked().to_string()
            } else {
                e.to_string()
            };
            Violation::new(
                location,
                name,
                e.instance_path().as_str(),
                e.kind().keyword(),
                &message,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The validator of the schema at `pointer` of `doc`.
    fn compile(doc: &Value, pointer: &str) -> Result<Validator, String> {
        let c = Compiler::new(doc).unwrap();
        let s = c.schema(pointer);
        c.finish()?;
        Ok(s.get().unwrap().clone())
    }

    #[test]
    fn recursive_refs_compile_and_validate() {
        let doc = json!({"components": {"schemas": {"Tree": {
            "type": "object", "required": ["value"],
            "properties": {"value": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": "#/components/schemas/Tree"}}}}}}});
        let v = compile(&doc, "/components/schemas/Tree").unwrap();
        let ok = json!({"value": 1, "children": [{"value": 2, "children": [{"value": 3}]}]});
        assert!(v.is_valid(&ok));
        let bad = json!({"value": 1, "children": [{"value": 2, "children": [{"value": "x"}]}]});
        let e = violations(&v, &bad, In::Body, None, 10);
        assert_eq!(e[0].pointer, "/children/0/children/0/value");
        assert_eq!(e[0].keyword, "type");
    }

    #[test]
    fn pointers_with_braces_and_spaces_compile() {
        let doc = json!({"paths": {"/a/{id} x": {"get": {"schema": {"type": "string"}}}}});
        let v = compile(&doc, "/paths/~1a~1{id} x/get/schema").unwrap();
        assert!(v.is_valid(&json!("s")));
        assert!(!v.is_valid(&json!(1)));
    }

    #[test]
    fn a_catastrophic_pattern_is_linear() {
        let doc = json!({"s": {"type": "string", "pattern": "^(a+)+$"}});
        let v = compile(&doc, "/s").unwrap();
        let hostile = format!("{}!", "a".repeat(30));
        let start = Instant::now();
        assert!(!v.is_valid(&json!(hostile)));
        assert!(start.elapsed().as_millis() < 100);
    }

    #[test]
    fn locations_share_their_target_and_refusals_name_theirs() {
        let doc = json!({"components": {"schemas": {"A": {"type": "string"},
                "Bad": {"type": "string", "pattern": "(unclosed"}}},
            "x": {"$ref": "#/components/schemas/A"}, "y": {"$ref": "#/components/schemas/A"}});
        let c = Compiler::new(&doc).unwrap();
        let (x, y, a) = (
            c.schema("/x"),
            c.schema("/y"),
            c.schema("/components/schemas/A"),
        );
        assert!(Arc::ptr_eq(&x, &y) && Arc::ptr_eq(&x, &a));
        c.finish().unwrap();
        assert!(x.get().unwrap().is_valid(&json!("s")));
        let e = compile(&doc, "/components/schemas/Bad").unwrap_err();
        assert!(
            e.starts_with("the schema at /components/schemas/Bad is refused: "),
            "{e}"
        );
        assert!(e.contains("linear-time"), "{e}");
    }

    #[test]
    fn formats_are_asserted() {
        let doc = json!({"s": {"properties": {
            "d": {"format": "date-time"}, "u": {"format": "uuid"}, "e": {"format": "email"},
            "i": {"format": "ipv4"}}}});
        let v = compile(&doc, "/s").unwrap();
        assert!(v.is_valid(&json!({"d": "2024-01-02T03:04:05Z",
            "u": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "e": "a@b.example", "i": "192.0.2.1"})));
        for bad in [
            json!({"d": "yesterday"}),
            json!({"u": "x"}),
            json!({"e": "no"}),
            json!({"i": "1.2.3"}),
        ] {
            let e = violations(&v, &bad, In::Body, None, 10);
            assert_eq!(e.len(), 1, "{bad}");
            assert_eq!(e[0].keyword, "format");
        }
    }
}
