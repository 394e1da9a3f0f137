//! Tests of the SSE encoder and of the JSON string escaping.

use super::*;

/// One dispatched event as a browser would see it.
#[derive(Debug, PartialEq, Eq)]
struct Event {
    last_id: String,
    kind: String,
    data: String,
}

/// What a stream parses to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Parsed {
    events: Vec<Event>,
    comments: Vec<String>,
    retry: Option<u64>,
}

/// A small independent text/event-stream parser following the WHATWG
/// "event stream interpretation" rules.
fn parse_stream(stream: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let (mut last_id, mut kind, mut data) = (String::new(), String::new(), String::new());
    let mut rest = stream;
    while !rest.is_empty() {
        let (line, next) = match rest.find(['\r', '\n']) {
            Some(i) if rest[i..].starts_with("\r\n") => (&rest[..i], &rest[i + 2..]),
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => panic!("stream ends inside a line: {rest:?}"),
        };
        rest = next;
        if line.is_empty() {
            if !data.is_empty() {
                data.pop(); // the trailing LF
                let kind = if kind.is_empty() {
                    "message".to_string()
                } else {
                    kind.clone()
                };
                parsed.events.push(Event {
                    last_id: last_id.clone(),
                    kind,
                    data: data.clone(),
                });
            }
            data.clear();
            kind.clear();
            continue;
        }
        if let Some(comment) = line.strip_prefix(':') {
            parsed.comments.push(comment.to_string());
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "event" => kind = value.to_string(),
            "id" if !value.contains('\0') => last_id = value.to_string(),
            "retry" => parsed.retry = value.parse().ok(),
            other => panic!("unexpected field {other:?}"),
        }
    }
    parsed
}

fn event(id: Option<&str>, kind: Option<&str>, data: &str) -> String {
    let mut out = Vec::new();
    encode_event(&mut out, id, kind, data);
    String::from_utf8(out).expect("encoder output is UTF-8")
}

fn one_event(id: Option<&str>, kind: Option<&str>, data: &str) -> Event {
    let mut p = parse_stream(&event(id, kind, data));
    assert_eq!(p.events.len(), 1, "{:?}", event(id, kind, data));
    p.events.remove(0)
}

#[test]
fn exact_encoding() {
    assert_eq!(
        event(Some("7"), Some("message"), "hi"),
        "id: 7\nevent: message\ndata: hi\n\n"
    );
    assert_eq!(event(None, None, "a\nb"), "data: a\ndata: b\n\n");
    assert_eq!(event(None, None, ""), "data:\n\n");
    assert_eq!(event(Some(""), None, "x"), "id:\ndata: x\n\n");
    assert_eq!(event(None, Some(""), "x"), "data: x\n\n");
    assert_eq!(event(None, Some("\r\n"), "x"), "data: x\n\n");
    assert_eq!(
        event(None, None, "a\r\nb\rc\n\nd"),
        "data: a\ndata: b\ndata: c\ndata:\ndata: d\n\n"
    );
    assert_eq!(event(None, None, " lead"), "data:  lead\n\n");
}

#[test]
fn round_trips() {
    let e = one_event(Some("42"), Some("message"), "{\"a\":1}");
    assert_eq!(
        e,
        Event {
            last_id: "42".into(),
            kind: "message".into(),
            data: "{\"a\":1}".into()
        }
    );
    for data in [
        "",
        "x",
        "a\nb",
        "a\n",
        "\n",
        "\n\n",
        "a\n\nb",
        " x ",
        ":x",
        "data: x",
        "\u{e9}\u{1f600}",
        "a\0b",
    ] {
        assert_eq!(one_event(None, None, data).data, data, "{data:?}");
    }
    // CRLF and CR are line breaks too; they come back as LF.
    assert_eq!(one_event(None, None, "a\r\nb\rc").data, "a\nb\nc");
    assert_eq!(one_event(None, None, "a\r\n").data, "a\n");
    assert_eq!(one_event(None, None, "\r\r\n").data, "\n\n");
    assert_eq!(one_event(None, Some(" spaced"), "x").kind, " spaced");
}

#[test]
fn id_and_event_are_sanitized() {
    let e = one_event(Some("1\r\n2\r3\n4\u{0}5"), Some("ty\npe\r\0x"), "d");
    assert_eq!(
        e,
        Event {
            last_id: "12345".into(),
            kind: "typex".into(),
            data: "d".into()
        }
    );
    // An injection attempt stays inside the field.
    let e = one_event(Some("1\n\ndata: evil"), Some("m\nretry: 1"), "ok");
    assert_eq!(e.last_id, "1data: evil");
    assert_eq!(e.kind, "mretry: 1");
    assert_eq!(e.data, "ok");
}

