//! The `ws` fuzz target: the WebSocket frame decoder and message reassembly.

#[allow(unused_imports)]
use super::*;

use crate::proto::ws::close::valid_code;
use crate::proto::ws::encode::{push_header, Opcode};
use crate::proto::ws::frame::{unmask, Event, FrameDecoder, FrameError, MAX_CONTROL};

// ---------------------------------------------------------------------------
// ws
// ---------------------------------------------------------------------------

/// Message limits chosen by one byte (`--max-message` values small enough to
/// reach, around the control-frame and length-encoding boundaries).
pub(super) const WS_LIMITS: [usize; 10] = [0, 1, 2, 5, 16, 100, 125, 126, 1000, 65536];

/// A decoded event with owned contents, comparable across runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum WsEvent {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

/// What feeding some pieces to a fresh decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct WsOutcome {
    events: Vec<WsEvent>,
    pub(super) error: Option<FrameError>,
}

/// Feeds `pieces` one read at a time the way the server does (looping while
/// a call returns an event), checking the per-call contract and the
/// properties of every event.
pub(super) fn ws_decode(pieces: &[&[u8]], max: usize) -> WsOutcome {
    let mut dec = FrameDecoder::new();
    let mut buf: Option<Vec<u8>> = None;
    let mut events = Vec::new();
    let mut closed = false;
    for piece in pieces {
        let mut input = piece.to_vec();
        let total = input.len();
        let mut pos = 0;
        loop {
            match dec.decode(&mut input[pos..], &mut buf, max) {
                Ok(d) => {
                    assert!(
                        d.consumed <= total - pos,
                        "ws: consumed {} of {}",
                        d.consumed,
                        total - pos
                    );
                    let last = d.event.is_none();
                    if last {
                        assert!(
                            d.consumed == total - pos,
                            "ws: no event but {} of {} bytes left",
                            total - pos - d.consumed,
                            total - pos
                        );
                    }
                    pos += d.consumed;
                    if let Some(e) = d.event {
                        assert!(!closed, "ws: event {e:?} after a Close");
                        let e = ws_event(e, max);
                        closed = matches!(e, WsEvent::Close(_));
                        events.push(e);
                    }
                    if let Some(b) = &buf {
                        assert!(
                            b.len() <= max + MAX_CONTROL,
                            "ws: {} bytes buffered with max_message {max}",
                            b.len()
                        );
                    }
                    if dec.is_idle() || dec.is_closed() {
                        assert!(
                            buf.as_ref().is_none_or(Vec::is_empty),
                            "ws: idle decoder with a buffer"
                        );
                    }
                    if last || pos == total {
                        break;
                    }
                }
                Err(e) => {
                    assert!(buf.is_none(), "ws: buffer kept after {e:?}");
                    let mut more = [0x81, 0x80, 0, 0, 0, 0];
                    let again = dec.decode(&mut more, &mut buf, max).map(|d| d.consumed);
                    assert!(again == Err(e), "ws: error {e:?} not sticky: {again:?}");
                    assert!(
                        matches!(e.close_code(), 1002 | 1007 | 1009) && e.reason().len() <= 123,
                        "ws: {e:?} closes with {}",
                        e.close_code()
                    );
                    return WsOutcome {
                        events,
                        error: Some(e),
                    };
                }
            }
        }
    }
    WsOutcome {
        events,
        error: None,
    }
}

/// Checks one event's properties and makes it owned.
fn ws_event(e: Event<'_>, max: usize) -> WsEvent {
    match e {
        Event::Text(t) => {
            assert!(t.len() <= max, "ws: text of {} > {max}", t.len());
            assert!(
                std::str::from_utf8(&t).is_ok(),
                "ws: text message is not UTF-8: {}",
                show(&t)
            );
            WsEvent::Text(t.into_owned())
        }
        Event::Binary(b) => {
            assert!(b.len() <= max, "ws: binary of {} > {max}", b.len());
            WsEvent::Binary(b.into_owned())
        }
        Event::Ping(p) => {
            assert!(p.len() <= MAX_CONTROL, "ws: ping of {}", p.len());
            WsEvent::Ping(p.into_owned())
        }
        Event::Pong(p) => {
            assert!(p.len() <= MAX_CONTROL, "ws: pong of {}", p.len());
            WsEvent::Pong(p.into_owned())
        }
        Event::Close(c) => WsEvent::Close(c.map(|c| {
            assert!(valid_code(c.code), "ws: close code {}", c.code);
            assert!(
                c.reason.len() <= 123,
                "ws: close reason of {}",
                c.reason.len()
            );
            (c.code, c.reason.into_owned())
        })),
    }
}

