//! End-to-end relay tests: messages between clients of one account, encoding,
//! offline recipients, account isolation, keep-alive, chunked bodies,
//! pipelining, `Connection: close` and the client list.

mod common;

use std::io::Write;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use switchboard::auth::Role;

const ACCT: &str = "acme";

fn node() -> Node {
    Node::start(&["--workers", "4"])
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
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let mut agent = Receiver::open(node.addr, &agent_tok, &[]);
    agent.ready();
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
    // An invalid client id is just as offline.
    let r = send(node.addr, &console_tok, "bad%20id", "hello?");
    assert_error(&r, 404, "recipient_offline");
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
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let mut agent = Receiver::open(node.addr, &agent_tok, &[]);
    agent.ready();
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
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let mut agent = Receiver::open(node.addr, &agent_tok, &[]);
    agent.ready();
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
fn pipelined_requests_answered_in_order() {
    let node = node();
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let mut agent = Receiver::open(node.addr, &agent_tok, &[]);
    agent.ready();
    let req = |path: &str, method: &str, body: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {console_tok}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // Three sends in one write; plus a longer mix of sends, a 404 and a list, whose
    // answers come from different workers.
    let mut http = Http::connect(node.addr);
    let batch = [
        req("/v1/send/agent-1", "POST", "p1"),
        req("/v1/send/agent-1", "POST", "p2"),
        req("/v1/send/agent-1", "POST", "p3"),
    ]
    .concat();
    http.send_raw(batch.as_bytes());
    let mut ids = Vec::new();
    for i in 1..=3 {
        let r = http
            .read_response()
            .unwrap_or_else(|| panic!("no response {i}"));
        assert_eq!(r.status, 202, "pipelined response {i}");
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    for (i, id) in ids.iter().enumerate() {
        let ev = agent.expect_message("console-1", &format!("p{}", i + 1));
        assert_eq!(
            ev.id.as_ref(),
            Some(id),
            "pipelined response {} carries the wrong id",
            i + 1
        );
    }

    let mixed = [
        req("/v1/send/agent-1", "POST", "q1"),
        req("/v1/send/nobody", "POST", "lost"),
        req("/v1/clients", "GET", ""),
        req("/v1/nope", "GET", ""),
        req("/v1/send/agent-1", "POST", "q2"),
    ]
    .concat();
    http.send_raw(mixed.as_bytes());
    let statuses: Vec<u16> = (0..5)
        .map(|i| {
            http.read_response()
                .unwrap_or_else(|| panic!("no response {i}"))
                .status
        })
        .collect();
    assert_eq!(statuses, vec![202, 404, 200, 404, 202]);
    agent.expect_message("console-1", "q1");
    agent.expect_message("console-1", "q2");
}

#[test]
fn connection_close_is_honoured() {
    let node = node();
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let mut agent = Receiver::open(node.addr, &agent_tok, &[]);
    agent.ready();

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

fn half_close_setup() -> (Node, Receiver, String, String) {
    let node = node();
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let mut agent = Receiver::open(node.addr, &agent_tok, &[]);
    agent.ready();
    let list = format!(
        "GET /v1/clients HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {console_tok}\r\n\r\n"
    );
    let send1 = format!("POST /v1/send/agent-1 HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {console_tok}\r\nContent-Length: 2\r\n\r\nh1");
    (node, agent, list, send1)
}

#[test]
fn request_then_half_close_is_answered() {
    // A client that writes its request and then shuts down its sending side
    // (as `printf ... | nc` does) still gets the answer.
    let (node, mut agent, list, send1) = half_close_setup();
    for req in [&send1, &list] {
        let mut http = Http::connect(node.addr);
        http.send_raw(req.as_bytes());
        http.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let r = http.read_response().expect("answer after half-close");
        assert!(r.status == 202 || r.status == 200, "{}", r.head);
        assert!(
            http.closed_within(Duration::from_secs(3)),
            "connection not closed after answering a half-closed client"
        );
    }
    agent.expect_message("console-1", "h1");
}

#[test]
fn pipelined_requests_then_half_close_are_all_answered() {
    let (node, mut agent, list, send1) = half_close_setup();
    // Several pipelined requests (a list always involves the other workers), then half-close.
    let mut http = Http::connect(node.addr);
    http.send_raw(
        [list.as_str(), list.as_str(), send1.as_str()]
            .concat()
            .as_bytes(),
    );
    http.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let statuses: Vec<Option<u16>> = (0..3)
        .map(|_| http.read_response().map(|r| r.status))
        .collect();
    assert_eq!(
        statuses,
        vec![Some(200), Some(200), Some(202)],
        "pipelined requests before a half-close went unanswered"
    );
    agent.expect_message("console-1", "h1");
}

/// Answers to pipelined requests are held back and written together: a send
/// pipelined before a receive request on the same connection is still answered
/// before the stream starts, also when another worker owns the receiver.
#[test]
fn a_send_pipelined_before_a_receive_is_answered_before_the_stream_starts() {
    let node = Node::start(&["--workers", "2"]);
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let mut agent = Receiver::open(node.addr, &agent_tok, &[]);
    agent.ready();
    // Several clients, so that some are owned by the worker that accepted the
    // connection and some by the other one (the socket is handed over).
    for i in 1..=6 {
        let name = format!("console-{i}");
        let tok = token(ACCT, &name, Role::Console);
        let body = format!("from {name}");
        let mut http = Http::connect(node.addr);
        let receive =
            format!("GET /v1/receive HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n");
        http.send_raw((send_text("agent-1", &tok, &body) + &receive).as_bytes());
        let r = http.read_response().expect("answer to the send");
        assert_eq!(r.status, 202, "{name}: {}", r.head);
        let r = http.read_response().expect("head of the stream");
        assert_eq!(r.status, 200, "{name}: {}", r.head);
        assert!(
            r.head.to_ascii_lowercase().contains("text/event-stream"),
            "{name}: {}",
            r.head
        );
        agent.expect_message(&name, &body);
    }
}

/// A receive request pipelined behind answers the kernel has not taken yet
/// (the client does not read): when the socket moves to the worker that owns
/// the client, those answers move with it and still come before the stream.
#[test]
fn answers_still_queued_when_the_socket_changes_worker_are_not_lost() {
    // Small kernel buffers, so that most answers wait in the server.
    let node = Node::start(&["--workers", "2", "--send-buffer", "4KiB"]);
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let mut agent = Receiver::open(node.addr, &agent_tok, &[]);
    agent.ready();
    const SENDS: usize = 300;
    // Several clients, so that some are owned by the worker that accepted the
    // connection and some by the other one (the socket is handed over).
    for i in 1..=6 {
        let name = format!("console-{i}");
        let tok = token(ACCT, &name, Role::Console);
        let mut http = Http::connect_small_rcvbuf(node.addr, 2048);
        let local = http.stream.local_addr().unwrap().to_string();
        let mut batch: String = (1..=SENDS)
            .map(|j| send_text("agent-1", &tok, &format!("{name} m{j}")))
            .collect();
        batch +=
            &format!("GET /v1/receive HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n");
        http.send_raw(batch.as_bytes());
        // Not reading yet: wait until the receive request was taken.
        let admin = node.admin.expect("the node has an admin listener");
        let is_receive = || {
            request(admin, "GET", "/connections", None, b"").json()["connections"]
                .as_array()
                .is_some_and(|l| {
                    l.iter()
                        .any(|c| c["remote"] == local.as_str() && c["kind"] == "receive")
                })
        };
        assert!(
            wait_until(WAIT, is_receive),
            "{name}: never became a receive connection"
        );
        for j in 1..=SENDS {
            let r = http
                .read_response()
                .unwrap_or_else(|| panic!("{name}: no answer to send {j}"));
            assert_eq!(r.status, 202, "{name}, send {j}: {}", r.head);
        }
        let r = http.read_response().expect("head of the stream");
        assert_eq!(r.status, 200, "{name}: {}", r.head);
        for j in 1..=SENDS {
            agent.expect_message(&name, &format!("{name} m{j}"));
        }
    }
}

/// Receive connections of agent-1 ..= agent-`n` of ACCT, each past its `ready` event.
fn open_agents(node: &Node, n: usize) -> Vec<Receiver> {
    (1..=n)
        .map(|i| {
            let tok = token(ACCT, &format!("agent-{i}"), Role::Agent);
            let mut rx = Receiver::open(node.addr, &tok, &[]);
            rx.ready();
            rx
        })
        .collect()
}

/// Sends pipelined on one connection to clients owned by either worker (the
/// connection goes on reading while another worker answers) are answered in
/// request order, with the errors among them in place; a receive request at
/// the end starts after the last answer, and every message arrives once, in
/// order.
#[test]
fn sends_pipelined_across_workers_are_answered_in_request_order() {
    let node = Node::start(&["--workers", "2"]);
    // Six recipients: with two workers, some are owned by each.
    let mut agents = open_agents(&node, 6);
    let tok = token(ACCT, "console-1", Role::Console);
    let mut batch = String::new();
    // (status, recipient index for a delivered message, body)
    let mut expect: Vec<(u16, Option<usize>, String)> = Vec::new();
    for round in 0..20 {
        for i in 0..agents.len() {
            let body = format!("r{round} a{i}");
            batch += &send_text(&format!("agent-{}", i + 1), &tok, &body);
            expect.push((202, Some(i), body));
        }
        // An offline recipient (owned by either worker) and a bad token in between.
        batch += &send_text(&format!("nobody-{round}"), &tok, "lost");
        expect.push((404, None, String::new()));
        batch += &send_text("agent-1", "not-a-token", "refused");
        expect.push((401, None, String::new()));
    }
    batch += &format!("GET /v1/receive HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n");
    let mut http = Http::connect(node.addr);
    http.send_raw(batch.as_bytes());
    let mut last_seq = vec![0u64; agents.len()];
    for (n, (status, agent, body)) in expect.iter().enumerate() {
        let r = http
            .read_response()
            .unwrap_or_else(|| panic!("no answer to request {n}"));
        assert_eq!(r.status, *status, "request {n} ({body:?}): {}", r.head);
        if let Some(i) = agent {
            let id = r.json()["id"].as_str().expect("id").to_string();
            let (_, seq) = parse_id(&id);
            assert!(seq > last_seq[*i], "request {n}: id {id} out of order");
            last_seq[*i] = seq;
        }
    }
    let r = http.read_response().expect("head of the stream");
    assert_eq!(r.status, 200, "{}", r.head);
    for (_, agent, body) in &expect {
        if let Some(i) = agent {
            agents[*i].expect_message("console-1", body);
        }
    }
}

/// A long pseudo-random mix of pipelined requests on one connection (sends to
/// clients of both workers, chunked sends, offline recipients, bad tokens,
/// client lists), ending with a send that says `Connection: close`: every
/// answer has the status its request calls for, in request order; the
/// connection closes after the last; each recipient gets its messages once,
/// in order.
#[test]
fn a_random_pipelined_mix_is_answered_in_order_and_closed_after_the_last() {
    let node = Node::start(&["--workers", "2"]);
    let mut agents = open_agents(&node, 6);
    let tok = token(ACCT, "console-1", Role::Console);
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut batch = String::new();
    let mut expect: Vec<u16> = Vec::new();
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); agents.len()];
    for n in 0..400 {
        let a = next(agents.len() as u64) as usize;
        let to = format!("agent-{}", a + 1);
        let body = format!("m{n}");
        match next(10) {
            0 => {
                batch += &send_text("nobody", &tok, "lost");
                expect.push(404);
            }
            1 => {
                batch += &send_text(&to, "not-a-token", "refused");
                expect.push(401);
            }
            2 => {
                batch += &format!(
                    "GET /v1/clients HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n"
                );
                expect.push(200);
            }
            3 => {
                batch += &format!(
                    "POST /v1/send/{to} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                );
                expect.push(202);
                sent[a].push(body);
            }
            _ => {
                batch += &send_text(&to, &tok, &body);
                expect.push(202);
                sent[a].push(body);
            }
        }
    }
    let last = "the end";
    batch += &format!(
        "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{last}",
        last.len()
    );
    expect.push(202);
    sent[0].push(last.to_string());
    // Written from another thread: the answers must be read while it writes.
    let mut http = Http::connect(node.addr);
    let mut writer = http.stream.try_clone().expect("clone");
    let t = std::thread::spawn(move || writer.write_all(batch.as_bytes()));
    for (n, status) in expect.iter().enumerate() {
        let r = http
            .read_response()
            .unwrap_or_else(|| panic!("no answer to request {n}"));
        assert_eq!(r.status, *status, "request {n}: {}", r.head);
    }
    t.join().expect("writer").expect("write the batch");
    assert!(
        http.closed_within(WAIT),
        "still open after the Connection: close answer"
    );
    for (a, bodies) in sent.iter().enumerate() {
        for b in bodies {
            agents[a].expect_message("console-1", b);
        }
    }
}

/// More pipelined answers than are held back at once (16 KiB): they all come,
/// in order, and every message arrives once.
#[test]
fn a_long_pipeline_is_answered_whole_and_in_order() {
    let node = Node::start(&["--workers", "1"]);
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let mut agent = Receiver::open(node.addr, &agent_tok, &[]);
    agent.ready();
    let bodies: Vec<String> = (1..=300).map(|i| format!("m{i}")).collect();
    let batch: String = bodies
        .iter()
        .map(|b| send_text("agent-1", &console_tok, b))
        .collect();
    let mut http = Http::connect(node.addr);
    http.send_raw(batch.as_bytes());
    let mut last_seq = 0u64;
    for i in 1..=bodies.len() {
        let r = http
            .read_response()
            .unwrap_or_else(|| panic!("no answer to send {i}"));
        assert_eq!(r.status, 202, "send {i}: {}", r.head);
        // Ids are `<epoch>-<seq>`: answers in request order have rising sequence numbers.
        let id = r.json()["id"].as_str().expect("id").to_string();
        let seq: u64 = id
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("seq");
        assert!(seq > last_seq, "answer {i} ({id}) out of order");
        last_seq = seq;
    }
    for b in &bodies {
        agent.expect_message("console-1", b);
    }
}

/// A burst for one online client that is longer than its retention limit: the
/// events that wait for the end of the loop iteration are written before the
/// log is trimmed, so the live client still gets every one, in order.
#[test]
fn a_burst_longer_than_the_retention_limit_reaches_a_live_client_whole() {
    let node = Node::start(&["--workers", "1", "--hold-max-messages", "2"]);
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let mut agent = Receiver::open(node.addr, &agent_tok, &[]);
    agent.ready();
    let bodies: Vec<String> = (1..=6).map(|i| format!("m{i}")).collect();
    send_burst(node.addr, &console_tok, "agent-1", &bodies);
    for i in 1..=6 {
        agent.expect_message("console-1", &format!("m{i}"));
    }
}

/// Large messages arrive byte for byte whichever way they are written: a
/// body that JSON holds as it is (ASCII, or UTF-8 text without `"`, `\` and
/// control characters, from 4 KiB on) goes out from the retained log in one
/// `sendmsg` of head, body and tail; others are escaped into the event, or
/// sent as base64. Once to a receiver that reads at once, once to one with a
/// 4 KiB receive buffer that reads only after every send was answered; with
/// the server's send buffer at 16 KiB, its writes are cut short and the rest
/// is queued.
#[test]
fn large_bodies_arrive_exactly_whether_written_from_the_log_or_escaped() {
    // A small send buffer, so that the kernel takes only part of a large event.
    let node = Node::start(&["--workers", "1", "--send-buffer", "16KiB"]);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let letters = |n: usize| -> Vec<u8> { (0..n).map(|i| b'a' + (i % 26) as u8).collect() };
    let mut utf8 = String::new();
    while utf8.len() < 50_000 {
        utf8.push_str("caf\u{e9} \u{1F600} /~ ");
    }
    let mut quoted = letters(60_000);
    for (i, b) in quoted.iter_mut().enumerate().step_by(997) {
        *b = [b'"', b'\\', b'\n', 0x01][i % 4];
    }
    let mut quote_at_end = letters(20_000);
    quote_at_end.push(b'"');
    let mut binary = letters(30_000);
    binary[29_999] = 0xff;
    let bodies: Vec<Vec<u8>> = vec![
        letters(60_000),
        letters(4096),
        letters(4095),
        utf8.into_bytes(),
        quoted,
        quote_at_end,
        binary,
        letters(64 * 1024),
    ];
    for small in [false, true] {
        let name = if small { "agent-slow" } else { "agent-fast" };
        let tok = token(ACCT, name, Role::Agent);
        let mut rx = if small {
            Receiver::open_small_rcvbuf(node.addr, &tok, 4096)
        } else {
            Receiver::open(node.addr, &tok, &[])
        };
        rx.ready();
        let mut tx = Http::connect(node.addr);
        let path = format!("/v1/send/{name}");
        for (i, body) in bodies.iter().enumerate() {
            let r = tx.request("POST", &path, Some(&console_tok), body);
            assert_eq!(r.status, 202, "body {i} to {name}");
            if !small {
                check_large_body(&mut rx, body, i);
            }
        }
        if small {
            for (i, body) in bodies.iter().enumerate() {
                check_large_body(&mut rx, body, i);
            }
        }
    }
}

/// Reads the next event from `rx` and checks it carries `body` exactly (as
/// text if it is UTF-8, else as base64).
fn check_large_body(rx: &mut Receiver, body: &[u8], i: usize) {
    let ev = rx.expect_event("message");
    let j = ev.json();
    assert_eq!(j["from"], "console-1");
    match std::str::from_utf8(body) {
        Ok(text) => assert!(
            j["body"].as_str() == Some(text),
            "body {i} ({} bytes) differs",
            body.len()
        ),
        Err(_) => {
            let b64 = j["body_b64"].as_str().expect("body_b64");
            let got = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64");
            assert!(got == body, "binary body {i} differs");
        }
    }
}

/// A keep-alive sender whose bodies change size (large ones read with the
/// head in one large read and the rest straight into the body's buffer,
/// small ones through the input buffer): every body arrives whole and in
/// order, also when a head comes in pieces and when two requests come in one
/// write.
#[test]
fn a_sender_alternating_large_and_small_bodies_is_read_right() {
    let node = Node::start(&["--workers", "1"]);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let mut rx = Receiver::open(node.addr, &agent_tok, &[]);
    rx.ready();
    let body = |i: usize, n: usize| -> String {
        let mut b = format!("#{i}#");
        while b.len() < n {
            b.push((b'a' + (b.len() % 26) as u8) as char);
        }
        b.truncate(n.max(4));
        b
    };
    let post = |b: &str| -> Vec<u8> {
        let mut r = format!(
            "POST /v1/send/agent-1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {console_tok}\r\nContent-Length: {}\r\n\r\n",
            b.len()
        )
        .into_bytes();
        r.extend_from_slice(b.as_bytes());
        r
    };
    let mut tx = Http::connect(node.addr);
    let mut i = 0;
    for n in [
        60_000, 60_000, 100, 30_000, 5_000, 65_536, 10, 20_000, 3_000, 40_000,
    ] {
        let b = body(i, n);
        tx.send_raw(&post(&b));
        assert_eq!(tx.read_response().expect("answer").status, 202, "body {i}");
        rx.expect_message("console-1", &b);
        i += 1;
    }
    // After a large body: the next head in three pieces (the first read
    // holds only part of it).
    let b = body(i, 50_000);
    let req = post(&b);
    for piece in [&req[..10], &req[10..120], &req[120..]] {
        tx.send_raw(piece);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(tx.read_response().expect("answer").status, 202);
    rx.expect_message("console-1", &b);
    i += 1;
    // Two requests in one write, a large one first and a small one behind it.
    let (b1, b2) = (body(i, 30_000), body(i + 1, 50));
    let mut both = post(&b1);
    both.extend_from_slice(&post(&b2));
    tx.send_raw(&both);
    for b in [&b1, &b2] {
        assert_eq!(tx.read_response().expect("answer").status, 202);
        rx.expect_message("console-1", b);
    }
}
