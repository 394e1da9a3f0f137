//! End-to-end tests of the receive stream's lifecycle: heartbeats, holding and
//! resuming with Last-Event-ID, gap reporting, replacement, peer-gone and the
//! detection of a killed client.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use switchboard::auth::Role;

const ACCT: &str = "acme";

struct Pair {
    agent_tok: String,
    console_tok: String,
}

fn pair() -> Pair {
    Pair {
        agent_tok: token(ACCT, "agent-1", Role::Agent),
        console_tok: token(ACCT, "console-1", Role::Console),
    }
}

/// Opens the agent's stream, receives `m1`, closes the stream, waits until the
/// agent is held and sends `bodies` meanwhile. Returns the id of `m1` and the
/// ids of the held messages.
fn receive_one_then_hold(node: &Node, p: &Pair, bodies: &[&str]) -> (String, Vec<String>) {
    let mut rx = Receiver::open(node.addr, &p.agent_tok, &[]);
    rx.ready();
    let id1 = send_ok(node.addr, &p.console_tok, "agent-1", "m1");
    let ev = rx.expect_message("console-1", "m1");
    assert_eq!(ev.id.as_deref(), Some(id1.as_str()));
    drop(rx);
    assert!(
        wait_state(node.addr, &p.console_tok, "agent-1", "held", WAIT),
        "agent not held after disconnect"
    );
    let ids = bodies
        .iter()
        .map(|b| send_ok(node.addr, &p.console_tok, "agent-1", b))
        .collect();
    (id1, ids)
}

/// Closes `rx` (the agent's stream) and waits until the agent is held.
fn drop_until_held(node: &Node, p: &Pair, rx: Receiver) {
    drop(rx);
    assert!(
        wait_state(node.addr, &p.console_tok, "agent-1", "held", WAIT),
        "agent not held after its stream closed"
    );
}

/// The number `i` of a message whose body starts with `m<i> `.
fn numbered(ev: &Event) -> Option<usize> {
    ev.json()["body"]
        .as_str()
        .and_then(|b| b.split(' ').next())
        .and_then(|m| m.strip_prefix('m'))
        .and_then(|i| i.parse().ok())
}

/// Reads the resumed stream: ready, then exactly the messages `bodies` with `ids`.
fn expect_replay(rx: &mut Receiver, bodies: &[&str], ids: &[String]) {
    for (b, id) in bodies.iter().zip(ids) {
        let ev = rx
            .next_event()
            .unwrap_or_else(|| panic!("stream ended before replay of {b:?}"));
        assert_eq!(ev.event, "message", "expected replay of {b:?}, got {ev:?}");
        assert_eq!(ev.json()["body"], *b, "replay out of order: {ev:?}");
        assert_eq!(ev.id.as_ref(), Some(id), "replayed message has another id");
    }
}

#[test]
fn heartbeat_within_interval() {
    let node = Node::start(&["--workers", "2", "--heartbeat", "1s"]);
    let p = pair();
    let mut rx = Receiver::open(node.addr, &p.agent_tok, &[]);
    let ready = rx.ready();
    assert_eq!(ready["heartbeat_ms"], 1000);
    for n in 1..=2 {
        let t = Instant::now();
        assert!(
            rx.wait_heartbeat(Duration::from_millis(2500)),
            "heartbeat {n} did not arrive within 2.5 s"
        );
        let el = t.elapsed();
        assert!(
            el >= Duration::from_millis(700),
            "heartbeat {n} came too early: {el:?}"
        );
    }
    // A message resets the idle clock but the stream keeps working.
    send_ok(node.addr, &p.console_tok, "agent-1", "between beats");
    rx.expect_message("console-1", "between beats");
    assert!(
        rx.wait_heartbeat(Duration::from_millis(2500)),
        "no heartbeat after a message"
    );
}

