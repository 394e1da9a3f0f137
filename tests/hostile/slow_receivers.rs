//! Receivers that stop reading: they are cut, can resume, and a cut slow
//! consumer loses nothing silently.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;

// ---------------------------------------------------------------------------
// 5. A receiver that stops reading
// ---------------------------------------------------------------------------

/// A receive connection read by hand, byte-exact, so it can stop reading at a known message.
struct RawReceiver {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Id of the last complete message read.
    last_id: Option<String>,
}

impl RawReceiver {
    fn open(addr: SocketAddr, tok: &str, rcvbuf: usize) -> RawReceiver {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(rcvbuf).unwrap();
        sock.connect(&addr.into()).unwrap();
        let mut stream: TcpStream = sock.into();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
            .write_all(
                format!(
                    "GET /v1/receive HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
        let mut r = RawReceiver {
            stream,
            buf: Vec::new(),
            last_id: None,
        };
        let head = r.block(b"\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        loop {
            let block = r.block(b"\n\n");
            if block.contains("event: ready") {
                break;
            }
            assert!(
                block.starts_with("retry:") || block.starts_with(':'),
                "before ready: {block}"
            );
        }
        r
    }

    /// Reads until `sep` and returns the text before it (consumed with `sep`).
    fn block(&mut self, sep: &[u8]) -> String {
        loop {
            if let Some(p) = self.buf.windows(sep.len()).position(|w| w == sep) {
                let text = String::from_utf8_lossy(&self.buf[..p]).to_string();
                self.buf.drain(..p + sep.len());
                return text;
            }
            let mut chunk = [0u8; 512];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "stream ended");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads the next message event; records its id.
    fn message(&mut self) -> String {
        loop {
            let ev = self.block(b"\n\n");
            if ev.starts_with(':') || ev.starts_with("retry:") {
                continue;
            }
            let id = ev
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .expect("id")
                .to_string();
            self.last_id = Some(id.clone());
            let data = ev
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data");
            return serde_json::from_str::<serde_json::Value>(data).unwrap()["body"]
                .as_str()
                .unwrap()
                .to_string();
        }
    }
}

#[test]
fn a_receiver_that_stops_reading_is_cut_and_can_resume() {
    let _g = serial();
    let node = Node::start(&["--workers", "2", "--max-outbound", "64KiB", "--hold", "30s"]);
    let tok = console_tok();
    let mut fast = open_rx(&node, "fast");

    let mut slow = RawReceiver::open(node.addr, &token(ACCT, "slow", Role::Agent), 4096);
    for b in ["pre-1", "pre-2"] {
        assert_eq!(send(node.addr, &tok, "slow", b).status, 202);
        assert_eq!(slow.message(), b);
    }
    let last_read = slow.last_id.clone().unwrap();
    let (epoch, last_seq) = parse_id(&last_read);
    // From here on `slow` never reads again.

    let rss0 = metric_now(&node, "switchboard_process_resident_memory_bytes");
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let addr = node.addr;
        let tok = tok.clone();
        std::thread::spawn(move || {
            let body = vec![b'f'; 4096];
            let mut h = Http::connect(addr);
            let (mut accepted, mut refused, mut other) = (0u32, 0u32, 0u32);
            let mut last_id = None;
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(4) {
                let r = h.request("POST", "/v1/send/slow", Some(&tok), &body);
                match r.status {
                    202 => {
                        accepted += 1;
                        last_id = Some(r.json()["id"].as_str().unwrap().to_string());
                    }
                    503 => refused += 1,
                    _ => other += 1,
                }
            }
            (accepted, refused, other, last_id)
        })
    };
    // During the flood the healthy receiver's messages arrive promptly.
    let mut fast_tx = Http::connect(node.addr);
    let mut worst = Duration::ZERO;
    let mut rss_max = rss0;
    let mut cut_after = None;
    let t = Instant::now();
    let mut i = 0;
    while t.elapsed() < Duration::from_secs(3) {
        let body = format!("fast {i}");
        let t0 = Instant::now();
        assert_eq!(
            fast_tx
                .request("POST", "/v1/send/fast", Some(&tok), body.as_bytes())
                .status,
            202
        );
        let ev = fast
            .next_event_within(Duration::from_secs(2))
            .expect("fast receiver starved");
        assert_eq!(ev.json()["body"], body.as_str());
        worst = worst.max(t0.elapsed());
        let m = metrics_text(&node);
        rss_max = rss_max.max(metric(&m, "switchboard_process_resident_memory_bytes"));
        if cut_after.is_none()
            && metric(
                &m,
                "switchboard_connections_closed_total{reason=\"slow_consumer\"}",
            ) >= 1.0
        {
            cut_after = Some(t.elapsed());
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(50)); // pacing
    }
    stop.store(true, Ordering::Relaxed);
    let (accepted, refused, other, last_sent) = flood.join().unwrap();
    eprintln!(
        "flood: {accepted} accepted, {refused} refused (503), {other} other; healthy worst latency {worst:?}; rss {:.1} -> {:.1} MB max",
        rss0 / 1e6,
        rss_max / 1e6
    );
    assert_eq!(other, 0, "flood sends answered with neither 202 nor 503");
    let cut_after = cut_after.expect("slow consumer not cut during the flood");
    assert!(
        cut_after < Duration::from_secs(2),
        "slow consumer cut only after {cut_after:?}"
    );
    assert!(accepted > 100, "only {accepted} flood messages accepted");
    assert!(
        worst < Duration::from_millis(500),
        "healthy receiver latency {worst:?} during the flood"
    );
    assert!(
        rss_max - rss0 < 100e6,
        "RSS grew by {:.1} MB",
        (rss_max - rss0) / 1e6
    );

    let m = metrics_text(&node);
    let cut = metric(
        &m,
        "switchboard_connections_closed_total{reason=\"slow_consumer\"}",
    );
    assert!(cut >= 1.0, "slow consumer not closed (slow_consumer={cut})");
    assert!(
        wait_state(node.addr, &tok, "slow", "held", WAIT),
        "slow client is not held"
    );
    assert!(node.log.lock().unwrap().contains("slow consumer"));
    assert_eq!(
        client_state(node.addr, &tok, "fast").as_deref(),
        Some("online")
    );
    drop(slow);

    // Resume from the last message read: the retained messages follow it
    // contiguously, or a gap event says what was lost. Never silence.
    let last_sent = last_sent.unwrap();
    let (_, last_sent_seq) = parse_id(&last_sent);
    let mut back = Receiver::open(
        node.addr,
        &token(ACCT, "slow", Role::Agent),
        &[("Last-Event-ID", &last_read)],
    );
    back.ready();
    let mut expect = last_seq + 1;
    let mut gaps = 0;
    let mut replayed = 0;
    loop {
        let ev = back
            .next_event()
            .unwrap_or_else(|| panic!("replay ended before seq {last_sent_seq} (at {expect})"));
        match ev.event.as_str() {
            "gap" => {
                assert_eq!(replayed, 0, "gap after messages were replayed: {ev:?}");
                gaps += 1;
                let j = ev.json();
                assert!(j["reason"].is_string(), "{j}");
                assert_eq!(
                    j["after"],
                    last_read.as_str(),
                    "gap does not start at the Last-Event-ID: {j}"
                );
                expect = 0; // set by the next message
            }
            "message" => {
                let (e, seq) = parse_id(ev.id.as_deref().unwrap());
                assert_eq!(e, epoch, "epoch changed");
                if expect == 0 {
                    assert!(
                        seq > last_seq + 1,
                        "gap reported but seq {seq} follows {last_seq}"
                    );
                } else {
                    assert_eq!(seq, expect, "silent hole in the replay (after {last_read})");
                }
                expect = seq + 1;
                replayed += 1;
                if seq == last_sent_seq {
                    break;
                }
            }
            other => panic!("unexpected event {other}: {ev:?}"),
        }
    }
    eprintln!("resume: {gaps} gap event(s), {replayed} messages replayed");
    assert!(gaps <= 1);
    // Everything keeps working.
    arrives_within(
        &node,
        &mut back,
        "slow",
        "slow is back",
        Duration::from_millis(500),
    );
    arrives_within(
        &node,
        &mut fast,
        "fast",
        "fast still fine",
        Duration::from_millis(500),
    );
    assert_no_error_log(&node);
}

/// README: "An accepted message is delivered or reported, never silently
/// lost." A slow consumer is cut while messages sit unread in the kernel
/// socket buffers; its client reconnects without `Last-Event-ID`. The stream
/// must then start with what it did not read, or with a `gap` that says so.
#[test]
fn a_cut_slow_consumer_reconnecting_without_last_event_id_loses_nothing_silently() {
    let _g = serial();
    let node = Node::start(&[
        "--workers",
        "2",
        "--max-outbound",
        "64KiB",
        "--hold",
        "30s",
        "--hold-max-messages",
        "100000",
        "--hold-max-bytes",
        "256MiB",
    ]);
    let tok = console_tok();
    let mut slow = RawReceiver::open(node.addr, &token(ACCT, "slow", Role::Agent), 4096);
    assert_eq!(send(node.addr, &tok, "slow", "pre").status, 202);
    assert_eq!(slow.message(), "pre");
    let (_, last_seq) = parse_id(slow.last_id.as_deref().unwrap());
    // Hold limits far above what is sent, so nothing needs to be trimmed.
    let body = vec![b'g'; 4096];
    let mut h = Http::connect(node.addr);
    let mut last_sent = String::new();
    let mut n = 0;
    while client_state(node.addr, &tok, "slow").as_deref() == Some("online") {
        assert!(n < 20_000, "slow consumer not cut after {n} messages");
        for _ in 0..50 {
            let r = h.request("POST", "/v1/send/slow", Some(&tok), &body);
            assert_eq!(r.status, 202);
            last_sent = r.json()["id"].as_str().unwrap().to_string();
            n += 1;
        }
    }
    eprintln!("cut after {n} messages");
    drop(slow);
    let mut back = Receiver::open(node.addr, &token(ACCT, "slow", Role::Agent), &[]);
    back.ready();
    let ev = back.next_event().expect("nothing replayed");
    let (_, last_sent_seq) = parse_id(&last_sent);
    match ev.event.as_str() {
        "gap" => {}
        "message" => {
            // At-least-once without Last-Event-ID: the replay may repeat what the
            // client had read, but must start no later than the first unread
            // message and then run without holes up to the last one sent.
            let (_, first) = parse_id(ev.id.as_deref().unwrap());
            assert!(
                first <= last_seq + 1,
                "messages {}..{} (of {}..{last_sent_seq}) were never read and are neither replayed nor reported",
                last_seq + 1,
                first - 1,
                last_seq + 1
            );
            let mut expect = first + 1;
            while expect <= last_sent_seq {
                let ev = back.next_event().expect("replay ended early");
                assert_eq!(ev.event, "message");
                let (_, seq) = parse_id(ev.id.as_deref().unwrap());
                assert_eq!(seq, expect, "hole in the replay");
                expect += 1;
            }
        }
        other => panic!("unexpected first event {other}: {ev:?}"),
    }
}
