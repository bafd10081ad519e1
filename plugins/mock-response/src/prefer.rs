//! The `Prefer` request header (RFC 7240) as Prism reads it for mocks:
//! `Prefer: code=404, example=dog`.

/// What a call prefers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Prefer {
    /// `code=404`.
    pub code: Option<u16>,
    /// `example=dog`.
    pub example: Option<String>,
}

/// The preferences of every `Prefer` field; the first of each wins.
/// Values may be quoted; parameters after `;` are ignored.
pub fn parse(fields: &[Vec<u8>]) -> Prefer {
    let mut out = Prefer::default();
    for field in fields {
        let text = String::from_utf8_lossy(field);
        for preference in text.split(',') {
            let main = preference.split(';').next().unwrap_or_default();
            let Some((name, value)) = main.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "code" if out.code.is_none() => {
                    out.code = value.parse().ok().filter(|c| (100..=599).contains(c))
                }
                "example" if out.example.is_none() && !value.is_empty() => {
                    out.example = Some(value.to_string())
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_are_read_from_every_field() {
        let p = parse(&[
            b"respond-async, code=404".to_vec(),
            b"example=\"dog\"; x=1".to_vec(),
        ]);
        assert_eq!(
            p,
            Prefer {
                code: Some(404),
                example: Some("dog".into())
            }
        );
        assert_eq!(parse(&[b"code=999, code=abc".to_vec()]).code, None);
        assert_eq!(parse(&[]), Prefer::default());
    }
}
