//! The client side of WebSocket (RFC 6455) that the bench needs, sans-IO:
//! the upgrade request, the check of the `101` answer, masked client frames
//! (Switchboard's `send` command written straight into a connection's output,
//! MQTT packets for Mosquitto's `websockets` listener), a splitter of server
//! frames, and the few fields of Switchboard's JSON events the bench reads
//! (docs/websocket.md).
//!
//! Server frames are expected whole: a fragmented data message is an error
//! ([`WsError::Fragmented`]); Switchboard never fragments its events, and
//! neither nchan nor Mosquitto fragments the small messages the bench relays.

use std::fmt;

use crate::mqtt;
use crate::proto::{find, parse_marker, push_decimal, Got, HeadCheck, Target};
use switchboard::proto::ws::frame::unmask;

/// The `Sec-WebSocket-Key` every bench connection offers: RFC 6455's own
/// example (§1.3). Servers take any well-formed key; a fixed one lets the
/// answer be checked against a constant, with no hashing per connection.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The `Sec-WebSocket-Accept` a server must answer [`KEY`] with (RFC 6455 §1.3).
pub const ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// Largest server frame payload the bench takes (a 64 KB body, escaped, is far less).
pub const MAX_FRAME: u64 = 16 << 20;
/// Largest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL: u64 = 125;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// What is wrong with a server's answer or frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsError {
    /// The upgrade was answered with another status than 101 (status, error code if the body had one).
    Status(String),
    /// `Sec-WebSocket-Accept` missing or not the one [`KEY`] calls for.
    BadAccept,
    /// A server frame with the mask bit set (RFC 6455 §5.1).
    Masked,
    /// A server frame with reserved bits set (no extension was negotiated).
    Reserved(u8),
    /// An opcode RFC 6455 does not define.
    Opcode(u8),
    /// A fragmented data message (see the module documentation).
    Fragmented,
    /// A frame payload over [`MAX_FRAME`], or a control frame over [`MAX_CONTROL`].
    TooBig(u64),
    /// The server sent a Close (its code, if any).
    Closed(Option<u16>),
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Status(s) => write!(f, "status {s}"),
            WsError::BadAccept => f.write_str("websocket: bad Sec-WebSocket-Accept"),
            WsError::Masked => f.write_str("websocket: masked server frame"),
            WsError::Reserved(b) => write!(f, "websocket: reserved bits {b:#x}"),
            WsError::Opcode(o) => write!(f, "websocket: opcode {o:#x}"),
            WsError::Fragmented => f.write_str("websocket: fragmented message"),
            WsError::TooBig(n) => write!(f, "websocket: frame of {n} bytes"),
            WsError::Closed(Some(c)) => write!(f, "websocket: close {c}"),
            WsError::Closed(None) => f.write_str("websocket: close"),
        }
    }
}

/// The opening request of a WebSocket connection to `path`; `extra` holds
/// more header lines, each ending in CRLF (an `Authorization`, a
/// `Sec-WebSocket-Protocol`).
pub fn upgrade_request(path: &str, host: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// Checks the answer to [`upgrade_request`]: `Ok(None)` until the head is
/// complete, then the offset where frames start. Another status than 101 is
/// an error naming it and, once the body is there, the JSON error code.
pub fn check_upgrade(buf: &[u8]) -> Result<Option<usize>, WsError> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = &buf[..end];
    if !head.starts_with(b"HTTP/1.1 101") {
        let status = String::from_utf8_lossy(head.get(9..12).unwrap_or(b"???"));
        let code = str_field(&buf[end..], b"\"error\":\"")
            .map(|c| format!(" {}", String::from_utf8_lossy(c)))
            .unwrap_or_default();
        return Err(WsError::Status(format!("{status}{code}")));
    }
    let accept = head.split(|&b| b == b'\n').find_map(|line| {
        let name = b"sec-websocket-accept:";
        (line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name))
            .then(|| line[name.len()..].trim_ascii())
    });
    if accept != Some(ACCEPT) {
        return Err(WsError::BadAccept);
    }
    Ok(Some(end + 4))
}

/// One server frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub opcode: u8,
    pub payload: &'a [u8],
}

