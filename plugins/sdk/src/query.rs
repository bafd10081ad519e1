//! Query strings (`application/x-www-form-urlencoded` style) and path
//! segments.
//!
//! Decoding follows the form rules: `+` is a space and `%XX` is a byte;
//! bytes that are not UTF-8 become U+FFFD. Encoding writes a space as `%20`
//! (which every server reads as a space, whereas `+` is a space only to form
//! parsers) and a `+` as `%2B`.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Bytes left as they are in a query key or value: RFC 3986 unreserved
/// characters and the sub-delimiters that carry no meaning in a query.
const QUERY_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b',')
    .remove(b':')
    .remove(b'@')
    .remove(b'/');

/// Split a raw query string (without `?`) into its decoded `(key, value)`
/// pairs, in order. Empty pieces (`a=1&&b=2`) are skipped; a piece without
/// `=` has an empty value.
pub fn parse(query: &str) -> Vec<(String, String)> {
    raw_pairs(query)
        .map(|(k, v)| (decode_component(k), decode_component(v.unwrap_or(""))))
        .collect()
}

/// The raw pieces of a query string: `(key, value)` exactly as written
/// (still encoded), `value` being `None` for a piece without `=`. Empty
/// pieces are skipped.
pub fn raw_pairs(query: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|piece| match piece.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (piece, None),
        })
}

/// Encode `(key, value)` pairs as a query string (without `?`).
pub fn serialize<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&encode_component(k.as_ref()));
        out.push('=');
        out.push_str(&encode_component(v.as_ref()));
    }
    out
}

/// Percent-encode a query key or value.
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, QUERY_COMPONENT).to_string()
}

/// Decode a query key or value: `+` is a space, `%XX` a byte.
pub fn decode_component(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// Encode text for use as one path segment: every byte that is not allowed
/// in a segment (RFC 3986 `pchar`: unreserved, sub-delimiters, `:` and `@`)
/// is percent-encoded, so `/`, `?`, `#` and spaces cannot change the shape of
/// the path. The text is taken to be already normalised: a `%` that starts a
/// valid `%XX` escape is kept, any other `%` is encoded as `%25`.
pub fn encode_path_segment(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    for (i, &b) in bytes.iter().enumerate() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            )
            || (b == b'%'
                && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit));
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_decodes_form_style() {
        assert_eq!(
            parse("a=1&b=x+y&c=x%20y&d&&e=&f=%2B&a=2"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "x y".into()),
                ("d".into(), "".into()),
                ("e".into(), "".into()),
                ("f".into(), "+".into()),
                ("a".into(), "2".into()),
            ]
        );
        assert_eq!(parse(""), vec![]);
        assert_eq!(parse("x=%ff%zz"), vec![("x".into(), "\u{fffd}%zz".into())]);
    }

    #[test]
    fn serialize_encodes() {
        assert_eq!(
            serialize([("a b", "c+d"), ("e", ""), ("é", "&=#?/")]),
            "a%20b=c%2Bd&e=&%C3%A9=%26%3D%23%3F/"
        );
        let pairs = vec![("k".to_string(), "v w".to_string())];
        assert_eq!(parse(&serialize(pairs.clone())), pairs);
    }

    #[test]
    fn path_segments() {
        assert_eq!(encode_path_segment("abc-1.2_~"), "abc-1.2_~");
        assert_eq!(encode_path_segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(encode_path_segment("100%"), "100%25");
        assert_eq!(encode_path_segment("a%2Fb"), "a%2Fb");
        assert_eq!(encode_path_segment("é{}"), "%C3%A9%7B%7D");
        assert_eq!(encode_path_segment("a:b@c;d=e"), "a:b@c;d=e");
    }
}
