//! Incremental HTTP/1.1 request-head reader on top of `httparse`.
//!
//! The caller accumulates the bytes received so far and calls [`parse_head`]
//! again with the whole buffer whenever more arrive. The answer never depends on
//! how the bytes were split. Limits are checked before anything is allocated.

use std::mem::MaybeUninit;

use super::Parse;

/// Size limits for a request head.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest request line (method, target, version) in bytes; longer is 414.
    pub max_request_line: usize,
    /// Longest whole head (request line + headers + blank line); longer is 431.
    pub max_head: usize,
    /// Most header fields; more is 431.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 8 * 1024,
            max_head: 16 * 1024,
            max_headers: 64,
        }
    }
}

/// Request method. Only the ones the gateway routes are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    /// Any other syntactically valid method (answered with 405 by routing).
    Other,
}

/// The parts of a request head the gateway uses. Owned, so the input buffer can be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// Path part of the request target, without the query (not percent-decoded).
    pub path: String,
    /// Query string after `?`, without the `?`.
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// Value of Content-Length, if present (duplicates with equal values are allowed).
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked` is present (as the only / final coding).
    pub chunked: bool,
    /// The connection must close after this request: `Connection: close`, or
    /// HTTP/1.0 without `Connection: keep-alive`.
    pub close: bool,
    /// Value of the Authorization header.
    pub authorization: Option<String>,
    /// Value of the Last-Event-ID header.
    pub last_event_id: Option<String>,
    /// Number of bytes of the input the head occupied (including the blank line).
    pub head_len: usize,
}

/// Why a request head was rejected. Every variant is the client's fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Request line longer than [`Limits::max_request_line`] (414).
    UriTooLong,
    /// Head longer than [`Limits::max_head`] or more than `max_headers` fields (431).
    HeadTooLarge,
    /// Not a valid HTTP/1.x request head (400); the text says what.
    Malformed(&'static str),
    /// Content-Length that is not a number, or several that differ (400).
    BadContentLength,
    /// Both Content-Length and Transfer-Encoding (400; request smuggling guard).
    ConflictingLength,
    /// A Transfer-Encoding other than `chunked` (501).
    UnsupportedTransferEncoding,
    /// HTTP version other than 1.0 / 1.1 (505).
    UnsupportedVersion,
}

impl HeadError {
    /// HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::UriTooLong => 414,
            HeadError::HeadTooLarge => 431,
            HeadError::Malformed(_)
            | HeadError::BadContentLength
            | HeadError::ConflictingLength => 400,
            HeadError::UnsupportedTransferEncoding => 501,
            HeadError::UnsupportedVersion => 505,
        }
    }
    /// Short machine-readable error code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            HeadError::UriTooLong => "uri_too_long",
            HeadError::HeadTooLarge => "headers_too_large",
            HeadError::Malformed(_) => "malformed_request",
            HeadError::BadContentLength => "bad_content_length",
            HeadError::ConflictingLength => "conflicting_length",
            HeadError::UnsupportedTransferEncoding => "unsupported_transfer_encoding",
            HeadError::UnsupportedVersion => "http_version_not_supported",
        }
    }
    /// Human-readable text for the JSON error body.
    pub fn message(&self) -> String {
        match self {
            HeadError::UriTooLong => "The request line is too long.".to_string(),
            HeadError::HeadTooLarge => {
                "The request head is too large or has too many header fields.".to_string()
            }
            HeadError::Malformed(detail) => format!("Malformed request: {detail}."),
            HeadError::BadContentLength => "The Content-Length header is invalid.".to_string(),
            HeadError::ConflictingLength => {
                "The request has both Content-Length and Transfer-Encoding.".to_string()
            }
            HeadError::UnsupportedTransferEncoding => {
                "Only the chunked transfer coding is supported.".to_string()
            }
            HeadError::UnsupportedVersion => {
                "Only HTTP/1.0 and HTTP/1.1 are supported.".to_string()
            }
        }
    }
}

/// Header arrays up to this size live on the stack; a larger
/// [`Limits::max_headers`] falls back to one heap allocation of that size.
const STACK_HEADERS: usize = 128;

/// Parses a request head from the start of `buf`.
///
/// Returns `Partial` while the head is incomplete and within limits.
///
/// Behaviour details:
///
/// * Empty lines (CRLF or bare LF) before the request line are skipped, as
///   RFC 9112 §2.2 allows (and as `httparse` does). They count towards
///   [`Limits::max_head`] and towards `head_len`, but not towards
///   [`Limits::max_request_line`].
/// * Lines may end in CRLF or in a bare LF (RFC 9112 §2.2 leniency, as in
///   `httparse`); a CR not followed by LF is malformed.
/// * The request line length is counted without its line terminator.
/// * The effective limit on header fields is `max_headers`; the array handed
///   to `httparse` has exactly that many slots.
/// * The result only depends on the bytes up to the point where it can be
///   decided: if some prefix of `buf` yields an error, every longer buffer
///   starting with that prefix yields the same error. When a limit and a
///   syntax error become evident at the same byte, the limit wins.
/// * A duplicate `Authorization` or `Last-Event-ID` header is malformed.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Parse<RequestHead>, HeadError> {
    let start = skip_empty_lines(buf);
    // Prefix length at which each limit is exceeded, if `buf` is long enough.
    let uri_at = request_line_overflow(buf, start, limits.max_request_line);
    let head_at = if buf.len() > limits.max_head {
        Some(limits.max_head.saturating_add(1))
    } else {
        None
    };
    let limit = match (uri_at, head_at) {
        (Some(u), Some(h)) if h < u => Some((h, HeadError::HeadTooLarge)),
        (Some(u), _) => Some((u, HeadError::UriTooLong)),
        (None, Some(h)) => Some((h, HeadError::HeadTooLarge)),
        (None, None) => None,
    };
    // Only the bytes before the one that exceeds a limit are given to the
    // syntax parser, so a syntax error is reported only if it comes earlier.
    let view_len = match &limit {
        Some((at, _)) => at.saturating_sub(1).min(buf.len()),
        None => buf.len(),
    };
    let view = &buf[..view_len];
    let limit = limit.map(|(_, e)| e);
    // Uninitialised slots: `httparse` writes only the ones it fills, so a
    // request with five headers does not pay for clearing 128 (4 KiB).
    if limits.max_headers <= STACK_HEADERS {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
        parse_view(view, &mut headers[..limits.max_headers], limit)
    } else {
        let mut headers = vec![MaybeUninit::<httparse::Header<'_>>::uninit(); limits.max_headers];
        parse_view(view, &mut headers, limit)
    }
}

/// Offset of the request line: leading CRLF / LF lines skipped the way `httparse` does.
fn skip_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

/// The smallest prefix length of `buf` at which the request line (starting at
/// `start`, counted without its terminator) is known to exceed `max`, if `buf`
/// is that long. A CR at the very end of a prefix is not counted, since it may
/// be the start of the CRLF.
fn request_line_overflow(buf: &[u8], start: usize, max: usize) -> Option<usize> {
    let q = max.checked_add(1)?;
    let rest = buf.get(start..)?;
    // Only the first `q + 1` bytes of the line matter.
    let scan = &rest[..rest.len().min(q.saturating_add(1))];
    let line_end = scan.iter().position(|&b| b == b'\n').unwrap_or(scan.len());
    if q > line_end {
        // The line ends (or the buffer ends) within `max` content bytes.
        return None;
    }
    if rest[q - 1] != b'\r' {
        return Some(start + q);
    }
    // `max` content bytes followed by a CR: too long only if the CR is not
    // immediately followed by the LF.
    if q < line_end {
        Some(start + q + 1)
    } else {
        None
    }
}

/// Runs `httparse` on `view` and turns its answer into ours. `limit` is the
/// error to report if the head is still incomplete (a limit was exceeded just
/// after `view`).
fn parse_view<'b>(
    view: &'b [u8],
    headers: &mut [MaybeUninit<httparse::Header<'b>>],
    limit: Option<HeadError>,
) -> Result<Parse<RequestHead>, HeadError> {
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(view, headers) {
        Err(e) => Err(classify_error(e, view)),
        Ok(httparse::Status::Partial) => match limit {
            Some(e) => Err(e),
            None => Ok(Parse::Partial),
        },
        Ok(httparse::Status::Complete(head_len)) => build_head(&req, head_len).map(Parse::Complete),
    }
}

/// `tchar` from RFC 9110 §5.6.2 (same set `httparse` uses for methods).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes `httparse` accepts in a request target.
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Maps an `httparse` error to ours. Only looks at the bytes `httparse` must
/// have read to detect the error, so the answer does not depend on what follows.
fn classify_error(e: httparse::Error, view: &[u8]) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::HeadTooLarge,
        httparse::Error::HeaderName => HeadError::Malformed("invalid header field name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header field value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid request line"),
        httparse::Error::Token => classify_token_error(view),
        httparse::Error::Version => classify_version_error(view),
    }
}

/// Splits the request line at `view[start..]` into the method and, when the
/// method is followed by a space, the rest of the line.
fn after_method(view: &[u8]) -> (&[u8], Option<&[u8]>) {
    let line = view.get(skip_empty_lines(view)..).unwrap_or_default();
    let method_len = line
        .iter()
        .position(|&b| !is_tchar(b))
        .unwrap_or(line.len());
    match line.get(method_len) {
        Some(b' ') if method_len > 0 => (&line[..method_len], Some(&line[method_len + 1..])),
        _ => (&line[..method_len], None),
    }
}

fn classify_token_error(view: &[u8]) -> HeadError {
    let Some(rest) = after_method(view).1 else {
        return HeadError::Malformed("invalid method token");
    };
    let target_len = rest
        .iter()
        .position(|&b| !is_target_byte(b))
        .unwrap_or(rest.len());
    match rest.get(target_len) {
        Some(b' ') if target_len == 0 => HeadError::Malformed("empty request target"),
        Some(b' ') => HeadError::Malformed("request target is not valid UTF-8"),
        Some(b'\r' | b'\n') => HeadError::Malformed("missing HTTP version"),
        Some(0) => HeadError::Malformed("NUL byte in request target"),
        _ => HeadError::Malformed("invalid byte in request target"),
    }
}

fn classify_version_error(view: &[u8]) -> HeadError {
    let malformed = HeadError::Malformed("invalid HTTP version");
    let Some(rest) = after_method(view).1 else {
        return malformed;
    };
    let Some(sp) = rest.iter().position(|&b| b == b' ') else {
        return malformed;
    };
    let version = &rest[sp + 1..];
    // `httparse` stops at the first byte differing from "HTTP/1." or, if those
    // seven match, at the minor digit; decide from that byte alone.
    const EXPECTED: &[u8; 7] = b"HTTP/1.";
    match EXPECTED.iter().zip(version).position(|(e, v)| e != v) {
        Some(5) if version[5].is_ascii_digit() => HeadError::UnsupportedVersion,
        Some(_) => malformed,
        None => match version.get(7) {
            Some(b) if b.is_ascii_digit() => HeadError::UnsupportedVersion,
            _ => malformed,
        },
    }
}

/// Applies the semantic rules to a head `httparse` accepted.
fn build_head(req: &httparse::Request<'_, '_>, head_len: usize) -> Result<RequestHead, HeadError> {
    let version_minor = match req.version {
        Some(v @ (0 | 1)) => v,
        _ => return Err(HeadError::UnsupportedVersion),
    };
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some(_) => Method::Other,
        None => return Err(HeadError::Malformed("missing method")),
    };
    let target = req.path.unwrap_or_default();
    if !target.starts_with('/') {
        return Err(HeadError::Malformed("request target must start with '/'"));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };

    let mut content_length: Option<u64> = None;
    let mut bad_content_length = false;
    let mut transfer_encoding = false;
    let mut codings = 0usize;
    let mut only_chunked = true;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut authorization: Option<String> = None;
    let mut last_event_id: Option<String> = None;

    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            for item in h.value.split(|&b| b == b',') {
                match parse_decimal(trim_ows(item)) {
                    Some(n) if content_length.is_none_or(|c| c == n) => content_length = Some(n),
                    _ => bad_content_length = true,
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for item in h.value.split(|&b| b == b',').map(trim_ows) {
                if item.is_empty() {
                    continue; // empty list elements are ignored (RFC 9110 §5.6.1)
                }
                codings += 1;
                if !item.eq_ignore_ascii_case(b"chunked") {
                    only_chunked = false;
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for item in h.value.split(|&b| b == b',').map(trim_ows) {
                if item.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if item.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            if authorization.is_some() {
                return Err(HeadError::Malformed("duplicate Authorization header"));
            }
            authorization = Some(utf8_value(
                h.value,
                "Authorization header is not valid UTF-8",
            )?);
        } else if name.eq_ignore_ascii_case("last-event-id") {
            if last_event_id.is_some() {
                return Err(HeadError::Malformed("duplicate Last-Event-ID header"));
            }
            last_event_id = Some(utf8_value(
                h.value,
                "Last-Event-ID header is not valid UTF-8",
            )?);
        }
    }

    let content_length_seen = content_length.is_some() || bad_content_length;
    if transfer_encoding {
        if version_minor == 0 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if content_length_seen {
            return Err(HeadError::ConflictingLength);
        }
        if codings != 1 || !only_chunked {
            return Err(HeadError::UnsupportedTransferEncoding);
        }
    }
    if bad_content_length {
        return Err(HeadError::BadContentLength);
    }

    Ok(RequestHead {
        method,
        path,
        query,
        version_minor,
        content_length,
        chunked: transfer_encoding,
        close: conn_close || (version_minor == 0 && !conn_keep_alive),
        authorization,
        last_event_id,
        head_len,
    })
}

/// Strips optional whitespace (SP / HTAB) from both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `1*DIGIT` as a `u64`; `None` if empty, not all digits, or too big.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

fn utf8_value(value: &[u8], what: &'static str) -> Result<String, HeadError> {
    match std::str::from_utf8(value) {
        Ok(s) => Ok(s.to_string()),
        Err(_) => Err(HeadError::Malformed(what)),
    }
}

/// Looks up a query parameter by name and percent-decodes it (`+` is a space).
/// Returns `None` if absent or if its decoding is not valid UTF-8.
///
/// Keys are percent-decoded before comparing; a key without `=` has the value
/// `""`. Only the first matching parameter counts. A `%` not followed by two
/// hex digits is kept literally.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    for pair in query.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key) == name.as_bytes() {
            return String::from_utf8(percent_decode(value)).ok();
        }
    }
    None
}

/// Decodes `%XX` escapes and `+` (as a space); invalid escapes are kept as is.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|&b| hex_value(b));
                let lo = bytes.get(i + 2).and_then(|&b| hex_value(b));
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(max_request_line: usize, max_head: usize, max_headers: usize) -> Limits {
        Limits {
            max_request_line,
            max_head,
            max_headers,
        }
    }

    /// Parses `input` whole and checks every prefix: a prefix must give
    /// `Partial` or the very error the whole input gives (never a different
    /// error, never a `Complete`). Returns the result for the whole input.
    fn check_prefixes(input: &[u8], limits: &Limits) -> Result<Parse<RequestHead>, HeadError> {
        let full = parse_head(input, limits);
        let end = match &full {
            Ok(Parse::Complete(h)) => h.head_len,
            _ => input.len(),
        };
        for n in 0..end {
            let r = parse_head(&input[..n], limits);
            match (&r, &full) {
                (Ok(Parse::Partial), _) => {}
                (Err(e), Err(f)) if e == f => {}
                _ => panic!(
                    "prefix {n} of {:?}: got {r:?}, whole input gives {full:?}",
                    String::from_utf8_lossy(input)
                ),
            }
        }
        // Appending bytes after a complete head or an error changes nothing.
        if !matches!(full, Ok(Parse::Partial)) {
            let mut longer = input.to_vec();
            longer.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(parse_head(&longer, limits), full, "with bytes appended");
        }
        full
    }

    fn ok(input: &str) -> RequestHead {
        match check_prefixes(input.as_bytes(), &Limits::default()) {
            Ok(Parse::Complete(h)) => h,
            other => panic!("{input:?}: {other:?}"),
        }
    }

    fn err(input: &[u8]) -> HeadError {
        err_with(input, &Limits::default())
    }

    fn err_with(input: &[u8], limits: &Limits) -> HeadError {
        match check_prefixes(input, limits) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn simple_get() {
        let input = "GET /events?token=abc&x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\nLast-Event-ID: 42\r\n\r\nBODY";
        let h = ok(input);
        assert_eq!(
            h,
            RequestHead {
                method: Method::Get,
                path: "/events".into(),
                query: Some("token=abc&x=1".into()),
                version_minor: 1,
                content_length: None,
                chunked: false,
                close: false,
                authorization: Some("Bearer t".into()),
                last_event_id: Some("42".into()),
                head_len: input.len() - 4,
            }
        );
    }

    #[test]
    fn methods() {
        assert_eq!(ok("GET / HTTP/1.1\r\n\r\n").method, Method::Get);
        assert_eq!(ok("HEAD / HTTP/1.1\r\n\r\n").method, Method::Head);
        assert_eq!(ok("POST / HTTP/1.1\r\n\r\n").method, Method::Post);
        assert_eq!(ok("PUT / HTTP/1.1\r\n\r\n").method, Method::Other);
        assert_eq!(ok("get / HTTP/1.1\r\n\r\n").method, Method::Other);
        assert_eq!(ok("Post / HTTP/1.1\r\n\r\n").method, Method::Other);
        assert_eq!(ok("X-CUSTOM! / HTTP/1.1\r\n\r\n").method, Method::Other);
    }

    #[test]
    fn path_and_query() {
        let h = ok("GET /a/b HTTP/1.1\r\n\r\n");
        assert_eq!((h.path.as_str(), h.query), ("/a/b", None));
        let h = ok("GET /a?b?c HTTP/1.1\r\n\r\n");
        assert_eq!((h.path.as_str(), h.query.as_deref()), ("/a", Some("b?c")));
        let h = ok("GET /? HTTP/1.1\r\n\r\n");
        assert_eq!((h.path.as_str(), h.query.as_deref()), ("/", Some("")));
        let h = ok("GET /%20x HTTP/1.1\r\n\r\n");
        assert_eq!(h.path, "/%20x");
        let h = ok("GET /caf\u{e9} HTTP/1.1\r\n\r\n");
        assert_eq!(h.path, "/caf\u{e9}");
    }

    #[test]
    fn target_must_be_origin_form() {
        let e = HeadError::Malformed("request target must start with '/'");
        assert_eq!(err(b"GET http://a/ HTTP/1.1\r\n\r\n"), e);
        assert_eq!(err(b"OPTIONS * HTTP/1.1\r\n\r\n"), e);
        assert_eq!(err(b"CONNECT a:443 HTTP/1.1\r\n\r\n"), e);
    }

    #[test]
    fn versions() {
        let h = ok("GET / HTTP/1.0\r\n\r\n");
        assert_eq!((h.version_minor, h.close), (0, true));
        let h = ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!((h.version_minor, h.close), (0, false));
        let h = ok("GET / HTTP/1.0\r\nConnection: Keep-Alive, close\r\n\r\n");
        assert!(h.close);
        let h = ok("GET / HTTP/1.1\r\n\r\n");
        assert_eq!((h.version_minor, h.close), (1, false));
        for v in [
            "HTTP/2.0", "HTTP/2", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0", "HTTP/1.9",
        ] {
            let input = format!("GET / {v}\r\n\r\n");
            assert_eq!(err(input.as_bytes()), HeadError::UnsupportedVersion, "{v}");
        }
        for v in [
            "http/1.1",
            "HTTP/1.x",
            "HTTP/x.1",
            "HTTP/11.1",
            "HTTX/1.1",
            "HTTP/1.1 ",
        ] {
            let input = format!("GET / {v}\r\n\r\n");
            assert!(
                matches!(err(input.as_bytes()), HeadError::Malformed(_)),
                "{v}"
            );
        }
        assert_eq!(
            err(b"GET /\r\n\r\n"),
            HeadError::Malformed("missing HTTP version")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1x\r\n\r\n"),
            HeadError::Malformed("invalid line ending")
        );
    }

    #[test]
    fn connection_tokens() {
        assert!(ok("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").close);
        assert!(ok("GET / HTTP/1.1\r\nconnection: Upgrade, CLOSE\r\n\r\n").close);
        assert!(ok("GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n").close);
        assert!(!ok("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").close);
        assert!(!ok("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n").close);
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let input = "\r\n\n\r\nGET / HTTP/1.1\r\n\r\n";
        let h = ok(input);
        assert_eq!(h.head_len, input.len());
        // They count towards max_head but not towards max_request_line.
        let limits = lim(14, 1000, 8);
        assert!(matches!(
            check_prefixes(b"\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n", &limits),
            Ok(Parse::Complete(_))
        ));
        let limits = lim(100, 10, 8);
        assert_eq!(
            err_with(b"\r\n\r\n\r\n\r\n\r\n\r\n", &limits),
            HeadError::HeadTooLarge
        );
        assert_eq!(
            err(b"\r GET / HTTP/1.1\r\n\r\n"),
            HeadError::Malformed("invalid line ending")
        );
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        let input = "GET / HTTP/1.1\nHost: a\nAuthorization: x\n\n";
        let h = ok(input);
        assert_eq!(h.head_len, input.len());
        assert_eq!(h.authorization.as_deref(), Some("x"));
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"),
            HeadError::Malformed("invalid header field value")
        );
    }

    #[test]
    fn request_line_limit() {
        // "GET /aaaa HTTP/1.1" is 18 bytes.
        let input = b"GET /aaaa HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(
            check_prefixes(input, &lim(18, 1000, 8)),
            Ok(Parse::Complete(_))
        ));
        assert_eq!(err_with(input, &lim(17, 1000, 8)), HeadError::UriTooLong);
        let lf_input = b"GET /aaaa HTTP/1.1\nHost: x\n\n";
        assert!(matches!(
            check_prefixes(lf_input, &lim(18, 1000, 8)),
            Ok(Parse::Complete(_))
        ));
        assert_eq!(err_with(lf_input, &lim(17, 1000, 8)), HeadError::UriTooLong);
        // Incomplete request line: decided as soon as it is too long.
        let long = b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(
            parse_head(&long[..18], &lim(18, 1000, 8)),
            Ok(Parse::Partial)
        );
        assert_eq!(
            parse_head(&long[..19], &lim(18, 1000, 8)),
            Err(HeadError::UriTooLong)
        );
        // A CR right at the limit may still be the end of the line.
        assert_eq!(
            parse_head(b"GET /aaaa HTTP/1.1\r", &lim(18, 1000, 8)),
            Ok(Parse::Partial)
        );
        // Long line with a syntax error before the limit: the syntax error wins.
        let bad = b"G\0T /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n";
        assert_eq!(
            err_with(bad, &lim(18, 1000, 8)),
            HeadError::Malformed("invalid method token")
        );
        // ... and after the limit: the limit wins.
        let bad = b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\0aaaaaaaaaaaa HTTP/1.1\r\n\r\n";
        assert_eq!(err_with(bad, &lim(18, 1000, 8)), HeadError::UriTooLong);
        // The default limit.
        let mut big = b"GET /".to_vec();
        big.resize(8 * 1024 - 9, b'a');
        big.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        assert!(matches!(
            parse_head(&big, &Limits::default()),
            Ok(Parse::Complete(_))
        ));
        big.insert(5, b'a');
        assert_eq!(
            parse_head(&big, &Limits::default()),
            Err(HeadError::UriTooLong)
        );
    }

    #[test]
    fn head_size_limit() {
        let input = b"GET / HTTP/1.1\r\nHost: abc\r\n\r\n"; // 29 bytes
        assert_eq!(input.len(), 29);
        assert!(matches!(
            check_prefixes(input, &lim(100, 29, 8)),
            Ok(Parse::Complete(_))
        ));
        assert_eq!(err_with(input, &lim(100, 28, 8)), HeadError::HeadTooLarge);
        // Complete within the limit, body bytes beyond it don't matter.
        let mut with_body = input.to_vec();
        with_body.extend_from_slice(&[b'x'; 100]);
        assert!(matches!(
            parse_head(&with_body, &lim(100, 29, 8)),
            Ok(Parse::Complete(_))
        ));
        // Incomplete head: decided once the buffer is over the limit.
        assert_eq!(
            parse_head(&input[..20], &lim(100, 20, 8)),
            Ok(Parse::Partial)
        );
        assert_eq!(
            parse_head(&input[..21], &lim(100, 20, 8)),
            Err(HeadError::HeadTooLarge)
        );
        // A syntax error past the limit is not looked at.
        assert_eq!(
            err_with(
                b"GET / HTTP/1.1\r\nHost: abc\r\nX\0: y\r\n\r\n",
                &lim(100, 28, 8)
            ),
            HeadError::HeadTooLarge
        );
        assert_eq!(
            err_with(
                b"GET / HTTP/1.1\r\nHost: abc\r\nX\0: y\r\n\r\n",
                &lim(100, 29, 8)
            ),
            HeadError::Malformed("invalid header field name")
        );
        // A syntax error before the limit wins.
        assert_eq!(
            err_with(
                b"GET / HTTP/1.1\r\nHo\0st: abcdefghijklmnopqrstuvwxyz\r\n\r\n",
                &lim(100, 30, 8)
            ),
            HeadError::Malformed("invalid header field name")
        );
    }

    #[test]
    fn header_count_limit() {
        let mut input = String::from("GET / HTTP/1.1\r\n");
        for i in 0..4 {
            input.push_str(&format!("X-{i}: v\r\n"));
        }
        input.push_str("\r\n");
        assert!(matches!(
            check_prefixes(input.as_bytes(), &lim(100, 1000, 4)),
            Ok(Parse::Complete(_))
        ));
        assert_eq!(
            err_with(input.as_bytes(), &lim(100, 1000, 3)),
            HeadError::HeadTooLarge
        );
        assert_eq!(
            err_with(input.as_bytes(), &lim(100, 1000, 0)),
            HeadError::HeadTooLarge
        );
        assert!(matches!(
            check_prefixes(b"GET / HTTP/1.1\r\n\r\n", &lim(100, 1000, 0)),
            Ok(Parse::Complete(_))
        ));

        // Above the stack array size.
        let mut input = String::from("GET / HTTP/1.1\r\n");
        for i in 0..200 {
            input.push_str(&format!("X-{i}: v\r\n"));
        }
        input.push_str("\r\n");
        assert!(matches!(
            parse_head(input.as_bytes(), &lim(100, 100_000, 200)),
            Ok(Parse::Complete(_))
        ));
        assert_eq!(
            parse_head(input.as_bytes(), &lim(100, 100_000, 199)),
            Err(HeadError::HeadTooLarge)
        );
        assert_eq!(
            parse_head(input.as_bytes(), &lim(100, 100_000, 128)),
            Err(HeadError::HeadTooLarge)
        );
    }

    #[test]
    fn content_length() {
        let cl = |v: &str| {
            let input = format!("POST / HTTP/1.1\r\nContent-Length: {v}\r\n\r\n");
            match check_prefixes(input.as_bytes(), &Limits::default()) {
                Ok(Parse::Complete(h)) => Ok(h.content_length),
                Ok(Parse::Partial) => panic!("partial"),
                Err(e) => Err(e),
            }
        };
        assert_eq!(cl("0"), Ok(Some(0)));
        assert_eq!(cl("5"), Ok(Some(5)));
        assert_eq!(cl("  5  "), Ok(Some(5)));
        assert_eq!(cl("005"), Ok(Some(5)));
        assert_eq!(cl("5, 5"), Ok(Some(5)));
        assert_eq!(cl("5,5,5"), Ok(Some(5)));
        assert_eq!(cl("18446744073709551615"), Ok(Some(u64::MAX)));
        for bad in [
            "+5",
            "-1",
            "5 5",
            "5a",
            "0x5",
            "",
            "5,",
            "5, 6",
            "18446744073709551616",
            "99999999999999999999999",
            "5.0",
            "\u{0665}",
        ] {
            assert_eq!(cl(bad), Err(HeadError::BadContentLength), "{bad:?}");
        }
        let h = ok("POST / HTTP/1.1\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n");
        assert_eq!(h.content_length, Some(7));
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nContent-Length: 7\r\nCONTENT-LENGTH: 8\r\n\r\n"),
            HeadError::BadContentLength
        );
        assert_eq!(ok("GET / HTTP/1.1\r\n\r\n").content_length, None);
    }

    #[test]
    fn transfer_encoding() {
        let h = ok("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(h.chunked);
        assert_eq!(h.content_length, None);
        assert!(ok("POST / HTTP/1.1\r\ntransfer-encoding:  Chunked \r\n\r\n").chunked);
        assert!(ok("POST / HTTP/1.1\r\nTransfer-Encoding: , chunked\r\n\r\n").chunked);
        assert!(!ok("POST / HTTP/1.1\r\n\r\n").chunked);
        for bad in [
            "gzip",
            "gzip, chunked",
            "chunked, gzip",
            "chunked, chunked",
            "identity",
            "",
            "chunkedx",
        ] {
            let input = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {bad}\r\n\r\n");
            assert_eq!(
                err(input.as_bytes()),
                HeadError::UnsupportedTransferEncoding,
                "{bad:?}"
            );
        }
        assert_eq!(
            err(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            HeadError::UnsupportedTransferEncoding
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::ConflictingLength
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
            HeadError::ConflictingLength
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n"),
            HeadError::ConflictingLength
        );
        assert_eq!(
            err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request")
        );
    }

    #[test]
    fn auth_and_last_event_id() {
        let h = ok("GET / HTTP/1.1\r\nauthorization:   Bearer a.b.c  \r\nlast-event-id: \r\n\r\n");
        assert_eq!(h.authorization.as_deref(), Some("Bearer a.b.c"));
        assert_eq!(h.last_event_id.as_deref(), Some(""));
        let h = ok("GET / HTTP/1.1\r\nLast-Event-ID: \u{e9}t\u{e9}\r\n\r\n");
        assert_eq!(h.last_event_id.as_deref(), Some("\u{e9}t\u{e9}"));
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: a\r\n\r\n"),
            HeadError::Malformed("duplicate Authorization header")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nLast-Event-ID: 1\r\nlast-event-id: 2\r\n\r\n"),
            HeadError::Malformed("duplicate Last-Event-ID header")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nAuthorization: \xff\xfe\r\n\r\n"),
            HeadError::Malformed("Authorization header is not valid UTF-8")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nLast-Event-ID: \xc3\r\n\r\n"),
            HeadError::Malformed("Last-Event-ID header is not valid UTF-8")
        );
        // Non-UTF-8 in headers we ignore is fine.
        assert_eq!(
            ok("GET / HTTP/1.1\r\nX: \u{e9}\r\n\r\n").authorization,
            None
        );
    }

    #[test]
    fn malformed() {
        let m = HeadError::Malformed;
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"),
            m("invalid header field value")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nX\0: ab\r\n\r\n"),
            m("invalid header field name")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nX : ab\r\n\r\n"),
            m("invalid header field name")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\n X: ab\r\n\r\n"),
            m("invalid header field name")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"),
            m("invalid header field name")
        );
        assert_eq!(
            err(b"GET /a\0b HTTP/1.1\r\n\r\n"),
            m("NUL byte in request target")
        );
        assert_eq!(
            err(b"GET /a\x7fb HTTP/1.1\r\n\r\n"),
            m("invalid byte in request target")
        );
        assert_eq!(
            err(b"GET /\xff HTTP/1.1\r\n\r\n"),
            m("request target is not valid UTF-8")
        );
        assert_eq!(err(b"GET  / HTTP/1.1\r\n\r\n"), m("empty request target"));
        assert_eq!(err(b"G(T / HTTP/1.1\r\n\r\n"), m("invalid method token"));
        assert_eq!(err(b" GET / HTTP/1.1\r\n\r\n"), m("invalid method token"));
        assert_eq!(err(b"\0GET / HTTP/1.1\r\n\r\n"), m("invalid method token"));
        assert_eq!(err(b"GET\r\n\r\n"), m("invalid method token"));
        assert_eq!(err(b"GET / HTTP/1.1\r\r\n\r\n"), m("invalid line ending"));
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nX: y\r\n\rx"),
            m("invalid line ending")
        );
    }

    #[test]
    fn partial_inputs() {
        let limits = Limits::default();
        for input in [
            "",
            "\r",
            "\r\n",
            "G",
            "GET",
            "GET ",
            "GET /x",
            "GET /x HTTP/1.",
            "GET / HTTP/1.1\r",
            "GET / HTTP/1.1\r\nHost: a\r\n",
            "GET / HTTP/1.1\r\n\r",
        ] {
            assert_eq!(
                parse_head(input.as_bytes(), &limits),
                Ok(Parse::Partial),
                "{input:?}"
            );
        }
    }

    #[test]
    fn error_codes() {
        let all = [
            (HeadError::UriTooLong, 414, "uri_too_long"),
            (HeadError::HeadTooLarge, 431, "headers_too_large"),
            (HeadError::Malformed("x y"), 400, "malformed_request"),
            (HeadError::BadContentLength, 400, "bad_content_length"),
            (HeadError::ConflictingLength, 400, "conflicting_length"),
            (
                HeadError::UnsupportedTransferEncoding,
                501,
                "unsupported_transfer_encoding",
            ),
            (
                HeadError::UnsupportedVersion,
                505,
                "http_version_not_supported",
            ),
        ];
        for (e, status, code) in all {
            assert_eq!(e.status(), status);
            assert_eq!(e.code(), code);
            assert!(!e.message().is_empty());
        }
        assert!(HeadError::Malformed("x y").message().contains("x y"));
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("a=1&b=2", "b").as_deref(), Some("2"));
        assert_eq!(query_param("a=1&b=2", "c"), None);
        assert_eq!(query_param("a=1&a=2", "a").as_deref(), Some("1"));
        assert_eq!(query_param("flag&x=1", "flag").as_deref(), Some(""));
        assert_eq!(query_param("x=&y", "x").as_deref(), Some(""));
        assert_eq!(query_param("", "x"), None);
        assert_eq!(query_param("&&x=1&", "x").as_deref(), Some("1"));
        assert_eq!(query_param("x=a+b%20c%2B", "x").as_deref(), Some("a b c+"));
        assert_eq!(query_param("x=%C3%A9", "x").as_deref(), Some("\u{e9}"));
        assert_eq!(query_param("x=%c3%a9", "x").as_deref(), Some("\u{e9}"));
        assert_eq!(query_param("x=%ff", "x"), None);
        assert_eq!(query_param("x=%ff&x=ok", "x"), None);
        assert_eq!(query_param("x=100%&y=%zz%4", "x").as_deref(), Some("100%"));
        assert_eq!(query_param("x=100%&y=%zz%4", "y").as_deref(), Some("%zz%4"));
        assert_eq!(query_param("my%20key=v", "my key").as_deref(), Some("v"));
        assert_eq!(query_param("my+key=v", "my key").as_deref(), Some("v"));
        assert_eq!(query_param("x=a=b", "x").as_deref(), Some("a=b"));
        assert_eq!(query_param("X=1", "x"), None);
    }

    /// Deterministic pseudo-random mutations of valid heads: whatever the
    /// outcome, no prefix may disagree with the whole input.
    #[test]
    fn mutated_heads_are_split_independent() {
        let seeds: [&[u8]; 4] = [
            b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
            b"\r\nPOST / HTTP/1.0\nTransfer-Encoding: chunked\nConnection: close\n\n",
            b"HEAD /x HTTP/1.1\r\nAuthorization: Bearer t\r\nLast-Event-ID: 9\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
        ];
        let alphabet = b"\r\n \t:/?0aZ\0\x7f\xff\xc3.HTP12";
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..3000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 4) {
                let pos = (next() as usize) % (input.len() + 1);
                let byte = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => input.insert(pos, byte),
                    1 if pos < input.len() => input[pos] = byte,
                    _ if pos < input.len() => {
                        input.remove(pos);
                    }
                    _ => {}
                }
            }
            let limits = lim(
                8 + (next() % 20) as usize,
                20 + (next() % 60) as usize,
                (next() % 4) as usize,
            );
            let _ = check_prefixes(&input, &limits);
            let _ = check_prefixes(&input, &Limits::default());
        }
    }
}
