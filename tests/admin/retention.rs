//! `--hold-total-bytes`: the node-wide limit on retained messages. Live
//! clients' replay logs (delivered messages) make room first; held clients'
//! undelivered messages go only past the whole limit, and then as a `gap`
//! with reason `memory_limit`. Real binary, metrics read from `/metrics`.

use super::*;

const ACCT: &str = "acme";
/// Each message body: 4,000 bytes, so 16 fill the 64 KiB limit.
const BODY: usize = 4000;
const LIMIT: f64 = 65536.0;

fn body(tag: &str, i: usize) -> String {
    let head = format!("{tag}{i:03}-");
    format!("{head}{}", "x".repeat(BODY - head.len()))
}

/// A node whose retained messages are limited to 64 KiB.
fn limited_node(workers: &str) -> Node {
    Node::start(&[
        "--workers",
        workers,
        "--hold-total-bytes",
        "64KiB",
        "--max-message",
        "16KiB",
    ])
}

/// Sends `m1` to `client` on its open stream `rx`, reads it, closes the
/// stream and waits until the client is held. Returns `m1`'s id.
fn receive_one_then_hold(node: &Node, mut rx: Receiver, console: &str, client: &str) -> String {
    let id = send_ok(node.addr, console, client, "m1");
    rx.expect_message("console-1", "m1");
    drop(rx);
    assert!(wait_state(node.addr, console, client, "held", WAIT));
    id
}

/// Reads, on a resumed stream, a `memory_limit` gap and then the newest of
/// `sent` (at least the last one, not the first), in order, with nothing
/// skipped after the gap. Returns the index of the first one kept.
fn gap_then_newest(rx: &mut Receiver, sent: &[String]) -> usize {
    let gap = rx.next_event().expect("gap");
    assert_eq!(gap.event, "gap", "{:.120}", format!("{gap:?}"));
    assert_eq!(gap.json()["reason"], "memory_limit", "{gap:?}");
    let ev = rx.next_event().expect("the newest messages");
    assert_eq!(ev.event, "message", "{:.120}", format!("{ev:?}"));
    let b = ev.json()["body"].as_str().unwrap().to_string();
    let k = sent
        .iter()
        .position(|m| *m == b)
        .expect("one of the messages sent");
    assert!(k > 0, "nothing was dropped before {b:.7}");
    for m in &sent[k + 1..] {
        rx.expect_message("console-1", m);
    }
    k
}

/// A client's account, its receive token, its account's console token and
/// its open receive stream (`ready` read).
struct Client {
    acct: String,
    tok: String,
    console: String,
    rx: Receiver,
}

/// On a node with two workers: agent-1 of `acct-0` and agent-2 of an account
/// `acct-N` whose clients live on the other worker.
fn clients_on_two_workers(node: &Node) -> (Client, Client) {
    let open = |acct: &str, client: &str| {
        let tok = token(acct, client, Role::Agent);
        let mut rx = Receiver::open(node.addr, &tok, &[]);
        rx.ready();
        let console = token(acct, "console-1", Role::Console);
        let acct = acct.to_string();
        Client {
            acct,
            tok,
            console,
            rx,
        }
    };
    let first = open("acct-0", "agent-1");
    let worker = worker_of(node, first.rx.stream.local_addr().unwrap());
    let other = (1..64)
        .map(|i| open(&format!("acct-{i}"), "agent-2"))
        .find(|c| worker_of(node, c.rx.stream.local_addr().unwrap()) != worker)
        .expect("an account on the other worker");
    (first, other)
}

/// Waits until the node's retained bytes are within the limit.
fn wait_within_limit(node: &Node) {
    let mut retained = 0.0;
    assert!(
        wait_until(WAIT, || {
            retained = value(node, "switchboard_retained_bytes");
            retained <= LIMIT
        }),
        "retained bytes {retained} stay past the limit"
    );
}

/// The value of a metric without labels.
fn value(node: &Node, name: &str) -> f64 {
    metric(&metrics(node), name, &[]).unwrap_or_else(|| panic!("{name} missing"))
}

