//! HTTP/1.1 response encoders.

use serde::Serialize;

/// Defines [`reason`] and [`status_line`] from one table, so that the status
/// line of a known code is one static string.
macro_rules! statuses {
    ($($code:literal => $reason:literal,)*) => {
        /// Standard reason phrase for a status code ("Unknown" for codes not used here).
        pub fn reason(status: u16) -> &'static str {
            match status {
                $($code => $reason,)*
                _ => "Unknown",
            }
        }

        /// `HTTP/1.1 <status> <reason>\r\n` of a code in the table.
        fn known_status_line(status: u16) -> Option<&'static [u8]> {
            match status {
                $($code => Some(concat!("HTTP/1.1 ", $code, " ", $reason, "\r\n").as_bytes()),)*
                _ => None,
            }
        }
    };
}

statuses! {
    200 => "OK",
    201 => "Created",
    202 => "Accepted",
    204 => "No Content",
    301 => "Moved Permanently",
    302 => "Found",
    304 => "Not Modified",
    400 => "Bad Request",
    401 => "Unauthorized",
    403 => "Forbidden",
    404 => "Not Found",
    405 => "Method Not Allowed",
    408 => "Request Timeout",
    409 => "Conflict",
    411 => "Length Required",
    413 => "Content Too Large",
    414 => "URI Too Long",
    415 => "Unsupported Media Type",
    421 => "Misdirected Request",
    426 => "Upgrade Required",
    429 => "Too Many Requests",
    431 => "Request Header Fields Too Large",
    500 => "Internal Server Error",
    501 => "Not Implemented",
    502 => "Bad Gateway",
    503 => "Service Unavailable",
    504 => "Gateway Timeout",
    505 => "HTTP Version Not Supported",
}

/// `"00" "01" ... "99"`: two digits per division in [`push_decimal`].
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends the decimal digits of `n` to `out` without allocating.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `HTTP/1.1 <status> <reason>\r\n`.
fn push_status_line(out: &mut Vec<u8>, status: u16) {
    if let Some(line) = known_status_line(status) {
        out.extend_from_slice(line);
        return;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends a complete response with a Content-Length body.
/// Adds `Connection: close` when `close` is true.
///
/// `content_type` is trusted (written as is).
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    close: bool,
) {
    out.reserve(96 + content_type.len() + body.len());
    push_status_line(out, status);
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    push_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Adds `Retry-After: secs` to the answer whose head starts `out` (after its status line).
pub fn insert_retry_after(out: &mut Vec<u8>, secs: u64) {
    let Some(at) = out.windows(2).position(|w| w == b"\r\n") else {
        return;
    };
    let mut h = b"Retry-After: ".to_vec();
    push_decimal(&mut h, secs);
    h.extend_from_slice(b"\r\n");
    out.splice(at + 2..at + 2, h);
}

/// Body of a JSON error response.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

/// Serializes `value` to JSON.
pub(crate) fn to_json<T: Serialize>(value: &T) -> String {
    // Only used with structs of strings and other plain fields: their
    // serialization cannot fail (no maps with non-string keys, no I/O).
    serde_json::to_string(value).expect("serializing plain string fields cannot fail")
}

/// Appends a JSON error response `{"error": code, "message": message}` (properly escaped).
pub fn write_json_error(out: &mut Vec<u8>, status: u16, code: &str, message: &str, close: bool) {
    let body = to_json(&ErrorBody {
        error: code,
        message,
    });
    write_response(out, status, "application/json", body.as_bytes(), close);
}

/// The interim answer to a request with `Expect: 100-continue` whose body is wanted.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends the head of an SSE stream: `200 OK`, `Content-Type: text/event-stream`,
/// `Cache-Control: no-cache`, `X-Accel-Buffering: no`, `Connection: close`, and no
/// Content-Length. With `chunked` (HTTP/1.1 clients) the body is
/// `Transfer-Encoding: chunked` (see [`super::stream`]); without (HTTP/1.0), it is
/// delimited by the connection closing.
pub fn write_sse_head(out: &mut Vec<u8>, chunked: bool) {
    push_status_line(out, 200);
    out.extend_from_slice(
        b"Content-Type: text/event-stream\r\n\
          Cache-Control: no-cache\r\n\
          X-Accel-Buffering: no\r\n\
          Connection: close\r\n",
    );
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).expect("responses are ASCII / UTF-8 here")
    }

    #[test]
    fn reasons() {
        let expected = [
            (200, "OK"),
            (202, "Accepted"),
            (204, "No Content"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (408, "Request Timeout"),
            (411, "Length Required"),
            (413, "Content Too Large"),
            (414, "URI Too Long"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (501, "Not Implemented"),
            (503, "Service Unavailable"),
            (505, "HTTP Version Not Supported"),
        ];
        for (status, phrase) in expected {
            assert_eq!(reason(status), phrase);
        }
        assert_eq!(reason(299), "Unknown");
        assert_eq!(reason(0), "Unknown");
    }

    #[test]
    fn decimal() {
        let mut cases = vec![0u64, 7, 10, 99, 100, 12345, u64::MAX, u64::MAX - 1];
        // Both sides of every digit-count boundary.
        let mut p = 1u64;
        while let Some(next) = p.checked_mul(10) {
            cases.extend([p - 1, p, p + 1, next - 1]);
            p = next;
        }
        cases.extend((0..1000).chain([1_000_000_007, 4_294_967_296]));
        for n in cases {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(text(&out[1..]), n.to_string());
        }
    }

    #[test]
    fn status_lines() {
        // The static line of every known code, and the built line of others,
        // read "HTTP/1.1 <code> <reason>\r\n".
        for status in 100..1000u16 {
            let mut out = Vec::new();
            push_status_line(&mut out, status);
            assert_eq!(
                text(&out),
                format!("HTTP/1.1 {status} {}\r\n", reason(status))
            );
        }
    }

    #[test]
    fn plain_response() {
        let mut out = Vec::new();
        write_response(&mut out, 202, "text/plain", b"queued", false);
        assert_eq!(
            text(&out),
            "HTTP/1.1 202 Accepted\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nqueued"
        );
        out.clear();
        write_response(&mut out, 204, "text/plain", b"", true);
        assert_eq!(
            text(&out),
            "HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        // Appends, does not overwrite.
        let mut out = b"prev".to_vec();
        write_response(&mut out, 200, "a/b", b"x", false);
        assert!(out.starts_with(b"prevHTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn json_error() {
        let mut out = Vec::new();
        write_json_error(
            &mut out,
            400,
            "malformed_request",
            "Bad \"thing\"\n\u{e9}",
            true,
        );
        let s = text(&out);
        let (head, body) = s.split_once("\r\n\r\n").expect("head and body");
        assert_eq!(
            body,
            "{\"error\":\"malformed_request\",\"message\":\"Bad \\\"thing\\\"\\n\u{e9}\"}"
        );
        assert_eq!(
            head,
            format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close",
                body.len()
            )
        );
        let v: serde_json::Value = serde_json::from_str(body).expect("valid JSON");
        assert_eq!(v["error"], "malformed_request");
        assert_eq!(v["message"], "Bad \"thing\"\n\u{e9}");

        let mut out = Vec::new();
        write_json_error(&mut out, 431, "headers_too_large", "x", false);
        assert!(text(&out).starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(!text(&out).contains("Connection"));
    }

    #[test]
    fn sse_head() {
        let mut out = Vec::new();
        write_sse_head(&mut out, false);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
             X-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
        );
        assert!(!text(&out).contains("Content-Length"));
        out.clear();
        write_sse_head(&mut out, true);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
             X-Accel-Buffering: no\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }
}
