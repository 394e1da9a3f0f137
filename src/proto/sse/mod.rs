//! Server-Sent Events encoder (text/event-stream), and the JSON payloads the gateway sends.
//!
//! The JSON string escaping of message bodies is in `json_text`.

mod json_text;
#[cfg(test)]
mod tests;

pub use json_text::plain_json_text;
pub(crate) use json_text::{push_json_str, push_json_text};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;

use super::response::{push_decimal, to_json};

/// Appends `name`, then `: value` (or nothing if `value` is empty), then LF.
fn push_field(out: &mut Vec<u8>, name: &[u8], value: &str) {
    out.extend_from_slice(name);
    out.push(b':');
    if !value.is_empty() {
        // One space after the colon: a parser strips exactly one, so a value
        // that itself starts with a space survives.
        out.push(b' ');
        out.extend_from_slice(value.as_bytes());
    }
    out.push(b'\n');
}

/// Appends a field whose value must be a single line: CR, LF and NUL are dropped.
fn push_single_line_field(out: &mut Vec<u8>, name: &[u8], value: &str) {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        let clean: String = value
            .chars()
            .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
            .collect();
        push_field(out, name, &clean);
    } else {
        push_field(out, name, value);
    }
}

/// Splits `text` into lines at `\n`, `\r\n` or `\r` (as an SSE parser does).
/// There is always at least one line; a trailing line break yields an empty last line.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// Appends one event: optional `id:` line, optional `event:` line, one `data:`
/// line per line of `data` (split at `\n`, `\r\n` or `\r`), then a blank line.
/// `id` and `event` must not contain CR, LF or NUL; such characters are dropped.
///
/// `Some("")` as id is written as a bare `id:` line (it resets the client's last
/// event id); an event name that is empty (after dropping characters) is
/// omitted, since the empty type means `message` anyway. Empty `data` is
/// written as a bare `data:` line so the event is still dispatched.
pub fn encode_event(out: &mut Vec<u8>, id: Option<&str>, event: Option<&str>, data: &str) {
    if let Some(id) = id {
        push_single_line_field(out, b"id", id);
    }
    if let Some(event) = event {
        if event.chars().any(|c| !matches!(c, '\r' | '\n' | '\0')) {
            push_single_line_field(out, b"event", event);
        }
    }
    for line in lines(data) {
        push_field(out, b"data", line);
    }
    out.push(b'\n');
}

/// Appends a comment line (`:` + text) and a blank line; with empty text this is the heartbeat `:\n\n`.
///
/// A `text` with line breaks becomes several comment lines (so it can never be
/// read as a field).
pub fn encode_comment(out: &mut Vec<u8>, text: &str) {
    for line in lines(text) {
        out.push(b':');
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Appends a `retry: <ms>` field line (reconnection-time hint) with no blank
/// line after it: the event encoded next carries it in the same block. A
/// block of its own would be dispatched by some client libraries (httpx-sse)
/// as a `message` event with empty data.
pub fn encode_retry(out: &mut Vec<u8>, ms: u64) {
    out.extend_from_slice(b"retry: ");
    push_decimal(out, ms);
    out.push(b'\n');
}

/// `message` payload with a text body.
#[derive(Serialize)]
struct TextMessage<'a> {
    from: &'a str,
    body: &'a str,
}

/// `message` payload with a binary body.
#[derive(Serialize)]
struct BinaryMessage<'a> {
    from: &'a str,
    body_b64: &'a str,
}

/// JSON data of a `message` event: `{"from":..,"body":..}` when `body` is valid
/// UTF-8, else `{"from":..,"body_b64":..}` (standard base64 with padding).
///
/// The JSON never contains a raw line break (serde_json escapes control
/// characters), so it always fits in a single `data:` line.
pub fn message_json(from: &str, body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text) => to_json(&TextMessage { from, body: text }),
        Err(_) => to_json(&BinaryMessage {
            from,
            body_b64: &STANDARD.encode(body),
        }),
    }
}

/// Appends a `message` event with event id `id`: the same bytes as
/// `encode_event(out, Some(&id.to_string()), Some("message"), &message_json(from, body))`,
/// written in place without the intermediate strings (this is the per-message
/// hot path of the relay). With `json` (a body [`super::json_body::take_json`]
/// took: valid, compact JSON), the body is the value of a `json` field,
/// written as it is: `{"from":..,"json":<body>}`.
pub fn encode_message(
    out: &mut Vec<u8>,
    id: crate::ids::EventId,
    from: &str,
    body: &[u8],
    json: bool,
) {
    encode_message_start(out, id, from);
    push_body_field(out, body, json);
    out.extend_from_slice(b"}\n\n");
}

/// Appends a message body's member of the JSON object both transports
/// write (SSE's `data`, WebSocket's event): `,"json":<body>` with `json`
/// (compact JSON, as it is), else `,"body":"<text>"` if the body is UTF-8,
/// else `,"body_b64":"<standard base64 with padding>"`. One escape pass.
pub(crate) fn push_body_field(out: &mut Vec<u8>, body: &[u8], json: bool) {
    if json {
        out.extend_from_slice(b",\"json\":");
        out.extend_from_slice(body);
        return;
    }
    let mark = out.len();
    out.extend_from_slice(b",\"body\":");
    if !push_json_text(out, body) {
        // Not UTF-8: what was appended goes, and the body goes as base64.
        out.truncate(mark);
        out.extend_from_slice(b",\"body_b64\":\"");
        out.extend_from_slice(STANDARD.encode(body).as_bytes());
        out.push(b'"');
    }
}

/// The `message` event up to its `from` field: `id: ..`, `event: message`,
/// `data: {"from":".."`.
fn encode_message_start(out: &mut Vec<u8>, id: crate::ids::EventId, from: &str) {
    out.extend_from_slice(b"id: ");
    id.push_to(out);
    out.extend_from_slice(b"\nevent: message\ndata: {\"from\":");
    push_json_str(out, from.as_bytes());
}

/// What follows the body of a `message` event whose body is plain text
/// (see [`encode_message_head`]).
const PLAIN_MESSAGE_TAIL: &[u8] = b"\"}\n\n";

/// What follows the body of a `message` event whose body is JSON.
const JSON_MESSAGE_TAIL: &[u8] = b"}\n\n";

/// What follows the body in the event [`encode_message_head`] starts.
pub fn message_tail(json: bool) -> &'static [u8] {
    if json {
        JSON_MESSAGE_TAIL
    } else {
        PLAIN_MESSAGE_TAIL
    }
}

/// Appends the start of the `message` event of a body that is written as it
/// is kept: a JSON body (`json`), or one for which [`plain_json_text`] holds
/// (up to its opening quote). The event is then exactly these bytes, the
/// body's own bytes, and [`message_tail`] (the same bytes as
/// [`encode_message`]), so the body can be written from where it is kept
/// instead of being copied into the event.
pub fn encode_message_head(out: &mut Vec<u8>, id: crate::ids::EventId, from: &str, json: bool) {
    encode_message_start(out, id, from);
    out.extend_from_slice(if json { b",\"json\":" } else { b",\"body\":\"" });
}
