//! The server side of the WebSocket opening handshake (RFC 6455 §4.2).
//!
//! The head parser ([`crate::proto::head`]) collects the handshake's header
//! fields into a [`HandshakeHeaders`] (boxed, and only for a request with
//! `Upgrade: websocket`, so other requests pay one `None`); [`accept`] checks
//! them and [`Accept::write_response`] writes the `101 Switching Protocols`
//! head. Origin and token checks are the server's (the Origin value is
//! [`RequestHead::origin`]).
//!
//! Extensions are declined: `Sec-WebSocket-Extensions` is read only to note
//! whether `permessage-deflate` was offered, and the answer never names an
//! extension, so every frame arrives uncompressed (RFC 6455 §9.1: the server
//! selects at most what the client offered; selecting nothing is always
//! valid). Why: permessage-deflate keeps a compressor and a decompressor per
//! connection (zlib: about 256 KiB and 7 KiB with the default window) unless
//! both directions negotiate `no_context_takeover`, and even then it needs
//! the inflate state while any compressed message is in flight; an idle
//! connection must hold no buffer (issue 26's rule: idle memory at most the
//! SSE figure + 64 B), and the relay's messages are small JSON events that
//! compress little. Whether a no-context-takeover variant pays for itself is
//! to be measured before it is offered.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::proto::head::{Method, RequestHead};

/// The GUID RFC 6455 §1.3 appends to the client's key.
const ACCEPT_GUID: &[u8; 36] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The one protocol version served (RFC 6455 §4.1).
pub const VERSION: &str = "13";
/// The subprotocol the gateway speaks; echoed when the client offers it.
pub const SUBPROTOCOL: &str = "switchboard.v1";
/// Length of a valid `Sec-WebSocket-Key`: base64 of 16 bytes.
const KEY_LEN: usize = 24;
/// Length of the `Sec-WebSocket-Accept` value: base64 of a 20-byte SHA-1.
const ACCEPT_LEN: usize = 28;

/// What `Sec-WebSocket-Version` said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum VersionField {
    #[default]
    Missing,
    /// Exactly `13` (every occurrence, if repeated).
    Thirteen,
    /// Anything else: another number, a list, garbage.
    Other,
}

/// What `Sec-WebSocket-Key` said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum KeyField {
    #[default]
    Missing,
    /// Base64 of exactly 16 bytes, as sent (whitespace around it trimmed).
    Valid([u8; KEY_LEN]),
    /// Present but not base64 of 16 bytes, or repeated.
    Invalid,
}

/// The handshake's header fields, as collected by the head parser (which
/// hands every `Sec-WebSocket-*` field and the `Connection` options to
/// [`HandshakeHeaders::field`] and [`HandshakeHeaders::connection_option`]).
/// At most 32 bytes (asserted in a test), boxed in [`RequestHead`] only for
/// upgrade requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeHeaders {
    key: KeyField,
    version: VersionField,
    /// `Connection` has the `upgrade` option.
    connection_upgrade: bool,
    /// `Sec-WebSocket-Protocol` offers [`SUBPROTOCOL`].
    subprotocol: bool,
    /// `Sec-WebSocket-Extensions` offers `permessage-deflate` (declined).
    deflate_offered: bool,
}

impl HandshakeHeaders {
    /// Notes one option of a `Connection` header (already split at commas and trimmed).
    pub(crate) fn connection_option(&mut self, option: &[u8]) {
        self.connection_upgrade |= option.eq_ignore_ascii_case(b"upgrade");
    }

