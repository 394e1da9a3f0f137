//! Tests of the frame decoder: every input decoded whole, split in two at
//! every byte boundary (every 97th beyond the first and last 300 bytes of
//! inputs over 2 KiB), and byte by byte, with identical results.

use super::*;

/// An event with owned contents, to compare across runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl From<Event<'_>> for Ev {
    fn from(e: Event<'_>) -> Ev {
        match e {
            Event::Text(t) => Ev::Text(t.into_owned()),
            Event::Binary(b) => Ev::Binary(b.into_owned()),
            Event::Ping(p) => Ev::Ping(p.into_owned()),
            Event::Pong(p) => Ev::Pong(p.into_owned()),
            Event::Close(c) => Ev::Close(c.map(|c| (c.code, c.reason.into_owned()))),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<Ev>,
    error: Option<FrameError>,
}

/// Feeds `pieces` in order the way the server will (one read at a time,
/// looping over each), checking the per-call contract.
fn feed(pieces: &[&[u8]], max: usize) -> Outcome {
    let mut dec = FrameDecoder::new();
    let mut buf: Option<Vec<u8>> = None;
    let mut events = Vec::new();
    for piece in pieces {
        let mut input = piece.to_vec();
        let total = input.len();
        let mut pos = 0;
        loop {
            match dec.decode(&mut input[pos..], &mut buf, max) {
                Ok(d) => {
                    assert!(d.consumed <= total - pos);
                    let none = d.event.is_none();
                    if none {
                        assert_eq!(d.consumed, total - pos, "no event: all consumed");
                    }
                    pos += d.consumed;
                    if let Some(e) = d.event {
                        events.push(Ev::from(e));
                    }
                    if let Some(b) = &buf {
                        assert!(b.len() <= max + MAX_CONTROL, "buffered {} > {max}", b.len());
                    }
                    if dec.is_idle() {
                        assert!(buf.as_ref().is_none_or(Vec::is_empty), "idle with a buffer");
                    }
                    if none || pos == total {
                        break;
                    }
                }
                Err(e) => {
                    assert!(buf.is_none(), "buffer kept after an error");
                    // Sticky.
                    assert_eq!(
                        dec.decode(&mut [0x81, 0x80, 0, 0, 0, 0], &mut buf, max),
                        Err(e)
                    );
                    return Outcome {
                        events,
                        error: Some(e),
                    };
                }
            }
        }
    }
    Outcome {
        events,
        error: None,
    }
}

fn split_points(len: usize) -> Vec<usize> {
    if len <= 2048 {
        (0..=len).collect()
    } else {
        (0..300)
            .chain((300..len - 300).step_by(97))
            .chain(len - 300..=len)
            .collect()
    }
}

/// Decodes `input` whole, in two pieces at every split point, and byte by
/// byte; all must agree. Returns the whole-input outcome.
fn decode_all_splits(input: &[u8], max: usize) -> Outcome {
    let whole = feed(&[input], max);
    for i in split_points(input.len()) {
        let (a, b) = input.split_at(i);
        assert_eq!(feed(&[a, b], max), whole, "split at {i}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(feed(&bytes, max), whole, "byte by byte");
    whole
}

const KEY: [u8; 4] = [0xa1, 0x5c, 0x03, 0xfe];

/// A client frame: `b0` is FIN/RSV/opcode, the payload is masked with `KEY`.
fn raw(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b0];
    let n = payload.len();
    if n <= 125 {
        f.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&KEY);
    let mut p = payload.to_vec();
    unmask(&mut p, KEY);
    f.extend_from_slice(&p);
    f
}

fn text(p: &[u8]) -> Vec<u8> {
    raw(0x81, p)
}

fn cat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

fn events(input: &[u8]) -> Vec<Ev> {
    let o = decode_all_splits(input, 1 << 20);
    assert_eq!(o.error, None);
    o.events
}

fn error(input: &[u8], max: usize) -> (Vec<Ev>, FrameError) {
    let o = decode_all_splits(input, max);
    (o.events, o.error.expect("an error"))
}

#[test]
fn decoder_is_small() {
    assert!(std::mem::size_of::<FrameDecoder>() <= 32);
    assert!(std::mem::size_of::<super::super::close::Closing>() == 1);
}

#[test]
fn single_frames_of_every_length_class() {
    for len in [0usize, 1, 125, 126, 65535, 65536] {
        let body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        assert_eq!(
            events(&text(&body)),
            vec![Ev::Text(body.clone())],
            "len {len}"
        );
        let bin: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        assert_eq!(
            events(&raw(0x82, &bin)),
            vec![Ev::Binary(bin.clone())],
            "len {len}"
        );
    }
}

#[test]
fn a_whole_frame_is_borrowed_and_a_split_one_owned() {
    let mut dec = FrameDecoder::new();
    let mut buf = None;
    let mut input = cat(&[text(b"hello"), raw(0x89, b"p")]);
    let d = dec.decode(&mut input, &mut buf, 100).expect("ok");
    assert!(matches!(
        d.event,
        Some(Event::Text(Cow::Borrowed(b"hello")))
    ));
    assert_eq!(d.consumed, 11);
    let d = dec.decode(&mut input[11..], &mut buf, 100).expect("ok");
    assert!(matches!(d.event, Some(Event::Ping(Cow::Borrowed(b"p")))));
    assert!(dec.is_idle() && buf.is_none());
    // Split: the first part waits in the caller's buffer, then is handed over.
    let mut input = text(b"hello");
    let d = dec.decode(&mut input[..8], &mut buf, 100).expect("ok");
    assert_eq!((d.consumed, d.event), (8, None));
    assert_eq!(buf.as_deref(), Some(&b"he"[..]));
    assert!(!dec.is_idle());
    let d = dec.decode(&mut input[8..], &mut buf, 100).expect("ok");
    assert!(matches!(d.event, Some(Event::Text(Cow::Owned(ref v))) if v == b"hello"));
    assert!(dec.is_idle() && buf.is_none());
    // A partial header, or a whole one without payload, holds no buffer.
    let d = dec.decode(&mut input[..5], &mut buf, 100).expect("ok");
    assert_eq!((d.consumed, d.event), (5, None));
    assert!(buf.is_none());
    let d = dec.decode(&mut input[5..6], &mut buf, 100).expect("ok");
    assert_eq!((d.consumed, d.event), (1, None));
    assert!(buf.is_none());
    let d = dec.decode(&mut input[6..], &mut buf, 100).expect("ok");
    assert!(matches!(
        d.event,
        Some(Event::Text(Cow::Borrowed(b"hello")))
    ));
    // Empty input: nothing.
    assert_eq!(
        dec.decode(&mut [], &mut buf, 100),
        Ok(Decoded {
            consumed: 0,
            event: None
        })
    );
}

#[test]
fn fragmented_messages() {
    // "κόσμε" split inside code points across three fragments.
    let s = "κόσμε".as_bytes();
    let input = cat(&[raw(0x01, &s[..1]), raw(0x00, &s[1..6]), raw(0x80, &s[6..])]);
    assert_eq!(events(&input), vec![Ev::Text(s.to_vec())]);
    // Empty fragments, binary.
    let input = cat(&[
        raw(0x02, b""),
        raw(0x00, b"ab"),
        raw(0x00, b""),
        raw(0x80, b"c"),
    ]);
    assert_eq!(events(&input), vec![Ev::Binary(b"abc".to_vec())]);
    let input = cat(&[raw(0x01, b""), raw(0x80, b"")]);
    assert_eq!(events(&input), vec![Ev::Text(vec![])]);
    // Control frames between fragments (Autobahn 5.6-5.20).
    let input = cat(&[
        raw(0x01, b"frag1 "),
        raw(0x89, b"ping!"),
        raw(0x00, b"frag2 "),
        raw(0x8a, b""),
        raw(0x8a, b"pong"),
        raw(0x80, b"frag3"),
        text(b"next"),
    ]);
    assert_eq!(
        events(&input),
        vec![
            Ev::Ping(b"ping!".to_vec()),
            Ev::Pong(vec![]),
            Ev::Pong(b"pong".to_vec()),
            Ev::Text(b"frag1 frag2 frag3".to_vec()),
            Ev::Text(b"next".to_vec()),
        ]
    );
    // Many fragments of one byte each.
    let body = b"fragmented into single bytes";
    let mut frames: Vec<Vec<u8>> = body
        .iter()
        .enumerate()
        .map(|(i, b)| raw(if i == 0 { 0x02 } else { 0x00 }, &[*b]))
        .collect();
    frames.push(raw(0x80, b""));
    assert_eq!(events(&cat(&frames)), vec![Ev::Binary(body.to_vec())]);
}

#[test]
fn close_ends_decoding() {
    let input = cat(&[
        text(b"a"),
        raw(0x88, b"\x03\xe8bye"),
        text(b"ignored"),
        vec![0xff, 0xff],
    ]);
    assert_eq!(
        events(&input),
        vec![
            Ev::Text(b"a".to_vec()),
            Ev::Close(Some((1000, "bye".into())))
        ]
    );
    // A Close in the middle of a fragmented message drops the message.
    let input = cat(&[raw(0x01, b"part"), raw(0x88, b"")]);
    let mut dec = FrameDecoder::new();
    let mut buf = None;
    let mut bytes = input.clone();
    let d = dec.decode(&mut bytes, &mut buf, 100).expect("ok");
    assert_eq!(d.event, Some(Event::Close(None)));
    assert!(buf.is_none() && dec.is_closed());
    assert_eq!(events(&input), vec![Ev::Close(None)]);
}

/// A Close payload and what the decoder makes of it.
type CloseCase = (
    &'static [u8],
    Result<Option<(u16, &'static str)>, FrameError>,
);

#[test]
fn close_payloads_through_the_decoder() {
    let table: &[CloseCase] = &[
        (b"", Ok(None)),
        (b"\x03\xe8", Ok(Some((1000, "")))),
        (b"\x03\xf4drain", Ok(Some((1012, "drain")))),
        (b"\x0b\xb8", Ok(Some((3000, "")))),
        (b"\x13\x87", Ok(Some((4999, "")))),
        (b"\x03", Err(FrameError::CloseCode(0))),
        (b"\x03\xe7", Err(FrameError::CloseCode(999))),
        (b"\x03\xec", Err(FrameError::CloseCode(1004))),
        (b"\x03\xed", Err(FrameError::CloseCode(1005))),
        (b"\x03\xee", Err(FrameError::CloseCode(1006))),
        (b"\x03\xf7", Err(FrameError::CloseCode(1015))),
        (b"\x03\xf8", Err(FrameError::CloseCode(1016))),
        (b"\x0b\xb7", Err(FrameError::CloseCode(2999))),
        (b"\x13\x88", Err(FrameError::CloseCode(5000))),
        (b"\x03\xe8\xff", Err(FrameError::CloseReason)),
        (b"\x03\xe8a\xed\xa0\x80", Err(FrameError::CloseReason)),
    ];
    for (payload, want) in table {
        let o = decode_all_splits(&raw(0x88, payload), 100);
        let got = match o.error {
            Some(e) => Err(e),
            None => {
                assert_eq!(o.events.len(), 1);
                match &o.events[0] {
                    Ev::Close(c) => Ok(c.clone()),
                    other => panic!("{other:?}"),
                }
            }
        };
        let want = want.map(|c| c.map(|(code, r)| (code, r.to_string())));
        assert_eq!(got, want, "{payload:x?}");
    }
}

#[test]
fn protocol_errors() {
    let cases: Vec<(Vec<u8>, FrameError)> = vec![
        // RSV bits (Autobahn 3.x).
        (raw(0xc1, b"x"), FrameError::ReservedBits),
        (raw(0xa1, b"x"), FrameError::ReservedBits),
        (raw(0x91, b"x"), FrameError::ReservedBits),
        (raw(0xf9, b""), FrameError::ReservedBits),
        // Reserved opcodes (4.x).
        (raw(0x83, b""), FrameError::ReservedOpcode(3)),
        (raw(0x87, b"x"), FrameError::ReservedOpcode(7)),
        (raw(0x8b, b""), FrameError::ReservedOpcode(11)),
        (raw(0x8f, b"x"), FrameError::ReservedOpcode(15)),
        // Control frames: fragmented, too long (2.5, 5.1, 5.2).
        (raw(0x09, b""), FrameError::FragmentedControl),
        (raw(0x0a, b"x"), FrameError::FragmentedControl),
        (raw(0x08, b""), FrameError::FragmentedControl),
        (raw(0x89, &[0; 126]), FrameError::ControlTooLong),
        (raw(0x88, &[3; 126]), FrameError::ControlTooLong),
        // Continuation states (5.9-5.18).
        (raw(0x80, b"x"), FrameError::UnexpectedContinuation),
        (raw(0x00, b"x"), FrameError::UnexpectedContinuation),
        (
            cat(&[raw(0x01, b"a"), text(b"b")]),
            FrameError::ExpectedContinuation,
        ),
        (
            cat(&[raw(0x02, b"a"), raw(0x02, b"b")]),
            FrameError::ExpectedContinuation,
        ),
        (
            cat(&[text(b"a"), raw(0x80, b"b")]),
            FrameError::UnexpectedContinuation,
        ),
        // Unmasked.
        (vec![0x81, 0x01, b'x'], FrameError::Unmasked),
        (vec![0x89, 0x00], FrameError::Unmasked),
        // Lengths.
        (
            vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
            FrameError::LengthOverflow,
        ),
        (
            vec![0x82, 0xfe, 0, 125, 1, 2, 3, 4],
            FrameError::NonMinimalLength,
        ),
        (
            vec![0x82, 0xfe, 0, 0, 1, 2, 3, 4],
            FrameError::NonMinimalLength,
        ),
        (
            vec![0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4],
            FrameError::NonMinimalLength,
        ),
        (
            vec![0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4],
            FrameError::NonMinimalLength,
        ),
    ];
    for (input, want) in cases {
        let (_, got) = error(&input, 1 << 20);
        assert_eq!(got, want, "{input:x?}");
        assert_eq!(got.close_code(), 1002);
    }
    // The order is fixed: RSV before opcode before control rules before the mask.
    assert_eq!(error(&[0xf3, 0x7f], 100).1, FrameError::ReservedBits);
    assert_eq!(error(&[0x0b, 0x7f], 100).1, FrameError::ReservedOpcode(11));
    assert_eq!(error(&[0x09, 0x7f], 100).1, FrameError::FragmentedControl);
    assert_eq!(error(&[0x89, 0x7f], 100).1, FrameError::ControlTooLong);
    assert_eq!(error(&[0x80, 0x00], 100).1, FrameError::Unmasked);
    // Decided from the first two bytes.
    let mut dec = FrameDecoder::new();
    assert_eq!(
        dec.decode(&mut [0xc1, 0x85], &mut None, 100),
        Err(FrameError::ReservedBits)
    );
    // Events before the error are delivered.
    let (ev, e) = error(&cat(&[text(b"ok"), raw(0x85, b"")]), 100);
    assert_eq!(
        (ev, e),
        (
            vec![Ev::Text(b"ok".to_vec())],
            FrameError::ReservedOpcode(5)
        )
    );
}

#[test]
fn message_size_limit() {
    // Exactly the limit is fine, one more is 1009.
    assert_eq!(decode_all_splits(&text(&[b'a'; 100]), 100).error, None);
    let (_, e) = error(&text(&[b'a'; 101]), 100);
    assert_eq!((e, e.close_code()), (FrameError::TooLarge, 1009));
    // The sum of fragments counts; control frames between them do not.
    let frags = cat(&[
        raw(0x02, &[1; 60]),
        raw(0x89, &[0; 100]),
        raw(0x80, &[2; 40]),
    ]);
    assert_eq!(decode_all_splits(&frags, 100).error, None);
    let frags = cat(&[raw(0x02, &[1; 60]), raw(0x00, &[2; 40]), raw(0x80, &[3; 1])]);
    assert_eq!(error(&frags, 100).1, FrameError::TooLarge);
    assert_eq!(decode_all_splits(&frags, 101).error, None);
    // Decided from the header alone: nothing is buffered or allocated.
    let mut dec = FrameDecoder::new();
    let mut buf = None;
    let mut head = vec![0x82, 0xff, 0, 0, 0, 0x10, 0, 0, 0, 0, 1, 2, 3, 4];
    assert_eq!(
        dec.decode(&mut head, &mut buf, 1 << 20),
        Err(FrameError::TooLarge)
    );
    assert!(buf.is_none());
    // A large announced frame reserves at most RESERVE_STEP ahead.
    let mut dec = FrameDecoder::new();
    let mut start = vec![0x82, 0xff, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 2, 3, 4, 9];
    let d = dec.decode(&mut start, &mut buf, 1 << 30).expect("ok");
    assert_eq!(
        d,
        Decoded {
            consumed: 15,
            event: None
        }
    );
    assert!(buf
        .as_ref()
        .is_some_and(|b| b.capacity() <= RESERVE_STEP && b.len() == 1));
    // Control frames are not subject to the message limit.
    assert_eq!(events(&raw(0x89, &[5; 125])), vec![Ev::Ping(vec![5; 125])]);
    assert_eq!(decode_all_splits(&raw(0x89, &[5; 125]), 0).error, None);
}

#[test]
fn utf8_in_text_messages() {
    let bad: &[&[u8]] = &[
        b"\xc0\xaf",         // overlong '/'
        b"\xe0\x80\xaf",     // overlong
        b"\xf0\x80\x80\xaf", // overlong
        b"\xed\xa0\x80",     // U+D800
        b"\xed\xbf\xbf",     // U+DFFF
        b"\xf4\x90\x80\x80", // U+110000
        b"\xff",             // never valid
        b"\x80",             // lone continuation
        b"abc\xce",          // truncated at the end of a FIN frame
        b"\xf0\x9f\x98",     // truncated 4-byte sequence
    ];
    for b in bad {
        let (_, e) = error(&text(b), 100);
        assert_eq!(
            (e, e.close_code()),
            (FrameError::InvalidUtf8, 1007),
            "{b:x?}"
        );
        // Also when fragmented, each byte in its own fragment.
        let mut frames: Vec<Vec<u8>> = b
            .iter()
            .enumerate()
            .map(|(i, x)| raw(if i == 0 { 0x01 } else { 0x00 }, &[*x]))
            .collect();
        frames.push(raw(0x80, b""));
        assert_eq!(
            error(&cat(&frames), 100).1,
            FrameError::InvalidUtf8,
            "{b:x?}"
        );
    }
    // Binary messages are not checked.
    assert_eq!(
        events(&raw(0x82, b"\xff\xc0")),
        vec![Ev::Binary(b"\xff\xc0".to_vec())]
    );
    // Valid text across fragments, every code point size split everywhere.
    let s = "a\u{7f}\u{80}\u{7ff}\u{800}\u{d7ff}\u{e000}\u{ffff}\u{10000}\u{10ffff}".as_bytes();
    for i in 0..=s.len() {
        let input = cat(&[raw(0x01, &s[..i]), raw(0x80, &s[i..])]);
        assert_eq!(events(&input), vec![Ev::Text(s.to_vec())]);
    }
}

#[test]
fn invalid_utf8_fails_fast() {
    // Autobahn 6.4.x: the bad byte is in the first fragment (FIN clear) and
    // the message never completes: refused at once.
    let mut first = raw(
        0x01,
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80",
    );
    let mut dec = FrameDecoder::new();
    let mut buf = None;
    assert_eq!(
        dec.decode(&mut first, &mut buf, 100),
        Err(FrameError::InvalidUtf8)
    );
    // Also within one frame whose rest has not arrived: the header and the
    // bytes up to the bad one are enough.
    let frame = text(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited");
    let bad_at = 6 + 12;
    for cut in 0..frame.len() {
        let mut dec = FrameDecoder::new();
        let mut buf = None;
        let mut part = frame[..cut].to_vec();
        let r = dec.decode(&mut part, &mut buf, 100);
        if cut <= bad_at {
            assert!(r.is_ok(), "cut {cut}");
        } else {
            assert_eq!(r, Err(FrameError::InvalidUtf8), "cut {cut}");
        }
    }
}

#[test]
fn masks_of_split_payloads() {
    // The mask key continues where the previous piece stopped.
    let body: Vec<u8> = (0..=255).collect();
    for key in [[0, 0, 0, 0], [1, 2, 3, 4], [0xff, 0x00, 0xaa, 0x55]] {
        let mut f = vec![0x82, 0x80 | 126, 1, 0];
        f.extend_from_slice(&key);
        let mut p = body.clone();
        unmask(&mut p, key);
        f.extend_from_slice(&p);
        assert_eq!(events(&f), vec![Ev::Binary(body.clone())]);
    }
}
