//! Request bodies from the command line, httpie-style.
//!
//! `name=Gold` sets a string; `rate_limits:='[{"requests":10,"per":"second"}]'`
//! sets raw JSON (numbers, booleans, `null`, lists, objects). `--data` gives
//! a whole JSON object (inline, `@file.json`, or `@-` for standard input);
//! fields are applied on top of it.

use crate::error::Error;
use serde_json::{Map, Value};

/// Parse one `FIELD=VALUE` or `FIELD:=JSON` argument. The first `=` splits
/// field from value; when a `:` stands right before it, the value is JSON.
pub fn parse_field(arg: &str) -> Result<(String, Value), Error> {
    let Some(eq) = arg.find('=') else {
        return Err(Error::Usage(format!(
            "`{arg}`: expected FIELD=VALUE (a string) or FIELD:=JSON \
             (a number, true/false, null, a list or an object)"
        )));
    };
    let (key, raw, json) = if eq > 0 && arg.as_bytes()[eq - 1] == b':' {
        (&arg[..eq - 1], &arg[eq + 1..], true)
    } else {
        (&arg[..eq], &arg[eq + 1..], false)
    };
    if key.is_empty() {
        return Err(Error::Usage(format!("`{arg}`: the field name is empty")));
    }
    let value = if json {
        serde_json::from_str(raw).map_err(|e| {
            Error::Usage(format!(
                "`{arg}`: the value of `{key}` is not valid JSON ({e}); \
                 for a string use {key}=VALUE"
            ))
        })?
    } else {
        Value::String(raw.to_string())
    };
    Ok((key.to_string(), value))
}

/// The body of a create or update: `data` (an object, or nothing) with
/// `fields` set on top. A field given twice is an error.
pub fn build_body(data: Option<Value>, fields: &[String]) -> Result<Value, Error> {
    let mut body = match data {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(Error::Usage(format!(
                "--data must be a JSON object, not {}",
                json_kind(&other)
            )))
        }
    };
    let mut seen = Vec::new();
    for arg in fields {
        let (key, value) = parse_field(arg)?;
        if seen.contains(&key) {
            return Err(Error::Usage(format!("field `{key}` is given twice")));
        }
        seen.push(key.clone());
        body.insert(key, value);
    }
    Ok(Value::Object(body))
}

/// The JSON of `--data`: inline text, `@path` for a file, `@-` for standard input.
pub fn read_data(arg: &str) -> Result<Value, Error> {
    let (text, origin) = match arg.strip_prefix('@') {
        Some("-") => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| Error::Usage(format!("--data @-: cannot read standard input: {e}")))?;
            (s, "standard input".to_string())
        }
        Some(path) => {
            let s = std::fs::read_to_string(path)
                .map_err(|e| Error::Usage(format!("--data: {path}: cannot read: {e}")))?;
            (s, path.to_string())
        }
        None => (arg.to_string(), "--data".to_string()),
    };
    parse_data(&text, &origin)
}

/// Parse `--data` text; `origin` names it in the error.
pub fn parse_data(text: &str, origin: &str) -> Result<Value, Error> {
    serde_json::from_str(text).map_err(|e| Error::Usage(format!("{origin}: not valid JSON: {e}")))
}

/// "an array", "a string"... for messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn usage(r: Result<impl std::fmt::Debug, Error>) -> String {
        match r {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn string_fields() {
        assert_eq!(
            parse_field("name=Gold").unwrap(),
            ("name".into(), json!("Gold"))
        );
        assert_eq!(
            parse_field("description=").unwrap(),
            ("description".into(), json!(""))
        );
        // Only the first `=` splits; the rest belongs to the value.
        assert_eq!(
            parse_field("name=a=b:=c").unwrap(),
            ("name".into(), json!("a=b:=c"))
        );
        // A number after `=` stays a string: the API says so if it wanted one.
        assert_eq!(
            parse_field("published=true").unwrap(),
            ("published".into(), json!("true"))
        );
    }

    #[test]
    fn json_fields() {
        assert_eq!(
            parse_field(r#"rate_limits:=[{"requests":10,"per":"second"}]"#).unwrap(),
            (
                "rate_limits".into(),
                json!([{"requests": 10, "per": "second"}])
            )
        );
        assert_eq!(parse_field("published:=true").unwrap().1, json!(true));
        assert_eq!(parse_field("quota:=null").unwrap().1, Value::Null);
        assert_eq!(parse_field("max_keys_per_app:=3").unwrap().1, json!(3));
        assert_eq!(parse_field(r#"name:="Gold""#).unwrap().1, json!("Gold"));
        assert_eq!(parse_field("apis:=[]").unwrap().1, json!([]));
    }

    #[test]
    fn bad_fields() {
        assert!(usage(parse_field("name")).contains("expected FIELD=VALUE"));
        assert!(usage(parse_field("=x")).contains("field name is empty"));
        assert!(usage(parse_field(":=1")).contains("field name is empty"));
        let m = usage(parse_field("published:=yes"));
        assert!(m.contains("not valid JSON"), "{m}");
        assert!(m.contains("published=VALUE"), "{m}");
        assert!(usage(parse_field("quota:=")).contains("not valid JSON"));
    }

    #[test]
    fn bodies() {
        let fields = vec!["id=gold".to_string(), "max_keys_per_app:=2".to_string()];
        assert_eq!(
            build_body(None, &fields).unwrap(),
            json!({"id": "gold", "max_keys_per_app": 2})
        );
        // Fields override --data.
        let data = json!({"id": "x", "product": "shop"});
        assert_eq!(
            build_body(Some(data), &fields).unwrap(),
            json!({"id": "gold", "product": "shop", "max_keys_per_app": 2})
        );
        assert_eq!(build_body(None, &[]).unwrap(), json!({}));
        assert!(
            usage(build_body(Some(json!([1])), &[])).contains("must be a JSON object, not a list")
        );
        let twice = vec!["name=a".to_string(), "name:=\"b\"".to_string()];
        assert!(usage(build_body(None, &twice)).contains("`name` is given twice"));
    }

    #[test]
    fn data_text() {
        assert_eq!(
            read_data(r#"{"name":"Gold"}"#).unwrap(),
            json!({"name": "Gold"})
        );
        let m = usage(read_data("{name:"));
        assert!(m.starts_with("--data: not valid JSON: "), "{m}");
        let m = usage(read_data("@/nonexistent/plan.json"));
        assert!(
            m.starts_with("--data: /nonexistent/plan.json: cannot read"),
            "{m}"
        );
    }
}
