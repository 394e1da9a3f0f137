//! Server-Sent Events encoder (text/event-stream), and the JSON payloads the gateway sends.

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
    if json {
        out.extend_from_slice(b",\"json\":");
        out.extend_from_slice(body);
        out.extend_from_slice(JSON_MESSAGE_TAIL);
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
    out.extend_from_slice(b"}\n\n");
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

/// True if `s` is UTF-8 text that a JSON string holds as it is: no byte
/// below 0x20, no `"` and no `\` (what [`push_json_text`] would escape).
/// The escape pass's scan, without copying anything.
pub fn plain_json_text(s: &[u8]) -> bool {
    matches!(next_special(s, 0, &mut false), Ok(None))
}

/// Not UTF-8 (found by [`next_special`]).
struct NotUtf8;

/// From `i`, the position of the next byte of `s` that JSON escapes (below
/// 0x20, `"` or `\`), or `None` at the end. Unless `*valid`, checks on the
/// way that `s` is UTF-8: from its first byte of 0x80 or above, the rest is
/// checked once with `std::str::from_utf8` (the bytes before were ASCII, so no
/// character starts earlier) and `*valid` is set.
#[inline(always)]
fn next_special(s: &[u8], mut i: usize, valid: &mut bool) -> Result<Option<usize>, NotUtf8> {
    loop {
        i = skip_clean(s, i, *valid);
        let Some(&b) = s.get(i) else {
            return Ok(None);
        };
        if b >= 0x80 && !*valid {
            if std::str::from_utf8(&s[i..]).is_err() {
                return Err(NotUtf8);
            }
            *valid = true;
        }
        if b < 0x20 || b == b'"' || b == b'\\' {
            return Ok(Some(i));
        }
        i += 1;
    }
}

/// From `i`, past the 64-, 16- and 8-byte blocks of `s` with no byte below
/// 0x20, no `"`, no `\` (and, unless `valid`, no byte of 0x80 or above):
/// where the bytes must be looked at one by one, or the end of `s`.
#[inline(always)]
fn skip_clean(s: &[u8], mut i: usize, valid: bool) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if s.len().saturating_sub(i) >= AVX2_MIN && std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            i = unsafe { skip_clean64_avx2(s, i, !valid) };
        }
        while i + 64 <= s.len() && !flagged64(&s[i..i + 64], !valid) {
            i += 64;
        }
    }
    loop {
        #[cfg(target_arch = "x86_64")]
        if i + 16 <= s.len() && !flagged16(&s[i..i + 16], !valid) {
            i += 16;
            continue;
        }
        if i + 8 <= s.len() && !flagged8(&s[i..i + 8], !valid) {
            i += 8;
            continue;
        }
        return i;
    }
}

/// True if one of the 8 bytes of `chunk` is below 0x20, `"` or `\`, or, with
/// `high`, 0x80 or above (may also flag a byte next to such a byte: flagged
/// blocks are looked at byte by byte).
fn flagged8(chunk: &[u8], high: bool) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut b = [0u8; 8];
    b.copy_from_slice(&chunk[..8]);
    let w = u64::from_le_bytes(b);
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let below_space = w.wrapping_sub(LO * 0x20) & !w & HI;
    let top = if high { w & HI } else { 0 };
    (below_space | zero(w ^ (LO * b'"' as u64)) | zero(w ^ (LO * b'\\' as u64)) | top) != 0
}

/// True if one of the 16 bytes of `chunk` is below 0x20, `"` or `\`, or,
/// with `high`, 0x80 or above (SSE2, which every x86-64 CPU has).
#[cfg(target_arch = "x86_64")]
fn flagged16(chunk: &[u8], high: bool) -> bool {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    debug_assert!(chunk.len() >= 16);
    // SAFETY: SSE2 is part of the x86-64 baseline; the unaligned load reads 16
    // bytes and `chunk` has at least 16 (checked by the caller).
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr() as *const __m128i);
        // min(v, 0x1f) == v exactly for the bytes <= 0x1f (unsigned).
        let ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        let special = _mm_movemask_epi8(_mm_or_si128(ctl, _mm_or_si128(quote, backslash)));
        // The sign bits of the bytes themselves are the bytes >= 0x80.
        (special | if high { _mm_movemask_epi8(v) } else { 0 }) != 0
    }
}

