//! The rate of new connections per source address
//! (`--max-new-connections-per-address`).

use std::io::Write;
use std::net::IpAddr;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn one_address_over_its_connection_rate_is_refused_and_others_are_not() {
    let _g = serial();
    let node = Node::start(&["--workers", "2", "--max-new-connections-per-address", "20"]);
    let tok = console_tok();
    // Before the flood: a receiver and a keep-alive sender from 127.0.0.1.
    let mut rx = open_rx(&node, "agent-1");
    let mut keep = Http::connect(node.addr);
    assert_eq!(
        keep.request("POST", "/v1/send/agent-1", Some(&tok), b"before")
            .status,
        202
    );
    rx.expect_message("console-1", "before");
    // 127.0.0.1 opens connections in a loop, each asking for the client list: the
    // burst is admitted, then 429 with Retry-After, then (far over the
    // rate) closed at once without an answer.
    let req = format!("GET /v1/clients HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n");
    let (mut admitted, mut limited, mut closed) = (0, 0, 0);
    for _ in 0..500 {
        let mut h = Http::connect_from(node.addr, ip("127.0.0.1"));
        let _ = h.stream.write_all(req.as_bytes());
        match h.read_response() {
            Some(r) if r.status == 200 => admitted += 1,
            Some(r) => {
                assert_error(&r, 429, "rate_limited");
                let secs: u64 = r
                    .header("retry-after")
                    .expect("Retry-After")
                    .parse()
                    .unwrap();
                assert!((1..=2).contains(&secs), "Retry-After {secs}");
                assert_eq!(r.header("connection").as_deref(), Some("close"));
                limited += 1;
            }
            None => {
                closed += 1;
                if closed >= 3 {
                    break;
                }
            }
        }
    }
    assert!(
        limited >= 1,
        "no 429 ({admitted} admitted, {closed} closed)"
    );
    assert!(
        closed >= 3,
        "no connection closed at once ({admitted} admitted, {limited} limited)"
    );
    assert!(admitted <= 40, "{admitted} admitted at 20 per second");
    // Another address is not affected, nor are connections already open.
    let mut other = Http::connect_from(node.addr, ip("127.0.0.2"));
    assert_eq!(
        other
            .request("POST", "/v1/send/agent-1", Some(&tok), b"other")
            .status,
        202
    );
    rx.expect_message("console-1", "other");
    assert_eq!(
        keep.request("POST", "/v1/send/agent-1", Some(&tok), b"kept")
            .status,
        202
    );
    rx.expect_message("console-1", "kept");
    // Counted, and logged.
    let mut admin = Http::connect(node.admin.expect("admin listener"));
    let m = String::from_utf8(admin.request("GET", "/metrics", None, b"").body).unwrap();
    let count = |action: &str| -> u64 {
        let key = format!("switchboard_connections_rate_limited_total{{action=\"{action}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in metrics"))
    };
    assert!(count("answered") >= limited, "{m}");
    assert!(count("closed") >= closed, "{m}");
    assert!(node.wait_log("over --max-new-connections-per-address 20"));
    // Once the address slows down, it is admitted again.
    assert!(
        wait_until(WAIT, || {
            let mut h = Http::connect_from(node.addr, ip("127.0.0.1"));
            let _ = h.stream.write_all(req.as_bytes());
            h.read_response().is_some_and(|r| r.status == 200)
        }),
        "127.0.0.1 not admitted again"
    );
    assert_no_error_log(&node);
}
