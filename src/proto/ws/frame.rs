//! Incremental decoder for the frames a client sends (RFC 6455 §5).
//!
//! Sans-IO, and split-proof: the events and the error do not depend on how
//! the bytes are cut into reads. The decoder itself is 32 bytes with no heap
//! memory: a partial frame header (at most [`MAX_HEADER`] bytes) is kept
//! inline, and the bytes of a message that is not complete yet go into a
//! buffer the *caller* owns (`&mut Option<Vec<u8>>`, e.g. in a per-worker
//! side table keyed by connection). The decoder creates that buffer when a
//! frame's payload has to wait for a later read or a message is fragmented,
//! and hands it over (`Cow::Owned`) or drops it when the message is complete,
//! so between messages it is `None`: an idle connection holds nothing. A
//! message that arrives as one whole frame within one read is delivered
//! without a copy (`Cow::Borrowed`, unmasked in place in the caller's input).
//!
//! One call returns at most one event; the caller loops:
//!
//! ```
//! # use switchboard::proto::ws::frame::{FrameDecoder, Event};
//! # let mut input = vec![0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
//! # let mut dec = FrameDecoder::new();
//! # let mut side: Option<Vec<u8>> = None;
//! let mut pos = 0;
//! while pos < input.len() {
//!     let d = dec.decode(&mut input[pos..], &mut side, 1 << 20)?;
//!     pos += d.consumed;
//!     if let Some(event) = d.event {
//!         // handle it (a Close ends the loop's useful work: later bytes are ignored)
//! #       assert_eq!(event, Event::Text(b"hi"[..].into()));
//!     }
//! }
//! # assert!(side.is_none());
//! # Ok::<(), switchboard::proto::ws::frame::FrameError>(())
//! ```
//!
//! A call without an event has consumed all of its input; a call with one
//! stops right after the frame that completed it. Nothing is ever pending
//! inside the decoder, so a call with empty input returns nothing.
//!
//! Rules (each error names its close code, [`FrameError::close_code`]):
//! RSV1-3 must be 0 (no extension is negotiated); client frames must be
//! masked; opcodes 3-7 and 11-15 are reserved; control frames (Close, Ping,
//! Pong) carry at most 125 bytes and are never fragmented, but may come
//! between the fragments of a message; a continuation needs a message in
//! progress and a new text or binary frame needs none; the 64-bit length has
//! its top bit clear; lengths use the minimal encoding (RFC 6455 §5.2: "the
//! minimal number of bytes MUST be used"; refused with 1002 rather than
//! tolerated, since no client library we know sends otherwise and a
//! non-minimal length is a sign of a hand-made or smuggled frame); a
//! message (the sum of its fragments) is at most the caller's limit, decided
//! from each frame header before its payload is buffered (1009); text is
//! UTF-8, checked as each piece arrives, so a bad byte fails at once even in
//! the first fragment (1007); a Close payload is empty or a valid code and a
//! UTF-8 reason ([`super::close::parse_payload`]). Errors are checked in a
//! fixed order as soon as the bytes that decide them are in (RSV, opcode,
//! control-frame rules, mask and message state from the first two header
//! bytes; length rules and the limit from the full header). After an error,
//! every call returns it again and the buffer is dropped; after a Close, the
//! decoder ignores everything.

use std::borrow::Cow;

use super::close::{self, CloseFrame};
use super::utf8::Utf8;

/// Longest frame header: 2 bytes, a 64-bit extended length, the mask key.
pub const MAX_HEADER: usize = 14;
/// Longest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL: usize = 125;
/// Most memory reserved for a message's payload before its bytes arrive; the
/// buffer then grows with what is received, so a client that announces a
/// large frame and sends little of it holds little.
pub const RESERVE_STEP: usize = 64 << 10;

/// Why a client's frames were refused; the connection is closed with
/// [`FrameError::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// RSV1, RSV2 or RSV3 set without a negotiated extension (1002).
    ReservedBits,
    /// A reserved opcode (3-7, 11-15) (1002); carries it.
    ReservedOpcode(u8),
    /// A client frame without a mask (1002).
    Unmasked,
    /// A control frame with FIN clear (1002).
    FragmentedControl,
    /// A control frame longer than 125 bytes (1002).
    ControlTooLong,
    /// A continuation frame with no message in progress (1002).
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is in progress (1002).
    ExpectedContinuation,
    /// A 64-bit payload length with its most significant bit set (1002).
    LengthOverflow,
    /// A payload length not in its shortest encoding (1002).
    NonMinimalLength,
    /// The message would exceed the caller's limit (1009).
    TooLarge,
    /// A text message that is not UTF-8 (1007).
    InvalidUtf8,
    /// A Close payload of 1 byte (carries 0) or with an invalid status code (1002).
    CloseCode(u16),
    /// A Close reason that is not UTF-8 (1007).
    CloseReason,
}

