//! Failures: a node killed with SIGKILL, Redis going away and coming back,
//! and a dead node's presence expiring.

use super::*;

// ---------------------------------------------------------------------------
// 4. A node dies
// ---------------------------------------------------------------------------

#[test]
fn killed_node_sessions_are_lost_and_partners_told() {
    let redis = Redis::start();
    let mut a = cluster_node(&redis, "a", &[]);
    let b = cluster_node(&redis, "b", &[]);

    let (mut agent1, e1) = open(a.addr, "agent-1", &[]);
    let (mut agent2, e2) = open(a.addr, "agent-2", &[]);
    let (mut console, ce) = open(b.addr, "console-1", &[]);
    for c in ["agent-1", "agent-2", "console-1"] {
        wait_state_all(&[&a, &b], c, "online");
    }
    let last1 = send_ok(b.addr, &tok("console-1"), "agent-1", "hi 1");
    agent1.expect_message("console-1", "hi 1");
    relay(b.addr, "console-1", "agent-2", &mut agent2, &e2, "hi 2");
    relay(a.addr, "agent-1", "console-1", &mut console, &ce, "from 1");
    relay(a.addr, "agent-2", "console-1", &mut console, &ce, "from 2");
    assert_eq!(parse_id(&last1).0, e1);
    // agent-2's session is held (not open) when the node dies.
    drop(agent2);
    wait_state_all(&[&b], "agent-2", "held");

    let t = Instant::now();
    a.kill();
    drop(agent1);

    // agent-1 comes back on B at once: its session was on A, which is gone.
    let mut rx = Receiver::open(b.addr, &tok("agent-1"), &[("Last-Event-ID", &last1)]);
    rx.ready();
    let gap = rx
        .next_event_within(Duration::from_secs(5))
        .expect("no event after ready on B");
    assert_eq!(
        gap.event, "gap",
        "expected gap right after ready, got {gap:?}"
    );
    assert_eq!(gap.json()["reason"], "session_lost", "{gap:?}");
    assert_eq!(gap.json()["after"], last1.as_str(), "{gap:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "gap took {:?}",
        t.elapsed()
    );

    // The console on B learns that agent-2 (which did not come back) is gone.
    // (Whether it also hears about agent-1, which moved to B, is checked by
    // `reaper_spares_clients_that_moved_to_another_node`.)
    let mut seen = Vec::new();
    let ev = event_where(&mut console, Duration::from_secs(8), &mut seen, |e| {
        e.event == "peer-gone" && e.json()["peer"] == "agent-2"
    })
    .unwrap_or_else(|| panic!("no peer-gone for agent-2 within 8 s of the kill; saw {seen:?}"));
    assert_eq!(ev.json()["reason"], "node_lost", "{ev:?}");
    parse_id(ev.id.as_deref().expect("peer-gone carries an id"));
    let el = t.elapsed();
    assert!(
        el < Duration::from_secs(7),
        "peer-gone took {el:?} (node-ttl 2s)"
    );
    for e in &seen {
        assert!(
            is_peer_gone_of(e, "agent-1"),
            "unexpected event before peer-gone: {e:?}"
        );
    }

    // B keeps serving: agent-2 is offline, agent-1 (now on B) and a new client relay fine.
    assert!(
        wait_until(WAIT, || send(b.addr, &tok("console-1"), "agent-2", "x")
            .status
            == 404),
        "agent-2 on the dead node never became offline"
    );
    let (mut agent3, e3) = open(b.addr, "agent-3", &[]);
    relay(b.addr, "console-1", "agent-3", &mut agent3, &e3, "hello 3");
    let id = send_ok(b.addr, &tok("agent-3"), "console-1", "hello console");
    assert_eq!(parse_id(&id).0, ce);
    let ev = next_skipping_peer_gone(&mut console, "agent-1");
    assert_eq!(ev.event, "message", "{ev:?}");
    assert_eq!(ev.json()["from"], "agent-3", "{ev:?}");
    assert_eq!(ev.json()["body"], "hello console", "{ev:?}");
    assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    let id = send_ok(b.addr, &tok("console-1"), "agent-1", "after the loss");
    let ev = rx.expect_message("console-1", "after the loss");
    assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    assert_eq!(readyz(&b).0, 200);
}

