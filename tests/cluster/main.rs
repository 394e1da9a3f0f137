//! End-to-end tests of clustering: several real nodes joined through a real
//! `redis-server` (one per test, on a free loopback port): relaying across
//! nodes, the cluster-wide client list, session hand-over with Last-Event-ID,
//! a node killed with SIGKILL, Redis going away and coming back, stale presence
//! expiring, HAProxy balancing over two nodes, and WebSocket clients across
//! nodes (with tests/websocket/wsclient.rs).
//!
//! Needs `redis-server` and `haproxy` (tools/test installs them).

#[path = "../common/mod.rs"]
mod common;

mod failures;
mod haproxy;
mod ownership;
mod regressions;
mod relay;
mod websocket;
#[path = "../websocket/wsclient.rs"]
mod wsclient;

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

    /// Sends `signal` (e.g. "STOP", "CONT") to the server.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis is running").id();
        let ok = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {pid} failed");
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
    cluster_node_env(redis, id, extra, &[])
}

/// [`cluster_node`] with extra environment variables for the node.
fn cluster_node_env(redis: &Redis, id: &str, extra: &[&str], env: &[(&str, &str)]) -> Node {
    let url = redis.url();
    // Defaults for the tests; a flag given in `extra` replaces its default.
    let defaults = [
        ("--workers", "2"),
        ("--node-ttl", "2s"),
        ("--redis-timeout", "1s"),
    ];
    let mut args = vec!["--redis", &url, "--node-id", id];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    let node = Node::start_env(&args, env);
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