    /// Notes a `Sec-WebSocket-<suffix>` field; `suffix` is the name after
    /// `Sec-WebSocket-` (any case). Fields the server does not read are ignored.
    pub(crate) fn field(&mut self, suffix: &[u8], value: &[u8]) {
        let value = trim_ows(value);
        if suffix.eq_ignore_ascii_case(b"key") {
            self.key = match (self.key, <[u8; KEY_LEN]>::try_from(value)) {
                (KeyField::Missing, Ok(key)) if key_is_valid(&key) => KeyField::Valid(key),
                _ => KeyField::Invalid,
            };
        } else if suffix.eq_ignore_ascii_case(b"version") {
            self.version = match self.version {
                VersionField::Missing | VersionField::Thirteen if value == VERSION.as_bytes() => {
                    VersionField::Thirteen
                }
                _ => VersionField::Other,
            };
        } else if suffix.eq_ignore_ascii_case(b"protocol") {
            self.subprotocol |= list(value).any(|p| p == SUBPROTOCOL.as_bytes());
        } else if suffix.eq_ignore_ascii_case(b"extensions") {
            self.deflate_offered |= list(value).any(|e| {
                let name = e.split(|&b| b == b';').next().unwrap_or_default();
                trim_ows(name).eq_ignore_ascii_case(b"permessage-deflate")
            });
        }
    }

    /// The client offered `permessage-deflate` (it is declined; for logs and metrics).
    pub fn deflate_offered(&self) -> bool {
        self.deflate_offered
    }
}

/// Why a WebSocket handshake was refused. Each maps to an HTTP status, an
/// error code for the JSON body, and possibly header fields to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not `GET` (405).
    Method,
    /// Not HTTP/1.1 (400): RFC 6455 §4.1 requires 1.1 or higher.
    HttpVersion,
    /// No `Upgrade: websocket` (426, naming `websocket` in `Upgrade`).
    NotUpgrade,
    /// `Connection` lacks the `upgrade` option (400).
    ConnectionUpgrade,
    /// `Sec-WebSocket-Version` missing or not 13 (426 with
    /// `Sec-WebSocket-Version: 13`, RFC 6455 §4.2.2).
    Version,
    /// `Sec-WebSocket-Key` missing, repeated, or not base64 of 16 bytes (400).
    Key,
}

impl HandshakeError {
    /// HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::Method => 405,
            HandshakeError::NotUpgrade | HandshakeError::Version => 426,
            HandshakeError::HttpVersion
            | HandshakeError::ConnectionUpgrade
            | HandshakeError::Key => 400,
        }
    }

    /// Machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            HandshakeError::Method => "method_not_allowed",
            HandshakeError::NotUpgrade => "upgrade_required",
            HandshakeError::Version => "unsupported_websocket_version",
            HandshakeError::HttpVersion | HandshakeError::ConnectionUpgrade => "bad_handshake",
            HandshakeError::Key => "bad_websocket_key",
        }
    }

    /// Human-readable text for the JSON error body.
    pub fn message(&self) -> &'static str {
        match self {
            HandshakeError::Method => "a WebSocket handshake is a GET request",
            HandshakeError::HttpVersion => "a WebSocket handshake needs HTTP/1.1",
            HandshakeError::NotUpgrade => "this endpoint needs Upgrade: websocket",
            HandshakeError::ConnectionUpgrade => {
                "a WebSocket handshake needs the upgrade option in Connection"
            }
            HandshakeError::Version => "only WebSocket version 13 is supported",
            HandshakeError::Key => "Sec-WebSocket-Key must be base64 of 16 bytes, sent once",
        }
    }

    /// Header field lines (each ending in CRLF) to add to the error answer
    /// after its status line: a 426 names what to upgrade to (RFC 9110
    /// §15.5.22, with the `upgrade` connection option §7.8), and a version
    /// refusal names the version served (RFC 6455 §4.2.2). Empty otherwise.
    pub fn extra_headers(&self) -> &'static str {
        match self {
            HandshakeError::NotUpgrade => "Upgrade: websocket\r\nConnection: upgrade\r\n",
            HandshakeError::Version => {
                "Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n"
            }
            _ => "",
        }
    }
}

/// A handshake the server may accept (after its own Origin and token checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    /// `Sec-WebSocket-Accept`: base64 of the SHA-1 of the key and the GUID.
    accept: [u8; ACCEPT_LEN],
    /// [`SUBPROTOCOL`] was offered and is selected.
    subprotocol: bool,
}