#[test]
fn retained_messages_stay_within_hold_total_bytes_and_held_ones_go_last() {
    let node = limited_node("1");
    assert_eq!(value(&node, "switchboard_hold_total_bytes"), LIMIT);
    // The start-up line says so in a unit that fits (it said "0 MiB").
    assert!(node.wait_log("retained messages limited to 64 KiB in all"));
    let console = token(ACCT, "console-1", Role::Console);
    let live_tok = token(ACCT, "agent-1", Role::Agent);
    let held_tok = token(ACCT, "agent-2", Role::Agent);

    // agent-2 receives one message, then goes away and is held.
    let mut rx2 = Receiver::open(node.addr, &held_tok, &[]);
    rx2.ready();
    let first = receive_one_then_hold(&node, rx2, &console, "agent-2");

    // agent-1 is online and receives 40 messages (160 KB): every one arrives,
    // and its replay log is trimmed to three quarters of the limit.
    let mut rx1 = Receiver::open(node.addr, &live_tok, &[]);
    rx1.ready();
    for i in 0..40 {
        let b = body("live", i);
        send_ok(node.addr, &console, "agent-1", &b);
        rx1.expect_message("console-1", &b);
    }
    let mut retained = f64::MAX;
    assert!(
        wait_until(WAIT, || {
            retained = value(&node, "switchboard_retained_bytes");
            retained > 0.0 && retained <= LIMIT * 0.75
        }),
        "retained bytes {retained} not within three quarters of the 64 KiB limit"
    );
    assert!(value(&node, "switchboard_retained_memory_trims_total") > 0.0);
    assert_eq!(
        value(&node, "switchboard_messages_dropped_total"),
        0.0,
        "only delivered messages may go while the limit is not full"
    );

    // Three messages for the held client (12 KB) fit in the room the live
    // client's trimmed replay log left: resuming replays all three, no gap.
    let held: Vec<String> = (0..3).map(|i| body("held", i)).collect();
    let held_ids: Vec<String> = held
        .iter()
        .map(|b| send_ok(node.addr, &console, "agent-2", b))
        .collect();
    let mut rx2 = Receiver::open(node.addr, &held_tok, &[("Last-Event-ID", &first)]);
    rx2.ready();
    for (b, id) in held.iter().zip(&held_ids) {
        let ev = rx2.next_event().expect("replay");
        assert_eq!(ev.event, "message", "expected the held message, got {ev:?}");
        assert_eq!(ev.json()["body"], b.as_str());
        assert_eq!(ev.id.as_ref(), Some(id));
    }
    drop(rx2);
    assert!(wait_state(node.addr, &console, "agent-2", "held", WAIT));

    // Held again, agent-2 is sent 24 messages (96 KB), more than the whole
    // limit: the oldest go, and its next stream says so before the newest.
    let more: Vec<String> = (0..24).map(|i| body("more", i)).collect();
    let more_ids: Vec<String> = more
        .iter()
        .map(|b| send_ok(node.addr, &console, "agent-2", b))
        .collect();
    assert!(
        node.wait_log("--hold-total-bytes"),
        "the drop is not logged"
    );
    assert!(value(&node, "switchboard_messages_dropped_total") > 0.0);
    let mut rx2 = Receiver::open(
        node.addr,
        &held_tok,
        &[("Last-Event-ID", held_ids.last().unwrap())],
    );
    rx2.ready();
    let gap = rx2.next_event().expect("gap");
    assert_eq!(gap.event, "gap", "{:.120}", format!("{gap:?}"));
    assert_eq!(gap.json()["reason"], "memory_limit", "{gap:?}");
    let mut got = Vec::new();
    while got.len() < 24 {
        let Some(ev) = rx2.next_event_within(Duration::from_millis(500)) else {
            break;
        };
        assert_eq!(ev.event, "message", "{:.120}", format!("{ev:?}"));
        got.push((ev.json()["body"].as_str().unwrap().to_string(), ev.id));
    }
    assert!(
        !got.is_empty() && got.len() < 24,
        "{} of 24 replayed, expected the newest only",
        got.len()
    );
    let newest = &got[got.len() - 1];
    assert_eq!(newest.0, more[23]);
    assert_eq!(newest.1.as_ref(), Some(&more_ids[23]));
    // What was kept is the newest, in order, with nothing skipped after the gap.
    let from = 24 - got.len();
    for (k, (b, _)) in got.iter().enumerate() {
        assert_eq!(b, &more[from + k]);
    }
    assert!(value(&node, "switchboard_retained_bytes") <= LIMIT + BODY as f64);
}

