//! `/metrics`: strict Prometheus text, and the counters it exposes (socket
//! writes per burst and per pipelined batch among them).

use super::*;

/// One sample line of the Prometheus text format.
#[derive(Debug)]
pub(super) struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the exposition text strictly: `# HELP name text`, `# TYPE name kind`,
/// and `name{k="v",...} value` lines; panics on anything else.
fn parse_metrics(text: &str) -> (Vec<Sample>, BTreeSet<String>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut help = BTreeSet::new();
    let mut types = BTreeMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad HELP: {line:?}"));
            assert!(
                name_ok(name) && !text.trim().is_empty(),
                "bad HELP: {line:?}"
            );
            assert!(help.insert(name.to_string()), "HELP twice for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad TYPE: {line:?}"));
            assert!(name_ok(name), "bad TYPE: {line:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE kind: {line:?}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice for {name}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment line {line:?}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                let mut labels = BTreeMap::new();
                for pair in inner.split(',') {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(name_ok(k), "bad label name in {line:?}");
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
                    assert!(!v.contains('"'), "quote inside label value: {line:?}");
                    labels.insert(k.to_string(), v.to_string());
                }
                (name, labels)
            }
        };
        assert!(name_ok(name), "bad metric name in {line:?}");
        assert!(
            types.contains_key(name) && help.contains(name),
            "sample {line:?} before its # HELP / # TYPE"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    (samples, help, types)
}

pub(super) fn metrics(node: &Node) -> Vec<Sample> {
    let r = admin(node, "/metrics");
    assert_eq!(r.status, 200, "{}", r.head);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "metrics content-type {ct:?}");
    let text = String::from_utf8(r.body).expect("metrics are UTF-8");
    let (samples, help, types) = parse_metrics(&text);
    for s in &samples {
        assert!(
            help.contains(&s.name) && types.contains_key(&s.name),
            "{} lacks HELP/TYPE",
            s.name
        );
    }
    for name in help.iter() {
        assert!(types.contains_key(name), "{name} has HELP but no TYPE");
    }
    samples
}

/// The value of `name` with exactly `labels`.
pub(super) fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// Events appended for one client in one loop iteration go out in two writes
/// (the first at once, the rest together at the end of the iteration): five
/// pipelined sends (one read, one iteration on a single worker) reach the
/// receiver complete and in order.
#[test]
fn a_burst_for_one_client_goes_out_in_two_writes() {
    let node = Node::start(&["--workers", "1"]);
    let agent = token("acme", "agent-1", Role::Agent);
    let console = token("acme", "console-1", Role::Console);
    let mut rx = Receiver::open(node.addr, &agent, &[]);
    rx.ready();
    let before = metric(&metrics(&node), "switchboard_stream_writes_total", &[])
        .expect("stream_writes_total");
    let bodies: Vec<String> = (1..=5).map(|i| format!("b{i}")).collect();
    send_burst(node.addr, &console, "agent-1", &bodies);
    for i in 1..=5 {
        rx.expect_message("console-1", &format!("b{i}"));
    }
    let writes = metric(&metrics(&node), "switchboard_stream_writes_total", &[])
        .expect("stream_writes_total")
        - before;
    assert!(
        (1.0..=2.0).contains(&writes),
        "{writes} writes for 5 events sent in one burst"
    );
}

/// The events of the second and later requests of a pipelined batch wait for
/// the end of the iteration and go out one write per client: 40 sends to 20
/// clients (two each) read in one go take one write for the first event and
/// then one per client, 21 in all; writing every client's first event at once
/// would take 40.
#[test]
fn a_pipelined_batch_writes_its_events_at_the_end_of_the_iteration() {
    let node = Node::start(&["--workers", "1"]);
    let console = token("acme", "console-1", Role::Console);
    let mut rxs: Vec<Receiver> = (1..=20)
        .map(|i| {
            Receiver::open(
                node.addr,
                &token("acme", &format!("agent-{i}"), Role::Agent),
                &[],
            )
        })
        .collect();
    for rx in &mut rxs {
        rx.ready();
    }
    let before = metric(&metrics(&node), "switchboard_stream_writes_total", &[])
        .expect("stream_writes_total");
    let batch: String = (1..=2)
        .flat_map(|round| (1..=20).map(move |i| (round, i)))
        .map(|(round, i)| send_text(&format!("agent-{i}"), &console, &format!("r{round}")))
        .collect();
    let mut http = Http::connect(node.addr);
    http.send_raw(batch.as_bytes());
    for i in 1..=40 {
        let r = http.read_response().unwrap_or_else(|| panic!("answer {i}"));
        assert_eq!(r.status, 202, "answer {i}: {}", r.head);
    }
    for rx in &mut rxs {
        rx.expect_message("console-1", "r1");
        rx.expect_message("console-1", "r2");
    }
    let writes = metric(&metrics(&node), "switchboard_stream_writes_total", &[])
        .expect("stream_writes_total")
        - before;
    assert_eq!(
        writes, 21.0,
        "writes for 40 events to 20 clients in one pipelined batch"
    );
}