impl FrameError {
    /// The status code of the Close frame the server answers with.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::TooLarge => close::MESSAGE_TOO_BIG,
            FrameError::InvalidUtf8 | FrameError::CloseReason => close::INVALID_PAYLOAD,
            _ => close::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the Close frame and the log (ASCII, under 123 bytes).
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::ReservedBits => "reserved bits set",
            FrameError::ReservedOpcode(_) => "reserved opcode",
            FrameError::Unmasked => "client frame not masked",
            FrameError::FragmentedControl => "fragmented control frame",
            FrameError::ControlTooLong => "control frame over 125 bytes",
            FrameError::UnexpectedContinuation => "continuation without a message",
            FrameError::ExpectedContinuation => "new message inside a fragmented one",
            FrameError::LengthOverflow => "payload length overflow",
            FrameError::NonMinimalLength => "payload length not minimally encoded",
            FrameError::TooLarge => "message too big",
            FrameError::InvalidUtf8 => "text is not UTF-8",
            FrameError::CloseCode(_) => "invalid close code",
            FrameError::CloseReason => "close reason is not UTF-8",
        }
    }
}

/// A frame's kind (its opcode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Kind {
    fn from_opcode(op: u8) -> Result<Kind, FrameError> {
        Ok(match op {
            0 => Kind::Continuation,
            1 => Kind::Text,
            2 => Kind::Binary,
            8 => Kind::Close,
            9 => Kind::Ping,
            10 => Kind::Pong,
            _ => return Err(FrameError::ReservedOpcode(op)),
        })
    }

    fn is_control(self) -> bool {
        matches!(self, Kind::Close | Kind::Ping | Kind::Pong)
    }
}

/// The type of the data message in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    Text,
    Binary,
}

/// Where the decoder is in the frame syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a frame header; `len` bytes of it are in `buf`.
    Header { buf: [u8; MAX_HEADER], len: u8 },
    /// Reading a frame's payload; `remaining` bytes of it left. `mask` is
    /// rotated so that `mask[0]` applies to the next byte. `len` is a control
    /// frame's whole payload length (0 for data frames).
    Payload {
        remaining: u64,
        mask: [u8; 4],
        kind: Kind,
        fin: bool,
        len: u8,
    },
    /// A Close was received: everything after it is ignored.
    Closed,
    /// An error was reported; it is reported again on every call.
    Failed(FrameError),
}

const START: State = State::Header {
    buf: [0; MAX_HEADER],
    len: 0,
};

