//! End-to-end tests of clustering: several real nodes joined through a real
//! `redis-server` (one per test, on a free loopback port): relaying across
//! nodes, the cluster-wide client list, session hand-over with Last-Event-ID,
//! a node killed with SIGKILL, Redis going away and coming back, stale presence
//! expiring, and HAProxy balancing over two nodes.
//!
//! Needs `redis-server` and `haproxy` (tools/test installs them).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use switchboard::auth::Role;

const ACCT: &str = "acme";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// Finds an executable in PATH or in the sbin directories (haproxy lives in /usr/sbin).
fn find_exe(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/sbin",
        "/usr/local/sbin",
        "/sbin",
        "/usr/bin",
        "/usr/local/bin",
    ] {
        dirs.push(d.into());
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found in PATH or /usr/sbin; run tools/test to install it")
        })
}

/// True if something on `port` answers `PING` with `+PONG`.
fn redis_pings(port: u16) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// The node that Redis's presence table names for `client` of ACCT, if any.
fn presence_node(redis: &Redis, client: &str) -> Option<String> {
    let addr: SocketAddr = ([127, 0, 0, 1], redis.port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    s.write_all(format!("HGET sb:a:{ACCT} {client}\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    // A bulk reply: `$<len>\r\n<value>\r\n`, or `$-1\r\n` for none.
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if text.starts_with("$-1") {
            return None;
        }
        let mut lines = text.split("\r\n");
        if let (Some(_), Some(value), Some(_)) = (lines.next(), lines.next(), lines.next()) {
            return value.split('|').next().map(str::to_string);
        }
    }
}

/// A `redis-server` child process; killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    /// Starts a fresh Redis on a free port.
    fn start() -> Redis {
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = Redis::spawn(port) {
                return Redis {
                    child: Some(child),
                    port,
                };
            }
        }
        panic!("could not start redis-server");
    }

    /// Starts redis-server on `port`; `None` if it exited (e.g. the port was taken).
    fn spawn(port: u16) -> Option<Child> {
        let mut child = Command::new(find_exe("redis-server"))
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let up = wait_until(WAIT, || {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return true;
            }
            redis_pings(port)
        });
        if up && matches!(child.try_wait(), Ok(None)) {
            return Some(child);
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server (its data is lost).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts an empty server again on the same port.
    fn restart(&mut self) {
        self.kill();
        let end = Instant::now() + WAIT;
        while Instant::now() < end {
            if let Some(c) = Redis::spawn(self.port) {
                self.child = Some(c);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart redis-server on port {}", self.port);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a clustered node named `id` on `redis` with short timers, plus `extra`
/// flags, and waits until it is ready (joined the cluster).
fn cluster_node(redis: &Redis, id: &str, extra: &[&str]) -> Node {
    let url = redis.url();
    let mut args = vec![
        "--workers",
        "2",
        "--redis",
        &url,
        "--node-id",
        id,
        "--node-ttl",
        "2s",
        "--redis-timeout",
        "1s",
    ];
    args.extend_from_slice(extra);
    let node = Node::start(&args);
    assert!(
        wait_until(WAIT, || readyz(&node).0 == 200),
        "node {id} never became ready: {:?}\nlog:\n{}",
        readyz(&node),
        node.log.lock().unwrap()
    );
    node
}

fn admin_get(node: &Node, path: &str) -> Response {
    request(node.admin.expect("admin address"), "GET", path, None, b"")
}

/// Status and `reason` of the node's /readyz.
fn readyz(node: &Node) -> (u16, String) {
    let r = admin_get(node, "/readyz");
    let reason = serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|j| j["reason"].as_str().map(str::to_string))
        .unwrap_or_default();
    (r.status, reason)
}

/// The value of an unlabelled metric on the node's /metrics.
fn metric(node: &Node, name: &str) -> Option<f64> {
    let r = admin_get(node, "/metrics");
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body).lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

fn tok(client: &str) -> String {
    let role = if client.starts_with("agent") {
        Role::Agent
    } else {
        Role::Console
    };
    token(ACCT, client, role)
}

/// Sends and asserts 202; returns the id the sender got.
fn send_ok(addr: SocketAddr, from_tok: &str, to: &str, body: &str) -> String {
    let r = send(addr, from_tok, to, body);
    assert_eq!(
        r.status,
        202,
        "send {body:?} to {to} via {addr}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["id"].as_str().expect("id").to_string()
}

/// Opens a receive connection and reads `ready`; returns it with its epoch.
fn open(addr: SocketAddr, client: &str, headers: &[(&str, &str)]) -> (Receiver, String) {
    let mut rx = Receiver::open(addr, &tok(client), headers);
    let ready = rx.ready();
    assert_eq!(ready["client"], client);
    let epoch = ready["epoch"].as_str().expect("epoch").to_string();
    (rx, epoch)
}

/// Sends `body` and checks it arrives at `rx` with the id the sender got, in `epoch`.
fn relay(
    addr: SocketAddr,
    from: &str,
    to: &str,
    rx: &mut Receiver,
    epoch: &str,
    body: &str,
) -> u64 {
    let id = send_ok(addr, &tok(from), to, body);
    let (ep, seq) = parse_id(&id);
    assert_eq!(ep, epoch, "send id {id} is not in {to}'s epoch {epoch}");
    let ev = rx.expect_message(from, body);
    assert_eq!(
        ev.id.as_deref(),
        Some(id.as_str()),
        "SSE id differs from the send answer"
    );
    seq
}

/// Waits until every node in `nodes` lists `client` (of ACCT) with `state`.
fn wait_state_all(nodes: &[&Node], client: &str, state: &str) {
    for n in nodes {
        assert!(
            wait_state(n.addr, &tok("console-probe"), client, state, WAIT),
            "node {} never listed {client} as {state}; it lists {:?}",
            n.addr,
            clients(n.addr, &tok("console-probe"))
        );
    }
}

/// Reads events until one satisfies `pred`, or `timeout` runs out.
fn event_where(
    rx: &mut Receiver,
    timeout: Duration,
    seen: &mut Vec<Event>,
    mut pred: impl FnMut(&Event) -> bool,
) -> Option<Event> {
    let end = Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let ev = rx.next_event_within(left)?;
        if pred(&ev) {
            return Some(ev);
        }
        seen.push(ev);
    }
}

fn is_peer_gone_of(e: &Event, peer: &str) -> bool {
    e.event == "peer-gone" && e.json()["peer"] == peer
}

/// The next event that is not a peer-gone for `peer`.
fn next_skipping_peer_gone(rx: &mut Receiver, peer: &str) -> Event {
    loop {
        let ev = rx.next_event().expect("stream ended");
        if !is_peer_gone_of(&ev, peer) {
            return ev;
        }
    }
}

/// True once the node logged that its command connection to Redis failed.
fn commander_noticed_outage(node: &Node) -> bool {
    let log = node.log.lock().unwrap();
    log.contains("cluster: Redis command failed") || log.contains("cluster: cannot reach Redis at")
}

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

// ---------------------------------------------------------------------------
// 7. HAProxy in front of two nodes
// ---------------------------------------------------------------------------

/// An `haproxy` child process; killed on drop.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Haproxy {
    fn start(backends: &[SocketAddr]) -> Haproxy {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-haproxy-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        for _ in 0..5 {
            let port = free_port();
            let mut cfg = format!(
                "global\n  maxconn 1000\n\n\
                 defaults\n  mode http\n  option http-server-close\n  timeout connect 2s\n  \
                 timeout client 30s\n  timeout server 30s\n  timeout tunnel 1h\n\n\
                 frontend fe\n  bind 127.0.0.1:{port}\n  default_backend nodes\n\n\
                 backend nodes\n  balance roundrobin\n"
            );
            for (i, b) in backends.iter().enumerate() {
                cfg.push_str(&format!("  server n{i} {b}\n"));
            }
            let path = dir.0.join("haproxy.cfg");
            std::fs::write(&path, cfg).unwrap();
            let mut child = Command::new(find_exe("haproxy"))
                .arg("-f")
                .arg(&path)
                .arg("-db")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn haproxy");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let up = wait_until(WAIT, || {
                matches!(child.try_wait(), Ok(Some(_)))
                    || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
            if up && matches!(child.try_wait(), Ok(None)) {
                return Haproxy {
                    child,
                    addr,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start haproxy");
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn haproxy_in_front_of_two_nodes() {
    let redis = Redis::start();
    let a = cluster_node(&redis, "a", &[]);
    let b = cluster_node(&redis, "b", &[]);
    let lb = Haproxy::start(&[a.addr, b.addr]);

    let (mut agent, ae) = open(lb.addr, "agent-1", &[]);
    let (mut console, ce) = open(lb.addr, "console-1", &[]);
    for c in ["agent-1", "console-1"] {
        wait_state_all(&[&a, &b], c, "online");
    }
    let accepted = |n: &Node| metric(n, "switchboard_connections_accepted_total").unwrap_or(0.0);
    let (a0, b0) = (accepted(&a), accepted(&b));

    const N: usize = 6;
    let mut to_agent = Vec::new();
    let mut to_console = Vec::new();
    for i in 0..N {
        let id = send_ok(lb.addr, &tok("console-1"), "agent-1", &format!("c{i}"));
        assert_eq!(parse_id(&id).0, ae);
        to_agent.push(id);
        let id = send_ok(lb.addr, &tok("agent-1"), "console-1", &format!("a{i}"));
        assert_eq!(parse_id(&id).0, ce);
        to_console.push(id);
    }
    // Both nodes took some of the sends.
    let (a1, b1) = (accepted(&a), accepted(&b));
    assert!(
        a1 - a0 >= 2.0 && b1 - b0 >= 2.0,
        "sends did not reach both nodes: A +{}, B +{}",
        a1 - a0,
        b1 - b0
    );
    // Every message arrives exactly once, in order.
    for (i, id) in to_agent.iter().enumerate() {
        let ev = agent.expect_message("console-1", &format!("c{i}"));
        assert_eq!(ev.id.as_ref(), Some(id));
    }
    for (i, id) in to_console.iter().enumerate() {
        let ev = console.expect_message("agent-1", &format!("a{i}"));
        assert_eq!(ev.id.as_ref(), Some(id));
    }
    relay(
        lb.addr,
        "console-1",
        "agent-1",
        &mut agent,
        &ae,
        "last to agent",
    );
    relay(
        lb.addr,
        "agent-1",
        "console-1",
        &mut console,
        &ce,
        "last to console",
    );

    // The list through the balancer (whichever node answers) has both.
    for _ in 0..4 {
        let list = clients(lb.addr, &tok("console-1"));
        let got: Vec<(&str, &str)> = list
            .iter()
            .map(|c| (c["client"].as_str().unwrap(), c["state"].as_str().unwrap()))
            .collect();
        assert_eq!(got, vec![("agent-1", "online"), ("console-1", "online")]);
    }
}

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
