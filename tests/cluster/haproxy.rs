//! HAProxy balancing over two nodes.

use super::*;

// ---------------------------------------------------------------------------
// 7. HAProxy in front of two nodes
// ---------------------------------------------------------------------------

/// An `haproxy` child process; killed on drop.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Haproxy {
    fn start(backends: &[SocketAddr]) -> Haproxy {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-haproxy-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        for _ in 0..5 {
            let port = free_port();
            let mut cfg = format!(
                "global\n  maxconn 1000\n\n\
                 defaults\n  mode http\n  option http-server-close\n  timeout connect 2s\n  \
                 timeout client 30s\n  timeout server 30s\n  timeout tunnel 1h\n\n\
                 frontend fe\n  bind 127.0.0.1:{port}\n  default_backend nodes\n\n\
                 backend nodes\n  balance roundrobin\n"
            );
            for (i, b) in backends.iter().enumerate() {
                cfg.push_str(&format!("  server n{i} {b}\n"));
            }
            let path = dir.0.join("haproxy.cfg");
            std::fs::write(&path, cfg).unwrap();
            let mut child = Command::new(find_exe("haproxy"))
                .arg("-f")
                .arg(&path)
                .arg("-db")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn haproxy");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let up = wait_until(WAIT, || {
                matches!(child.try_wait(), Ok(Some(_)))
                    || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
            if up && matches!(child.try_wait(), Ok(None)) {
                return Haproxy {
                    child,
                    addr,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start haproxy");
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn haproxy_in_front_of_two_nodes() {
    let redis = Redis::start();
    let a = cluster_node(&redis, "a", &[]);
    let b = cluster_node(&redis, "b", &[]);
    let lb = Haproxy::start(&[a.addr, b.addr]);

    let (mut agent, ae) = open(lb.addr, "agent-1", &[]);
    let (mut console, ce) = open(lb.addr, "console-1", &[]);
    for c in ["agent-1", "console-1"] {
        wait_state_all(&[&a, &b], c, "online");
    }
    let accepted = |n: &Node| metric(n, "switchboard_connections_accepted_total").unwrap_or(0.0);
    let (a0, b0) = (accepted(&a), accepted(&b));

    const N: usize = 6;
    let mut to_agent = Vec::new();
    let mut to_console = Vec::new();
    for i in 0..N {
        let id = send_ok(lb.addr, &tok("console-1"), "agent-1", &format!("c{i}"));
        assert_eq!(parse_id(&id).0, ae);
        to_agent.push(id);
        let id = send_ok(lb.addr, &tok("agent-1"), "console-1", &format!("a{i}"));
        assert_eq!(parse_id(&id).0, ce);
        to_console.push(id);
    }
    // Both nodes took some of the sends.
    let (a1, b1) = (accepted(&a), accepted(&b));
    assert!(
        a1 - a0 >= 2.0 && b1 - b0 >= 2.0,
        "sends did not reach both nodes: A +{}, B +{}",
        a1 - a0,
        b1 - b0
    );
    // Every message arrives exactly once, in order.
    for (i, id) in to_agent.iter().enumerate() {
        let ev = agent.expect_message("console-1", &format!("c{i}"));
        assert_eq!(ev.id.as_ref(), Some(id));
    }
    for (i, id) in to_console.iter().enumerate() {
        let ev = console.expect_message("agent-1", &format!("a{i}"));
        assert_eq!(ev.id.as_ref(), Some(id));
    }
    relay(
        lb.addr,
        "console-1",
        "agent-1",
        &mut agent,
        &ae,
        "last to agent",
    );
    relay(
        lb.addr,
        "agent-1",
        "console-1",
        &mut console,
        &ce,
        "last to console",
    );

    // The list through the balancer (whichever node answers) has both.
    for _ in 0..4 {
        let list = clients(lb.addr, &tok("console-1"));
        let got: Vec<(&str, &str)> = list
            .iter()
            .map(|c| (c["client"].as_str().unwrap(), c["state"].as_str().unwrap()))
            .collect();
        assert_eq!(got, vec![("agent-1", "online"), ("console-1", "online")]);
    }
}
