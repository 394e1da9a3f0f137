//! JSON message bodies. A send with `Content-Type: application/json` whose
//! body is one valid JSON text is delivered as that JSON value
//! (`{"from":..,"json":<value>}` in its `message` event) instead of as a
//! string the recipient has to parse a second time. The body is kept
//! compact (the whitespace outside its strings removed), so the event's
//! single `data:` line holds it whole and it is written as it is kept.
//!
//! Any other body with that content type (not UTF-8, not JSON) is delivered
//! as any body is (`body` or `body_b64`).

/// If `body` is one valid JSON text (RFC 8259, UTF-8, whitespace around it
/// allowed), compacts it in place (see [`compact`]) and returns true;
/// otherwise leaves it as it is and returns false. Nothing is built from the
/// body: `serde_json` only checks it, without recursion (at any depth of
/// nesting: a byte of heap per level) and without converting
/// numbers or unescaping strings. What the grammar allows is taken, a `\u`
/// escape of a lone surrogate included (RFC 8259 8.2: some parsers refuse
/// such a string).
pub fn take_json(body: &mut Vec<u8>) -> bool {
    // serde_json does not check UTF-8 inside strings it skips: done first.
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
        return false;
    }
    compact(body);
    true
}

/// Removes, in place, the insignificant whitespace of a valid JSON text:
/// space, tab, LF and CR (JSON's only whitespace) outside strings. Strings
/// (escapes included), key order and the text of numbers stay as they are.
///
/// The result has no CR or LF at all (a valid JSON string holds none raw), so
/// it fits in one SSE `data:` line. On input that is not valid JSON the
/// result is unspecified (but no panic): [`take_json`] checks first.
pub fn compact(body: &mut Vec<u8>) {
    // Nothing to do for a body that is already compact (what most clients
    // send): found without writing anything.
    let Some(first) = first_whitespace(body) else {
        return;
    };
    let mut w = first;
    let mut state = State::Outside;
    for r in first..body.len() {
        let b = body[r];
        state = match state {
            State::Outside => match b {
                b' ' | b'\t' | b'\n' | b'\r' => continue,
                b'"' => State::InString,
                _ => State::Outside,
            },
            State::InString => match b {
                b'\\' => State::Escaped,
                b'"' => State::Outside,
                _ => State::InString,
            },
            // The byte after a backslash (`"`, `\`, `/`, `b`, `f`, `n`, `r`,
            // `t` or the `u` of `\uXXXX`, whose hex digits need no care).
            State::Escaped => State::InString,
        };
        body[w] = b;
        w += 1;
    }
    body.truncate(w);
}

/// Where [`compact`] is in the JSON text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between tokens (or inside a number or literal).
    Outside,
    /// Inside a string.
    InString,
    /// Inside a string, right after a backslash.
    Escaped,
}