#[test]
fn hold_and_resume_with_last_event_id() {
    let node = Node::start(&["--workers", "4"]);
    let p = pair();
    let bodies = ["m2", "m3", "m4"];
    let (id1, ids) = receive_one_then_hold(&node, &p, &bodies);
    let (e1, s1) = parse_id(&id1);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            parse_id(id),
            (e1.clone(), s1 + 1 + i as u64),
            "held message ids are not consecutive"
        );
    }

    let mut rx = Receiver::open(node.addr, &p.agent_tok, &[("Last-Event-ID", &id1)]);
    let ready = rx.ready();
    assert_eq!(
        ready["epoch"].as_str(),
        Some(e1.as_str()),
        "the session's epoch changed while held"
    );
    expect_replay(&mut rx, &bodies, &ids);
    // No duplicates and no stray events: the next event is the next live message.
    let id5 = send_ok(node.addr, &p.console_tok, "agent-1", "m5");
    let ev = rx.expect_message("console-1", "m5");
    assert_eq!(ev.id.as_deref(), Some(id5.as_str()));
    assert_eq!(
        client_state(node.addr, &p.console_tok, "agent-1").as_deref(),
        Some("online")
    );
}

#[test]
fn reconnect_without_last_event_id_gets_held_messages() {
    let node = Node::start(&["--workers", "4"]);
    let p = pair();
    let bodies = ["h2", "h3", "h4"];
    let (_id1, ids) = receive_one_then_hold(&node, &p, &bodies);
    let mut rx = Receiver::open(node.addr, &p.agent_tok, &[]);
    rx.ready();
    expect_replay(&mut rx, &bodies, &ids);
    send_ok(node.addr, &p.console_tok, "agent-1", "live");
    rx.expect_message("console-1", "live");
}

#[test]
fn resume_with_last_event_id_query_parameter() {
    let node = Node::start(&["--workers", "4"]);
    let p = pair();
    let bodies = ["q2", "q3"];
    let (id1, ids) = receive_one_then_hold(&node, &p, &bodies);
    let path = format!("/v1/receive?last_event_id={id1}");
    let (mut rx, status) = Receiver::try_open(node.addr, &path, Some(&p.agent_tok), &[]);
    assert_eq!(status, 200, "{}", rx.head);
    rx.ready();
    expect_replay(&mut rx, &bodies, &ids);
    send_ok(node.addr, &p.console_tok, "agent-1", "q4");
    rx.expect_message("console-1", "q4");

    // Both the token and the resume point in the query string.
    drop_until_held(&node, &p, rx);
    let path = format!(
        "/v1/receive?access_token={}&last_event_id={}",
        p.agent_tok, ids[1]
    );
    let (mut rx, status) = Receiver::try_open(node.addr, &path, None, &[]);
    assert_eq!(status, 200, "{}", rx.head);
    rx.ready();
    // Resuming after q3 replays q4 (the resume point wins over what was already delivered).
    let ev = rx.next_event().expect("replay");
    assert_eq!(ev.event, "message");
    assert_eq!(
        ev.json()["body"],
        "q4",
        "resume after q3 must replay q4 only: {ev:?}"
    );
    send_ok(node.addr, &p.console_tok, "agent-1", "q5");
    rx.expect_message("console-1", "q5");
}

#[test]
fn gap_reported_when_hold_limit_drops_messages() {
    let node = Node::start(&["--workers", "4", "--hold-max-messages", "3"]);
    let p = pair();
    let bodies = ["g2", "g3", "g4", "g5", "g6", "g7"];
    let (id1, ids) = receive_one_then_hold(&node, &p, &bodies);
    let mut rx = Receiver::open(node.addr, &p.agent_tok, &[("Last-Event-ID", &id1)]);
    rx.ready();
    let gap = rx.next_event().expect("gap event");
    assert_eq!(
        gap.event, "gap",
        "first event after ready must be the gap: {gap:?}"
    );
    let g = gap.json();
    assert_eq!(
        g["after"],
        id1.as_str(),
        "gap starts after the client's last id: {g}"
    );
    assert_eq!(g["reason"], "hold_limit", "{g}");
    expect_replay(&mut rx, &bodies[3..], &ids[3..]);
    send_ok(node.addr, &p.console_tok, "agent-1", "g8");
    rx.expect_message("console-1", "g8");
}

