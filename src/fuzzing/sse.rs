//! The `sse` fuzz target.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------
// sse
// ---------------------------------------------------------------------------

/// One dispatched event, as a browser's `EventSource` reports it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SseEvent {
    last_event_id: String,
    kind: String,
    data: String,
}

/// A minimal, independent text/event-stream parser following the WHATWG HTML
/// "event stream interpretation" rules. Returns the dispatched events and
/// whether the stream ended exactly at a line end (no partial line left).
pub(super) fn parse_event_stream(stream: &str) -> (Vec<SseEvent>, bool) {
    let stream = stream.strip_prefix('\u{feff}').unwrap_or(stream);
    let mut events = Vec::new();
    let (mut last_id, mut kind, mut data) = (String::new(), String::new(), String::new());
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (events, true);
        }
        let Some(i) = rest.find(['\r', '\n']) else {
            return (events, false); // an incomplete line is never processed
        };
        let line = &rest[..i];
        let eol = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + eol..];

        if line.is_empty() {
            // Dispatch.
            if data.is_empty() {
                kind.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            events.push(SseEvent {
                last_event_id: last_id.clone(),
                kind: if kind.is_empty() {
                    "message".to_string()
                } else {
                    kind.clone()
                },
                data: std::mem::take(&mut data),
            });
            kind.clear();
            continue;
        }
        if line.starts_with(':') {
            continue; // comment
        }
        let (field, value) = match line.find(':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "event" => kind = value.to_string(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            // An id containing NUL is ignored.
            "id" if !value.contains('\0') => last_id = value.to_string(),
            _ => {} // retry and unknown fields
        }
    }
}

pub(super) fn without_line_chars(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
        .collect()
}

/// Fuzzes the SSE encoder and the `message` JSON payload.
///
/// Layout: a flag byte (bit 0: with id, bit 1: with event name), then id,
/// event and data separated by `0xFF` bytes (each lossily decoded as UTF-8).
///
/// Properties:
/// * `encode_event` output, read by an independent WHATWG-style parser,
///   dispatches exactly one event, ends at a line end, and gives back: the id
///   with CR, LF and NUL removed (empty if there was no id), the event name
///   likewise (`message` if absent or empty after removal), and the data with
///   `\r\n` and `\r` normalized to `\n`.
/// * `encode_comment` output dispatches nothing and does not disturb a
///   following event.
/// * `message_json(from, body)` is one line of valid JSON that round-trips
///   `from` and `body` (as `body` if valid UTF-8, else `body_b64`, standard
///   base64, decoding to the bytes), and survives `encode_event` as the data.
/// * `encode_message` writes the same bytes as `encode_event(message_json)`;
///   `plain_json_text` holds exactly for the bodies whose JSON string is the
///   body in quotes, and for those the head, the body and the tail are that
///   event too.
/// * A body `take_json` takes is a compact, line-break-free JSON message
///   event (see `json_message`); one it refuses is left as it was.
/// * A parseable [`EventId`] round-trips.
pub fn sse(data: &[u8]) {
    let mut inp = Input::new(data);
    let flags = inp.byte();
    let rest = inp.rest();
    let mut parts = rest.splitn(3, |&b| b == 0xFF);
    let id_raw = parts.next().unwrap_or_default();
    let event_raw = parts.next().unwrap_or_default();
    let data_raw = parts.next().unwrap_or_default();
    let id_text = String::from_utf8_lossy(id_raw);
    let event_text = String::from_utf8_lossy(event_raw);
    let data_text = String::from_utf8_lossy(data_raw);
    let id = (flags & 1 != 0).then_some(&*id_text);
    let event = (flags & 2 != 0).then_some(&*event_text);

    let mut out = Vec::new();
    encode_event(&mut out, id, event, &data_text);
    let expected = SseEvent {
        last_event_id: id.map(without_line_chars).unwrap_or_default(),
        kind: match event.map(without_line_chars) {
            Some(k) if !k.is_empty() => k,
            _ => "message".to_string(),
        },
        data: data_text.replace("\r\n", "\n").replace('\r', "\n"),
    };
    check_stream(&out, std::slice::from_ref(&expected), "encode_event");

    // A comment before the event changes nothing.
    let mut with_comment = Vec::new();
    encode_comment(&mut with_comment, &data_text);
    check_stream(&with_comment, &[], "encode_comment");
    with_comment.extend_from_slice(&out);
    check_stream(
        &with_comment,
        std::slice::from_ref(&expected),
        "comment + event",
    );

    // message_json.
    let from = &*id_text;
    let json = message_json(from, data_raw);
    assert!(
        !json.contains(['\r', '\n']),
        "sse: message_json contains a raw line break: {json:?}"
    );
    let value: serde_json::Value = match serde_json::from_str(&json) {
        Ok(v) => v,
        Err(e) => panic!("sse: message_json is not valid JSON ({e}): {json:?}"),
    };
    assert!(
        value.get("from").and_then(|v| v.as_str()) == Some(from),
        "sse: message_json lost `from` {from:?}: {json}"
    );
    match std::str::from_utf8(data_raw) {
        Ok(text) => assert!(
            value.get("body").and_then(|v| v.as_str()) == Some(text)
                && value.get("body_b64").is_none(),
            "sse: message_json lost text body {text:?}: {json}"
        ),
        Err(_) => {
            let decoded = value
                .get("body_b64")
                .and_then(|v| v.as_str())
                .map(|b| STANDARD.decode(b));
            assert!(
                matches!(&decoded, Some(Ok(bytes)) if bytes == data_raw)
                    && value.get("body").is_none(),
                "sse: message_json body_b64 does not decode to the body: {json}"
            );
        }
    }
    let mut out = Vec::new();
    encode_event(&mut out, Some("1-2"), Some("message"), &json);
    let expected_json = SseEvent {
        last_event_id: "1-2".to_string(),
        kind: "message".to_string(),
        data: json,
    };
    check_stream(&out, &[expected_json], "message_json event");
    // The in-place encoder of the relay's hot path writes the same bytes.
    let id = crate::ids::EventId {
        epoch: data_raw.len() as u64,
        seq: from.len() as u64,
    };
    let mut fast = Vec::new();
    crate::proto::sse::encode_message(&mut fast, id, from, data_raw, false);
    let mut slow = Vec::new();
    encode_event(
        &mut slow,
        Some(&id.to_string()),
        Some("message"),
        &message_json(from, data_raw),
    );
    assert!(
        fast == slow,
        "sse: encode_message differs from encode_event(message_json)"
    );
    // A body said to be plain is written as head, its own bytes and tail (from
    // the retained log, without a copy); that must be the same event, and
    // exactly the bodies the escape leaves as they are are plain.
    let plain = crate::proto::sse::plain_json_text(data_raw);
    let as_is = std::str::from_utf8(data_raw)
        .is_ok_and(|t| serde_json::to_string(t).is_ok_and(|j| j.len() == t.len() + 2));
    assert!(
        plain == as_is,
        "sse: plain_json_text says {plain} for a body the escape {} leave as is",
        if as_is { "does" } else { "does not" }
    );
    if plain {
        let mut parts = Vec::new();
        crate::proto::sse::encode_message_head(&mut parts, id, from, false);
        parts.extend_from_slice(data_raw);
        parts.extend_from_slice(crate::proto::sse::message_tail(false));
        assert!(
            parts == fast,
            "sse: head + plain body + tail differs from encode_message"
        );
    }

    json_message(id, from, data_raw);
    event_id_round_trip(&id_text);
}

