//! HTTP/1.1 response encoders.

/// Standard reason phrase for a status code ("Unknown" for codes not used here).
pub fn reason(status: u16) -> &'static str {
    let _ = status;
    todo!()
}

/// Appends a complete response with a Content-Length body.
/// Adds `Connection: close` when `close` is true.
pub fn write_response(out: &mut Vec<u8>, status: u16, content_type: &str, body: &[u8], close: bool) {
    let _ = (out, status, content_type, body, close);
    todo!()
}

/// Appends a JSON error response `{"error": code, "message": message}` (properly escaped).
pub fn write_json_error(out: &mut Vec<u8>, status: u16, code: &str, message: &str, close: bool) {
    let _ = (out, status, code, message, close);
    todo!()
}

/// Appends the head of an SSE stream: `200 OK`, `Content-Type: text/event-stream`,
/// `Cache-Control: no-cache`, `X-Accel-Buffering: no`, `Connection: close`, and no
/// Content-Length (the body is delimited by the connection closing).
pub fn write_sse_head(out: &mut Vec<u8>) {
    let _ = out;
    todo!()
}
