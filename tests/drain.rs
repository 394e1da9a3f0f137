//! End-to-end tests of drain-and-die: on SIGTERM every receive connection is
//! told to reconnect elsewhere (spread over --drain-timeout), no accepted
//! message is lost, new connections are refused, and the process exits 0; a
//! second signal exits at once.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitStatus;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use switchboard::auth::Role;

const ACCT: &str = "drain";

fn signal(node: &Node, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(node.child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({sig}) failed");
}

/// Waits up to `timeout` for the node to exit; returns its status.
fn wait_exit(node: &mut Node, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(timeout, || {
        status = node.child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// Waits until every worker logged that it started draining.
fn wait_draining(node: &Node, workers: usize) {
    for w in 0..workers {
        assert!(
            node.wait_log(&format!("worker {w}: draining")),
            "worker {w} never started draining; log:\n{}",
            node.log.lock().unwrap()
        );
    }
}

/// One SSE block as it arrived: its raw lines (comments dropped) and when.
#[derive(Debug, Clone)]
struct Block {
    at: Instant,
    lines: Vec<String>,
}

impl Block {
    fn field(&self, name: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| {
            let (f, v) = l.split_once(':')?;
            (f == name).then(|| v.strip_prefix(' ').unwrap_or(v))
        })
    }
    fn event(&self) -> &str {
        self.field("event").unwrap_or("")
    }
    fn data_json(&self) -> serde_json::Value {
        let d = self
            .field("data")
            .unwrap_or_else(|| panic!("no data in {self:?}"));
        serde_json::from_str(d).unwrap_or_else(|e| panic!("data is not JSON: {e}: {d:?}"))
    }
}

/// What a receive connection saw until the server closed it.
#[derive(Debug)]
struct Stream {
    blocks: Vec<Block>,
    /// When EOF (or a reset) arrived; `None` if the read timed out first.
    eof: Option<Instant>,
}

impl Stream {
    fn reconnect_index(&self) -> Option<usize> {
        self.blocks.iter().position(|b| b.event() == "reconnect")
    }
    /// Message bodies that arrived before the reconnect event.
    fn messages_before_reconnect(&self) -> Vec<String> {
        let end = self.reconnect_index().unwrap_or(self.blocks.len());
        self.blocks[..end]
            .iter()
            .filter(|b| b.event() == "message")
            .map(|b| b.data_json()["body"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// A raw SSE receive connection (keeps `retry:` fields and arrival times;
/// the chunked body decoded by the tests' own decoder).
struct RawReceiver {
    stream: TcpStream,
    reader: StreamBody,
}

impl RawReceiver {
    /// Opens `GET /v1/receive` for `client` and reads up to the `ready` event.
    fn open(addr: SocketAddr, client: &str) -> RawReceiver {
        let tok = token(ACCT, client, Role::Agent);
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET /v1/receive HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nAuthorization: Bearer {tok}\r\n\r\n"
        )
        .unwrap();
        let stream = s.try_clone().expect("clone");
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut l = String::new();
            reader.read_line(&mut l).unwrap();
            if l == "\r\n" || l.is_empty() {
                break;
            }
            head.push_str(&l);
        }
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "receive refused: {head:?}"
        );
        let reader = BufReader::new(Body::after_head(&head, reader));
        let mut r = RawReceiver { stream, reader };
        // The first block is the ready event, with the `retry:` field in it.
        let b = r.next_block().expect("stream ended before the ready event");
        assert_eq!(b.event(), "ready", "{b:?}");
        assert_eq!(b.field("retry"), Some("2000"), "{b:?}");
        r
    }

    /// The next block, or `None` on EOF / error / timeout.
    fn next_block(&mut self) -> Option<Block> {
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            match self.reader.read_line(&mut l) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let l = l.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if !lines.is_empty() {
                    return Some(Block {
                        at: Instant::now(),
                        lines,
                    });
                }
                continue;
            }
            if !l.starts_with(':') {
                lines.push(l.to_string());
            }
        }
    }

    /// Reads on a thread until the server closes the stream (or `limit` passes).
    fn collect(mut self, limit: Duration) -> JoinHandle<Stream> {
        std::thread::spawn(move || {
            self.stream.set_read_timeout(Some(limit)).unwrap();
            let mut blocks = Vec::new();
            while let Some(b) = self.next_block() {
                blocks.push(b);
            }
            // Distinguish EOF from a timeout: a timed-out read leaves the socket open.
            // (After a chunked stream's last chunk, the socket's own end.)
            let mut buf = [0u8; 64];
            let rest = if self.reader.get_ref().ended() {
                self.stream.read(&mut buf)
            } else {
                self.reader.read(&mut buf)
            };
            let eof = match rest {
                Ok(0) => Some(Instant::now()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(Instant::now()),
                _ => None,
            };
            Stream { blocks, eof }
        })
    }
}

/// Asserts the stream ended with `retry:` then `event: reconnect` (data with
/// retry_ms) and then EOF; returns when the reconnect event arrived.
fn check_reconnect(who: &str, s: &Stream) -> Instant {
    let i = s
        .reconnect_index()
        .unwrap_or_else(|| panic!("{who}: no reconnect event: {s:?}"));
    let ev = &s.blocks[i];
    let data = ev.data_json();
    let retry_ms = data["retry_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("{who}: reconnect data without retry_ms: {data}"));
    assert!(retry_ms > 0, "{who}: retry_ms {retry_ms}");
    // The `retry:` field is in the event's own block (a block of its own
    // would be an empty `message` to some client libraries).
    let retry_field = ev
        .field("retry")
        .unwrap_or_else(|| panic!("{who}: no retry: field in the reconnect event: {s:?}"));
    assert_eq!(
        retry_field.parse::<u64>().ok(),
        Some(retry_ms),
        "{who}: retry: field vs retry_ms"
    );
    assert_eq!(
        i + 1,
        s.blocks.len(),
        "{who}: events after reconnect: {:?}",
        &s.blocks[i..]
    );
    assert!(s.eof.is_some(), "{who}: stream not closed after reconnect");
    ev.at
}

/// True if a new client connection is refused: connect fails, or the server
/// closes it (or answers non-200) instead of opening a stream.
fn new_connection_refused(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return true;
    };
    let tok = token(ACCT, "late-comer", Role::Agent);
    if write!(
        s,
        "GET /v1/receive HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n"
    )
    .is_err()
    {
        return true;
    }
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => !String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

#[test]
fn drain_tells_receivers_to_reconnect_spread_out_then_exits_0() {
    let mut node = Node::start(&["--workers", "2", "--drain-timeout", "3s"]);
    let receivers: Vec<RawReceiver> = (0..6)
        .map(|i| RawReceiver::open(node.addr, &format!("agent-{i}")))
        .collect();
    let streams: Vec<_> = receivers.into_iter().map(|r| r.collect(WAIT)).collect();

    let t0 = Instant::now();
    signal(&node, libc::SIGTERM);
    wait_draining(&node, 2);
    assert!(
        new_connection_refused(node.addr),
        "a new connection was served while draining"
    );

    let streams: Vec<Stream> = streams.into_iter().map(|h| h.join().unwrap()).collect();
    let times: Vec<Instant> = streams
        .iter()
        .enumerate()
        .map(|(i, s)| check_reconnect(&format!("agent-{i}"), s))
        .collect();
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    assert!(
        last - first >= Duration::from_secs(1),
        "reconnect notices not spread out: all within {:?} (after SIGTERM: {:?})",
        last - first,
        times.iter().map(|t| *t - t0).collect::<Vec<_>>()
    );
    assert!(
        last - t0 <= Duration::from_millis(3500),
        "last reconnect notice {:?} after SIGTERM (drain timeout 3s)",
        last - t0
    );

    let status = wait_exit(
        &mut node,
        Duration::from_secs(4).saturating_sub(t0.elapsed()) + Duration::from_millis(500),
    )
    .unwrap_or_else(|| panic!("node still running {:?} after SIGTERM", t0.elapsed()));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after drain: {status:?}"
    );
    let log = node.log.lock().unwrap().clone();
    assert!(log.contains("drained"), "no 'drained' in the log:\n{log}");
}

/// A send connection whose request head (and part of nothing else) is already
/// with the server: the body is withheld until `finish`.
struct StagedSend {
    stream: TcpStream,
    body: String,
}

impl StagedSend {
    fn new(addr: SocketAddr, to: &str, body: &str) -> StagedSend {
        let tok = token(ACCT, "console-1", Role::Console);
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            stream,
            "POST /v1/send/{to} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        StagedSend {
            stream,
            body: body.to_string(),
        }
    }

    /// Sends the body; returns the answer's status, or `None` if the
    /// connection was closed without an answer.
    fn finish(self) -> Option<u16> {
        self.finish_head().map(|(s, _)| s)
    }

    /// Sends the body; returns the answer's status and head.
    fn finish_head(mut self) -> Option<(u16, String)> {
        if self.stream.write_all(self.body.as_bytes()).is_err() {
            return None;
        }
        let mut r = BufReader::new(self.stream);
        let mut head = String::new();
        loop {
            let mut l = String::new();
            match r.read_line(&mut l) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
            if l == "\r\n" {
                break;
            }
            head.push_str(&l);
        }
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, head))
    }
}