/// A body taken as JSON (`take_json`) is the same value compacted, with no
/// line break; its `message` event is one `data:` line `{"from","json"}`
/// holding that value, and its head, body and tail are that event too. A
/// body not taken is left as it was.
fn json_message(id: crate::ids::EventId, from: &str, data_raw: &[u8]) {
    use crate::proto::{json_body, sse};
    let mut body = data_raw.to_vec();
    if !json_body::take_json(&mut body) {
        assert!(body == data_raw, "sse: take_json changed a body it refused");
        return;
    }
    assert!(
        !body.contains(&b'\n') && !body.contains(&b'\r'),
        "sse: compact JSON has a line break: {body:?}"
    );
    // Values serde_json can build (it refuses lone surrogates, which the
    // JSON grammar allows) must be the same before and after.
    let before = serde_json::from_slice::<serde_json::Value>(data_raw);
    if let Ok(before) = &before {
        let after = serde_json::from_slice::<serde_json::Value>(&body);
        assert!(
            after.as_ref().is_ok_and(|a| a == before),
            "sse: compacting changed the value of {data_raw:?}"
        );
    }
    let mut event = Vec::new();
    sse::encode_message(&mut event, id, from, &body, true);
    let mut parts = Vec::new();
    sse::encode_message_head(&mut parts, id, from, true);
    parts.extend_from_slice(&body);
    parts.extend_from_slice(sse::message_tail(true));
    assert!(parts == event, "sse: JSON head + body + tail differs");
    let data = format!(
        "{{\"from\":{},\"json\":{}}}",
        serde_json::to_string(from).unwrap_or_default(),
        String::from_utf8_lossy(&body)
    );
    let expected = SseEvent {
        last_event_id: id.to_string(),
        kind: "message".to_string(),
        data,
    };
    check_stream(&event, &[expected], "JSON message event");
    if let Ok(before) = before {
        let value: Result<serde_json::Value, _> = std::str::from_utf8(&event)
            .ok()
            .and_then(|t| t.lines().find_map(|l| l.strip_prefix("data: ")))
            .map_or(Ok(serde_json::Value::Null), serde_json::from_str);
        assert!(
            value.is_ok_and(|v| v.get("json") == Some(&before)),
            "sse: the JSON message event does not carry the value"
        );
    }
}

pub(super) fn check_stream(out: &[u8], expected: &[SseEvent], what: &str) {
    let text: Cow<'_, str> = match std::str::from_utf8(out) {
        Ok(s) => Cow::Borrowed(s),
        Err(e) => panic!("sse: {what} produced invalid UTF-8 ({e})"),
    };
    let (events, complete) = parse_event_stream(&text);
    assert!(
        complete,
        "sse: {what} output does not end at a line end: {text:?}"
    );
    assert!(
        events == expected,
        "sse: {what} output {text:?} parses as {events:?}, expected {expected:?}"
    );
}
