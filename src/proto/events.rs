//! The events of a client's stream, encoded for its transport: Server-Sent
//! Events on `GET /v1/receive`, one JSON text frame per event on a WebSocket
//! connection (`GET /v1/connect`). The content is the same: an SSE event's
//! `data` is the JSON object the WebSocket event holds, with the event's
//! name inside as `event` and its id as `id` (see `ws_msg::encode`).
//!
//! Pure: the caller's buffer in, bytes appended. The receive stream's own
//! framing around a write (chunks) stays [`Framing::begin`] and
//! [`Framing::finish`]; a WebSocket event is framed here, one frame each.

use super::stream::Framing;
use super::ws::encode::{push_close, InPlace, Opcode};
use super::{sse, ws_msg};
use crate::ids::EventId;

/// Payload length most events fit in (the frame header is sized for it,
/// so the event is written once; see [`InPlace`]).
const EVENT_HINT: usize = 100;
/// What a `message` event adds around its body and sender: the keys and
/// quotes (47 bytes) and an event id of up to 25 characters. With a hint
/// short of this, a message of about 60 bytes had its header room
/// enlarged, the event moved, each time (callgrind, 2026-12-08).
const MESSAGE_OVERHEAD: usize = 72;

/// Appends an event named `event`, with `id` if it has one, whose content
/// is the JSON object `data` (the server's own text).
pub fn encode(out: &mut Vec<u8>, framing: Framing, id: Option<&str>, event: &str, data: &str) {
    if framing.is_websocket() {
        let frame = InPlace::begin(out, Opcode::Text, data.len() + EVENT_HINT / 4);
        ws_msg::encode_event(out, event, id, data);
        frame.finish(out);
    } else {
        sse::encode_event(out, id, Some(event), data);
    }
}

/// Appends a `message` event (the hot path: no intermediate string).
#[inline]
pub fn message(
    out: &mut Vec<u8>,
    framing: Framing,
    id: EventId,
    from: &str,
    body: &[u8],
    json: bool,
) {
    if framing.is_websocket() {
        let frame = InPlace::begin(
            out,
            Opcode::Text,
            body.len() + from.len() + MESSAGE_OVERHEAD,
        );
        ws_msg::encode_message(out, id, from, body, json);
        frame.finish(out);
    } else {
        sse::encode_message(out, id, from, body, json);
    }
}

/// Appends the reconnection hint every SSE stream starts with and a
/// draining node's `reconnect` event repeats (nothing on a WebSocket
/// connection: its `reconnect` event says `retry_ms`).
pub fn retry(out: &mut Vec<u8>, framing: Framing, ms: u64) {
    if !framing.is_websocket() {
        sse::encode_retry(out, ms);
    }
}

/// Appends what ends a stream the server closes cleanly: the last chunk of
/// a chunked SSE body, or a Close frame with `code` and `reason` on a
/// WebSocket connection.
pub fn end(out: &mut Vec<u8>, framing: Framing, code: u16, reason: &str) {
    if framing.is_websocket() {
        push_close(out, code, reason);
    } else {
        out.extend_from_slice(framing.end());
    }
}

