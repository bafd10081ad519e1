//! The phases: a call's parameters, content type and body against its
//! operation; a response's status, content type and body.

use crate::media::{self, best_match, is_json};
use crate::params::{self, Raw};
use crate::problem::{self, In, Violation};
use crate::schemas::violations;
use crate::{Media, Mode, Operation, Status, UnknownQuery, Validate};
use serde_json::Value;
use tollgate_policy_sdk::{log, Call, RequestDecision, ResponseDecision};

const REQUEST_TITLE: &str = "The request does not match the API's description";
const RESPONSE_TITLE: &str = "The upstream's response does not match the API's description";

/// The request phase.
pub fn request(v: &Validate, call: &Call<'_>, body: Option<&[u8]>) -> RequestDecision {
    let Some(op) = v.operation(&call.route(), &call.method()) else {
        return RequestDecision::default();
    };
    let mut found = Found::new(v.max_errors);
    check_params(v, op, call, &mut found);
    let mut accepted = Vec::new();
    if let Some(spec) = &op.body {
        let body = body.filter(|b| !b.is_empty());
        match body {
            None if spec.required => found.push(Violation::new(
                In::Body,
                None,
                "",
                "required",
                "the request body is required",
            )),
            None => {}
            Some(bytes) => {
                let content_type = call.header_str("content-type");
                if let Err(list) =
                    check_media(v, &spec.media, content_type.as_deref(), bytes, &mut found)
                {
                    accepted = list;
                }
            }
        }
    }
    if found.list.is_empty() {
        return RequestDecision::default();
    }
    match v.mode {
        Mode::Enforce => {
            let status = if accepted.is_empty() { 400 } else { 415 };
            RequestDecision::Respond(problem::response(
                status,
                problem::REQUEST_TYPE,
                REQUEST_TITLE,
                &found.list,
                &accepted,
            ))
        }
        Mode::ReportOnly => {
            report(&format!("{} {} request", op.method, op.route), &found.list);
            RequestDecision::default()
        }
    }
}

/// The response phase (only with `responses = true`).
pub fn response(v: &Validate, call: &Call<'_>, body: Option<&[u8]>) -> ResponseDecision {
    let Some(op) = v.operation(&call.route(), &call.method()) else {
        return ResponseDecision::default();
    };
    let status = call.status().unwrap_or(0);
    let mut found = Found::new(v.max_errors);
    // The exact code, then its range (`2XX`), then `default`.
    let declared = [
        Status::Code(status),
        Status::Range(status / 100),
        Status::Default,
    ]
    .iter()
    .find_map(|want| op.responses.iter().find(|(s, _)| s == want));
    match declared {
        None => found.push(Violation::new(
            In::Status,
            None,
            "",
            "status",
            &format!("the status {status} is not among the operation's responses"),
        )),
        Some((_, media)) => {
            let body = body.filter(|b| !b.is_empty());
            if let (Some(bytes), false) = (body, media.is_empty()) {
                let content_type = call
                    .response_header("content-type")
                    .map(|v| String::from_utf8_lossy(&v).into_owned());
                // A refused content type is listed; the response has no
                // `accepted` to name.
                let _ = check_media(v, media, content_type.as_deref(), bytes, &mut found);
            }
        }
    }
    if found.list.is_empty() {
        return ResponseDecision::default();
    }
    match v.mode {
        Mode::Enforce => ResponseDecision::Respond(problem::response(
            502,
            problem::RESPONSE_TYPE,
            RESPONSE_TITLE,
            &found.list,
            &[],
        )),
        Mode::ReportOnly => {
            report(
                &format!("{} {} response {status}", op.method, op.route),
                &found.list,
            );
            ResponseDecision::default()
        }
    }
}

/// Violations, up to a count.
struct Found {
    list: Vec<Violation>,
    max: usize,
}

impl Found {
    fn new(max: usize) -> Self {
        Found {
            list: Vec::new(),
            max,
        }
    }
    fn room(&self) -> usize {
        self.max.saturating_sub(self.list.len())
    }
    fn push(&mut self, v: Violation) {
        if self.room() > 0 {
            self.list.push(v);
        }
    }
    fn extend(&mut self, vs: Vec<Violation>) {
        for v in vs {
            self.push(v);
        }
    }
}

