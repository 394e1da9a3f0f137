//! Hostile clients: slowloris, oversized and malformed requests, forged
//! tokens, receivers that stop reading, connection caps, descriptor
//! exhaustion and connection churn. Every test also checks that other,
//! well-behaved connections are unaffected.
//!
//! The tests run one at a time (a shared lock): several of them measure
//! latency, CPU time or descriptor counts, which parallel tests would disturb.

#[path = "../common/mod.rs"]
mod common;

mod admission;
mod requests;
mod resources;
mod slow_receivers;
mod slowloris;
mod tokens;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use switchboard::auth::Role;

const ACCT: &str = "acme";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn console_tok() -> String {
    token(ACCT, "console-1", Role::Console)
}

/// Opens `client`'s stream in `ACCT` and reads `ready`.
fn open_rx(node: &Node, client: &str) -> Receiver {
    let mut rx = Receiver::open(node.addr, &token(ACCT, client, Role::Agent), &[]);
    rx.ready();
    rx
}

/// Sends `body` to `to` and asserts it reaches `rx` within `limit`; returns the latency.
fn arrives_within(
    node: &Node,
    rx: &mut Receiver,
    to: &str,
    body: &str,
    limit: Duration,
) -> Duration {
    let t = Instant::now();
    let r = send(node.addr, &console_tok(), to, body);
    assert_eq!(
        r.status,
        202,
        "send {body:?}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let ev = rx
        .next_event_within(limit + Duration::from_secs(2))
        .unwrap_or_else(|| panic!("healthy receiver got nothing for {body:?}"));
    let el = t.elapsed();
    assert_eq!(ev.event, "message", "{ev:?}");
    assert_eq!(ev.json()["body"], body, "{ev:?}");
    assert!(el < limit, "message {body:?} took {el:?} (limit {limit:?})");
    el
}

/// The node's /metrics text.
fn metrics_text(node: &Node) -> String {
    let r = request(node.admin.expect("admin"), "GET", "/metrics", None, b"");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).expect("utf-8 metrics")
}

/// The value of the sample `series` (name with labels exactly as printed).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no sample {series} in metrics"))
}

fn metric_now(node: &Node, series: &str) -> f64 {
    metric(&metrics_text(node), series)
}

fn assert_no_error_log(node: &Node) {
    let log = node.log.lock().unwrap().clone();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("[ERROR]")).collect();
    assert!(errors.is_empty(), "node logged errors: {errors:#?}");
}

/// Asserts a JSON error answer that says `Connection: close`, and that the server closes.
fn assert_closing_error(r: &Response, h: &mut Http, status: u16, code: &str) {
    assert_error(r, status, code);
    assert_eq!(
        r.header("connection")
            .map(|v| v.to_ascii_lowercase())
            .as_deref(),
        Some("close"),
        "{}",
        r.head
    );
    assert!(
        h.closed_within(Duration::from_secs(3)),
        "connection not closed after {status} {code}"
    );
}
