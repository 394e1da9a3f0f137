//! The WebSocket transport (`GET /v1/connect`, issue 26) end to end, against
//! docs/websocket.md and its decisions of 2026-12-08:
//!
//! | module | what |
//! |---|---|
//! | [`wsclient`] | a hand-written client that can also write malformed frames |
//! | [`handshake`] | the opening handshake: 101, refusals, subprotocol, origins |
//! | [`conformance`] | RFC 6455 as Autobahn|Testsuite's case groups check it, with our own tests |
//! | [`relay`] | the relay over WebSocket: both directions, errors, pipelining, replace, resume, heartbeat, slow consumers, drain, `/connections` |
//! | [`python`] | a client nobody here wrote: Python `websockets` (tests/clients/ws_client.py, installed by tools/test) |
//!
//! The two-node test is in tests/cluster/websocket.rs (it needs that
//! crate's Redis helpers) and the browser test in tests/browser.rs.

#[path = "../common/mod.rs"]
mod common;

mod conformance;
mod handshake;
mod python;
mod relay;
mod wsclient;

use common::*;
use switchboard::auth::Role;
use wsclient::*;

const ACCT: &str = "ws";

/// A token of `client` in ACCT (a console if its name starts with `console`).
fn tok(client: &str) -> String {
    let role = if client.starts_with("console") {
        Role::Console
    } else {
        Role::Agent
    };
    token(ACCT, client, role)
}

/// `client`'s WebSocket connection on `node`, past its `ready` event.
fn ws(node: &Node, client: &str) -> Ws {
    let (ws, ready) = Ws::open(node.addr, &tok(client));
    assert_eq!(ready["client"], client, "{ready}");
    ws
}

/// `client`'s SSE stream on `node`, past its `ready` event.
fn sse(node: &Node, client: &str) -> Receiver {
    let mut rx = Receiver::open(node.addr, &tok(client), &[]);
    rx.ready();
    rx
}

/// A `send` command as text whose length is exactly `len` bytes (the body
/// is padding), to `to` with `ref`; panics if `len` is too short.
fn send_of_len(to: &str, r#ref: &str, len: usize) -> String {
    let head = format!(
        "{{\"type\":\"send\",\"to\":\"{to}\",\"ref\":\"{}\",\"body\":\"",
        r#ref
    );
    let pad = len
        .checked_sub(head.len() + 2)
        .expect("length too short for a send");
    let text = format!("{head}{}\"}}", "x".repeat(pad));
    assert_eq!(text.len(), len);
    text
}

/// Reads the answer to a command and asserts it is `accepted` with `ref`; returns its id.
fn accepted(ws: &mut Ws, r#ref: &str) -> String {
    let a = ws.event();
    assert_eq!(a["event"], "accepted", "answer to {ref:?}: {a}");
    assert_eq!(a["ref"], r#ref, "{a}");
    let id = a["id"].as_str().expect("accepted without id").to_string();
    parse_id(&id);
    id
}

/// Reads the answer to a command and asserts it is an `error` with `code` and `ref` (`None`: no ref).
fn error(ws: &mut Ws, code: &str, r#ref: Option<&str>) -> serde_json::Value {
    let e = ws.event();
    assert_eq!(e["event"], "error", "expected error {code}: {e}");
    assert_eq!(e["error"], code, "{e}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    match r#ref {
        Some(r) => assert_eq!(e["ref"], r, "{e}"),
        None => assert!(e.get("ref").is_none(), "{e}"),
    }
    e
}
