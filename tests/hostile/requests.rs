//! Oversized request lines, heads and bodies are refused early; malformed
//! requests get JSON errors and the connection is closed.

use std::io::Write;
use std::net::SocketAddr;

use super::*;

// ---------------------------------------------------------------------------
// 2. Oversized request line, head and body
// ---------------------------------------------------------------------------

/// Writes `prefix`, then `filler` in 1 KiB pieces (up to `total` bytes in
/// all), checking for an answer after each piece. Returns the bytes written
/// when the answer was first seen, the answer and the connection.
fn write_until_answered(
    addr: SocketAddr,
    prefix: &[u8],
    filler: &[u8],
    total: usize,
) -> (usize, Response, Http) {
    let mut h = Http::connect(addr);
    h.send_raw(prefix);
    let mut sent = prefix.len();
    let mut seen = None;
    let mut probe = [0u8; 1];
    h.stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while sent < total {
        let mut piece = Vec::with_capacity(1024);
        while piece.len() < 1024 {
            piece.extend_from_slice(filler);
        }
        if h.stream.write_all(&piece).is_err() {
            break;
        }
        sent += piece.len();
        if let Ok(n) = h.stream.peek(&mut probe) {
            if n > 0 {
                seen = Some(sent);
                break;
            }
        }
    }
    h.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let r = h
        .read_response()
        .expect("no answer to the oversized request");
    (seen.unwrap_or(sent), r, h)
}

#[test]
fn oversized_requests_are_refused_early() {
    let _g = serial();
    let node = Node::start(&["--workers", "2"]);
    let mut rx = open_rx(&node, "agent-1");
    let tok = console_tok();

    // 20 KiB of request line without a line end: 414 once past 8 KiB.
    let (at, r, mut h) = write_until_answered(node.addr, b"GET /", b"a", 20 * 1024);
    assert!(at <= 11 * 1024, "414 only seen after {at} bytes");
    assert_closing_error(&r, &mut h, 414, "uri_too_long");

    // A header that never ends: 431 once the head passes 16 KiB.
    let prefix =
        format!("GET /v1/clients HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nX-Pad: ");
    let (at, r, mut h) = write_until_answered(node.addr, prefix.as_bytes(), b"p", 32 * 1024);
    assert!(at <= 19 * 1024, "431 only seen after {at} bytes");
    assert_closing_error(&r, &mut h, 431, "headers_too_large");

    // Header after header: 431 once past 64 fields (each filler piece holds 1 KiB of fields).
    let (at, r, mut h) = write_until_answered(
        node.addr,
        b"GET /v1/clients HTTP/1.1\r\nHost: t\r\n",
        b"X-Many-Headers: v\r\n",
        32 * 1024,
    );
    assert!(
        at <= 4 * 1024,
        "431 (too many fields) only seen after {at} bytes"
    );
    assert_closing_error(&r, &mut h, 431, "headers_too_large");

    // A body over --max-message (default 64 KiB): 413 right after the head,
    // on a keep-alive connection that already delivered a message.
    let mut h = Http::connect(node.addr);
    assert_eq!(
        h.request("POST", "/v1/send/agent-1", Some(&tok), b"first")
            .status,
        202
    );
    rx.expect_message("console-1", "first");
    let t = Instant::now();
    h.send_raw(
        format!("POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: 10000000\r\n\r\n")
            .as_bytes(),
    );
    let r = h.read_response().expect("no 413 before the body");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "413 took {:?}",
        t.elapsed()
    );
    assert_eq!(r.status, 413);
    // What the client sends as "body" now must not be taken as a request.
    let smuggled = format!(
        "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: 8\r\n\r\nSMUGGLED"
    );
    let _ = h.stream.write_all(smuggled.as_bytes());
    assert_closing_error(&r, &mut h, 413, "payload_too_large");

    arrives_within(
        &node,
        &mut rx,
        "agent-1",
        "after oversized",
        Duration::from_millis(500),
    );
    assert_no_error_log(&node);
}

