//! A small WebSocket client for the tests, written by hand so that it can
//! also write what no library would: unmasked frames, reserved bits and
//! opcodes, lengths in any encoding, headers without their payload, frames
//! split into pieces. It checks what the server writes strictly (RFC 6455:
//! server frames unmasked, RSV clear, lengths minimally encoded, events in
//! one unfragmented text frame each).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use sha1::{Digest, Sha1};

use super::common::WAIT;

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CONT: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The GUID of RFC 6455 §1.3.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What `Sec-WebSocket-Accept` must be for `key` (computed here, not by the server's code).
pub fn accept_for(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A fresh `Sec-WebSocket-Key`: base64 of 16 random bytes.
pub fn new_key() -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&switchboard::ids::random_u64().to_le_bytes());
    b[8..].copy_from_slice(&switchboard::ids::random_u64().to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// An opening handshake: request target and header fields, editable before it is sent.
pub struct Handshake {
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub key: String,
}

impl Handshake {
    /// `GET target` with the headers of a valid version-13 handshake.
    pub fn new(target: &str) -> Handshake {
        let key = new_key();
        Handshake {
            target: target.to_string(),
            headers: vec![
                ("Host".into(), "127.0.0.1".into()),
                ("Upgrade".into(), "websocket".into()),
                ("Connection".into(), "Upgrade".into()),
                ("Sec-WebSocket-Key".into(), key.clone()),
                ("Sec-WebSocket-Version".into(), "13".into()),
            ],
            key,
        }
    }

    /// Sets header `k` (replacing any of that name).
    pub fn set(mut self, k: &str, v: &str) -> Handshake {
        self = self.remove(k);
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    /// Removes header `k`.
    pub fn remove(mut self, k: &str) -> Handshake {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Handshake {
        self.set("Authorization", &format!("Bearer {token}"))
    }

    fn text(&self) -> String {
        let mut req = format!("GET {} HTTP/1.1\r\n", self.target);
        for (k, v) in &self.headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req
    }

    /// Sends the handshake and reads the answer's head. `Ok` with the
    /// connection if it is `101` with the right accept key; `Err` with the
    /// refusal (status, head, body) otherwise.
    pub fn open(self, addr: SocketAddr) -> Result<Ws, Refusal> {
        let stream = TcpStream::connect(addr).expect("connect");
        self.open_on(stream)
    }

    /// [`Handshake::open`] on a connected socket.
    pub fn open_on(self, stream: TcpStream) -> Result<Ws, Refusal> {
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let mut ws = Ws {
            stream,
            buf: Vec::new(),
            head: String::new(),
            pings: Vec::new(),
        };
        ws.stream
            .write_all(self.text().as_bytes())
            .expect("write handshake");
        let head = ws.read_head().expect("no answer to the handshake");
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        ws.head = head;
        if status != 101 {
            let len = header(&ws.head, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let body = ws.take(len, WAIT).unwrap_or_default();
            return Err(Refusal {
                status,
                head: ws.head.clone(),
                body: String::from_utf8_lossy(&body).into_owned(),
                ws: Box::new(ws),
            });
        }
        let accept = header(&ws.head, "sec-websocket-accept");
        assert_eq!(
            accept.as_deref(),
            Some(accept_for(&self.key).as_str()),
            "Sec-WebSocket-Accept: {}",
            ws.head
        );
        Ok(ws)
    }
}

/// A refused handshake.
pub struct Refusal {
    pub status: u16,
    pub head: String,
    pub body: String,
    /// The connection, to check that the server closes it.
    pub ws: Box<Ws>,
}

impl std::fmt::Debug for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.head, self.body)
    }
}

impl Refusal {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("refusal body is not JSON ({e}): {self:?}"))
    }
}

