//! Fuzzing harnesses for the sans-IO protocol code.
//!
//! Each function takes arbitrary bytes, drives one piece of [`crate::proto`],
//! [`crate::auth`] or [`crate::ids`] with them, and checks *properties* of the
//! result: it panics (with a message saying which property failed) when one is
//! violated, and never otherwise. The cargo-fuzz targets in `fuzz/fuzz_targets/`
//! are one-line wrappers around these functions; the unit tests at the end of
//! this file replay the committed corpus (`fuzz/corpus/<target>/`) and crash
//! reproducers (`fuzz/regressions/<target>/`) on stable Rust, so
//! `cargo test --release --lib fuzzing` keeps old findings fixed.
//!
//! Input layout: every harness reads a few *parameter bytes* from the front of
//! the input (limits, split points, flags; missing bytes read as 0) and treats
//! the rest as the payload. See `docs/fuzzing.md` for the layout of each target.
//!
//! Only compiled with `--cfg fuzzing` (set by cargo-fuzz) or in tests.

use std::borrow::Cow;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

use crate::auth::{self, AuthError, Role, Verifier};
use crate::ids::EventId;
use crate::proto::chunked::{ChunkError, ChunkedDecoder};
use crate::proto::head::{parse_head, query_param, HeadError, Limits, RequestHead};
use crate::proto::request::{Request, RequestError, RequestReader};
use crate::proto::sse::{encode_comment, encode_event, message_json};
use crate::proto::Parse;

// ---------------------------------------------------------------------------
// Input helpers
// ---------------------------------------------------------------------------

/// Reads parameter bytes from the front of the fuzzer input; past the end,
/// every byte reads as 0, so any input is usable.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A count byte `k` (taken modulo 8) followed by `k` split-selector bytes.
    fn splits(&mut self) -> Vec<u8> {
        let k = self.byte() % 8;
        (0..k).map(|_| self.byte()).collect()
    }

    fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// Turns split-selector bytes into sorted, distinct cut positions in
/// `0..=len`, each proportional to its selector (`0` is the start, `255` near
/// the end).
fn cut_points(selectors: &[u8], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = selectors
        .iter()
        .map(|&s| usize::from(s) * (len + 1) / 256)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Splits `buf` at the positions from [`cut_points`].
fn pieces<'b>(buf: &'b [u8], selectors: &[u8]) -> Vec<&'b [u8]> {
    let mut out = Vec::new();
    let mut prev = 0;
    for c in cut_points(selectors, buf.len()) {
        out.push(&buf[prev..c]);
        prev = c;
    }
    out.push(&buf[prev..]);
    out
}

/// Head limits from four parameter bytes: if bit 7 of the first is set the
/// production defaults, else small limits (request line 0..=255 bytes, head
/// 0..=1020 bytes, 0..=15 header fields) so that every limit is reachable.
fn head_limits(inp: &mut Input<'_>) -> Limits {
    let (sel, a, b, c) = (inp.byte(), inp.byte(), inp.byte(), inp.byte());
    if sel & 0x80 != 0 {
        Limits::default()
    } else {
        Limits {
            max_request_line: usize::from(a),
            max_head: usize::from(b) * 4,
            max_headers: usize::from(c % 16),
        }
    }
}

/// Body limits chosen by one byte. Kept at or below 1 MiB: the gateway's
/// configured `max_body` is of that order, and a request reader given a huge
/// limit legitimately reserves `Content-Length` bytes up front.
const BODY_LIMITS: [usize; 9] = [0, 1, 2, 5, 16, 100, 1000, 65536, 1 << 20];

fn body_limit(b: u8) -> usize {
    BODY_LIMITS[usize::from(b) % BODY_LIMITS.len()]
}

fn show(buf: &[u8]) -> String {
    let end = buf.len().min(200);
    format!("{:?}", String::from_utf8_lossy(&buf[..end]))
}

// ---------------------------------------------------------------------------
// head
// ---------------------------------------------------------------------------

/// Fuzzes [`parse_head`] (and [`query_param`], [`EventId::parse`] on what it returns).
///
/// Layout: 4 limit bytes (see `head_limits`), a split count and selectors, then the head bytes.
///
/// Properties:
/// * Split independence: re-calling `parse_head` on growing prefixes (ending
///   at the fuzzer-chosen cut points, and at every length for inputs of at
///   most 64 bytes) never gives an answer other than `Partial` or exactly the
///   whole input's answer; so an error, once it appears, stays the same error
///   for every longer buffer, and a `Complete` never changes.
/// * Bytes appended after a decided (complete or erroneous) input change nothing.
/// * A `Complete` head: `head_len <= input len`, `head_len <= max_head`, the
///   request line (after skipped empty lines, without its terminator) is at most
///   `max_request_line` bytes, at most `max_headers` field lines, HTTP/1.0 or
///   1.1, the target is origin-form and equals `path[?query]`, a chunked
///   request has no Content-Length and is HTTP/1.1.
/// * A `Last-Event-ID` that parses as an [`EventId`] round-trips through its
///   `Display` form.
/// * [`query_param`] finds a percent-encoded key/value pair and decodes it back
///   to the original text.
pub fn head(data: &[u8]) {
    let mut inp = Input::new(data);
    let limits = head_limits(&mut inp);
    let selectors = inp.splits();
    let buf = inp.rest();

    let whole = parse_head(buf, &limits);
    check_head_result(buf, &limits, &whole);

    let mut prefixes = cut_points(&selectors, buf.len());
    if buf.len() <= 64 {
        prefixes = (0..=buf.len()).collect();
    }
    for n in prefixes {
        let r = parse_head(&buf[..n], &limits);
        check_head_result(&buf[..n], &limits, &r);
        if !matches!(r, Ok(Parse::Partial)) && r != whole {
            panic!(
                "head: prefix of {n} bytes gives {r:?} but the whole input ({} bytes) gives {whole:?}; input {}",
                buf.len(),
                show(buf)
            );
        }
    }

    if !matches!(whole, Ok(Parse::Partial)) {
        let mut longer = buf.to_vec();
        longer.extend_from_slice(b"GET / HTTP/1.1\r\nX: y\r\n\r\n");
        let r = parse_head(&longer, &limits);
        assert!(
            r == whole,
            "head: appending bytes after a decided input changed {whole:?} into {r:?}; input {}",
            show(buf)
        );
    }

    if let Err(e) = &whole {
        let _ = (e.status(), e.code(), e.message());
    }
    query_round_trip(buf);
}