/// `n` letters, a to z over and over.
fn letters(n: usize) -> String {
    (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

/// The server's virtual memory size (VmSize), in KiB.
fn vm_size_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/PID/status")
}

/// With `--max-message 1GiB`, clients that declare 1 GiB bodies and send a
/// few bytes of them do not make the server reserve a gigabyte each (a host
/// with strict overcommit would refuse that, and a refused allocation aborts
/// the process); a large body sent in full still arrives whole.
#[test]
fn large_declared_bodies_reserve_memory_as_they_arrive() {
    let _g = serial();
    let node = Node::start(&["--workers", "2", "--max-message", "1GiB"]);
    let mut rx = open_rx(&node, "agent-1");
    let tok = console_tok();
    let pid = node.child.id();
    let before = vm_size_kib(pid);
    let bytes_in = |node: &Node| metric(&metrics_text(node), "switchboard_bytes_in_total");
    let base_in = bytes_in(&node);
    let mut open = Vec::new();
    let mut sent = 0usize;
    for _ in 0..24 {
        let mut h = Http::connect(node.addr);
        let req = format!(
            "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: 1073741824\r\n\r\nonly a few bytes"
        );
        h.send_raw(req.as_bytes());
        sent += req.len();
        open.push(h);
    }
    // Every head (and its first bytes) has been read by the server.
    assert!(
        wait_until(Duration::from_secs(5), || bytes_in(&node)
            >= base_in + sent as f64),
        "the server did not read the 24 request heads"
    );
    let grown = vm_size_kib(pid).saturating_sub(before);
    assert!(
        grown < 512 * 1024,
        "24 declared 1 GiB bodies grew the server's virtual memory by {grown} KiB"
    );

    // A 1 MiB body sent in full (in pieces) arrives whole.
    let body = letters(1 << 20);
    let mut h = Http::connect(node.addr);
    h.send_raw(
        format!(
            "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    for piece in body.as_bytes().chunks(100_000) {
        h.send_raw(piece);
    }
    let r = h.read_response().expect("an answer to the 1 MiB send");
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let ev = rx
        .next_event_within(Duration::from_secs(5))
        .expect("the 1 MiB message");
    assert_eq!(ev.event, "message");
    assert_eq!(ev.json()["body"].as_str().map(str::len), Some(body.len()));
    assert_eq!(ev.json()["body"], body.as_str());
    drop(open);
    assert_no_error_log(&node);
}

/// A large send written in one piece together with the requests behind it
/// (so that one read holds a whole large body and more): every request is
/// answered in order and both messages arrive whole.
#[test]
fn a_large_body_read_together_with_the_requests_behind_it() {
    let _g = serial();
    let node = Node::start(&["--workers", "1"]);
    let mut rx = open_rx(&node, "agent-1");
    let tok = console_tok();
    let big = letters(40_000);
    let post = |body: &str| {
        format!(
            "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut all = post(&big);
    all.push_str(&post("small one"));
    all.push_str(&format!(
        "GET /v1/clients HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n"
    ));
    all.push_str(&post(&big[..20_000]));
    let mut h = Http::connect(node.addr);
    h.send_raw(all.as_bytes());
    for (i, want) in [202, 202, 200, 202].into_iter().enumerate() {
        let r = h.read_response().unwrap_or_else(|| panic!("no answer {i}"));
        assert_eq!(
            r.status,
            want,
            "answer {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    for want in [&big[..], "small one", &big[..20_000]] {
        let ev = rx
            .next_event_within(Duration::from_secs(5))
            .expect("a message");
        assert_eq!(ev.event, "message");
        assert_eq!(ev.json()["body"], want);
    }
    assert_no_error_log(&node);
}

// ---------------------------------------------------------------------------
// 3. Malformed requests
// ---------------------------------------------------------------------------

#[test]
fn malformed_requests_get_json_errors_and_are_closed() {
    let _g = serial();
    let node = Node::start(&["--workers", "2"]);
    let mut rx = open_rx(&node, "agent-1");
    let tok = console_tok();
    // Appended to every case: if the server lost track of message framing it
    // would deliver this to agent-1.
    let smuggled = format!(
        "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: 8\r\n\r\nSMUGGLED"
    );
    let post = |extra: &str, body: &str| -> Vec<u8> {
        format!("POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n{extra}\r\n{body}").into_bytes()
    };
    let chunked = "Transfer-Encoding: chunked\r\n";
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("bad method", format!("G@T /v1/clients HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("chunk size zz", post(chunked, "zz\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunked_body"),
        ("chunk size -1", post(chunked, "-1\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunked_body"),
        ("18-digit chunk size", post(chunked, "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunked_body"),
        ("17 zero digits", post(chunked, "00000000000000005\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunked_body"),
        ("chunk line over 4 KiB", post(chunked, &format!("5;ext={}\r\nhello\r\n0\r\n\r\n", "e".repeat(5000))), 400, "bad_chunked_body"),
        ("trailers over 4 KiB", post(chunked, &format!("5\r\nhello\r\n0\r\nX-Trailer: {}\r\n\r\n", "t".repeat(5000))), 400, "bad_chunked_body"),
        ("missing CRLF after chunk data", post(chunked, "5\r\nhelloXX0\r\n\r\n"), 400, "bad_chunked_body"),
        ("TE then CL", post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "5\r\nhello\r\n0\r\n\r\n"), 400, "conflicting_length"),
        ("CL then TE", post("Content-Length: 18\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), 400, "conflicting_length"),
        ("duplicate differing CL", post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"), 400, "bad_content_length"),
        ("CL list with differing values", post("Content-Length: 5, 6\r\n", "hello!"), 400, "bad_content_length"),
        ("negative CL", post("Content-Length: -5\r\n", "hello"), 400, "bad_content_length"),
        ("CL overflowing u64", post("Content-Length: 99999999999999999999999\r\n", "hello"), 400, "bad_content_length"),
        ("NUL in target", format!("GET /v1/cli\0ents HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("NUL in header value", format!("GET /v1/clients HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nX-A: a\0b\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("bare CR in header value", format!("GET /v1/clients HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("space before colon", post("Content-Length : 5\r\n", "hello"), 400, "malformed_request"),
        ("obs-fold continuation line", format!("GET /v1/clients HTTP/1.1\r\nHost: t\r\nX-A: a\r\n folded\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("duplicate Authorization", format!("GET /v1/clients HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("TE on HTTP/1.0", format!("POST /v1/send/agent-1 HTTP/1.0\r\nAuthorization: Bearer {tok}\r\n{chunked}\r\n5\r\nhello\r\n0\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("missing Host (RFC 9112 3.2)", format!("GET /v1/clients HTTP/1.1\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("repeated Host", format!("GET /v1/clients HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nhost: t\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("asterisk-form target", format!("OPTIONS * HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("absolute-form with userinfo", format!("GET http://u@t/v1/clients HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), 400, "malformed_request"),
        ("TE gzip, chunked", post("Transfer-Encoding: gzip, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), 501, "unsupported_transfer_encoding"),
        ("TE chunked, chunked", post("Transfer-Encoding: chunked, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), 501, "unsupported_transfer_encoding"),
        ("TE identity", post("Transfer-Encoding: identity\r\n", "hello"), 501, "unsupported_transfer_encoding"),
    ];
    for (what, mut bytes, status, code) in cases {
        bytes.extend_from_slice(smuggled.as_bytes());
        let (r, mut h) = raw_exchange(node.addr, &bytes);
        let r = r.unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(
            r.status,
            status,
            "{what}: {} {:?}",
            r.head,
            String::from_utf8_lossy(&r.body)
        );
        let j = r.json();
        assert_eq!(j["error"], code, "{what}: {j}");
        assert!(
            j["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {j}"
        );
        assert_eq!(
            r.header("connection")
                .map(|v| v.to_ascii_lowercase())
                .as_deref(),
            Some("close"),
            "{what}: {}",
            r.head
        );
        assert!(
            h.closed_within(Duration::from_secs(3)),
            "{what}: connection not closed"
        );
    }
    // Nothing was smuggled: the next event is the marker.
    arrives_within(
        &node,
        &mut rx,
        "agent-1",
        "after malformed",
        Duration::from_millis(500),
    );
    assert_no_error_log(&node);
}

/// RFC 9112 3.2.2: a server must accept an absolute-form target (routed by
/// its path); HTTP/1.0 may omit Host.
#[test]
fn absolute_form_targets_and_http10_without_host_are_served() {
    let _g = serial();
    let node = Node::start(&["--workers", "2"]);
    let mut rx = open_rx(&node, "agent-1");
    let tok = console_tok();
    let addr = node.addr;
    let body = "absolute";
    let req = format!(
        "POST http://{addr}/v1/send/agent-1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {tok}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (r, _h) = raw_exchange(addr, req.as_bytes());
    let r = r.expect("an answer");
    assert_eq!(
        r.status,
        202,
        "{} {:?}",
        r.head,
        String::from_utf8_lossy(&r.body)
    );
    let ev = rx.next_event_within(WAIT).expect("the message");
    assert_eq!(ev.json()["body"], body, "{ev:?}");

    let req = format!("GET HTTP://{addr}/v1/clients?x=1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {tok}\r\n\r\n");
    let (r, _h) = raw_exchange(addr, req.as_bytes());
    assert_eq!(r.expect("an answer").status, 200);
    let req = format!("GET /v1/clients HTTP/1.0\r\nAuthorization: Bearer {tok}\r\n\r\n");
    let (r, _h) = raw_exchange(addr, req.as_bytes());
    assert_eq!(r.expect("an answer").status, 200);
    assert_no_error_log(&node);
}
