//! End-to-end tests of every error answer: status, JSON body, connection
//! handling, and that errors on one connection leave others alone.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use switchboard::auth::{self, Role};

const ACCT: &str = "acme";

fn agent_tok() -> String {
    token(ACCT, "agent-1", Role::Agent)
}
fn console_tok() -> String {
    token(ACCT, "console-1", Role::Console)
}

/// Sends `bytes` on a fresh connection and asserts the JSON error answer; for
/// errors that end the connection, also that the server closes it.
fn expect_error(
    addr: std::net::SocketAddr,
    bytes: &[u8],
    status: u16,
    code: &str,
    closes: bool,
) -> Response {
    let (r, mut h) = raw_exchange(addr, bytes);
    let r = r.unwrap_or_else(|| {
        panic!(
            "no answer to {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )
    });
    assert_error(&r, status, code);
    if closes {
        assert_eq!(
            r.header("connection")
                .map(|v| v.to_ascii_lowercase())
                .as_deref(),
            Some("close"),
            "{}",
            r.head
        );
        assert!(
            h.closed_within(Duration::from_secs(3)),
            "connection not closed after {status}"
        );
    }
    r
}

/// Opens the agent's stream (to check that errors elsewhere leave it alone).
fn open_agent(node: &Node) -> Receiver {
    let mut rx = Receiver::open(node.addr, &agent_tok(), &[]);
    rx.ready();
    rx
}

/// The agent's stream still works: the next event is a fresh message.
fn still_receives(node: &Node, rx: &mut Receiver, body: &str) {
    let r = send(node.addr, &console_tok(), "agent-1", body);
    assert_eq!(r.status, 202);
    rx.expect_message("console-1", body);
}

/// A request head whose lines end in a bare LF is refused (400
/// malformed_request, connection closed) wherever the bare LF is; the same
/// request with CRLF line endings is delivered.
#[test]
fn bare_lf_line_endings_are_refused() {
    let node = Node::start(&["--workers", "2"]);
    let mut rx = open_agent(&node);
    let tok = console_tok();
    let send_with = |eol: &str, blank: &str, body: &str| {
        format!(
            "POST /v1/send/agent-1 HTTP/1.1{eol}Host: t{eol}Authorization: Bearer {tok}{eol}Content-Length: {}{eol}{blank}{body}",
            body.len()
        )
    };
    for (what, request) in [
        ("every line", send_with("\n", "\n", "lf-1")),
        ("the blank line only", send_with("\r\n", "\n", "lf-2")),
        (
            "the request line only",
            send_with("\r\n", "\r\n", "lf-3").replacen("HTTP/1.1\r\n", "HTTP/1.1\n", 1),
        ),
    ] {
        let r = expect_error(
            node.addr,
            request.as_bytes(),
            400,
            "malformed_request",
            true,
        );
        let message = r.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(
            message.contains("line endings must be CRLF"),
            "{what}: {message}"
        );
    }
    // Nothing of the refused requests was delivered; the CRLF one is.
    let (r, _h) = raw_exchange(node.addr, send_with("\r\n", "\r\n", "crlf").as_bytes());
    assert_eq!(r.map(|r| r.status), Some(202));
    rx.expect_message("console-1", "crlf");
}

#[test]
fn bad_requests_are_400() {
    let node = Node::start(&["--workers", "2"]);
    let mut rx = open_agent(&node);
    let tok = console_tok();

    expect_error(
        node.addr,
        b"this is not http at all\r\n\r\n",
        400,
        "malformed_request",
        true,
    );
    expect_error(
        node.addr,
        b"GET /v1/clients HTTP/1.1\r\nHost: t\r\nBad Header Name: x\r\n\r\n",
        400,
        "malformed_request",
        true,
    );
    expect_error(
        node.addr,
        b"GET v1/clients HTTP/1.1\r\nHost: t\r\n\r\n",
        400,
        "malformed_request",
        true,
    );

    let bad_chunk = format!(
        "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    );
    expect_error(
        node.addr,
        bad_chunk.as_bytes(),
        400,
        "bad_chunked_body",
        true,
    );

    let conflict = format!(
        "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    expect_error(
        node.addr,
        conflict.as_bytes(),
        400,
        "conflicting_length",
        true,
    );

    let bad_cl = format!("POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: 5x\r\n\r\nhello");
    expect_error(
        node.addr,
        bad_cl.as_bytes(),
        400,
        "bad_content_length",
        true,
    );

    // Unsupported version and coding.
    expect_error(
        node.addr,
        b"GET /v1/clients HTTP/2.0\r\n\r\n",
        505,
        "http_version_not_supported",
        true,
    );
    let gzip = format!("POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nTransfer-Encoding: gzip\r\n\r\n");
    expect_error(
        node.addr,
        gzip.as_bytes(),
        501,
        "unsupported_transfer_encoding",
        true,
    );

    // None of the smuggling attempts delivered anything: the next message is the marker.
    still_receives(&node, &mut rx, "after 400s");
}

#[test]
fn authentication_errors_are_401() {
    let node = Node::start(&["--workers", "2"]);
    let mut rx = open_agent(&node);

    // No token at all.
    let r = request(node.addr, "GET", "/v1/clients", None, b"");
    assert_error(&r, 401, "missing_token");
    let (rcv, status) = Receiver::try_open(node.addr, "/v1/receive", None, &[]);
    assert_eq!(status, 401, "{}", rcv.head);
    let r = request(node.addr, "POST", "/v1/send/agent-1", None, b"hi");
    assert_error(&r, 401, "missing_token");

    // Signed with another secret.
    let forged = auth::sign(
        b"some-other-secret-entirely-0123456789",
        ACCT,
        "console-1",
        Role::Console,
        now_secs(),
        3600,
    )
    .unwrap();
    let r = request(
        node.addr,
        "POST",
        "/v1/send/agent-1",
        Some(&forged),
        b"forged",
    );
    assert_error(&r, 401, "bad_signature");
    // A tampered signature.
    let good = console_tok();
    // (The first signature character carries six significant bits.)
    let sig_at = good.rfind('.').unwrap() + 1;
    let mut tampered = good.clone().into_bytes();
    tampered[sig_at] = if tampered[sig_at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let r = request(node.addr, "GET", "/v1/clients", Some(&tampered), b"");
    assert_error(&r, 401, "bad_signature");

    // Expired: issued two hours ago, valid for one.
    let expired = auth::sign(
        SECRET.as_bytes(),
        ACCT,
        "console-1",
        Role::Console,
        now_secs() - 7200,
        3600,
    )
    .unwrap();
    let r = request(
        node.addr,
        "POST",
        "/v1/send/agent-1",
        Some(&expired),
        b"late",
    );
    assert_error(&r, 401, "token_expired");
    let (rcv, status) = Receiver::try_open(node.addr, "/v1/receive", Some(&expired), &[]);
    assert_eq!(status, 401, "{}", rcv.head);

    // Not a JWT; wrong scheme.
    let r = request(node.addr, "GET", "/v1/clients", Some("not-a-jwt"), b"");
    assert_error(&r, 401, "malformed_token");
    let (r, _) = raw_exchange(
        node.addr,
        format!("GET /v1/clients HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {good}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.expect("answer").status, 401);

    // A 401 keeps a keep-alive connection usable.
    let mut http = Http::connect(node.addr);
    let r = http.request("GET", "/v1/clients", None, b"");
    assert_error(&r, 401, "missing_token");
    let r = http.request("GET", "/v1/clients", Some(&good), b"");
    assert_eq!(r.status, 200);

    // The token in ?access_token= works for every endpoint.
    let r = request(
        node.addr,
        "GET",
        &format!("/v1/clients?access_token={good}"),
        None,
        b"",
    );
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["clients"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["client"] == "agent-1"));
    let r = request(
        node.addr,
        "POST",
        &format!("/v1/send/agent-1?access_token={good}"),
        None,
        b"via query",
    );
    assert_eq!(r.status, 202);
    rx.expect_message("console-1", "via query");
    let (mut rx2, status) = Receiver::try_open(
        node.addr,
        &format!("/v1/receive?access_token={good}"),
        None,
        &[],
    );
    assert_eq!(status, 200, "{}", rx2.head);
    assert_eq!(rx2.ready()["client"], "console-1");

    // Nothing unauthenticated was delivered.
    still_receives(&node, &mut rx, "after 401s");
}

#[test]
fn unknown_path_404_and_wrong_method_405() {
    let node = Node::start(&["--workers", "2"]);
    let mut rx = open_agent(&node);
    let tok = console_tok();

    let r = request(node.addr, "GET", "/nope", Some(&tok), b"");
    assert_error(&r, 404, "not_found");
    let r = request(node.addr, "GET", "/v1/send", Some(&tok), b"");
    assert_error(&r, 404, "not_found");

    let r = request(node.addr, "POST", "/v1/receive", Some(&tok), b"x");
    assert_error(&r, 405, "method_not_allowed");
    let r = request(node.addr, "GET", "/v1/send/agent-1", Some(&tok), b"");
    assert_error(&r, 405, "method_not_allowed");
    let r = request(node.addr, "DELETE", "/v1/clients", Some(&tok), b"");
    assert_error(&r, 405, "method_not_allowed");

    // Routing errors happen before authentication, and keep the connection alive.
    let mut http = Http::connect(node.addr);
    assert_error(&http.request("GET", "/nope", None, b""), 404, "not_found");
    assert_error(
        &http.request("PUT", "/v1/send/agent-1", None, b"x"),
        405,
        "method_not_allowed",
    );
    assert_eq!(
        http.request("POST", "/v1/send/agent-1", Some(&tok), b"same conn")
            .status,
        202
    );
    rx.expect_message("console-1", "same conn");
}

#[test]
fn too_large_body_is_413_without_waiting_for_it() {
    let node = Node::start(&["--workers", "2", "--max-message", "1KiB"]);
    let mut rx = open_agent(&node);
    let tok = console_tok();

    // Only the head, announcing 100 MB: the answer must come without the body.
    let head = format!("POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: 100000000\r\n\r\n");
    let t = Instant::now();
    let mut http = Http::connect(node.addr);
    http.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    http.send_raw(head.as_bytes());
    let r = http
        .read_response()
        .expect("no 413 before the body was sent");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "413 took {:?}",
        t.elapsed()
    );
    assert_error(&r, 413, "payload_too_large");
    assert!(
        http.closed_within(Duration::from_secs(4)),
        "connection not closed after 413"
    );

    // The boundary: exactly 1 KiB is fine, one byte more is not.
    let ok = vec![b'a'; 1024];
    assert_eq!(
        request(node.addr, "POST", "/v1/send/agent-1", Some(&tok), &ok).status,
        202
    );
    let r = request(
        node.addr,
        "POST",
        "/v1/send/agent-1",
        Some(&tok),
        &vec![b'b'; 1025],
    );
    assert_error(&r, 413, "payload_too_large");

    // A chunked body that grows past the limit.
    let mut chunked = format!("POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'c'; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    let (r, _) = raw_exchange(node.addr, &chunked);
    assert_error(
        &r.expect("answer to oversized chunked body"),
        413,
        "payload_too_large",
    );

    let ev = rx.next_event().expect("the 1 KiB message");
    assert_eq!(ev.json()["body"].as_str().map(str::len), Some(1024));
    still_receives(&node, &mut rx, "after 413s");
}

#[test]
fn long_request_line_414_and_large_head_431() {
    let node = Node::start(&["--workers", "2"]);
    let mut rx = open_agent(&node);
    let tok = console_tok();

    let long_line = format!(
        "GET /v1/clients?pad={} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    expect_error(node.addr, long_line.as_bytes(), 414, "uri_too_long", true);
    // Detected before the line ends.
    let partial = format!("GET /{}", "b".repeat(8 * 1024 + 10));
    expect_error(node.addr, partial.as_bytes(), 414, "uri_too_long", true);

    let big_head = format!(
        "GET /v1/clients HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(17 * 1024)
    );
    expect_error(
        node.addr,
        big_head.as_bytes(),
        431,
        "headers_too_large",
        true,
    );
    let mut many = String::from("GET /v1/clients HTTP/1.1\r\nHost: t\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    expect_error(node.addr, many.as_bytes(), 431, "headers_too_large", true);

    // Just under the limits is fine.
    let fits = format!(
        "GET /v1/clients?pad={} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n",
        "a".repeat(7 * 1024)
    );
    let (r, _) = raw_exchange(node.addr, fits.as_bytes());
    assert_eq!(r.expect("answer").status, 200);

    still_receives(&node, &mut rx, "after 414/431");
}

#[test]
fn connection_limit_503() {
    let node = Node::start(&["--workers", "2", "--max-connections", "2"]);
    let tok = console_tok();
    let mut a = Http::connect(node.addr);
    let mut b = Http::connect(node.addr);
    assert_eq!(a.request("GET", "/v1/clients", Some(&tok), b"").status, 200);
    assert_eq!(b.request("GET", "/v1/clients", Some(&tok), b"").status, 200);

    let mut c = Http::connect(node.addr);
    let r = c
        .read_response()
        .expect("the third connection got no answer");
    assert_error(&r, 503, "overloaded");
    assert!(
        c.closed_within(Duration::from_secs(3)),
        "refused connection not closed"
    );
    drop(c);

    // The two admitted connections still work.
    assert_eq!(a.request("GET", "/v1/clients", Some(&tok), b"").status, 200);
    // Once one closes, a new connection is admitted again.
    drop(b);
    let admitted = wait_until(WAIT, || {
        let mut n = Http::connect(node.addr);
        n.send_raw(format!("GET /v1/clients HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nConnection: close\r\n\r\n").as_bytes());
        n.read_response().is_some_and(|r| r.status == 200)
    });
    assert!(admitted, "no connection admitted after one closed");
}

#[test]
fn receive_connections_count_towards_the_limit() {
    let node = Node::start(&["--workers", "2", "--max-connections", "2"]);
    let mut rx1 = Receiver::open(node.addr, &agent_tok(), &[]);
    rx1.ready();
    let mut rx2 = Receiver::open(node.addr, &console_tok(), &[]);
    rx2.ready();
    let (r, _) = raw_exchange(node.addr, b"GET /v1/clients HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_error(&r.expect("answer"), 503, "overloaded");
    drop(rx2);
    // The agent's stream is unaffected by refused connections.
    assert!(wait_until(WAIT, || {
        let r = send(node.addr, &console_tok(), "agent-1", "limit");
        r.status == 202
    }));
    rx1.expect_message("console-1", "limit");
}

#[test]
fn handshake_timeout_closes_incomplete_heads_only() {
    let node = Node::start(&["--workers", "2", "--handshake-timeout", "500ms"]);
    let tok = console_tok();
    let mut rx = open_agent(&node);
    let mut keep = Http::connect(node.addr);
    assert_eq!(
        keep.request("GET", "/v1/clients", Some(&tok), b"").status,
        200
    );

    // Half a request head.
    let mut half = Http::connect(node.addr);
    let t = Instant::now();
    half.send_raw(b"GET /v1/receive HTTP/1.1\r\nHost: t\r\nAuthorization: Bea");
    // A connection that sends nothing at all.
    let mut silent = Http::connect(node.addr);
    assert!(
        half.closed_within(Duration::from_secs(3)),
        "half-sent head not closed"
    );
    let el = t.elapsed();
    assert!(
        el < Duration::from_secs(2),
        "half-sent head closed only after {el:?}"
    );
    assert!(
        el >= Duration::from_millis(300),
        "half-sent head closed too early ({el:?})"
    );
    assert!(
        silent.closed_within(Duration::from_secs(2)),
        "silent connection not closed"
    );

    // The receive stream opened before is older than the timeout and still works.
    assert!(rx.head.starts_with("HTTP/1.1 200"));
    still_receives(&node, &mut rx, "after handshake timeout");
    // A keep-alive connection that completed a request is not subject to it.
    assert_eq!(
        keep.request("POST", "/v1/send/agent-1", Some(&tok), b"keep")
            .status,
        202
    );
    rx.expect_message("console-1", "keep");
    // New requests are still served normally.
    let mut rx2 = Receiver::open(node.addr, &tok, &[]);
    rx2.ready();
    let r = send(node.addr, &agent_tok(), "console-1", "still open");
    assert_eq!(r.status, 202);
    rx2.expect_message("agent-1", "still open");
}

#[test]
fn errors_do_not_disturb_an_open_receive_connection() {
    let node = Node::start(&["--workers", "4", "--max-message", "1KiB"]);
    let mut rx = open_agent(&node);
    let tok = console_tok();

    let garbage: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02garbage\r\n\r\n".to_vec(),
        b"GET /v1/receive HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer nope\r\n\r\n".to_vec(),
        format!("POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: 999999\r\n\r\n").into_bytes(),
        format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "x".repeat(10_000)).into_bytes(),
        format!("POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nTransfer-Encoding: chunked\r\n\r\nq\r\n").into_bytes(),
    ];
    for g in &garbage {
        let (r, _) = raw_exchange(node.addr, g);
        let r = r.expect("answer");
        assert!(r.status >= 400, "{}", r.head);
        let j = r.json();
        assert!(j["error"].is_string() && j["message"].is_string(), "{j}");
    }
    // A client that resets its connection mid-request.
    {
        let mut s = TcpStream::connect(node.addr).unwrap();
        s.write_all(format!("POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: 10\r\n\r\nabc").as_bytes()).unwrap();
        let sock = socket2::SockRef::from(&s);
        sock.set_linger(Some(Duration::ZERO)).unwrap();
    }
    // The stream got nothing from any of that; the next event is the marker.
    still_receives(&node, &mut rx, "after errors");
    assert_eq!(
        client_state(node.addr, &tok, "agent-1").as_deref(),
        Some("online")
    );
}