#[test]
fn gap_reported_on_reconnect_without_id_after_drops() {
    let node = Node::start(&["--workers", "2", "--hold-max-messages", "2"]);
    let p = pair();
    let bodies = ["d2", "d3", "d4", "d5"];
    let (id1, ids) = receive_one_then_hold(&node, &p, &bodies);
    let mut rx = Receiver::open(node.addr, &p.agent_tok, &[]);
    rx.ready();
    let gap = rx.next_event().expect("gap event");
    assert_eq!(gap.event, "gap", "{gap:?}");
    assert_eq!(gap.json()["after"], id1.as_str());
    assert_eq!(gap.json()["reason"], "hold_limit");
    expect_replay(&mut rx, &bodies[2..], &ids[2..]);
}

#[test]
fn unknown_epoch_reports_gap() {
    let node = Node::start(&["--workers", "4"]);
    let p = pair();
    let mut rx = Receiver::open(node.addr, &p.agent_tok, &[]);
    let epoch = rx.ready()["epoch"].as_str().unwrap().to_string();
    let id1 = send_ok(node.addr, &p.console_tok, "agent-1", "u1");
    rx.expect_message("console-1", "u1");
    drop_until_held(&node, &p, rx);

    // An id from another incarnation of the session (different epoch).
    let other = if epoch == "1" {
        "2".to_string()
    } else {
        "1".to_string()
    };
    let stale = format!("{other}-1");
    let mut rx = Receiver::open(node.addr, &p.agent_tok, &[("Last-Event-ID", &stale)]);
    rx.ready();
    let gap = rx.next_event().expect("gap");
    assert_eq!(gap.event, "gap", "{gap:?}");
    assert_eq!(gap.json()["after"], stale.as_str());
    assert_eq!(gap.json()["reason"], "unknown_epoch");
    // Everything still retained is replayed after the gap.
    let ev = rx.expect_message("console-1", "u1");
    assert_eq!(ev.id.as_deref(), Some(id1.as_str()));
    drop_until_held(&node, &p, rx);

    // A Last-Event-ID that is not an id at all is treated the same way.
    let mut rx = Receiver::open(node.addr, &p.agent_tok, &[("Last-Event-ID", "garbage")]);
    rx.ready();
    let gap = rx.next_event().expect("gap");
    assert_eq!(gap.event, "gap", "{gap:?}");
    assert_eq!(gap.json()["reason"], "unknown_epoch");
}

fn replacement(extra: &[&str]) {
    let mut args = vec!["--workers", "4"];
    args.extend_from_slice(extra);
    let node = Node::start(&args);
    let p = pair();
    let mut first = Receiver::open(node.addr, &p.agent_tok, &[]);
    first.ready();
    let mut second = Receiver::open(node.addr, &p.agent_tok, &[]);
    let ready2 = second.ready();

    let ev = first
        .next_event_within(Duration::from_secs(3))
        .expect("first connection got no replaced event");
    assert_eq!(ev.event, "replaced", "{ev:?}");
    assert_eq!(
        ev.json()["session"],
        ready2["session"],
        "replaced names the new session"
    );
    let t = Instant::now();
    assert!(
        first.closed_within(Duration::from_secs(3)),
        "replaced connection was not closed within 3 s"
    );
    assert!(t.elapsed() < Duration::from_secs(3));

    send_ok(node.addr, &p.console_tok, "agent-1", "to the new one");
    second.expect_message("console-1", "to the new one");
    assert_eq!(
        client_state(node.addr, &p.console_tok, "agent-1").as_deref(),
        Some("online")
    );
}

#[test]
fn replacement_closes_old_connection() {
    // With a short heartbeat, so a close that waits for the next timer still passes.
    replacement(&["--heartbeat", "1s"]);
}

#[test]
fn replacement_closes_old_connection_promptly_with_default_heartbeat() {
    replacement(&[]);
}

