//! Checks on everything a step returns before the gateway applies it: header
//! operations, complete responses, paths and queries. A step that breaks one
//! fails with [`PolicyError::BadOutput`].

use super::{escape_log, Header, HeaderOp, PolicyError, Response};

/// Most header operations or headers a step may return in one decision.
pub const MAX_HEADERS_OUT: usize = 1000;

/// Headers that frame the message or the connection: a plugin may not set
/// them (the host computes them), or the gateway could be made to smuggle.
pub fn is_framing_header(name: &str) -> bool {
    matches!(
        name,
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "upgrade"
            | "te"
            | "trailer"
    )
}

fn check_header(step: &str, name: &str, value: &[u8]) -> Result<(), PolicyError> {
    let bad = |detail: String| PolicyError::BadOutput {
        step: step.to_string(),
        detail,
    };
    let hn = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| bad(format!("`{}` is not a valid header name", escape_log(name))))?;
    if hn.as_str() != name {
        return Err(bad(format!("header name `{name}` must be lower-case")));
    }
    if is_framing_header(name) {
        return Err(bad(format!(
            "header `{name}` frames the message and is set by the gateway"
        )));
    }
    http::HeaderValue::from_bytes(value).map_err(|_| {
        bad(format!(
            "the value of header `{name}` contains CR, LF or NUL"
        ))
    })?;
    Ok(())
}

/// Check header operations without applying them (the response headers
/// a request phase attaches, checked when it returns).
pub fn check_header_ops(step: &str, ops: &[HeaderOp]) -> Result<(), PolicyError> {
    if ops.len() > MAX_HEADERS_OUT {
        return Err(PolicyError::BadOutput {
            step: step.to_string(),
            detail: format!(
                "{} header operations (at most {MAX_HEADERS_OUT})",
                ops.len()
            ),
        });
    }
    for op in ops {
        match op {
            HeaderOp::Set(h) | HeaderOp::Append(h) => check_header(step, &h.name, &h.value)?,
            HeaderOp::Remove(name) => {
                let lower = name.to_ascii_lowercase();
                if is_framing_header(&lower) {
                    return Err(PolicyError::BadOutput {
                        step: step.to_string(),
                        detail: format!(
                            "header `{}` frames the message and is set by the gateway",
                            escape_log(&lower)
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Check and apply header operations in order.
pub fn apply_header_ops(
    step: &str,
    headers: &mut Vec<Header>,
    ops: Vec<HeaderOp>,
) -> Result<(), PolicyError> {
    check_header_ops(step, &ops)?;
    for op in ops {
        match op {
            HeaderOp::Set(h) => {
                headers.retain(|x| x.name != h.name);
                headers.push(h);
            }
            HeaderOp::Append(h) => headers.push(h),
            HeaderOp::Remove(name) => {
                let lower = name.to_ascii_lowercase();
                headers.retain(|x| x.name != lower);
            }
        }
    }
    if headers.len() > MAX_HEADERS_OUT {
        return Err(PolicyError::BadOutput {
            step: step.to_string(),
            detail: format!("{} headers (at most {MAX_HEADERS_OUT})", headers.len()),
        });
    }
    Ok(())
}

/// Check a complete response a step made.
pub fn check_response(step: &str, resp: &Response) -> Result<(), PolicyError> {
    if !(200..=599).contains(&resp.status) {
        return Err(PolicyError::BadOutput {
            step: step.to_string(),
            detail: format!("status {} (must be 200 to 599)", resp.status),
        });
    }
    if resp.headers.len() > MAX_HEADERS_OUT {
        return Err(PolicyError::BadOutput {
            step: step.to_string(),
            detail: format!("{} headers (at most {MAX_HEADERS_OUT})", resp.headers.len()),
        });
    }
    for h in &resp.headers {
        check_header(step, &h.name, &h.value)?;
    }
    Ok(())
}

/// Check a path a step wants to send upstream.
pub fn check_path(step: &str, path: &str) -> Result<String, PolicyError> {
    crate::route::normalize_path(path).map_err(|e| PolicyError::BadOutput {
        step: step.to_string(),
        detail: format!("path `{}`: {e}", escape_log(path)),
    })
}

/// Check a query a step wants to send upstream: only the bytes a request
/// target's query may carry as they are (so `"`, `<` and `>` too must be
/// percent-encoded; found by the `wit_boundary` fuzz target, they made the
/// upstream URI fail to build, a 500 instead of the step's fault).
pub fn check_query(step: &str, query: &str) -> Result<(), PolicyError> {
    if query
        .bytes()
        .any(|b| b <= 0x20 || b >= 0x7f || matches!(b, b'#' | b'"' | b'<' | b'>'))
    {
        return Err(PolicyError::BadOutput {
            step: step.to_string(),
            detail: format!(
                "query `{}` has characters that must be percent-encoded",
                escape_log(query)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_ops() {
        let mut hs = vec![
            Header {
                name: "a".into(),
                value: b"1".to_vec(),
            },
            Header {
                name: "a".into(),
                value: b"2".to_vec(),
            },
        ];
        apply_header_ops(
            "s",
            &mut hs,
            vec![
                HeaderOp::Append(Header {
                    name: "b".into(),
                    value: b"x".to_vec(),
                }),
                HeaderOp::Set(Header {
                    name: "a".into(),
                    value: b"3".to_vec(),
                }),
                HeaderOp::Remove("B".into()),
            ],
        )
        .unwrap();
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].value, b"3");
        for bad in [
            HeaderOp::Set(Header {
                name: "Content-Length".into(),
                value: b"1".to_vec(),
            }),
            HeaderOp::Set(Header {
                name: "content-length".into(),
                value: b"1".to_vec(),
            }),
            HeaderOp::Set(Header {
                name: "x".into(),
                value: b"a\r\nb".to_vec(),
            }),
            HeaderOp::Set(Header {
                name: "bad name".into(),
                value: b"1".to_vec(),
            }),
            HeaderOp::Remove("Transfer-Encoding".into()),
        ] {
            assert!(apply_header_ops("s", &mut hs, vec![bad]).is_err());
        }
    }
}