/// The position of the first whitespace byte outside strings, if any.
fn first_whitespace(body: &[u8]) -> Option<usize> {
    let mut state = State::Outside;
    for (i, &b) in body.iter().enumerate() {
        state = match state {
            State::Outside => match b {
                b' ' | b'\t' | b'\n' | b'\r' => return Some(i),
                b'"' => State::InString,
                _ => State::Outside,
            },
            State::InString => match b {
                b'\\' => State::Escaped,
                b'"' => State::Outside,
                _ => State::InString,
            },
            State::Escaped => State::InString,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::EventId;
    use crate::proto::sse;

    fn compacted(s: &str) -> String {
        let mut b = s.as_bytes().to_vec();
        assert!(take_json(&mut b), "not taken as JSON: {s:?}");
        String::from_utf8(b).expect("compact output is UTF-8")
    }

    /// Every kind of JSON whitespace, between every kind of token, goes;
    /// the same characters inside strings stay.
    #[test]
    fn whitespace_of_every_kind_goes_outside_strings() {
        for ws in [" ", "\t", "\n", "\r", "\r\n", " \t\r\n "] {
            let doc = [
                "",
                "{",
                "\"a b\"",
                ":",
                "[",
                "1",
                ",",
                "-2.50e+10",
                ",",
                "true",
                ",",
                "false",
                ",",
                "null",
                ",",
                "{",
                "}",
                ",",
                "[",
                "]",
                ",",
                "\"\\t \\n\"",
                "]",
                ",",
                "\"k x\"",
                ":",
                "\" \"",
                "}",
                "",
            ]
            .join(ws);
            assert_eq!(
                compacted(&doc),
                r#"{"a b":[1,-2.50e+10,true,false,null,{},[],"\t \n"],"k x":" "}"#,
                "{doc:?}"
            );
        }
    }

    #[test]
    fn scalars_and_already_compact_texts() {
        assert_eq!(compacted(" \"x y\" "), "\"x y\"");
        assert_eq!(compacted("\n1\n"), "1");
        assert_eq!(compacted("\t\r\n-0.0E-7 "), "-0.0E-7");
        assert_eq!(compacted("null"), "null");
        assert_eq!(compacted("\"\""), "\"\"");
        // Number text and key order are kept (no re-serialization).
        assert_eq!(
            compacted("{\"z\": 1.0, \"a\": 1e2, \"m\": 12345678901234567890123}"),
            "{\"z\":1.0,\"a\":1e2,\"m\":12345678901234567890123}"
        );
        let compact = "{\"cmd\":\"backup\",\"args\":[\"--full\",{\"x\":[[],{}]}]}";
        assert_eq!(compacted(compact), compact);
    }

    /// Quotes and backslashes inside strings: an escaped quote does not end
    /// the string, an escaped backslash before the closing quote does not
    /// escape it, so the whitespace after it is outside and goes.
    #[test]
    fn escaped_quotes_and_backslashes() {
        let cases = [
            (r#"{ "a \" b" : 1 }"#, r#"{"a \" b":1}"#),
            (r#"[ "a\\" , "b" ]"#, r#"["a\\","b"]"#),
            (r#"[ "\\\" x " , " y\\\\" ]"#, r#"["\\\" x "," y\\\\"]"#),
            (r#"[ "\"" , "\\" , "\/" ]"#, r#"["\"","\\","\/"]"#),
            (
                r#"[ "\u0022 " , "\u005c" , 1 ]"#,
                r#"["\u0022 ","\u005c",1]"#,
            ),
            (
                r#"{ "\\": { "\"": [ " \\ \" " ] } }"#,
                r#"{"\\":{"\"":[" \\ \" "]}}"#,
            ),
        ];
        for (doc, want) in cases {
            assert_eq!(compacted(doc), want, "{doc}");
        }
    }

    /// Multi-byte UTF-8 (whose bytes are never ASCII) and `\u` escapes,
    /// surrogate pairs included, pass through untouched.
    #[test]
    fn unicode() {
        assert_eq!(
            compacted("{ \"é\" : \"日本 語\" , \"😀\" : [ \"\\ud83d\\ude00\" , \"\u{2028}\" ] }"),
            "{\"é\":\"日本 語\",\"😀\":[\"\\ud83d\\ude00\",\"\u{2028}\"]}"
        );
        // U+00A0 and U+3000 are not JSON whitespace; they are not valid
        // outside strings either, so such a text is not JSON at all.
        let mut b = "[1,\u{a0}2]".as_bytes().to_vec();
        assert!(!take_json(&mut b));
    }

    /// Deep nesting: checked and compacted without recursion (no stack
    /// overflow), however deep; an unbalanced one is refused.
    #[test]
    fn nested() {
        let deep = |n: usize, ws: &str| {
            let open = format!("[{ws}{{{ws}\"k\"{ws}:{ws}").repeat(n);
            format!("{open}1{}", format!("{ws}}}{ws}]").repeat(n))
        };
        assert_eq!(compacted(&deep(3, " \n")), r#"[{"k":[{"k":[{"k":1}]}]}]"#);
        assert_eq!(compacted(&deep(50_000, "\t")), deep(50_000, ""));
        let mut unbalanced = deep(1000, "").into_bytes();
        unbalanced.pop();
        assert!(!take_json(&mut unbalanced));
    }

    /// Bodies that are not one valid JSON text are left exactly as they were.
    #[test]
    fn invalid_bodies_are_untouched() {
        let mut non_utf8 = b"[\"\xff\"]".to_vec();
        assert!(!take_json(&mut non_utf8));
        assert_eq!(non_utf8, b"[\"\xff\"]");
        for bad in [
            "",
            " \n ",
            "{\"a\": 1,}",
            "1 2",
            "{\"a\" 1}",
            "[1, 2",
            "\"raw\nline break\"",
            "\"tab\tinside\"",
            "'single'",
            "\u{feff}{}",
            "NaN",
            "[01]",
            "\"bad \\x escape\"",
            "{\"cmd\": \"backup\"} trailing",
        ] {
            let mut b = bad.as_bytes().to_vec();
            assert!(!take_json(&mut b), "{bad:?}");
            assert_eq!(b, bad.as_bytes(), "{bad:?} was changed");
        }
    }

    /// Whatever valid JSON goes in, the compact form is the same value, has
    /// no line break and nothing of it can be removed any more (a second
    /// pass changes nothing).
    #[test]
    fn compact_keeps_the_value() {
        let docs = [
            "{\n  \"cmd\": \"backup\",\n  \"paths\": [\"/etc\", \"/var/lib\"],\n  \"opts\": {\"full\": true, \"level\": 3}\n}\n",
            "[ \"line\\nbreak\", \"cr\\r\", \"\\\\\\\"\" ,\r\n {\"\": \"\"} ]",
            "\r\n\t {\"a\":{\"b\":{\"c\":[1,[2,[3,[\" \\\" \"]]]]}}}\t\r\n",
        ];
        for doc in docs {
            let c = compacted(doc);
            assert!(!c.contains(['\r', '\n']), "{c:?}");
            let a: serde_json::Value = serde_json::from_str(doc).expect("valid");
            let b: serde_json::Value = serde_json::from_str(&c).expect("still valid");
            assert_eq!(a, b, "{doc:?}");
            assert_eq!(compacted(&c), c);
        }
    }

    fn message(from: &str, body: &[u8], json: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let id = EventId { epoch: 7, seq: 3 };
        sse::encode_message(&mut out, id, from, body, json);
        out
    }

    /// The `message` event of a JSON body carries the value itself under
    /// `json`, in one `data:` line that parses back to it.
    #[test]
    fn the_message_event_carries_the_value() {
        let mut body = b"{\n  \"cmd\": \"backup\",\n  \"n\": [1, 2.0]\n}\n".to_vec();
        assert!(take_json(&mut body));
        let out = message("console-1", &body, true);
        let text = String::from_utf8(out).expect("UTF-8");
        assert_eq!(
            text,
            "id: 7-3\nevent: message\ndata: {\"from\":\"console-1\",\"json\":{\"cmd\":\"backup\",\"n\":[1,2.0]}}\n\n"
        );
        let data = text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data line");
        let v: serde_json::Value = serde_json::from_str(data).expect("valid JSON");
        assert_eq!(v["from"], "console-1");
        assert_eq!(v["json"]["cmd"], "backup");
        assert!(v.get("body").is_none());
        // The same body without the flag is a string, as before.
        let plain = String::from_utf8(message("console-1", &body, false)).expect("UTF-8");
        assert!(plain.contains(",\"body\":\"{\\\"cmd\\\""), "{plain}");
    }

    /// The head, the kept body and the tail (the zero-copy path of large
    /// messages) are the same event as the one encoded whole.
    #[test]
    fn head_body_and_tail_make_the_same_event() {
        let mut body = format!("[{}\"end\"]", "\"x\", ".repeat(2000)).into_bytes();
        assert!(take_json(&mut body));
        let id = EventId { epoch: 7, seq: 3 };
        let mut parts = Vec::new();
        sse::encode_message_head(&mut parts, id, "c\"1", true);
        parts.extend_from_slice(&body);
        parts.extend_from_slice(sse::message_tail(true));
        assert_eq!(parts, message("c\"1", &body, true));
        let mut plain = Vec::new();
        let text = b"no quotes here";
        sse::encode_message_head(&mut plain, id, "c", false);
        plain.extend_from_slice(text);
        plain.extend_from_slice(sse::message_tail(false));
        assert_eq!(plain, message("c", text, false));
    }
}