/// The value of header `name` in a response head.
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// One frame as the server wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A Close frame's code (`None` if it had no payload) and reason.
    pub fn close(&self) -> (Option<u16>, String) {
        assert_eq!(self.opcode, CLOSE, "not a Close frame: {self:?}");
        match self.payload.as_slice() {
            [] => (None, String::new()),
            [hi, lo, reason @ ..] => (
                Some(u16::from_be_bytes([*hi, *lo])),
                String::from_utf8(reason.to_vec()).expect("Close reason is not UTF-8"),
            ),
            _ => panic!("1-byte Close payload from the server"),
        }
    }
}

/// The bytes of a frame header: first byte (FIN, RSV, opcode), a mask key
/// (if `mask`), and `len` in the shortest encoding.
pub fn header_bytes(first: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let m = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first];
    if len <= 125 {
        out.push(m | len as u8);
    } else if len <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(k) = mask {
        out.extend_from_slice(&k);
    }
    out
}

/// A whole client frame: `fin`, `rsv` (the three bits, 0-7), `opcode`,
/// `payload`, masked unless `masked` is false.
pub fn frame_bytes(fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let first = (u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0xf);
    let key = (switchboard::ids::random_u64() as u32).to_be_bytes();
    let mask = masked.then_some(key);
    let mut out = header_bytes(first, payload.len() as u64, mask);
    out.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, b)| if masked { b ^ key[i % 4] } else { *b }),
    );
    out
}

/// A connection after a `101`.
pub struct Ws {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// The handshake answer's head.
    pub head: String,
    /// Payloads of the Pings the server sent (heartbeats), in order.
    pub pings: Vec<Vec<u8>>,
}

impl Ws {
    /// Connects to `target` (path and query) with `token` as a bearer token; panics unless 101.
    pub fn connect(addr: SocketAddr, target: &str, token: &str) -> Ws {
        Handshake::new(target)
            .bearer(token)
            .open(addr)
            .unwrap_or_else(|r| panic!("handshake to {target} refused: {r:?}"))
    }

    /// [`Ws::connect`] to `/v1/connect`, then reads and returns the `ready` event.
    pub fn open(addr: SocketAddr, token: &str) -> (Ws, serde_json::Value) {
        let mut ws = Ws::connect(addr, "/v1/connect", token);
        let ready = ws.event();
        assert_eq!(ready["event"], "ready", "first event: {ready}");
        (ws, ready)
    }

    /// Reads bytes until at least `n` are buffered; false on EOF, error or `deadline`.
    fn fill(&mut self, n: usize, deadline: Instant) -> bool {
        while self.buf.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
        true
    }

    /// Takes `n` buffered-or-read bytes.
    fn take(&mut self, n: usize, timeout: Duration) -> Option<Vec<u8>> {
        if !self.fill(n, Instant::now() + timeout) {
            return None;
        }
        Some(self.buf.drain(..n).collect())
    }

