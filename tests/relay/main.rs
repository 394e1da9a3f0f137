//! End-to-end relay tests: messages between clients of one account, encoding,
//! offline recipients, account isolation, keep-alive, chunked bodies,
//! `Connection: close` and the client list here; pipelined requests and
//! half-closed connections in `pipelining`; large bodies in `bodies`; JSON
//! bodies in `json`.

#[path = "../common/mod.rs"]
mod common;

mod bodies;
mod handoff;
mod json;
mod pipelining;

use std::io::Write;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use switchboard::auth::Role;

const ACCT: &str = "acme";

fn node() -> Node {
    Node::start(&["--workers", "4"])
}

/// Receive connection of agent-1 of ACCT, past its `ready` event, and a token
/// of console-1 to send to it with.
fn agent_online(node: &Node) -> (Receiver, String) {
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let mut agent = Receiver::open(node.addr, &agent_tok, &[]);
    agent.ready();
    (agent, token(ACCT, "console-1", Role::Console))
}

/// Relays one message as `from_tok` to `to` and checks it arrives at `rx` with the id the sender was given.
fn relay_one(
    node: &Node,
    rx: &mut Receiver,
    epoch: &str,
    from_tok: &str,
    from: &str,
    to: &str,
    body: &str,
) -> u64 {
    let r = send(node.addr, from_tok, to, body);
    assert_eq!(
        r.status,
        202,
        "send {from}->{to}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    let j = r.json();
    assert_eq!(j["status"], "accepted");
    let id = j["id"].as_str().expect("id in send answer").to_string();
    let (ep, seq) = parse_id(&id);
    assert_eq!(
        ep, epoch,
        "send id {id} is not in the recipient's epoch {epoch}"
    );
    let ev = rx.expect_message(from, body);
    assert_eq!(
        ev.id.as_deref(),
        Some(id.as_str()),
        "SSE id differs from the id the sender got"
    );
    seq
}

#[test]
fn relay_both_ways_between_agent_and_console() {
    let node = node();
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let mut agent = Receiver::open(node.addr, &agent_tok, &[]);
    assert!(agent.head.starts_with("HTTP/1.1 200"), "{}", agent.head);
    assert!(
        agent
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        agent.head
    );
    let ready = agent.ready();
    assert_eq!(ready["account"], ACCT);
    assert_eq!(ready["client"], "agent-1");
    assert!(
        ready["session"].as_str().is_some_and(|s| !s.is_empty()),
        "{ready}"
    );
    assert!(
        ready["node"].as_str().is_some_and(|s| !s.is_empty()),
        "{ready}"
    );
    assert_eq!(ready["heartbeat_ms"], 60_000);
    let agent_epoch = ready["epoch"].as_str().expect("epoch").to_string();

    let mut console = Receiver::open(node.addr, &console_tok, &[]);
    let cready = console.ready();
    assert_eq!(cready["client"], "console-1");
    let console_epoch = cready["epoch"].as_str().expect("epoch").to_string();

    let s1 = relay_one(
        &node,
        &mut agent,
        &agent_epoch,
        &console_tok,
        "console-1",
        "agent-1",
        "run diagnostics",
    );
    let c1 = relay_one(
        &node,
        &mut console,
        &console_epoch,
        &agent_tok,
        "agent-1",
        "console-1",
        "diagnostics: ok",
    );
    let s2 = relay_one(
        &node,
        &mut agent,
        &agent_epoch,
        &console_tok,
        "console-1",
        "agent-1",
        "line1\nline2 \"quoted\" ünïcode",
    );
    let c2 = relay_one(
        &node,
        &mut console,
        &console_epoch,
        &agent_tok,
        "agent-1",
        "console-1",
        "",
    );
    assert_eq!(s2, s1 + 1, "agent's sequence numbers are not consecutive");
    assert_eq!(c2, c1 + 1, "console's sequence numbers are not consecutive");
}

#[test]
fn binary_body_arrives_as_base64() {
    let node = node();
    let (mut agent, console_tok) = agent_online(&node);
    let body: Vec<u8> = vec![0xff, 0xfe, 0x00, 0x80, b'a', b'\n', 0xc3, 0x28, 0x01];
    let r = request(
        node.addr,
        "POST",
        "/v1/send/agent-1",
        Some(&console_tok),
        &body,
    );
    assert_eq!(r.status, 202);
    let ev = agent.next_event().expect("message");
    assert_eq!(ev.event, "message");
    let j = ev.json();
    assert_eq!(j["from"], "console-1");
    assert!(
        j.get("body").is_none(),
        "binary message also has a text body: {j}"
    );
    let b64 = j["body_b64"].as_str().expect("body_b64");
    assert_eq!(b64, base64::engine::general_purpose::STANDARD.encode(&body));
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
        body
    );
}

