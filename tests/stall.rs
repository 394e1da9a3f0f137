#![cfg(feature = "fault-injection")]
//! Sends pipelined across workers while the recipient's worker is stalled,
//! with the test-only fault injection endpoint `/v1/debug/stall-others`
//! (`cargo test --release --features fault-injection --test stall`): the
//! connection goes on reading and delivering to the other worker's clients,
//! answers still come in request order, a worker that never answers in time
//! costs 503 for those sends only, and a drain waits for the answers.

mod common;

use std::time::Duration;

use common::*;
use switchboard::auth::Role;

const ACCT: &str = "acme";

/// Two agents: one owned by worker 0 and one by worker 1 (open receivers),
/// found among agent-1.. by where their receive connections end up.
fn agents_on_each_worker(node: &Node) -> [(String, Receiver); 2] {
    let mut found: [Option<(String, Receiver)>; 2] = [None, None];
    for i in 1..=32 {
        let name = format!("agent-{i}");
        let mut rx = Receiver::open(node.addr, &token(ACCT, &name, Role::Agent), &[]);
        rx.ready();
        let w = worker_of(node, rx.stream.local_addr().unwrap()) as usize;
        if found[w].is_none() {
            found[w] = Some((name, rx));
        }
        if found.iter().all(Option::is_some) {
            return found.map(|f| f.unwrap());
        }
    }
    panic!("32 clients and not one owned by each of the 2 workers");
}

/// A node with 2 workers, an agent owned by each, and a keep-alive sending
/// connection of console-1 accepted by worker `here` (the other is `there`).
struct Setup {
    node: Node,
    agents: [(String, Receiver); 2],
    tok: String,
    http: Http,
    here: usize,
    there: usize,
}

fn setup() -> Setup {
    // Clients spread per client, so that one account has clients on both workers.
    let node = Node::start(&["--workers", "2", "--shard-by", "client"]);
    let mut agents = agents_on_each_worker(&node);
    let tok = token(ACCT, "console-1", Role::Console);
    let mut http = Http::connect(node.addr);
    // Which worker took the sending connection (it shows up once it sent).
    http.send_raw(send_text(&agents[0].0, &tok, "hello").as_bytes());
    assert_eq!(http.read_response().expect("answer").status, 202);
    agents[0].1.expect_message("console-1", "hello");
    let here = worker_of(&node, http.stream.local_addr().unwrap()) as usize;
    Setup {
        node,
        agents,
        tok,
        http,
        here,
        there: 1 - here,
    }
}

impl Setup {
    /// Asks for the other worker to stall for `ms`, with sends of `body` to the
    /// agent on worker `w` pipelined behind that request, for each `(w, body)`;
    /// reads the stall request's answer (404: it is not a route).
    fn stall_then_send(&mut self, ms: u64, sends: &[(usize, &str)]) {
        let mut batch = format!("GET /v1/debug/stall-others?ms={ms} HTTP/1.1\r\nHost: t\r\n\r\n");
        for (w, body) in sends {
            batch += &send_text(&self.agents[*w].0, &self.tok, body);
        }
        self.http.send_raw(batch.as_bytes());
        let r = self
            .http
            .read_response()
            .expect("answer to the stall request");
        assert_eq!(r.status, 404, "{}", r.head);
    }
}

/// A send to a client of the stalled worker does not hold up the sends
/// pipelined behind it: the next recipient (on the accepting worker) has its
/// message while the first answer is still outstanding, and then both answers
/// come, in request order.
#[test]
fn a_stalled_worker_does_not_hold_up_sends_pipelined_behind_its_own() {
    let mut s = setup();
    let (here, there) = (s.here, s.there);
    s.stall_then_send(
        3000,
        &[(there, "to the stalled worker"), (here, "behind it")],
    );
    // The second send was read and delivered while the first waits.
    s.agents[here].1.expect_message("console-1", "behind it");
    s.http.stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let early = s.http.stream.peek(&mut byte);
    s.http.stream.set_nonblocking(false).unwrap();
    assert!(
        early.is_err(),
        "an answer came before the stalled worker's ({early:?})"
    );
    // Then both answers, in request order.
    let first = s.http.read_response().expect("answer to the first send");
    assert_eq!(first.status, 202, "{}", first.head);
    let second = s.http.read_response().expect("answer to the second send");
    assert_eq!(second.status, 202, "{}", second.head);
    s.agents[there]
        .1
        .expect_message("console-1", "to the stalled worker");
}

/// A worker that does not answer within the wait limit (5 s without a
/// cluster): its pipelined sends get 503, the answers behind them still come
/// in order, the connection stays usable, and the late answer is dropped.
#[test]
fn pipelined_sends_to_a_worker_that_never_answers_get_503_in_order() {
    let mut s = setup();
    let (here, there) = (s.here, s.there);
    s.stall_then_send(
        7000,
        &[(there, "late 1"), (there, "late 2"), (here, "on time")],
    );
    for n in 1..=2 {
        let r = s
            .http
            .read_response()
            .unwrap_or_else(|| panic!("no answer to late send {n}"));
        assert_error(&r, 503, "cluster_unavailable");
    }
    let r = s.http.read_response().expect("answer to the third send");
    assert_eq!(r.status, 202, "{}", r.head);
    // The stalled worker wakes and delivers; its answers find no slot and are dropped.
    s.agents[there].1.expect_message("console-1", "late 1");
    s.agents[there].1.expect_message("console-1", "late 2");
    // The connection still works, and nothing stray was written on it: the
    // next answer is this send's own (its id is the event's).
    s.http
        .send_raw(send_text(&s.agents[there].0, &s.tok, "after").as_bytes());
    let r = s.http.read_response().expect("answer after the stall");
    assert_eq!(r.status, 202, "{}", r.head);
    let ev = s.agents[there].1.expect_message("console-1", "after");
    assert_eq!(r.json()["id"].as_str(), ev.id.as_deref(), "{}", r.head);
    s.http
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(s.http.read_response().is_none(), "a stray answer came");
}

/// SIGTERM while pipelined sends wait for a stalled worker: the connection is
/// not closed as idle; its answers come, in order, and then the connection is
/// closed.
#[test]
fn a_drain_waits_for_the_pipelined_answers_of_a_send_connection() {
    let mut s = setup();
    let (here, there) = (s.here, s.there);
    s.stall_then_send(1500, &[(there, "waits"), (here, "read on")]);
    // Both sends were read; the first waits for the stalled worker.
    s.agents[here].1.expect_message("console-1", "read on");
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(s.node.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill(SIGTERM) failed");
    let first = s.http.read_response().expect("answer to the waiting send");
    assert_eq!(first.status, 202, "{}", first.head);
    let second = s.http.read_response().expect("answer to the second send");
    assert_eq!(second.status, 202, "{}", second.head);
    // The second answer was rendered before the drain began (it queued behind
    // the first), so it may say keep-alive; the connection closes right after.
    assert!(
        s.http.closed_within(WAIT),
        "still open after its last answer during the drain"
    );
    s.agents[there].1.expect_message("console-1", "waits");
}
