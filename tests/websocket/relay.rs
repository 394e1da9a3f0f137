//! The relay over WebSocket: one connection receives the client's stream and
//! sends; it is the same session as an SSE stream (replace, hold, resume,
//! gaps), `accepted` means what HTTP's 202 means, commands are answered in
//! order, heartbeats are Pings, slow consumers are cut and held, a draining
//! node says `reconnect` then Close 1012, and `/connections` names the
//! transport.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

#[test]
fn sends_go_both_ways_between_websocket_and_sse() {
    let node = Node::start(&[]);
    let mut w = ws(&node, "agent-w");
    let mut s = sse(&node, "console-s");
    // WebSocket -> SSE: accepted with the ref and the id the message has in the stream.
    w.send("console-s", "from ws", "1");
    let id = accepted(&mut w, "1");
    let ev = s.expect_message("agent-w", "from ws");
    assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    // HTTP POST -> WebSocket: the message with the id of the 202.
    let id = send_ok(node.addr, &tok("console-s"), "agent-w", "from http");
    let m = w.expect_message("console-s", "from http");
    assert_eq!(m["id"], id.as_str());
    // A JSON value and bytes that are not UTF-8.
    w.command(&json!({"type":"send","to":"console-s","json":{"cmd":"backup","n":[1,2]},"ref":"j"}));
    accepted(&mut w, "j");
    s.expect_json_message(
        "agent-w",
        &json!({"cmd":"backup","n":[1,2]}),
        r#"{"cmd":"backup","n":[1,2]}"#,
    );
    w.command(&json!({"type":"send","to":"console-s","body_b64":"/w==","ref":"b"}));
    accepted(&mut w, "b");
    let ev = s.expect_event("message");
    assert_eq!(ev.json()["body_b64"], "/w==", "{ev:?}");
    // WebSocket -> WebSocket, without a ref: the answer has none.
    let mut w2 = ws(&node, "agent-w2");
    w.command(&json!({"type":"send","to":"agent-w2","body":"no ref"}));
    let a = w.event();
    assert_eq!(a["event"], "accepted", "{a}");
    assert!(a.get("ref").is_none(), "{a}");
    let m = w2.expect_message("agent-w", "no ref");
    assert_eq!(m["id"], a["id"]);
    // The client list, with the ref.
    w.command(&json!({"type":"clients","ref":"c"}));
    let c = w.event();
    assert_eq!(
        (&c["event"], &c["ref"]),
        (&json!("clients"), &json!("c")),
        "{c}"
    );
    let names: Vec<&str> = c["clients"]
        .as_array()
        .expect("clients array")
        .iter()
        .filter_map(|e| e["client"].as_str())
        .collect();
    for n in ["agent-w", "agent-w2", "console-s"] {
        assert!(names.contains(&n), "{n} not in {c}");
    }
}