/// Checks the invariants of one `parse_head` answer for `buf`.
fn check_head_result(buf: &[u8], limits: &Limits, r: &Result<Parse<RequestHead>, HeadError>) {
    let Ok(Parse::Complete(h)) = r else { return };
    assert!(
        h.head_len <= buf.len(),
        "head: head_len {} > input length {}",
        h.head_len,
        buf.len()
    );
    assert!(
        h.head_len <= limits.max_head,
        "head: head_len {} > max_head {}",
        h.head_len,
        limits.max_head
    );
    let head = &buf[..h.head_len];
    // Independently skip leading empty lines (CRLF or LF).
    let mut start = 0;
    loop {
        if head[start..].starts_with(b"\r\n") {
            start += 2;
        } else if head[start..].starts_with(b"\n") {
            start += 1;
        } else {
            break;
        }
    }
    let lines: Vec<&[u8]> = head[start..].split(|&b| b == b'\n').collect();
    // A complete head ends with LF, so the last element is empty and the one
    // before it is the blank line.
    assert!(
        lines.len() >= 3 && lines[lines.len() - 1].is_empty(),
        "head: complete head does not end with a blank line: {}",
        show(head)
    );
    let strip_cr = |l: &'_ [u8]| -> usize { l.len() - usize::from(l.ends_with(b"\r")) };
    let request_line = &lines[0][..strip_cr(lines[0])];
    assert!(
        request_line.len() <= limits.max_request_line,
        "head: request line of {} bytes accepted with max_request_line {}",
        request_line.len(),
        limits.max_request_line
    );
    let field_lines = lines.len() - 3;
    assert!(
        field_lines <= limits.max_headers,
        "head: {field_lines} field lines accepted with max_headers {}",
        limits.max_headers
    );
    assert!(h.version_minor <= 1, "head: version 1.{}", h.version_minor);
    assert!(
        h.path.starts_with('/') && !h.path.contains('?'),
        "head: bad path {:?}",
        h.path
    );
    let mut target = h.path.clone();
    if let Some(q) = &h.query {
        target.push('?');
        target.push_str(q);
    }
    let mut parts = request_line.split(|&b| b == b' ');
    let (_, line_target) = (parts.next(), parts.next());
    assert!(
        line_target == Some(target.as_bytes()),
        "head: path {:?} query {:?} do not match the request line {}",
        h.path,
        h.query,
        show(request_line)
    );
    if h.chunked {
        assert!(
            h.content_length.is_none() && h.version_minor == 1,
            "head: chunked with {:?} / version 1.{}",
            h.content_length,
            h.version_minor
        );
    }
    if h.version_minor == 0 && !h.close {
        // HTTP/1.0 stays open only with an explicit keep-alive token.
        let lower = String::from_utf8_lossy(head).to_ascii_lowercase();
        assert!(
            lower.contains("keep-alive"),
            "head: HTTP/1.0 without keep-alive not marked close"
        );
    }
    if let Some(id) = h.last_event_id.as_deref() {
        event_id_round_trip(id);
    }
    if let Some(q) = &h.query {
        for name in ["token", "last_event_id", ""] {
            let _ = query_param(q, name);
        }
    }
}

/// `EventId::parse` accepts its own rendering of anything it accepted.
fn event_id_round_trip(s: &str) {
    if let Some(id) = EventId::parse(s) {
        let rendered = id.to_string();
        assert!(
            EventId::parse(&rendered) == Some(id),
            "ids: {s:?} parsed as {id:?} but its rendering {rendered:?} does not parse back"
        );
    }
}

/// Percent-encodes every byte that is not ASCII alphanumeric.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `query_param` decodes a fully percent-encoded key and value back to the originals.
fn query_round_trip(buf: &[u8]) {
    let text = String::from_utf8_lossy(&buf[..buf.len().min(64)]);
    let (key, value) = match text.char_indices().nth(text.chars().count() / 2) {
        Some((i, _)) => (&text[..i], &text[i..]),
        None => (&text[..], ""),
    };
    let key = if key.is_empty() { "k" } else { key };
    let query = format!(
        "&{}={}&{}=second",
        percent_encode(key),
        percent_encode(value),
        percent_encode(key)
    );
    let got = query_param(&query, key);
    assert!(
        got.as_deref() == Some(value),
        "query_param({query:?}, {key:?}) = {got:?}, expected {value:?}"
    );
}