/// The start of a `message` event whose body is written from where it is
/// kept (see [`sse::plain_json_text`]): appends the event up to the body
/// (on a WebSocket connection, the frame header for the whole event
/// included) and returns what follows the body.
pub fn message_head(
    out: &mut Vec<u8>,
    framing: Framing,
    id: EventId,
    from: &str,
    body_len: usize,
    json: bool,
) -> &'static [u8] {
    if !framing.is_websocket() {
        sse::encode_message_head(out, id, from, json);
        return sse::message_tail(json);
    }
    let tail = ws_msg::message_tail(json);
    let mark = out.len();
    ws_msg::encode_message_head(out, id, from, json);
    let head_len = out.len() - mark;
    let mut header = Vec::with_capacity(super::ws::encode::MAX_SERVER_HEADER);
    super::ws::encode::push_header(&mut header, Opcode::Text, head_len + body_len + tail.len());
    out.splice(mark..mark, header);
    tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ws::frame::{Event, FrameDecoder};

    /// Reads back the text frames of `wire` (server frames are unmasked: a
    /// mask bit and a zero key are inserted so the client-side decoder
    /// takes them).
    fn texts(wire: &[u8]) -> Vec<String> {
        let mut masked = Vec::new();
        let mut pos = 0;
        while pos < wire.len() {
            let b1 = wire[pos + 1] & 0x7f;
            let (ext, len) = match b1 {
                126 => (
                    2,
                    u16::from_be_bytes([wire[pos + 2], wire[pos + 3]]) as usize,
                ),
                127 => (
                    8,
                    u64::from_be_bytes(wire[pos + 2..pos + 10].try_into().unwrap()) as usize,
                ),
                n => (0, n as usize),
            };
            masked.push(wire[pos]);
            masked.push(wire[pos + 1] | 0x80);
            masked.extend_from_slice(&wire[pos + 2..pos + 2 + ext]);
            masked.extend_from_slice(&[0, 0, 0, 0]);
            masked.extend_from_slice(&wire[pos + 2 + ext..pos + 2 + ext + len]);
            pos += 2 + ext + len;
        }
        let mut dec = FrameDecoder::new();
        let mut side = None;
        let mut got = Vec::new();
        let mut at = 0;
        while at < masked.len() {
            let d = dec
                .decode(&mut masked[at..], &mut side, 1 << 24)
                .expect("valid frames");
            at += d.consumed;
            match d.event {
                Some(Event::Text(t)) => got.push(String::from_utf8(t.into_owned()).unwrap()),
                Some(other) => got.push(format!("{other:?}")),
                None => {}
            }
        }
        got
    }

    #[test]
    fn the_same_event_on_both_transports() {
        let data = r#"{"after":"5-3","reason":"hold_limit"}"#;
        let mut sse_out = Vec::new();
        encode(&mut sse_out, Framing::Chunked, None, "gap", data);
        assert_eq!(sse_out, format!("event: gap\ndata: {data}\n\n").as_bytes());
        let mut ws = Vec::new();
        encode(&mut ws, Framing::WebSocket, None, "gap", data);
        assert_eq!(
            texts(&ws),
            [r#"{"event":"gap","after":"5-3","reason":"hold_limit"}"#]
        );
    }

    #[test]
    fn messages_of_every_size_class_are_one_frame_each() {
        let id = EventId {
            epoch: 0x5f,
            seq: 7,
        };
        for len in [0usize, 10, 125, 126, 200, 65_535, 65_536, 70_000] {
            let body = vec![b'a'; len];
            let mut ws = Vec::new();
            message(&mut ws, Framing::WebSocket, id, "console-1", &body, false);
            message(
                &mut ws,
                Framing::WebSocket,
                id,
                "console-1",
                b"{\"k\":1}",
                true,
            );
            let got = texts(&ws);
            assert_eq!(got.len(), 2, "{len}");
            let v: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
            assert_eq!(v["body"].as_str().map(str::len), Some(len));
            assert_eq!(v["id"], "5f-7");
            assert_eq!(
                got[1],
                r#"{"event":"message","id":"5f-7","from":"console-1","json":{"k":1}}"#
            );
        }
    }

    /// The head written before a body kept elsewhere, the body and the tail
    /// make the same frame as [`message`].
    #[test]
    fn a_message_written_around_its_body_is_the_same_frame() {
        let id = EventId { epoch: 1, seq: 2 };
        for framing in [Framing::WebSocket, Framing::Chunked] {
            for len in [4096usize, 65_535, 65_536, 100_000] {
                for json in [false, true] {
                    let body = if json {
                        format!("[{}]", "1,".repeat(len / 2) + "1").into_bytes()
                    } else {
                        vec![b'x'; len]
                    };
                    let mut whole = Vec::new();
                    message(&mut whole, framing, id, "c", &body, json);
                    let mut parts = Vec::new();
                    let tail = message_head(&mut parts, framing, id, "c", body.len(), json);
                    parts.extend_from_slice(&body);
                    parts.extend_from_slice(tail);
                    assert_eq!(parts, whole, "{framing:?} {len} {json}");
                }
            }
        }
    }

    #[test]
    fn a_websocket_stream_ends_with_a_close_frame() {
        let mut ws = Vec::new();
        end(&mut ws, Framing::WebSocket, 1012, "draining");
        assert_eq!(ws[0], 0x88);
        assert_eq!(&ws[2..4], &1012u16.to_be_bytes());
        assert_eq!(&ws[4..], b"draining");
        let mut sse_out = Vec::new();
        end(&mut sse_out, Framing::Chunked, 1012, "draining");
        assert_eq!(sse_out, crate::proto::stream::LAST_CHUNK);
        retry(&mut ws, Framing::WebSocket, 5);
        assert_eq!(ws.len(), 12);
    }
}