#[test]
fn refused_commands_are_error_events_and_the_connection_goes_on() {
    let node = Node::start(&[]);
    let mut w = ws(&node, "agent-e");
    let mut s = sse(&node, "console-e");
    w.send("nobody", "x", "off");
    error(&mut w, "recipient_offline", Some("off"));
    // The ref is read before the syntax error.
    w.text(r#"{"ref":"m1","type":"send","to":"#);
    error(&mut w, "malformed_json", Some("m1"));
    w.text("not json");
    error(&mut w, "malformed_json", None);
    w.command(&json!({"type":"shout","ref":"u"}));
    error(&mut w, "unknown_type", Some("u"));
    w.command(&json!({"type":"send","to":"bad name!","body":"x","ref":"r"}));
    error(&mut w, "invalid_recipient", Some("r"));
    w.command(&json!([1, 2]));
    error(&mut w, "not_an_object", None);
    w.command(&json!({"type":"send","ref":"m"}));
    error(&mut w, "missing_field", Some("m"));
    // Still working.
    w.send("console-e", "after the errors", "ok");
    accepted(&mut w, "ok");
    s.expect_message("agent-e", "after the errors");
}

/// Eight sends pipelined in one write to recipients owned by the other
/// worker (`--shard-by client`), with an offline recipient among them:
/// answered in the order they were sent.
#[test]
fn pipelined_sends_to_another_worker_are_answered_in_order() {
    let node = Node::start(&["--workers", "2", "--shard-by", "client"]);
    let mut w = ws(&node, "agent-p");
    let home = worker_of(&node, w.stream.local_addr().unwrap());
    let mut others = Vec::new();
    for i in 0..24 {
        let name = format!("agent-p{i}");
        let rx = sse(&node, &name);
        if worker_of(&node, rx.stream.local_addr().unwrap()) != home {
            others.push((name, rx));
        }
        if others.len() == 3 {
            break;
        }
    }
    assert_eq!(others.len(), 3, "no recipients on the other worker");
    for round in 0..3 {
        let mut batch = Vec::new();
        let mut expect = Vec::new();
        for i in 0..8 {
            let r = format!("{round}-{i}");
            if i == 5 {
                batch.extend(frame_bytes(
                    true,
                    0,
                    TEXT,
                    json!({"type":"send","to":"nobody-p","body":"x","ref":r})
                        .to_string()
                        .as_bytes(),
                    true,
                ));
                expect.push((r, None));
                continue;
            }
            let k = i % others.len();
            let body = format!("p {round} {i}");
            batch.extend(frame_bytes(
                true,
                0,
                TEXT,
                json!({"type":"send","to":others[k].0,"body":body,"ref":r})
                    .to_string()
                    .as_bytes(),
                true,
            ));
            expect.push((r, Some((k, body))));
        }
        w.raw(&batch);
        for (r, to) in &expect {
            match to {
                Some((k, body)) => {
                    let id = accepted(&mut w, r);
                    let ev = others[*k].1.expect_message("agent-p", body);
                    assert_eq!(ev.id.as_deref(), Some(id.as_str()), "{r}");
                }
                None => {
                    error(&mut w, "recipient_offline", Some(r));
                }
            }
        }
    }
}

#[test]
fn a_websocket_replaces_an_sse_stream_and_the_other_way_round() {
    let node = Node::start(&[]);
    let console = tok("console-x");
    let mut old = sse(&node, "agent-x");
    let (mut w, ready) = Ws::open(node.addr, &tok("agent-x"));
    let r = old.expect_event("replaced");
    assert!(r.json()["session"].is_string(), "{r:?}");
    assert!(old.closed_within(WAIT), "replaced stream left open");
    // The WebSocket connection is the session now.
    send_ok(node.addr, &console, "agent-x", "to the ws");
    w.expect_message("console-x", "to the ws");
    // An SSE stream replaces it: `replaced`, then Close 1000 "replaced".
    let mut new = sse(&node, "agent-x");
    let ev = w.expect("replaced");
    assert_eq!(ev["node"], ready["node"], "{ev}");
    let f = w.next_frame();
    assert_eq!(f.close(), (Some(1000), "replaced".to_string()));
    assert!(w.eof_within(WAIT), "replaced WebSocket left open");
    send_ok(node.addr, &console, "agent-x", "to the sse");
    new.expect_message("console-x", "to the sse");
    // And a WebSocket replaces a WebSocket.
    let mut w2 = ws(&node, "agent-x");
    new.expect_event("replaced");
    let mut w3 = ws(&node, "agent-x");
    w2.expect("replaced");
    assert_eq!(w2.next_frame().close().0, Some(1000));
    send_ok(node.addr, &console, "agent-x", "to the last");
    w3.expect_message("console-x", "to the last");
}

/// Messages sent without pause while the connection is cut and resumed with
/// `?last_event_id=`: every accepted message arrives exactly once, in order.
#[test]
fn resume_after_a_cut_loses_and_repeats_nothing() {
    let node = Node::start(&["--hold", "30s"]);
    let console = tok("console-rs");
    let mut w = ws(&node, "agent-rs");
    const N: usize = 300;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (addr, console, stop) = (node.addr, console.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut h = Http::connect(addr);
            let mut ids = Vec::new();
            for i in 0..N {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = h.request(
                    "POST",
                    "/v1/send/agent-rs",
                    Some(&console),
                    format!("m{i}").as_bytes(),
                );
                assert_eq!(
                    r.status,
                    202,
                    "send {i}: {:?}",
                    String::from_utf8_lossy(&r.body)
                );
                ids.push(r.json()["id"].as_str().unwrap().to_string());
            }
            ids
        })
    };
    let mut got: Vec<(String, String)> = Vec::new();
    let mut cuts = 0;
    while got.len() < N {
        let m = w.event();
        assert_eq!(m["event"], "message", "{m}");
        got.push((
            m["id"].as_str().unwrap().to_string(),
            m["body"].as_str().unwrap().to_string(),
        ));
        // Cut three times, with the header and with the query.
        if got.len().is_multiple_of(60) && cuts < 3 {
            cuts += 1;
            let last = got.last().unwrap().0.clone();
            w.stream.shutdown(Shutdown::Both).unwrap();
            w = if cuts == 2 {
                Handshake::new("/v1/connect")
                    .bearer(&tok("agent-rs"))
                    .set("Last-Event-ID", &last)
                    .open(node.addr)
                    .expect("resume with Last-Event-ID")
            } else {
                Ws::connect(
                    node.addr,
                    &format!("/v1/connect?last_event_id={last}"),
                    &tok("agent-rs"),
                )
            };
            assert_eq!(w.event()["event"], "ready");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let ids = sender.join().unwrap();
    assert_eq!(ids.len(), N);
    assert_eq!(cuts, 3);
    let bodies: Vec<&str> = got.iter().map(|(_, b)| b.as_str()).collect();
    let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, want, "lost, repeated or reordered messages");
    let got_ids: Vec<&String> = got.iter().map(|(id, _)| id).collect();
    assert_eq!(
        got_ids,
        ids.iter().collect::<Vec<_>>(),
        "ids differ from the 202s"
    );
    assert!(node.wait_log("resumed"), "no resume in the log");
}

