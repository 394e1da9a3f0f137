//! How clients are spread over workers (`--shard-by`). By account, the
//! default: every client of an account is on one worker, and a keep-alive
//! send connection accepted by another worker moves there with its first
//! send (and whatever it sent after it), so its later messages never cross
//! workers. By client: clients are spread one by one and send connections
//! stay where they were accepted.

use super::*;

/// Receive connections of agent-1 ..= agent-`n` of ACCT on `node`, past
/// their `ready` event, with the worker each one is on.
fn agents_with_workers(node: &Node, n: usize) -> Vec<(Receiver, u64)> {
    (1..=n)
        .map(|i| {
            let tok = token(ACCT, &format!("agent-{i}"), Role::Agent);
            let mut rx = Receiver::open(node.addr, &tok, &[]);
            rx.ready();
            let w = worker_of(node, rx.stream.local_addr().unwrap());
            (rx, w)
        })
        .collect()
}

/// The value of counter `name` in the node's `/metrics`.
fn counter(node: &Node, name: &str) -> u64 {
    let r = request(node.admin.unwrap(), "GET", "/metrics", None, b"");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// A node started with `args`, agent-1 of ACCT online on it (its receiver
/// and the worker it is on), and console-1's token.
fn node_with_agent(args: &[&str]) -> (Node, Receiver, u64, String) {
    let node = Node::start(args);
    let (agent, home) = agents_with_workers(&node, 1).pop().expect("one agent");
    (node, agent, home, token(ACCT, "console-1", Role::Console))
}

/// Sends `body` to agent-1 on `http` with `tok` and asserts the 202 (`what`
/// names the send in the failure message).
fn send_ok(http: &mut Http, tok: &str, body: &str, what: &str) -> Response {
    let r = http.request("POST", "/v1/send/agent-1", Some(tok), body.as_bytes());
    assert_eq!(r.status, 202, "{what}: {}", r.head);
    r
}

#[test]
fn by_account_every_client_of_an_account_is_on_one_worker() {
    let node = Node::start(&["--workers", "4"]);
    let agents = agents_with_workers(&node, 6);
    let home = agents[0].1;
    for (i, (_, w)) in agents.iter().enumerate() {
        assert_eq!(
            *w,
            home,
            "agent-{} is on worker {w}, agent-1 on {home}",
            i + 1
        );
    }
}

#[test]
fn by_client_the_clients_of_an_account_are_spread() {
    let node = Node::start(&["--workers", "4", "--shard-by", "client"]);
    // Six clients over four workers all on one: 1 in 1,024 if spread at random.
    let agents = agents_with_workers(&node, 6);
    assert!(
        agents.iter().any(|(_, w)| *w != agents[0].1),
        "all six clients on worker {}",
        agents[0].1
    );
}

/// Eight keep-alive send connections (with four workers most are accepted by
/// a worker that does not own the account): from its first answer on, each
/// is on the recipient's worker, and every message arrives once, in order,
/// with the id its answer gave.
#[test]
fn a_send_connection_moves_to_its_accounts_worker_and_stays() {
    let (node, mut agent, home, tok) = node_with_agent(&["--workers", "4"]);
    for c in 0..8 {
        let mut http = Http::connect(node.addr);
        let local = http.stream.local_addr().unwrap();
        let mut ids = Vec::new();
        for i in 0..3 {
            let r = send_ok(
                &mut http,
                &tok,
                &format!("c{c} m{i}"),
                &format!("connection {c}, send {i}"),
            );
            ids.push(r.json()["id"].as_str().expect("id").to_string());
            let w = worker_of(&node, local);
            assert_eq!(
                w, home,
                "connection {c} on worker {w} after send {i}, the account is on {home}"
            );
        }
        for (i, id) in ids.iter().enumerate() {
            let ev = agent.expect_message("console-1", &format!("c{c} m{i}"));
            assert_eq!(ev.id.as_ref(), Some(id), "connection {c}, message {i}");
        }
    }
    // No send crossed workers: the connections moved instead.
    assert_eq!(counter(&node, "switchboard_cross_worker_sends_total"), 0);
    assert!(counter(&node, "switchboard_connections_moved_total") > 0);
}

/// By client, a send connection stays on the worker that accepted it: of
/// eight, at least one is not on the recipient's worker (all eight on it:
/// 1 in 65,536 with four workers).
#[test]
fn by_client_a_send_connection_stays_where_it_was_accepted() {
    let (node, mut agent, home, tok) = node_with_agent(&["--workers", "4", "--shard-by", "client"]);
    let mut elsewhere = 0;
    for c in 0..8 {
        let mut http = Http::connect(node.addr);
        let local = http.stream.local_addr().unwrap();
        for i in 0..2 {
            send_ok(
                &mut http,
                &tok,
                &format!("c{c} m{i}"),
                &format!("connection {c}, send {i}"),
            );
        }
        if worker_of(&node, local) != home {
            elsewhere += 1;
        }
        for i in 0..2 {
            agent.expect_message("console-1", &format!("c{c} m{i}"));
        }
    }
    assert!(
        elsewhere > 0,
        "all eight send connections on the recipient's worker"
    );
    // Each send of a connection that stayed elsewhere crossed workers.
    assert_eq!(
        counter(&node, "switchboard_cross_worker_sends_total"),
        2 * elsewhere
    );
}

/// The input that arrives with the first send moves with the connection: a
/// whole send and the first half of the next one in one write, the rest in
/// a second write (after the move), then a pipelined batch; every answer
/// comes in order and every message arrives once, in order.
#[test]
fn input_read_with_the_first_send_moves_with_the_connection() {
    let (node, mut agent, home, tok) = node_with_agent(&["--workers", "4"]);
    for c in 0..6 {
        let mut http = Http::connect(node.addr);
        let local = http.stream.local_addr().unwrap();
        let second = send_text("agent-1", &tok, &format!("c{c} second"));
        let cut = second.len() / 2;
        let mut first = send_text("agent-1", &tok, &format!("c{c} first"));
        first.push_str(&second[..cut]);
        http.send_raw(first.as_bytes());
        let r = http.read_response().expect("answer to the first send");
        assert_eq!(r.status, 202, "connection {c}: {}", r.head);
        assert_eq!(worker_of(&node, local), home, "connection {c} did not move");
        http.send_raw(&second.as_bytes()[cut..]);
        let batch: String = (0..10)
            .map(|i| send_text("agent-1", &tok, &format!("c{c} p{i}")))
            .collect();
        http.send_raw(batch.as_bytes());
        for n in 0..11 {
            let r = http
                .read_response()
                .unwrap_or_else(|| panic!("connection {c}: no answer {n}"));
            assert_eq!(r.status, 202, "connection {c}, answer {n}: {}", r.head);
        }
        agent.expect_message("console-1", &format!("c{c} first"));
        agent.expect_message("console-1", &format!("c{c} second"));
        for i in 0..10 {
            agent.expect_message("console-1", &format!("c{c} p{i}"));
        }
    }
}

/// By account, a client list is asked of the one worker that holds the
/// account (or answered alone there): from connections on every worker it
/// shows every online client, and nothing of another account.
#[test]
fn by_account_a_client_list_from_any_worker_is_whole() {
    let node = Node::start(&["--workers", "4"]);
    let _agents = agents_with_workers(&node, 3);
    let other = token("other", "agent-9", Role::Agent);
    let mut stranger = Receiver::open(node.addr, &other, &[]);
    stranger.ready();
    let tok = token(ACCT, "console-1", Role::Console);
    for c in 0..8 {
        let mut http = Http::connect(node.addr);
        let r = http.request("GET", "/v1/clients", Some(&tok), b"");
        assert_eq!(r.status, 200, "connection {c}: {}", r.head);
        let mut names: Vec<String> = r.json()["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .map(|c| c["client"].as_str().unwrap_or("").to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["agent-1", "agent-2", "agent-3"], "connection {c}");
    }
}

/// Send connections that moved and then close leave nothing behind: the
/// request-connection gauge (summed over the workers, each of which counted
/// the connection while it had it) returns to 0, and `/connections` lists
/// only the receive connection.
#[test]
fn moved_send_connections_that_close_leave_nothing_behind() {
    let (node, mut agent, _, tok) = node_with_agent(&["--workers", "4"]);
    for c in 0..20 {
        let mut http = Http::connect(node.addr);
        for i in 0..2 {
            send_ok(
                &mut http,
                &tok,
                &format!("c{c} m{i}"),
                &format!("connection {c}, send {i}"),
            );
        }
        drop(http);
        for i in 0..2 {
            agent.expect_message("console-1", &format!("c{c} m{i}"));
        }
    }
    assert!(counter(&node, "switchboard_connections_moved_total") > 1);
    let gauge_zero = wait_until(WAIT, || {
        counter(&node, "switchboard_connections{kind=\"request\"}") == 0
    });
    assert!(
        gauge_zero,
        "request connections still counted after all closed"
    );
    let r = request(node.admin.unwrap(), "GET", "/connections", None, b"");
    let listed = r.json()["connections"].as_array().map_or(0, |l| l.len());
    assert_eq!(
        listed,
        1,
        "only the receive connection should be listed: {}",
        r.json()
    );
}

/// A send connection that moved and then goes quiet is closed by the worker
/// it moved to after `--idle-timeout`, as any other keep-alive connection.
#[test]
fn a_moved_send_connection_that_goes_quiet_is_closed_at_its_idle_timeout() {
    let (node, mut agent, home, tok) = node_with_agent(&["--workers", "4", "--idle-timeout", "1s"]);
    let mut conns = Vec::new();
    for c in 0..6 {
        let mut http = Http::connect(node.addr);
        let local = http.stream.local_addr().unwrap();
        send_ok(
            &mut http,
            &tok,
            &format!("c{c}"),
            &format!("connection {c}"),
        );
        assert_eq!(worker_of(&node, local), home, "connection {c} did not move");
        agent.expect_message("console-1", &format!("c{c}"));
        conns.push(http);
    }
    for (c, http) in conns.iter_mut().enumerate() {
        assert!(
            http.closed_within(WAIT),
            "connection {c} still open well after its idle timeout"
        );
    }
}
