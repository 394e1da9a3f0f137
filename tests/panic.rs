#![cfg(feature = "fault-injection")]
//! Panic isolation, with the test-only fault injection endpoints
//! (`cargo test --release --features fault-injection --test panic`):
//! a panic while handling one connection closes only that connection; a panic
//! in a worker outside connection handling exits the process with status 70.

mod common;

use std::time::{Duration, Instant};

use common::*;
use switchboard::auth::Role;

const ACCT: &str = "acme";

/// The value of the unlabelled metric `name` in the node's `/metrics`.
fn metric(node: &Node, name: &str) -> Option<f64> {
    let r = request(node.admin.unwrap(), "GET", "/metrics", None, b"");
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.parse().ok())?
    })
}

/// The session id the node gave the client connection whose local address is `local`.
fn session_of(node: &Node, local: std::net::SocketAddr) -> String {
    let mut sid = None;
    let found = wait_until(WAIT, || {
        let r = request(node.admin.unwrap(), "GET", "/connections", None, b"");
        let j = r.json();
        sid = j["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["remote"] == local.to_string())
            .and_then(|c| c["session"].as_str().map(str::to_string));
        sid.is_some()
    });
    assert!(found, "connection from {local} not in /connections");
    sid.unwrap()
}

#[test]
fn panic_in_one_connection_closes_only_it_then_worker_panic_exits_70() {
    let mut node = Node::start(&["--workers", "2"]);
    let console = token(ACCT, "console-1", Role::Console);
    // Receivers spread over both workers.
    let mut rxs: Vec<(String, Receiver)> = (0..4)
        .map(|i| {
            let client = format!("agent-{i}");
            let mut rx = Receiver::open(node.addr, &token(ACCT, &client, Role::Agent), &[]);
            rx.ready();
            (client, rx)
        })
        .collect();

    // A keep-alive connection that is known to the node, then panics it.
    let mut h = Http::connect(node.addr);
    let r = h.request("GET", "/v1/clients", Some(&console), b"");
    assert_eq!(r.status, 200);
    let sid = session_of(&node, h.stream.local_addr().unwrap());
    assert_eq!(metric(&node, "switchboard_panics_total"), Some(0.0));
    h.send_raw(
        format!(
            "GET /v1/debug/panic HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {console}\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(
        h.read_response().is_none(),
        "the panicking connection got an answer"
    );
    assert!(
        h.closed_within(Duration::from_secs(3)),
        "panicking connection not closed"
    );
    let needle = format!("{sid} panic while handling this connection");
    assert!(
        node.wait_log(&needle),
        "no {needle:?} in the log:\n{}",
        node.log.lock().unwrap()
    );
    assert!(
        wait_until(WAIT, || metric(&node, "switchboard_panics_total")
            == Some(1.0)),
        "panics_total did not become 1: {:?}",
        metric(&node, "switchboard_panics_total")
    );

    // Every other connection is unaffected and still relays.
    for (client, rx) in rxs.iter_mut() {
        let body = format!("after the panic to {client}");
        let r = send(node.addr, &console, client, &body);
        assert_eq!(
            r.status,
            202,
            "send to {client}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        rx.expect_message("console-1", &body);
    }
    let r = request(node.admin.unwrap(), "GET", "/connections", None, b"");
    assert_eq!(r.json()["matched"].as_u64().map(|m| m >= 4), Some(true));
    let closed = {
        let r = request(node.admin.unwrap(), "GET", "/metrics", None, b"");
        String::from_utf8(r.body).unwrap()
    };
    assert!(
        closed.contains("switchboard_connections_closed_total{reason=\"panic\"} 1"),
        "closed_total{{reason=\"panic\"}} is not 1:\n{closed}"
    );

    // A panic outside connection handling ends the process with status 70.
    let t0 = Instant::now();
    let mut h = Http::connect(node.addr);
    h.send_raw(
        format!("GET /v1/debug/panic-worker HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {console}\r\n\r\n")
            .as_bytes(),
    );
    let mut status = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            status = node.child.try_wait().unwrap();
            status.is_some()
        }),
        "node still running {:?} after a worker panic",
        t0.elapsed()
    );
    assert_eq!(status.unwrap().code(), Some(70), "{status:?}");
    assert!(
        node.wait_log("panicked outside connection handling"),
        "{}",
        node.log.lock().unwrap()
    );
    // The receive connections end with the process.
    for (client, rx) in rxs.iter_mut() {
        assert!(
            rx.closed_within(Duration::from_secs(3)),
            "{client} still open after exit"
        );
    }
}

#[test]
fn repeated_connection_panics_are_each_contained() {
    let node = Node::start(&["--workers", "1"]);
    let console = token(ACCT, "console-1", Role::Console);
    let mut rx = Receiver::open(node.addr, &token(ACCT, "agent-1", Role::Agent), &[]);
    rx.ready();
    for i in 0..5 {
        let mut h = Http::connect(node.addr);
        h.send_raw(b"GET /v1/debug/panic HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(h.read_response().is_none(), "panic {i} got an answer");
        let r = send(
            node.addr,
            &console,
            "agent-1",
            &format!("between panics {i}"),
        );
        assert_eq!(r.status, 202);
        rx.expect_message("console-1", &format!("between panics {i}"));
    }
    assert!(wait_until(WAIT, || metric(
        &node,
        "switchboard_panics_total"
    ) == Some(5.0)));
    let ready = request(node.admin.unwrap(), "GET", "/readyz", None, b"");
    assert_eq!(ready.status, 200);
}
