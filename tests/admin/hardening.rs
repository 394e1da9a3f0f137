//! The admin listener against slow and misdirected clients: a deadline on
//! the whole request head, probe slots that keep `/healthz`, `/readyz` and
//! `/metrics` answering while slow clients hold every general slot, and the
//! `Host` check against DNS rebinding.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

/// A client that sends a request head one byte every 200 ms, from its own
/// thread, until the server closes the connection or it is stopped.
struct Dribbler {
    reader: TcpStream,
    opened: Instant,
    stop: Arc<AtomicBool>,
}

impl Dribbler {
    fn open(addr: SocketAddr) -> Dribbler {
        let stream = TcpStream::connect(addr).expect("connect");
        let reader = stream.try_clone().expect("clone");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut w = stream;
            let head = b"GET /info HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".iter();
            for &b in head.chain(std::iter::repeat(&b'a')) {
                if s.load(Ordering::Relaxed) || w.write_all(&[b]).is_err() {
                    return;
                }
                // The dribble rate is the attack, not a wait for a condition.
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Dribbler {
            reader,
            opened: Instant::now(),
            stop,
        }
    }

    /// Waits (at most `timeout`) for the server to answer and close; returns
    /// the answer and how long after the connect the close came.
    fn wait_closed(&mut self, timeout: Duration) -> Option<(String, Duration)> {
        self.reader.set_read_timeout(Some(timeout)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(_) => return None,
            }
        }
        Some((
            String::from_utf8_lossy(&got).into_owned(),
            self.opened.elapsed(),
        ))
    }
}

impl Drop for Dribbler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The value of `switchboard_admin_connections{slot="general"}`.
fn general_slots_busy(admin: SocketAddr) -> Option<u64> {
    let r = request(admin, "GET", "/metrics", None, b"");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("switchboard_admin_connections{slot=\"general\"} "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn probes_are_answered_while_slow_clients_hold_every_slot() {
    let node = Node::start(&["--workers", "1"]);
    let admin = node.admin.unwrap();
    // 20 dribblers: 16 hold every general slot, the rest probe slots.
    let mut dribblers: Vec<Dribbler> = (0..20).map(|_| Dribbler::open(admin)).collect();
    // Once the 16 general slots are held (the metrics scrape itself is then
    // in a probe slot)...
    assert!(
        wait_until(Duration::from_secs(5), || general_slots_busy(admin)
            == Some(16)),
        "the dribblers never held the 16 general slots"
    );
    // ...the probes are answered at once, and other paths get 503.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let t0 = Instant::now();
        let r = request(admin, "GET", path, None, b"");
        assert_eq!(
            r.status, 200,
            "{path} while slow clients hold the slots: {}",
            r.head
        );
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "{path} took {:?}",
            t0.elapsed()
        );
    }
    let r = request(admin, "GET", "/connections", None, b"");
    assert_eq!(r.status, 503, "{}", r.head);
    assert_eq!(r.json()["error"], "overloaded");

    // Every dribbler is answered 408 and closed by the head deadline: 10 s
    // for a general slot, 2 s for a probe slot, however fast it dribbles.
    for d in &mut dribblers {
        let (answer, after) = d
            .wait_closed(Duration::from_secs(20))
            .expect("a dribbler was still open 20 s after it connected");
        assert!(
            answer.starts_with("HTTP/1.1 408") && answer.contains("request_timeout"),
            "{answer}"
        );
        assert!(after < Duration::from_secs(13), "closed after {after:?}");
    }
    let m =
        String::from_utf8_lossy(&request(admin, "GET", "/metrics", None, b"").body).into_owned();
    assert!(
        m.contains("switchboard_admin_refused_total{reason=\"timeout\"} 20"),
        "{m}"
    );
    // The slots are free again (but for the scrape's own; the previous
    // scrape's slot is released when its connection's close is read, which
    // a loaded machine may not have done yet).
    assert!(
        wait_until(Duration::from_secs(5), || general_slots_busy(admin)
            == Some(1)),
        "general slots still busy: {:?}",
        general_slots_busy(admin)
    );
    assert_eq!(request(admin, "GET", "/connections", None, b"").status, 200);
}

/// Sends `GET path` with `host` (`None`: no Host line) on the admin
/// listener and returns the status and body.
fn admin_with_host(admin: SocketAddr, version: &str, host: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let host_line = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    s.write_all(format!("GET /connections HTTP/{version}\r\n{host_line}\r\n").as_bytes())
        .unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    let status = got
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, got)
}

#[test]
fn admin_answers_only_hosts_that_name_it() {
    let node = Node::start(&["--workers", "1", "--admin-hosts", "ops.internal, [fd00::9]"]);
    let admin = node.admin.unwrap();
    let port = admin.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
        format!("OPS.internal:{port}"),
        "[fd00::9]:1".to_string(),
    ] {
        let (status, got) = admin_with_host(admin, "1.1", Some(&host));
        assert_eq!(status, 200, "Host {host}: {got}");
    }
    // DNS rebinding: a page on evil.example whose name now resolves to the
    // admin address; the browser sends the page's own name.
    for host in [
        format!("evil.example:{port}"),
        "localhost.evil.example".to_string(),
        format!("10.9.9.9:{port}"),
    ] {
        let (status, got) = admin_with_host(admin, "1.1", Some(&host));
        assert_eq!(status, 421, "Host {host}: {got}");
        assert!(got.contains("misdirected_request"), "{got}");
    }
    // HTTP/1.1 requires Host; HTTP/1.0 may omit it.
    assert_eq!(admin_with_host(admin, "1.1", None).0, 400);
    assert_eq!(admin_with_host(admin, "1.0", None).0, 200);
    let m =
        String::from_utf8_lossy(&request(admin, "GET", "/metrics", None, b"").body).into_owned();
    assert!(
        m.contains("switchboard_admin_refused_total{reason=\"host\"} 3"),
        "{m}"
    );

    // `*` answers any name.
    let node = Node::start(&["--workers", "1", "--admin-hosts", "*"]);
    let (status, got) = admin_with_host(node.admin.unwrap(), "1.1", Some("evil.example"));
    assert_eq!(status, 200, "{got}");
}
