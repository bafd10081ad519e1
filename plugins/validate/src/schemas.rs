//! Compiling the document's schemas, once, at configure.
//!
//! The (normalised) document is one resource, `urn:tollgate:openapi`, of a
//! registry built once. Each schema location is compiled as
//! `{"$ref": "urn:tollgate:openapi#<pointer>"}`, so its own `$ref`s
//! (`#/components/schemas/Pet`) resolve against the document, recursive
//! ones included: the compiler links a recursive reference instead of
//! expanding it. Patterns run on the linear-time `regex` engine, so no
//! pattern backtracks; formats are asserted.

use crate::problem::{one_line, In, Violation};
use jsonschema::{Draft, PatternOptions, Registry, Validator};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

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

/// Compiles schema locations of one document.
pub struct Compiler<'a> {
    registry: Registry<'a>,
}

impl<'a> Compiler<'a> {
    /// The registry over `doc` (normalised), built once.
    pub fn new(doc: &'a Value) -> Result<Self, String> {
        let registry = Registry::new()
            .draft(Draft::Draft202012)
            .add(DOC, doc)
            .and_then(|b| b.prepare())
            .map_err(|e| format!("the document cannot be used for references: {e}"))?;
        Ok(Compiler { registry })
    }

    /// The validator of the schema at `pointer` in the document.
    pub fn compile(&self, pointer: &str) -> Result<Validator, String> {
        let target = format!("{DOC}#{}", utf8_percent_encode(pointer, FRAGMENT));
        jsonschema::options()
            .with_draft(Draft::Draft202012)
            .with_registry(&self.registry)
            .should_validate_formats(true)
            .with_pattern_options(
                PatternOptions::regex()
                    .size_limit(PATTERN_SIZE)
                    .dfa_size_limit(PATTERN_SIZE),
            )
            .build(&json!({ "$ref": target }))
            .map_err(|e| {
                let mut m = format!(
                    "the schema at {pointer} is refused: {}",
                    one_line(&e.to_string())
                );
                if m.contains("regex") {
                    m.push_str(
                        " (patterns run on a linear-time engine: no look-around or \
                         backreferences, and at most 1MiB compiled)",
                    );
                }
                m
            })
    }
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

    #[test]
    fn recursive_refs_compile_and_validate() {
        let doc = json!({"components": {"schemas": {"Tree": {
            "type": "object", "required": ["value"],
            "properties": {"value": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": "#/components/schemas/Tree"}}}}}}});
        let c = Compiler::new(&doc).unwrap();
        let v = c.compile("/components/schemas/Tree").unwrap();
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
        let c = Compiler::new(&doc).unwrap();
        let v = c.compile("/paths/~1a~1{id} x/get/schema").unwrap();
        assert!(v.is_valid(&json!("s")));
        assert!(!v.is_valid(&json!(1)));
    }

    #[test]
    fn a_catastrophic_pattern_is_linear() {
        let doc = json!({"s": {"type": "string", "pattern": "^(a+)+$"}});
        let v = Compiler::new(&doc).unwrap().compile("/s").unwrap();
        let hostile = format!("{}!", "a".repeat(30));
        let start = Instant::now();
        assert!(!v.is_valid(&json!(hostile)));
        assert!(start.elapsed().as_millis() < 100);
    }

    #[test]
    fn formats_are_asserted() {
        let doc = json!({"s": {"properties": {
            "d": {"format": "date-time"}, "u": {"format": "uuid"}, "e": {"format": "email"},
            "i": {"format": "ipv4"}}}});
        let v = Compiler::new(&doc).unwrap().compile("/s").unwrap();
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