#[test]
fn answers_to_pipelined_sends_go_out_in_one_write() {
    let node = Node::start(&["--workers", "1"]);
    let agent = token("acme", "agent-1", Role::Agent);
    let console = token("acme", "console-1", Role::Console);
    let mut rx = Receiver::open(node.addr, &agent, &[]);
    rx.ready();
    // Socket writes not counted as stream writes. A counter moves just after
    // its write, so the client may see the bytes first (the stream's head and
    // `ready` event too): read until two readings agree.
    let settled = || {
        let other = || {
            let m = metrics(&node);
            let count = |name: &str| metric(&m, name, &[]).unwrap_or_else(|| panic!("{name}"));
            count("switchboard_socket_writes_total") - count("switchboard_stream_writes_total")
        };
        let mut seen = other();
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = other();
            if now == seen || Instant::now() > until {
                return seen;
            }
            seen = now;
        }
    };
    let before = settled();
    // Five sends in one write: read together, answered together (each 202 is checked).
    let bodies: Vec<String> = (1..=5).map(|i| format!("p{i}")).collect();
    send_burst(node.addr, &console, "agent-1", &bodies);
    for i in 1..=5 {
        rx.expect_message("console-1", &format!("p{i}"));
    }
    let seen = settled() - before;
    assert_eq!(seen, 1.0, "writes for the five answers");
}

#[test]
fn metrics_are_prometheus_text_and_count() {
    let node = Node::start(&["--workers", "2"]);
    let agent = token("acme", "agent-1", Role::Agent);
    let console = token("acme", "console-1", Role::Console);
    let mut rx_a = Receiver::open(node.addr, &agent, &[]);
    rx_a.ready();
    let mut rx_c = Receiver::open(node.addr, &console, &[]);
    rx_c.ready();

    let r = send(node.addr, &console, "agent-1", "hello metrics");
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    rx_a.expect_message("console-1", "hello metrics");

    let r = request(node.addr, "GET", "/v1/clients", Some("not-a-token"), b"");
    assert_eq!(r.status, 401);
    let code = r.json()["error"].as_str().expect("error code").to_string();

    let m = metrics(&node);
    let accepted =
        metric(&m, "switchboard_messages_accepted_total", &[]).expect("messages_accepted_total");
    assert!(accepted >= 1.0, "messages_accepted_total {accepted}");
    let relayed =
        metric(&m, "switchboard_messages_relayed_total", &[]).expect("messages_relayed_total");
    assert!(relayed >= 1.0, "messages_relayed_total {relayed}");
    assert_eq!(
        metric(&m, "switchboard_connections", &[("kind", "receive")]),
        Some(2.0),
        "two receive connections are open"
    );
    let reasons: Vec<&Sample> = m
        .iter()
        .filter(|s| s.name == "switchboard_connections_closed_total")
        .collect();
    assert!(!reasons.is_empty(), "no connections_closed_total samples");
    for s in &reasons {
        assert!(
            s.labels.keys().eq(["reason"].iter().copied()) && !s.labels["reason"].is_empty(),
            "closed_total without a reason label: {s:?}"
        );
    }
    for reason in [
        "peer_closed",
        "handshake_timeout",
        "idle_timeout",
        "shutdown",
        "panic",
    ] {
        assert!(
            reasons.iter().any(|s| s.labels["reason"] == reason),
            "no closed_total{{reason=\"{reason}\"}}"
        );
    }
    let errs = m
        .iter()
        .find(|s| {
            s.name == "switchboard_request_errors_total"
                && s.labels.get("code").map(String::as_str) == Some(code.as_str())
                && s.labels.get("status").map(String::as_str) == Some("401")
        })
        .unwrap_or_else(|| panic!("no request_errors_total{{status=\"401\",code=\"{code}\"}}"));
    assert!(errs.value >= 1.0, "{errs:?}");
    let fds = metric(&m, "switchboard_process_open_fds", &[]).expect("process_open_fds");
    assert!(fds > 0.0, "open fds {fds}");
    let rss = metric(&m, "switchboard_process_resident_memory_bytes", &[]).expect("rss");
    assert!(rss > 0.0, "rss {rss}");
    assert_eq!(metric(&m, "switchboard_panics_total", &[]), Some(0.0));
    assert_eq!(metric(&m, "switchboard_draining", &[]), Some(0.0));

    // The receive gauge follows closes.
    drop(rx_c);
    assert!(
        wait_until(WAIT, || {
            metric(
                &metrics(&node),
                "switchboard_connections",
                &[("kind", "receive")],
            ) == Some(1.0)
        }),
        "receive gauge did not drop to 1 after a receiver went away"
    );
    let m = metrics(&node);
    let peer_closed = metric(
        &m,
        "switchboard_connections_closed_total",
        &[("reason", "peer_closed")],
    )
    .unwrap();
    assert!(peer_closed >= 1.0, "peer_closed {peer_closed}");
}
