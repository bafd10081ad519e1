//! Media types: a `content-type` against the keys of an OpenAPI `content`
//! map (`application/json`, `image/*`, `*/*`). Parameters such as
//! `charset` are ignored; names compare case-insensitively.

/// A media range from a `content` map: `type/subtype`, either part `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRange {
    /// As written in the document (for messages).
    pub written: String,
    kind: String,
    subtype: String,
}

impl MediaRange {
    /// Parse a `content` key; `None` if it is not `type/subtype`.
    pub fn parse(written: &str) -> Option<MediaRange> {
        let (kind, subtype) = essence(written)?;
        Some(MediaRange {
            written: written.to_string(),
            kind,
            subtype,
        })
    }

    /// How well `(kind, subtype)` matches: 3 exact, 2 `type/*`, 1 `*/*`,
    /// 0 not at all.
    fn rank(&self, kind: &str, subtype: &str) -> u8 {
        match (self.kind.as_str(), self.subtype.as_str()) {
            ("*", "*") => 1,
            (k, "*") if k == kind => 2,
            (k, s) if k == kind && s == subtype => 3,
            _ => 0,
        }
    }
}

/// `type/subtype` of a media type, lower-cased, without parameters.
pub fn essence(media_type: &str) -> Option<(String, String)> {
    let main = media_type.split(';').next()?.trim().to_ascii_lowercase();
    let (kind, subtype) = main.split_once('/')?;
    let token = |s: &str| !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '/');
    (token(kind) && token(subtype)).then(|| (kind.to_string(), subtype.to_string()))
}

/// Whether a media type is JSON: `application/json` or `*/*+json`.
pub fn is_json(kind: &str, subtype: &str) -> bool {
    (kind == "application" && subtype == "json") || subtype.ends_with("+json")
}

/// The index of the range in `ranges` that best matches `content_type`
/// (exact before `type/*` before `*/*`; the first of equals).
pub fn best_match<'a, T>(
    ranges: impl IntoIterator<Item = (&'a MediaRange, T)>,
    content_type: &str,
) -> Option<T> {
    let (kind, subtype) = essence(content_type)?;
    let mut best: Option<(u8, T)> = None;
    for (range, item) in ranges {
        let rank = range.rank(&kind, &subtype);
        if rank > 0 && best.as_ref().is_none_or(|(b, _)| rank > *b) {
            best = Some((rank, item));
        }
    }
    best.map(|(_, item)| item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_by_precedence() {
        let ranges: Vec<MediaRange> = ["*/*", "application/*", "application/json"]
            .iter()
            .map(|r| MediaRange::parse(r).unwrap())
            .collect();
        let pick = |ct| best_match(ranges.iter().zip(0..), ct);
        assert_eq!(pick("application/json; charset=utf-8"), Some(2));
        assert_eq!(pick("Application/JSON"), Some(2));
        assert_eq!(pick("application/xml"), Some(1));
        assert_eq!(pick("text/plain"), Some(0));
        assert_eq!(pick("nonsense"), None);
        let json_only = [MediaRange::parse("application/json").unwrap()];
        assert_eq!(best_match(json_only.iter().zip(0..), "text/plain"), None);
        assert!(is_json("application", "problem+json"));
        assert!(!is_json("text", "plain"));
    }
}