#[test]
fn heartbeat_pings_arrive_when_nothing_is_written() {
    let node = Node::start(&["--heartbeat", "200ms"]);
    let (mut w, ready) = Ws::open(node.addr, &tok("agent-hb"));
    assert_eq!(ready["heartbeat_ms"], 200, "{ready}");
    let t = Instant::now();
    let f = w.frame_within(WAIT).expect("no heartbeat");
    assert_eq!((f.opcode, f.payload.len()), (PING, 0), "{f:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    // Not answering is fine; the connection goes on and pings keep coming.
    let f = w.frame_within(WAIT).expect("no second heartbeat");
    assert_eq!(f.opcode, PING);
    let mut s = sse(&node, "console-hb");
    w.send("console-hb", "alive", "a");
    accepted(&mut w, "a");
    s.expect_message("agent-hb", "alive");
}

/// A WebSocket client with a small receive buffer that stops reading while
/// large messages are sent to it: cut (without a Close: its output is
/// stuck), held, and its resume gets every message after the last it read,
/// or a `gap` first.
#[test]
fn a_slow_websocket_consumer_is_cut_held_and_resumes() {
    let node = Node::start(&["--max-outbound", "64KiB", "--hold", "30s"]);
    let console = tok("console-sl");
    let stream = {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&node.addr.into()).unwrap();
        TcpStream::from(sock)
    };
    let mut slow = Handshake::new("/v1/connect")
        .bearer(&tok("agent-sl"))
        .open_on(stream)
        .expect("handshake");
    assert_eq!(slow.event()["event"], "ready");
    send_ok(node.addr, &console, "agent-sl", "pre");
    let last_read = slow.expect_message("console-sl", "pre")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (epoch, last_seq) = parse_id(&last_read);
    // From here on the client does not read.
    let body = "s".repeat(8192);
    let mut h = Http::connect(node.addr);
    let mut last_sent = String::new();
    let mut n = 0;
    while client_state(node.addr, &console, "agent-sl").as_deref() == Some("online") {
        assert!(n < 20_000, "slow consumer not cut after {n} messages");
        for _ in 0..20 {
            let r = h.request("POST", "/v1/send/agent-sl", Some(&console), body.as_bytes());
            assert_eq!(r.status, 202);
            last_sent = r.json()["id"].as_str().unwrap().to_string();
            n += 1;
        }
    }
    assert!(
        wait_state(node.addr, &console, "agent-sl", "held", WAIT),
        "slow consumer not held"
    );
    assert!(node.wait_log("slow consumer"));
    // What it had not read ends without a Close frame.
    while let Some(f) = slow.frame_within(Duration::from_secs(2)) {
        assert_ne!(f.opcode, CLOSE, "a Close was queued behind stuck output");
    }
    let (_, last_sent_seq) = parse_id(&last_sent);
    let mut back = Ws::connect(
        node.addr,
        &format!("/v1/connect?last_event_id={last_read}"),
        &tok("agent-sl"),
    );
    assert_eq!(back.event()["event"], "ready");
    let mut expect = last_seq + 1;
    let mut gap = false;
    loop {
        let ev = back.event();
        match ev["event"].as_str() {
            Some("gap") => {
                assert!(!gap && expect == last_seq + 1, "gap after messages: {ev}");
                assert_eq!(ev["after"], last_read.as_str(), "{ev}");
                gap = true;
                expect = 0;
            }
            Some("message") => {
                let (e, seq) = parse_id(ev["id"].as_str().unwrap());
                assert_eq!(e, epoch);
                if expect == 0 {
                    assert!(
                        seq > last_seq + 1,
                        "gap reported but {seq} follows {last_seq}"
                    );
                } else {
                    assert_eq!(seq, expect, "silent hole in the replay");
                }
                expect = seq + 1;
                if seq == last_sent_seq {
                    break;
                }
            }
            _ => panic!("unexpected event {ev}"),
        }
    }
    eprintln!("cut after {n} messages; gap: {gap}");
}