#[test]
fn several_events_and_comments() {
    let mut out = Vec::new();
    encode_retry(&mut out, 1500);
    encode_event(&mut out, Some("1"), Some("message"), "one");
    encode_comment(&mut out, "");
    encode_comment(&mut out, "keep\nalive");
    encode_event(&mut out, None, Some("ping"), "two\nlines");
    let stream = String::from_utf8(out).expect("encoder output is UTF-8");
    let p = parse_stream(&stream);
    assert_eq!(p.retry, Some(1500));
    assert_eq!(p.comments, ["", "keep", "alive"]);
    assert_eq!(
        p.events,
        [
            Event {
                last_id: "1".into(),
                kind: "message".into(),
                data: "one".into()
            },
            Event {
                last_id: "1".into(),
                kind: "ping".into(),
                data: "two\nlines".into()
            },
        ]
    );
}

#[test]
fn comments_and_retry() {
    let mut out = Vec::new();
    encode_comment(&mut out, "");
    assert_eq!(out, b":\n\n");
    out.clear();
    encode_comment(&mut out, "hello");
    assert_eq!(out, b":hello\n\n");
    out.clear();
    encode_comment(&mut out, "a\r\nb");
    assert_eq!(out, b":a\n:b\n\n");
    out.clear();
    encode_retry(&mut out, 0);
    assert_eq!(out, b"retry: 0\n");
    out.clear();
    encode_retry(&mut out, u64::MAX);
    assert_eq!(out, b"retry: 18446744073709551615\n");
    // In the block of the event that follows: one event, no empty one.
    out.clear();
    encode_retry(&mut out, 2000);
    encode_event(&mut out, None, Some("ready"), "{}");
    assert_eq!(out, b"retry: 2000\nevent: ready\ndata: {}\n\n");
    let p = parse_stream(std::str::from_utf8(&out).expect("UTF-8"));
    assert_eq!((p.retry, p.events.len()), (Some(2000), 1));
}