impl Accept {
    /// The `Sec-WebSocket-Accept` value.
    pub fn accept_key(&self) -> &str {
        // Base64 output is ASCII.
        std::str::from_utf8(&self.accept).unwrap_or_default()
    }

    /// True if [`SUBPROTOCOL`] was offered (and is echoed in the answer).
    pub fn subprotocol(&self) -> bool {
        self.subprotocol
    }

    /// Appends the `101 Switching Protocols` head (with the blank line).
    /// Frames may follow it in the same write.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
        );
        out.extend_from_slice(&self.accept);
        out.extend_from_slice(b"\r\n");
        if self.subprotocol {
            out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
            out.extend_from_slice(SUBPROTOCOL.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Checks an opening handshake (RFC 6455 §4.2.1) in the order the RFC lists
/// its requirements: method, HTTP version, `Upgrade`, `Connection`,
/// `Sec-WebSocket-Version`, then `Sec-WebSocket-Key`. A body (Content-Length
/// or chunked) is not refused here: the request reader has consumed it.
pub fn accept(head: &RequestHead) -> Result<Accept, HandshakeError> {
    if head.method != Method::Get {
        return Err(HandshakeError::Method);
    }
    if head.version_minor != 1 {
        return Err(HandshakeError::HttpVersion);
    }
    let Some(h) = head.handshake() else {
        return Err(HandshakeError::NotUpgrade);
    };
    if !h.connection_upgrade {
        return Err(HandshakeError::ConnectionUpgrade);
    }
    if h.version != VersionField::Thirteen {
        return Err(HandshakeError::Version);
    }
    let KeyField::Valid(key) = h.key else {
        return Err(HandshakeError::Key);
    };
    Ok(Accept {
        accept: accept_key(&key),
        subprotocol: h.subprotocol,
    })
}

/// `base64(SHA-1(key ++ GUID))` (RFC 6455 §4.2.2 item 5.4).
pub fn accept_key(key: &[u8]) -> [u8; ACCEPT_LEN] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    let digest = sha.finalize();
    let mut out = [0u8; ACCEPT_LEN];
    // 20 bytes encode to exactly 28 characters, so this cannot fail.
    let _ = STANDARD.encode_slice(digest.as_slice(), &mut out);
    out
}

/// Base64 (standard alphabet, padded) of exactly 16 bytes.
fn key_is_valid(key: &[u8; KEY_LEN]) -> bool {
    let mut raw = [0u8; 18];
    matches!(STANDARD.decode_slice(key, &mut raw), Ok(16))
}

/// Elements of a comma-separated header list, trimmed, empty ones skipped.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// Strips optional whitespace (SP / HTAB) from both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::head::{parse_head, Limits};
    use crate::proto::Parse;

    fn head(raw: &str) -> RequestHead {
        match parse_head(raw.as_bytes(), &Limits::default()) {
            Ok(Parse::Complete(h)) => h,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    fn check(raw: &str) -> Result<Accept, HandshakeError> {
        accept(&head(raw))
    }

    fn response(a: &Accept) -> String {
        let mut out = Vec::new();
        a.write_response(&mut out);
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn headers_are_small() {
        assert!(std::mem::size_of::<HandshakeHeaders>() <= 32);
    }

    /// RFC 6455 §1.3 and §4.2.2's example (the value as printed in the RFC;
    /// tungstenite computes the same).
    /// Opening handshakes as real clients send them (captured on 2026-12-08
    /// from a plain socket: Python `websockets` 17.4 and headless Chromium
    /// 156), each accepted with the key Python's `hashlib` computes, the
    /// subprotocol echoed and permessage-deflate noticed (and declined).
    #[test]
    fn handshakes_of_real_clients() {
        for (raw, key) in [
            (
                &include_bytes!("fixtures/python-websockets-17.4.http")[..],
                "r7PCdhC2nX041V39VixCp/1d2sk=",
            ),
            (
                &include_bytes!("fixtures/chromium-156-headless.http")[..],
                "Isvj7ZukaISM34FTsx6j2pw1GYU=",
            ),
        ] {
            let h = match parse_head(raw, &Limits::default()) {
                Ok(Parse::Complete(h)) => h,
                other => panic!("{other:?}"),
            };
            assert!(h.websocket);
            assert!(h.handshake().is_some_and(|hs| hs.deflate_offered()));
            let a = accept(&h).expect("accepted");
            assert_eq!(a.accept_key(), key);
            assert!(a.subprotocol());
            let resp = response(&a);
            assert!(
                resp.contains("Sec-WebSocket-Protocol: switchboard.v1\r\n"),
                "{resp}"
            );
            assert!(!resp.contains("Extensions"), "{resp}");
            assert_eq!(crate::proto::route::token_of(&h).as_deref(), Ok("T"));
        }
    }

    #[test]
    fn rfc_6455_example_key() {
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accept_keys_agree_with_tungstenite() {
        for _ in 0..50 {
            let key = tungstenite::handshake::client::generate_key();
            let theirs = tungstenite::handshake::derive_accept_key(key.as_bytes());
            assert_eq!(&accept_key(key.as_bytes())[..], theirs.as_bytes());
        }
    }

    /// Headers as headless Chromium sends them (`new WebSocket(url, ["switchboard.v1"])`).
    const CHROMIUM: &str = "GET /v1/connect?access_token=t HTTP/1.1\r\n\
        Host: 127.0.0.1:8080\r\n\
        Connection: Upgrade\r\n\
        Pragma: no-cache\r\n\
        Cache-Control: no-cache\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36\r\n\
        Upgrade: websocket\r\n\
        Origin: http://127.0.0.1:8000\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Accept-Encoding: gzip, deflate, br, zstd\r\n\
        Accept-Language: en-US,en;q=0.9\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
        Sec-WebSocket-Protocol: switchboard.v1\r\n\r\n";

    /// Headers as Python `websockets` (14.x) sends them.
    const PYTHON: &str = "GET /v1/connect?last_event_id=5-1 HTTP/1.1\r\n\
        Host: 127.0.0.1:8080\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
        Authorization: Bearer abc\r\n\
        User-Agent: Python/3.12 websockets/14.1\r\n\r\n";

    /// curl `--http1.1` with the headers set by hand, as in many how-tos.
    const CURL: &str = "GET /v1/connect HTTP/1.1\r\n\
        Host: localhost:8080\r\n\
        User-Agent: curl/8.5.0\r\n\
        Accept: */*\r\n\
        Connection: Upgrade\r\n\
        Upgrade: websocket\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: SGVsbG8sIHdvcmxkIQ==\r\n\r\n";

    #[test]
    fn real_clients() {
        let a = check(CHROMIUM).expect("chromium");
        assert!(a.subprotocol());
        assert_eq!(a.accept_key(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(
            response(&a),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: switchboard.v1\r\n\r\n"
        );
        let h = head(CHROMIUM);
        assert_eq!(h.origin(), Some("http://127.0.0.1:8000"));
        assert!(h.handshake().is_some_and(|h| h.deflate_offered()));

        let a = check(PYTHON).expect("python");
        assert!(!a.subprotocol());
        assert_eq!(a.accept_key(), "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
        let r = response(&a);
        // permessage-deflate offered, not accepted; no subprotocol.
        assert!(
            !r.contains("Extensions") && !r.contains("Sec-WebSocket-Protocol"),
            "{r}"
        );
        assert_eq!(head(PYTHON).authorization(), Some("Bearer abc"));

        // "Hello, world!" is 13 bytes, not 16.
        assert_eq!(check(CURL), Err(HandshakeError::Key));
        let fixed = CURL.replace("SGVsbG8sIHdvcmxkIQ==", "AAAAAAAAAAAAAAAAAAAAAA==");
        assert!(check(&fixed).is_ok());
    }

    #[test]
    fn refusals() {
        let base = |extra: &str| {
            format!("GET /v1/connect HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n{extra}\r\n")
        };
        let good = "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        assert!(check(&base(good)).is_ok());
        // Connection as a list, any case; whitespace around values.
        assert!(check(&base(
            "Connection: keep-alive, UPGRADE\r\nSec-WebSocket-Version:  13 \r\nsec-websocket-key:\tdGhlIHNhbXBsZSBub25jZQ== \r\n"
        ))
        .is_ok());
        let cases: &[(&str, HandshakeError)] = &[
            ("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", HandshakeError::ConnectionUpgrade),
            ("Connection: keep-alive\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", HandshakeError::ConnectionUpgrade),
            ("Connection: upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", HandshakeError::Version),
            ("Connection: upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", HandshakeError::Version),
            ("Connection: upgrade\r\nSec-WebSocket-Version: 13, 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", HandshakeError::Version),
            ("Connection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 12\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", HandshakeError::Version),
            ("Connection: upgrade\r\nSec-WebSocket-Version: 13\r\n", HandshakeError::Key),
            ("Connection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n", HandshakeError::Key),
            ("Connection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ===\r\n", HandshakeError::Key),
            ("Connection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n", HandshakeError::Key),
            ("Connection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25j!Q==\r\n", HandshakeError::Key),
            ("Connection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", HandshakeError::Key),
        ];
        for (extra, want) in cases {
            assert_eq!(check(&base(extra)), Err(*want), "{extra}");
        }
        // Version is judged before the key.
        assert_eq!(
            check(&base("Connection: upgrade\r\nSec-WebSocket-Version: 7\r\n")),
            Err(HandshakeError::Version)
        );
        assert_eq!(
            check(&format!("POST /v1/connect HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nContent-Length: 0\r\n{good}\r\n")),
            Err(HandshakeError::Method)
        );
        assert_eq!(
            check(&format!(
                "GET /v1/connect HTTP/1.0\r\nUpgrade: websocket\r\n{good}\r\n"
            )),
            Err(HandshakeError::HttpVersion)
        );
        assert_eq!(
            check(&format!(
                "GET /v1/connect HTTP/1.1\r\nHost: h\r\n{good}\r\n"
            )),
            Err(HandshakeError::NotUpgrade)
        );
        // Only upgrade requests carry the handshake fields.
        assert!(head(&format!("GET / HTTP/1.1\r\nHost: h\r\n{good}\r\n"))
            .handshake()
            .is_none());
    }

    #[test]
    fn subprotocols_and_extensions() {
        let with = |extra: &str| {
            check(&format!(
                "GET /v1/connect HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
            ))
            .expect("accepted")
        };
        assert!(with("Sec-WebSocket-Protocol: chat, switchboard.v1\r\n").subprotocol());
        assert!(
            with("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: switchboard.v1\r\n")
                .subprotocol()
        );
        // Subprotocol names are case-sensitive tokens (RFC 6455 §4.1).
        assert!(!with("Sec-WebSocket-Protocol: Switchboard.v1\r\n").subprotocol());
        assert!(!with("Sec-WebSocket-Protocol: switchboard.v2\r\n").subprotocol());
        let a = with("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-webkit-deflate-frame\r\n");
        assert!(!response(&a).contains("Extensions"));
    }

    #[test]
    fn error_mapping() {
        let all = [
            HandshakeError::Method,
            HandshakeError::HttpVersion,
            HandshakeError::NotUpgrade,
            HandshakeError::ConnectionUpgrade,
            HandshakeError::Version,
            HandshakeError::Key,
        ];
        let statuses: Vec<u16> = all.iter().map(|e| e.status()).collect();
        assert_eq!(statuses, [405, 400, 426, 400, 426, 400]);
        for e in all {
            assert!(!e.code().is_empty() && !e.message().is_empty());
            assert_ne!(crate::proto::response::reason(e.status()), "Unknown");
            if e.status() == 426 {
                assert!(e.extra_headers().contains("Upgrade: websocket\r\n"));
            }
        }
        assert!(HandshakeError::Version
            .extra_headers()
            .contains("Sec-WebSocket-Version: 13\r\n"));
    }
}
