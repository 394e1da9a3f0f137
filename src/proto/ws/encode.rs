//! Encoders for the frames the server sends: unmasked, FIN set, never
//! fragmented (one event is one text frame).

/// A server frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

/// Longest header of an unmasked frame: 2 bytes and a 64-bit length.
pub const MAX_SERVER_HEADER: usize = 10;

/// Length of the header of an unmasked frame with `payload_len` bytes.
pub fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// The header of an unmasked, final frame with `payload_len` bytes, in the
/// first `n` bytes of the array (`n` is [`header_len`]).
fn header(opcode: Opcode, payload_len: usize) -> ([u8; MAX_SERVER_HEADER], usize) {
    let mut h = [0u8; MAX_SERVER_HEADER];
    h[0] = 0x80 | opcode as u8;
    match payload_len {
        // Fits in 7 bits.
        0..=125 => {
            h[1] = payload_len as u8;
            (h, 2)
        }
        // Fits in 16 bits.
        126..=0xFFFF => {
            h[1] = 126;
            h[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            (h, 4)
        }
        _ => {
            h[1] = 127;
            h[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            (h, 10)
        }
    }
}

/// Appends the header of an unmasked, final frame with `payload_len` bytes;
/// the payload follows (in the same buffer or the next `iovec`).
pub fn push_header(out: &mut Vec<u8>, opcode: Opcode, payload_len: usize) {
    let (h, n) = header(opcode, payload_len);
    out.extend_from_slice(&h[..n]);
}

/// Appends a text frame (`payload` must be UTF-8: the caller's JSON).
pub fn push_text(out: &mut Vec<u8>, payload: &[u8]) {
    out.reserve(header_len(payload.len()) + payload.len());
    push_header(out, Opcode::Text, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a Ping; the payload is cut to 125 bytes (control frame limit).
pub fn push_ping(out: &mut Vec<u8>, payload: &[u8]) {
    push_control(out, Opcode::Ping, payload);
}

/// Appends the Pong answering a Ping with `payload` (cut to 125 bytes; a
/// received Ping's payload never is longer).
pub fn push_pong(out: &mut Vec<u8>, payload: &[u8]) {
    push_control(out, Opcode::Pong, payload);
}

fn push_control(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    let payload = &payload[..payload.len().min(super::frame::MAX_CONTROL)];
    push_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a Close with `code` and `reason`, the reason cut on a character
/// boundary to fit the 125-byte control frame (123 bytes after the code).
/// `code` should satisfy [`super::close::valid_code`].
pub fn push_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(super::close::MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    push_header(out, Opcode::Close, 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

/// Appends a Close without a status code (an empty payload).
pub fn push_empty_close(out: &mut Vec<u8>) {
    push_header(out, Opcode::Close, 0);
}

/// A frame being encoded in place: [`InPlace::begin`] reserves room for the
/// header, the caller appends the payload straight after it, and
/// [`InPlace::finish`] writes the header once the length is known. The room
/// is sized for a length hint; when the payload's length needs another
/// header size (the hint was on the other side of 125 or 65535), `finish`
/// moves the payload (a copy, the rare case): with a good hint the payload
/// is written once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InPlace {
    /// Where the frame starts in the buffer.
    start: usize,
    /// Bytes reserved for the header.
    room: usize,
    opcode: Opcode,
}

impl InPlace {
    /// Reserves header room for a payload of about `len_hint` bytes.
    pub fn begin(out: &mut Vec<u8>, opcode: Opcode, len_hint: usize) -> InPlace {
        let start = out.len();
        let room = header_len(len_hint);
        out.resize(start + room, 0);
        InPlace {
            start,
            room,
            opcode,
        }
    }

    /// Writes the header for the bytes appended since [`InPlace::begin`].
    /// Returns the frame's length (header and payload).
    pub fn finish(self, out: &mut Vec<u8>) -> usize {
        let payload_at = self.start + self.room;
        let len = out.len().saturating_sub(payload_at);
        let need = header_len(len);
        if need != self.room {
            // Resize the gap: grow it (shifting the payload right) or shrink it.
            if need > self.room {
                out.splice(
                    payload_at..payload_at,
                    std::iter::repeat_n(0, need - self.room),
                );
            } else {
                out.drain(self.start + need..payload_at);
            }
        }
        let (h, n) = header(self.opcode, len);
        out[self.start..self.start + n].copy_from_slice(&h[..n]);
        need + len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ws::frame::{unmask, Event, FrameDecoder};
    use std::borrow::Cow;

    /// Masks a server frame as a client would (mask bit and key inserted), so
    /// the decoder can read it back.
    fn as_client(frame: &[u8]) -> Vec<u8> {
        let hlen = match frame[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = frame[..hlen].to_vec();
        out[1] |= 0x80;
        out.extend_from_slice(&key);
        let mut payload = frame[hlen..].to_vec();
        unmask(&mut payload, key);
        out.extend_from_slice(&payload);
        out
    }

    fn decode_one(frame: &[u8]) -> Event<'static> {
        let mut input = as_client(frame);
        let total = input.len();
        let mut buf = None;
        let d = FrameDecoder::new()
            .decode(&mut input, &mut buf, 1 << 20)
            .expect("valid frame");
        assert_eq!(d.consumed, total);
        match d.event.expect("an event") {
            Event::Text(t) => Event::Text(Cow::Owned(t.into_owned())),
            Event::Ping(t) => Event::Ping(Cow::Owned(t.into_owned())),
            Event::Pong(t) => Event::Pong(Cow::Owned(t.into_owned())),
            Event::Close(c) => Event::Close(c.map(|c| crate::proto::ws::close::CloseFrame {
                code: c.code,
                reason: Cow::Owned(c.reason.into_owned()),
            })),
            Event::Binary(t) => Event::Binary(Cow::Owned(t.into_owned())),
        }
    }

    #[test]
    fn headers() {
        let h = |len| {
            let mut v = Vec::new();
            push_header(&mut v, Opcode::Text, len);
            assert_eq!(v.len(), header_len(len));
            v
        };
        assert_eq!(h(0), [0x81, 0]);
        assert_eq!(h(125), [0x81, 125]);
        assert_eq!(h(126), [0x81, 126, 0, 126]);
        assert_eq!(h(65535), [0x81, 126, 0xff, 0xff]);
        assert_eq!(h(65536), [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        let mut v = Vec::new();
        push_header(&mut v, Opcode::Pong, 3);
        assert_eq!(v, [0x8a, 3]);
    }

    #[test]
    fn frames_read_back() {
        for len in [0, 1, 125, 126, 65535, 65536, 70000] {
            let payload = "é".repeat(len / 2) + if len % 2 == 1 { "x" } else { "" };
            let mut v = Vec::new();
            push_text(&mut v, payload.as_bytes());
            assert_eq!(
                decode_one(&v),
                Event::Text(payload.as_bytes().to_vec().into())
            );
        }
        let mut v = Vec::new();
        push_ping(&mut v, &[7; 200]);
        assert_eq!(decode_one(&v), Event::Ping(vec![7; 125].into()));
        let mut v = Vec::new();
        push_pong(&mut v, b"abc");
        assert_eq!(v, b"\x8a\x03abc");
        assert_eq!(decode_one(&v), Event::Pong(b"abc".to_vec().into()));
    }

    #[test]
    fn close_frames() {
        let mut v = Vec::new();
        push_close(&mut v, 1012, "restart");
        assert_eq!(v, b"\x88\x09\x03\xf4restart");
        // A long reason is cut on a character boundary to fit 125 bytes.
        let long = "ü".repeat(100);
        let mut v = Vec::new();
        push_close(&mut v, 1000, &long);
        assert_eq!(v[1], 2 + 122);
        match decode_one(&v) {
            Event::Close(Some(c)) => assert_eq!((c.code, c.reason.len()), (1000, 122)),
            other => panic!("{other:?}"),
        }
        let ascii = "a".repeat(200);
        let mut v = Vec::new();
        push_close(&mut v, 1001, &ascii);
        assert_eq!(v.len(), 2 + 125);
        let mut v = Vec::new();
        push_empty_close(&mut v);
        assert_eq!(v, [0x88, 0]);
        assert_eq!(decode_one(&v), Event::Close(None));
    }

    #[test]
    fn in_place() {
        for hint in [0, 100, 125, 126, 1000, 65535, 65536, 100_000] {
            for len in [0, 5, 125, 126, 65535, 65536, 70_000] {
                let mut out = b"prev".to_vec();
                let f = InPlace::begin(&mut out, Opcode::Text, hint);
                out.extend(std::iter::repeat_n(b'j', len));
                let n = f.finish(&mut out);
                let mut expect = b"prev".to_vec();
                push_text(&mut expect, &vec![b'j'; len]);
                assert_eq!(n, expect.len() - 4);
                assert!(out == expect, "hint {hint} len {len}");
            }
        }
    }
}