/// Splits the server frame at the start of `buf`: `(bytes used, frame)`, or
/// `None` if it is not complete yet. A Close is returned as a frame (its
/// payload holds the code); the caller ends the connection.
pub fn frame(buf: &[u8]) -> Result<Option<(usize, Frame<'_>)>, WsError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err(WsError::Masked);
    }
    if b0 & 0x70 != 0 {
        return Err(WsError::Reserved(b0 & 0x70));
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    let control = opcode & 0x08 != 0;
    match opcode {
        OP_TEXT | OP_BINARY if fin => {}
        OP_CONT | OP_TEXT | OP_BINARY => return Err(WsError::Fragmented),
        OP_CLOSE | OP_PING | OP_PONG => {}
        o => return Err(WsError::Opcode(o)),
    }
    let (len, at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 10)
            }
            None => return Ok(None),
        },
        n => (n as u64, 2),
    };
    if len > MAX_FRAME || (control && (len > MAX_CONTROL || !fin)) {
        return Err(WsError::TooBig(len));
    }
    let end = at + len as usize;
    match buf.get(at..end) {
        Some(payload) => Ok(Some((end, Frame { opcode, payload }))),
        None => Ok(None),
    }
}

/// The code of a Close frame's payload, if it has one.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]))
}

/// A mask key for a client frame. RFC 6455 wants keys a page's script cannot
/// predict (against cache poisoning through proxies); the bench talks to
/// servers directly, so a key derived from a counter does: it changes every
/// frame, as the server's unmasking then does real work.
pub fn mask_key(n: u64) -> [u8; 4] {
    let z = (n.wrapping_add(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    ((z >> 32) as u32 | 1).to_be_bytes()
}

/// Appends a masked client frame header (FIN set) for a payload of `len` bytes.
fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize, mask: [u8; 4]) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
}

/// Appends one masked client frame of `payload` (FIN set).
pub fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    push_header(out, opcode, payload.len(), mask);
    let at = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[at..], mask);
}

/// Appends Switchboard's `send` command, one masked text frame:
/// `{"type":"send","to":"<to>","body":"<body>","ref":"<ref_>"}`. `to` and
/// `body` go in as they are: the bench's receiver names and bodies
/// ([`crate::proto::make_body`]) are letters, digits, `@` and `,`, which JSON
/// strings hold unescaped. Nothing is allocated beyond `out`'s growth.
pub fn push_send(out: &mut Vec<u8>, to: &[u8], body: &[u8], ref_: u64) {
    const A: &[u8] = b"{\"type\":\"send\",\"to\":\"";
    const B: &[u8] = b"\",\"body\":\"";
    const C: &[u8] = b"\",\"ref\":\"";
    const D: &[u8] = b"\"}";
    let digits = ref_.checked_ilog10().unwrap_or(0) as usize + 1;
    let len = A.len() + to.len() + B.len() + body.len() + C.len() + digits + D.len();
    let mask = mask_key(ref_);
    push_header(out, OP_TEXT, len, mask);
    let at = out.len();
    out.reserve(len);
    out.extend_from_slice(A);
    out.extend_from_slice(to);
    out.extend_from_slice(B);
    out.extend_from_slice(body);
    out.extend_from_slice(C);
    push_decimal(out, ref_);
    out.extend_from_slice(D);
    debug_assert_eq!(out.len() - at, len);
    unmask(&mut out[at..], mask);
}

/// The string value of the first member whose opening (`"name":"`) is
/// `key`, when it holds no escapes (the event fields the bench reads never do).
fn str_field<'a>(payload: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let from = find(payload, key)? + key.len();
    let rest = &payload[from..];
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    (rest[end] == b'"').then(|| &rest[..end])
}

