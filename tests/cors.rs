//! Cross-origin access (`--allowed-origins`) over raw sockets: the CORS
//! headers on every kind of answer of an allowed origin, preflights without a
//! token, the 403 of other origins before their token or any session is
//! touched, and the refusal of WebSocket handshakes. tests/browser.rs does the
//! same with a real browser.

mod common;

use std::time::Duration;

use common::*;
use switchboard::auth::Role;

const PAGE: &str = "http://127.0.0.1:8000";

/// Writes `GET`/`POST`/`OPTIONS` `path` with `headers` on a fresh connection and reads the answer.
fn ask(node: &Node, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
        node.addr,
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let (r, _) = raw_exchange(node.addr, req.as_bytes());
    r.unwrap_or_else(|| panic!("no answer to {method} {path}"))
}

fn assert_cors(r: &Response, origin: &str) {
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(origin),
        "{}",
        r.head
    );
    assert_eq!(r.header("vary").as_deref(), Some("Origin"), "{}", r.head);
    assert!(
        r.header("access-control-expose-headers").is_some(),
        "{}",
        r.head
    );
    assert!(r.header("access-control-allow-credentials").is_none());
}

fn assert_no_cors(r: &Response) {
    assert!(
        !r.head.to_ascii_lowercase().contains("access-control-"),
        "{}",
        r.head
    );
}

#[test]
fn an_allowed_origin_gets_cors_headers_on_every_answer() {
    let node = Node::start(&[
        "--allowed-origins",
        &format!("{PAGE},https://console.example"),
    ]);
    let console = token("acme", "console-1", Role::Console);
    let agent = token("acme", "agent-1", Role::Agent);
    let origin = [("Origin", PAGE)];
    let bearer = format!("Bearer {console}");

    // The preflight of a fetch with Authorization: 204, no token needed.
    let r = ask(
        &node,
        "OPTIONS",
        "/v1/send/agent-1",
        &[
            ("Origin", PAGE),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
        "",
    );
    assert_eq!(r.status, 204, "{}", r.head);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(PAGE)
    );
    assert_eq!(r.header("vary").as_deref(), Some("Origin"));
    let methods = r.header("access-control-allow-methods").unwrap_or_default();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let headers = r
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for h in ["authorization", "content-type", "last-event-id"] {
        assert!(headers.contains(h), "{headers}");
    }
    assert_eq!(r.header("access-control-max-age").as_deref(), Some("600"));
    // A second listed origin gets itself back, whatever path under /v1/.
    let r = ask(
        &node,
        "OPTIONS",
        "/v1/receive",
        &[("Origin", "https://console.example")],
        "",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://console.example")
    );

    // The stream (EventSource sends Origin; the token rides in the query).
    let (mut rx, status) = Receiver::try_open(
        node.addr,
        &format!("/v1/receive?access_token={console}"),
        None,
        &origin,
    );
    assert_eq!(status, 200, "{}", rx.head);
    assert!(
        rx.head
            .contains(&format!("Access-Control-Allow-Origin: {PAGE}\r\n")),
        "{}",
        rx.head
    );
    assert!(rx.head.contains("Vary: Origin\r\n"), "{}", rx.head);
    rx.ready();

    // 202, listing, and errors (404, 401), all readable by the page.
    let mut agent_rx = Receiver::open(node.addr, &agent, &[]);
    agent_rx.ready();
    let r = ask(
        &node,
        "POST",
        "/v1/send/agent-1",
        &[("Origin", PAGE), ("Authorization", &bearer)],
        "hello",
    );
    assert_eq!(r.status, 202, "{}", r.head);
    assert_cors(&r, PAGE);
    agent_rx.expect_message("console-1", "hello");
    let r = ask(
        &node,
        "GET",
        "/v1/clients",
        &[("Origin", PAGE), ("Authorization", &bearer)],
        "",
    );
    assert_eq!(r.status, 200);
    assert_cors(&r, PAGE);
    let r = ask(
        &node,
        "POST",
        "/v1/send/nobody",
        &[("Origin", PAGE), ("Authorization", &bearer)],
        "x",
    );
    assert_error(&r, 404, "recipient_offline");
    assert_cors(&r, PAGE);
    let r = ask(&node, "GET", "/v1/clients", &origin, "");
    assert_error(&r, 401, "missing_token");
    assert_cors(&r, PAGE);

    // Without an Origin header (curl, agents): no CORS headers at all.
    let r = send(node.addr, &agent, "console-1", "back");
    assert_eq!(r.status, 202);
    assert_no_cors(&r);
    rx.expect_message("agent-1", "back");
    let r = ask(&node, "OPTIONS", "/v1/send/x", &[], "");
    assert_eq!(r.status, 204);
    assert_no_cors(&r);
}

#[test]
fn cors_headers_reach_sends_answered_by_another_worker() {
    // By client, most recipients live on another worker than the sender's
    // connection: their answers come back later, pipelined.
    let node = Node::start(&[
        "--workers",
        "4",
        "--shard-by",
        "client",
        "--allowed-origins",
        "*",
    ]);
    let n = 12;
    let mut rxs: Vec<Receiver> = (0..n)
        .map(|i| {
            let mut r = Receiver::open(
                node.addr,
                &token("acme", &format!("a{i}"), Role::Agent),
                &[],
            );
            r.ready();
            r
        })
        .collect();
    let console = token("acme", "console-1", Role::Console);
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend_from_slice(
            format!(
                "POST /v1/send/a{i} HTTP/1.1\r\nHost: x\r\nOrigin: https://any.example\r\n\
                 Authorization: Bearer {console}\r\nContent-Length: 1\r\n\r\nm"
            )
            .as_bytes(),
        );
    }
    let mut h = Http::connect(node.addr);
    h.send_raw(&batch);
    for _ in 0..n {
        let r = h.read_response().expect("answer");
        assert_eq!(r.status, 202, "{}", r.head);
        assert_cors(&r, "*");
    }
    for rx in rxs.iter_mut() {
        rx.expect_message("console-1", "m");
    }
}

