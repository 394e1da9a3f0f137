//! The stream and the send path as real third-party clients see them:
//! Python `httpx-sse` and `requests` + `sseclient-py` (tests/clients/sse_client.py,
//! installed by tools/test) and curl; and the same details over raw sockets
//! (chunked framing of the stream, `Expect: 100-continue`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;

use common::*;
use switchboard::auth::Role;

const ACCT: &str = "clients";

/// A third-party SSE client reading a stream in a child process; its events
/// come as JSON lines.
struct PyClient {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
}

impl PyClient {
    /// Starts `tests/clients/sse_client.py LIBRARY` on `/v1/receive` of
    /// `addr` as `client`, to stop after `count` events.
    fn start(library: &str, addr: std::net::SocketAddr, client: &str, count: usize) -> PyClient {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/sse_client.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(library)
            .arg(format!("http://{addr}/v1/receive"))
            .arg(token(ACCT, client, Role::Agent))
            .arg(count.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .expect("run python3 (tools/test installs it and the client libraries)");
        let out: ChildStdout = child.stdout.take().expect("stdout");
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
        PyClient { child, lines }
    }

    /// The next event the library yielded (panics if none comes in time).
    fn next(&self, what: &str) -> serde_json::Value {
        let v = self
            .lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("{what}: no event from the client library in time"));
        assert!(v.get("end").is_none(), "{what}: the stream ended: {v}");
        v
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// httpx-sse: the first event it yields is `ready` with JSON data (the
/// reconnection hint rides in its block, so no empty `message` comes
/// first), then a message, while the stream stays open.
#[test]
fn httpx_sse_sees_ready_first_then_messages() {
    let node = Node::start(&[]);
    let c = PyClient::start("httpx-sse", node.addr, "agent-h", 2);
    let ready = c.next("httpx-sse ready");
    assert_eq!(ready["event"], "ready", "{ready}");
    assert_eq!(ready["retry"], 2000, "{ready}");
    let data: serde_json::Value = serde_json::from_str(ready["data"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("ready data is not JSON ({e}): {ready}"));
    assert_eq!(data["client"], "agent-h");
    let console = token(ACCT, "console-h", Role::Console);
    assert!(wait_state(node.addr, &console, "agent-h", "online", WAIT));
    send_ok(node.addr, &console, "agent-h", "hello httpx");
    let msg = c.next("httpx-sse message");
    assert_eq!(msg["event"], "message", "{msg}");
    let data: serde_json::Value =
        serde_json::from_str(msg["data"].as_str().unwrap_or_default()).expect("JSON");
    assert_eq!(data["body"], "hello httpx");
}

/// httpx-sse gets a JSON send (curl, `Content-Type: application/json`, a
/// pretty-printed body with line breaks) as one event whose data is
/// `{"from","json"}` with the value compact, which Python's json and
/// serde_json both parse to the document sent.
#[test]
fn httpx_sse_gets_a_json_body_as_a_value() {
    let node = Node::start(&[]);
    let c = PyClient::start("httpx-sse", node.addr, "agent-j", 2);
    assert_eq!(c.next("httpx-sse ready")["event"], "ready");
    let console = token(ACCT, "console-j", Role::Console);
    assert!(wait_state(node.addr, &console, "agent-j", "online", WAIT));
    let pretty = "{\n  \"cmd\": \"backup\",\n  \"args\": [\"--full\", \"a b\"],\n  \"n\": 2\n}\n";
    curl_send_json(node.addr, &console, "agent-j", pretty);
    let msg = c.next("httpx-sse JSON message");
    assert_eq!(msg["event"], "message", "{msg}");
    let data = msg["data"].as_str().unwrap_or_default();
    assert_eq!(
        data,
        "{\"from\":\"console-j\",\"json\":{\"cmd\":\"backup\",\"args\":[\"--full\",\"a b\"],\"n\":2}}"
    );
    let v: serde_json::Value = serde_json::from_str(data).expect("JSON");
    let sent: serde_json::Value = serde_json::from_str(pretty).expect("JSON");
    assert_eq!(v["json"], sent);
}

/// requests + sseclient-py with default settings: events arrive while the
/// stream is open (the body is chunked; a body delimited only by the
/// connection's end is read by `iter_content` until it ends).
#[test]
fn requests_sseclient_sees_events_while_the_stream_is_open() {
    let node = Node::start(&[]);
    let c = PyClient::start("sseclient", node.addr, "agent-r", 3);
    let ready = c.next("sseclient ready");
    assert_eq!(ready["event"], "ready", "{ready}");
    let console = token(ACCT, "console-r", Role::Console);
    assert!(wait_state(node.addr, &console, "agent-r", "online", WAIT));
    for body in ["first", "second"] {
        send_ok(node.addr, &console, "agent-r", body);
        let msg = c.next("sseclient message");
        assert_eq!(msg["event"], "message", "{msg}");
        let data: serde_json::Value =
            serde_json::from_str(msg["data"].as_str().unwrap_or_default()).expect("JSON");
        assert_eq!(data["body"], body);
    }
}

/// An HTTP/1.1 stream is chunked: the head says so, the first chunk holds
/// `retry:` and the ready event in one block, heartbeats are chunks, and a
/// replaced stream ends with the last chunk. An HTTP/1.0 stream is plain.
#[test]
fn streams_are_chunked_for_http_1_1_and_plain_for_http_1_0() {
    let node = Node::start(&["--heartbeat", "200ms"]);
    let tok = token(ACCT, "agent-c", Role::Agent);
    let mut s = TcpStream::connect(node.addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET /v1/receive HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let head = read_head(&mut r);
    assert!(
        head.contains("\r\nTransfer-Encoding: chunked\r\n"),
        "{head}"
    );
    let mut size = String::new();
    r.read_line(&mut size).unwrap();
    let len = usize::from_str_radix(size.trim_end(), 16)
        .unwrap_or_else(|_| panic!("not a chunk size line: {size:?}"));
    let mut chunk = vec![0u8; len + 2];
    r.read_exact(&mut chunk).unwrap();
    let text = String::from_utf8_lossy(&chunk).into_owned();
    assert!(
        text.starts_with("retry: 2000\nevent: ready\ndata: {") && text.ends_with("\n\n\r\n"),
        "{text:?}"
    );
    let mut beat = [0u8; 8];
    r.read_exact(&mut beat).unwrap();
    assert_eq!(&beat, b"3\r\n:\n\n\r\n");

    // Replaced by a newer stream: the old one ends cleanly.
    let mut old = Receiver::open(node.addr, &tok, &[]);
    old.ready();
    let _new = Receiver::open(node.addr, &tok, &[]);
    old.expect_event("replaced");
    assert!(old.closed_within(WAIT), "replaced stream not closed");
    assert!(
        old.ended_cleanly(),
        "replaced stream ended without the last chunk"
    );

    let mut s = TcpStream::connect(node.addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET /v1/receive HTTP/1.0\r\nAuthorization: Bearer {tok}\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let head = read_head(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    let mut first = String::new();
    r.read_line(&mut first).unwrap();
    assert_eq!(first, "retry: 2000\n");
}

/// Large plain-text messages go out from the retained log (head, body and
/// tail in one sendmsg) inside one chunk; small and escaped ones, bursts
/// and replays are chunked too, and all arrive intact.
#[test]
fn every_kind_of_write_is_framed() {
    let node = Node::start(&[]);
    let console = token(ACCT, "console-f", Role::Console);
    let tok = token(ACCT, "agent-f", Role::Agent);
    let mut rx = Receiver::open(node.addr, &tok, &[]);
    rx.ready();
    let large = "L".repeat(40_000);
    let escaped = "q\"\n".repeat(3000);
    for body in [large.as_str(), "small", escaped.as_str()] {
        send_ok(node.addr, &console, "agent-f", body);
        rx.expect_message("console-f", body);
    }
    let bodies: Vec<String> = (0..20)
        .map(|i| format!("burst {i} {}", "b".repeat(i * 500)))
        .collect();
    send_burst(node.addr, &console, "agent-f", &bodies);
    for b in &bodies {
        rx.expect_message("console-f", b);
    }
    // Held, then replayed on the next stream.
    drop(rx);
    assert!(wait_state(node.addr, &console, "agent-f", "held", WAIT));
    send_ok(node.addr, &console, "agent-f", &large);
    send_ok(node.addr, &console, "agent-f", "after");
    let mut rx = Receiver::open(node.addr, &tok, &[]);
    rx.ready();
    rx.expect_message("console-f", &large);
    rx.expect_message("console-f", "after");
}

/// Reads a response head (status line and headers, up to the blank line).
fn read_head(r: &mut impl BufRead) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

/// A send whose head asks for `100 Continue` gets it before its body is
/// sent, then its answer; one that can be refused on its head alone (token,
/// recipient, declared length) is answered at once and the connection
/// closed, without its body.
#[test]
fn expect_100_continue_on_raw_sockets() {
    let node = Node::start(&["--max-message", "4KiB"]);
    let console = token(ACCT, "console-e", Role::Console);
    let mut rx = Receiver::open(node.addr, &token(ACCT, "agent-e", Role::Agent), &[]);
    rx.ready();
    let head = |to: &str, tok: &str, len: usize| {
        format!(
            "POST /v1/send/{to} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\
             Content-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
        )
    };
    let mut h = Http::connect(node.addr);
    h.send_raw(head("agent-e", &console, 5).as_bytes());
    let mut interim = [0u8; 25];
    h.stream.read_exact(&mut interim).expect("100 Continue");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    h.send_raw(b"hello");
    let r = h.read_response().expect("answer");
    assert_eq!(r.status, 202, "{r:?}");
    rx.expect_message("console-e", "hello");
    // The connection goes on: a second one.
    h.send_raw(head("agent-e", &console, 3).as_bytes());
    h.stream.read_exact(&mut interim).expect("100 Continue");
    h.send_raw(b"two");
    assert_eq!(h.read_response().expect("answer").status, 202);

    for (to, tok, len, status, code) in [
        ("agent-e", "not-a-token", 5, 401, "malformed_token"),
        ("bad%20name", console.as_str(), 5, 400, "invalid_recipient"),
        ("agent-e", console.as_str(), 5000, 413, "payload_too_large"),
    ] {
        let mut h = Http::connect(node.addr);
        h.send_raw(head(to, tok, len).as_bytes());
        let r = h.read_response().expect("final answer without the body");
        assert_error(&r, status, code);
        assert!(h.closed_within(WAIT), "{code}: connection left open");
    }
}

/// curl sends `Expect: 100-continue` for a body this large (over 1 MiB,
/// curl's threshold), and gets `100 Continue` (its verbose trace shows it)
/// instead of waiting a second.
#[test]
fn curl_large_send_gets_100_continue() {
    let node = Node::start(&["--max-message", "2MiB", "--max-outbound", "8MiB"]);
    let console = token(ACCT, "console-u", Role::Console);
    let mut rx = Receiver::open(node.addr, &token(ACCT, "agent-u", Role::Agent), &[]);
    rx.ready();
    let dir = std::env::temp_dir().join(format!(
        "switchboard-curl-{}-{}",
        std::process::id(),
        switchboard::ids::random_u64()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("body");
    let body = "x".repeat(1_200_000);
    std::fs::write(&file, &body).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "20", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg("-H")
        .arg(format!("Authorization: Bearer {console}"))
        .arg(format!("http://{}/v1/send/agent-u", node.addr))
        .output()
        .expect("run curl");
    let _ = std::fs::remove_dir_all(&dir);
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl failed: {trace}");
    assert!(
        trace.contains("> Expect: 100-continue"),
        "curl sent no Expect: {trace}"
    );
    assert!(
        trace.contains("< HTTP/1.1 100 Continue"),
        "no 100 Continue: {trace}"
    );
    assert!(trace.contains("< HTTP/1.1 202"), "{trace}");
    assert!(!trace.contains("Done waiting for 100-continue"), "{trace}");
    rx.expect_message("console-u", &body);
}