#[test]
fn offline_recipient_is_404() {
    let node = node();
    let console_tok = token(ACCT, "console-1", Role::Console);
    let r = send(node.addr, &console_tok, "nobody-here", "hello?");
    assert_error(&r, 404, "recipient_offline");
}

/// A recipient that can never be a client id is a client error, not an
/// offline client: empty, outside `[A-Za-z0-9._-]` (after percent-decoding),
/// or longer than 64 characters. An escaped valid id is that id.
#[test]
fn invalid_recipient_is_400() {
    let node = node();
    let console_tok = token(ACCT, "console-1", Role::Console);
    let long = "a".repeat(65);
    for to in ["", "bad%20id", "bad%2Fid", "%ff", "a+b", long.as_str()] {
        let r = send(node.addr, &console_tok, to, "hello?");
        assert_error(&r, 400, "invalid_recipient");
    }
    let mut agent = Receiver::open(node.addr, &token(ACCT, "agent-9", Role::Agent), &[]);
    agent.ready();
    let r = send(node.addr, &console_tok, "agent%2D9", "escaped");
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(agent.expect_event("message").json()["body"], "escaped");
}

#[test]
fn accounts_are_isolated() {
    let node = node();
    let a_tok = token("alpha", "console-a", Role::Console);
    let b_agent_tok = token("beta", "agent-b", Role::Agent);
    let b_console_tok = token("beta", "console-b", Role::Console);
    let mut b_agent = Receiver::open(node.addr, &b_agent_tok, &[]);
    b_agent.ready();

    // Same client id, other account: not reachable.
    let r = send(node.addr, &a_tok, "agent-b", "cross-account");
    assert_error(&r, 404, "recipient_offline");

    // Alpha does not see beta's clients; beta does.
    let a_list = clients(node.addr, &a_tok);
    assert!(
        a_list.iter().all(|c| c["client"] != "agent-b"),
        "alpha lists beta's client: {a_list:?}"
    );
    assert_eq!(
        client_state(node.addr, &b_console_tok, "agent-b").as_deref(),
        Some("online")
    );

    // The first message beta's agent sees is its own account's, not alpha's.
    let r = send(node.addr, &b_console_tok, "agent-b", "same-account");
    assert_eq!(r.status, 202);
    b_agent.expect_message("console-b", "same-account");

    // An alpha client with the same id as beta's is a different client.
    let a_agent_tok = token("alpha", "agent-b", Role::Agent);
    let mut a_agent = Receiver::open(node.addr, &a_agent_tok, &[]);
    a_agent.ready();
    let r = send(node.addr, &a_tok, "agent-b", "for alpha");
    assert_eq!(r.status, 202);
    a_agent.expect_message("console-a", "for alpha");
    let r = send(node.addr, &b_console_tok, "agent-b", "for beta");
    assert_eq!(r.status, 202);
    b_agent.expect_message("console-b", "for beta");
}

