//! End-to-end tests of the request timeouts: --body-timeout, --idle-timeout
//! and --send-lifetime. (--handshake-timeout is covered in errors.rs.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use switchboard::auth::Role;

const ACCT: &str = "acme";

fn console_tok() -> String {
    token(ACCT, "console-1", Role::Console)
}

fn closes(r: &Response) -> bool {
    r.header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

/// Sends a head declaring `declared` body bytes and the first `sent` of
/// them in one write, then nothing: 408 after the body timeout (500 ms),
/// the connection closed, nothing delivered, the stream still working.
fn body_stalls(node: &Node, rx: &mut Receiver, declared: usize, sent: usize) {
    let mut h = Http::connect(node.addr);
    let t0 = Instant::now();
    let mut req = format!(
        "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Length: {declared}\r\n\r\n",
        console_tok()
    )
    .into_bytes();
    req.extend((0..sent).map(|i| b'a' + (i % 26) as u8));
    h.send_raw(&req);
    let r = h.read_response().expect("an answer to the incomplete body");
    let took = t0.elapsed();
    assert_error(&r, 408, "request_timeout");
    assert!(closes(&r), "408 without Connection: close: {}", r.head);
    assert!(
        took >= Duration::from_millis(400) && took <= Duration::from_secs(2),
        "408 after {took:?} (body timeout 500ms, {sent} of {declared} bytes sent)"
    );
    assert!(
        h.closed_within(Duration::from_secs(2)),
        "connection still open after the 408"
    );
    assert!(
        t0.elapsed() <= Duration::from_secs(3),
        "closed only after {:?}",
        t0.elapsed()
    );
    // Nothing of the partial message was delivered; the stream still works.
    let ok = send(node.addr, &console_tok(), "agent-1", "after the timeout");
    assert_eq!(ok.status, 202);
    rx.expect_message("console-1", "after the timeout");
}

#[test]
fn slow_body_gets_408_and_the_connection_closes() {
    let node = Node::start(&["--workers", "2", "--body-timeout", "500ms"]);
    let mut rx = Receiver::open(node.addr, &token(ACCT, "agent-1", Role::Agent), &[]);
    rx.ready();
    body_stalls(&node, &mut rx, 10, 3);
    // A large first read (head and 20,000 body bytes) goes to the body
    // without the input buffer: the body timeout still applies.
    body_stalls(&node, &mut rx, 60_000, 20_000);
}

#[test]
fn body_that_keeps_trickling_still_times_out() {
    // The body timeout bounds the whole body, not the gap between bytes.
    let node = Node::start(&["--workers", "1", "--body-timeout", "500ms"]);
    let mut h = Http::connect(node.addr);
    let t0 = Instant::now();
    h.send_raw(
        format!(
            "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n",
            console_tok()
        )
        .as_bytes(),
    );
    let writer = h.stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        use std::io::Write;
        let mut w = writer;
        for _ in 0..20 {
            if w.write_all(b"x").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let r = h.read_response().expect("an answer");
    assert_error(&r, 408, "request_timeout");
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "408 after {:?}",
        t0.elapsed()
    );
    let _ = trickle.join();
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let node = Node::start(&["--workers", "2", "--idle-timeout", "500ms"]);
    let mut h = Http::connect(node.addr);
    let r = h.request("GET", "/v1/clients", Some(&console_tok()), b"");
    assert_eq!(r.status, 200);
    assert!(!closes(&r), "first answer already closes: {}", r.head);
    let t0 = Instant::now();
    assert!(
        h.closed_within(Duration::from_secs(2)),
        "idle keep-alive connection still open after 2 s (idle timeout 500ms)"
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "closed after only {took:?}"
    );
}

#[test]
fn activity_keeps_a_connection_open_past_the_idle_timeout() {
    let node = Node::start(&["--workers", "1", "--idle-timeout", "500ms"]);
    let mut h = Http::connect(node.addr);
    let t0 = Instant::now();
    // Requests every 200 ms for 1.2 s: each one restarts the idle clock.
    while t0.elapsed() < Duration::from_millis(1200) {
        let r = h.request("GET", "/v1/clients", Some(&console_tok()), b"");
        assert_eq!(r.status, 200, "request at {:?}", t0.elapsed());
        assert!(!closes(&r), "closed at {:?} despite activity", t0.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Keeps sending on one keep-alive connection (a message every 50 ms) until
/// the server ends it; returns (sends answered 202, when the last answer came,
/// whether that last answer said `Connection: close`, whether the connection
/// then ended: EOF instead of the next answer, or closed after the close answer).
fn send_until_closed(node: &Node, rx: &mut Receiver) -> (usize, Duration, bool) {
    let tok = console_tok();
    let mut h = Http::connect(node.addr);
    let t0 = Instant::now();
    let mut n = 0;
    let mut last_answer = Duration::ZERO;
    loop {
        let body = format!("msg {n}");
        h.send_raw(
            format!(
                "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let Some(r) = h.read_response() else {
            // Closed without answering this request.
            return (n, last_answer, false);
        };
        last_answer = t0.elapsed();
        assert_eq!(
            r.status,
            202,
            "send {n}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        rx.expect_message("console-1", &body);
        n += 1;
        if closes(&r) {
            assert!(
                h.closed_within(Duration::from_secs(2)),
                "connection still open after its Connection: close answer"
            );
            return (n, last_answer, true);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "connection still in use after {n} sends over {:?} (send lifetime 1s)",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn send_connection_is_closed_after_its_lifetime() {
    let node = Node::start(&["--workers", "2", "--send-lifetime", "1s"]);
    let mut rx = Receiver::open(node.addr, &token(ACCT, "agent-1", Role::Agent), &[]);
    rx.ready();
    let (n, last, _said_close) = send_until_closed(&node, &mut rx);
    assert!(
        last >= Duration::from_millis(900),
        "connection ended after only {last:?} (send lifetime 1s)"
    );
    assert!(n > 3, "only {n} sends before the close");
}

#[test]
fn send_lifetime_answer_says_connection_close() {
    let node = Node::start(&["--workers", "2", "--send-lifetime", "1s"]);
    let mut rx = Receiver::open(node.addr, &token(ACCT, "agent-1", Role::Agent), &[]);
    rx.ready();
    let (n, last, said_close) = send_until_closed(&node, &mut rx);
    assert!(
        said_close,
        "the connection was closed after {n} sends ({last:?}) without an answer saying Connection: close"
    );
    assert!(
        last >= Duration::from_millis(900),
        "Connection: close after only {last:?}"
    );
}

#[test]
fn send_lifetime_does_not_cut_receive_connections() {
    let node = Node::start(&[
        "--workers",
        "1",
        "--send-lifetime",
        "1s",
        "--heartbeat",
        "300ms",
    ]);
    let mut rx = Receiver::open(node.addr, &token(ACCT, "agent-1", Role::Agent), &[]);
    rx.ready();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        assert!(
            rx.wait_heartbeat(Duration::from_secs(2)),
            "receive stream ended at {:?}",
            t0.elapsed()
        );
    }
    let r = send(node.addr, &console_tok(), "agent-1", "still here");
    assert_eq!(r.status, 202);
    rx.expect_message("console-1", "still here");
}
