//! Slowloris: clients that send their request head a byte at a time, or
//! nothing at all, are cut at the handshake timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::*;

// ---------------------------------------------------------------------------
// 1. Slowloris
// ---------------------------------------------------------------------------

/// Runs a client on a thread: connects, optionally drips `prefix` and then one
/// byte every 200 ms, and returns how long after connecting the server closed.
fn slow_client(addr: SocketAddr, drip: bool) -> std::thread::JoinHandle<Option<Duration>> {
    std::thread::spawn(move || {
        let t = Instant::now();
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let head = b"GET /v1/receive HTTP/1.1\r\nHost: t\r\nX-Slow: ";
        let mut i = 0;
        let mut buf = [0u8; 1024];
        while t.elapsed() < Duration::from_secs(6) {
            if drip {
                let b = if i < head.len() { head[i] } else { b'a' };
                i += 1;
                let _ = s.write_all(&[b]);
            }
            match s.read(&mut buf) {
                Ok(0) => return Some(t.elapsed()),
                Ok(_) => {} // an answer: keep reading until EOF
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some(t.elapsed()),
            }
        }
        None
    })
}

#[test]
fn slowloris_is_cut_at_the_handshake_timeout() {
    let _g = serial();
    let node = Node::start(&["--workers", "2", "--handshake-timeout", "1s"]);
    let mut rx = open_rx(&node, "agent-1");

    let dripper = slow_client(node.addr, true);
    let silent = slow_client(node.addr, false);
    // While they linger, the healthy receiver keeps receiving promptly, and
    // new clients are served.
    let mut n = 0;
    let end = Instant::now() + Duration::from_secs(5);
    while !(dripper.is_finished() && silent.is_finished()) && Instant::now() < end {
        arrives_within(
            &node,
            &mut rx,
            "agent-1",
            &format!("during {n}"),
            Duration::from_millis(500),
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(150)); // pacing
    }
    let mut fresh = open_rx(&node, "agent-2");
    arrives_within(
        &node,
        &mut fresh,
        "agent-2",
        "fresh",
        Duration::from_millis(500),
    );

    let d = dripper
        .join()
        .unwrap()
        .expect("dripping connection never closed");
    let s = silent
        .join()
        .unwrap()
        .expect("silent connection never closed");
    for (what, el) in [("dripping", d), ("silent", s)] {
        assert!(
            el >= Duration::from_millis(900) && el <= Duration::from_millis(2500),
            "{what} connection closed after {el:?}, expected ~1 s"
        );
    }
    assert!(n >= 3, "only {n} health checks ran");
    let closed = metric_now(
        &node,
        "switchboard_connections_closed_total{reason=\"handshake_timeout\"}",
    );
    assert!(closed >= 2.0, "handshake_timeout closes: {closed}");
    arrives_within(
        &node,
        &mut rx,
        "agent-1",
        "after slowloris",
        Duration::from_millis(500),
    );
    assert_no_error_log(&node);
}
