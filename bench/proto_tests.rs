//! The wire shapes' unit tests (split out of proto.rs to keep it short).

use super::*;

#[test]
fn bodies_are_the_marker_then_letters_by_position() {
    let mut out = Vec::new();
    for size in [40, 64, 1024, 1700, 65000] {
        make_body(&mut out, size, 1234567, 3, 99);
        assert_eq!(out.len(), size);
        assert!(out.starts_with(b"@@1234567,3,99,"));
        for (k, &b) in out.iter().enumerate().skip(15) {
            assert_eq!(b, b'a' + (k % 26) as u8, "size {size}, byte {k}");
        }
        assert_eq!(parse_marker(&out), Some((1234567, 3, 99)));
    }
}

#[test]
fn sse_stream() {
    let mut p = StreamParser::new(Target::Switchboard);
    let mut got = vec![];
    p.push(b"id: 1\nevent: message\ndata: {\"from\":\"s0\",\"body\":\"@@12,3,4,abc\"}\n");
    p.drain(|g| got.push(g)).unwrap();
    assert!(got.is_empty());
    p.push(b"\n: hb\n\nid: 2\nda");
    p.drain(|g| got.push(g)).unwrap();
    assert_eq!(got.len(), 2);
    assert!(matches!(got[0], Got::Msg(12, 3, 4)));
    assert_eq!(p.buffered(), 8);
}

/// A chunked stream (the ready event, events split over chunks and
/// reads at every byte, a heartbeat chunk) gives the same items as the
/// plain one.
#[test]
fn chunked_sse_stream() {
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let ready = b"retry: 2000\nevent: ready\ndata: {}\n\n";
    let ev1 = b"id: 1\nevent: message\ndata: {\"from\":\"s0\",\"body\":\"@@12,3,4,abc\"}\n\n";
    let ev2 = b"id: 2\nevent: message\ndata: {\"from\":\"s0\",\"body\":\"@@13,3,5,abc\"}\n\n";
    let mut wire = head.to_vec();
    let mut first = ready.to_vec();
    first.extend_from_slice(ev1);
    for chunk in [&first[..], b":\n\n", ev2] {
        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    let HeadCheck::Ready(at) = check_ready(Target::Switchboard, &wire) else {
        panic!("not ready");
    };
    for cut in at..=wire.len() {
        let mut p = StreamParser::new(Target::Switchboard);
        p.set_chunking(chunking_at(&wire, at));
        let mut got = vec![];
        p.push(&wire[at..cut]);
        p.drain(|g| got.push(g)).unwrap();
        p.push(&wire[cut..]);
        p.drain(|g| got.push(g)).unwrap();
        assert_eq!(got.len(), 3, "cut {cut}");
        assert!(matches!(got[0], Got::Msg(12, 3, 4)));
        assert!(matches!(got[1], Got::Other));
        assert!(matches!(got[2], Got::Msg(13, 3, 5)));
        assert_eq!(p.buffered(), 0);
    }
    // A plain stream gets no decoder; bad framing is an error.
    assert!(chunking_at(b"HTTP/1.1 200 OK\r\n\r\nx", 19).is_none());
    let mut p = StreamParser::new(Target::Switchboard);
    p.set_chunking(Some(Dechunk::default()));
    p.push(b"zz\r\n");
    assert!(p.drain(|_| {}).is_err());
}

#[test]
fn resp_stream() {
    let mut p = StreamParser::new(Target::Redis);
    let mut got = vec![];
    let msg = b"*3\r\n$7\r\nmessage\r\n$2\r\nr1\r\n$12\r\n@@5,6,7,abcd\r\n";
    p.push(&msg[..20]);
    p.drain(|g| got.push(g)).unwrap();
    assert!(got.is_empty());
    p.push(&msg[20..]);
    p.drain(|g| got.push(g)).unwrap();
    assert!(matches!(got[0], Got::Msg(5, 6, 7)));
    let sub = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nr1\r\n:1\r\n";
    assert!(matches!(check_ready(Target::Redis, sub), HeadCheck::Ready(n) if n == sub.len()));
}

#[test]
fn http_responses() {
    let mut r = HttpResponses::default();
    r.push(b"HTTP/1.1 202 Accepted\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 201 Created\r\ncontent-length:0\r\n\r\n");
    assert_eq!(r.next().unwrap(), Some(202));
    assert_eq!(r.next().unwrap(), Some(201));
    assert_eq!(r.next().unwrap(), None);
    // Chunked, split at every byte: one response, then nothing left over.
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    for cut in 0..chunked.len() {
        let mut r = HttpResponses::default();
        r.push(&chunked[..cut]);
        assert_eq!(r.next().unwrap(), None, "cut {cut}");
        r.push(&chunked[cut..]);
        assert_eq!(r.next().unwrap(), Some(200), "cut {cut}");
        assert_eq!(r.next().unwrap(), None);
    }
    let mut r = HttpResponses::default();
    r.push(b"HTTP/1.1 202 Accepted\r\nContent-Length: x\r\n\r\n");
    assert!(r.next().is_err());
}

#[test]
fn sends_have_the_exact_wire_shape_of_each_system() {
    let body = b"@@1,2,3,abc";
    let mut out = Vec::new();
    push_send(
        Target::Switchboard,
        &mut out,
        "h:1",
        "Authorization: Bearer t\r\n",
        "r7",
        body,
        0,
    );
    assert_eq!(
        out,
        b"POST /v1/send/r7 HTTP/1.1\r\nHost: h:1\r\nAuthorization: Bearer t\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n@@1,2,3,abc"
    );
    out.clear();
    push_send(Target::Nchan, &mut out, "h:1", "ignored", "r7", body, 0);
    assert_eq!(
        out,
        b"POST /pub/r7 HTTP/1.1\r\nHost: h:1\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n@@1,2,3,abc"
    );
    out.clear();
    push_send(Target::Redis, &mut out, "h:1", "", "r1234567890", body, 0);
    assert_eq!(
        out,
        b"*3\r\n$7\r\nPUBLISH\r\n$11\r\nr1234567890\r\n$11\r\n@@1,2,3,abc\r\n"
    );
    for n in [0, 7, 10, 99, 100, 65000, u64::MAX] {
        let mut d = Vec::new();
        push_decimal(&mut d, n);
        assert_eq!(d, n.to_string().as_bytes());
    }
}

#[test]
fn find_agrees_with_a_naive_search() {
    let hay = b"a\r\n\r\nb\n\n@@c\n\n0\r\n\r\n";
    for needle in [&b"\n\n"[..], b"\r\n\r\n", b"@@", b"0\r\n\r\n", b"zz", b""] {
        for from in 0..hay.len() {
            let h = &hay[from..];
            let naive = if needle.is_empty() {
                None
            } else {
                h.windows(needle.len()).position(|w| w == needle)
            };
            assert_eq!(find(h, needle), naive, "{needle:?} from {from}");
        }
    }
}