/// Shortest rest of a text that [`skip_clean`] scans with AVX2 (where the
/// CPU has it); shorter ones are not worth the feature check.
#[cfg(target_arch = "x86_64")]
const AVX2_MIN: usize = 256;

/// From `i`, past the 64-byte blocks of `s` that [`flagged64`] would pass,
/// two 32-byte AVX2 loads per block (about twice as fast as SSE2 on a large
/// body).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn skip_clean64_avx2(s: &[u8], mut i: usize, high: bool) -> usize {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_min_epu8, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set1_epi8,
    };
    let ctl_max = _mm256_set1_epi8(0x1f);
    let quote = _mm256_set1_epi8(b'"' as i8);
    let backslash = _mm256_set1_epi8(b'\\' as i8);
    let special = |v: __m256i| {
        let ctl = _mm256_cmpeq_epi8(_mm256_min_epu8(v, ctl_max), v);
        let q = _mm256_cmpeq_epi8(v, quote);
        let b = _mm256_cmpeq_epi8(v, backslash);
        _mm256_or_si256(ctl, _mm256_or_si256(q, b))
    };
    while i + 64 <= s.len() {
        // SAFETY: bytes i..i + 64 are within `s` (the loop condition); the
        // loads are unaligned.
        let (a, b) = unsafe {
            let p = s.as_ptr().add(i) as *const __m256i;
            (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)))
        };
        let mut m = _mm256_movemask_epi8(_mm256_or_si256(special(a), special(b)));
        if high {
            m |= _mm256_movemask_epi8(_mm256_or_si256(a, b));
        }
        if m != 0 {
            break;
        }
        i += 64;
    }
    i
}

/// [`flagged16`] for 64 bytes at once: four loads, one test (a large body is
/// mostly clean blocks, and this is most of the time its scan takes).
#[cfg(target_arch = "x86_64")]
fn flagged64(chunk: &[u8], high: bool) -> bool {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm_setzero_si128,
    };
    assert!(chunk.len() >= 64);
    // SAFETY: SSE2 is part of the x86-64 baseline; the four unaligned loads
    // read bytes 0..64 of `chunk`, which has at least 64 (asserted above).
    unsafe {
        let p = chunk.as_ptr() as *const __m128i;
        let (ctl_max, quote, backslash) = (
            _mm_set1_epi8(0x1f),
            _mm_set1_epi8(b'"' as i8),
            _mm_set1_epi8(b'\\' as i8),
        );
        let mut special = _mm_setzero_si128();
        let mut any = _mm_setzero_si128();
        for k in 0..4 {
            let v = _mm_loadu_si128(p.add(k));
            let ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, ctl_max), v);
            let q = _mm_cmpeq_epi8(v, quote);
            let b = _mm_cmpeq_epi8(v, backslash);
            special = _mm_or_si128(special, _mm_or_si128(ctl, _mm_or_si128(q, b)));
            any = _mm_or_si128(any, v);
        }
        (_mm_movemask_epi8(special) | if high { _mm_movemask_epi8(any) } else { 0 }) != 0
    }
}

/// Appends `s` (valid UTF-8) as a JSON string, escaped exactly as
/// `serde_json` does: `"` and `\`, the short forms `\b \t \n \f \r`, and
/// `\u00XX` for the other control characters; everything else as is.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &[u8]) {
    escape_json(out, s, true);
}