fn signal(node: &Node, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(node.child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({sig}) failed");
}

/// SIGTERM: each WebSocket client gets `reconnect` with `retry_ms`, then
/// Close 1012 "draining", spread over --drain-timeout; messages accepted
/// before come first.
#[test]
fn drain_sends_reconnect_then_close_1012() {
    let mut node = Node::start(&["--workers", "2", "--drain-timeout", "2s"]);
    let mut clients: Vec<Ws> = (0..4).map(|i| ws(&node, &format!("agent-d{i}"))).collect();
    send_ok(node.addr, &tok("console-d"), "agent-d0", "before");
    clients[0].expect_message("console-d", "before");
    send_ok(node.addr, &tok("console-d"), "agent-d1", "queued");
    let t0 = Instant::now();
    signal(&node, libc::SIGTERM);
    let mut times = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        if i == 1 {
            c.expect_message("console-d", "queued");
        }
        let ev = c.event();
        assert_eq!(ev["event"], "reconnect", "agent-d{i}: {ev}");
        assert_eq!(ev["reason"], "draining", "{ev}");
        assert!(ev["retry_ms"].is_u64(), "{ev}");
        times.push(t0.elapsed());
        let f = c.next_frame();
        assert_eq!(
            f.close(),
            (Some(1012), "draining".to_string()),
            "agent-d{i}"
        );
        assert!(c.eof_within(WAIT), "agent-d{i}: TCP not closed after 1012");
    }
    let (first, last) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    assert!(
        *last - *first >= Duration::from_millis(500),
        "not spread: {times:?}"
    );
    assert!(*last <= Duration::from_millis(2500), "{times:?}");
    let mut status = None;
    wait_until(WAIT, || {
        status = node.child.try_wait().expect("try_wait");
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit after drain");
}

/// The `/connections` entry of the connection from `local`.
fn connection(node: &Node, local: SocketAddr) -> serde_json::Value {
    let mut found = serde_json::Value::Null;
    let ok = wait_until(WAIT, || {
        let r = request(node.admin.unwrap(), "GET", "/connections", None, b"");
        found = r.json()["connections"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["remote"] == local.to_string()).cloned())
            .unwrap_or_default();
        !found.is_null()
    });
    assert!(ok, "{local} not in /connections");
    found
}

#[test]
fn connections_show_the_transport() {
    let node = Node::start(&[]);
    let w = ws(&node, "agent-t1");
    let s = sse(&node, "agent-t2");
    let c = connection(&node, w.stream.local_addr().unwrap());
    assert_eq!(c["transport"], "websocket", "{c}");
    assert_eq!(c["client"], "agent-t1", "{c}");
    let c = connection(&node, s.stream.local_addr().unwrap());
    assert_eq!(c["transport"], "sse", "{c}");
    assert_eq!(c["client"], "agent-t2", "{c}");
}

/// Commands read together whose answers come from this worker and from
/// another one, interleaved, starting with one answered here: the answers
/// still come in command order (an answer ready at once must not pass the
/// awaited ones before it, nor fall behind those after it).
#[test]
fn answers_from_this_and_another_worker_keep_command_order() {
    let node = Node::start(&["--workers", "2", "--shard-by", "client"]);
    let mut w = ws(&node, "agent-m");
    let home = worker_of(&node, w.stream.local_addr().unwrap());
    let (mut here, mut there) = (Vec::new(), Vec::new());
    for i in 0..40 {
        let name = format!("agent-m{i}");
        let rx = sse(&node, &name);
        if worker_of(&node, rx.stream.local_addr().unwrap()) == home {
            if here.len() < 3 {
                here.push((name, rx));
            }
        } else if there.len() < 3 {
            there.push((name, rx));
        }
        if here.len() == 3 && there.len() == 3 {
            break;
        }
    }
    assert!(
        here.len() == 3 && there.len() == 3,
        "recipients on both workers"
    );
    for round in 0..3 {
        let mut batch = Vec::new();
        let mut refs = Vec::new();
        // here, there, here, there, here, there
        for i in 0..6 {
            let to = if i % 2 == 0 {
                &here[i / 2].0
            } else {
                &there[i / 2].0
            };
            let r = format!("{round}-{i}");
            let cmd = json!({"type":"send","to":to,"body":format!("m {round} {i}"),"ref":r});
            batch.extend(frame_bytes(true, 0, TEXT, cmd.to_string().as_bytes(), true));
            refs.push(r);
        }
        w.raw(&batch);
        for r in &refs {
            accepted(&mut w, r);
        }
    }
    // Every message reached its recipient, in order.
    for round in 0..3 {
        for i in 0..6 {
            let rx = if i % 2 == 0 {
                &mut here[i / 2].1
            } else {
                &mut there[i / 2].1
            };
            rx.expect_message("agent-m", &format!("m {round} {i}"));
        }
    }
}
