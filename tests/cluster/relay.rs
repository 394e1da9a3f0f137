//! Relaying across nodes, the cluster-wide client list, and session
//! hand-over to another node with Last-Event-ID.

use super::*;

// ---------------------------------------------------------------------------
// 1. Relay across nodes
// ---------------------------------------------------------------------------

#[test]
fn cross_node_relay_both_ways() {
    let redis = Redis::start();
    let a = cluster_node(&redis, "a", &[]);
    let b = cluster_node(&redis, "b", &[]);

    let (mut agent, agent_epoch) = open(a.addr, "agent-1", &[]);
    let (mut console, console_epoch) = open(b.addr, "console-1", &[]);
    wait_state_all(&[&a, &b], "agent-1", "online");
    wait_state_all(&[&a, &b], "console-1", "online");

    // Console (on B) -> agent (on A) via B, and the reverse via A; then via the
    // "wrong" node for each sender as well.
    let mut last_agent = 0;
    let mut last_console = 0;
    for i in 0..3 {
        let s = relay(
            b.addr,
            "console-1",
            "agent-1",
            &mut agent,
            &agent_epoch,
            &format!("to agent {i}"),
        );
        assert!(
            s > last_agent,
            "agent ids not increasing: {s} after {last_agent}"
        );
        last_agent = s;
        let s = relay(
            a.addr,
            "agent-1",
            "console-1",
            &mut console,
            &console_epoch,
            &format!("to console {i}"),
        );
        assert!(s > last_console, "console ids not increasing");
        last_console = s;
    }
    // A sender's own node does not matter: send through the recipient's node too.
    relay(
        a.addr,
        "console-1",
        "agent-1",
        &mut agent,
        &agent_epoch,
        "local to A",
    );
    relay(
        b.addr,
        "agent-1",
        "console-1",
        &mut console,
        &console_epoch,
        "local to B",
    );

    // Nobody called that on any node.
    for n in [&a, &b] {
        assert_error(
            &send(n.addr, &tok("console-1"), "ghost", "hi"),
            404,
            "recipient_offline",
        );
    }

    // Accounts stay apart across nodes.
    let beta_agent = token("beta", "agent-b", Role::Agent);
    let beta_console = token("beta", "console-b", Role::Console);
    let mut b_agent = Receiver::open(b.addr, &beta_agent, &[]);
    b_agent.ready();
    assert!(wait_state(a.addr, &beta_console, "agent-b", "online", WAIT));
    // acme cannot reach beta's agent from either node, even by the same name.
    assert_error(
        &send(a.addr, &tok("console-1"), "agent-b", "x"),
        404,
        "recipient_offline",
    );
    assert_error(
        &send(b.addr, &tok("console-1"), "agent-b", "x"),
        404,
        "recipient_offline",
    );
    // beta cannot reach acme's agent on A.
    assert_error(
        &send(b.addr, &beta_console, "agent-1", "x"),
        404,
        "recipient_offline",
    );
    // Lists are per account on every node.
    for n in [&a, &b] {
        let acme: Vec<_> = clients(n.addr, &tok("console-1"));
        let names: Vec<&str> = acme.iter().map(|c| c["client"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            vec!["agent-1", "console-1"],
            "acme list on {}",
            n.addr
        );
        let beta: Vec<_> = clients(n.addr, &beta_console);
        let names: Vec<&str> = beta.iter().map(|c| c["client"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["agent-b"], "beta list on {}", n.addr);
    }
    // beta's own cross-node relay works, and is the first thing its agent sees.
    let id = send_ok(a.addr, &beta_console, "agent-b", "for beta");
    let ev = b_agent.expect_message("console-b", "for beta");
    assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    // And nothing of beta's reached acme's agent: its next event is the marker.
    relay(
        b.addr,
        "console-1",
        "agent-1",
        &mut agent,
        &agent_epoch,
        "marker",
    );
}

// ---------------------------------------------------------------------------
// 2. Cluster-wide client list
// ---------------------------------------------------------------------------

/// Sends pipelined on one connection to a client on this node and to one on
/// another node: while Redis is stopped (SIGSTOP), the local send behind a
/// cross-node one is delivered before the cross-node answer is written; once
/// Redis continues, every answer comes, in request order, and every message
/// arrives.
#[test]
fn a_send_to_another_node_does_not_hold_up_the_local_sends_pipelined_behind_it() {
    let redis = Redis::start();
    // One worker: every send starts on the worker that owns its recipient, and a
    // long Redis timeout, so the stop below cannot turn into a 503.
    let a = cluster_node(&redis, "a", &["--workers", "1", "--redis-timeout", "10s"]);
    let b = cluster_node(&redis, "b", &["--redis-timeout", "10s"]);
    let (mut near, near_epoch) = open(a.addr, "agent-1", &[]);
    let (mut far, far_epoch) = open(b.addr, "agent-2", &[]);
    wait_state_all(&[&a, &b], "agent-1", "online");
    wait_state_all(&[&a, &b], "agent-2", "online");
    let console = tok("console-1");
    let mut http = Http::connect(a.addr);
    redis.signal("STOP");
    let batch = [
        send_text("agent-2", &console, "far 1"),
        send_text("agent-1", &console, "near 1"),
        send_text("agent-2", &console, "far 2"),
        send_text("agent-1", &console, "near 2"),
    ]
    .concat();
    http.send_raw(batch.as_bytes());
    near.expect_message("console-1", "near 1");
    near.expect_message("console-1", "near 2");
    http.stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let early = http.stream.peek(&mut byte);
    http.stream.set_nonblocking(false).unwrap();
    redis.signal("CONT");
    assert!(
        early.is_err(),
        "an answer came before the cross-node one ({early:?})"
    );
    for (to, epoch) in [
        ("far 1", &far_epoch),
        ("near 1", &near_epoch),
        ("far 2", &far_epoch),
        ("near 2", &near_epoch),
    ] {
        let r = http
            .read_response()
            .unwrap_or_else(|| panic!("no answer to {to:?}"));
        assert_eq!(r.status, 202, "{to:?}: {}", r.head);
        let id = r.json()["id"].as_str().expect("id").to_string();
        assert!(id.starts_with(&format!("{epoch}-")), "{to:?}: id {id}");
    }
    far.expect_message("console-1", "far 1");
    far.expect_message("console-1", "far 2");
}

#[test]
fn client_list_spans_the_cluster() {
    let redis = Redis::start();
    let a = cluster_node(&redis, "a", &["--hold", "30s"]);
    let b = cluster_node(&redis, "b", &["--hold", "30s"]);
    let c = cluster_node(&redis, "c", &["--hold", "30s"]);
    let nodes = [&a, &b, &c];

    let (_agent1, _) = open(a.addr, "agent-1", &[]);
    let (_console1, _) = open(b.addr, "console-1", &[]);
    let (agent2, _) = open(c.addr, "agent-2", &[]);

    let expect = |n: &Node, states: [&str; 3]| -> bool {
        let list = clients(n.addr, &tok("console-1"));
        let got: Vec<(String, String, String)> = list
            .iter()
            .map(|c| {
                (
                    c["client"].as_str().unwrap().to_string(),
                    c["role"].as_str().unwrap().to_string(),
                    c["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String, String)> = [
            ("agent-1", "agent", states[0]),
            ("agent-2", "agent", states[1]),
            ("console-1", "console", states[2]),
        ]
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
        got == want
    };
    for n in nodes {
        assert!(
            wait_until(WAIT, || expect(n, ["online", "online", "online"])),
            "node {} lists {:?}",
            n.addr,
            clients(n.addr, &tok("console-1"))
        );
    }

    drop(agent2);
    for n in nodes {
        assert!(
            wait_until(WAIT, || expect(n, ["online", "held", "online"])),
            "node {} does not list agent-2 as held: {:?}",
            n.addr,
            clients(n.addr, &tok("console-1"))
        );
    }
    // A held client on C is still reachable from A and B.
    assert_eq!(
        send(a.addr, &tok("console-1"), "agent-2", "while away").status,
        202
    );
    assert_eq!(
        send(b.addr, &tok("console-1"), "agent-2", "while away 2").status,
        202
    );
}

// ---------------------------------------------------------------------------
// 3. Hand-over to another node
// ---------------------------------------------------------------------------

/// A JSON body keeps its form across nodes: sent to a client on another
/// node (`Wire::Deliver`), and held there, then handed over to the node the
/// client comes back to (the session snapshot) and replayed.
#[test]
fn json_bodies_stay_json_across_nodes() {
    let redis = Redis::start();
    let a = cluster_node(&redis, "a", &[]);
    let b = cluster_node(&redis, "b", &[]);
    let pretty = "{\n  \"cmd\": \"backup\",\n  \"paths\": [\"/etc\", \"/a b\"]\n}\n";
    let compact = "{\"cmd\":\"backup\",\"paths\":[\"/etc\",\"/a b\"]}";
    let value: serde_json::Value = serde_json::from_str(pretty).expect("JSON");

    let (mut rx, _) = open(a.addr, "agent-1", &[]);
    wait_state_all(&[&a, &b], "agent-1", "online");
    let id1 = curl_send_json(b.addr, &tok("console-1"), "agent-1", pretty);
    let ev = rx.expect_json_message("console-1", &value, compact);
    assert_eq!(ev.id.as_deref(), Some(id1.as_str()));
    drop(rx);
    wait_state_all(&[&a, &b], "agent-1", "held");

    // Held on A, sent through B and through A.
    let id2 = curl_send_json(b.addr, &tok("console-1"), "agent-1", pretty);
    let id3 = curl_send_json(a.addr, &tok("console-1"), "agent-1", "[1,\n2]");
    let mut rx = Receiver::open(b.addr, &tok("agent-1"), &[("Last-Event-ID", &id1)]);
    assert_eq!(rx.ready()["node"], "b");
    let ev = rx.expect_json_message("console-1", &value, compact);
    assert_eq!(ev.id.as_deref(), Some(id2.as_str()));
    let two: serde_json::Value = serde_json::from_str("[1,2]").expect("JSON");
    let ev = rx.expect_json_message("console-1", &two, "[1,2]");
    assert_eq!(ev.id.as_deref(), Some(id3.as_str()));
    // Now live on B, sent through A.
    wait_state_all(&[&a, &b], "agent-1", "online");
    curl_send_json(a.addr, &tok("console-1"), "agent-1", pretty);
    rx.expect_json_message("console-1", &value, compact);
}

#[test]
fn resume_on_another_node_gets_exactly_the_held_messages() {
    let redis = Redis::start();
    let a = cluster_node(&redis, "a", &[]);
    let b = cluster_node(&redis, "b", &[]);

    let (mut rx, epoch) = open(a.addr, "agent-1", &[]);
    wait_state_all(&[&a, &b], "agent-1", "online");
    let id1 = send_ok(b.addr, &tok("console-1"), "agent-1", "m1");
    let ev = rx.expect_message("console-1", "m1");
    assert_eq!(ev.id.as_deref(), Some(id1.as_str()));
    drop(rx);
    wait_state_all(&[&a, &b], "agent-1", "held");

    let bodies = ["m2", "m3", "m4"];
    let ids = vec![
        send_ok(b.addr, &tok("console-1"), "agent-1", "m2"),
        send_ok(a.addr, &tok("console-1"), "agent-1", "m3"),
        send_ok(b.addr, &tok("console-1"), "agent-1", "m4"),
    ];
    for id in &ids {
        assert_eq!(
            parse_id(id).0,
            epoch,
            "held message id {id} not in epoch {epoch}"
        );
    }

    let mut rx = Receiver::open(b.addr, &tok("agent-1"), &[("Last-Event-ID", &id1)]);
    let ready = rx.ready();
    assert_eq!(ready["node"], "b", "{ready}");
    assert_eq!(
        ready["epoch"],
        epoch.as_str(),
        "epoch not handed over: {ready}"
    );
    for (body, id) in bodies.iter().zip(&ids) {
        let ev = rx
            .next_event()
            .unwrap_or_else(|| panic!("stream ended before replay of {body}"));
        assert_eq!(ev.event, "message", "expected replay of {body}, got {ev:?}");
        assert_eq!(ev.json()["body"], *body, "replay out of order: {ev:?}");
        assert_eq!(ev.id.as_ref(), Some(id), "replayed {body} has another id");
    }
    // The session now lives on B: the list says so (online), and a live message
    // sent through A follows it there, right after the replay.
    wait_state_all(&[&a, &b], "agent-1", "online");
    let id5 = send_ok(a.addr, &tok("console-1"), "agent-1", "m5");
    let ev = rx.expect_message("console-1", "m5");
    assert_eq!(ev.id.as_deref(), Some(id5.as_str()));
    let (e5, s5) = parse_id(&id5);
    assert_eq!(e5, epoch);
    assert_eq!(s5, parse_id(&ids[2]).1 + 1, "m5 does not follow m4");
    drop(rx);

    // An open connection on A is replaced by a new one on B.
    let (mut first, _) = open(a.addr, "agent-2", &[]);
    wait_state_all(&[&b], "agent-2", "online");
    let (mut second, _) = open(b.addr, "agent-2", &[]);
    let ev = first
        .next_event_within(Duration::from_secs(5))
        .expect("connection on A got no replaced event");
    assert_eq!(ev.event, "replaced", "{ev:?}");
    assert!(
        first.closed_within(Duration::from_secs(3)),
        "replaced connection on A was not closed"
    );
    // Until B's presence write lands, A may still answer 404 (nothing is
    // delivered then); once accepted, the message reaches B exactly once.
    let t = Instant::now();
    let mut id = None;
    assert!(
        wait_until(Duration::from_secs(3), || {
            let r = send(a.addr, &tok("console-1"), "agent-2", "to the new one");
            match r.status {
                202 => id = r.json()["id"].as_str().map(str::to_string),
                404 => {}
                s => panic!(
                    "send via A after the hand-over: {s} {:?}",
                    String::from_utf8_lossy(&r.body)
                ),
            }
            id.is_some()
        }),
        "A never routed to agent-2 on B after the hand-over"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    let ev = second.expect_message("console-1", "to the new one");
    assert_eq!(ev.id, id);
    relay(
        a.addr,
        "console-1",
        "agent-2",
        &mut second,
        &parse_id(id.as_deref().unwrap()).0,
        "and another",
    );
}
