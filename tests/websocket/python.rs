//! A client nobody here wrote: the Python `websockets` library
//! (tests/clients/ws_client.py; tools/test installs it) receives, sends,
//! pings, sends large and fragmented messages, resumes after a cut, and sees
//! drain and replacement as the decisions of 2026-12-08 say.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

use serde_json::{json, Value};

use super::*;

/// `tests/clients/ws_client.py` on a connection; its reports come as JSON lines.
struct Py {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
}

impl Py {
    /// Connects as `client` with `query` added to the URL; waits until open.
    fn open(addr: SocketAddr, client: &str, query: &str) -> Py {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/ws_client.py");
        let url = format!("ws://{addr}/v1/connect?access_token={}{query}", tok(client));
        let mut child = Command::new("python3")
            .arg(script)
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3 (tools/test installs it and `websockets`)");
        let stdin = child.stdin.take().expect("stdin");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("client printed {line:?}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut py = Py {
            child,
            stdin,
            lines,
        };
        let open = py.next("open");
        assert_eq!(open["open"], true, "{open}");
        assert_eq!(open["subprotocol"], "switchboard.v1", "{open}");
        py
    }

    fn next(&mut self, what: &str) -> Value {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("{what}: nothing from the client library in time"))
    }

    /// The next received event (panics on anything else).
    fn recv(&mut self, what: &str) -> Value {
        let v = self.next(what);
        assert!(v["recv"].is_object(), "{what}: {v}");
        v["recv"].clone()
    }

    fn op(&mut self, op: Value) {
        writeln!(self.stdin, "{op}").expect("write to the client");
        self.stdin.flush().unwrap();
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn python_websockets_receives_sends_and_pings() {
    let node = Node::start(&[]);
    let mut py = Py::open(node.addr, "agent-py", "");
    let ready = py.recv("ready");
    assert_eq!(
        (&ready["event"], &ready["client"]),
        (&json!("ready"), &json!("agent-py"))
    );
    let mut s = sse(&node, "console-py");
    py.op(json!({"op":"send","cmd":{"type":"send","to":"console-py","body":"hi from python","ref":"p1"}}));
    let a = py.recv("accepted");
    assert_eq!(
        (&a["event"], &a["ref"]),
        (&json!("accepted"), &json!("p1")),
        "{a}"
    );
    let ev = s.expect_message("agent-py", "hi from python");
    assert_eq!(ev.id.as_deref(), a["id"].as_str());
    let id = send_ok(node.addr, &tok("console-py"), "agent-py", "hi from http");
    let m = py.recv("message");
    assert_eq!(
        (&m["body"], &m["id"]),
        (&json!("hi from http"), &json!(id)),
        "{m}"
    );
    py.op(json!({"op":"ping","data":"are you there"}));
    assert_eq!(py.next("pong"), json!({"pong":"are you there"}));
    py.op(json!({"op":"close"}));
    assert_eq!(py.next("close"), json!({"closed":1000,"reason":""}));
}

#[test]
fn python_websockets_large_and_fragmented_messages() {
    let node = Node::start(&["--max-message", "1MiB", "--max-outbound", "8MiB"]);
    let mut py = Py::open(node.addr, "agent-pl", "");
    py.recv("ready");
    let mut s = sse(&node, "console-pl");
    let large = "L".repeat(512 << 10);
    py.op(json!({"op":"send","cmd":{"type":"send","to":"console-pl","body":large,"ref":"big"}}));
    assert_eq!(py.recv("accepted")["ref"], "big");
    s.expect_message("agent-pl", &large);
    // Fragmented (the library sends one frame per item; a str item is
    // whole characters, so splitting inside one is left to conformance.rs).
    let cmd = json!({"type":"send","to":"console-pl","body":"fragmented € message","ref":"frag"})
        .to_string();
    let cut = cmd.find('€').unwrap();
    let parts = [&cmd[..10], &cmd[10..cut], &cmd[cut..]];
    py.op(json!({"op":"fragments","parts":parts}));
    assert_eq!(py.recv("accepted")["ref"], "frag");
    s.expect_message("agent-pl", "fragmented € message");
    // A large message to the library.
    send_ok(node.addr, &tok("console-pl"), "agent-pl", &large);
    assert_eq!(
        py.recv("large message")["body"].as_str(),
        Some(large.as_str())
    );
}

#[test]
fn python_websockets_resumes_after_a_cut() {
    let node = Node::start(&["--hold", "30s"]);
    let console = tok("console-pr");
    let mut py = Py::open(node.addr, "agent-pr", "");
    py.recv("ready");
    send_ok(node.addr, &console, "agent-pr", "m1");
    let m1 = py.recv("m1");
    assert_eq!(m1["body"], "m1");
    py.op(json!({"op":"cut"}));
    let closed = py.next("cut");
    assert!(closed.get("closed").is_some(), "{closed}");
    assert!(wait_state(node.addr, &console, "agent-pr", "held", WAIT));
    let sent: Vec<String> = ["m2", "m3"]
        .iter()
        .map(|b| send_ok(node.addr, &console, "agent-pr", b))
        .collect();
    let id = m1["id"].as_str().unwrap();
    let mut back = Py::open(node.addr, "agent-pr", &format!("&last_event_id={id}"));
    assert_eq!(back.recv("ready")["event"], "ready");
    for (b, id) in ["m2", "m3"].iter().zip(&sent) {
        let m = back.recv(b);
        assert_eq!((&m["body"], &m["id"]), (&json!(b), &json!(id)), "{m}");
    }
    send_ok(node.addr, &console, "agent-pr", "m4");
    assert_eq!(back.recv("m4")["body"], "m4", "m1..m3 repeated");
}

#[test]
fn python_websockets_sees_drain_as_reconnect_then_1012() {
    let node = Node::start(&["--drain-timeout", "1s"]);
    let mut py = Py::open(node.addr, "agent-pd", "");
    py.recv("ready");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(node.child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let ev = py.recv("reconnect");
    assert_eq!(ev["event"], "reconnect", "{ev}");
    assert!(ev["retry_ms"].is_u64(), "{ev}");
    assert_eq!(py.next("close"), json!({"closed":1012,"reason":"draining"}));
}

#[test]
fn python_websockets_sees_replaced_then_1000() {
    let node = Node::start(&[]);
    let mut py = Py::open(node.addr, "agent-px", "");
    py.recv("ready");
    let mut newer = Py::open(node.addr, "agent-px", "");
    newer.recv("ready");
    assert_eq!(py.recv("replaced")["event"], "replaced");
    assert_eq!(py.next("close"), json!({"closed":1000,"reason":"replaced"}));
}