// ---------------------------------------------------------------------------
// chunked
// ---------------------------------------------------------------------------

/// What feeding some pieces to a fresh chunked decoder produced.
#[derive(Debug, PartialEq, Eq)]
struct ChunkOutcome {
    out: Vec<u8>,
    /// Total consumed; `None` after an error (irrelevant once the body is rejected).
    consumed: Option<usize>,
    result: Result<bool, ChunkError>,
}

/// Feeds `pieces` in order, re-passing unconsumed bytes as the contract
/// requires, checking the per-call contract, and stops at the end of the body
/// or at an error.
fn decode_pieces(pieces: &[&[u8]], max_body: usize) -> ChunkOutcome {
    let mut dec = ChunkedDecoder::new(max_body);
    let mut pending: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        pending.extend_from_slice(piece);
        match dec.decode(&pending, &mut out) {
            Ok((n, done)) => {
                assert!(
                    n <= pending.len(),
                    "chunked: consumed {n} of {} bytes",
                    pending.len()
                );
                pending.drain(..n);
                consumed += n;
                if done {
                    assert!(dec.is_done(), "chunked: done but not is_done()");
                    let again = dec.decode(b"1\r\nx\r\n0\r\n\r\n", &mut out);
                    assert!(
                        again == Ok((0, true)),
                        "chunked: finished decoder gave {again:?}"
                    );
                    return ChunkOutcome {
                        out,
                        consumed: Some(consumed),
                        result: Ok(true),
                    };
                }
                assert!(
                    pending.is_empty(),
                    "chunked: {} bytes held back before the end of the body",
                    pending.len()
                );
            }
            Err(e) => {
                let again = dec.decode(b"0\r\n\r\n", &mut Vec::new());
                assert!(
                    again == Err(e.clone()),
                    "chunked: error {e:?} not sticky: {again:?}"
                );
                return ChunkOutcome {
                    out,
                    consumed: None,
                    result: Err(e),
                };
            }
        }
    }
    ChunkOutcome {
        out,
        consumed: Some(consumed),
        result: Ok(false),
    }
}

/// Fuzzes [`ChunkedDecoder`].
///
/// Layout: a body-limit byte, a style byte, a split count and selectors, then the body bytes.
///
/// Properties:
/// * Decoding the input whole, split at the fuzzer-chosen points, and byte by
///   byte gives the same output, the same result (done / not done / error) and
///   the same total consumed.
/// * Per call: `consumed <= input`, nothing is held back unless the body is
///   done; a finished decoder takes no more bytes; errors are sticky.
/// * The decoded length never exceeds the limit; an unfinished body consumed
///   everything.
/// * Round trip: the payload encoded as a valid chunked body (chunk sizes from
///   the split points, hex case, extensions and trailers from the style byte,
///   followed by a pipelined request) decodes to exactly the payload and stops
///   right after the final CRLF; with a limit one byte smaller it is `TooLarge`.
pub fn chunked(data: &[u8]) {
    let mut inp = Input::new(data);
    let max_body = body_limit(inp.byte());
    let style = inp.byte();
    let selectors = inp.splits();
    let body = inp.rest();

    let whole = decode_pieces(&[body], max_body);
    assert!(
        whole.out.len() <= max_body,
        "chunked: decoded {} bytes with max_body {max_body}",
        whole.out.len()
    );
    match (&whole.result, whole.consumed) {
        (Ok(true), Some(n)) => assert!(n <= body.len(), "chunked: consumed {n} > {}", body.len()),
        (Ok(false), Some(n)) => assert!(
            n == body.len(),
            "chunked: unfinished body consumed {n} of {}",
            body.len()
        ),
        _ => {}
    }

    let split = decode_pieces(&pieces(body, &selectors), max_body);
    assert!(
        split == whole,
        "chunked: split at {:?} gives {split:?}, whole gives {whole:?}; input {}",
        cut_points(&selectors, body.len()),
        show(body)
    );
    if body.len() <= 4096 {
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        let one = decode_pieces(&bytes, max_body);
        assert!(
            one == whole,
            "chunked: byte by byte gives {one:?}, whole gives {whole:?}; input {}",
            show(body)
        );
    }

    chunked_round_trip(body, style, &selectors);
}

/// Encodes `payload` as a valid chunked body and checks it decodes back.
fn chunked_round_trip(payload: &[u8], style: u8, selectors: &[u8]) {
    let mut enc = Vec::new();
    for chunk in pieces(payload, selectors) {
        if chunk.is_empty() {
            continue; // a zero-size chunk would end the body
        }
        let size = if style & 1 != 0 {
            format!("{:X}", chunk.len())
        } else {
            format!("{:x}", chunk.len())
        };
        if style & 2 != 0 {
            enc.extend_from_slice(b"000");
        }
        enc.extend_from_slice(size.as_bytes());
        if style & 4 != 0 {
            enc.extend_from_slice(b" ;ext=\"v;x\"\t;y");
        }
        enc.extend_from_slice(b"\r\n");
        enc.extend_from_slice(chunk);
        enc.extend_from_slice(b"\r\n");
    }
    enc.extend_from_slice(b"0\r\n");
    if style & 8 != 0 {
        enc.extend_from_slice(b"X-Trailer: a b\xff\r\nY:\r\n");
    }
    enc.extend_from_slice(b"\r\n");
    let body_len = enc.len();
    enc.extend_from_slice(b"POST / HTTP/1.1\r\n\r\n5\r\nhello\r\n0\r\n\r\n");

    let got = decode_pieces(&pieces(&enc, selectors), payload.len());
    let expected = ChunkOutcome {
        out: payload.to_vec(),
        consumed: Some(body_len),
        result: Ok(true),
    };
    assert!(
        got == expected,
        "chunked: valid encoding {} decodes to {got:?}",
        show(&enc)
    );
    if let Some(smaller) = payload.len().checked_sub(1) {
        let got = decode_pieces(&[&enc], smaller);
        assert!(
            got.result == Err(ChunkError::TooLarge),
            "chunked: {} bytes with limit {smaller} gave {:?}",
            payload.len(),
            got.result
        );
    }
}