    fn read_head(&mut self) -> Option<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..p + 2]).into_owned();
                self.buf.drain(..p + 4);
                return Some(head);
            }
            let have = self.buf.len();
            if !self.fill(have + 1, deadline) {
                return None;
            }
        }
    }

    /// Writes raw bytes (errors ignored: the server may have closed already).
    pub fn raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Writes one masked frame.
    pub fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.raw(&frame_bytes(fin, 0, opcode, payload, true));
    }

    /// Writes one text message (one frame).
    pub fn text(&mut self, text: &str) {
        self.frame(true, TEXT, text.as_bytes());
    }

    /// Writes one command.
    pub fn command(&mut self, v: &serde_json::Value) {
        self.text(&v.to_string());
    }

    /// A `send` command of `body` to `to` with `ref`.
    pub fn send(&mut self, to: &str, body: &str, r#ref: &str) {
        self.command(&serde_json::json!({"type":"send","to":to,"body":body,"ref":r#ref}));
    }

    /// The next frame within `timeout`, checked against RFC 6455's rules for
    /// server frames; `None` on EOF or timeout.
    pub fn frame_within(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        if !self.fill(2, deadline) {
            return None;
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        assert_eq!(b1 & 0x80, 0, "server frame is masked: {b0:#x} {b1:#x}");
        assert_eq!(b0 & 0x70, 0, "server frame has RSV bits: {b0:#x}");
        let (len, hlen) = match b1 & 0x7f {
            126 => {
                if !self.fill(4, deadline) {
                    return None;
                }
                let l = u16::from_be_bytes([self.buf[2], self.buf[3]]) as u64;
                assert!(l > 125, "16-bit length {l} not minimal");
                (l, 4)
            }
            127 => {
                if !self.fill(10, deadline) {
                    return None;
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                let l = u64::from_be_bytes(b);
                assert!(l > 0xffff && l >> 63 == 0, "64-bit length {l} not minimal");
                (l, 10)
            }
            l => (l as u64, 2),
        };
        let total = hlen + len as usize;
        if !self.fill(total, deadline) {
            return None;
        }
        let f = Frame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0xf,
            payload: self.buf[hlen..total].to_vec(),
        };
        self.buf.drain(..total);
        if f.opcode >= 8 {
            assert!(f.fin && f.payload.len() <= 125, "bad control frame {f:?}");
        }
        Some(f)
    }

    /// The next frame that is not a Ping from the server (those are
    /// recorded in `pings`); panics if none comes within `WAIT`.
    pub fn next_frame(&mut self) -> Frame {
        loop {
            let f = self
                .frame_within(WAIT)
                .expect("connection ended or no frame in time");
            if f.opcode == PING {
                self.pings.push(f.payload);
                continue;
            }
            return f;
        }
    }

    /// The next event (a text frame holding one JSON object); panics on
    /// anything else (a Close shows its code).
    pub fn event(&mut self) -> serde_json::Value {
        let f = self.next_frame();
        assert!(
            f.opcode == TEXT && f.fin,
            "expected an event in one text frame, got {:?} {:?}",
            f.opcode,
            if f.opcode == CLOSE {
                format!("{:?}", f.close())
            } else {
                String::from_utf8_lossy(&f.payload).into_owned()
            }
        );
        let v: serde_json::Value = serde_json::from_slice(&f.payload).unwrap_or_else(|e| {
            panic!(
                "event is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&f.payload)
            )
        });
        assert!(v.is_object(), "event is not an object: {v}");
        v
    }

    /// Reads events until one named `name`; returns it.
    pub fn expect(&mut self, name: &str) -> serde_json::Value {
        loop {
            let v = self.event();
            if v["event"] == name {
                return v;
            }
        }
    }

    /// Reads the next event and asserts it is a message from `from` with `body`.
    pub fn expect_message(&mut self, from: &str, body: &str) -> serde_json::Value {
        let v = self.event();
        assert_eq!(v["event"], "message", "expected message {body:?}: {v}");
        assert_eq!(v["from"], from, "{v}");
        assert_eq!(v["body"].as_str(), Some(body), "body of {}", v["id"]);
        assert!(v["id"].is_string(), "message without id: {v}");
        v
    }

    /// Reads frames until a Close (skipping events and pings); its code and reason.
    pub fn expect_close(&mut self) -> (Option<u16>, String) {
        loop {
            let f = self.next_frame();
            if f.opcode == CLOSE {
                return f.close();
            }
            assert!(
                f.opcode == TEXT || f.opcode == PONG,
                "unexpected frame before Close: {f:?}"
            );
        }
    }

    /// Reads a Close with `code`, answers it, and checks that the server then closes TCP.
    pub fn expect_close_code(&mut self, code: u16, what: &str) -> String {
        let (got, reason) = self.expect_close();
        assert_eq!(got, Some(code), "{what}: Close code (reason {reason:?})");
        self.raw(&frame_bytes(true, 0, CLOSE, &code.to_be_bytes(), true));
        assert!(self.eof_within(WAIT), "{what}: TCP not closed after Close");
        reason
    }

    /// True if the server closed the connection within `timeout` (frames before are discarded).
    pub fn eof_within(&mut self, timeout: Duration) -> bool {
        self.buf.clear();
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let end = Instant::now() + timeout;
        let mut chunk = [0u8; 16 * 1024];
        while Instant::now() < end {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }
}