/// What a Switchboard event is, as far as the bench cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    Ready,
    Message,
    /// The answer to the `send` with this `ref`.
    Accepted(&'a [u8]),
    /// A refused command: its `ref` (if any) and error code.
    Error(Option<&'a [u8]>, &'a [u8]),
    /// Any other event (`peer-gone`, `gap`, `reconnect`, `replaced`, ..), by name.
    Other(&'a [u8]),
}

/// Reads the kind of one Switchboard event (the payload of a text frame);
/// `None` if it has no `event` member.
pub fn event(payload: &[u8]) -> Option<Event<'_>> {
    const EVENT: &[u8] = b"\"event\":\"";
    // Switchboard writes `event` first: read it in place, search only otherwise.
    let name = match payload
        .strip_prefix(b"{")
        .and_then(|p| p.strip_prefix(EVENT))
    {
        Some(rest) => &rest[..rest.iter().position(|&b| b == b'"')?],
        None => str_field(payload, EVENT)?,
    };
    Some(match name {
        b"ready" => Event::Ready,
        b"message" => Event::Message,
        b"accepted" => Event::Accepted(str_field(payload, b"\"ref\":\"").unwrap_or_default()),
        b"error" => Event::Error(
            str_field(payload, b"\"ref\":\""),
            str_field(payload, b"\"error\":\"").unwrap_or(b"?"),
        ),
        other => Event::Other(other),
    })
}

/// Whether a new WebSocket receive connection of target `t` is established:
/// the `101`, then for Switchboard its `ready` event, for Mosquitto the
/// CONNACK and SUBACK (in binary frames); nchan's subscriber is up at the `101`.
pub fn check_ready(t: Target, buf: &[u8]) -> HeadCheck {
    let mut pos = match check_upgrade(buf) {
        Ok(Some(at)) => at,
        Ok(None) => return HeadCheck::More,
        Err(e) => return HeadCheck::Bad(e.to_string()),
    };
    if t == Target::NchanWs {
        return HeadCheck::Ready(pos);
    }
    // Mosquitto's packets so far (set-up only: a few bytes per connection).
    let mut packets = Vec::new();
    loop {
        let (n, f) = match frame(&buf[pos..]) {
            Ok(Some(x)) => x,
            Ok(None) => return HeadCheck::More,
            Err(e) => return HeadCheck::Bad(e.to_string()),
        };
        pos += n;
        match (t, f.opcode) {
            (_, OP_CLOSE) => {
                return HeadCheck::Bad(WsError::Closed(close_code(f.payload)).to_string())
            }
            (_, OP_PING | OP_PONG) => {}
            (Target::MosquittoWs, OP_BINARY) => {
                packets.extend_from_slice(f.payload);
                match mqtt::check_subscribed(&packets) {
                    HeadCheck::More => {}
                    HeadCheck::Ready(_) => return HeadCheck::Ready(pos),
                    HeadCheck::Bad(e) => return HeadCheck::Bad(e),
                }
            }
            (_, _) => {
                return match event(f.payload) {
                    Some(Event::Ready) => HeadCheck::Ready(pos),
                    Some(Event::Error(_, code)) => {
                        HeadCheck::Bad(format!("error {}", String::from_utf8_lossy(code)))
                    }
                    _ => HeadCheck::Bad(format!(
                        "websocket: {:?} before ready",
                        String::from_utf8_lossy(&f.payload[..f.payload.len().min(60)])
                    )),
                }
            }
        }
    }
}

/// Calls `f` for every complete frame at the start of `buf` (a receive
/// stream of target `t` after [`check_ready`]); returns the bytes used.
/// Switchboard's `message` events and nchan's messages carry markers, as do
/// the PUBLISH packets in Mosquitto's binary frames (whole packets per frame).
pub fn drain(t: Target, buf: &[u8], f: &mut impl FnMut(Got)) -> Result<usize, String> {
    let mut pos = 0;
    while let Some((n, fr)) = frame(&buf[pos..]).map_err(|e| e.to_string())? {
        pos += n;
        let marked = match (t, fr.opcode) {
            (_, OP_CLOSE) => return Err(WsError::Closed(close_code(fr.payload)).to_string()),
            (Target::SwitchboardWs, OP_TEXT) => match event(fr.payload) {
                Some(Event::Message) => parse_marker(fr.payload),
                _ => None,
            },
            (Target::MosquittoWs, OP_BINARY) => match mqtt::packet(fr.payload)? {
                Some((_, first, body)) => mqtt::publish_payload(first, body).and_then(parse_marker),
                None => return Err("MQTT packet split over frames".into()),
            },
            (_, OP_TEXT) => parse_marker(fr.payload),
            _ => None,
        };
        match marked {
            Some((ts, s, q)) => f(Got::Msg(ts, s, q)),
            None => f(Got::Other),
        }
    }
    Ok(pos)
}

#[cfg(test)]
#[path = "ws_tests.rs"]
mod tests;
