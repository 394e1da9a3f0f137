//! Incremental HTTP/1.1 request-head reader on top of `httparse`.
//!
//! The caller accumulates the bytes received so far and calls [`parse_head`]
//! again with the whole buffer whenever more arrive. The answer never depends on
//! how the bytes were split. Limits are checked before anything is allocated.

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
        Limits { max_request_line: 8 * 1024, max_head: 16 * 1024, max_headers: 64 }
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
        todo!()
    }
    /// Short machine-readable error code for the JSON error body.
    pub fn code(&self) -> &'static str {
        todo!()
    }
    /// Human-readable text for the JSON error body.
    pub fn message(&self) -> String {
        todo!()
    }
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Partial` while the head is incomplete and within limits.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Parse<RequestHead>, HeadError> {
    let _ = (buf, limits);
    todo!()
}

/// Looks up a query parameter by name and percent-decodes it (`+` is a space).
/// Returns `None` if absent or if its decoding is not valid UTF-8.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    let _ = (query, name);
    todo!()
}
