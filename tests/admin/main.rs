//! End-to-end tests of the admin listener: `/info`, `/connections`,
//! `/metrics`, `/healthz`, `/readyz`, `/debug/pprof/profile`,
//! `/debug/memory`, and its error answers. Real binary, real sockets.
//! `/metrics` (the exposition format and what it counts) is in `prometheus`.

#[path = "../common/mod.rs"]
mod common;

mod hardening;
mod prometheus;
mod retention;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use prometheus::{metric, metrics};
use switchboard::auth::Role;

/// GET `path` on the admin listener.
fn admin(node: &Node, path: &str) -> Response {
    let a = node.admin.expect("the node has an admin listener");
    request(a, "GET", path, None, b"")
}

/// GET `path` on the admin listener; asserts 200 JSON and returns the body.
fn admin_json(node: &Node, path: &str) -> serde_json::Value {
    let r = admin(node, path);
    assert_ok_as(&r, "application/json", &format!("GET {path}"));
    r.json()
}

/// Asserts that `r` (the answer to `what`) is a 200 whose content type starts with `ct`.
fn assert_ok_as(r: &Response, ct: &str, what: &str) {
    assert_eq!(
        r.status,
        200,
        "{what}: {} {:?}",
        r.head,
        String::from_utf8_lossy(&r.body)
    );
    let got = r.header("content-type").unwrap_or_default();
    assert!(got.starts_with(ct), "{what}: content-type {got:?}");
}

/// True if `s` is `n` or more characters all satisfying `f`.
fn all_of(s: &str, min: usize, f: impl Fn(char) -> bool) -> bool {
    s.chars().count() >= min && s.chars().all(f)
}

/// `^\d+\.\d+\.\d+\+\d+\.([0-9a-f]{7,}|unknown)\.\d{8}T\d{6}Z$`, by hand.
fn version_ok(v: &str) -> bool {
    let digit = |c: char| c.is_ascii_digit();
    let Some((semver, build)) = v.split_once('+') else {
        return false;
    };
    let sv: Vec<&str> = semver.split('.').collect();
    if sv.len() != 3 || !sv.iter().all(|p| all_of(p, 1, digit)) {
        return false;
    }
    let b: Vec<&str> = build.split('.').collect();
    if b.len() != 3 || !all_of(b[0], 1, digit) {
        return false;
    }
    let sha_ok =
        b[1] == "unknown" || all_of(b[1], 7, |c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    let t = b[2];
    let time_ok = t.len() == 16
        && all_of(&t[..8], 8, digit)
        && &t[8..9] == "T"
        && all_of(&t[9..15], 6, digit)
        && &t[15..] == "Z";
    sha_ok && time_ok
}

/// `\d+s`, `\d+m\d+s` or `\d+h\d+m\d+s`; returns the seconds.
fn uptime_secs(s: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut num = String::new();
    let mut units = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            let n: u64 = num.parse().ok()?;
            num.clear();
            total += n * match c {
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return None,
            };
            units.push(c);
        }
    }
    if !num.is_empty() || !["s", "ms", "hms"].contains(&units.as_str()) {
        return None;
    }
    Some(total)
}

#[test]
fn version_and_uptime_matchers() {
    assert!(version_ok("0.1.0+8.630b2911.20261123T185832Z"));
    assert!(version_ok("10.21.3+0.unknown.19700101T000000Z"));
    assert!(!version_ok("0.1.0+8.630b29.20261123T185832Z"));
    assert!(!version_ok("0.1.0+8.630B2911.20261123T185832Z"));
    assert!(!version_ok("0.1+8.630b2911.20261123T185832Z"));
    assert!(!version_ok("0.1.0+8.630b2911.20261123T185832"));
    assert!(!version_ok("0.1.0-8.630b2911.20261123T185832Z"));
    assert_eq!(uptime_secs("0s"), Some(0));
    assert_eq!(uptime_secs("1m2s"), Some(62));
    assert_eq!(uptime_secs("167h10m2s"), Some(167 * 3600 + 602));
    assert_eq!(uptime_secs("1h2s"), None);
    assert_eq!(uptime_secs("12"), None);
}

#[test]
fn info_reports_version_node_and_times() {
    let node = Node::start(&["--workers", "2", "--node-id", "node-admin-7"]);
    let j = admin_json(&node, "/info");
    let v = j["version"].as_str().expect("version string");
    assert!(
        version_ok(v),
        "version {v:?} does not match MAJOR.MINOR.PATCH+COUNT.SHA.UTC"
    );
    assert_eq!(j["node"], "node-admin-7", "{j}");
    let now = now_secs();
    let start = j["start_time"].as_u64().expect("start_time epoch seconds");
    let current = j["current_time"]
        .as_u64()
        .expect("current_time epoch seconds");
    assert!(
        now.abs_diff(current) <= 5,
        "current_time {current}, now {now}"
    );
    assert!(
        start <= current && current - start <= 30,
        "start_time {start}, current_time {current}"
    );
    let up = j["uptime"].as_str().expect("uptime string");
    let secs =
        uptime_secs(up).unwrap_or_else(|| panic!("uptime {up:?} is not like 5s / 3m5s / 2h3m5s"));
    assert!(
        secs <= current - start + 1,
        "uptime {up} vs start/current {start}/{current}"
    );
}