/// Waits until the server has read the heads of `n` send connections (they are
/// then mid-request, which a drain lets finish).
fn wait_staged(node: &Node, locals: &[SocketAddr]) {
    let admin = node.admin.unwrap();
    let ok = wait_until(WAIT, || {
        let r = request(admin, "GET", "/connections?limit=1000", None, b"");
        let j = r.json();
        let list = j["connections"].as_array().cloned().unwrap_or_default();
        locals.iter().all(|l| {
            list.iter().any(|c| {
                c["remote"] == l.to_string()
                    && c["kind"] == "send"
                    && c["bytes_in"].as_u64().unwrap_or(0) > 0
            })
        })
    });
    assert!(ok, "the staged sends never reached the server");
}

#[test]
fn sends_accepted_during_drain_are_delivered_before_reconnect() {
    let mut node = Node::start(&["--workers", "2", "--drain-timeout", "3s"]);
    let agents: Vec<String> = (0..3).map(|i| format!("agent-{i}")).collect();
    let receivers: Vec<RawReceiver> = agents
        .iter()
        .map(|a| RawReceiver::open(node.addr, a))
        .collect();
    // Requests in flight when the drain starts: heads sent, bodies withheld.
    let staged: Vec<(String, StagedSend)> = agents
        .iter()
        .flat_map(|a| (0..2).map(move |k| (a.clone(), format!("during drain {k} to {a}"))))
        .map(|(a, body)| {
            let s = StagedSend::new(node.addr, &a, &body);
            (a, s)
        })
        .collect();
    let locals: Vec<SocketAddr> = staged
        .iter()
        .map(|(_, s)| s.stream.local_addr().unwrap())
        .collect();
    wait_staged(&node, &locals);
    let streams: Vec<_> = receivers.into_iter().map(|r| r.collect(WAIT)).collect();

    signal(&node, libc::SIGTERM);
    wait_draining(&node, 2);
    // With 3 receivers over 2 workers and a 3 s window, the first reconnect
    // notice is due 750 ms into the drain at the earliest: finish the sends now.
    let results: Vec<(String, String, Option<u16>)> = staged
        .into_iter()
        .map(|(to, s)| {
            let body = s.body.clone();
            (to, body, s.finish())
        })
        .collect();
    let streams: Vec<Stream> = streams.into_iter().map(|h| h.join().unwrap()).collect();
    let mut accepted = 0;
    for (to, body, status) in &results {
        let i = agents.iter().position(|a| a == to).unwrap();
        check_reconnect(to, &streams[i]);
        match status {
            Some(202) => {
                accepted += 1;
                assert!(
                    streams[i].messages_before_reconnect().contains(body),
                    "{body:?} got 202 during the drain but never reached {to} before its reconnect event: {:?}",
                    streams[i].blocks
                );
            }
            Some(s) => assert!(*s >= 400, "{body:?}: unexpected status {s}"),
            None => {}
        }
    }
    assert!(
        accepted > 0,
        "no send was accepted during the drain (the in-flight requests should finish): {results:?}"
    );
    let status = wait_exit(&mut node, WAIT).expect("node did not exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn send_after_reconnect_notice_is_not_accepted_and_lost() {
    let mut node = Node::start(&["--workers", "1", "--drain-timeout", "3s"]);
    let rx = RawReceiver::open(node.addr, "agent-0");
    let staged = StagedSend::new(node.addr, "agent-0", "after the reconnect notice");
    wait_staged(&node, &[staged.stream.local_addr().unwrap()]);
    let stream = rx.collect(WAIT);

    signal(&node, libc::SIGTERM);
    // The receiver's stream ends with a reconnect event (1.5 s into the drain) ...
    let stream = stream.join().unwrap();
    check_reconnect("agent-0", &stream);
    // ... so a message accepted now can never be delivered by this node.
    let status = staged.finish();
    assert_ne!(
        status,
        Some(202),
        "a send after the recipient's reconnect notice was accepted (202) by a draining node; the message is lost when it exits"
    );
    let _ = wait_exit(&mut node, WAIT);
}

#[test]
fn answers_during_drain_say_connection_close() {
    let mut node = Node::start(&["--workers", "1", "--drain-timeout", "2s"]);
    let rx = RawReceiver::open(node.addr, "agent-0");
    let staged = StagedSend::new(node.addr, "agent-0", "during drain");
    wait_staged(&node, &[staged.stream.local_addr().unwrap()]);
    let stream = rx.collect(WAIT);
    signal(&node, libc::SIGTERM);
    wait_draining(&node, 1);
    let (status, head) = staged.finish_head().expect("an answer during the drain");
    assert_eq!(status, 202, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "an answer while draining (the connection's last) lacks Connection: close:\n{head}"
    );
    let _ = stream.join();
    let _ = wait_exit(&mut node, WAIT);
}

#[test]
fn second_signal_exits_at_once_non_zero() {
    let mut node = Node::start(&["--workers", "2", "--drain-timeout", "30s"]);
    let mut rx = Receiver::open(node.addr, &token(ACCT, "agent-0", Role::Agent), &[]);
    rx.ready();
    signal(&node, libc::SIGTERM);
    wait_draining(&node, 2);
    // Draining with a 30 s window: still running.
    assert!(
        node.child.try_wait().unwrap().is_none(),
        "exited on the first signal"
    );
    let t0 = Instant::now();
    signal(&node, libc::SIGTERM);
    let status = wait_exit(&mut node, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("still running {:?} after the second SIGTERM", t0.elapsed()));
    assert!(
        !status.success() && status.code().is_some(),
        "second signal: expected a non-zero exit status, got {status:?}"
    );
    assert_eq!(status.code(), Some(1), "{status:?}");
    drop(rx);
}

#[test]
fn sigint_drains_like_sigterm() {
    let mut node = Node::start(&["--workers", "1", "--drain-timeout", "2s"]);
    let mut rx = Receiver::open(node.addr, &token(ACCT, "agent-0", Role::Agent), &[]);
    rx.ready();
    signal(&node, libc::SIGINT);
    let ev = rx.expect_event("reconnect");
    assert!(ev.json()["retry_ms"].as_u64().is_some(), "{ev:?}");
    assert!(rx.closed_within(WAIT), "not closed after reconnect");
    drop(rx);
    let status = wait_exit(&mut node, WAIT).expect("node did not exit after SIGINT");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn drain_without_connections_exits_promptly() {
    let mut node = Node::start(&["--workers", "2", "--drain-timeout", "30s"]);
    let t0 = Instant::now();
    signal(&node, libc::SIGTERM);
    let status = wait_exit(&mut node, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("an idle node still runs {:?} after SIGTERM", t0.elapsed()));
    assert_eq!(status.code(), Some(0), "{status:?}");
}
