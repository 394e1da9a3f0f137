//! The bench's WebSocket client framing against the server's own codec: the
//! server's frame decoder reads what the bench writes, the bench's splitter
//! reads what the server's encoder writes, every input split at every byte.

use super::*;
use switchboard::ids::EventId;
use switchboard::proto::ws::encode as server_enc;
use switchboard::proto::ws::frame::{Event as ServerEvent, FrameDecoder};
use switchboard::proto::ws_msg::{self, Command};

/// Feeds `wire` to the server's decoder in two pieces split at `cut`; returns the events.
fn server_decode(wire: &[u8], cut: usize) -> Vec<ServerEvent<'static>> {
    let mut dec = FrameDecoder::new();
    let mut buf = None;
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for piece in [&wire[..cut], &wire[cut..]] {
        pending.extend_from_slice(piece);
        let mut input = std::mem::take(&mut pending);
        let mut at = 0;
        while at < input.len() {
            let d = dec
                .decode(&mut input[at..], &mut buf, 1 << 20)
                .expect("the server's decoder takes the bench's frames");
            at += d.consumed;
            match d.event {
                Some(ServerEvent::Text(t)) => out.push(ServerEvent::Text(t.into_owned().into())),
                Some(ServerEvent::Binary(t)) => {
                    out.push(ServerEvent::Binary(t.into_owned().into()))
                }
                Some(e) => panic!("unexpected {e:?}"),
                None => {}
            }
        }
    }
    out
}

#[test]
fn send_commands_are_masked_frames_the_server_parses() {
    for size in [40, 80, 126, 200, 65_535, 65_536, 70_000] {
        let mut body = Vec::new();
        crate::proto::make_body(&mut body, size, 123, 4, 5);
        let mut wire = Vec::new();
        push_send(&mut wire, b"r17", &body, 9);
        push_send(&mut wire, b"r2", &body, 10_000_000_000);
        assert_ne!(wire[1] & 0x80, 0, "masked");
        let cuts: Vec<usize> = if size < 300 {
            (0..=wire.len()).collect()
        } else {
            vec![
                0,
                1,
                2,
                5,
                9,
                14,
                wire.len() / 2,
                wire.len() - 1,
                wire.len(),
            ]
        };
        for cut in cuts {
            let evs = server_decode(&wire, cut);
            assert_eq!(evs.len(), 2, "size {size} cut {cut}");
            for (ev, (to, r)) in evs.iter().zip([("r17", "9"), ("r2", "10000000000")]) {
                let ServerEvent::Text(t) = ev else {
                    panic!("not text: {ev:?}");
                };
                match ws_msg::parse(t, 1 << 20).expect("a valid send command") {
                    Command::Send {
                        to: t2,
                        body: b,
                        ref_,
                    } => {
                        assert_eq!(t2, to);
                        assert_eq!(&b.bytes[..], &body[..]);
                        assert_eq!(ref_.as_deref(), Some(r));
                    }
                    c => panic!("not a send: {c:?}"),
                }
            }
        }
    }
}

#[test]
fn binary_frames_carry_their_payload() {
    let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let mut wire = Vec::new();
    push_frame(&mut wire, OP_BINARY, &payload, mask_key(3));
    for cut in 0..=wire.len() {
        let evs = server_decode(&wire, cut);
        assert_eq!(evs, vec![ServerEvent::Binary(payload.clone().into())]);
    }
    assert_ne!(mask_key(1), mask_key(2));
}

