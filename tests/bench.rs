//! The load generator (`switchboard-bench`) against the real server: a small
//! idle run and a short relay run, so that a change to the harness that
//! breaks a scenario (or its JSON summary) fails here and not in a
//! benchmark hours later. Real binaries, real sockets; no timing is asserted.

mod common;

use std::process::Command;

use common::{Node, SECRET};

/// Runs `switchboard-bench ARGS` and parses its JSON summary from stdout.
fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard-bench"))
        .args(args)
        .env("SWITCHBOARD_SECRET", SECRET)
        .output()
        .expect("run switchboard-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "switchboard-bench {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("summary is not JSON ({e}):\n{stdout}"))
}

#[test]
fn idle_scenario_measures_the_server_after_a_warm_up() {
    let node = Node::start(&["--workers", "2"]);
    let addr = node.addr.to_string();
    let pid = node.child.id().to_string();
    let j = bench(&[
        "idle",
        "--server",
        &addr,
        "--pid",
        &pid,
        "--connections",
        "60",
        "--warmup",
        "10",
        "--settle-min",
        "0",
        "--settle-max",
        "2",
        "--hold",
        "0",
    ]);
    assert_eq!(j["established"], 60, "{j}");
    assert_eq!(j["warmup_established"], 10, "{j}");
    assert_eq!(j["failed"], 0, "{j}");
    for k in [
        "pss_bytes_per_conn",
        "rss_anon_bytes_per_conn",
        "pss_bytes_per_conn_cold",
    ] {
        assert!(j[k].is_number(), "{k} in {j}");
    }
}

#[test]
fn relay_scenario_delivers_every_message_exactly_once() {
    let node = Node::start(&["--workers", "2"]);
    let addr = node.addr.to_string();
    let pid = node.child.id().to_string();
    let j = bench(&[
        "relay",
        "--server",
        &addr,
        "--pid",
        &pid,
        "--receivers",
        "20",
        "--senders",
        "4",
        "--size",
        "100",
        "--duration",
        "1",
    ]);
    assert!(j["delivered"].as_u64().unwrap_or(0) > 0, "{j}");
    assert_eq!(j["exactly_once"]["ok"], true, "{j}");
    assert_eq!(j["rejected"], 0, "{j}");
    assert!(j["latency_us"]["p99"].is_number(), "{j}");
}