// ---------------------------------------------------------------------------
// request
// ---------------------------------------------------------------------------

/// What a connection's request reader made of some input.
#[derive(Debug, PartialEq, Eq)]
struct RequestOutcome {
    requests: Vec<Request>,
    error: Option<RequestError>,
    /// Total bytes consumed (only compared when there is no error).
    consumed: Option<usize>,
}

/// Feeds `pieces` to a fresh [`RequestReader`] the way the event loop does
/// (keep the unconsumed bytes, append new ones, call again while it makes
/// progress), collecting requests until an error or the end of the input.
fn read_requests(pieces: &[&[u8]], limits: &Limits, max_body: usize) -> RequestOutcome {
    let mut reader = RequestReader::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut requests = Vec::new();
    let mut consumed = 0usize;
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match reader.feed(&buf, limits, max_body) {
                Ok((n, req)) => {
                    assert!(
                        n <= buf.len(),
                        "request: consumed {n} of {} bytes",
                        buf.len()
                    );
                    buf.drain(..n);
                    consumed += n;
                    match req {
                        Some(r) => {
                            assert!(
                                n > 0,
                                "request: a request was produced without consuming input"
                            );
                            check_request(&r, max_body);
                            requests.push(r);
                        }
                        None if n == 0 => break,
                        None => {}
                    }
                }
                Err(e) => {
                    let _ = (e.status(), e.code(), e.message());
                    return RequestOutcome {
                        requests,
                        error: Some(e),
                        consumed: None,
                    };
                }
            }
        }
    }
    RequestOutcome {
        requests,
        error: None,
        consumed: Some(consumed),
    }
}

fn check_request(r: &Request, max_body: usize) {
    assert!(
        r.body.len() <= max_body,
        "request: body of {} bytes with max_body {max_body}",
        r.body.len()
    );
    if !r.head.chunked {
        let declared = r.head.content_length.unwrap_or(0);
        assert!(
            r.body.len() as u64 == declared,
            "request: body of {} bytes, Content-Length {declared}",
            r.body.len()
        );
    }
}

/// Fuzzes [`RequestReader`], the per-connection request state machine (head,
/// then a Content-Length or chunked body, pipelined).
///
/// Layout: 4 limit bytes (as for `head`), a body-limit byte, a split count and
/// selectors, then the bytes the client sends.
///
/// Properties:
/// * The same sequence of requests, the same final error (if any) and the same
///   total consumed whether the input arrives whole, in the fuzzer-chosen
///   pieces, or (inputs up to 512 bytes) byte by byte.
/// * Every call consumes at most what it was given, and a request is never
///   produced without consuming bytes (no livelock).
/// * Bodies are at most `max_body`; a non-chunked body is exactly Content-Length.
/// * Total consumed is at most the input length.
pub fn request(data: &[u8]) {
    let mut inp = Input::new(data);
    let limits = head_limits(&mut inp);
    let max_body = body_limit(inp.byte());
    let selectors = inp.splits();
    let input = inp.rest();

    let whole = read_requests(&[input], &limits, max_body);
    if let Some(n) = whole.consumed {
        assert!(n <= input.len(), "request: consumed {n} > {}", input.len());
    }
    let split = read_requests(&pieces(input, &selectors), &limits, max_body);
    assert!(
        split == whole,
        "request: split at {:?} gives {split:?}, whole gives {whole:?}; input {}",
        cut_points(&selectors, input.len()),
        show(input)
    );
    if input.len() <= 512 {
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let one = read_requests(&bytes, &limits, max_body);
        assert!(
            one == whole,
            "request: byte by byte gives {one:?}, whole gives {whole:?}; input {}",
            show(input)
        );
    }
}

// ---------------------------------------------------------------------------
// token
// ---------------------------------------------------------------------------

const SECRET: &[u8] = b"fuzz-secret-0123456789";
const NOW: u64 = 1_700_000_000;

/// Checks what every accepted identity must satisfy.
fn check_identity(r: &Result<auth::Identity, AuthError>, now: u64) {
    match r {
        Ok(id) => {
            assert!(
                auth::valid_id(&id.account) && auth::valid_id(&id.client),
                "token: accepted invalid ids {id:?}"
            );
            assert!(
                id.exp > now,
                "token: accepted expired token {id:?} at {now}"
            );
        }
        Err(e) => {
            let _ = (e.code(), e.message(), e.to_string());
        }
    }
}