/// [`push_json_str`] for bytes that may not be UTF-8: returns false, and
/// appends nothing, if they are not. An ASCII body is checked in the same
/// pass that escapes it; from its first byte of 0x80 or above on, the rest is
/// checked once with `std::str::from_utf8` (the bytes before it were ASCII,
/// so no character starts earlier).
pub(crate) fn push_json_text(out: &mut Vec<u8>, s: &[u8]) -> bool {
    escape_json(out, s, false)
}

/// The escape pass of [`push_json_str`] and [`push_json_text`].
///
/// Sixteen (SSE2 on x86-64) or eight bytes at a time: a block with no byte
/// below 0x20, no `"`, no `\` (and, until the text is known to be valid,
/// no byte of 0x80 or above) is copied in one run; only blocks that have one
/// are looked at byte by byte. A 64 KiB text body is escaped several times
/// faster than with `serde_json`.
fn escape_json(out: &mut Vec<u8>, s: &[u8], mut valid: bool) -> bool {
    let start = out.len();
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut run = 0; // start of the bytes not yet copied
    loop {
        let i = match next_special(s, run, &mut valid) {
            Ok(Some(i)) => i,
            Ok(None) => break,
            Err(NotUtf8) => {
                out.truncate(start);
                return false;
            }
        };
        let b = s[i];
        out.extend_from_slice(&s[run..i]);
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            _ => b"",
        };
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        } else {
            out.extend_from_slice(short);
        }
        run = i + 1;
    }
    out.extend_from_slice(&s[run..]);
    out.push(b'"');
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One dispatched event as a browser would see it.
    #[derive(Debug, PartialEq, Eq)]
    struct Event {
        last_id: String,
        kind: String,
        data: String,
    }

    /// What a stream parses to.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Parsed {
        events: Vec<Event>,
        comments: Vec<String>,
        retry: Option<u64>,
    }

    /// A small independent text/event-stream parser following the WHATWG
    /// "event stream interpretation" rules.
    fn parse_stream(stream: &str) -> Parsed {
        let mut parsed = Parsed::default();
        let (mut last_id, mut kind, mut data) = (String::new(), String::new(), String::new());
        let mut rest = stream;
        while !rest.is_empty() {
            let (line, next) = match rest.find(['\r', '\n']) {
                Some(i) if rest[i..].starts_with("\r\n") => (&rest[..i], &rest[i + 2..]),
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => panic!("stream ends inside a line: {rest:?}"),
            };
            rest = next;
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop(); // the trailing LF
                    let kind = if kind.is_empty() {
                        "message".to_string()
                    } else {
                        kind.clone()
                    };
                    parsed.events.push(Event {
                        last_id: last_id.clone(),
                        kind,
                        data: data.clone(),
                    });
                }
                data.clear();
                kind.clear();
                continue;
            }
            if let Some(comment) = line.strip_prefix(':') {
                parsed.comments.push(comment.to_string());
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "event" => kind = value.to_string(),
                "id" if !value.contains('\0') => last_id = value.to_string(),
                "retry" => parsed.retry = value.parse().ok(),
                other => panic!("unexpected field {other:?}"),
            }
        }
        parsed
    }

    fn event(id: Option<&str>, kind: Option<&str>, data: &str) -> String {
        let mut out = Vec::new();
        encode_event(&mut out, id, kind, data);
        String::from_utf8(out).expect("encoder output is UTF-8")
    }

    fn one_event(id: Option<&str>, kind: Option<&str>, data: &str) -> Event {
        let mut p = parse_stream(&event(id, kind, data));
        assert_eq!(p.events.len(), 1, "{:?}", event(id, kind, data));
        p.events.remove(0)
    }

    #[test]
    fn exact_encoding() {
        assert_eq!(
            event(Some("7"), Some("message"), "hi"),
            "id: 7\nevent: message\ndata: hi\n\n"
        );
        assert_eq!(event(None, None, "a\nb"), "data: a\ndata: b\n\n");
        assert_eq!(event(None, None, ""), "data:\n\n");
        assert_eq!(event(Some(""), None, "x"), "id:\ndata: x\n\n");
        assert_eq!(event(None, Some(""), "x"), "data: x\n\n");
        assert_eq!(event(None, Some("\r\n"), "x"), "data: x\n\n");
        assert_eq!(
            event(None, None, "a\r\nb\rc\n\nd"),
            "data: a\ndata: b\ndata: c\ndata:\ndata: d\n\n"
        );
        assert_eq!(event(None, None, " lead"), "data:  lead\n\n");
    }

    #[test]
    fn round_trips() {
        let e = one_event(Some("42"), Some("message"), "{\"a\":1}");
        assert_eq!(
            e,
            Event {
                last_id: "42".into(),
                kind: "message".into(),
                data: "{\"a\":1}".into()
            }
        );
        for data in [
            "",
            "x",
            "a\nb",
            "a\n",
            "\n",
            "\n\n",
            "a\n\nb",
            " x ",
            ":x",
            "data: x",
            "\u{e9}\u{1f600}",
            "a\0b",
        ] {
            assert_eq!(one_event(None, None, data).data, data, "{data:?}");
        }
        // CRLF and CR are line breaks too; they come back as LF.
        assert_eq!(one_event(None, None, "a\r\nb\rc").data, "a\nb\nc");
        assert_eq!(one_event(None, None, "a\r\n").data, "a\n");
        assert_eq!(one_event(None, None, "\r\r\n").data, "\n\n");
        assert_eq!(one_event(None, Some(" spaced"), "x").kind, " spaced");
    }

    #[test]
    fn id_and_event_are_sanitized() {
        let e = one_event(Some("1\r\n2\r3\n4\u{0}5"), Some("ty\npe\r\0x"), "d");
        assert_eq!(
            e,
            Event {
                last_id: "12345".into(),
                kind: "typex".into(),
                data: "d".into()
            }
        );
        // An injection attempt stays inside the field.
        let e = one_event(Some("1\n\ndata: evil"), Some("m\nretry: 1"), "ok");
        assert_eq!(e.last_id, "1data: evil");
        assert_eq!(e.kind, "mretry: 1");
        assert_eq!(e.data, "ok");
    }

    #[test]
    fn several_events_and_comments() {
        let mut out = Vec::new();
        encode_retry(&mut out, 1500);
        encode_event(&mut out, Some("1"), Some("message"), "one");
        encode_comment(&mut out, "");
        encode_comment(&mut out, "keep\nalive");
        encode_event(&mut out, None, Some("ping"), "two\nlines");
        let stream = String::from_utf8(out).expect("encoder output is UTF-8");
        let p = parse_stream(&stream);
        assert_eq!(p.retry, Some(1500));
        assert_eq!(p.comments, ["", "keep", "alive"]);
        assert_eq!(
            p.events,
            [
                Event {
                    last_id: "1".into(),
                    kind: "message".into(),
                    data: "one".into()
                },
                Event {
                    last_id: "1".into(),
                    kind: "ping".into(),
                    data: "two\nlines".into()
                },
            ]
        );
    }

    #[test]
    fn comments_and_retry() {
        let mut out = Vec::new();
        encode_comment(&mut out, "");
        assert_eq!(out, b":\n\n");
        out.clear();
        encode_comment(&mut out, "hello");
        assert_eq!(out, b":hello\n\n");
        out.clear();
        encode_comment(&mut out, "a\r\nb");
        assert_eq!(out, b":a\n:b\n\n");
        out.clear();
        encode_retry(&mut out, 0);
        assert_eq!(out, b"retry: 0\n");
        out.clear();
        encode_retry(&mut out, u64::MAX);
        assert_eq!(out, b"retry: 18446744073709551615\n");
        // In the block of the event that follows: one event, no empty one.
        out.clear();
        encode_retry(&mut out, 2000);
        encode_event(&mut out, None, Some("ready"), "{}");
        assert_eq!(out, b"retry: 2000\nevent: ready\ndata: {}\n\n");
        let p = parse_stream(std::str::from_utf8(&out).expect("UTF-8"));
        assert_eq!((p.retry, p.events.len()), (Some(2000), 1));
    }

    #[test]
    fn message_json_text() {
        assert_eq!(
            message_json("alice", b"hi"),
            r#"{"from":"alice","body":"hi"}"#
        );
        assert_eq!(message_json("", b""), r#"{"from":"","body":""}"#);
        let j = message_json("a\"b", "q\"\\\n\r\t\u{1}\u{e9}\u{1f600}".as_bytes());
        assert_eq!(
            j,
            "{\"from\":\"a\\\"b\",\"body\":\"q\\\"\\\\\\n\\r\\t\\u0001\u{e9}\u{1f600}\"}"
        );
        assert!(!j.contains(['\n', '\r']));
        let v: serde_json::Value = serde_json::from_str(&j).expect("valid JSON");
        assert_eq!(v["from"], "a\"b");
        assert_eq!(v["body"], "q\"\\\n\r\t\u{1}\u{e9}\u{1f600}");
    }

    #[test]
    fn message_json_binary() {
        assert_eq!(
            message_json("bob", b"\xff"),
            r#"{"from":"bob","body_b64":"/w=="}"#
        );
        assert_eq!(
            message_json("bob", b"ab\xc3"),
            r#"{"from":"bob","body_b64":"YWLD"}"#
        );
        let body = [0u8, 1, 2, 0xfe, 0xff, b'\n'];
        let v: serde_json::Value =
            serde_json::from_str(&message_json("x", &body)).expect("valid JSON");
        let b64 = v["body_b64"].as_str().expect("string");
        assert_eq!(STANDARD.decode(b64).expect("base64"), body);
        assert!(v.get("body").is_none());
        // Valid UTF-8 with NUL is still text.
        assert_eq!(message_json("x", b"\0"), r#"{"from":"x","body":"\u0000"}"#);
    }

    #[test]
    fn message_json_as_event_data() {
        let data = message_json("a", "multi\nline\r\n".as_bytes());
        let e = one_event(Some("9"), Some("message"), &data);
        assert_eq!(e.data, data);
    }

    #[test]
    fn encode_message_matches_encode_event_of_message_json() {
        let id = crate::ids::EventId {
            epoch: 0xdead_beef,
            seq: 42,
        };
        let bodies: [&[u8]; 6] = [
            b"",
            b"hello",
            b"line1\nline2\r\n\r",
            b"quote\" backslash\\ tab\t nul\0",
            "unicode \u{2028} \u{1F600}".as_bytes(),
            &[0xff, 0xfe, 0x00, 0x80],
        ];
        for body in bodies {
            for from in ["a", "agent-1", "x\"y"] {
                let mut fast = Vec::new();
                encode_message(&mut fast, id, from, body, false);
                let mut slow = Vec::new();
                encode_event(
                    &mut slow,
                    Some(&id.to_string()),
                    Some("message"),
                    &message_json(from, body),
                );
                assert_eq!(fast, slow, "from {from:?} body {body:?}");
            }
        }
    }

    /// Bodies that are not UTF-8 (the bad bytes at every position, before and
    /// after valid non-ASCII text, across the 8- and 16-byte blocks) become
    /// `body_b64`, valid ones stay text, exactly as with `message_json`.
    #[test]
    fn encode_message_tells_utf8_from_binary_at_every_position() {
        let id = crate::ids::EventId { epoch: 7, seq: 1 };
        let bad: [&[u8]; 6] = [
            b"\xff",
            b"\xc3",         // a lead byte with no continuation
            b"\xf0\x9f\x98", // a 4-byte sequence cut short
            b"\xc0\x80",     // overlong
            b"\xed\xa0\x80", // a surrogate
            b"\x80",         // a lone continuation byte
        ];
        let good: [&[u8]; 4] = [b"a", "\u{e9}".as_bytes(), "\u{1F600}".as_bytes(), b"\""];
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for len in 0usize..40 {
            for pos in [0, 1, len / 2, len.saturating_sub(1), len] {
                for ins in bad.iter().chain(good.iter()) {
                    let mut b = vec![b'x'; len];
                    let p = pos.min(b.len());
                    b.splice(p..p, ins.iter().copied());
                    bodies.push(b.clone());
                    // Valid non-ASCII text first, then the insert.
                    let mut c = "\u{e9}t\u{e9}".as_bytes().to_vec();
                    c.extend_from_slice(&b);
                    bodies.push(c);
                }
            }
        }
        let mut long = "\u{1F600}".repeat(20_000).into_bytes();
        bodies.push(long.clone());
        long.push(0xff);
        bodies.push(long);
        bodies.push(vec![b'a'; 70_000]);
        for body in &bodies {
            let mut fast = Vec::new();
            encode_message(&mut fast, id, "a", body, false);
            let mut slow = Vec::new();
            encode_event(
                &mut slow,
                Some(&id.to_string()),
                Some("message"),
                &message_json("a", body),
            );
            assert_eq!(fast, slow, "body {body:?}");
        }
    }

    #[test]
    fn push_json_str_escapes_exactly_like_serde_json() {
        // Every single character class at the start, middle and end of
        // strings up to 72 bytes (so the 16- and 8-byte fast paths and the
        // byte loop are all crossed),
        // plus long mixed strings from a small deterministic generator.
        let specials = [
            "\"", "\\", "\u{0}", "\u{1}", "\u{8}", "\t", "\n", "\u{b}", "\u{c}", "\r", "\u{1f}",
            " ", "~", "\u{7f}", "é", "\u{2028}", "😀", "/",
        ];
        let mut cases: Vec<String> = Vec::new();
        for len in 0..72 {
            for sp in specials {
                for pos in [0, len / 2, len] {
                    let mut t: String = "a".repeat(len);
                    t.insert_str(pos.min(t.len()), sp);
                    cases.push(t);
                }
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in [100usize, 1000, 70_000] {
            let mut t = String::with_capacity(n);
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let c = match x % 50 {
                    0 => '"',
                    1 => '\\',
                    2 => '\n',
                    3 => '\u{3}',
                    4 => 'ß',
                    _ => (b'a' + (x % 26) as u8) as char,
                };
                t.push(c);
            }
            cases.push(t);
        }
        for t in cases {
            let mut out = Vec::new();
            push_json_str(&mut out, t.as_bytes());
            let want = serde_json::to_string(&t).expect("serialize");
            assert_eq!(String::from_utf8(out).expect("utf-8"), want, "{t:?}");
            // The checking variant gives the same for valid text, and appends
            // nothing once a byte makes the text invalid.
            let mut out = b"kept".to_vec();
            assert!(push_json_text(&mut out, t.as_bytes()));
            assert_eq!(out[4..], *want.as_bytes(), "{t:?}");
            for bad in [&[0xffu8][..], &[0xc3], &[0xe2, 0x82], &[0xed, 0xa0, 0x80]] {
                for pos in [0, t.len() / 2, t.len()] {
                    if !t.is_char_boundary(pos) {
                        continue;
                    }
                    let mut b = t.as_bytes()[..pos].to_vec();
                    b.extend_from_slice(bad);
                    b.extend_from_slice(&t.as_bytes()[pos..]);
                    if std::str::from_utf8(&b).is_ok() {
                        continue;
                    }
                    let mut out = b"kept".to_vec();
                    assert!(!push_json_text(&mut out, &b), "{b:?}");
                    assert_eq!(out, b"kept");
                }
            }
        }
    }

    /// Around and across the 64-byte blocks: one special byte (or a byte that
    /// makes the text invalid, or valid non-ASCII text) at every position of
    /// bodies of up to six blocks, with and without valid non-ASCII text
    /// before it. `plain_json_text` and the escape agree with `serde_json`.
    #[test]
    fn every_position_of_the_64_byte_blocks_is_looked_at() {
        let inserts: [&[u8]; 8] = [
            b"\"",
            b"\\",
            b"\0",
            b"\x1f",
            b"\x7f",
            "\u{e9}".as_bytes(),
            b"\xff",
            b"\xed\xa0\x80",
        ];
        // Past 256 bytes the 64-byte blocks are scanned with AVX2 (if the CPU has it).
        for len in [
            63usize, 64, 65, 127, 128, 129, 191, 192, 255, 256, 257, 320, 383, 384,
        ] {
            for pos in 0..=len {
                for ins in inserts {
                    for prefix in [&b""[..], "\u{e9}".as_bytes()] {
                        let mut b = prefix.to_vec();
                        b.extend(std::iter::repeat_n(b'x', len));
                        let p = prefix.len() + pos;
                        b.splice(p..p, ins.iter().copied());
                        let text = std::str::from_utf8(&b).ok();
                        let mut out = Vec::new();
                        assert_eq!(push_json_text(&mut out, &b), text.is_some(), "{b:?}");
                        if let Some(t) = text {
                            let want = serde_json::to_string(t).expect("serialize");
                            assert_eq!(out, want.as_bytes(), "{b:?}");
                            assert_eq!(plain_json_text(&b), want.len() == b.len() + 2, "{b:?}");
                        } else {
                            assert!(!plain_json_text(&b), "{b:?}");
                        }
                    }
                }
            }
        }
    }

    /// `plain_json_text` says yes exactly for the bodies the escape pass
    /// leaves as they are (every special byte, and invalid UTF-8, at the
    /// start, middle and end, across the 8- and 16-byte blocks), and a plain
    /// body's event is its head, the body and the tail.
    #[test]
    fn plain_bodies_are_exactly_those_the_escape_leaves_alone() {
        let inserts: [&[u8]; 14] = [
            b"\"",
            b"\\",
            b"\0",
            b"\x1f",
            b"\n",
            b" ",
            b"~",
            b"\x7f",
            b"/",
            "\u{e9}".as_bytes(),
            "\u{1F600}".as_bytes(),
            b"\xff",
            b"\xc3",
            b"\xed\xa0\x80",
        ];
        let mut bodies: Vec<Vec<u8>> = vec![Vec::new(), vec![b'a'; 70_000]];
        for len in 0usize..72 {
            for ins in inserts {
                for pos in [0, 1, len / 2, len.saturating_sub(1), len] {
                    let mut b = vec![b'x'; len];
                    let p = pos.min(b.len());
                    b.splice(p..p, ins.iter().copied());
                    bodies.push(b.clone());
                    let mut c = "\u{e9}".as_bytes().to_vec();
                    c.extend_from_slice(&b);
                    bodies.push(c);
                }
            }
        }
        let id = crate::ids::EventId { epoch: 3, seq: 9 };
        let mut plain = 0;
        for body in &bodies {
            let mut esc = Vec::new();
            let as_is = push_json_text(&mut esc, body)
                && esc[1..esc.len() - 1] == body[..]
                && esc.len() == body.len() + 2;
            assert_eq!(plain_json_text(body), as_is, "{body:?}");
            if as_is {
                plain += 1;
                let mut parts = Vec::new();
                encode_message_head(&mut parts, id, "agent-\"1\"", false);
                parts.extend_from_slice(body);
                parts.extend_from_slice(message_tail(false));
                let mut whole = Vec::new();
                encode_message(&mut whole, id, "agent-\"1\"", body, false);
                assert_eq!(parts, whole, "{body:?}");
            }
        }
        assert!(
            plain > 1000 && plain < bodies.len() / 2,
            "{plain} of {}",
            bodies.len()
        );
    }
}