#[test]
fn message_json_text() {
    assert_eq!(
        message_json("alice", b"hi"),
        r#"{"from":"alice","body":"hi"}"#
    );
    assert_eq!(message_json("", b""), r#"{"from":"","body":""}"#);
    let j = message_json("a\"b", "q\"\\\n\r\t\u{1}\u{e9}\u{1f600}".as_bytes());
    assert_eq!(
        j,
        "{\"from\":\"a\\\"b\",\"body\":\"q\\\"\\\\\\n\\r\\t\\u0001\u{e9}\u{1f600}\"}"
    );
    assert!(!j.contains(['\n', '\r']));
    let v: serde_json::Value = serde_json::from_str(&j).expect("valid JSON");
    assert_eq!(v["from"], "a\"b");
    assert_eq!(v["body"], "q\"\\\n\r\t\u{1}\u{e9}\u{1f600}");
}

#[test]
fn message_json_binary() {
    assert_eq!(
        message_json("bob", b"\xff"),
        r#"{"from":"bob","body_b64":"/w=="}"#
    );
    assert_eq!(
        message_json("bob", b"ab\xc3"),
        r#"{"from":"bob","body_b64":"YWLD"}"#
    );
    let body = [0u8, 1, 2, 0xfe, 0xff, b'\n'];
    let v: serde_json::Value = serde_json::from_str(&message_json("x", &body)).expect("valid JSON");
    let b64 = v["body_b64"].as_str().expect("string");
    assert_eq!(STANDARD.decode(b64).expect("base64"), body);
    assert!(v.get("body").is_none());
    // Valid UTF-8 with NUL is still text.
    assert_eq!(message_json("x", b"\0"), r#"{"from":"x","body":"\u0000"}"#);
}

#[test]
fn message_json_as_event_data() {
    let data = message_json("a", "multi\nline\r\n".as_bytes());
    let e = one_event(Some("9"), Some("message"), &data);
    assert_eq!(e.data, data);
}

#[test]
fn encode_message_matches_encode_event_of_message_json() {
    let id = crate::ids::EventId {
        epoch: 0xdead_beef,
        seq: 42,
    };
    let bodies: [&[u8]; 6] = [
        b"",
        b"hello",
        b"line1\nline2\r\n\r",
        b"quote\" backslash\\ tab\t nul\0",
        "unicode \u{2028} \u{1F600}".as_bytes(),
        &[0xff, 0xfe, 0x00, 0x80],
    ];
    for body in bodies {
        for from in ["a", "agent-1", "x\"y"] {
            let mut fast = Vec::new();
            encode_message(&mut fast, id, from, body, false);
            let mut slow = Vec::new();
            encode_event(
                &mut slow,
                Some(&id.to_string()),
                Some("message"),
                &message_json(from, body),
            );
            assert_eq!(fast, slow, "from {from:?} body {body:?}");
        }
    }
}

/// Bodies that are not UTF-8 (the bad bytes at every position, before and
/// after valid non-ASCII text, across the 8- and 16-byte blocks) become
/// `body_b64`, valid ones stay text, exactly as with `message_json`.
#[test]
fn encode_message_tells_utf8_from_binary_at_every_position() {
    let id = crate::ids::EventId { epoch: 7, seq: 1 };
    let bad: [&[u8]; 6] = [
        b"\xff",
        b"\xc3",         // a lead byte with no continuation
        b"\xf0\x9f\x98", // a 4-byte sequence cut short
        b"\xc0\x80",     // overlong
        b"\xed\xa0\x80", // a surrogate
        b"\x80",         // a lone continuation byte
    ];
    let good: [&[u8]; 4] = [b"a", "\u{e9}".as_bytes(), "\u{1F600}".as_bytes(), b"\""];
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for len in 0usize..40 {
        for pos in [0, 1, len / 2, len.saturating_sub(1), len] {
            for ins in bad.iter().chain(good.iter()) {
                let mut b = vec![b'x'; len];
                let p = pos.min(b.len());
                b.splice(p..p, ins.iter().copied());
                bodies.push(b.clone());
                // Valid non-ASCII text first, then the insert.
                let mut c = "\u{e9}t\u{e9}".as_bytes().to_vec();
                c.extend_from_slice(&b);
                bodies.push(c);
            }
        }
    }
    let mut long = "\u{1F600}".repeat(20_000).into_bytes();
    bodies.push(long.clone());
    long.push(0xff);
    bodies.push(long);
    bodies.push(vec![b'a'; 70_000]);
    for body in &bodies {
        let mut fast = Vec::new();
        encode_message(&mut fast, id, "a", body, false);
        let mut slow = Vec::new();
        encode_event(
            &mut slow,
            Some(&id.to_string()),
            Some("message"),
            &message_json("a", body),
        );
        assert_eq!(fast, slow, "body {body:?}");
    }
}

#[test]
fn push_json_str_escapes_exactly_like_serde_json() {
    // Every single character class at the start, middle and end of
    // strings up to 72 bytes (so the 16- and 8-byte fast paths and the
    // byte loop are all crossed),
    // plus long mixed strings from a small deterministic generator.
    let specials = [
        "\"", "\\", "\u{0}", "\u{1}", "\u{8}", "\t", "\n", "\u{b}", "\u{c}", "\r", "\u{1f}", " ",
        "~", "\u{7f}", "é", "\u{2028}", "😀", "/",
    ];
    let mut cases: Vec<String> = Vec::new();
    for len in 0..72 {
        for sp in specials {
            for pos in [0, len / 2, len] {
                let mut t: String = "a".repeat(len);
                t.insert_str(pos.min(t.len()), sp);
                cases.push(t);
            }
        }
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for n in [100usize, 1000, 70_000] {
        let mut t = String::with_capacity(n);
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let c = match x % 50 {
                0 => '"',
                1 => '\\',
                2 => '\n',
                3 => '\u{3}',
                4 => 'ß',
                _ => (b'a' + (x % 26) as u8) as char,
            };
            t.push(c);
        }
        cases.push(t);
    }
    for t in cases {
        let mut out = Vec::new();
        push_json_str(&mut out, t.as_bytes());
        let want = serde_json::to_string(&t).expect("serialize");
        assert_eq!(String::from_utf8(out).expect("utf-8"), want, "{t:?}");
        // The checking variant gives the same for valid text, and appends
        // nothing once a byte makes the text invalid.
        let mut out = b"kept".to_vec();
        assert!(push_json_text(&mut out, t.as_bytes()));
        assert_eq!(out[4..], *want.as_bytes(), "{t:?}");
        for bad in [&[0xffu8][..], &[0xc3], &[0xe2, 0x82], &[0xed, 0xa0, 0x80]] {
            for pos in [0, t.len() / 2, t.len()] {
                if !t.is_char_boundary(pos) {
                    continue;
                }
                let mut b = t.as_bytes()[..pos].to_vec();
                b.extend_from_slice(bad);
                b.extend_from_slice(&t.as_bytes()[pos..]);
                if std::str::from_utf8(&b).is_ok() {
                    continue;
                }
                let mut out = b"kept".to_vec();
                assert!(!push_json_text(&mut out, &b), "{b:?}");
                assert_eq!(out, b"kept");
            }
        }
    }
}

/// Around and across the 64-byte blocks: one special byte (or a byte that
/// makes the text invalid, or valid non-ASCII text) at every position of
/// bodies of up to six blocks, with and without valid non-ASCII text
/// before it. `plain_json_text` and the escape agree with `serde_json`.
#[test]
fn every_position_of_the_64_byte_blocks_is_looked_at() {
    let inserts: [&[u8]; 8] = [
        b"\"",
        b"\\",
        b"\0",
        b"\x1f",
        b"\x7f",
        "\u{e9}".as_bytes(),
        b"\xff",
        b"\xed\xa0\x80",
    ];
    // Past 256 bytes the 64-byte blocks are scanned with AVX2 (if the CPU has it).
    for len in [
        63usize, 64, 65, 127, 128, 129, 191, 192, 255, 256, 257, 320, 383, 384,
    ] {
        for pos in 0..=len {
            for ins in inserts {
                for prefix in [&b""[..], "\u{e9}".as_bytes()] {
                    let mut b = prefix.to_vec();
                    b.extend(std::iter::repeat_n(b'x', len));
                    let p = prefix.len() + pos;
                    b.splice(p..p, ins.iter().copied());
                    let text = std::str::from_utf8(&b).ok();
                    let mut out = Vec::new();
                    assert_eq!(push_json_text(&mut out, &b), text.is_some(), "{b:?}");
                    if let Some(t) = text {
                        let want = serde_json::to_string(t).expect("serialize");
                        assert_eq!(out, want.as_bytes(), "{b:?}");
                        assert_eq!(plain_json_text(&b), want.len() == b.len() + 2, "{b:?}");
                    } else {
                        assert!(!plain_json_text(&b), "{b:?}");
                    }
                }
            }
        }
    }
}

/// `plain_json_text` says yes exactly for the bodies the escape pass
/// leaves as they are (every special byte, and invalid UTF-8, at the
/// start, middle and end, across the 8- and 16-byte blocks), and a plain
/// body's event is its head, the body and the tail.
#[test]
fn plain_bodies_are_exactly_those_the_escape_leaves_alone() {
    let inserts: [&[u8]; 14] = [
        b"\"",
        b"\\",
        b"\0",
        b"\x1f",
        b"\n",
        b" ",
        b"~",
        b"\x7f",
        b"/",
        "\u{e9}".as_bytes(),
        "\u{1F600}".as_bytes(),
        b"\xff",
        b"\xc3",
        b"\xed\xa0\x80",
    ];
    let mut bodies: Vec<Vec<u8>> = vec![Vec::new(), vec![b'a'; 70_000]];
    for len in 0usize..72 {
        for ins in inserts {
            for pos in [0, 1, len / 2, len.saturating_sub(1), len] {
                let mut b = vec![b'x'; len];
                let p = pos.min(b.len());
                b.splice(p..p, ins.iter().copied());
                bodies.push(b.clone());
                let mut c = "\u{e9}".as_bytes().to_vec();
                c.extend_from_slice(&b);
                bodies.push(c);
            }
        }
    }
    let id = crate::ids::EventId { epoch: 3, seq: 9 };
    let mut plain = 0;
    for body in &bodies {
        let mut esc = Vec::new();
        let as_is = push_json_text(&mut esc, body)
            && esc[1..esc.len() - 1] == body[..]
            && esc.len() == body.len() + 2;
        assert_eq!(plain_json_text(body), as_is, "{body:?}");
        if as_is {
            plain += 1;
            let mut parts = Vec::new();
            encode_message_head(&mut parts, id, "agent-\"1\"", false);
            parts.extend_from_slice(body);
            parts.extend_from_slice(message_tail(false));
            let mut whole = Vec::new();
            encode_message(&mut whole, id, "agent-\"1\"", body, false);
            assert_eq!(parts, whole, "{body:?}");
        }
    }
    assert!(
        plain > 1000 && plain < bodies.len() / 2,
        "{plain} of {}",
        bodies.len()
    );
}