#[test]
fn hundred_messages_in_order_over_keep_alive() {
    let node = node();
    let (mut agent, console_tok) = agent_online(&node);
    let mut http = Http::connect(node.addr);
    let mut ids = Vec::new();
    for i in 0..100 {
        let r = http.request(
            "POST",
            "/v1/send/agent-1",
            Some(&console_tok),
            format!("msg-{i}").as_bytes(),
        );
        assert_eq!(r.status, 202, "message {i}");
        assert!(
            r.header("connection")
                .is_none_or(|v| !v.eq_ignore_ascii_case("close")),
            "keep-alive connection closed at {i}"
        );
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let mut last = 0;
    for (i, id) in ids.iter().enumerate() {
        let ev = agent.expect_message("console-1", &format!("msg-{i}"));
        assert_eq!(ev.id.as_ref(), Some(id));
        let (_, seq) = parse_id(id);
        assert!(seq > last, "ids not increasing: {seq} after {last}");
        last = seq;
    }
}

#[test]
fn chunked_post_body() {
    let node = node();
    let (mut agent, console_tok) = agent_online(&node);
    let mut http = Http::connect(node.addr);
    http.stream.set_nodelay(true).unwrap();
    let head = format!(
        "POST /v1/send/agent-1 HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {console_tok}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    // Written in pieces that split the chunk framing.
    http.send_raw(head.as_bytes());
    http.send_raw(b"5\r\nhel");
    http.send_raw(b"lo\r\n6;ext=1\r\n world\r");
    http.send_raw(b"\n0\r\n\r\n");
    let r = http.read_response().expect("response to chunked send");
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    agent.expect_message("console-1", "hello world");
    // The keep-alive connection is usable after a chunked request.
    let r = http.request(
        "POST",
        "/v1/send/agent-1",
        Some(&console_tok),
        b"after chunked",
    );
    assert_eq!(r.status, 202);
    agent.expect_message("console-1", "after chunked");
}

#[test]
fn connection_close_is_honoured() {
    let node = node();
    let (mut agent, console_tok) = agent_online(&node);

    // Keep-alive by default: a second request on the same connection works.
    let mut http = Http::connect(node.addr);
    let r = http.request("POST", "/v1/send/agent-1", Some(&console_tok), b"k1");
    assert_eq!(r.status, 202);
    let r = http.request("POST", "/v1/send/agent-1", Some(&console_tok), b"k2");
    assert_eq!(r.status, 202);

    // Connection: close: answered, marked, then closed by the server.
    let req = format!(
        "POST /v1/send/agent-1 HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {console_tok}\r\nConnection: close\r\nContent-Length: 2\r\n\r\nk3"
    );
    http.send_raw(req.as_bytes());
    let r = http.read_response().expect("response");
    assert_eq!(r.status, 202);
    assert_eq!(
        r.header("connection")
            .map(|v| v.to_ascii_lowercase())
            .as_deref(),
        Some("close")
    );
    assert!(
        http.closed_within(Duration::from_secs(3)),
        "server kept the connection open after Connection: close"
    );

    // HTTP/1.0 without keep-alive closes too.
    let req = format!("GET /v1/clients HTTP/1.0\r\nAuthorization: Bearer {console_tok}\r\n\r\n");
    let (r, mut h) = raw_exchange(node.addr, req.as_bytes());
    assert_eq!(r.expect("response").status, 200);
    assert!(
        h.closed_within(Duration::from_secs(3)),
        "server kept an HTTP/1.0 connection open"
    );

    agent.expect_message("console-1", "k1");
    agent.expect_message("console-1", "k2");
    agent.expect_message("console-1", "k3");
}

#[test]
fn client_list_shows_online_then_held() {
    let node = Node::start(&["--workers", "4", "--hold", "30s"]);
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let before = common::now_secs() * 1000;
    let mut agent = Receiver::open(node.addr, &agent_tok, &[]);
    agent.ready();
    let mut console = Receiver::open(node.addr, &console_tok, &[]);
    console.ready();

    let list = clients(node.addr, &agent_tok);
    assert_eq!(list.len(), 2, "{list:?}");
    let names: Vec<&str> = list.iter().map(|c| c["client"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        vec!["agent-1", "console-1"],
        "list is not sorted by client"
    );
    for c in &list {
        assert_eq!(c["state"], "online", "{c}");
        let since = c["since_ms"].as_u64().expect("since_ms");
        assert!(
            since + 2000 >= before && since <= common::now_secs() * 1000 + 2000,
            "since_ms {since} not about now"
        );
    }
    assert_eq!(list[0]["role"], "agent");
    assert_eq!(list[1]["role"], "console");

    drop(console);
    assert!(
        wait_state(node.addr, &agent_tok, "console-1", "held", WAIT),
        "console not held after its receive connection closed"
    );
    let list = clients(node.addr, &console_tok);
    let console = list.iter().find(|c| c["client"] == "console-1").unwrap();
    assert_eq!(console["role"], "console");
    let agent_entry = list.iter().find(|c| c["client"] == "agent-1").unwrap();
    assert_eq!(agent_entry["state"], "online");

    // A held client still accepts messages (202) and comes back online on reconnect.
    let r = send(node.addr, &agent_tok, "console-1", "while away");
    assert_eq!(r.status, 202);
    let mut console = Receiver::open(node.addr, &console_tok, &[]);
    console.ready();
    console.expect_message("agent-1", "while away");
    assert_eq!(
        client_state(node.addr, &agent_tok, "console-1").as_deref(),
        Some("online")
    );
}

#[test]
fn sending_to_self_does_not_break_anything() {
    let node = node();
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let mut agent = Receiver::open(node.addr, &agent_tok, &[]);
    agent.ready();
    let r = send(node.addr, &agent_tok, "agent-1", "note to self");
    assert!(
        r.status == 202 || r.status == 404,
        "send to self: {}",
        r.status
    );
    if r.status == 202 {
        agent.expect_message("agent-1", "note to self");
    }
    // The node and the session still work.
    let r = send(node.addr, &console_tok, "agent-1", "still there?");
    assert_eq!(r.status, 202);
    agent.expect_message("console-1", "still there?");
    assert_eq!(
        client_state(node.addr, &console_tok, "agent-1").as_deref(),
        Some("online")
    );
    // Self-conversation must not produce a peer-gone to itself or crash on disconnect.
    drop(agent);
    assert!(wait_state(node.addr, &console_tok, "agent-1", "held", WAIT));
    let mut http = Http::connect(node.addr);
    let r = http.request("GET", "/v1/clients", Some(&console_tok), b"");
    assert_eq!(r.status, 200);
    http.stream.flush().unwrap();
}
