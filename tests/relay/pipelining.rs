//! Pipelined requests, also across workers and with the socket changing worker,
//! and half-closed connections: every answer in request order, nothing lost.

use super::*;

#[test]
fn pipelined_requests_answered_in_order() {
    let node = node();
    let (mut agent, console_tok) = agent_online(&node);
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

fn half_close_setup() -> (Node, Receiver, String, String) {
    let node = node();
    let (agent, console_tok) = agent_online(&node);
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
    a_send_pipelined_before_a_receive_is_answered_before_the_stream_starts_in("account");
}

#[test]
fn a_send_pipelined_before_a_receive_is_answered_before_the_stream_starts_by_client() {
    a_send_pipelined_before_a_receive_is_answered_before_the_stream_starts_in("client");
}

fn a_send_pipelined_before_a_receive_is_answered_before_the_stream_starts_in(shard: &str) {
    let node = Node::start(&["--workers", "2", "--shard-by", shard]);
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
    answers_still_queued_when_the_socket_changes_worker_are_not_lost_in("account");
}

#[test]
fn answers_still_queued_when_the_socket_changes_worker_are_not_lost_by_client() {
    answers_still_queued_when_the_socket_changes_worker_are_not_lost_in("client");
}

fn answers_still_queued_when_the_socket_changes_worker_are_not_lost_in(shard: &str) {
    // Small kernel buffers, so that most answers wait in the server.
    let node = Node::start(&[
        "--workers",
        "2",
        "--shard-by",
        shard,
        "--send-buffer",
        "4KiB",
    ]);
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
    sends_pipelined_across_workers_are_answered_in_request_order_in("account");
}

#[test]
fn sends_pipelined_across_workers_are_answered_in_request_order_by_client() {
    sends_pipelined_across_workers_are_answered_in_request_order_in("client");
}

fn sends_pipelined_across_workers_are_answered_in_request_order_in(shard: &str) {
    let node = Node::start(&["--workers", "2", "--shard-by", shard]);
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
    a_random_pipelined_mix_is_answered_in_order_and_closed_after_the_last_in("account");
}

#[test]
fn a_random_pipelined_mix_is_answered_in_order_and_closed_after_the_last_by_client() {
    a_random_pipelined_mix_is_answered_in_order_and_closed_after_the_last_in("client");
}

fn a_random_pipelined_mix_is_answered_in_order_and_closed_after_the_last_in(shard: &str) {
    let node = Node::start(&["--workers", "2", "--shard-by", shard]);
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
    let (mut agent, console_tok) = agent_online(&node);
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

/// The answers to a batch of sends read in one go are written after the
/// batch's events: when the first answer arrives, every recipient already has
/// its events in its socket (a `202` means the event was handed to the
/// recipient's connection), for the first send of the batch and the later
/// ones alike.
#[test]
fn answers_to_a_pipelined_batch_come_after_its_events() {
    let node = Node::start(&["--workers", "1"]);
    let n = 40;
    let mut agents = open_agents(&node, n);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let mut batch = String::new();
    for k in 1..=2 {
        for i in 1..=n {
            batch.push_str(&send_text(
                &format!("agent-{i}"),
                &console_tok,
                &format!("m{i}-{k}"),
            ));
        }
    }
    let mut http = Http::connect(node.addr);
    http.send_raw(batch.as_bytes());
    let first = http.read_response().expect("answer to the first send");
    assert_eq!(first.status, 202);
    // Every event must be readable now, without waiting.
    for (i, agent) in agents.iter_mut().enumerate() {
        agent.stream.set_nonblocking(true).unwrap();
        for k in 1..=2 {
            let ev = agent.next_event().unwrap_or_else(|| {
                panic!(
                    "event m{}-{k} was not in agent-{}'s socket when the first answer arrived",
                    i + 1,
                    i + 1
                )
            });
            assert_eq!(ev.event, "message");
            assert_eq!(ev.json()["body"], format!("m{}-{k}", i + 1));
        }
        agent.stream.set_nonblocking(false).unwrap();
    }
    for j in 2..=2 * n {
        let r = http
            .read_response()
            .unwrap_or_else(|| panic!("no answer to send {j}"));
        assert_eq!(r.status, 202, "answer to send {j}");
    }
}