/// The limit is the node's, not a share per worker: one worker may use all of
/// it while the other is empty, and what one worker retains counts when the
/// other decides what a held client may keep.
#[test]
fn the_limit_counts_every_worker_together() {
    let node = limited_node("2");
    // Two accounts whose clients live on different workers.
    let (live, held) = clients_on_two_workers(&node);
    let (live_console, mut rx1) = (live.console, live.rx);
    let (held_tok, held_console) = (held.tok, held.console);
    let first = receive_one_then_hold(&node, held.rx, &held_console, "agent-2");

    // The live client's worker fills three quarters of the whole limit (a
    // share per worker would have stopped it at half of that).
    for i in 0..40 {
        let b = body("live", i);
        send_ok(node.addr, &live_console, "agent-1", &b);
        rx1.expect_message("console-1", &b);
    }
    let mut retained = 0.0;
    assert!(
        wait_until(WAIT, || {
            retained = value(&node, "switchboard_retained_bytes");
            retained > LIMIT * 0.6 && retained <= LIMIT * 0.75
        }),
        "retained bytes {retained}: expected the live worker to fill three quarters of the node's limit"
    );

    // The held client on the other worker has room for what is left (about
    // 16 KB), not for its worker's own half: of 6 messages (24 KB) the oldest
    // go, and its stream says so.
    let more: Vec<String> = (0..6).map(|i| body("held", i)).collect();
    for b in &more {
        send_ok(node.addr, &held_console, "agent-2", b);
    }
    let mut rx2 = Receiver::open(node.addr, &held_tok, &[("Last-Event-ID", &first)]);
    rx2.ready();
    gap_then_newest(&mut rx2, &more);
}

/// Past the whole limit, the client held the longest loses its oldest
/// messages first, not the held client that is receiving: agent-1 (held
/// first), agent-2 and agent-3 (held last) hold 6 messages each, 18 in all,
/// more than the 16 that fit. agent-1's oldest go, with a `memory_limit`
/// gap at the head of its next stream; agent-2 and agent-3, though agent-3
/// received last, replay all of theirs.
#[test]
fn the_client_held_longest_loses_messages_first() {
    let node = limited_node("1");
    let console = token(ACCT, "console-1", Role::Console);
    let mut resume = Vec::new();
    for agent in ["agent-1", "agent-2", "agent-3"] {
        let tok = token(ACCT, agent, Role::Agent);
        let mut rx = Receiver::open(node.addr, &tok, &[]);
        rx.ready();
        let first = receive_one_then_hold(&node, rx, &console, agent);
        // Held in different milliseconds (see the test below).
        std::thread::sleep(Duration::from_millis(3));
        let bodies: Vec<String> = (0..6).map(|i| body(agent, i)).collect();
        for b in &bodies {
            send_ok(node.addr, &console, agent, b);
        }
        resume.push((tok, first, bodies));
    }
    assert!(
        node.wait_log("held client acme/agent-1 dropped"),
        "the drop is not logged, or names another client"
    );
    assert!(value(&node, "switchboard_retained_bytes") <= LIMIT);
    // The clients held later replay everything, newest held first.
    for (tok, first, bodies) in resume[1..].iter().rev() {
        let mut rx = Receiver::open(node.addr, tok, &[("Last-Event-ID", first)]);
        rx.ready();
        for b in bodies {
            rx.expect_message("console-1", b);
        }
    }
    // The one held longest lost its oldest messages, and is told so.
    let (tok, first, bodies) = &resume[0];
    let mut rx = Receiver::open(node.addr, tok, &[("Last-Event-ID", first)]);
    rx.ready();
    gap_then_newest(&mut rx, bodies);
}

