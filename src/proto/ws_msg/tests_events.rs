//! The events: valid JSON with the SSE event's content, and a property test
//! over random commands (the parser never panics; what it accepts arrives as
//! it was sent).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use super::*;
use crate::ids::{EventId, SessionId};
use crate::proto::sse;

const ID: EventId = EventId {
    epoch: 0xabc,
    seq: 42,
};

fn value(out: &[u8]) -> Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(out)))
}

fn message(from: &str, body: &[u8], json: bool) -> Value {
    let mut out = Vec::new();
    encode_message(&mut out, ID, from, body, json);
    value(&out)
}

/// The `data:` of the SSE form of a message, parsed.
fn sse_message(from: &str, body: &[u8], json: bool) -> Value {
    let mut out = Vec::new();
    sse::encode_message(&mut out, ID, from, body, json);
    let text = String::from_utf8(out).expect("UTF-8");
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data line");
    value(data.as_bytes())
}

/// `v` without its `event` and `id` members.
fn content(mut v: Value) -> Value {
    let o = v.as_object_mut().expect("an object");
    o.remove("event");
    o.remove("id");
    v
}

#[test]
fn message_events() {
    let v = message("console-1", b"hello", false);
    assert_eq!(
        v,
        json!({"event":"message","id":"abc-42","from":"console-1","body":"hello"})
    );
    let v = message("c", b"\xff\x00", false);
    assert_eq!(
        v,
        json!({"event":"message","id":"abc-42","from":"c","body_b64":"/wA="})
    );
    let v = message("c", br#"{"cmd":"x","n":[1,2.50]}"#, true);
    assert_eq!(v["json"], json!({"cmd":"x","n":[1,2.50]}));
    assert!(v.get("body").is_none());
    let mut out = Vec::new();
    encode_message(&mut out, ID, "c", b"a\"b", false);
    assert_eq!(
        out,
        br#"{"event":"message","id":"abc-42","from":"c","body":"a\"b"}"#
    );
}

/// The same content as the SSE event for every kind of body, and the head,
/// the kept body and the tail make the event encoded whole.
#[test]
fn messages_carry_what_sse_carries() {
    let mut bodies: Vec<(Vec<u8>, bool)> = [
        &b""[..],
        b"plain",
        b"\"quoted\" \\ back",
        b"\0\x01\x1f\n\r\t\x7f",
        "日本語 😀 \u{2028}".as_bytes(),
        b"\xc3\x28",
        b"\xed\xa0\x80",
    ]
    .iter()
    .map(|b| (b.to_vec(), false))
    .collect();
    bodies.push((b"x".repeat(70_000), false));
    bodies.push((br#"{"a":[1,{"b":null}],"c":"\"\u00e9"}"#.to_vec(), true));
    bodies.push((b"null".to_vec(), true));
    for from in ["agent-1", "c\"1"] {
        for (body, json) in &bodies {
            let ws = message(from, body, *json);
            assert_eq!(ws["event"], "message");
            assert_eq!(ws["id"], ID.to_string());
            assert_eq!(content(ws), sse_message(from, body, *json), "{body:?}");
            if *json || sse::plain_json_text(body) {
                let mut parts = Vec::new();
                encode_message_head(&mut parts, ID, from, *json);
                parts.extend_from_slice(body);
                parts.extend_from_slice(message_tail(*json));
                let mut whole = Vec::new();
                encode_message(&mut whole, ID, from, body, *json);
                assert_eq!(parts, whole, "{body:?}");
            }
        }
    }
}

/// Each event is its SSE data (built here as the server builds it) with
/// `event` (and `id`) inside, whether written by its own encoder or spliced
/// from the SSE data by [`encode_event`].
#[test]
fn events_are_their_sse_data_with_the_name_inside() {
    let sid = SessionId(0x1234_5678_9abc);
    let ready_sse = json!({
        "session": sid.to_string(),
        "account": "acme",
        "client": "agent-\"1\"",
        "node": "node-a",
        "heartbeat_ms": 15000u64,
        "epoch": format!("{:x}", 0xdead_beef_u64),
    });
    let gap_sse = json!({"after": "abc-41\n", "reason": "hold_limit"});
    let peer_sse = json!({"peer": "console-9", "reason": "expired"});
    let replaced_sse = json!({"session": sid.to_string(), "node": "node-b"});
    let replaced_remote_sse = json!({"session": null, "node": "node-c"});
    let reconnect_sse = json!({"reason": "draining", "retry_ms": 1234u64});

    let mut cases: Vec<(&str, Option<String>, Value, Vec<u8>)> = Vec::new();
    let mut out = Vec::new();
    encode_ready(
        &mut out,
        &Ready {
            session: sid,
            account: "acme",
            client: "agent-\"1\"",
            node: "node-a",
            heartbeat_ms: 15000,
            epoch: 0xdead_beef,
        },
    );
    cases.push(("ready", None, ready_sse, std::mem::take(&mut out)));
    encode_gap(&mut out, "abc-41\n", "hold_limit");
    cases.push(("gap", None, gap_sse, std::mem::take(&mut out)));
    encode_peer_gone(&mut out, ID, "console-9", "expired");
    cases.push((
        "peer-gone",
        Some(ID.to_string()),
        peer_sse,
        std::mem::take(&mut out),
    ));
    encode_replaced(&mut out, Some(sid), "node-b");
    cases.push(("replaced", None, replaced_sse, std::mem::take(&mut out)));
    encode_replaced(&mut out, None, "node-c");
    cases.push((
        "replaced",
        None,
        replaced_remote_sse,
        std::mem::take(&mut out),
    ));
    encode_reconnect(&mut out, 1234);
    cases.push(("reconnect", None, reconnect_sse, std::mem::take(&mut out)));

    for (event, id, sse_data, typed) in cases {
        let v = value(&typed);
        assert_eq!(v["event"], event);
        match &id {
            Some(id) => assert_eq!(v["id"], id.as_str()),
            None => assert!(v.get("id").is_none(), "{v}"),
        }
        assert_eq!(content(v.clone()), sse_data, "{event}");
        let mut spliced = Vec::new();
        encode_event(&mut spliced, event, id.as_deref(), &sse_data.to_string());
        assert_eq!(value(&spliced), v, "{event}");
    }
    // Empty data, and data that is not an object.
    let mut out = Vec::new();
    encode_event(&mut out, "ping", None, " { } ");
    assert_eq!(value(&out), json!({"event":"ping"}));
    out.clear();
    encode_event(&mut out, "x", Some("1-2"), "[1]");
    assert_eq!(value(&out), json!({"event":"x","id":"1-2","data":[1]}));
}

#[test]
fn answers() {
    let mut out = Vec::new();
    encode_accepted(&mut out, Some("r-1"), ID);
    assert_eq!(out, br#"{"event":"accepted","ref":"r-1","id":"abc-42"}"#);
    out.clear();
    encode_accepted(&mut out, None, ID);
    assert_eq!(value(&out), json!({"event":"accepted","id":"abc-42"}));
    out.clear();
    encode_error(
        &mut out,
        Some("q\"\n"),
        "recipient_offline",
        "no such client",
    );
    assert_eq!(
        value(&out),
        json!({"event":"error","ref":"q\"\n","error":"recipient_offline","message":"no such client"})
    );
    out.clear();
    encode_error(&mut out, None, "overloaded", "retry later");
    assert_eq!(
        value(&out),
        json!({"event":"error","error":"overloaded","message":"retry later"})
    );
}

/// The list has the entries of `GET /v1/clients`, in the order given.
#[test]
fn clients_answer() {
    let entries = [
        ClientEntry {
            client: "agent-1",
            role: "agent",
            online: true,
            since_ms: 1_700_000_000_000,
        },
        ClientEntry {
            client: "c\"2",
            role: "console",
            online: false,
            since_ms: 0,
        },
    ];
    let mut out = Vec::new();
    encode_clients(&mut out, Some("l"), entries);
    let http: Vec<Value> = entries
        .iter()
        .map(|c| {
            json!({
                "client": c.client,
                "role": c.role,
                "state": if c.online { "online" } else { "held" },
                "since_ms": c.since_ms,
            })
        })
        .collect();
    assert_eq!(
        value(&out),
        json!({"event":"clients","ref":"l","clients":http})
    );
    out.clear();
    encode_clients(&mut out, None, []);
    assert_eq!(value(&out), json!({"event":"clients","clients":[]}));
}

/// splitmix64: small and the same everywhere (a failure replays from its seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len())]
    }

    fn string(&mut self) -> String {
        let alphabet = [
            'a', 'Z', '0', '-', ' ', '"', '\\', '/', '\n', '\0', '\u{1f}', 'é', '😀', '\u{2028}',
            '\u{7f}',
        ];
        (0..self.below(12)).map(|_| *self.pick(&alphabet)).collect()
    }

    fn bytes(&mut self) -> Vec<u8> {
        (0..self.below(12)).map(|_| self.next() as u8).collect()
    }

    fn json(&mut self, depth: usize) -> Value {
        match self.below(if depth > 3 { 4 } else { 6 }) {
            0 => Value::Null,
            1 => Value::Bool(self.next() & 1 == 1),
            2 => json!(self.next() as i64 >> self.below(64)),
            3 => Value::String(self.string()),
            4 => Value::Array((0..self.below(4)).map(|_| self.json(depth + 1)).collect()),
            _ => Value::Object(
                (0..self.below(4))
                    .map(|_| (self.string(), self.json(depth + 1)))
                    .collect(),
            ),
        }
    }
}

/// A random command text: mostly well-formed sends and lists with random
/// fields, some with a field missing, doubled, of the wrong type or
/// unknown, written with random whitespace; then maybe damaged (a byte
/// changed, cut short, bytes inserted).
fn random_command(rng: &mut Rng) -> Vec<u8> {
    let mut members: Vec<(String, Value)> = Vec::new();
    let ty = *rng.pick(&["send", "send", "send", "clients", "other"]);
    if rng.below(20) != 0 {
        members.push(("type".into(), json!(ty)));
    }
    if ty == "send" || rng.below(10) == 0 {
        let to = *rng.pick(&["agent-1", "x", "A.b_c-9", "agent-1", "", "a b", "é"]);
        members.push(("to".into(), json!(to)));
    }
    let forms = match rng.below(10) {
        _ if ty == "clients" && rng.below(10) != 0 => 0,
        0 => 2,
        1 => 0,
        _ => 1,
    };
    for _ in 0..forms {
        match rng.below(3) {
            0 => members.push(("body".into(), json!(rng.string()))),
            1 => {
                let b = rng.bytes();
                members.push(("body_b64".into(), json!(STANDARD.encode(b))));
            }
            _ => members.push(("json".into(), rng.json(0))),
        }
    }
    if rng.below(2) == 0 {
        members.push(("ref".into(), json!(rng.string())));
    }
    if rng.below(5) == 0 {
        members.push((rng.string(), rng.json(0)));
    }
    if rng.below(10) == 0 {
        let i = rng.below(members.len().max(1));
        if let Some(m) = members.get_mut(i) {
            m.1 = rng.json(0);
        }
    }
    let n = members.len();
    for i in 0..n {
        let j = rng.below(n);
        members.swap(i, j);
    }
    let ws = |rng: &mut Rng| rng.pick(&["", "", " ", "\n\t", "\r\n "]).to_string();
    let mut text = format!("{}{{", ws(rng));
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let pretty = rng.below(4) == 0;
        let v = if pretty {
            serde_json::to_string_pretty(v)
        } else {
            serde_json::to_string(v)
        };
        let v = v.expect("serializable");
        text += &format!("{}{}{}:{}{}", ws(rng), json!(k), ws(rng), ws(rng), v);
    }
    text += &format!("{}}}{}", ws(rng), ws(rng));
    let mut bytes = text.into_bytes();
    match rng.below(12) {
        0 if !bytes.is_empty() => {
            let i = rng.below(bytes.len());
            bytes[i] = rng.next() as u8;
        }
        1 => bytes.truncate(rng.below(bytes.len() + 1)),
        2 => {
            let i = rng.below(bytes.len() + 1);
            let junk = rng.bytes();
            bytes.splice(i..i, junk);
        }
        _ => {}
    }
    bytes
}

/// The parser never panics; what it accepts is a JSON object (as
/// `serde_json` reads it), and a send it accepts becomes a `message` event
/// whose body is the command's body: the same string (`body`), the same
/// bytes (`body_b64`, as `body` if they are UTF-8), the same value (`json`).
#[test]
fn accepted_commands_arrive_as_sent() {
    let mut rng = Rng(0x5eed_2026_1207);
    let (mut sends, mut lists, mut refused) = (0, 0, 0);
    for round in 0..20_000 {
        let msg = random_command(&mut rng);
        let max = *rng.pick(&[0, 5, 64, 1 << 20, 1 << 20, 1 << 20]);
        let parsed = parse(&msg, max);
        let input: Option<Value> = serde_json::from_slice(&msg).ok();
        let what = || format!("round {round}: {:?}", String::from_utf8_lossy(&msg));
        match parsed {
            Err(e) => {
                refused += 1;
                let mut out = Vec::new();
                e.encode(&mut out);
                assert_eq!(value(&out)["error"], e.code(), "{}", what());
            }
            Ok(Command::Clients { ref_ }) => {
                lists += 1;
                let input = input.unwrap_or_else(|| panic!("not JSON, accepted: {}", what()));
                assert_eq!(input["type"], "clients", "{}", what());
                assert_eq!(
                    ref_.as_deref(),
                    input.get("ref").and_then(Value::as_str),
                    "{}",
                    what()
                );
            }
            Ok(Command::Send { to, body, ref_ }) => {
                sends += 1;
                let input = input.unwrap_or_else(|| panic!("not JSON, accepted: {}", what()));
                assert_eq!(input["type"], "send", "{}", what());
                assert_eq!(input["to"], &*to, "{}", what());
                assert!(crate::auth::valid_id(&to), "{}", what());
                assert!(body.bytes.len() <= max, "{}", what());
                assert_eq!(
                    ref_.as_deref(),
                    input.get("ref").and_then(Value::as_str),
                    "{}",
                    what()
                );
                let event = message("from-1", &body.bytes, body.json);
                if let Some(v) = input.get("json") {
                    assert_eq!(&event["json"], v, "{}", what());
                    // Exactly the bytes HTTP keeps of that JSON body.
                    let mut http = body.bytes.to_vec();
                    assert!(crate::proto::json_body::take_json(&mut http), "{}", what());
                    assert_eq!(http, &*body.bytes, "{}", what());
                } else if let Some(text) = input.get("body") {
                    assert_eq!(&event["body"], text, "{}", what());
                } else {
                    let sent = STANDARD
                        .decode(input["body_b64"].as_str().expect("a string"))
                        .expect("base64");
                    let got = match (event.get("body"), event.get("body_b64")) {
                        (Some(Value::String(s)), None) => s.as_bytes().to_vec(),
                        (None, Some(Value::String(b))) => STANDARD.decode(b).expect("base64"),
                        _ => panic!("no body in {event}: {}", what()),
                    };
                    assert_eq!(got, sent, "{}", what());
                }
            }
        }
    }
    // The generator reaches every outcome often.
    assert!(
        sends > 2500 && lists > 1500 && refused > 5000,
        "{sends} {lists} {refused}"
    );
}