/// Appends a masked client frame (`b0`: FIN, RSV and opcode) with the
/// minimal length encoding, using the server encoder's header.
pub(super) fn client_frame(out: &mut Vec<u8>, b0: u8, payload: &[u8], key: [u8; 4]) {
    let start = out.len();
    push_header(out, Opcode::Text, payload.len());
    out[start] = b0;
    out[start + 1] |= 0x80;
    out.extend_from_slice(&key);
    let at = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[at..], key);
}

/// Fuzzes [`FrameDecoder`].
///
/// Layout: a limit byte (`WS_LIMITS`, mod 10), a mode byte, a split count
/// and selectors, then the payload. Mode bit 0 clear: the payload is the
/// client's byte stream. Mode bit 0 set: the payload is a script of frames
/// (`b0`, a length byte, that many payload bytes; masked by the harness with
/// a key from the mode byte), so that most inputs are well-formed frames with
/// fuzzer-chosen flags, opcodes and contents.
///
/// Properties:
/// * Whole input, the fuzzer-chosen pieces and byte by byte (up to 4 KiB)
///   give the same events and the same error.
/// * Per call: consumed <= input; no event means all consumed; the caller's
///   buffer never holds more than the limit + 125 bytes, is empty when the
///   decoder is idle, and is dropped on an error; errors are sticky and close
///   with 1002, 1007 or 1009; nothing after a Close.
/// * Events: text is UTF-8; messages are within the limit; control payloads
///   at most 125 bytes; Close codes valid.
/// * Round trip: the payload sent as one message (text if it is UTF-8, else
///   binary), fragmented at the split points with a Ping between fragments
///   (mode bit 1) and followed by a Close, decodes to the pings, the message
///   and the Close; or, when it exceeds the limit, to the pings sent before
///   the fragment that crossed it and `TooLarge`.
pub fn ws(data: &[u8]) {
    let mut inp = Input::new(data);
    let max = WS_LIMITS[usize::from(inp.byte()) % WS_LIMITS.len()];
    let mode = inp.byte();
    let selectors = inp.splits();
    let payload = inp.rest();
    let key = [
        mode,
        mode.wrapping_mul(31),
        0x5a ^ mode,
        mode.rotate_left(3),
    ];

    let stream = if mode & 1 != 0 {
        ws_script(payload, key)
    } else {
        payload.to_vec()
    };

    let whole = ws_decode(&[&stream], max);
    let split = ws_decode(&pieces(&stream, &selectors), max);
    assert!(
        split == whole,
        "ws: split at {:?} gives {split:?}, whole gives {whole:?}",
        cut_points(&selectors, stream.len())
    );
    if stream.len() <= 4096 {
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let one = ws_decode(&bytes, max);
        assert!(
            one == whole,
            "ws: byte by byte gives {one:?}, whole gives {whole:?}"
        );
    }

    ws_round_trip(payload, max, mode & 2 != 0, &selectors, key);
}

/// Turns a script (`b0`, length byte, payload) into masked frames.
pub(super) fn ws_script(script: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = script;
    while let [b0, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        client_frame(&mut out, *b0, &tail[..n], key);
        rest = &tail[n..];
    }
    out
}

/// Sends `payload` as one fragmented message and checks what comes back.
fn ws_round_trip(payload: &[u8], max: usize, pings: bool, selectors: &[u8], key: [u8; 4]) {
    let text = std::str::from_utf8(payload).is_ok();
    let frags = pieces(payload, selectors);
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    let mut error = None;
    let mut sum = 0usize;
    for (i, frag) in frags.iter().enumerate() {
        let op = match (i, text) {
            (0, true) => 0x01,
            (0, false) => 0x02,
            _ => 0x00,
        };
        let fin = if i + 1 == frags.len() { 0x80 } else { 0 };
        client_frame(&mut stream, fin | op, frag, key);
        sum += frag.len();
        if sum > max && error.is_none() {
            error = Some(FrameError::TooLarge);
        }
        if pings && fin == 0 {
            let ping = [i as u8; 3];
            client_frame(&mut stream, 0x89, &ping, key);
            if error.is_none() {
                expected.push(WsEvent::Ping(ping.to_vec()));
            }
        }
    }
    client_frame(&mut stream, 0x88, b"\x03\xe8done", key);
    if error.is_none() {
        expected.push(if text {
            WsEvent::Text(payload.to_vec())
        } else {
            WsEvent::Binary(payload.to_vec())
        });
        expected.push(WsEvent::Close(Some((1000, "done".into()))));
    }
    let want = WsOutcome {
        events: expected,
        error,
    };
    let got = ws_decode(&pieces(&stream, selectors), max);
    assert!(
        got == want,
        "ws: round trip of {} with max {max} gives {got:?}, expected {want:?}",
        show(payload)
    );
}