/// Fuzzes [`Verifier::verify`] and [`auth::sign`].
///
/// Layout: a mode byte, then mode-specific bytes. Every mode first verifies
/// the rest of the input as a token (lossy UTF-8): it must not panic, and an
/// accepted token has valid ids and `exp > now`. Then:
/// * mode 0: nothing more (raw token text).
/// * mode 1: header and payload bytes (split at the first `0xFF`; bit 0 of a
///   flag byte replaces the header with a standard HS256 header) are
///   base64url-encoded and *correctly signed*, so the claim checks are reached
///   with arbitrary JSON; the same acceptance properties hold.
/// * mode 2: claims built from selector bytes (`sub`, `acct`, `role`, `exp`,
///   `nbf` each absent, valid, invalid or of the wrong type) and signed: the
///   token is accepted exactly when every claim is valid and `nbf <= now < exp`,
///   and then the identity matches the claims; errors are claim/time errors.
/// * mode 3: `sign` with ids from the input: it succeeds exactly when both ids
///   are valid, then the token verifies to the same identity (and is `Expired`
///   at `exp`); flipping any one character of the signature, or verifying with
///   another secret, makes it fail.
pub fn token(data: &[u8]) {
    let mut inp = Input::new(data);
    let mode = inp.byte() % 4;
    let rest = inp.rest();
    let verifier = Verifier::new(SECRET);
    check_identity(&verifier.verify(&String::from_utf8_lossy(rest), NOW), NOW);

    match mode {
        1 => token_raw_parts(&verifier, rest),
        2 => token_claims(&verifier, rest),
        3 => token_sign(&verifier, rest),
        _ => {}
    }
}

fn token_raw_parts(verifier: &Verifier, rest: &[u8]) {
    let mut inp = Input::new(rest);
    let flags = inp.byte();
    let rest = inp.rest();
    let (header, payload) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    let header: &[u8] = if flags & 1 != 0 {
        br#"{"alg":"HS256","typ":"JWT"}"#
    } else {
        header
    };
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    let Ok(sig) =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
    else {
        panic!("token: HMAC signing failed");
    };
    let token = format!("{message}.{sig}");
    check_identity(&verifier.verify(&token, NOW), NOW);
}

/// One claim value chosen by a selector byte.
fn claim_value(sel: u8, text: &str, number: u64) -> Option<serde_json::Value> {
    use serde_json::Value;
    match sel % 10 {
        0 => None,
        1 => Some(Value::from(text)),
        2 => Some(Value::from(number)),
        3 => Some(Value::from(-1i64 - (number % 1000) as i64)),
        4 => Some(Value::from(number as f64 + 0.5)),
        5 => Some(Value::Null),
        6 => Some(Value::Bool(true)),
        7 => Some(Value::from(vec![text])),
        8 => Some(Value::from(u64::MAX)),
        _ => Some(Value::from("")),
    }
}

