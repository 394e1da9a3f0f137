//! The `head` fuzz target.

#[allow(unused_imports)]
use super::*;

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
/// * A `Complete` head: every line ends in CRLF, `head_len <= input len`,
///   `head_len <= max_head`, the request line (after skipped empty lines,
///   without its terminator) is at most
///   `max_request_line` bytes, at most `max_headers` field lines, HTTP/1.0 or
///   1.1, the target is origin-form and equals `path[?query]`, a chunked
///   request has no Content-Length and is HTTP/1.1.
/// * HTTP/1.1 heads have a host.
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
pub(super) fn check_head_result(
    buf: &[u8],
    limits: &Limits,
    r: &Result<Parse<RequestHead>, HeadError>,
) {
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
    // Every line of an accepted head ends in CRLF (a bare LF is refused).
    assert!(
        head.iter()
            .enumerate()
            .all(|(i, &b)| b != b'\n' || (i > 0 && head[i - 1] == b'\r')),
        "head: accepted a head with a bare LF: {}",
        show(head)
    );
    // Independently skip leading empty lines (CRLF).
    let mut start = 0;
    while head[start..].starts_with(b"\r\n") {
        start += 2;
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
        h.version_minor == 0 || h.host().is_some(),
        "head: HTTP/1.1 head without a host"
    );
    assert!(
        h.path().starts_with('/') && !h.path().contains('?'),
        "head: bad path {:?}",
        h.path()
    );
    let mut target = h.path().to_string();
    if let Some(q) = h.query() {
        target.push('?');
        target.push_str(q);
    }
    let mut parts = request_line.split(|&b| b == b' ');
    let (_, line_target) = (parts.next(), parts.next());
    // An absolute-form target (`http://host/path`) is reduced to its path and
    // query (an empty path is `/`), and its authority is the host.
    let line_target = line_target.map(|t| match absolute_form_rest(t, h.host()) {
        Some(rest) if rest.is_empty() || rest.starts_with(b"?") => [b"/", rest].concat(),
        Some(rest) => rest.to_vec(),
        None => t.to_vec(),
    });
    assert!(
        line_target.as_deref() == Some(target.as_bytes()),
        "head: path {:?} query {:?} do not match the request line {}",
        h.path(),
        h.query(),
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
    if let Some(id) = h.last_event_id() {
        event_id_round_trip(id);
    }
    if let Some(q) = h.query() {
        for name in ["token", "last_event_id", ""] {
            let _ = query_param(q, name);
        }
    }
}

/// `EventId::parse` accepts its own rendering of anything it accepted.
pub(super) fn event_id_round_trip(s: &str) {
    if let Some(id) = EventId::parse(s) {
        let rendered = id.to_string();
        assert!(
            EventId::parse(&rendered) == Some(id),
            "ids: {s:?} parsed as {id:?} but its rendering {rendered:?} does not parse back"
        );
    }
}

/// Percent-encodes every byte that is not ASCII alphanumeric.
pub(super) fn percent_encode(s: &str) -> String {
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
pub(super) fn query_round_trip(buf: &[u8]) {
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

/// For an absolute-form target `http[s]://<host><rest>`: `rest`.
fn absolute_form_rest<'a>(target: &'a [u8], host: Option<&str>) -> Option<&'a [u8]> {
    let lower = target.to_ascii_lowercase();
    let skip = if lower.starts_with(b"http://") {
        7
    } else if lower.starts_with(b"https://") {
        8
    } else {
        return None;
    };
    let host = host?.as_bytes();
    let after = &target[skip..];
    assert!(
        after.starts_with(host),
        "head: absolute-form target {} does not carry the host {}",
        show(target),
        show(host)
    );
    Some(&after[host.len()..])
}