fn check_params(v: &Validate, op: &Operation, call: &Call<'_>, found: &mut Found) {
    let raw_query = call.query();
    let pairs = params::query_pairs(raw_query.as_deref());
    for p in &op.params {
        let raw = match p.location {
            In::Path => match call.capture(&p.name) {
                Some(c) => Raw::Values(vec![params::decode_path(&c)]),
                None => Raw::Missing,
            },
            In::Query => params::query_values(&pairs, &p.name),
            _ => {
                let values: Vec<String> = call
                    .header_values(&p.name)
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect();
                if values.is_empty() {
                    Raw::Missing
                } else {
                    Raw::Values(values)
                }
            }
        };
        match raw {
            Raw::Missing if p.required => found.push(Violation::new(
                p.location,
                Some(&p.name),
                "",
                "required",
                &format!(
                    "the {} parameter {:?} is required",
                    p.location.as_str(),
                    p.name
                ),
            )),
            Raw::Missing => {}
            Raw::Values(values) => {
                let validator = p.validator.as_ref().and_then(|s| s.get());
                if let (Some(value), Some(validator)) = (p.value(&values), validator) {
                    let room = found.room();
                    found.extend(violations(
                        validator,
                        &value,
                        p.location,
                        Some(&p.name),
                        room,
                    ));
                }
            }
        }
    }
    if v.unknown_query == UnknownQuery::Refuse {
        let mut seen: Vec<&str> = Vec::new();
        for (key, _) in &pairs {
            let declared = op
                .params
                .iter()
                .any(|p| p.location == In::Query && p.name == *key);
            if !declared && !seen.contains(&key.as_str()) {
                seen.push(key);
                found.push(Violation::new(
                    In::Query,
                    Some(key),
                    "",
                    "unknown",
                    &format!("the query parameter {key:?} is not part of this operation"),
                ));
            }
        }
    }
}

/// The content type and (JSON) body of a request or response; `Err` with
/// the accepted media types if the content type is refused.
fn check_media(
    v: &Validate,
    media: &[Media],
    content_type: Option<&str>,
    body: &[u8],
    found: &mut Found,
) -> Result<(), Vec<String>> {
    if media.is_empty() {
        return Ok(());
    }
    let matched = content_type.and_then(|ct| best_match(media.iter().map(|m| (&m.range, m)), ct));
    let Some(m) = matched else {
        let accepted: Vec<String> = media.iter().map(|m| m.range.written.clone()).collect();
        let message = match content_type {
            Some(ct) => format!(
                "the content type {ct:?} is not accepted; accepted: {}",
                accepted.join(", ")
            ),
            None => format!(
                "a body needs a content type; accepted: {}",
                accepted.join(", ")
            ),
        };
        found.push(Violation::new(
            In::Header,
            Some("content-type"),
            "",
            "content-type",
            &message,
        ));
        return Err(accepted);
    };
    let (Some(validator), Some(ct)) = (m.schema.as_ref().and_then(|s| s.get()), content_type)
    else {
        return Ok(());
    };
    if !media::essence(ct).is_some_and(|(t, s)| is_json(&t, &s)) {
        return Ok(());
    }
    if nesting_exceeds(body, v.max_depth) {
        found.push(Violation::new(
            In::Body,
            None,
            "",
            "max-depth",
            &format!("the body nests deeper than {} levels", v.max_depth),
        ));
        return Ok(());
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => {
            found.push(Violation::new(
                In::Body,
                None,
                "",
                "json",
                &format!("the body is not JSON: {e}"),
            ));
            return Ok(());
        }
    };
    let room = found.room();
    found.extend(violations(validator, &value, In::Body, None, room));
    Ok(())
}

/// Whether JSON text nests arrays and objects deeper than `max` (a scan
/// before parsing, so a depth bomb costs one pass).
pub fn nesting_exceeds(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Log each violation (report-only).
fn report(what: &str, list: &[Violation]) {
    for violation in list {
        let line = format!("validate: {what}: {}", violation.log_line());
        log::warn(&line);
        #[cfg(test)]
        crate::tests::LOGGED.with(|l| l.borrow_mut().push(line));
    }
}