fn token_claims(verifier: &Verifier, rest: &[u8]) {
    let mut inp = Input::new(rest);
    let sels: Vec<u8> = (0..5).map(|_| inp.byte()).collect();
    let nums: Vec<u64> = (0..2)
        .map(|_| {
            // Times around NOW: NOW - 32768 ..= NOW + 32767 from two bytes.
            let v = u64::from(inp.byte()) << 8 | u64::from(inp.byte());
            NOW - 32768 + v
        })
        .collect();
    let text = String::from_utf8_lossy(inp.rest());
    let mut texts = text.split('\u{1}');
    let sub_text = texts.next().unwrap_or("");
    let acct_text = texts.next().unwrap_or("");
    let role_text = texts.next().unwrap_or("");

    let mut claims = serde_json::Map::new();
    let role_value = match sels[2] % 4 {
        0 => None,
        1 => Some(serde_json::Value::from("agent")),
        2 => Some(serde_json::Value::from("console")),
        _ => claim_value(sels[2] / 4, role_text, 7),
    };
    let entries = [
        ("sub", claim_value(sels[0], sub_text, 1)),
        ("acct", claim_value(sels[1], acct_text, 2)),
        ("role", role_value),
        ("exp", claim_value(sels[3], "soon", nums[0])),
        ("nbf", claim_value(sels[4], "now", nums[1])),
    ];
    for (name, value) in &entries {
        if let Some(v) = value {
            claims.insert((*name).to_string(), v.clone());
        }
    }
    let claims = serde_json::Value::Object(claims);
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let Ok(token) = jsonwebtoken::encode(&header, &claims, &key) else {
        panic!("token: encoding {claims} failed");
    };
    let got = verifier.verify(&token, NOW);
    check_identity(&got, NOW);
    if token.len() > auth::MAX_TOKEN_LEN {
        // Oversized tokens are refused before anything else is looked at.
        assert!(
            got == Err(AuthError::Malformed),
            "token: {} byte token gave {got:?}",
            token.len()
        );
        return;
    }

    // Independent expectation.
    let id_ok = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .and_then(|v| v.as_str())
            .is_some_and(auth::valid_id)
    };
    let role = match &entries[2].1 {
        None => Some(Role::Agent),
        Some(v) => v.as_str().and_then(Role::parse),
    };
    let exp = entries[3].1.as_ref().and_then(|v| v.as_u64());
    let nbf_ok = match &entries[4].1 {
        None => true,
        Some(v) => v.as_u64().is_some_and(|n| n <= NOW),
    };
    let expect_ok = id_ok(&entries[0].1)
        && id_ok(&entries[1].1)
        && role.is_some()
        && exp.is_some_and(|e| e > NOW)
        && nbf_ok;
    match &got {
        Ok(id) => {
            assert!(expect_ok, "token: accepted {claims} as {id:?}");
            let same = Some(id.client.as_str()) == entries[0].1.as_ref().and_then(|v| v.as_str())
                && Some(id.account.as_str()) == entries[1].1.as_ref().and_then(|v| v.as_str())
                && Some(id.role) == role
                && Some(id.exp) == exp;
            assert!(
                same,
                "token: identity {id:?} does not match claims {claims}"
            );
        }
        Err(e) => {
            assert!(!expect_ok, "token: refused valid claims {claims}: {e:?}");
            assert!(
                matches!(
                    e,
                    AuthError::MissingClaim(_)
                        | AuthError::BadClaim(_)
                        | AuthError::Expired
                        | AuthError::NotYetValid
                ),
                "token: correctly signed claims {claims} refused with {e:?}"
            );
        }
    }
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn token_sign(verifier: &Verifier, rest: &[u8]) {
    let mut inp = Input::new(rest);
    let role = if inp.byte() & 1 == 0 {
        Role::Agent
    } else {
        Role::Console
    };
    let ttl = u64::from(inp.byte()) << 8 | u64::from(inp.byte());
    let flip_pos = usize::from(inp.byte());
    let flip_to = inp.byte();
    let acct_len = usize::from(inp.byte());
    let rest = inp.rest();
    let (acct, client) = rest.split_at(acct_len.min(rest.len()));
    let acct = String::from_utf8_lossy(acct);
    let client = String::from_utf8_lossy(client);

    let signed = auth::sign(SECRET, &acct, &client, role, NOW, ttl);
    let valid = auth::valid_id(&acct) && auth::valid_id(&client);
    let token = match signed {
        Ok(t) => t,
        Err(e) => {
            assert!(
                !valid,
                "token: sign refused valid ids {acct:?} / {client:?}: {e:?}"
            );
            assert!(
                matches!(e, AuthError::BadClaim(_)),
                "token: sign failed with {e:?}"
            );
            return;
        }
    };
    assert!(
        valid,
        "token: sign accepted invalid ids {acct:?} / {client:?}"
    );

    let got = verifier.verify(&token, NOW);
    if ttl == 0 {
        assert!(got == Err(AuthError::Expired), "token: ttl 0 gave {got:?}");
    } else {
        let expected = auth::Identity {
            account: acct.to_string(),
            client: client.to_string(),
            role,
            exp: NOW + ttl,
        };
        assert!(
            got == Ok(expected),
            "token: round trip of {acct:?}/{client:?} gave {got:?}"
        );
        let at_exp = verifier.verify(&token, NOW + ttl);
        assert!(
            at_exp == Err(AuthError::Expired),
            "token: at exp gave {at_exp:?}"
        );
    }
    let other = Verifier::new(b"another-secret").verify(&token, NOW);
    assert!(
        other.is_err(),
        "token: accepted with the wrong secret: {other:?}"
    );

    // Flip one character of the signature to another base64url character.
    let sig_start = token.rfind('.').map_or(0, |i| i + 1);
    let sig_len = token.len() - sig_start;
    if sig_len == 0 {
        panic!("token: signed token {token:?} has an empty signature");
    }
    let pos = sig_start + flip_pos % sig_len;
    let mut bytes = token.into_bytes();
    let old = bytes[pos];
    let Some(old_index) = B64URL.iter().position(|&c| c == old) else {
        panic!("token: signature byte {old:?} is not base64url");
    };
    bytes[pos] = B64URL[(old_index + 1 + usize::from(flip_to) % 63) % 64];
    let tampered = String::from_utf8_lossy(&bytes);
    let got = verifier.verify(&tampered, NOW);
    assert!(
        got.is_err(),
        "token: accepted with signature character {} changed: {tampered:?}",
        pos - sig_start
    );
}

// ---------------------------------------------------------------------------
// sse
// ---------------------------------------------------------------------------

/// One dispatched event, as a browser's `EventSource` reports it.
#[derive(Debug, PartialEq, Eq)]
struct SseEvent {
    last_event_id: String,
    kind: String,
    data: String,
}

/// A minimal, independent text/event-stream parser following the WHATWG HTML
/// "event stream interpretation" rules. Returns the dispatched events and
/// whether the stream ended exactly at a line end (no partial line left).
fn parse_event_stream(stream: &str) -> (Vec<SseEvent>, bool) {
    let stream = stream.strip_prefix('\u{feff}').unwrap_or(stream);
    let mut events = Vec::new();
    let (mut last_id, mut kind, mut data) = (String::new(), String::new(), String::new());
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (events, true);
        }
        let Some(i) = rest.find(['\r', '\n']) else {
            return (events, false); // an incomplete line is never processed
        };
        let line = &rest[..i];
        let eol = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + eol..];

        if line.is_empty() {
            // Dispatch.
            if data.is_empty() {
                kind.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            events.push(SseEvent {
                last_event_id: last_id.clone(),
                kind: if kind.is_empty() {
                    "message".to_string()
                } else {
                    kind.clone()
                },
                data: std::mem::take(&mut data),
            });
            kind.clear();
            continue;
        }
        if line.starts_with(':') {
            continue; // comment
        }
        let (field, value) = match line.find(':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "event" => kind = value.to_string(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            // An id containing NUL is ignored.
            "id" if !value.contains('\0') => last_id = value.to_string(),
            _ => {} // retry and unknown fields
        }
    }
}

fn without_line_chars(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
        .collect()
}

