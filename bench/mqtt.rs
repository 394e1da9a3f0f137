//! The few MQTT 3.1.1 packets the bench needs to drive Mosquitto: encoders
//! for CONNECT, SUBSCRIBE and PUBLISH, and an incremental packet splitter.
//! Sans-IO: everything works on byte slices.

use crate::proto::HeadCheck;

/// Packet types (the high nibble of the first byte).
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const SUBACK: u8 = 9;

/// The largest remaining length MQTT can express (4 length bytes).
const MAX_REMAINING: usize = 268_435_455;

/// Appends MQTT's variable-length "remaining length".
fn push_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// Appends a 2-byte-length-prefixed string.
fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT with client id `client`, a clean session and no keep-alive
/// (keep-alive 0: the broker expects no PINGREQ, like the other systems'
/// idle connections, which carry nothing).
pub fn connect(client: &str) -> Vec<u8> {
    let mut var = Vec::with_capacity(12 + client.len());
    push_str(&mut var, b"MQTT");
    var.push(4); // protocol level 4 = 3.1.1
    var.push(0x02); // clean session
    var.extend_from_slice(&0u16.to_be_bytes()); // keep-alive seconds
    push_str(&mut var, client.as_bytes());
    let mut out = vec![0x10];
    push_len(&mut out, var.len());
    out.extend_from_slice(&var);
    out
}

/// Appends SUBSCRIBE (packet id `id`) to `topic` at QoS 0.
pub fn subscribe(out: &mut Vec<u8>, id: u16, topic: &str) {
    out.push(0x82);
    push_len(out, 2 + 2 + topic.len() + 1);
    out.extend_from_slice(&id.to_be_bytes());
    push_str(out, topic.as_bytes());
    out.push(0); // requested QoS
}

/// Appends PUBLISH at QoS 1 (packet id `id`) of `payload` to `topic`.
pub fn publish_qos1(out: &mut Vec<u8>, id: u16, topic: &str, payload: &[u8]) {
    out.push(0x32);
    push_len(out, 2 + topic.len() + 2 + payload.len());
    push_str(out, topic.as_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Splits the packet at the start of `buf`: `(bytes consumed, first byte,
/// body after the fixed header)`, `None` if incomplete.
#[allow(clippy::type_complexity)]
pub fn packet(buf: &[u8]) -> Result<Option<(usize, u8, &[u8])>, String> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut shift = 0;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= ((b & 0x7f) as usize) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if i > 4 {
            return Err("MQTT remaining length longer than 4 bytes".into());
        }
    }
    debug_assert!(len <= MAX_REMAINING);
    match buf.get(i..i + len) {
        Some(body) => Ok(Some((i + len, first, body))),
        None => Ok(None),
    }
}

/// The payload of a PUBLISH packet (first byte `first`, body `body`), or
/// `None` if it is not a well-formed PUBLISH.
pub fn publish_payload(first: u8, body: &[u8]) -> Option<&[u8]> {
    if first >> 4 != PUBLISH {
        return None;
    }
    let tlen = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let mut at = 2 + tlen;
    if (first >> 1) & 3 > 0 {
        at += 2; // packet id
    }
    body.get(at..)
}

/// Whether a receiver's CONNECT + SUBSCRIBE have both been acknowledged.
pub fn check_subscribed(buf: &[u8]) -> HeadCheck {
    let mut pos = 0;
    let mut connected = false;
    loop {
        match packet(&buf[pos..]) {
            Err(e) => return HeadCheck::Bad(e),
            Ok(None) => return HeadCheck::More,
            Ok(Some((n, first, body))) => {
                pos += n;
                match (first >> 4, connected) {
                    (CONNACK, false) => match body.get(1) {
                        Some(0) => connected = true,
                        Some(rc) => return HeadCheck::Bad(format!("CONNACK refused: code {rc}")),
                        None => return HeadCheck::Bad("short CONNACK".into()),
                    },
                    (SUBACK, true) => {
                        return match body.get(2) {
                            Some(0x80) | None => HeadCheck::Bad("SUBACK refused".into()),
                            Some(_) => HeadCheck::Ready(pos),
                        }
                    }
                    (t, _) => return HeadCheck::Bad(format!("unexpected MQTT packet type {t}")),
                }
            }
        }
    }
}

/// One answer a sender gets: `Some(Ok)` for a PUBACK, `None` for the CONNACK
/// that accepted the connection, `Some(Err)` for anything else.
pub fn sender_answer(first: u8, body: &[u8]) -> Option<Result<(), String>> {
    match first >> 4 {
        PUBACK => Some(Ok(())),
        CONNACK => match body.get(1) {
            Some(0) => None,
            rc => Some(Err(format!("CONNACK refused: code {rc:?}"))),
        },
        t => Some(Err(format!("unexpected MQTT packet type {t}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_length_round_trip() {
        for n in [0usize, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
            let mut b = vec![0x30];
            push_len(&mut b, n);
            let header = b.len();
            b.resize(header + n, 0);
            let (used, first, body) = packet(&b).unwrap().unwrap();
            assert_eq!((used, first, body.len()), (header + n, 0x30, n));
            // Every shorter prefix is incomplete, never an error.
            for cut in [0, 1, header - 1, header, b.len() - 1] {
                if cut < b.len() {
                    assert!(packet(&b[..cut]).unwrap().is_none(), "n {n} cut {cut}");
                }
            }
        }
        let mut b = Vec::new();
        push_len(&mut b, MAX_REMAINING);
        assert_eq!(b, [0xff, 0xff, 0xff, 0x7f]);
        assert!(packet(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }

    #[test]
    fn publish_encodes_and_parses() {
        let mut b = Vec::new();
        publish_qos1(&mut b, 7, "r12", b"@@5,6,7,abc");
        let (n, first, body) = packet(&b).unwrap().unwrap();
        assert_eq!(n, b.len());
        assert_eq!(publish_payload(first, body), Some(&b"@@5,6,7,abc"[..]));
        // What a QoS 0 subscriber receives: no packet id.
        let qos0 = [0x30, 7, 0, 2, b'r', b'1', b'x', b'y', b'z'];
        let (_, first, body) = packet(&qos0).unwrap().unwrap();
        assert_eq!(publish_payload(first, body), Some(&b"xyz"[..]));
    }

    #[test]
    fn subscription_ready_at_every_split() {
        let stream = [0x20, 2, 0, 0, 0x90, 3, 0, 1, 0, 0x30, 4, 0, 1, b'a', b'z'];
        for cut in 0..9 {
            assert!(
                matches!(check_subscribed(&stream[..cut]), HeadCheck::More),
                "cut {cut}"
            );
        }
        assert!(matches!(check_subscribed(&stream), HeadCheck::Ready(9)));
        assert!(matches!(
            check_subscribed(&[0x20, 2, 0, 5]),
            HeadCheck::Bad(_)
        ));
        assert!(matches!(
            check_subscribed(&[0x20, 2, 0, 0, 0x90, 3, 0, 1, 0x80]),
            HeadCheck::Bad(_)
        ));
    }

    #[test]
    fn connect_is_well_formed() {
        let c = connect("s3");
        let (n, first, body) = packet(&c).unwrap().unwrap();
        assert_eq!((n, first), (c.len(), 0x10));
        assert_eq!(&body[..7], b"\0\x04MQTT\x04");
        assert_eq!(&body[10..], b"\0\x02s3");
    }
}