#[test]
fn server_frames_split_at_every_byte() {
    let mut wire = Vec::new();
    let long = vec![b'x'; 70_000];
    let payloads: [&[u8]; 4] = [b"", b"{\"event\":\"ready\"}", &[b'a'; 126], &long];
    for p in payloads {
        server_enc::push_text(&mut wire, p);
    }
    server_enc::push_ping(&mut wire, b"");
    server_enc::push_close(&mut wire, 1012, "draining");
    let step = |b: &[u8]| -> Vec<(u8, usize)> {
        let mut pos = 0;
        let mut got = vec![];
        while let Some((n, f)) = frame(&b[pos..]).unwrap() {
            got.push((f.opcode, f.payload.len()));
            pos += n;
        }
        got
    };
    let all = step(&wire);
    assert_eq!(
        all,
        vec![
            (OP_TEXT, 0),
            (OP_TEXT, 17),
            (OP_TEXT, 126),
            (OP_TEXT, 70_000),
            (OP_PING, 0),
            (OP_CLOSE, 10)
        ]
    );
    // A prefix yields the frames complete in it, never an error.
    for cut in 0..wire.len() {
        let got = step(&wire[..cut]);
        assert!(got.len() < all.len() && all.starts_with(&got), "cut {cut}");
    }
    let close = &wire[wire.len() - 12..];
    let (_, f) = frame(close).unwrap().unwrap();
    assert_eq!(close_code(f.payload), Some(1012));
}

#[test]
fn broken_server_frames_are_typed_errors() {
    assert_eq!(frame(&[0x81, 0x80, 0, 0, 0, 0]), Err(WsError::Masked));
    assert_eq!(frame(&[0xc1, 0]), Err(WsError::Reserved(0x40)));
    assert_eq!(frame(&[0x01, 0]), Err(WsError::Fragmented));
    assert_eq!(frame(&[0x80, 0]), Err(WsError::Fragmented));
    assert_eq!(frame(&[0x83, 0]), Err(WsError::Opcode(3)));
    assert_eq!(frame(&[0x89, 126, 0, 126]), Err(WsError::TooBig(126)));
    let mut huge = vec![0x82, 127];
    huge.extend_from_slice(&(MAX_FRAME + 1).to_be_bytes());
    assert_eq!(frame(&huge), Err(WsError::TooBig(MAX_FRAME + 1)));
}

#[test]
fn the_upgrade_answer_is_checked() {
    let ok = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n\x01\x00",
        std::str::from_utf8(ACCEPT).unwrap()
    );
    let ok = ok.as_bytes();
    let head = ok.len() - 2;
    for cut in 0..head {
        assert_eq!(check_upgrade(&ok[..cut]), Ok(None), "cut {cut}");
    }
    assert_eq!(check_upgrade(ok), Ok(Some(head)));
    // The accept value is the one RFC 6455 computes for the key.
    assert_eq!(
        &switchboard::proto::ws::handshake::accept_key(KEY.as_bytes())[..],
        ACCEPT
    );
    let bad = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n\r\n";
    assert_eq!(check_upgrade(bad), Err(WsError::BadAccept));
    let refused = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 60\r\n\r\n{\"error\":\"websocket_unsupported\",\"message\":\"..\"}";
    assert_eq!(
        check_upgrade(refused),
        Err(WsError::Status("400 websocket_unsupported".into()))
    );
    let req = upgrade_request("/v1/connect", "h:1", "Authorization: Bearer t\r\n");
    assert!(req.ends_with(b"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer t\r\n\r\n"));
}

#[test]
fn the_server_events_are_read() {
    let id = EventId {
        epoch: 0x5f3a,
        seq: 17,
    };
    let mut b = Vec::new();
    ws_msg::encode_message(&mut b, id, "s3", b"@@12,3,4,abc", false);
    assert_eq!(event(&b), Some(Event::Message));
    assert_eq!(crate::proto::parse_marker(&b), Some((12, 3, 4)));
    b.clear();
    ws_msg::encode_accepted(&mut b, Some("42"), id);
    assert_eq!(event(&b), Some(Event::Accepted(b"42")));
    b.clear();
    ws_msg::encode_error(&mut b, Some("43"), "recipient_offline", "gone");
    assert_eq!(
        event(&b),
        Some(Event::Error(Some(b"43"), b"recipient_offline"))
    );
    b.clear();
    ws_msg::encode_error(&mut b, None, "malformed_json", "no");
    assert_eq!(event(&b), Some(Event::Error(None, b"malformed_json")));
    b.clear();
    ws_msg::encode_reconnect(&mut b, 10);
    assert_eq!(event(&b), Some(Event::Other(b"reconnect")));
    assert_eq!(
        event(b"{\"account\":\"a\",\"event\":\"ready\"}"),
        Some(Event::Ready)
    );
    assert_eq!(event(b"{\"x\":1}"), None);
}