/// The order is the node's, not each worker's: agent-1 of one account,
/// held first on one worker, loses its oldest messages when agent-2 of an
/// account on the other worker, held later, receives past the limit, and
/// agent-2 replays all of its own.
#[test]
fn the_client_held_longest_loses_messages_first_across_workers() {
    let node = limited_node("2");
    let (first, later) = clients_on_two_workers(&node);
    let (first_acct, first_tok, first_console) = (first.acct, first.tok, first.console);
    let (later_tok, later_console) = (later.tok, later.console);

    let first_id = receive_one_then_hold(&node, first.rx, &first_console, "agent-1");
    std::thread::sleep(Duration::from_millis(3));
    let first_bodies: Vec<String> = (0..8).map(|i| body("one", i)).collect();
    for b in &first_bodies {
        send_ok(node.addr, &first_console, "agent-1", b);
    }
    let later_id = receive_one_then_hold(&node, later.rx, &later_console, "agent-2");
    // 8 + 10 messages of 4 KB: two more than fit in 64 KiB.
    let later_bodies: Vec<String> = (0..10).map(|i| body("two", i)).collect();
    for b in &later_bodies {
        send_ok(node.addr, &later_console, "agent-2", b);
    }
    assert!(
        node.wait_log(&format!("held client {first_acct}/agent-1 dropped")),
        "the drop is not logged, or names another client"
    );
    wait_within_limit(&node);
    let mut rx2 = Receiver::open(node.addr, &later_tok, &[("Last-Event-ID", &later_id)]);
    rx2.ready();
    for b in &later_bodies {
        rx2.expect_message("console-1", b);
    }
    let mut rx1 = Receiver::open(node.addr, &first_tok, &[("Last-Event-ID", &first_id)]);
    rx1.ready();
    gap_then_newest(&mut rx1, &first_bodies);
}

/// A worker asked to make room holds less than asked (its held client has
/// only one small message): it drops that and asks the rest of the worker
/// whose client is held next, here the one that asked, so the node does not
/// stay past the limit.
#[test]
fn room_a_worker_cannot_make_is_made_by_the_next() {
    let node = limited_node("2");
    let (first, later) = clients_on_two_workers(&node);
    receive_one_then_hold(&node, first.rx, &first.console, "agent-1");
    std::thread::sleep(Duration::from_millis(3));
    let (later_tok, later_console) = (later.tok, later.console);
    let later_id = receive_one_then_hold(&node, later.rx, &later_console, "agent-2");
    // 17 messages of 4 KB: one more than fits.
    let bodies: Vec<String> = (0..17).map(|i| body("two", i)).collect();
    for b in &bodies {
        send_ok(node.addr, &later_console, "agent-2", b);
    }
    wait_within_limit(&node);
    let mut rx2 = Receiver::open(node.addr, &later_tok, &[("Last-Event-ID", &later_id)]);
    rx2.ready();
    gap_then_newest(&mut rx2, &bodies);
}

/// Messages to a connected client never push out a held client's: near the
/// limit, they go past it only until they are written, and then their replay
/// copies leave instead.
#[test]
fn live_traffic_near_the_limit_leaves_held_messages_alone() {
    let node = limited_node("1");
    let console = token(ACCT, "console-1", Role::Console);
    let held_tok = token(ACCT, "agent-2", Role::Agent);
    let mut rx2 = Receiver::open(node.addr, &held_tok, &[]);
    rx2.ready();
    let first = receive_one_then_hold(&node, rx2, &console, "agent-2");
    // 16 held messages: just under the 64 KiB limit.
    let held: Vec<String> = (0..16).map(|i| body("held", i)).collect();
    for b in &held {
        send_ok(node.addr, &console, "agent-2", b);
    }
    let mut rx1 = Receiver::open(node.addr, &token(ACCT, "agent-1", Role::Agent), &[]);
    rx1.ready();
    for i in 0..5 {
        let b = format!("live-{i}-{}", "z".repeat(1000));
        send_ok(node.addr, &console, "agent-1", &b);
        rx1.expect_message("console-1", &b);
    }
    assert_eq!(value(&node, "switchboard_messages_dropped_total"), 0.0);
    let mut rx2 = Receiver::open(node.addr, &held_tok, &[("Last-Event-ID", &first)]);
    rx2.ready();
    for b in &held {
        rx2.expect_message("console-1", b);
    }
}