/// Fuzzes the SSE encoder and the `message` JSON payload.
///
/// Layout: a flag byte (bit 0: with id, bit 1: with event name), then id,
/// event and data separated by `0xFF` bytes (each lossily decoded as UTF-8).
///
/// Properties:
/// * `encode_event` output, read by an independent WHATWG-style parser,
///   dispatches exactly one event, ends at a line end, and gives back: the id
///   with CR, LF and NUL removed (empty if there was no id), the event name
///   likewise (`message` if absent or empty after removal), and the data with
///   `\r\n` and `\r` normalized to `\n`.
/// * `encode_comment` output dispatches nothing and does not disturb a
///   following event.
/// * `message_json(from, body)` is one line of valid JSON that round-trips
///   `from` and `body` (as `body` if valid UTF-8, else `body_b64`, standard
///   base64, decoding to the bytes), and survives `encode_event` as the data.
/// * A parseable [`EventId`] round-trips.
pub fn sse(data: &[u8]) {
    let mut inp = Input::new(data);
    let flags = inp.byte();
    let rest = inp.rest();
    let mut parts = rest.splitn(3, |&b| b == 0xFF);
    let id_raw = parts.next().unwrap_or_default();
    let event_raw = parts.next().unwrap_or_default();
    let data_raw = parts.next().unwrap_or_default();
    let id_text = String::from_utf8_lossy(id_raw);
    let event_text = String::from_utf8_lossy(event_raw);
    let data_text = String::from_utf8_lossy(data_raw);
    let id = (flags & 1 != 0).then_some(&*id_text);
    let event = (flags & 2 != 0).then_some(&*event_text);

    let mut out = Vec::new();
    encode_event(&mut out, id, event, &data_text);
    let expected = SseEvent {
        last_event_id: id.map(without_line_chars).unwrap_or_default(),
        kind: match event.map(without_line_chars) {
            Some(k) if !k.is_empty() => k,
            _ => "message".to_string(),
        },
        data: data_text.replace("\r\n", "\n").replace('\r', "\n"),
    };
    check_stream(&out, std::slice::from_ref(&expected), "encode_event");

    // A comment before the event changes nothing.
    let mut with_comment = Vec::new();
    encode_comment(&mut with_comment, &data_text);
    check_stream(&with_comment, &[], "encode_comment");
    with_comment.extend_from_slice(&out);
    check_stream(
        &with_comment,
        std::slice::from_ref(&expected),
        "comment + event",
    );

    // message_json.
    let from = &*id_text;
    let json = message_json(from, data_raw);
    assert!(
        !json.contains(['\r', '\n']),
        "sse: message_json contains a raw line break: {json:?}"
    );
    let value: serde_json::Value = match serde_json::from_str(&json) {
        Ok(v) => v,
        Err(e) => panic!("sse: message_json is not valid JSON ({e}): {json:?}"),
    };
    assert!(
        value.get("from").and_then(|v| v.as_str()) == Some(from),
        "sse: message_json lost `from` {from:?}: {json}"
    );
    match std::str::from_utf8(data_raw) {
        Ok(text) => assert!(
            value.get("body").and_then(|v| v.as_str()) == Some(text)
                && value.get("body_b64").is_none(),
            "sse: message_json lost text body {text:?}: {json}"
        ),
        Err(_) => {
            let decoded = value
                .get("body_b64")
                .and_then(|v| v.as_str())
                .map(|b| STANDARD.decode(b));
            assert!(
                matches!(&decoded, Some(Ok(bytes)) if bytes == data_raw)
                    && value.get("body").is_none(),
                "sse: message_json body_b64 does not decode to the body: {json}"
            );
        }
    }
    let mut out = Vec::new();
    encode_event(&mut out, Some("1-2"), Some("message"), &json);
    let expected_json = SseEvent {
        last_event_id: "1-2".to_string(),
        kind: "message".to_string(),
        data: json,
    };
    check_stream(&out, &[expected_json], "message_json event");

    event_id_round_trip(&id_text);
}

fn check_stream(out: &[u8], expected: &[SseEvent], what: &str) {
    let text: Cow<'_, str> = match std::str::from_utf8(out) {
        Ok(s) => Cow::Borrowed(s),
        Err(e) => panic!("sse: {what} produced invalid UTF-8 ({e})"),
    };
    let (events, complete) = parse_event_stream(&text);
    assert!(
        complete,
        "sse: {what} output does not end at a line end: {text:?}"
    );
    assert!(
        events == expected,
        "sse: {what} output {text:?} parses as {events:?}, expected {expected:?}"
    );
}

// ---------------------------------------------------------------------------
// Corpus replay (stable)
// ---------------------------------------------------------------------------
// connection
// ---------------------------------------------------------------------------

/// What the connection state machine decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// Refused with this status and code.
    Refused(u16, &'static str),
    /// Accepted for this route, on behalf of this account/client.
    Accepted(crate::proto::route::Route, String, String),
}