#[test]
fn peer_gone_after_hold_expires() {
    let node = Node::start(&["--workers", "4", "--hold", "1s"]);
    let p = pair();
    let mut agent = Receiver::open(node.addr, &p.agent_tok, &[]);
    agent.ready();
    let mut console = Receiver::open(node.addr, &p.console_tok, &[]);
    console.ready();
    send_ok(node.addr, &p.console_tok, "agent-1", "hello agent");
    agent.expect_message("console-1", "hello agent");
    send_ok(node.addr, &p.agent_tok, "console-1", "hello console");
    console.expect_message("agent-1", "hello console");

    drop(console);
    let t = Instant::now();
    let deadline = t + Duration::from_secs(5);
    let left = deadline.saturating_duration_since(Instant::now());
    let ev = agent
        .next_event_within(left)
        .expect("no peer-gone within 5 s (stream ended or timed out)");
    assert_eq!(
        ev.event, "peer-gone",
        "unexpected event before peer-gone: {ev:?}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "peer-gone before the hold ran out: {:?}",
        t.elapsed()
    );
    let j = ev.json();
    assert_eq!(j["peer"], "console-1", "{j}");
    assert_eq!(j["reason"], "offline", "{j}");
    let (_, _) = parse_id(ev.id.as_deref().expect("peer-gone carries an id"));
    // The expired client is gone from the list and is offline for senders.
    assert!(wait_until(WAIT, || client_state(
        node.addr,
        &p.agent_tok,
        "console-1"
    )
    .is_none()));
    assert_error(
        &send(node.addr, &p.agent_tok, "console-1", "anyone?"),
        404,
        "recipient_offline",
    );
}

#[test]
fn no_peer_gone_without_conversation() {
    let node = Node::start(&["--workers", "4", "--hold", "1s"]);
    let p = pair();
    let mut agent = Receiver::open(node.addr, &p.agent_tok, &[]);
    agent.ready();
    let mut other = Receiver::open(node.addr, &token(ACCT, "console-2", Role::Console), &[]);
    other.ready();
    drop(other);
    assert!(
        wait_until(WAIT, || client_state(node.addr, &p.agent_tok, "console-2")
            .is_none()),
        "console-2 never expired"
    );
    // After the expiry, the first event the agent sees is a marker message, not peer-gone.
    send_ok(node.addr, &p.console_tok, "agent-1", "marker");
    agent.expect_message("console-1", "marker");
}

