//! RFC 6455 conformance, one test per case group of Autobahn|Testsuite
//! (which runs only on Python 2 and cannot run here): framing, pings and
//! pongs, reserved bits, opcodes, fragmentation, UTF-8 handling, limits,
//! close handling. Each refusal asserts the exact close code of the
//! decisions of 2026-12-08 (1002 protocol error, 1003 binary, 1007 invalid
//! UTF-8, 1009 too big) and that the TCP connection then closes.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// `--max-message` of the conformance node: the message limit is then
/// 2 x 64 KiB + 4096 bytes.
const MAX_MESSAGE: usize = 64 << 10;
const LIMIT: usize = 2 * MAX_MESSAGE + 4096;

fn node() -> Node {
    Node::start(&["--max-message", "64KiB", "--max-outbound", "4MiB"])
}

/// A connection of a client no other test connection uses.
fn fresh(node: &Node) -> Ws {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    ws(node, &format!("agent-c{n}"))
}

/// Writes `bytes` on a fresh connection and asserts it is closed with `code`.
fn closes_with(node: &Node, bytes: &[u8], code: u16, what: &str) {
    let mut ws = fresh(node);
    ws.raw(bytes);
    ws.expect_close_code(code, what);
}

/// A valid command that checks the connection still works: a send to
/// nobody, answered `recipient_offline` with its ref.
fn still_works(ws: &mut Ws, r#ref: &str) {
    ws.send("nobody-here", "ping?", r#ref);
    error(ws, "recipient_offline", Some(r#ref));
}

// ---------------------------------------------------------------------------
// Framing (Autobahn 1.x, 2.x lengths)
// ---------------------------------------------------------------------------

/// Text messages whose payloads take each length encoding (7-bit, 16-bit at
/// its edges, 64-bit) carry `send` commands; the messages arrive at another
/// WebSocket client in frames of those encodings too (checked by the test
/// client). An empty text message is not JSON: an `error`, and the
/// connection goes on.
#[test]
fn framing_payload_lengths() {
    let node = node();
    let mut a = ws(&node, "agent-fa");
    let mut b = ws(&node, "agent-fb");
    for len in [125, 126, 127, 65535, 65536] {
        let r = format!("len{len}");
        let text = send_of_len("agent-fb", &r, len);
        a.text(&text);
        accepted(&mut a, &r);
        let body = &text[text.find("\"body\":\"").unwrap() + 8..text.len() - 2];
        b.expect_message("agent-fa", body);
    }
    a.text("");
    error(&mut a, "malformed_json", None);
    // A 64-bit length with its most significant bit set.
    let mut bad = header_bytes(0x81, 1 << 63, Some([1, 2, 3, 4]));
    bad.truncate(2 + 8 + 4);
    closes_with(&node, &bad, 1002, "64-bit length with the MSB set");
    still_works(&mut a, "after");
}

/// A frame written in pieces (header byte by byte, then the payload in
/// parts) is one message.
#[test]
fn framing_frames_split_in_pieces() {
    let node = node();
    let mut a = fresh(&node);
    a.stream.set_nodelay(true).unwrap();
    let cmd = serde_json::json!({"type":"send","to":"nobody","body":"x".repeat(300),"ref":"p"});
    let bytes = frame_bytes(true, 0, TEXT, cmd.to_string().as_bytes(), true);
    for b in &bytes[..8] {
        a.raw(&[*b]);
    }
    for piece in bytes[8..].chunks(97) {
        a.raw(piece);
    }
    error(&mut a, "recipient_offline", Some("p"));
}

// ---------------------------------------------------------------------------
// Pings and pongs (Autobahn 2.x)
// ---------------------------------------------------------------------------

#[test]
fn pings_are_answered_with_their_payload() {
    let node = node();
    let mut a = fresh(&node);
    let big = vec![0xfe; 125];
    for payload in [&b""[..], b"abc", &[0u8, 0xff, 0x80][..], &big] {
        a.frame(true, PING, payload);
        let f = a.next_frame();
        assert_eq!(
            (f.opcode, f.payload.as_slice()),
            (PONG, payload),
            "Pong to a Ping of {} bytes",
            payload.len()
        );
    }
    // Unsolicited Pongs are ignored.
    a.frame(true, PONG, b"unasked");
    a.frame(true, PONG, b"");
    still_works(&mut a, "after pongs");
    // Several Pings in one write: each answered, in order.
    let burst: Vec<u8> = (0..10u8)
        .flat_map(|i| frame_bytes(true, 0, PING, &[i], true))
        .collect();
    a.raw(&burst);
    for i in 0..10u8 {
        let f = a.next_frame();
        assert_eq!((f.opcode, f.payload), (PONG, vec![i]));
    }
    // A Ping of 126 bytes (a control frame over 125): 1002.
    closes_with(
        &node,
        &frame_bytes(true, 0, PING, &[b'p'; 126], true),
        1002,
        "126-byte Ping",
    );
    closes_with(
        &node,
        &frame_bytes(true, 0, PONG, &[b'p'; 126], true),
        1002,
        "126-byte Pong",
    );
}

// ---------------------------------------------------------------------------
// Reserved bits (Autobahn 3.x) and opcodes (4.x), masking
// ---------------------------------------------------------------------------

#[test]
fn reserved_bits_are_refused() {
    let node = node();
    let cmd = br#"{"type":"clients","ref":"1"}"#;
    for rsv in 1..=7u8 {
        closes_with(
            &node,
            &frame_bytes(true, rsv, TEXT, cmd, true),
            1002,
            &format!("RSV {rsv:03b} on text"),
        );
    }
    closes_with(
        &node,
        &frame_bytes(true, 0b100, PING, b"x", true),
        1002,
        "RSV1 on a Ping",
    );
    // Nothing of the command was executed before the close: a valid frame
    // after a bad one in the same write is not answered.
    let mut ws = fresh(&node);
    let mut bytes = frame_bytes(true, 0b010, TEXT, cmd, true);
    bytes.extend(frame_bytes(true, 0, TEXT, cmd, true));
    ws.raw(&bytes);
    let (code, _) = ws.expect_close();
    assert_eq!(code, Some(1002));
}

#[test]
fn reserved_opcodes_are_refused() {
    let node = node();
    for op in (3..=7u8).chain(11..=15) {
        closes_with(
            &node,
            &frame_bytes(true, 0, op, b"", true),
            1002,
            &format!("opcode {op}"),
        );
        closes_with(
            &node,
            &frame_bytes(true, 0, op, b"payload", true),
            1002,
            &format!("opcode {op} with payload"),
        );
    }
}

#[test]
fn unmasked_frames_are_refused() {
    let node = node();
    closes_with(
        &node,
        &frame_bytes(true, 0, TEXT, br#"{"type":"clients"}"#, false),
        1002,
        "unmasked text",
    );
    closes_with(
        &node,
        &frame_bytes(true, 0, PING, b"", false),
        1002,
        "unmasked Ping",
    );
}

#[test]
fn a_binary_message_is_closed_with_1003() {
    let node = node();
    closes_with(
        &node,
        &frame_bytes(true, 0, BINARY, br#"{"type":"clients"}"#, true),
        1003,
        "binary",
    );
    let mut ws = fresh(&node);
    ws.frame(false, BINARY, b"ab");
    ws.frame(true, CONT, b"cd");
    ws.expect_close_code(1003, "fragmented binary");
}

// ---------------------------------------------------------------------------
// Fragmentation (Autobahn 5.x)
// ---------------------------------------------------------------------------

#[test]
fn fragmented_messages_and_control_frames_between_them() {
    let node = node();
    let mut a = ws(&node, "agent-fra");
    let mut b = ws(&node, "agent-fr");
    let cmd = r#"{"type":"send","to":"agent-fr","ref":"f1","body":"three fragments"}"#;
    // Three fragments with a Ping between them: the Pong comes at once, the
    // answer after the last fragment.
    a.frame(false, TEXT, &cmd.as_bytes()[..20]);
    a.frame(true, PING, b"between");
    let f = a.next_frame();
    assert_eq!((f.opcode, f.payload.as_slice()), (PONG, &b"between"[..]));
    a.frame(false, CONT, &cmd.as_bytes()[20..40]);
    a.frame(true, PONG, b"unasked");
    a.frame(true, CONT, &cmd.as_bytes()[40..]);
    accepted(&mut a, "f1");
    b.expect_message("agent-fra", "three fragments");
    // One byte per fragment, with empty fragments, all in one write.
    let cmd = r#"{"type":"send","to":"agent-fr","ref":"f2","body":"byte by byte"}"#;
    let mut bytes = frame_bytes(false, 0, TEXT, b"", true);
    for (i, c) in cmd.bytes().enumerate() {
        bytes.extend(frame_bytes(false, 0, CONT, &[c], true));
        if i % 7 == 0 {
            bytes.extend(frame_bytes(false, 0, CONT, b"", true));
        }
    }
    bytes.extend(frame_bytes(true, 0, CONT, b"", true));
    a.raw(&bytes);
    accepted(&mut a, "f2");
    b.expect_message("agent-fra", "byte by byte");

    // A continuation with no message in progress.
    closes_with(
        &node,
        &frame_bytes(true, 0, CONT, b"{}", true),
        1002,
        "continuation without a message",
    );
    closes_with(
        &node,
        &frame_bytes(false, 0, CONT, b"{", true),
        1002,
        "non-final continuation without a message",
    );
    // A new text (or binary) message while a fragmented one is in progress.
    for op in [TEXT, BINARY] {
        let mut bytes = frame_bytes(false, 0, TEXT, b"{\"type\":", true);
        bytes.extend(frame_bytes(true, 0, op, b"\"clients\"}", true));
        closes_with(
            &node,
            &bytes,
            1002,
            &format!("opcode {op} inside a message"),
        );
    }
    // Fragmented control frames.
    for op in [PING, PONG, CLOSE] {
        let mut bytes = frame_bytes(false, 0, op, b"ab", true);
        bytes.extend(frame_bytes(true, 0, CONT, b"cd", true));
        closes_with(&node, &bytes, 1002, &format!("fragmented control {op}"));
    }
}

// ---------------------------------------------------------------------------
// UTF-8 handling (Autobahn 6.x)
// ---------------------------------------------------------------------------

#[test]
fn text_must_be_utf8() {
    let node = node();
    let mut a = ws(&node, "agent-u8a");
    let mut b = ws(&node, "agent-u8");
    // Valid multi-byte characters split across fragments at every byte.
    let body = "κόσμε € 𝄞 ok";
    let cmd = format!(r#"{{"type":"send","to":"agent-u8","ref":"u","body":"{body}"}}"#);
    let start = cmd.find(body).unwrap();
    for cut in start..start + body.len() {
        a.frame(false, TEXT, &cmd.as_bytes()[..cut]);
        a.frame(true, CONT, &cmd.as_bytes()[cut..]);
        accepted(&mut a, "u");
        b.expect_message("agent-u8a", body);
    }

    let invalid: [&[u8]; 8] = [
        b"\xff",
        b"\xc0\xaf",         // overlong '/'
        b"\xed\xa0\x80",     // a surrogate
        b"\xf4\x90\x80\x80", // beyond U+10FFFF
        b"\xe2\x82",         // truncated at the end of the message
        b"\x80",             // a lone continuation byte
        b"\xf8\x88\x80\x80\x80",
        b"\xce\xba\xe1\xbd", // valid, then truncated
    ];
    for bad in invalid {
        let mut cmd = br#"{"type":"send","to":"agent-u8","body":""#.to_vec();
        cmd.extend_from_slice(bad);
        cmd.extend_from_slice(b"\"}");
        closes_with(
            &node,
            &frame_bytes(true, 0, TEXT, &cmd, true),
            1007,
            &format!("invalid text {bad:x?}"),
        );
    }
    // An invalid sequence in the first fragment: closed before the message
    // ends (the rest is never sent).
    for bad in [&b"\xff"[..], b"\xed\xa0", b"\xc0"] {
        let mut first = br#"{"type":"send","body":"ok "#.to_vec();
        first.extend_from_slice(bad);
        let mut ws = fresh(&node);
        ws.frame(false, TEXT, &first);
        ws.expect_close_code(1007, &format!("invalid first fragment {bad:x?}"));
    }
    // Valid so far at the end of a fragment, invalid with the next one.
    let mut ws = fresh(&node);
    ws.frame(false, TEXT, b"{\"body\":\"\xe2\x82");
    ws.frame(false, CONT, b"\x28 rest");
    ws.expect_close_code(1007, "invalid across fragments");
    // A message that ends inside a character split over fragments.
    let mut ws = fresh(&node);
    ws.frame(false, TEXT, b"{\"body\":\"\xf0\x9d");
    ws.frame(true, CONT, b"\x84");
    ws.expect_close_code(1007, "message ends inside a character");
}

// ---------------------------------------------------------------------------
// Limits (Autobahn 9.x, 12.x sizes)
// ---------------------------------------------------------------------------

#[test]
fn message_limits() {
    let node = node();
    let mut a = ws(&node, "agent-lima");
    let mut b = ws(&node, "agent-lim");
    // A body of exactly --max-message bytes, each escaped (two bytes of
    // JSON), padded with an ignored key to exactly the limit: accepted.
    let body = "\n".repeat(MAX_MESSAGE);
    let mut cmd =
        serde_json::json!({"type":"send","to":"agent-lim","ref":"edge","body":body}).to_string();
    let head = r#","pad":""#;
    let pad = LIMIT - cmd.len() - head.len() - 1;
    cmd.pop();
    cmd = format!("{cmd}{head}{}\"}}", "p".repeat(pad));
    assert_eq!(cmd.len(), LIMIT);
    a.text(&cmd);
    accepted(&mut a, "edge");
    b.expect_message("agent-lima", &body);
    // One byte more body inside a message under the limit: payload_too_large.
    let over = serde_json::json!({"type":"send","to":"agent-lim","ref":"big","body":"y".repeat(MAX_MESSAGE + 1)});
    a.command(&over);
    error(&mut a, "payload_too_large", Some("big"));
    still_works(&mut a, "after");

    // A frame header announcing one byte over the limit, and one announcing
    // 10 GB: Close 1009 without the payload ever being sent.
    for len in [LIMIT as u64 + 1, 10 << 30] {
        let mut ws = fresh(&node);
        ws.raw(&header_bytes(0x81, len, Some([9, 8, 7, 6])));
        ws.expect_close_code(1009, &format!("header announcing {len} bytes"));
    }
    // Fragments that add up to more than the limit: 1009 when the header
    // of the fragment that crosses it arrives.
    let mut ws = fresh(&node);
    ws.frame(false, TEXT, &vec![b' '; LIMIT - 10]);
    ws.raw(&header_bytes(0x00, 11, Some([1, 1, 1, 1])));
    ws.expect_close_code(1009, "fragments over the limit");
    // Exactly at the limit in fragments is fine.
    let text = send_of_len("agent-lim", "frag-edge", LIMIT);
    // The body is 'x' padding longer than --max-message: refused as a body, not as a frame.
    a.frame(false, TEXT, &text.as_bytes()[..LIMIT / 2]);
    a.frame(true, CONT, &text.as_bytes()[LIMIT / 2..]);
    error(&mut a, "payload_too_large", Some("frag-edge"));
}

/// A frame, or a fragmented message, not complete within `--body-timeout`
/// of its first byte: Close 1008 (docs/websocket.md, "Close").
#[test]
fn incomplete_frames_and_messages_time_out_with_1008() {
    let node = Node::start(&["--body-timeout", "1s"]);
    // A frame header, then part of its payload, then nothing.
    let mut ws = fresh(&node);
    let t = std::time::Instant::now();
    ws.raw(&header_bytes(0x81, 100, Some([1, 2, 3, 4])));
    ws.raw(&[b' '; 10]);
    ws.expect_close_code(1008, "incomplete frame");
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    // A first fragment, then no more.
    let mut ws = fresh(&node);
    ws.frame(false, TEXT, b"{\"type\":");
    ws.expect_close_code(1008, "incomplete message");
    // Pings meanwhile do not extend the message's time.
    let mut ws = fresh(&node);
    let t = std::time::Instant::now();
    ws.frame(false, TEXT, b"{\"type\":");
    for _ in 0..3 {
        ws.frame(true, PING, b"k");
        assert_eq!(ws.next_frame().opcode, PONG);
    }
    ws.expect_close_code(1008, "incomplete message with pings");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Close handling (Autobahn 7.x)
// ---------------------------------------------------------------------------

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

#[test]
fn close_handling() {
    let node = node();
    let console = tok("console-cl");
    // A client's Close 1000: echoed, TCP closed, the session held.
    let mut ws = super::ws(&node, "agent-cl");
    ws.frame(true, CLOSE, &close_payload(1000, b"bye"));
    let (code, _) = ws.expect_close();
    assert_eq!(code, Some(1000));
    assert!(
        ws.eof_within(WAIT),
        "TCP not closed after the closing handshake"
    );
    assert!(
        wait_state(node.addr, &console, "agent-cl", "held", WAIT),
        "session not held after a Close"
    );
    // Valid codes are echoed.
    for code in [1001u16, 1002, 1003, 1007, 1011, 1012, 3000, 4000, 4999] {
        let mut ws = fresh(&node);
        ws.frame(true, CLOSE, &close_payload(code, b""));
        assert_eq!(ws.expect_close().0, Some(code), "echo of {code}");
        assert!(ws.eof_within(WAIT), "{code}: TCP not closed");
    }
    // An empty Close: answered with 1000.
    let mut ws = fresh(&node);
    ws.frame(true, CLOSE, b"");
    assert_eq!(ws.expect_close().0, Some(1000), "answer to an empty Close");
    assert!(ws.eof_within(WAIT));
    // A reason of the most bytes that fit.
    let mut ws = fresh(&node);
    ws.frame(true, CLOSE, &close_payload(1000, &[b'r'; 123]));
    assert_eq!(ws.expect_close().0, Some(1000));
    // Invalid codes: 1002.
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        closes_with(
            &node,
            &frame_bytes(true, 0, CLOSE, &close_payload(code, b""), true),
            1002,
            &format!("Close {code}"),
        );
    }
    // A 1-byte Close payload: 1002.
    closes_with(
        &node,
        &frame_bytes(true, 0, CLOSE, &[0x03], true),
        1002,
        "1-byte Close",
    );
    // A reason that is not UTF-8: 1007.
    closes_with(
        &node,
        &frame_bytes(true, 0, CLOSE, &close_payload(1000, b"bad \xff\xfe"), true),
        1007,
        "Close reason not UTF-8",
    );
    // Frames after the client's Close are ignored: no answer to the command.
    let mut ws = fresh(&node);
    let mut bytes = frame_bytes(true, 0, CLOSE, &close_payload(1000, b""), true);
    bytes.extend(frame_bytes(
        true,
        0,
        TEXT,
        br#"{"type":"clients","ref":"late"}"#,
        true,
    ));
    ws.raw(&bytes);
    let f = ws.next_frame();
    assert_eq!(f.opcode, CLOSE, "answered after Close: {f:?}");
    assert!(ws.eof_within(WAIT));
}
