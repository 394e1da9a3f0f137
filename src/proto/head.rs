//! Incremental HTTP/1.1 request-head reader on top of `httparse`.
//!
//! The caller accumulates the bytes received so far and calls [`parse_head`]
//! again with the whole buffer whenever more arrive. The answer never depends on
//! how the bytes were split. Limits are checked before anything is allocated.

use std::mem::MaybeUninit;

use super::ws::handshake::HandshakeHeaders;
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
    /// `OPTIONS` (a CORS preflight on an API path).
    Options,
    /// Any other syntactically valid method (answered with 405 by routing).
    Other,
}

/// The parts of a request head the gateway uses. Owned, so the input buffer
/// can be reused; the text parts (target, Authorization, Last-Event-ID,
/// Origin) share one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// Value of Content-Length, if present (duplicates with equal values are allowed).
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked` is present (as the only / final coding).
    pub chunked: bool,
    /// The connection must close after this request: `Connection: close`, or
    /// HTTP/1.0 without `Connection: keep-alive`.
    pub close: bool,
    /// Number of bytes of the input the head occupied (including the blank line).
    pub head_len: usize,
    /// The request asks to switch to WebSocket (`Upgrade: websocket`).
    pub websocket: bool,
    /// The WebSocket handshake's header fields, only when `websocket`
    /// (boxed, so other requests pay one pointer; see [`Self::handshake`]).
    handshake: Option<Box<HandshakeHeaders>>,
    /// `Expect: 100-continue` in an HTTP/1.1 request (an HTTP/1.0 one's is
    /// ignored, RFC 9110 10.1.1): the client waits for `100 Continue` before
    /// it sends the body.
    pub expect_continue: bool,
    /// `Content-Type: application/json` (parameters such as `charset` aside).
    pub json: bool,
    /// The request target in origin form (`path[?query]`; an absolute-form
    /// target is reduced to it), then the Authorization value, then the
    /// Last-Event-ID value, then the host, then the Origin value, back to back.
    text: String,
    /// Where the target ends in `text`.
    target_end: usize,
    /// Offset of the `?` in `text`, if the target has a query.
    query_at: Option<usize>,
    /// Where the Authorization value ends (it starts at `target_end`), if present.
    auth_end: Option<usize>,
    /// Where the Last-Event-ID value ends (it starts after the Authorization
    /// value), if present.
    lei_end: Option<usize>,
    /// Where the host ends (it starts after the Last-Event-ID value), if present.
    host_end: Option<usize>,
    /// The Origin value is present (it runs to the end of `text`).
    has_origin: bool,
    /// The browser says the request goes to its own origin: `Sec-Fetch-Site:
    /// same-origin`, or an Origin whose host and port are the request's host.
    same_origin: bool,
}

impl RequestHead {
    /// Path part of the request target, without the query (not percent-decoded).
    pub fn path(&self) -> &str {
        &self.text[..self.query_at.unwrap_or(self.target_end)]
    }

    /// Query string after `?`, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.query_at.map(|q| &self.text[q + 1..self.target_end])
    }

    /// Value of the Authorization header.
    pub fn authorization(&self) -> Option<&str> {
        self.auth_end.map(|end| &self.text[self.target_end..end])
    }

    /// Value of the Last-Event-ID header.
    pub fn last_event_id(&self) -> Option<&str> {
        let start = self.auth_end.unwrap_or(self.target_end);
        self.lei_end.map(|end| &self.text[start..end])
    }

    /// The host the request names: the authority of an absolute-form target,
    /// else the Host header (RFC 9112 §3.2.2); `None` only for an HTTP/1.0
    /// request without Host.
    pub fn host(&self) -> Option<&str> {
        let start = self.lei_end.or(self.auth_end).unwrap_or(self.target_end);
        self.host_end.map(|end| &self.text[start..end])
    }

    /// Value of the Origin header (browsers send it on cross-origin requests).
    pub fn origin(&self) -> Option<&str> {
        let start = (self.host_end.or(self.lei_end).or(self.auth_end)).unwrap_or(self.target_end);
        self.has_origin.then(|| &self.text[start..])
    }

    /// True if the browser that sent the request says it goes to the page's
    /// own origin (`Sec-Fetch-Site: same-origin`, which pages cannot set), or
    /// if the Origin header names the host and port of the request.
    pub fn same_origin(&self) -> bool {
        self.same_origin
    }

    /// The WebSocket handshake's header fields (`Connection: upgrade`,
    /// `Sec-WebSocket-*`), present exactly when [`Self::websocket`] is; checked by
    /// [`super::ws::handshake::accept`].
    pub fn handshake(&self) -> Option<&HandshakeHeaders> {
        self.handshake.as_deref()
    }
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
    /// A line of the head (leading empty lines, request line, header lines,
    /// the blank line) ends in a bare LF instead of CRLF (400). RFC 9112 §2.2
    /// lets a recipient accept it; the gateway does not (see docs/limits.md).
    BareLf,
}

