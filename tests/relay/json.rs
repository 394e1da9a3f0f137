//! JSON bodies (`Content-Type: application/json`): delivered as the value
//! itself (`"json"`, compact, one `data:` line) when the body is valid JSON,
//! as text or base64 otherwise; live, held and replayed, and large enough to
//! be written from the retained log.

use super::*;

/// A pretty-printed document with every kind of JSON whitespace between its
/// tokens (LF, CRLF, tabs, spaces), whitespace and escapes inside its
/// strings, non-ASCII text, and keys out of alphabetical order.
pub const PRETTY: &str = "{\r\n\t\"cmd\" : \"backup\",\n  \"paths\": [ \"/etc\" ,\t\"/var/my files\" ],\n  \
                          \"note\": \"say \\\"hi\\\"\\n\\tC:\\\\dir \u{e9}\u{1F600}\",\n  \"level\": 3.50e+0,\n  \
                          \"opts\": { \"full\": true, \"skip\": null, \"tags\": [] }\n}\n";

/// [`PRETTY`] as it is delivered: the whitespace outside strings gone, the
/// rest (key order, number text, escapes) as sent.
pub const COMPACT: &str = "{\"cmd\":\"backup\",\"paths\":[\"/etc\",\"/var/my files\"],\
                           \"note\":\"say \\\"hi\\\"\\n\\tC:\\\\dir \u{e9}\u{1F600}\",\"level\":3.50e+0,\
                           \"opts\":{\"full\":true,\"skip\":null,\"tags\":[]}}";

fn value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("valid JSON")
}

/// curl sends a pretty-printed document with `Content-Type:
/// application/json; charset=utf-8`: the receiver gets it as a value, in the
/// compact form, on one `data:` line that serde_json parses.
#[test]
fn a_pretty_json_send_from_curl_arrives_as_a_compact_value() {
    let node = node();
    let (mut agent, console_tok) = agent_online(&node);
    let id = curl_send_json(node.addr, &console_tok, "agent-1", PRETTY);
    let ev = agent.expect_json_message("console-1", &value(PRETTY), COMPACT);
    assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    assert_eq!(
        ev.json()["json"]["note"],
        "say \"hi\"\n\tC:\\dir \u{e9}\u{1F600}"
    );
}

/// With the JSON content type, a body that is not valid JSON arrives as any
/// body does (text as `body`, other bytes as `body_b64`); valid JSON without
/// that content type stays text too.
#[test]
fn other_bodies_arrive_as_before() {
    let node = node();
    let (mut agent, console_tok) = agent_online(&node);
    let json = "application/json";
    for bad in [
        "{\"cmd\": \"backup\",}",
        "",
        "{\"a\":1} {\"b\":2}",
        "not json\n",
    ] {
        let r = send_typed(node.addr, &console_tok, "agent-1", json, bad.as_bytes());
        assert_eq!(r.status, 202, "{bad:?}");
        agent.expect_message("console-1", bad);
    }
    let binary = b"[\"\xff\"]";
    let r = send_typed(node.addr, &console_tok, "agent-1", json, binary);
    assert_eq!(r.status, 202);
    let ev = agent.expect_event("message");
    let b64 = base64::engine::general_purpose::STANDARD.encode(binary);
    assert_eq!(ev.json()["body_b64"], b64.as_str(), "{ev:?}");
    for other in ["text/plain", "application/jsonx", "application/json-seq"] {
        let r = send_typed(node.addr, &console_tok, "agent-1", other, PRETTY.as_bytes());
        assert_eq!(r.status, 202, "{other}");
        agent.expect_message("console-1", PRETTY);
    }
    // The content type's name is case-insensitive, parameters aside.
    let r = send_typed(
        node.addr,
        &console_tok,
        "agent-1",
        "Application/JSON ; charset=UTF-8",
        PRETTY.as_bytes(),
    );
    assert_eq!(r.status, 202);
    agent.expect_json_message("console-1", &value(PRETTY), COMPACT);
}

/// A JSON message sent while its recipient is away is held and replayed as
/// JSON when it comes back (Last-Event-ID); one delivered live and replayed
/// after a reconnect from an earlier id is JSON again.
#[test]
fn a_held_json_message_is_replayed_as_json() {
    let node = node();
    let agent_tok = token(ACCT, "agent-1", Role::Agent);
    let (mut agent, console_tok) = agent_online(&node);
    let first = send_ok(node.addr, &console_tok, "agent-1", "before");
    agent.expect_message("console-1", "before");
    let live = curl_send_json(node.addr, &console_tok, "agent-1", "[1, 2,\n 3]");
    agent.expect_json_message("console-1", &value("[1,2,3]"), "[1,2,3]");
    drop(agent);
    assert!(wait_state(node.addr, &console_tok, "agent-1", "held", WAIT));
    let held = curl_send_json(node.addr, &console_tok, "agent-1", PRETTY);
    let mut agent = Receiver::open(node.addr, &agent_tok, &[("Last-Event-ID", &first)]);
    agent.ready();
    let ev = agent.expect_json_message("console-1", &value("[1,2,3]"), "[1,2,3]");
    assert_eq!(ev.id.as_deref(), Some(live.as_str()));
    let ev = agent.expect_json_message("console-1", &value(PRETTY), COMPACT);
    assert_eq!(ev.id.as_deref(), Some(held.as_str()));
}

/// A JSON body larger than the size from which bodies are written straight
/// from the retained log (4 KiB, `DIRECT_BODY_MIN`) arrives whole, as a
/// value, both to a receiver that reads at once (written from the log) and
/// to one that reads only after the sends (queued). `--max-message` holds
/// for the body as sent: a pretty one over it is refused even if its compact
/// form would fit.
#[test]
fn a_large_json_message_arrives_intact() {
    let node = Node::start(&["--workers", "1", "--send-buffer", "16KiB"]);
    let console_tok = token(ACCT, "console-1", Role::Console);
    let items: Vec<String> = (0..1000)
        .map(|i| format!("{{\n    \"n\": {i},\n    \"name\": \"item \\\"{i}\\\"\"\n  }}"))
        .collect();
    let pretty = format!("{{\n  \"items\": [\n  {}\n  ]\n}}\n", items.join(",\n  "));
    let compact: String = {
        let v = value(&pretty);
        serde_json::to_string(&v).expect("serialize")
    };
    // serde_json writes what was sent, compact: the keys are in its order.
    assert!(compact.len() > 16 * 1024 && pretty.len() < 64 * 1024);
    for small in [false, true] {
        let name = if small { "agent-slow" } else { "agent-fast" };
        let tok = token(ACCT, name, Role::Agent);
        let mut rx = if small {
            Receiver::open_small_rcvbuf(node.addr, &tok, 4096)
        } else {
            Receiver::open(node.addr, &tok, &[])
        };
        rx.ready();
        for _ in 0..2 {
            let r = send_typed(
                node.addr,
                &console_tok,
                name,
                "application/json",
                pretty.as_bytes(),
            );
            assert_eq!(r.status, 202);
            if !small {
                rx.expect_json_message("console-1", &value(&pretty), &compact);
            }
        }
        if small {
            for _ in 0..2 {
                rx.expect_json_message("console-1", &value(&pretty), &compact);
            }
        }
    }
    let padded = format!("{pretty}{}", " ".repeat(64 * 1024 - pretty.len() + 1));
    let r = send_typed(
        node.addr,
        &console_tok,
        "agent-fast",
        "application/json",
        padded.as_bytes(),
    );
    assert_error(&r, 413, "payload_too_large");
}
