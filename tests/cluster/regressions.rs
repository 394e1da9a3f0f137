//! Regression tests for server bugs this suite found.

use super::*;

// ---------------------------------------------------------------------------
// Server bugs found by this suite
// ---------------------------------------------------------------------------

/// A client that reconnected to B before A's presence was reaped is online on
/// B; the reaper must not announce it as gone.
#[test]
fn reaper_spares_clients_that_moved_to_another_node() {
    let redis = Redis::start();
    let mut a = cluster_node(&redis, "a", &[]);
    let b = cluster_node(&redis, "b", &[]);
    let (mut agent1, _) = open(a.addr, "agent-1", &[]);
    let (mut agent2, e2) = open(a.addr, "agent-2", &[]);
    let (mut console, ce) = open(b.addr, "console-1", &[]);
    for c in ["agent-1", "agent-2", "console-1"] {
        wait_state_all(&[&a, &b], c, "online");
    }
    send_ok(b.addr, &tok("console-1"), "agent-1", "hi 1");
    agent1.expect_message("console-1", "hi 1");
    relay(b.addr, "console-1", "agent-2", &mut agent2, &e2, "hi 2");
    relay(a.addr, "agent-1", "console-1", &mut console, &ce, "from 1");
    drop(agent2);
    wait_state_all(&[&b], "agent-2", "held");

    a.kill();
    drop(agent1);
    let (mut rx, e1) = open(b.addr, "agent-1", &[]);
    assert_eq!(rx.next_event().expect("gap").event, "gap");
    // agent-1 is online on B from now on.
    wait_state_all(&[&b], "agent-1", "online");

    // Wait for the reap (agent-2's peer-gone), then a marker from agent-1.
    let mut seen = Vec::new();
    event_where(&mut console, Duration::from_secs(8), &mut seen, |e| {
        is_peer_gone_of(e, "agent-2")
    })
    .unwrap_or_else(|| panic!("no peer-gone for agent-2; saw {seen:?}"));
    let id = send_ok(b.addr, &tok("agent-1"), "console-1", "still here");
    loop {
        let ev = console
            .next_event()
            .expect("stream ended before the marker");
        let done = ev.event == "message";
        seen.push(ev);
        if done {
            break;
        }
    }
    assert!(
        seen.iter().all(|e| !is_peer_gone_of(e, "agent-1")),
        "console was told agent-1 is gone although it is online on B: {seen:?}"
    );
    assert_eq!(seen.last().unwrap().id.as_deref(), Some(id.as_str()));
    assert_eq!(
        client_state(b.addr, &tok("console-1"), "agent-1").as_deref(),
        Some("online")
    );
    relay(b.addr, "console-1", "agent-1", &mut rx, &e1, "welcome back");
}

/// Redis restarts before a node's command connection noticed (between two
/// heartbeats): requests that need Redis right then must still be answered.
#[test]
fn requests_during_a_quick_redis_restart_are_answered() {
    let mut redis = Redis::start();
    let a = cluster_node(&redis, "a", &[]);
    let b = cluster_node(&redis, "b", &[]);
    let (_c1, _) = open(a.addr, "console-1", &[]);
    let (_c2, _) = open(b.addr, "console-2", &[]);
    for c in ["console-1", "console-2"] {
        wait_state_all(&[&a, &b], c, "online");
    }
    redis.restart();
    // For a while, every request that goes to Redis must get an answer (any status) promptly.
    let end = Instant::now() + Duration::from_millis(1500);
    let mut answers = Vec::new();
    while Instant::now() < end {
        for (n, to) in [(&a, "console-2"), (&b, "console-1")] {
            for (method, path, body) in [
                ("GET", "/v1/clients".to_string(), ""),
                ("POST", format!("/v1/send/{to}"), "ping"),
            ] {
                let mut h = Http::connect(n.addr);
                h.stream
                    .set_read_timeout(Some(Duration::from_secs(4)))
                    .unwrap();
                let t = Instant::now();
                let mut req = format!(
                    "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nAuthorization: Bearer {}\r\n\r\n{body}",
                    body.len(),
                    tok("agent-9")
                )
                .into_bytes();
                h.send_raw(&std::mem::take(&mut req));
                let r = h.read_response();
                let status = r.as_ref().map(|r| r.status);
                assert!(
                    status.is_some(),
                    "{method} {path} on {} got no answer within {:?} after Redis restarted ({} answered before: {:?})",
                    n.addr,
                    t.elapsed(),
                    answers.len(),
                    answers.iter().collect::<std::collections::BTreeSet<_>>()
                );
                answers.push(status.unwrap());
            }
        }
    }
}

/// A node remembers where it last sent a client's messages (for a second).
/// When the client moves to a third node, the first message after the move
/// goes to the old node, which answers "not here"; the sender's node then
/// looks the client up again and the message reaches the new node: 202 and
/// delivered exactly once, never a 404.
#[test]
fn cached_route_to_a_client_that_moved_is_looked_up_again() {
    let redis = Redis::start();
    let a = cluster_node(&redis, "a", &[]);
    let b = cluster_node(&redis, "b", &[]);
    let c = cluster_node(&redis, "c", &[]);
    // B knows C is alive (its list of live nodes is refreshed every heartbeat).
    let (mut probe, _) = open(c.addr, "probe-9", &[]);
    wait_state_all(&[&b], "probe-9", "online");
    assert!(
        wait_until(Duration::from_secs(5), || send(
            b.addr,
            &tok("console-9"),
            "probe-9",
            "ping"
        )
        .status
            == 202),
        "B never routed to C"
    );
    let _ = probe.expect_message("console-9", "ping");

    let (mut on_a, epoch) = open(a.addr, "agent-9", &[]);
    wait_state_all(&[&a, &b, &c], "agent-9", "online");
    // B learns (and caches) that agent-9 is on A.
    relay(b.addr, "console-9", "agent-9", &mut on_a, &epoch, "via b 1");
    relay(b.addr, "console-9", "agent-9", &mut on_a, &epoch, "via b 2");

    // agent-9 moves to C (the session is handed over from A).
    let (mut on_c, epoch_c) = open(c.addr, "agent-9", &[]);
    assert_eq!(epoch_c, epoch, "the session moved with its epoch");
    let ev = on_a
        .next_event_within(Duration::from_secs(5))
        .expect("connection on A got no replaced event");
    assert_eq!(ev.event, "replaced", "{ev:?}");
    // C's presence write lands (without it any node would still find A).
    assert!(
        wait_until(Duration::from_secs(3), || presence_node(&redis, "agent-9")
            .as_deref()
            == Some("c")),
        "presence never named c: {:?}",
        presence_node(&redis, "agent-9")
    );

    // B's cached route still says A; the answer must nevertheless be 202 and
    // the message must arrive on C, once.
    let id = send_ok(b.addr, &tok("console-9"), "agent-9", "after the move");
    let ev = next_skipping_peer_gone(&mut on_c, "console-9");
    assert_eq!(ev.event, "message", "{ev:?}");
    assert_eq!(ev.json()["body"], "after the move", "{ev:?}");
    assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    relay(
        b.addr,
        "console-9",
        "agent-9",
        &mut on_c,
        &epoch,
        "and the next",
    );
    assert!(
        on_c.next_event_within(Duration::from_millis(300)).is_none(),
        "a message arrived twice"
    );
}
