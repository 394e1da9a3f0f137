//! The WebSocket transport across nodes: a WebSocket client on one node
//! sends to SSE and WebSocket clients on another (and is sent to from
//! there), pipelined sends to another node are answered in order, and a
//! connection on another node replaces it (`replaced` with `"session":null`,
//! then Close 1000).

use serde_json::json;

use super::*;
use crate::wsclient::*;

/// `client`'s WebSocket connection on `addr`, past `ready`.
fn ws_open(addr: SocketAddr, client: &str) -> Ws {
    let (ws, ready) = Ws::open(addr, &tok(client));
    assert_eq!(ready["client"], client, "{ready}");
    ws
}

/// Reads the answer to a command: `accepted` with `ref`; its id.
fn accepted(ws: &mut Ws, r#ref: &str) -> String {
    let a = ws.event();
    assert_eq!(
        (&a["event"], &a["ref"]),
        (&json!("accepted"), &json!(r#ref)),
        "{a}"
    );
    a["id"].as_str().expect("id").to_string()
}

#[test]
fn websocket_clients_relay_across_nodes() {
    let redis = Redis::start();
    let a = cluster_node(&redis, "a", &[]);
    let b = cluster_node(&redis, "b", &[]);
    let mut w_a = ws_open(a.addr, "agent-wa");
    let mut w_b = ws_open(b.addr, "agent-wb");
    let (mut s_b, _) = open(b.addr, "console-sb", &[]);
    for c in ["agent-wa", "agent-wb", "console-sb"] {
        wait_state_all(&[&a, &b], c, "online");
    }
    // WebSocket on a -> SSE on b, and -> WebSocket on b.
    w_a.send("console-sb", "ws a to sse b", "1");
    let id = accepted(&mut w_a, "1");
    let ev = s_b.expect_message("agent-wa", "ws a to sse b");
    assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    w_a.send("agent-wb", "ws a to ws b", "2");
    let id = accepted(&mut w_a, "2");
    assert_eq!(
        w_b.expect_message("agent-wa", "ws a to ws b")["id"],
        id.as_str()
    );
    // WebSocket on b -> WebSocket on a; HTTP on b -> WebSocket on a.
    w_b.send("agent-wa", "ws b to ws a", "3");
    accepted(&mut w_b, "3");
    w_a.expect_message("agent-wb", "ws b to ws a");
    let id = send_ok(b.addr, &tok("console-sb"), "agent-wa", "http b to ws a");
    assert_eq!(
        w_a.expect_message("console-sb", "http b to ws a")["id"],
        id.as_str()
    );
    // Eight sends pipelined to the other node, an offline one among them:
    // answered in order.
    let mut batch = Vec::new();
    for i in 0..8 {
        let to = if i == 4 { "nobody-x" } else { "agent-wb" };
        let cmd = json!({"type":"send","to":to,"body":format!("p{i}"),"ref":format!("p{i}")});
        batch.extend(frame_bytes(true, 0, TEXT, cmd.to_string().as_bytes(), true));
    }
    w_a.raw(&batch);
    for i in 0..8 {
        let r = format!("p{i}");
        if i == 4 {
            let e = w_a.event();
            assert_eq!(
                (&e["event"], &e["error"], &e["ref"]),
                (&json!("error"), &json!("recipient_offline"), &json!(r)),
                "{e}"
            );
        } else {
            let id = accepted(&mut w_a, &r);
            assert_eq!(w_b.expect_message("agent-wa", &r)["id"], id.as_str());
        }
    }
    // A connection on a replaces the WebSocket on b.
    let mut newer = ws_open(a.addr, "agent-wb");
    let ev = w_b.expect("replaced");
    assert_eq!(ev["session"], serde_json::Value::Null, "{ev}");
    assert_eq!(
        w_b.next_frame().close(),
        (Some(1000), "replaced".to_string())
    );
    w_a.send("agent-wb", "to the newer", "n");
    accepted(&mut w_a, "n");
    newer.expect_message("agent-wa", "to the newer");
}