impl HeadError {
    /// HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::UriTooLong => 414,
            HeadError::HeadTooLarge => 431,
            HeadError::Malformed(_)
            | HeadError::BareLf
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
            HeadError::Malformed(_) | HeadError::BareLf => "malformed_request",
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
            HeadError::BareLf => {
                "Malformed request: line endings must be CRLF (the head has a bare LF).".to_string()
            }
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
/// * Empty lines (CRLF) before the request line are skipped, as RFC 9112
///   §2.2 allows. They count towards [`Limits::max_head`] and towards
///   `head_len`, but not towards [`Limits::max_request_line`].
/// * Every line of the head must end in CRLF. A bare LF (an LF not preceded
///   by CR; RFC 9112 §2.2 lets a recipient accept it, `httparse` does) is
///   [`HeadError::BareLf`], unless a syntax error or a limit is evident at an
///   earlier byte; a CR not followed by LF is malformed. A CR at the end of
///   the buffer may be followed by its LF in the next read: it is not judged.
/// * The request line length is counted without its line terminator.
/// * The effective limit on header fields is `max_headers`; the array handed
///   to `httparse` has exactly that many slots.
/// * The result only depends on the bytes up to the point where it can be
///   decided: if some prefix of `buf` yields an error, every longer buffer
///   starting with that prefix yields the same error. When a limit and a
///   syntax error become evident at the same byte, the limit wins.
/// * A duplicate `Authorization`, `Last-Event-ID`, `Origin` or `Host` header
///   is malformed, and so is an HTTP/1.1 request without `Host` (RFC 9112 §3.2).
/// * The target is origin-form (`/path?query`) or absolute-form
///   (`http://authority/path?query`, also `https`; RFC 9112 §3.2.2). An
///   absolute-form target is reduced to its path and query (an empty path is
///   `/`) and its authority replaces the Host header's value in
///   [`RequestHead::host`]. Anything else (`*`, authority-form, other
///   schemes, userinfo) is malformed.
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
    let mut view = &buf[..view_len];
    let mut limit = limit.map(|(_, e)| e);
    // Likewise the bytes from the first bare LF on: if the head is still
    // incomplete before it, the bare LF is the error. A bare LF after the end
    // of the head (in a body or the next request) does not matter, since
    // `httparse` then completes on the bytes before it.
    if let Some(at) = first_bare_lf(view) {
        view = &view[..at];
        limit = Some(HeadError::BareLf);
    }
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

/// Offset of the request line: leading CRLF lines skipped (a leading bare LF
/// is refused by [`first_bare_lf`]).
fn skip_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    while let Some([b'\r', b'\n', ..]) = buf.get(i..) {
        i += 2;
    }
    i
}

