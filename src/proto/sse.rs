//! Server-Sent Events encoder (text/event-stream), and the JSON payloads the gateway sends.

/// Appends one event: optional `id:` line, optional `event:` line, one `data:`
/// line per line of `data` (split at `\n`, `\r\n` or `\r`), then a blank line.
/// `id` and `event` must not contain CR, LF or NUL; such characters are dropped.
pub fn encode_event(out: &mut Vec<u8>, id: Option<&str>, event: Option<&str>, data: &str) {
    let _ = (out, id, event, data);
    todo!()
}

/// Appends a comment line (`:` + text) and a blank line; with empty text this is the heartbeat `:\n\n`.
pub fn encode_comment(out: &mut Vec<u8>, text: &str) {
    let _ = (out, text);
    todo!()
}

/// Appends a `retry: <ms>` field and a blank line (reconnection-time hint).
pub fn encode_retry(out: &mut Vec<u8>, ms: u64) {
    let _ = (out, ms);
    todo!()
}

/// JSON data of a `message` event: `{"from":..,"body":..}` when `body` is valid
/// UTF-8, else `{"from":..,"body_b64":..}` (standard base64 with padding).
pub fn message_json(from: &str, body: &[u8]) -> String {
    let _ = (from, body);
    todo!()
}