/// The client held the longest keeps its place after it was emptied: when
/// it receives again, its new messages go before those of clients held
/// later.
#[test]
fn the_client_held_longest_stays_first_after_it_was_emptied() {
    let node = limited_node("1");
    let console = token(ACCT, "console-1", Role::Console);
    let mut resume = Vec::new();
    for agent in ["agent-1", "agent-2"] {
        let tok = token(ACCT, agent, Role::Agent);
        let mut rx = Receiver::open(node.addr, &tok, &[]);
        rx.ready();
        let first = receive_one_then_hold(&node, rx, &console, agent);
        // The order is by the millisecond a client became held; clients held
        // in the same one count as held together. These are held apart.
        std::thread::sleep(Duration::from_millis(3));
        resume.push((tok, first));
    }
    // agent-1 holds one message; agent-2's 16 fill the limit and push it out.
    send_ok(node.addr, &console, "agent-1", &body("one", 0));
    let second: Vec<String> = (0..16).map(|i| body("two", i)).collect();
    for b in &second {
        send_ok(node.addr, &console, "agent-2", b);
    }
    // agent-1, held first, receives 8 more: they make room for themselves
    // from agent-1's own messages, not from agent-2's.
    for i in 0..8 {
        send_ok(node.addr, &console, "agent-1", &body("more", i));
    }
    let (tok, first) = &resume[1];
    let mut rx = Receiver::open(node.addr, tok, &[("Last-Event-ID", first)]);
    rx.ready();
    for b in &second {
        rx.expect_message("console-1", b);
    }
    let (tok, first) = &resume[0];
    let mut rx = Receiver::open(node.addr, tok, &[("Last-Event-ID", first)]);
    rx.ready();
    let gap = rx.next_event().expect("gap");
    assert_eq!(gap.event, "gap", "{:.120}", format!("{gap:?}"));
    assert_eq!(gap.json()["reason"], "memory_limit", "{gap:?}");
}

/// What leaves by age leaves the count too: after `--hold`, a held client's
/// messages (delivered and undelivered) and its session are gone and the
/// retained bytes and messages are back to zero. (Logs dropped whole are
/// covered by the tally's unit tests in `server::retained`.)
#[test]
fn expired_messages_and_ended_sessions_leave_the_count() {
    let node = Node::start(&["--workers", "2", "--hold", "1s"]);
    let console = token(ACCT, "console-1", Role::Console);
    let agent = token(ACCT, "agent-1", Role::Agent);
    let mut rx = Receiver::open(node.addr, &agent, &[]);
    rx.ready();
    receive_one_then_hold(&node, rx, &console, "agent-1");
    send_ok(node.addr, &console, "agent-1", "never read");
    let mut m = Vec::new();
    assert!(
        wait_until(WAIT, || {
            m = metrics(&node);
            metric(&m, "switchboard_retained_messages", &[]) == Some(2.0)
        }),
        "two messages retained while held"
    );
    assert!(
        wait_until(WAIT, || {
            m = metrics(&node);
            metric(&m, "switchboard_retained_bytes", &[]) == Some(0.0)
                && metric(&m, "switchboard_retained_messages", &[]) == Some(0.0)
                && metric(&m, "switchboard_sessions", &[("state", "held")]) == Some(0.0)
        }),
        "retained messages not back to zero after --hold"
    );
}