#[test]
fn another_origin_is_refused_before_its_token_and_disturbs_no_stream() {
    let node = Node::start(&["--allowed-origins", PAGE]);
    let agent = token("acme", "agent-1", Role::Agent);
    let mut live = Receiver::open(node.addr, &agent, &[]);
    live.ready();

    let evil = [("Origin", "http://evil.example")];
    // A stream of the same client from a page that is not allowed: 403, and
    // the live stream is not replaced.
    let (r, status) = Receiver::try_open(
        node.addr,
        &format!("/v1/receive?access_token={agent}"),
        None,
        &evil,
    );
    assert_eq!(status, 403, "{}", r.head);
    assert!(
        !r.head.contains("Access-Control-Allow-Origin"),
        "{}",
        r.head
    );
    // Refused before the token is looked at: a bad token gets 403 too, not 401.
    let r = ask(&node, "GET", "/v1/receive?access_token=garbage", &evil, "");
    assert_error(&r, 403, "origin_not_allowed");
    assert_no_cors(&r);
    let r = ask(
        &node,
        "POST",
        "/v1/send/agent-1",
        &[
            ("Origin", "http://evil.example"),
            ("Authorization", &format!("Bearer {agent}")),
        ],
        "x",
    );
    assert_error(&r, 403, "origin_not_allowed");
    // The preflight too, and another port of the allowed host is another origin.
    let r = ask(&node, "OPTIONS", "/v1/send/agent-1", &evil, "");
    assert_error(&r, 403, "origin_not_allowed");
    let r = ask(
        &node,
        "GET",
        "/v1/clients",
        &[("Origin", "http://127.0.0.1:8001")],
        "",
    );
    assert_error(&r, 403, "origin_not_allowed");
    assert!(node.wait_log("refused origin \"http://evil.example\""));

    // Nothing reached the session: the live stream gets the next message, not `replaced`.
    send_ok(
        node.addr,
        &token("acme", "console-1", Role::Console),
        "agent-1",
        "still here",
    );
    live.expect_message("console-1", "still here");

    // Same-origin requests (a page served on the gateway's own origin, e.g.
    // behind one reverse proxy) need no listing.
    let same = format!("http://{}", node.addr);
    let bearer = format!("Bearer {agent}");
    let r = ask(
        &node,
        "GET",
        "/v1/clients",
        &[("Origin", &same), ("Authorization", &bearer)],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    assert_no_cors(&r);
    let r = ask(
        &node,
        "GET",
        "/v1/clients",
        &[
            ("Origin", "https://gw.example"),
            ("Sec-Fetch-Site", "same-origin"),
            ("Authorization", &bearer),
        ],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.head);
}

#[test]
fn without_allowed_origins_every_cross_origin_request_is_refused() {
    let node = Node::start(&[]);
    let agent = token("acme", "agent-1", Role::Agent);
    let mut live = Receiver::open(node.addr, &agent, &[]);
    live.ready();
    let (r, status) = Receiver::try_open(
        node.addr,
        &format!("/v1/receive?access_token={agent}"),
        None,
        &[("Origin", PAGE)],
    );
    assert_eq!(status, 403, "{}", r.head);
    // Non-browser clients are unaffected.
    send_ok(
        node.addr,
        &token("acme", "console-1", Role::Console),
        "agent-1",
        "m",
    );
    live.expect_message("console-1", "m");
}

#[test]
fn a_websocket_handshake_gets_a_json_error_at_once() {
    let node = Node::start(&[]);
    let agent = token("acme", "agent-1", Role::Agent);
    let mut live = Receiver::open(node.addr, &agent, &[]);
    live.ready();
    let req = format!(
        "GET /v1/receive?access_token={agent} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let (r, mut h) = raw_exchange(node.addr, req.as_bytes());
    let r = r.expect("an answer, not a hanging handshake");
    assert_error(&r, 400, "websocket_unsupported");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(h.closed_within(Duration::from_secs(5)));
    // No session was touched: the live stream is not replaced.
    send_ok(
        node.addr,
        &token("acme", "console-1", Role::Console),
        "agent-1",
        "m",
    );
    live.expect_message("console-1", "m");
}

#[test]
fn cors_headers_move_with_a_send_connection_handed_to_another_worker() {
    // By account, a send connection moves to its account's worker at its
    // first send (three in four connections here): its answers keep the headers.
    let node = Node::start(&["--workers", "4", "--allowed-origins", PAGE]);
    let mut rx = Receiver::open(node.addr, &token("acme", "agent-1", Role::Agent), &[]);
    rx.ready();
    let bearer = format!("Bearer {}", token("acme", "console-1", Role::Console));
    for i in 0..12 {
        let mut h = Http::connect(node.addr);
        for j in 0..2 {
            h.send_raw(
                format!(
                    "POST /v1/send/agent-1 HTTP/1.1\r\nHost: x\r\nOrigin: {PAGE}\r\n\
                     Authorization: {bearer}\r\nContent-Length: 3\r\n\r\n{i:02}{j}"
                )
                .as_bytes(),
            );
            let r = h.read_response().expect("answer");
            assert_eq!(r.status, 202, "{}", r.head);
            assert_cors(&r, PAGE);
            rx.expect_message("console-1", &format!("{i:02}{j}"));
        }
    }
}