#[test]
fn connections_lists_filters_and_limits() {
    let node = Node::start(&["--workers", "2"]);
    let mut rxs = Vec::new();
    for (acct, client, role) in [
        ("acct-a", "agent-1", Role::Agent),
        ("acct-a", "console-1", Role::Console),
        ("acct-b", "agent-1", Role::Agent),
    ] {
        let mut rx = Receiver::open(node.addr, &token(acct, client, role), &[]);
        rx.ready();
        rxs.push(((acct, client, role), rx));
    }
    let receive_entries =
        |q: &str| -> serde_json::Value { admin_json(&node, &format!("/connections{q}")) };
    // The connections are attached by now (each got its ready event), but wait anyway.
    assert!(
        wait_until(WAIT, || receive_entries("")["matched"] == 3),
        "matched never became 3: {}",
        receive_entries("")
    );
    let all = receive_entries("");
    assert_eq!(all["truncated"], false, "{all}");
    let list = all["connections"].as_array().expect("connections array");
    assert_eq!(list.len(), 3, "{all}");
    let remotes: BTreeSet<String> = rxs
        .iter()
        .map(|(_, rx)| rx.stream.local_addr().unwrap().to_string())
        .collect();
    for c in list {
        for key in [
            "session",
            "account",
            "client",
            "role",
            "kind",
            "remote",
            "since_ms",
            "duration_ms",
            "bytes_in",
            "bytes_out",
            "queued_bytes",
        ] {
            assert!(
                c.get(key).is_some_and(|v| !v.is_null()),
                "no {key:?} in {c}"
            );
        }
        assert_eq!(c["kind"], "receive", "{c}");
        assert!(!c["session"].as_str().unwrap().is_empty(), "{c}");
        let remote = c["remote"].as_str().expect("remote string");
        assert!(
            remotes.contains(remote),
            "remote {remote} is none of ours {remotes:?}"
        );
        let since = c["since_ms"].as_u64().expect("since_ms");
        assert!(
            (now_secs() * 1000).abs_diff(since) < 30_000,
            "since_ms {since} is not a recent epoch ms"
        );
        assert!(c["duration_ms"].as_u64().is_some(), "{c}");
        // bytes_in is not asserted > 0: a receive connection handed to its
        // owner worker starts counting again there (the head was read elsewhere).
        assert!(c["bytes_in"].as_u64().is_some(), "{c}");
        assert!(
            c["bytes_out"].as_u64().unwrap() > 0,
            "the ready event was written: {c}"
        );
        assert_eq!(c["queued_bytes"], 0, "{c}");
        let key = (
            c["account"].as_str().unwrap(),
            c["client"].as_str().unwrap(),
            c["role"].as_str().unwrap(),
        );
        assert!(
            rxs.iter()
                .any(|((a, cl, r), _)| (*a, *cl, r.as_str()) == key),
            "unexpected entry {c}"
        );
    }

    let a = receive_entries("?account=acct-a");
    assert_eq!(a["matched"], 2, "{a}");
    let a_list = a["connections"].as_array().unwrap();
    assert_eq!(a_list.len(), 2, "{a}");
    assert!(a_list.iter().all(|c| c["account"] == "acct-a"), "{a}");

    let agents = receive_entries("?client=agent-1");
    assert_eq!(agents["matched"], 2, "{agents}");
    assert!(
        agents["connections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["client"] == "agent-1"),
        "{agents}"
    );
    let one = receive_entries("?account=acct-b&client=agent-1");
    assert_eq!(one["matched"], 1, "{one}");
    assert_eq!(one["connections"][0]["account"], "acct-b", "{one}");
    let none = receive_entries("?account=nobody");
    assert_eq!(none["matched"], 0, "{none}");
    assert_eq!(none["connections"].as_array().unwrap().len(), 0, "{none}");

    let lim = receive_entries("?limit=1");
    assert_eq!(lim["connections"].as_array().unwrap().len(), 1, "{lim}");
    assert_eq!(lim["truncated"], true, "{lim}");
    assert_eq!(lim["matched"], 3, "{lim}");

    for bad in ["?limit=abc", "?limit=-1", "?limit="] {
        let r = admin(&node, &format!("/connections{bad}"));
        assert_error(&r, 400, "bad_limit");
    }
    drop(rxs);
}

/// Sends SIGTERM to the node.
fn sigterm(node: &Node) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(node.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill(SIGTERM) failed");
}

#[test]
fn healthz_and_readyz_until_draining() {
    let mut node = Node::start(&["--workers", "2", "--drain-timeout", "5s"]);
    let h = admin(&node, "/healthz");
    assert_eq!(h.status, 200, "{}", h.head);
    let r = admin(&node, "/readyz");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.json()["ready"], true);

    // A receive connection keeps the draining node alive for a while.
    let mut rx = Receiver::open(node.addr, &token("acme", "agent-1", Role::Agent), &[]);
    rx.ready();
    sigterm(&node);
    let mut last = None;
    assert!(
        wait_until(WAIT, || {
            let r = admin(&node, "/readyz");
            let done = r.status == 503;
            last = Some(r);
            done
        }),
        "readyz never became 503 after SIGTERM: {last:?}"
    );
    let r = last.unwrap();
    let j = r.json();
    assert_eq!(j["ready"], false, "{j}");
    assert_eq!(j["reason"], "draining", "{j}");
    let info = admin_json(&node, "/info");
    assert_eq!(info["draining"], true, "{info}");
    let m = metrics(&node);
    assert_eq!(metric(&m, "switchboard_draining", &[]), Some(1.0));
    // Liveness is not readiness: still alive while draining.
    assert_eq!(admin(&node, "/healthz").status, 200);
    // The receiver is told to go elsewhere, and the node exits cleanly.
    rx.expect_event("reconnect");
    assert!(
        rx.closed_within(WAIT),
        "receive connection not closed after reconnect"
    );
    drop(rx);
    let mut status = None;
    assert!(
        wait_until(WAIT, || {
            status = node.child.try_wait().unwrap();
            status.is_some()
        }),
        "node did not exit after draining"
    );
    assert_eq!(status.unwrap().code(), Some(0), "{status:?}");
}