/// The memory of held clients that never came back goes back to the kernel
/// soon after `--hold` ends their sessions, not at the next housekeeping
/// (every 10 s): the sessions' reaping counts as work, and a worker that has
/// gone quiet after work gives its free pages back. (jemalloc builds only:
/// glibc's malloc has no cheap heap totals.)
#[test]
fn memory_of_expired_held_clients_goes_back_soon() {
    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 12;
    const SIZE: usize = 60_000;
    let node = Node::start(&["--workers", "1", "--hold", "4s"]);
    let console = token(ACCT, "console-1", Role::Console);
    let dirty = |j: &serde_json::Value| {
        let h = &j["allocator"]["heap"];
        let get = |k: &str| h[k].as_u64().unwrap_or(0);
        get("resident").saturating_sub(get("active") + get("metadata"))
    };
    let j = admin_json(&node, "/debug/memory");
    if j["allocator"]["name"] != "jemalloc" {
        return;
    }
    // 16 clients held with 12 messages of 60 KB each: about 11.5 MB retained.
    let mut held = Vec::new();
    for i in 0..CLIENTS {
        let name = format!("agent-{i}");
        let mut rx = Receiver::open(node.addr, &token(ACCT, &name, Role::Agent), &[]);
        rx.ready();
        held.push((name, rx));
    }
    for (name, rx) in held {
        drop(rx);
        assert!(wait_state(node.addr, &console, &name, "held", WAIT));
        let bodies: Vec<String> = (0..PER_CLIENT).map(|k| body_of(&name, k, SIZE)).collect();
        send_burst(node.addr, &console, &name, &bodies);
    }
    // (Published by the worker once per loop iteration; the oldest may
    // already have expired on a slow machine.)
    let total = (CLIENTS * PER_CLIENT * SIZE) as u64;
    let mut retained = 0;
    assert!(
        wait_until(WAIT, || {
            retained = admin_json(&node, "/debug/memory")["retained_bytes"]
                .as_u64()
                .unwrap_or(0);
            retained >= total / 2
        }),
        "retained {retained} of {total}"
    );
    // The sessions end after --hold...
    let mut j = serde_json::Value::Null;
    assert!(
        wait_until(WAIT, || {
            j = admin_json(&node, "/debug/memory");
            j["sessions"] == 0 && j["retained_bytes"] == 0
        }),
        "sessions not reaped after --hold: {j}"
    );
    // ... and the pages their messages used are given back within a few
    // seconds (the worker settles 500 ms after its last work), not left
    // dirty until the next housekeeping.
    let mut left = u64::MAX;
    assert!(
        wait_until(Duration::from_secs(4), || {
            left = dirty(&admin_json(&node, "/debug/memory"));
            left < 2 << 20
        }),
        "{left} bytes of free heap pages still resident 4 s after the sessions ended"
    );
}

/// A body of `size` bytes that names its client and number.
fn body_of(client: &str, k: usize, size: usize) -> String {
    let head = format!("{client}-{k:03}-");
    format!("{head}{}", "y".repeat(size - head.len()))
}

/// A client whose delivered messages all expired (its log emptied and was
/// freed) and that resumes from an id before them is told why, with the
/// documented reason `retention_expired` (the reason used to leave with the
/// log).
#[test]
fn the_gap_reason_outlives_an_emptied_log() {
    let node = Node::start(&["--workers", "1", "--hold", "1s"]);
    let console = token(ACCT, "console-1", Role::Console);
    let tok = token(ACCT, "agent-1", Role::Agent);
    let mut rx = Receiver::open(node.addr, &tok, &[]);
    rx.ready();
    let id1 = send_ok(node.addr, &console, "agent-1", "m1");
    rx.expect_message("console-1", "m1");
    send_ok(node.addr, &console, "agent-1", "m2");
    rx.expect_message("console-1", "m2");
    assert!(
        wait_until(WAIT, || value(&node, "switchboard_retained_messages")
            == 0.0),
        "the delivered messages did not expire"
    );
    let mut again = Receiver::open(node.addr, &tok, &[("Last-Event-ID", &id1)]);
    again.ready();
    let gap = again.next_event().expect("gap");
    assert_eq!(gap.event, "gap", "{gap:?}");
    assert_eq!(gap.json()["after"], id1.as_str(), "{gap:?}");
    assert_eq!(gap.json()["reason"], "retention_expired", "{gap:?}");
    drop(rx);
}
