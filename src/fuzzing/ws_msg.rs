//! The `ws_msg` fuzz target: the WebSocket transport's command parser and
//! the `message` event a send it accepts becomes.

use serde::de::IgnoredAny;
use serde_json::Value;

#[allow(unused_imports)]
use super::*;
use crate::proto::sse::plain_json_text;
use crate::proto::ws_msg::{
    encode_message, encode_message_head, message_tail, parse, Command, ErrorKind, MAX_REF_LEN,
};

// ---------------------------------------------------------------------------
// ws_msg
// ---------------------------------------------------------------------------

/// Fuzzes [`crate::proto::ws_msg::parse`].
///
/// Layout: a body-limit byte ([`body_limit`]), then one message. Properties:
/// * Never a panic; the refusal's error event is valid JSON with its code,
///   and a ref it echoes is at most [`MAX_REF_LEN`] bytes.
/// * Input that is not one JSON text (UTF-8, and as `serde_json` checks it
///   without recursion) is refused as `malformed_json`; valid JSON that is not an
///   object as `not_an_object`.
/// * An accepted command is a JSON object whose `type` is the command; its
///   `ref` is the input's. Where `serde_json` can build the input as a
///   value (not nested too deep): a send's `to` is the input's and a valid
///   client id, its body at most the limit, and its `message` event carries
///   the input's body: the same string (`body`), the same bytes (`body_b64`;
///   as `body` if they are UTF-8), the same value (`json`).
/// * A `json` body is what `json_body::take_json` keeps of the same bytes
///   sent over HTTP (taken, unchanged).
/// * A body written as it is kept (JSON, or text that needs no escaping):
///   the event's head, the body and the tail are the event encoded whole.
pub fn ws_msg(data: &[u8]) {
    let mut inp = Input::new(data);
    let max = body_limit(inp.byte());
    let msg = inp.rest();
    // serde_json does not check UTF-8 inside the strings it skips.
    let valid_json =
        std::str::from_utf8(msg).is_ok_and(|t| serde_json::from_str::<IgnoredAny>(t).is_ok());
    let cmd = match parse(msg, max) {
        Err(e) => {
            let mut out = Vec::new();
            e.encode(&mut out);
            let v: Value = serde_json::from_slice(&out).unwrap_or_else(|err| {
                panic!("ws_msg: error event is not JSON ({err}): {}", show(&out))
            });
            assert_eq!(v["error"], e.code(), "ws_msg: error event {v}");
            assert!(
                e.ref_().is_none_or(|r| r.len() <= MAX_REF_LEN),
                "ws_msg: ref echoed: {v}"
            );
            if !valid_json {
                assert_eq!(e.kind(), ErrorKind::Malformed, "ws_msg: {}", show(msg));
            }
            let object = msg.trim_ascii_start().first() == Some(&b'{');
            if valid_json && !object {
                assert_eq!(e.kind(), ErrorKind::NotAnObject, "ws_msg: {}", show(msg));
            }
            return;
        }
        Ok(cmd) => cmd,
    };
    assert!(
        valid_json,
        "ws_msg: accepted what is not JSON: {}",
        show(msg)
    );
    // Deep nesting (past serde_json's recursion limit) cannot be built as a
    // tree: then only what holds without one.
    let input: Option<Value> = serde_json::from_slice(msg).ok();
    let Some(input) = input else {
        if let Command::Send { to, body, .. } = &cmd {
            assert!(auth::valid_id(to), "ws_msg: recipient {to:?}");
            assert!(body.bytes.len() <= max, "ws_msg: body over {max}");
        }
        return;
    };
    assert!(
        input.is_object(),
        "ws_msg: accepted a non-object: {}",
        show(msg)
    );
    assert_eq!(
        cmd.ref_(),
        input.get("ref").and_then(Value::as_str),
        "ws_msg: ref of {}",
        show(msg)
    );
    let (to, body) = match cmd {
        Command::Clients { .. } => {
            assert_eq!(input["type"], "clients", "ws_msg: {}", show(msg));
            return;
        }
        Command::Send { to, body, .. } => (to, body),
    };
    assert_eq!(input["type"], "send", "ws_msg: {}", show(msg));
    assert_eq!(input["to"], &*to, "ws_msg: recipient of {}", show(msg));
    assert!(auth::valid_id(&to), "ws_msg: recipient {to:?}");
    assert!(
        body.bytes.len() <= max,
        "ws_msg: body over {max}: {}",
        show(msg)
    );

    let id = EventId { epoch: 0xf, seq: 7 };
    let mut out = Vec::new();
    encode_message(&mut out, id, "from-1", &body.bytes, body.json);
    let event: Value = serde_json::from_slice(&out)
        .unwrap_or_else(|err| panic!("ws_msg: message event is not JSON ({err}): {}", show(&out)));
    assert_eq!(event["event"], "message");
    assert_eq!(event["id"], "f-7");
    assert_eq!(event["from"], "from-1");
    if body.json {
        // What an HTTP send of these bytes with `Content-Type: application/json` keeps.
        let mut http = body.bytes.to_vec();
        let taken = crate::proto::json_body::take_json(&mut http);
        assert!(
            taken && http == *body.bytes,
            "ws_msg: json body is not HTTP's: {}",
            show(msg)
        );
    }
    if let Some(v) = input.get("json") {
        assert!(body.json, "ws_msg: json body not flagged");
        assert_eq!(&event["json"], v, "ws_msg: json value of {}", show(msg));
    } else if let Some(text) = input.get("body") {
        assert_eq!(&event["body"], text, "ws_msg: body of {}", show(msg));
    } else {
        let sent = input["body_b64"]
            .as_str()
            .and_then(|b| STANDARD.decode(b).ok())
            .unwrap_or_else(|| panic!("ws_msg: accepted body_b64 of {}", show(msg)));
        let got = match (event.get("body"), event.get("body_b64")) {
            (Some(Value::String(s)), None) => Some(s.as_bytes().to_vec()),
            (None, Some(Value::String(b))) => STANDARD.decode(b).ok(),
            _ => None,
        };
        assert_eq!(got, Some(sent), "ws_msg: body_b64 of {}", show(msg));
    }
    if body.json || plain_json_text(&body.bytes) {
        let mut parts = Vec::new();
        encode_message_head(&mut parts, id, "from-1", body.json);
        parts.extend_from_slice(&body.bytes);
        parts.extend_from_slice(message_tail(body.json));
        assert_eq!(parts, out, "ws_msg: head, body and tail of {}", show(msg));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The committed corpus (`fuzz/corpus/ws_msg/`) and crash reproducers
    /// (`fuzz/regressions/ws_msg/`), replayed; the seeds include accepted
    /// commands of every form.
    #[test]
    fn replay_ws_msg() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut n = 0;
        let mut accepted = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join("ws_msg")) else {
                continue;
            };
            let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for path in paths.iter().filter(|p| p.is_file()) {
                let data =
                    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                eprintln!("replaying {}", path.display());
                super::ws_msg(&data);
                let max = super::body_limit(data.first().copied().unwrap_or(0));
                accepted +=
                    crate::proto::ws_msg::parse(data.get(1..).unwrap_or(&[]), max).is_ok() as usize;
                n += 1;
            }
        }
        assert!(n > 0, "fuzz/corpus/ws_msg/ is empty or missing");
        assert!(accepted >= 5, "{accepted} of {n} seeds accepted");
    }

    #[test]
    fn tiny_inputs() {
        super::ws_msg(b"");
        for b in 0..=255u8 {
            super::ws_msg(&[b]);
            super::ws_msg(&[6, b]);
        }
    }
}