/// Offset of the first LF in `buf` not preceded by CR, looking no further
/// than the end of the head (the first CRLF CRLF after the request line
/// starts): bytes after it are a body or the next request, and scanning them
/// on every parse would make a buffer of pipelined requests cost quadratic
/// time. Only bytes within the buffer are looked at, so a CR ending one read
/// and the LF starting the next make a CRLF like any other.
fn first_bare_lf(buf: &[u8]) -> Option<usize> {
    let start = skip_empty_lines(buf);
    let mut from = 0;
    while let Some(p) = memchr::memchr(b'\n', &buf[from..]) {
        let at = from + p;
        if at == 0 || buf[at - 1] != b'\r' {
            return Some(at);
        }
        if at >= start + 3 && &buf[at - 3..=at] == b"\r\n\r\n" {
            return None;
        }
        from = at + 1;
    }
    None
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

/// Prefix of the WebSocket handshake's header field names.
const WS_PREFIX: &[u8] = b"sec-websocket-";

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
        Some("OPTIONS") => Method::Options,
        Some(_) => Method::Other,
        None => return Err(HeadError::Malformed("missing method")),
    };
    let (target, authority) = split_target(req.path.unwrap_or_default())?;

    let mut content_length: Option<u64> = None;
    let mut bad_content_length = false;
    let mut transfer_encoding = false;
    let mut codings = 0usize;
    let mut only_chunked = true;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut authorization: Option<&str> = None;
    let mut last_event_id: Option<&str> = None;
    let mut origin: Option<&str> = None;
    let mut host: Option<&str> = None;
    let mut fetch_same_origin = false;
    let mut websocket = false;
    let mut handshake = HandshakeHeaders::default();
    let mut expect_continue = false;
    let mut json = false;

    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        // The length picks the one name to compare with (most fields are none of these).
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                for item in h.value.split(|&b| b == b',') {
                    match parse_decimal(trim_ows(item)) {
                        Some(n) if content_length.is_none_or(|c| c == n) => {
                            content_length = Some(n)
                        }
                        _ => bad_content_length = true,
                    }
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
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
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for item in h.value.split(|&b| b == b',').map(trim_ows) {
                    if item.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if item.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    } else {
                        handshake.connection_option(item);
                    }
                }
            }
            13 if name.eq_ignore_ascii_case(b"authorization") => {
                if authorization.is_some() {
                    return Err(HeadError::Malformed("duplicate Authorization header"));
                }
                authorization = Some(utf8_value(
                    h.value,
                    "Authorization header is not valid UTF-8",
                )?);
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                expect_continue |= trim_ows(h.value).eq_ignore_ascii_case(b"100-continue");
            }
            12 if name.eq_ignore_ascii_case(b"content-type") => {
                let media = h.value.split(|&b| b == b';').next().unwrap_or_default();
                json = trim_ows(media).eq_ignore_ascii_case(b"application/json");
            }
            13 if name.eq_ignore_ascii_case(b"last-event-id") => {
                if last_event_id.is_some() {
                    return Err(HeadError::Malformed("duplicate Last-Event-ID header"));
                }
                last_event_id = Some(utf8_value(
                    h.value,
                    "Last-Event-ID header is not valid UTF-8",
                )?);
            }
            6 if name.eq_ignore_ascii_case(b"origin") => {
                if origin.is_some() {
                    return Err(HeadError::Malformed("duplicate Origin header"));
                }
                origin = Some(utf8_value(h.value, "Origin header is not valid UTF-8")?);
            }
            14 if name.eq_ignore_ascii_case(b"sec-fetch-site") => {
                fetch_same_origin = trim_ows(h.value).eq_ignore_ascii_case(b"same-origin");
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => {
                websocket |= h
                    .value
                    .split(|&b| b == b',')
                    .any(|p| trim_ows(p).eq_ignore_ascii_case(b"websocket"));
            }
            4 if name.eq_ignore_ascii_case(b"host") => {
                if host.is_some() {
                    return Err(HeadError::Malformed("duplicate Host header"));
                }
                host = Some(utf8_value(h.value, "Host header is not valid UTF-8")?);
            }
            n if n > WS_PREFIX.len() && name[..WS_PREFIX.len()].eq_ignore_ascii_case(WS_PREFIX) => {
                handshake.field(&name[WS_PREFIX.len()..], h.value);
            }
            _ => {}
        }
    }
    if host.is_none() && version_minor == 1 {
        return Err(HeadError::Malformed("missing Host header"));
    }
    let host = authority.or(host);

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

    let auth = authorization.unwrap_or_default();
    let lei = last_event_id.unwrap_or_default();
    let host_text = host.unwrap_or_default();
    let org = origin.unwrap_or_default();
    let same_origin = fetch_same_origin
        || origin.is_some_and(|o| {
            let authority = o.split_once("://").map_or("", |(_, a)| a);
            !host_text.is_empty() && host_text.eq_ignore_ascii_case(authority)
        });
    // An absolute-form target without a path means `/`.
    let root = if target.is_empty() || target.starts_with('?') {
        "/"
    } else {
        ""
    };
    let target_len = root.len() + target.len();
    let mut text =
        String::with_capacity(target_len + auth.len() + lei.len() + host_text.len() + org.len());
    text.push_str(root);
    text.push_str(target);
    text.push_str(auth);
    text.push_str(lei);
    text.push_str(host_text);
    text.push_str(org);
    let auth_end = authorization.map(|a| target_len + a.len());
    let lei_end = last_event_id.map(|l| auth_end.unwrap_or(target_len) + l.len());
    Ok(RequestHead {
        method,
        version_minor,
        content_length,
        chunked: transfer_encoding,
        close: conn_close || (version_minor == 0 && !conn_keep_alive),
        head_len,
        expect_continue: expect_continue && version_minor == 1,
        json,
        target_end: target_len,
        query_at: target
            .bytes()
            .position(|b| b == b'?')
            .map(|q| q + root.len()),
        auth_end,
        lei_end,
        host_end: host.map(|h| lei_end.or(auth_end).unwrap_or(target_len) + h.len()),
        has_origin: origin.is_some(),
        same_origin,
        websocket,
        handshake: websocket.then(|| Box::new(handshake)),
        text,
    })
}

/// Splits a request target into its origin-form part (`path[?query]`, empty
/// for an absolute-form target without path or query) and, for an
/// absolute-form target, its authority.
fn split_target(target: &str) -> Result<(&str, Option<&str>), HeadError> {
    if target.starts_with('/') {
        return Ok((target, None));
    }
    let rest = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))
        .ok_or(HeadError::Malformed(
            "request target must be origin-form (/path) or absolute-form (http://host/path)",
        ))?;
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_len);
    if authority.is_empty() {
        return Err(HeadError::Malformed("empty authority in request target"));
    }
    if authority.contains('@') {
        return Err(HeadError::Malformed("userinfo in request target"));
    }
    if path.starts_with('#') {
        return Err(HeadError::Malformed("fragment in request target"));
    }
    Ok((path, Some(authority)))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
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

fn utf8_value<'a>(value: &'a [u8], what: &'static str) -> Result<&'a str, HeadError> {
    std::str::from_utf8(value).map_err(|_| HeadError::Malformed(what))
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
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
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
mod tests;