/// A complete frame-level event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message; the bytes are valid UTF-8.
    Text(Cow<'a, [u8]>),
    /// A complete binary message.
    Binary(Cow<'a, [u8]>),
    /// A Ping; answer with a Pong carrying the same payload.
    Ping(Cow<'a, [u8]>),
    /// A Pong (unsolicited ones included).
    Pong(Cow<'a, [u8]>),
    /// A Close, with its code and reason unless the payload was empty. The
    /// decoder ignores everything after it.
    Close(Option<CloseFrame<'a>>),
}

/// The result of one [`FrameDecoder::decode`] call.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Bytes of the input used: all of it when `event` is `None`.
    pub consumed: usize,
    /// The event completed by those bytes, if any.
    pub event: Option<Event<'a>>,
}

/// The per-connection frame decoder (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameDecoder {
    state: State,
    /// The data message in progress: from its first frame's header to the
    /// end of its last frame.
    message: Option<Message>,
    /// UTF-8 state of the text message in progress.
    utf8: Utf8,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder waiting for the first frame.
    pub fn new() -> Self {
        FrameDecoder {
            state: START,
            message: None,
            utf8: Utf8::default(),
        }
    }

    /// True between frames with no message in progress: the caller's buffer
    /// is `None` and the connection holds nothing for the decoder.
    pub fn is_idle(&self) -> bool {
        self.state == START && self.message.is_none()
    }

    /// True once a Close was received (everything after it is ignored).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Decodes `input` (unmasking payloads in place) up to the end of the
    /// first frame that completes an event, or all of it. `buf` is the
    /// caller's buffer for incomplete messages (see the module
    /// documentation); it must be `None` for a new connection, and the
    /// caller must not touch it between calls. `max_message` limits a
    /// message's size (the sum of its fragments).
    pub fn decode<'a>(
        &mut self,
        input: &'a mut [u8],
        buf: &mut Option<Vec<u8>>,
        max_message: usize,
    ) -> Result<Decoded<'a>, FrameError> {
        let r = self.run(input, buf, max_message);
        if let Err(e) = r {
            self.state = State::Failed(e);
            *buf = None;
        }
        r
    }

    fn run<'a>(
        &mut self,
        mut input: &'a mut [u8],
        buf: &mut Option<Vec<u8>>,
        max_message: usize,
    ) -> Result<Decoded<'a>, FrameError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Failed(e) => return Err(e),
                State::Closed => {
                    return Ok(Decoded {
                        consumed: input.len(),
                        event: None,
                    })
                }
                State::Header {
                    buf: mut hb,
                    mut len,
                } => {
                    // Take header bytes until the header is complete.
                    loop {
                        let have = usize::from(len);
                        let need = if have < 2 { 2 } else { header_len(hb[1]) };
                        if have == need {
                            break;
                        }
                        if pos == input.len() {
                            self.state = State::Header { buf: hb, len };
                            return Ok(Decoded {
                                consumed: pos,
                                event: None,
                            });
                        }
                        let n = (need - have).min(input.len() - pos);
                        hb[have..have + n].copy_from_slice(&input[pos..pos + n]);
                        pos += n;
                        // `n <= MAX_HEADER`.
                        len += n as u8;
                        if have < 2 && usize::from(len) >= 2 {
                            self.check_start(hb[0], hb[1])?;
                        }
                    }
                    let so_far = buf.as_ref().map_or(0, Vec::len);
                    self.state = self.payload_state(&hb, so_far, max_message)?;
                }
                State::Payload {
                    remaining,
                    mut mask,
                    kind,
                    fin,
                    len,
                } => {
                    let left = input.len() - pos;
                    // `avail <= left`, a usize.
                    let avail = remaining.min(left as u64) as usize;
                    let untouched = if kind.is_control() {
                        remaining == u64::from(len)
                    } else {
                        fin && kind != Kind::Continuation && buf.as_ref().is_none_or(Vec::is_empty)
                    };
                    if untouched && avail as u64 == remaining {
                        // The whole frame is here: deliver it from the input.
                        let all = std::mem::take(&mut input);
                        let payload = &mut all[pos..pos + avail];
                        unmask(payload, mask);
                        self.state = START;
                        let event = self.complete(kind, Cow::Borrowed(payload), buf)?;
                        return Ok(Decoded {
                            consumed: pos + avail,
                            event,
                        });
                    }
                    if avail == 0 && remaining > 0 {
                        // Only the header so far: nothing to buffer yet.
                        return Ok(Decoded {
                            consumed: pos,
                            event: None,
                        });
                    }
                    let text = !kind.is_control() && self.message == Some(Message::Text);
                    let b = buf.get_or_insert_with(|| {
                        Vec::with_capacity(
                            usize::try_from(remaining)
                                .map_or(RESERVE_STEP, |r| r.min(RESERVE_STEP)),
                        )
                    });
                    let start = b.len();
                    b.extend_from_slice(&input[pos..pos + avail]);
                    unmask(&mut b[start..], mask);
                    if text && self.utf8.feed(&b[start..]).is_err() {
                        return Err(FrameError::InvalidUtf8);
                    }
                    mask.rotate_left(avail % 4);
                    pos += avail;
                    let remaining = remaining - avail as u64;
                    if remaining > 0 {
                        self.state = State::Payload {
                            remaining,
                            mask,
                            kind,
                            fin,
                            len,
                        };
                        return Ok(Decoded {
                            consumed: pos,
                            event: None,
                        });
                    }
                    self.state = START;
                    if kind.is_control() {
                        let payload = if self.message.is_none() {
                            buf.take().unwrap_or_default()
                        } else {
                            b.split_off(b.len() - usize::from(len))
                        };
                        let event = self.complete(kind, Cow::Owned(payload), buf)?;
                        return Ok(Decoded {
                            consumed: pos,
                            event,
                        });
                    }
                    if fin {
                        let payload = buf.take().unwrap_or_default();
                        let event = self.complete(kind, Cow::Owned(payload), buf)?;
                        return Ok(Decoded {
                            consumed: pos,
                            event,
                        });
                    }
                    // A fragment of a message: its bytes wait in `buf`.
                }
            }
        }
    }

    /// Checks what the first two header bytes decide, in a fixed order.
    fn check_start(&self, b0: u8, b1: u8) -> Result<(), FrameError> {
        if b0 & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let kind = Kind::from_opcode(b0 & 0x0F)?;
        let fin = b0 & 0x80 != 0;
        if kind.is_control() {
            if !fin {
                return Err(FrameError::FragmentedControl);
            }
            if usize::from(b1 & 0x7F) > MAX_CONTROL {
                return Err(FrameError::ControlTooLong);
            }
        }
        if b1 & 0x80 == 0 {
            return Err(FrameError::Unmasked);
        }
        match (kind, self.message) {
            (Kind::Continuation, None) => Err(FrameError::UnexpectedContinuation),
            (Kind::Text | Kind::Binary, Some(_)) => Err(FrameError::ExpectedContinuation),
            _ => Ok(()),
        }
    }

    /// The complete header `h` (already checked by [`Self::check_start`]):
    /// checks the length and the limit, starts the message, and returns the
    /// state for the payload.
    fn payload_state(
        &mut self,
        h: &[u8],
        so_far: usize,
        max_message: usize,
    ) -> Result<State, FrameError> {
        let kind = Kind::from_opcode(h[0] & 0x0F)?;
        let fin = h[0] & 0x80 != 0;
        let (payload_len, mask_at) = match h[1] & 0x7F {
            126 => {
                let n = u64::from(u16::from_be_bytes([h[2], h[3]]));
                if n < 126 {
                    return Err(FrameError::NonMinimalLength);
                }
                (n, 4)
            }
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                let n = u64::from_be_bytes(b);
                if n >> 63 != 0 {
                    return Err(FrameError::LengthOverflow);
                }
                if n <= 0xFFFF {
                    return Err(FrameError::NonMinimalLength);
                }
                (n, 10)
            }
            n => (u64::from(n), 2),
        };
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&h[mask_at..mask_at + 4]);
        let mut len = 0;
        if kind.is_control() {
            // At most 125, checked in `check_start`.
            len = payload_len as u8;
        } else {
            let before = if kind == Kind::Continuation {
                so_far
            } else {
                0
            };
            let total = (before as u64).saturating_add(payload_len);
            if total > max_message as u64 {
                return Err(FrameError::TooLarge);
            }
            match kind {
                Kind::Text => {
                    self.message = Some(Message::Text);
                    self.utf8 = Utf8::default();
                }
                Kind::Binary => self.message = Some(Message::Binary),
                _ => {}
            }
        }
        Ok(State::Payload {
            remaining: payload_len,
            mask,
            kind,
            fin,
            len,
        })
    }

    /// A frame's payload is complete (unmasked): the event it makes.
    fn complete<'a>(
        &mut self,
        kind: Kind,
        payload: Cow<'a, [u8]>,
        buf: &mut Option<Vec<u8>>,
    ) -> Result<Option<Event<'a>>, FrameError> {
        Ok(Some(match kind {
            Kind::Ping => Event::Ping(payload),
            Kind::Pong => Event::Pong(payload),
            Kind::Close => {
                let frame = match payload {
                    Cow::Borrowed(p) => close::parse_payload(p)?.map(|(code, reason)| CloseFrame {
                        code,
                        reason: Cow::Borrowed(reason),
                    }),
                    Cow::Owned(p) => close::parse_payload(&p)?.map(|(code, reason)| CloseFrame {
                        code,
                        reason: Cow::Owned(reason.to_owned()),
                    }),
                };
                self.state = State::Closed;
                self.message = None;
                *buf = None;
                Event::Close(frame)
            }
            Kind::Text | Kind::Binary | Kind::Continuation => {
                let message = self.message.take();
                if message == Some(Message::Text) {
                    let valid = match &payload {
                        // A whole frame: nothing of it was checked yet.
                        Cow::Borrowed(p) => std::str::from_utf8(p).is_ok(),
                        // Checked piece by piece; it must not end inside a code point.
                        Cow::Owned(_) => self.utf8.is_complete(),
                    };
                    if !valid {
                        return Err(FrameError::InvalidUtf8);
                    }
                    Event::Text(payload)
                } else {
                    Event::Binary(payload)
                }
            }
        }))
    }
}

/// Length of the header whose second byte is `b1` (masked or not).
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// XORs `data` with the mask key, `mask[0]` applying to `data[0]`.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let m = [
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ];
    let word = u64::from_ne_bytes(m);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ word).to_ne_bytes());
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(m) {
        *b ^= m;
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