#[test]
fn killed_client_becomes_held_quickly() {
    let node = Node::start(&["--workers", "4"]);
    let p = pair();
    let url = format!("http://{}/v1/receive", node.addr);
    let mut child = Command::new("curl")
        .args([
            "-sN",
            "-H",
            &format!("Authorization: Bearer {}", p.agent_tok),
            &url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn curl");
    let online = wait_state(node.addr, &p.console_tok, "agent-1", "online", WAIT);
    if !online {
        let _ = child.kill();
        panic!("curl's receive connection never showed online");
    }
    let t = Instant::now();
    child.kill().expect("SIGKILL curl");
    child.wait().expect("reap curl");
    let held = wait_until(Duration::from_secs(3), || {
        client_state(node.addr, &p.console_tok, "agent-1").as_deref() == Some("held")
    });
    let el = t.elapsed();
    assert!(held, "killed client not held within 3 s");
    assert!(
        el < Duration::from_secs(1),
        "killed client took {el:?} to be held (limit 1 s)"
    );
    // Messages for it are held, and delivered when it comes back.
    send_ok(node.addr, &p.console_tok, "agent-1", "after kill");
    let mut rx = Receiver::open(node.addr, &p.agent_tok, &[]);
    rx.ready();
    rx.expect_message("console-1", "after kill");
}

#[test]
fn no_peer_gone_after_conversation_ttl() {
    let node = Node::start(&[
        "--workers",
        "4",
        "--hold",
        "1s",
        "--conversation-ttl",
        "1ms",
    ]);
    let p = pair();
    let mut agent = Receiver::open(node.addr, &p.agent_tok, &[]);
    agent.ready();
    let c2_tok = token(ACCT, "console-2", Role::Console);
    let mut c2 = Receiver::open(node.addr, &c2_tok, &[]);
    c2.ready();
    send_ok(node.addr, &c2_tok, "agent-1", "old news");
    agent.expect_message("console-2", "old news");
    drop(c2);
    assert!(
        wait_until(WAIT, || client_state(node.addr, &p.agent_tok, "console-2")
            .is_none()),
        "console-2 never expired"
    );
    // The conversation is older than the TTL when console-2 expires: no peer-gone.
    send_ok(node.addr, &p.console_tok, "agent-1", "marker");
    let ev = agent.next_event().expect("marker");
    assert_eq!(
        ev.event, "message",
        "unexpected {ev:?} (peer-gone despite an expired conversation?)"
    );
    assert_eq!(ev.json()["body"], "marker");
}

/// A client whose stream is replaced by a newer connection without
/// `Last-Event-ID` (an agent that reconnects before the gateway noticed
/// its old connection was dead) gets again what the old connection was
/// written and its TCP never confirmed: nothing is lost in between.
/// Before the replacement counted only confirmed bytes as delivered, the
/// new stream started after everything written to the old one, and the
/// messages stuck in the old socket were lost.
#[test]
fn replacement_without_id_gets_what_the_old_connection_never_confirmed() {
    let node = Node::start(&[]);
    let p = pair();
    // The old connection reads its ready event, then nothing: its small
    // receive window leaves most of what follows unacknowledged.
    let mut old = Receiver::open_small_rcvbuf(node.addr, &p.agent_tok, 4096);
    old.ready();
    let body = "x".repeat(1000);
    let n = 60;
    for i in 0..n {
        send_ok(
            node.addr,
            &p.console_tok,
            "agent-1",
            &format!("m{i} {body}"),
        );
    }
    let mut new = Receiver::open(node.addr, &p.agent_tok, &[]);
    new.ready();
    let mut got = std::collections::BTreeSet::new();
    let mut last = None;
    while last != Some(n - 1) {
        let ev = new
            .next_event()
            .expect("the new stream ended before the last message: messages written to the old connection and never confirmed were lost");
        assert_eq!(ev.event, "message", "{ev:?}");
        let i = numbered(&ev).expect("body");
        assert!(last.is_none_or(|l| i > l), "m{i} after m{last:?}");
        last = Some(i);
        got.insert(i);
    }
    // What the old connection still delivers, up to its `replaced`.
    while let Some(ev) = old.next_event() {
        if ev.event == "replaced" {
            break;
        }
        if let Some(i) = numbered(&ev) {
            got.insert(i);
        }
    }
    let missing: Vec<usize> = (0..n).filter(|i| !got.contains(i)).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
}

/// A client resuming with an id of an older session of its own (another
/// epoch) hears of it (`unknown_epoch`), and also of the current session's
/// first messages that left the log before it came: they were never handed
/// out. Before, it was told only of the old session, and the current one's
/// lost start went unsaid (found by the relay core's simulation).
#[test]
fn a_stale_id_also_hears_of_the_current_sessions_lost_start() {
    let node = Node::start(&["--workers", "2", "--hold-max-messages", "2"]);
    let p = pair();
    // The current session: opened without an id, closed, then four
    // messages while held, of which the limit keeps the last two.
    let mut rx = Receiver::open(node.addr, &p.agent_tok, &[]);
    let epoch = rx.ready()["epoch"].as_str().unwrap().to_string();
    drop_until_held(&node, &p, rx);
    let bodies = ["s1", "s2", "s3", "s4"];
    let ids: Vec<String> = bodies
        .iter()
        .map(|b| send_ok(node.addr, &p.console_tok, "agent-1", b))
        .collect();
    let other = if epoch == "1" { "2" } else { "1" };
    let stale = format!("{other}-9");
    let mut rx = Receiver::open(node.addr, &p.agent_tok, &[("Last-Event-ID", &stale)]);
    rx.ready();
    let first = rx.next_event().expect("gap");
    assert_eq!(first.event, "gap", "{first:?}");
    assert_eq!(first.json()["after"], stale.as_str());
    assert_eq!(first.json()["reason"], "unknown_epoch");
    let second = rx.next_event().expect("second gap");
    assert_eq!(
        second.event, "gap",
        "the current session's lost start must be told: {second:?}"
    );
    assert_eq!(second.json()["after"], format!("{epoch}-0").as_str());
    assert_eq!(second.json()["reason"], "hold_limit");
    expect_replay(&mut rx, &bodies[2..], &ids[2..]);
}