/// Starts `GET /debug/pprof/profile?seconds=N` and returns a handle to its answer.
fn profile_async(addr: SocketAddr, secs: u64) -> std::thread::JoinHandle<(Response, Duration)> {
    let mut h = Http::connect(addr);
    h.stream
        .set_read_timeout(Some(WAIT + Duration::from_secs(secs)))
        .unwrap();
    h.send_raw(
        format!("GET /debug/pprof/profile?seconds={secs} HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .as_bytes(),
    );
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let r = h.read_response().expect("profile answer");
        (r, t0.elapsed())
    })
}

fn assert_svg(r: &Response) {
    assert_ok_as(r, "image/svg+xml", "CPU profile");
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        body.starts_with("<?xml") || body.contains("<svg"),
        "not an SVG ({} bytes): {:?}",
        r.body.len(),
        &body[..body.len().min(200)]
    );
}

/// Keeps the node's workers busy (keep-alive `GET /v1/clients` in a loop) until dropped,
/// so that a CPU profile has samples.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize) -> Load {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|i| {
                let stop = stop.clone();
                let tok = token("load", &format!("console-{i}"), Role::Console);
                std::thread::spawn(move || {
                    let mut h = Http::connect(addr);
                    while !stop.load(Ordering::Relaxed) {
                        let r = h.request("GET", "/v1/clients", Some(&tok), b"");
                        assert_eq!(r.status, 200);
                    }
                })
            })
            .collect();
        Load { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn cpu_profile_svg_one_at_a_time() {
    let node = Node::start(&["--workers", "2"]);
    let addr = node.admin.unwrap();
    let _load = Load::start(node.addr, 2);
    let (r, took) = profile_async(addr, 1).join().unwrap();
    assert_svg(&r);
    assert!(
        took >= Duration::from_millis(900),
        "a 1 s profile took {took:?}"
    );

    for bad in ["seconds=0", "seconds=999", "seconds=abc"] {
        let r = admin(&node, &format!("/debug/pprof/profile?{bad}"));
        assert_error(&r, 400, "bad_seconds");
    }

    // Two at once: the one that comes second is refused with 409 while the first runs.
    let first = profile_async(addr, 2);
    // The first request's head is written; give the admin thread a moment to
    // start it (nothing observable says it has, short of a second profile).
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let second = admin(&node, "/debug/pprof/profile?seconds=1");
    let second_took = t0.elapsed();
    let (first, _) = first.join().unwrap();
    assert_svg(&first);
    assert_error(&second, 409, "profile_in_progress");
    assert!(
        second_took < Duration::from_millis(900),
        "the 409 waited {second_took:?}"
    );
    // And once the first is done, profiling works again.
    let (r, _) = profile_async(addr, 1).join().unwrap();
    assert_svg(&r);
}

#[test]
fn cpu_profile_of_an_idle_node_is_still_an_svg() {
    let node = Node::start(&["--workers", "1"]);
    let (r, _) = profile_async(node.admin.unwrap(), 1).join().unwrap();
    assert_svg(&r);
}

#[test]
fn memory_report() {
    let node = Node::start(&["--workers", "2"]);
    let mut rx = Receiver::open(node.addr, &token("acme", "agent-1", Role::Agent), &[]);
    rx.ready();
    let j = admin_json(&node, "/debug/memory");
    assert!(j["rss_bytes"].as_u64().expect("rss_bytes") > 0, "{j}");
    let sb = j["struct_bytes"]
        .as_object()
        .unwrap_or_else(|| panic!("struct_bytes object in {j}"));
    assert!(!sb.is_empty(), "{j}");
    for (k, v) in sb {
        assert!(v.as_u64().is_some_and(|n| n > 0), "struct_bytes.{k} = {v}");
    }
    assert!(
        sb.contains_key("connection") && sb.contains_key("session"),
        "{j}"
    );
    assert_eq!(j["receive_connections"], 1, "{j}");
    assert!(
        j["hold_total_bytes"]
            .as_u64()
            .is_some_and(|n| n >= 64 << 10),
        "{j}"
    );
    // One delivered message is retained (for replay): its body, its sender's
    // id and 64 bytes of bookkeeping.
    send_ok(
        node.addr,
        &token("acme", "console-1", Role::Console),
        "agent-1",
        "hello",
    );
    rx.expect_message("console-1", "hello");
    let mut m = serde_json::Value::Null;
    assert!(
        wait_until(WAIT, || {
            m = admin_json(&node, "/debug/memory");
            m["retained_messages"] == 1
        }),
        "{m}"
    );
    assert_eq!(m["retained_bytes"], 5 + 9 + 64, "{m}");
    // The allocator in use is named (the default build uses jemalloc).
    let name = j["allocator"]["name"].as_str().unwrap_or_default();
    assert!(name == "glibc malloc" || name == "jemalloc", "{j}");
    // jemalloc's heap totals: consistent with each other and with the process.
    let heap = &j["allocator"]["heap"];
    if name == "jemalloc" {
        let get = |k: &str| {
            heap[k]
                .as_u64()
                .unwrap_or_else(|| panic!("allocator.heap.{k} in {j}"))
        };
        let (allocated, active, resident) = (get("allocated"), get("active"), get("resident"));
        assert!(allocated > 0, "{j}");
        assert!(allocated <= active && active <= resident, "{j}");
        assert!(resident <= j["rss_bytes"].as_u64().unwrap_or(0) * 2, "{j}");
        get("metadata");
        get("retained");
    } else {
        assert!(heap.is_null(), "{j}");
    }
}

#[test]
fn admin_errors_and_separation_from_client_port() {
    let node = Node::start(&["--workers", "2"]);
    let a = node.admin.unwrap();
    assert_ne!(
        a.port(),
        node.addr.port(),
        "admin and client ports are the same"
    );

    let r = admin(&node, "/no/such/thing");
    assert_error(&r, 404, "not_found");
    let r = admin(&node, "/v1/receive");
    assert_error(&r, 404, "not_found");

    for path in ["/info", "/metrics", "/healthz"] {
        let r = request(a, "POST", path, None, b"x=1");
        assert_error(&r, 405, "method_not_allowed");
    }
    let r = request(a, "DELETE", "/connections", None, b"");
    assert!(
        r.status == 405 || r.status == 400,
        "DELETE got {}",
        r.status
    );

    // HEAD gets the head only.
    let mut h = Http::connect(a);
    h.send_raw(b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut raw = Vec::new();
    use std::io::Read;
    h.stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw:?}");
    assert!(raw.ends_with("\r\n\r\n"), "HEAD answer has a body: {raw:?}");

    // The client port does not serve admin endpoints.
    for path in ["/info", "/metrics", "/connections", "/healthz"] {
        let r = request(node.addr, "GET", path, None, b"");
        assert!(
            r.status == 404 || r.status == 401,
            "GET {path} on the client port: {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            !body.contains("\"version\"") && !body.contains("# TYPE"),
            "{body}"
        );
    }
    let tok = token("acme", "console-1", Role::Console);
    let r = request(node.addr, "GET", "/info", Some(&tok), b"");
    assert!(
        r.status == 404 || r.status == 401,
        "GET /info with a token on the client port: {}",
        r.status
    );
}

#[test]
fn admin_off_disables_the_listener() {
    let node = Node::start(&["--workers", "1", "--admin", "off"]);
    assert!(node.admin.is_none());
    // The client port still works.
    let tok = token("acme", "console-1", Role::Console);
    let r = request(node.addr, "GET", "/v1/clients", Some(&tok), b"");
    assert_eq!(r.status, 200);
}