/// Drives a whole client connection without sockets and with a fixed clock:
/// bytes (in fuzzer-chosen pieces) through the request reader, each complete
/// request through routing and token verification at `NOW`, until the
/// connection would be closed.
///
/// Layout: a split count and selectors (as for `request`), then the bytes the
/// client sends. Tokens in the input are verified with the harness secret;
/// the seed corpus holds valid ones (signed at `NOW`).
///
/// Properties:
/// * The same decisions, in the same order, however the bytes arrive.
/// * A request is accepted only with a token that verifies at `NOW`, for the
///   route's method, and a send's recipient is exactly the path suffix.
/// * Every refusal is one of the statuses the gateway documents, and a
///   request error ends the connection (nothing after it is decided).
/// * A connection that asked to close (`Connection: close`, HTTP/1.0) decides
///   nothing after that request, and a receive route ends request processing.
pub fn connection(data: &[u8]) {
    let mut inp = Input::new(data);
    let selectors = inp.splits();
    let input = inp.rest();
    let whole = run_connection(&[input]);
    let split = run_connection(&pieces(input, &selectors));
    assert!(
        split == whole,
        "connection: split gives {split:?}, whole gives {whole:?}; input {}",
        show(input)
    );
}

fn run_connection(pieces: &[&[u8]]) -> Vec<Decision> {
    use crate::proto::route::{route, Route};
    let verifier = Verifier::new(SECRET);
    let limits = Limits::default();
    let max_body = 64 * 1024;
    let mut reader = RequestReader::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match reader.feed(&buf, &limits, max_body) {
                Ok((n, None)) => {
                    buf.drain(..n.min(buf.len()));
                    if n == 0 {
                        break;
                    }
                }
                Ok((n, Some(req))) => {
                    buf.drain(..n.min(buf.len()));
                    let close = req.head.close;
                    let d = match route(&req.head) {
                        Err(e) => {
                            let _ = e.message(&req.head.path);
                            Decision::Refused(e.status(), e.code())
                        }
                        Ok((r, token)) => match verifier.verify(&token, NOW) {
                            Err(e) => Decision::Refused(401, e.code()),
                            Ok(id) => {
                                assert!(id.exp > NOW, "connection: accepted an expired token");
                                assert!(
                                    crate::auth::valid_id(&id.account)
                                        && crate::auth::valid_id(&id.client)
                                );
                                if let Route::Send { to } = &r {
                                    assert_eq!(
                                        Some(to.as_str()),
                                        req.head.path.strip_prefix("/v1/send/")
                                    );
                                    assert_eq!(req.head.method, crate::proto::head::Method::Post);
                                } else {
                                    assert_eq!(req.head.method, crate::proto::head::Method::Get);
                                }
                                Decision::Accepted(r, id.account, id.client)
                            }
                        },
                    };
                    if let Decision::Refused(status, _) = &d {
                        assert!(
                            [401, 404, 405].contains(status),
                            "connection: unexpected status {status}"
                        );
                    }
                    let receive = matches!(d, Decision::Accepted(Route::Receive { .. }, ..));
                    out.push(d);
                    if close || receive {
                        return out;
                    }
                }
                Err(e) => {
                    assert!(
                        [400, 413, 414, 431, 501, 505].contains(&e.status()),
                        "connection: unexpected status {}",
                        e.status()
                    );
                    out.push(Decision::Refused(e.status(), e.code()));
                    return out;
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::path::Path;

    type Harness = fn(&[u8]);

    const TARGETS: [(&str, Harness); 6] = [
        ("connection", super::connection),
        ("head", super::head),
        ("chunked", super::chunked),
        ("request", super::request),
        ("token", super::token),
        ("sse", super::sse),
    ];

    /// Runs `harness` on every file in `dir`; returns how many there were.
    fn replay_dir(dir: &Path, harness: Harness) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for path in &paths {
            let data =
                std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let result = std::panic::catch_unwind(|| harness(&data));
            if let Err(cause) = result {
                eprintln!("replaying {} failed", path.display());
                std::panic::resume_unwind(cause);
            }
        }
        paths.len()
    }

    fn replay(target: &str) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let harness = TARGETS
            .iter()
            .find(|(name, _)| *name == target)
            .map(|&(_, h)| h)
            .unwrap_or_else(|| panic!("unknown target {target}"));
        let corpus = replay_dir(&root.join("corpus").join(target), harness);
        assert!(corpus > 0, "fuzz/corpus/{target}/ is empty or missing");
        replay_dir(&root.join("regressions").join(target), harness);
    }

    #[test]
    fn replay_head() {
        replay("head");
    }

    #[test]
    fn replay_chunked() {
        replay("chunked");
    }

    #[test]
    fn replay_request() {
        replay("request");
    }

    #[test]
    fn replay_token() {
        replay("token");
    }

    #[test]
    fn replay_sse() {
        replay("sse");
    }

    #[test]
    fn replay_connection() {
        replay("connection");
    }

    /// The seeds exercise acceptance, not only refusals.
    #[test]
    fn connection_seeds_are_accepted() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/connection");
        let data = std::fs::read(dir.join("send_keepalive-0")).expect("seed");
        let d = super::run_connection(&[&data[1..]]);
        assert_eq!(
            d.iter()
                .filter(|x| matches!(x, super::Decision::Accepted(..)))
                .count(),
            3,
            "{d:?}"
        );
        let data = std::fs::read(dir.join("errors-0")).expect("seed");
        let d = super::run_connection(&[&data[1..]]);
        let statuses: Vec<u16> = d
            .iter()
            .map(|x| match x {
                super::Decision::Refused(s, _) => *s,
                _ => 200,
            })
            .collect();
        assert_eq!(statuses, vec![404, 405, 401, 401, 200], "{d:?}");
    }

    #[test]
    fn harnesses_accept_empty_and_tiny_inputs() {
        for (_, harness) in TARGETS {
            harness(b"");
            for b in 0..=255u8 {
                harness(&[b]);
            }
        }
    }
}
