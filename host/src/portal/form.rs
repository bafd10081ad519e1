//! The portal's forms: `application/x-www-form-urlencoded` bodies read
//! strictly — every field known to the form, none twice, valid
//! percent-encoding and UTF-8, bounded in number and length. Anything else
//! is the client's error (400): a browser never sends it.

use std::collections::BTreeMap;

/// The most fields one form has.
const MAX_FIELDS: usize = 16;
/// The longest value of one field, in bytes.
const MAX_VALUE: usize = 4096;

/// A form as sent: its fields by name.
#[derive(Debug, Default)]
pub struct Form {
    fields: BTreeMap<String, String>,
}

impl Form {
    /// Parse `body`, accepting only the fields named in `allowed`.
    pub fn parse(body: &[u8], allowed: &[&str]) -> Result<Form, String> {
        let text = std::str::from_utf8(body).map_err(|_| "the form is not UTF-8".to_string())?;
        let mut fields = BTreeMap::new();
        if text.is_empty() {
            return Ok(Form { fields });
        }
        for (i, pair) in text.split('&').enumerate() {
            if i >= MAX_FIELDS {
                return Err(format!("a form has at most {MAX_FIELDS} fields"));
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k)?;
            let v = decode(v)?;
            if !allowed.contains(&k.as_str()) {
                return Err(format!("unexpected field `{}`", short(&k)));
            }
            if v.len() > MAX_VALUE {
                return Err(format!("field `{k}` is longer than {MAX_VALUE} bytes"));
            }
            if v.chars()
                .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
            {
                return Err(format!("field `{k}` holds control characters"));
            }
            if fields.insert(k.clone(), v).is_some() {
                return Err(format!("field `{k}` is sent twice"));
            }
        }
        Ok(Form { fields })
    }

    /// A field's value (empty when absent).
    pub fn get(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Percent-decoding with `+` as a space; a bad escape or bad UTF-8 is an
/// error.
pub fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| "a bad percent-escape in the form".to_string())?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "the form is not UTF-8".to_string())
}

/// The value of query parameter `name` in `query` (the first; decoded).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('=').or(Some((p, ""))))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| decode(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_forms() {
        let f = Form::parse(b"email=a%40b.io&password=p+q%2B", &["email", "password"]).unwrap();
        assert_eq!((f.get("email"), f.get("password")), ("a@b.io", "p q+"));
        assert_eq!(f.get("other"), "");
        for bad in [
            &b"email=a&email=b"[..],
            b"email=%zz",
            b"email=%4",
            b"nope=1",
            b"email=%ff",
            b"email=a%00b",
            b"\xff=1",
        ] {
            assert!(Form::parse(bad, &["email"]).is_err(), "{bad:?}");
        }
        let many = vec!["email=1"; 17].join("&");
        assert!(Form::parse(many.as_bytes(), &["email"]).is_err());
        let long = format!("email={}", "x".repeat(MAX_VALUE + 1));
        assert!(Form::parse(long.as_bytes(), &["email"]).is_err());
        assert_eq!(
            query_param(Some("a=1&next=%2Fapps"), "next").as_deref(),
            Some("/apps")
        );
    }
}
