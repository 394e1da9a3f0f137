//! The opening handshake (decisions of 2026-12-08, "Handshake", "Token and
//! resume", "Subprotocol"): a valid one is answered 101 with the accept key;
//! every refusal is a plain HTTP answer with the JSON error body, after
//! which the connection closes.

use super::*;

/// Asserts a refused handshake: `status`, the JSON error `code` (if given),
/// and that the server closes the connection.
fn refused(h: Handshake, node: &Node, status: u16, code: Option<&str>) -> Refusal {
    let what = format!("{} {:?}", h.target, h.headers);
    let mut r = refused_open(h, node, status, code);
    assert!(r.ws.eof_within(WAIT), "{what}: connection left open");
    r
}

/// [`refused`] without the check that the connection closes.
fn refused_open(h: Handshake, node: &Node, status: u16, code: Option<&str>) -> Refusal {
    let what = format!("{} {:?}", h.target, h.headers);
    let r = match h.open(node.addr) {
        Ok(ws) => panic!("{what}: accepted: {}", ws.head),
        Err(r) => r,
    };
    assert_eq!(r.status, status, "{what}: {r:?}");
    let j = r.json();
    if let Some(code) = code {
        assert_eq!(j["error"], code, "{what}: {r:?}");
    }
    assert!(
        j["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {r:?}"
    );
    r
}

#[test]
fn a_valid_handshake_is_101_with_the_accept_key_and_ready_follows() {
    let node = Node::start(&[]);
    // Bearer token.
    let (ws, ready) = Ws::open(node.addr, &tok("agent-h1"));
    assert!(ws.head.starts_with("HTTP/1.1 101 "), "{}", ws.head);
    assert!(
        header(&ws.head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{}",
        ws.head
    );
    assert!(
        header(&ws.head, "connection").is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
        "{}",
        ws.head
    );
    assert_eq!(ready["client"], "agent-h1");
    assert_eq!(ready["account"], ACCT);
    for k in ["epoch", "node", "session"] {
        assert!(ready[k].is_string(), "{k} in {ready}");
    }
    assert!(ready["heartbeat_ms"].is_u64(), "{ready}");
    // The token in the query (what a browser's WebSocket can do).
    let target = format!("/v1/connect?access_token={}", tok("agent-h2"));
    let mut ws = Handshake::new(&target)
        .open(node.addr)
        .expect("access_token in the query");
    assert_eq!(ws.event()["client"], "agent-h2");
}

#[test]
fn the_subprotocol_is_echoed_only_when_offered() {
    let node = Node::start(&[]);
    let open = |offer: Option<&str>| {
        let mut h = Handshake::new("/v1/connect").bearer(&tok("agent-sp"));
        if let Some(o) = offer {
            h = h.set("Sec-WebSocket-Protocol", o);
        }
        let mut ws = h
            .open(node.addr)
            .unwrap_or_else(|r| panic!("offer {offer:?}: {r:?}"));
        assert_eq!(ws.event()["event"], "ready");
        header(&ws.head, "sec-websocket-protocol")
    };
    assert_eq!(
        open(Some("switchboard.v1")).as_deref(),
        Some("switchboard.v1")
    );
    assert_eq!(
        open(Some("chat, switchboard.v1, mqtt")).as_deref(),
        Some("switchboard.v1")
    );
    assert_eq!(open(Some("chat, mqtt")), None, "another subprotocol echoed");
    assert_eq!(open(None), None, "a subprotocol nobody offered");
}

#[test]
fn handshake_refusals_are_http_errors() {
    let node = Node::start(&[]);
    let t = tok("agent-r");
    let base = || Handshake::new("/v1/connect").bearer(&t);

    // A version other than 13: 426 naming the version served.
    for v in ["12", "8", "14"] {
        let r = refused(base().set("Sec-WebSocket-Version", v), &node, 426, None);
        assert_eq!(
            header(&r.head, "sec-websocket-version").as_deref(),
            Some("13"),
            "{r:?}"
        );
    }
    // A missing or bad key, no Connection: Upgrade: 400.
    for key in [
        "abc",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "not base64 at all!!!!==",
        "",
    ] {
        refused(base().set("Sec-WebSocket-Key", key), &node, 400, None);
    }
    refused(base().remove("Sec-WebSocket-Key"), &node, 400, None);
    refused(base().set("Connection", "keep-alive"), &node, 400, None);
    refused(base().remove("Connection"), &node, 400, None);
    // GET /v1/connect without Upgrade: websocket: 426 websocket_required.
    let r = refused(
        base().remove("Upgrade").remove("Connection"),
        &node,
        426,
        Some("websocket_required"),
    );
    assert!(
        header(&r.head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{r:?}"
    );
    // An upgrade anywhere else: 400 websocket_unsupported, naming /v1/connect.
    for path in ["/v1/receive", "/v1/send/agent-x", "/ws", "/v1/connect/x"] {
        let mut h = base();
        h.target = path.to_string();
        let r = refused(h, &node, 400, Some("websocket_unsupported"));
        assert!(
            r.json()["message"]
                .as_str()
                .is_some_and(|m| m.contains("/v1/connect")),
            "{path}: {r:?}"
        );
    }
    // No token, a bad one, an expired one: 401.
    for h in token_refusals(&t) {
        refused(h, &node, 401, None);
    }
    // None of these reached a session: the client was never online.
    assert_eq!(client_state(node.addr, &tok("console-r"), "agent-r"), None);
    // And the node still serves a valid handshake.
    ws(&node, "agent-r");
}

/// Handshakes refused for their token: none, a bad one, an expired one, a bad one in the query.
fn token_refusals(t: &str) -> Vec<Handshake> {
    let base = || Handshake::new("/v1/connect").bearer(t);
    let expired = switchboard::auth::sign(
        SECRET.as_bytes(),
        ACCT,
        "agent-r",
        Role::Agent,
        now_secs() - 7200,
        60,
    )
    .expect("sign");
    vec![
        base().remove("Authorization"),
        base().bearer("not-a-token"),
        base().bearer(&expired),
        Handshake::new("/v1/connect?access_token=garbage"),
    ]
}

/// The decisions: "Refusals are plain HTTP answers with the usual JSON
/// error body, then the connection closes" -- also a refused token or origin.
#[test]
fn token_and_origin_refusals_close_the_connection() {
    let node = Node::start(&["--allowed-origins", "http://ok.example"]);
    for h in token_refusals(&tok("agent-r")) {
        refused(h, &node, 401, None);
    }
    let h = Handshake::new("/v1/connect")
        .bearer(&tok("agent-r"))
        .set("Origin", "http://evil.example");
    refused(h, &node, 403, Some("origin_not_allowed"));
}

#[test]
fn origins_are_checked_before_the_token() {
    let ok = "http://ok.example";
    let node = Node::start(&["--allowed-origins", ok]);
    let h = |origin: &str, t: &str| {
        Handshake::new("/v1/connect")
            .bearer(t)
            .set("Origin", origin)
    };
    refused(
        h("http://evil.example", "not-a-token"),
        &node,
        403,
        Some("origin_not_allowed"),
    );
    refused(
        h("http://evil.example", &tok("agent-o")),
        &node,
        403,
        Some("origin_not_allowed"),
    );
    assert!(node.wait_log("refused origin \"http://evil.example\""));
    refused(h(ok, "not-a-token"), &node, 401, None);
    let mut ws = h(ok, &tok("agent-o"))
        .open(node.addr)
        .expect("allowed origin");
    assert_eq!(ws.event()["event"], "ready");
}