// ---------------------------------------------------------------------------
// 5. Redis goes away and comes back
// ---------------------------------------------------------------------------

#[test]
fn redis_outage_and_recovery() {
    let mut redis = Redis::start();
    let a = cluster_node(&redis, "a", &[]);
    let b = cluster_node(&redis, "b", &[]);

    let (mut agent, ae) = open(a.addr, "agent-1", &[]);
    let (mut console1, c1e) = open(a.addr, "console-1", &[]);
    let (mut console2, c2e) = open(b.addr, "console-2", &[]);
    for c in ["agent-1", "console-1", "console-2"] {
        wait_state_all(&[&a, &b], c, "online");
    }
    relay(
        a.addr,
        "agent-1",
        "console-2",
        &mut console2,
        &c2e,
        "before",
    );
    assert_eq!(metric(&a, "switchboard_cluster_up"), Some(1.0));

    redis.kill();

    // Readiness and metrics say so.
    for n in [&a, &b] {
        assert!(
            wait_until(WAIT, || readyz(n) == (503, "cluster_unavailable".into())),
            "readyz on {}: {:?}",
            n.addr,
            readyz(n)
        );
    }
    assert_eq!(metric(&a, "switchboard_cluster_up"), Some(0.0));

    // A cross-node send fails fast with 503 instead of hanging, both ways.
    for (n, from, to) in [(&a, "agent-1", "console-2"), (&b, "console-2", "agent-1")] {
        let t = Instant::now();
        let r = send(n.addr, &tok(from), to, "during");
        let el = t.elapsed();
        assert_error(&r, 503, "cluster_unavailable");
        assert!(
            el < Duration::from_secs(3),
            "cross-node send took {el:?} without Redis"
        );
    }

    // Local relay on A still works.
    relay(
        a.addr,
        "agent-1",
        "console-1",
        &mut console1,
        &c1e,
        "local 1",
    );
    relay(a.addr, "console-1", "agent-1", &mut agent, &ae, "local 2");

    // Keep Redis away until both nodes' command connections noticed (a
    // heartbeat); a quicker restart is `requests_during_a_quick_redis_restart_are_answered`.
    for n in [&a, &b] {
        assert!(
            wait_until(WAIT, || commander_noticed_outage(n)),
            "node {} never noticed that Redis is gone",
            n.addr
        );
    }
    assert_eq!(readyz(&a).0, 503);

    // Redis comes back empty on the same port; the nodes re-join and re-announce.
    redis.restart();
    for n in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(15), || readyz(n).0 == 200),
            "node {} not ready again after Redis came back: {:?}",
            n.addr,
            readyz(n)
        );
    }
    assert_eq!(metric(&a, "switchboard_cluster_up"), Some(1.0));
    for c in ["agent-1", "console-1", "console-2"] {
        wait_state_all(&[&a, &b], c, "online");
    }
    relay(a.addr, "agent-1", "console-2", &mut console2, &c2e, "after");
    relay(b.addr, "console-2", "agent-1", &mut agent, &ae, "after 2");
}

// ---------------------------------------------------------------------------
// 6. Presence of a dead node expires
// ---------------------------------------------------------------------------

#[test]
fn dead_node_presence_expires() {
    let redis = Redis::start();
    let mut a = cluster_node(&redis, "a", &[]);
    let b = cluster_node(&redis, "b", &[]);
    let (_agent, _) = open(a.addr, "agent-1", &[]);
    let (held, _) = open(a.addr, "agent-2", &[]);
    drop(held);
    wait_state_all(&[&b], "agent-1", "online");
    wait_state_all(&[&b], "agent-2", "held");

    let t = Instant::now();
    a.kill();
    let gone = wait_until(Duration::from_secs(6), || {
        let list = clients(b.addr, &tok("console-1"));
        list.iter()
            .all(|c| c["client"] != "agent-1" && c["client"] != "agent-2")
    });
    let el = t.elapsed();
    assert!(
        gone,
        "B still lists A's clients {:?} after {el:?} (node-ttl 2s)",
        clients(b.addr, &tok("console-1"))
    );
    for c in ["agent-1", "agent-2"] {
        assert_error(
            &send(b.addr, &tok("console-1"), c, "anyone?"),
            404,
            "recipient_offline",
        );
    }
    eprintln!("dead node's presence gone after {el:?}");
}
