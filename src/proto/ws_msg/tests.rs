//! The command parser: every command form, every error with its code and
//! ref, the limits at exactly the limit and one over.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::*;

const MAX: usize = 1000;

fn ok(msg: &str) -> Command<'_> {
    parse(msg.as_bytes(), MAX).unwrap_or_else(|e| panic!("{msg:?} refused: {e:?}"))
}

/// The send's recipient, body bytes, JSON flag and ref.
fn send(msg: &str) -> (String, Vec<u8>, bool, Option<String>) {
    match ok(msg) {
        Command::Send { to, body, ref_ } => (
            to.into_owned(),
            body.bytes.into_owned(),
            body.json,
            ref_.map(Cow::into_owned),
        ),
        c => panic!("{msg:?} is not a send: {c:?}"),
    }
}

/// The error's kind and ref.
fn err_with(msg: &[u8], max: usize) -> (ErrorKind, Option<String>) {
    match parse(msg, max) {
        Ok(c) => panic!("{:?} accepted: {c:?}", String::from_utf8_lossy(msg)),
        Err(e) => (e.kind(), e.ref_().map(str::to_owned)),
    }
}

fn err(msg: &str) -> (ErrorKind, Option<String>) {
    err_with(msg.as_bytes(), MAX)
}

fn r(s: &str) -> Option<String> {
    Some(s.to_owned())
}

#[test]
fn send_with_a_text_body() {
    let (to, body, json, ref_) = send(r#"{"type":"send","to":"agent-1","body":"hello","ref":"7"}"#);
    assert_eq!(
        (to.as_str(), &body[..], json, ref_),
        ("agent-1", &b"hello"[..], false, r("7"))
    );
    // Key order, whitespace around and between tokens, no ref.
    let (to, body, json, ref_) =
        send(" \r\n{ \"body\" : \"\" ,\t\"to\":\"a.b_c-D9\", \"type\":\"send\" }\n");
    assert_eq!(
        (to.as_str(), &body[..], json, ref_),
        ("a.b_c-D9", &b""[..], false, None)
    );
}

/// A string without escapes is borrowed from the message; one with escapes
/// is unescaped into a copy.
#[test]
fn text_bodies_are_borrowed_unless_escaped() {
    let msg = r#"{"type":"send","to":"a","body":"plain text"}"#;
    let Ok(Command::Send { body, to, .. }) = parse(msg.as_bytes(), MAX) else {
        panic!("refused");
    };
    assert!(matches!(body.bytes, Cow::Borrowed(b"plain text")));
    assert!(matches!(to, Cow::Borrowed("a")));
    let msg = r#"{"type":"send","to":"\u0061","body":"tab\there"}"#;
    let Ok(Command::Send { body, to, .. }) = parse(msg.as_bytes(), MAX) else {
        panic!("refused");
    };
    assert_eq!(&*body.bytes, b"tab\there");
    assert!(matches!(body.bytes, Cow::Owned(_)));
    assert_eq!(to, "a");
}

/// Unicode as is and escaped (a surrogate pair included), control
/// characters escaped, quotes and backslashes: the body is the string's
/// UTF-8 bytes.
#[test]
fn unicode_and_control_characters_in_bodies() {
    let cases = [
        (r#""日本語 é 😀""#, "日本語 é 😀"),
        (r#""\u65e5\u00e9\ud83d\ude00""#, "日é😀"),
        (
            r#""\u0000\u0001\u001f\b\f\n\r\t""#,
            "\0\u{1}\u{1f}\u{8}\u{c}\n\r\t",
        ),
        (r#""\"\\\/""#, "\"\\/"),
        ("\"\u{2028}\u{feff}\u{7f}\"", "\u{2028}\u{feff}\u{7f}"),
    ];
    for (lit, want) in cases {
        let msg = format!(r#"{{"type":"send","to":"x","body":{lit}}}"#);
        let (_, body, json, _) = send(&msg);
        assert_eq!(body, want.as_bytes(), "{lit}");
        assert!(!json);
    }
    // A raw control character inside a JSON string is not JSON; nor is a
    // lone surrogate in a string that is read as text.
    for lit in ["\"a\nb\"", "\"a\u{0}b\"", r#""\ud800""#, r#""\x41""#] {
        let msg = format!(r#"{{"type":"send","to":"x","body":{lit},"ref":"q"}}"#);
        assert_eq!(err(&msg).0, ErrorKind::Malformed, "{lit}");
    }
}

#[test]
fn send_with_a_base64_body() {
    let bodies: [&[u8]; 6] = [
        b"",
        b"a",
        b"ab",
        b"abc",
        b"\xff\x00\xfe\x80",
        b"\xc3\x28 not utf-8",
    ];
    for b in bodies {
        let msg = format!(
            r#"{{"type":"send","to":"x","body_b64":"{}","ref":"b"}}"#,
            STANDARD.encode(b)
        );
        let (_, body, json, ref_) = send(&msg);
        assert_eq!((&body[..], json, ref_), (b, false, r("b")));
    }
    let all: Vec<u8> = (0..=255u8).collect();
    let msg = format!(
        r#"{{"type":"send","to":"x","body_b64":"{}"}}"#,
        STANDARD.encode(&all)
    );
    assert_eq!(send(&msg).1, all);
}

#[test]
fn bad_base64() {
    for b64 in [
        "a", "YQ", "YQ=", "Y===", "====", "YR==", "YWJj\\n", "YW Jj", "YWJj-_", "YWJ*",
    ] {
        let msg = format!(r#"{{"ref":"x","type":"send","to":"x","body_b64":"{b64}"}}"#);
        assert_eq!(err(&msg), (ErrorKind::BadBase64, r("x")), "{b64:?}");
    }
}

/// A `json` body travels as an HTTP JSON body does: compact, flagged.
#[test]
fn send_with_a_json_body_is_compacted() {
    let msg = "{\"type\":\"send\",\"to\":\"x\",\"json\": {\n  \"cmd\" : \"back up\",\n  \"n\": [1, 2.50e+3, null, true]\t}\r\n}";
    let (_, body, json, _) = send(msg);
    assert!(json);
    assert_eq!(body, br#"{"cmd":"back up","n":[1,2.50e+3,null,true]}"#);
    for (value, want) in [
        ("null", "null"),
        ("0", "0"),
        (" \"s p\" ", "\"s p\""),
        ("[ ]", "[]"),
        ("{ \"\\u0022\" : \"\\ud800\" }", r#"{"\u0022":"\ud800"}"#),
        ("1e400", "1e400"),
    ] {
        let msg = format!(r#"{{"type":"send","to":"x","json":{value}}}"#);
        let (_, body, json, _) = send(&msg);
        assert_eq!(
            (std::str::from_utf8(&body).ok(), json),
            (Some(want), true),
            "{value}"
        );
    }
    // Any depth, without recursion.
    let deep = format!("{}1{}", "[ ".repeat(50_000), " ]".repeat(50_000));
    let msg = format!(r#"{{"type":"send","to":"x","json":{deep}}}"#);
    let Ok(Command::Send { body, .. }) = parse(msg.as_bytes(), 1 << 20) else {
        panic!("deep JSON refused");
    };
    assert_eq!(
        &*body.bytes,
        format!("{}1{}", "[".repeat(50_000), "]".repeat(50_000)).as_bytes()
    );
}

#[test]
fn clients() {
    assert_eq!(ok(r#"{"type":"clients"}"#), Command::Clients { ref_: None });
    assert_eq!(
        ok(r#"{"ref":"list-1","type":"clients","future":{"x":[1]}}"#).ref_(),
        Some("list-1")
    );
    assert_eq!(
        err(r#"{"type":"clients","to":"a","ref":"c"}"#),
        (ErrorKind::UnexpectedField("to"), r("c"))
    );
    for f in ["body", "body_b64", "json"] {
        let msg = format!(r#"{{"type":"clients","{f}":"","ref":"c"}}"#);
        assert_eq!(err(&msg), (ErrorKind::UnexpectedField(f), r("c")), "{f}");
    }
}

/// Keys are compared unescaped; unknown keys (of any value) are ignored.
#[test]
fn escaped_and_unknown_keys() {
    let (to, body, _, ref_) = send(
        r#"{"\u0074ype":"send","t\u006f":"x","body":"b","r\u0065f":"e","x":[{"type":1}],"":null}"#,
    );
    assert_eq!((to.as_str(), &body[..], ref_), ("x", &b"b"[..], r("e")));
    // `Type` and `TO` are other keys than `type` and `to`.
    assert_eq!(
        err(r#"{"Type":"send","to":"x","body":""}"#).0,
        ErrorKind::MissingField("type")
    );
}

#[test]
fn refs() {
    // Exactly the limit (counted in bytes after unescaping), and one over.
    let at = "é".repeat(MAX_REF_LEN / 2);
    let msg = format!(r#"{{"type":"clients","ref":"{at}"}}"#);
    assert_eq!(ok(&msg).ref_(), Some(at.as_str()));
    let escaped = "\\u00e9".repeat(MAX_REF_LEN / 2);
    let msg = format!(r#"{{"type":"clients","ref":"{escaped}"}}"#);
    assert_eq!(ok(&msg).ref_(), Some(at.as_str()));
    let over = "r".repeat(MAX_REF_LEN + 1);
    let msg = format!(r#"{{"type":"clients","ref":"{over}"}}"#);
    assert_eq!(err(&msg), (ErrorKind::RefTooLong, None));
    // A ref that is too long or not a string is the fault reported, even if
    // the rest is wrong too; it is not echoed.
    let msg = format!(r#"{{"type":"nope","ref":"{over}"}}"#);
    assert_eq!(err(&msg), (ErrorKind::RefTooLong, None));
    for bad in ["1", "null", "true", "[\"r\"]", "{\"r\":1}"] {
        let msg = format!(r#"{{"type":"send","to":"x","body":"","ref":{bad}}}"#);
        assert_eq!(err(&msg), (ErrorKind::InvalidField("ref"), None), "{bad}");
    }
    // Given twice: refused, not echoed.
    assert_eq!(
        err(r#"{"type":"clients","ref":"a","ref":"b"}"#),
        (ErrorKind::DuplicateField("ref"), None)
    );
    // Control characters and quotes survive the echo.
    let msg = r#"{"type":"clients","ref":"a\"b\n\u0000"}"#;
    assert_eq!(ok(msg).ref_(), Some("a\"b\n\0"));
}

#[test]
fn malformed() {
    let cases: [&[u8]; 14] = [
        b"",
        b"   ",
        b"{",
        b"{\"type\":\"send\"",
        b"{\"type\":\"send\",}",
        b"{\"type\" \"send\"}",
        b"{'type':'clients'}",
        b"{\"type\":\"clients\"} {}",
        b"{\"type\":\"clients\"}x",
        b"{\"type\":\"clients\",\"x\":01}",
        b"\xef\xbb\xbf{\"type\":\"clients\"}",
        b"{\"type\":\"clients\",\"x\":\"\xff\"}",
        b"{\"type\":\"send\",\"to\":\"x\",\"json\":[1,]}",
        b"{\"type\":\"send\",\"to\":\"x\",\"json\":NaN}",
    ];
    for c in cases {
        assert_eq!(
            err_with(c, MAX),
            (ErrorKind::Malformed, None),
            "{:?}",
            String::from_utf8_lossy(c)
        );
    }
    // The ref is echoed if it was read before the fault.
    assert_eq!(
        err(r#"{"ref":"early","type":"send","to":"x","body":"#),
        (ErrorKind::Malformed, r("early"))
    );
    assert_eq!(
        err(r#"{"type":"send","to":"x","body":"" "ref":"late"}"#),
        (ErrorKind::Malformed, None)
    );
    // A number beyond a double where a string is read (documented).
    assert_eq!(
        err(r#"{"ref":"n","type":1e400}"#),
        (ErrorKind::Malformed, r("n"))
    );
}

#[test]
fn not_an_object() {
    // A number beyond a double is valid JSON, and not an object either.
    for c in [
        "\n-1e999 ",
        "[]",
        "[{\"type\":\"clients\"}]",
        "\"send\"",
        "1",
        "null",
        " true ",
    ] {
        assert_eq!(err(c), (ErrorKind::NotAnObject, None), "{c}");
    }
}

#[test]
fn type_and_fields() {
    let cases = [
        (
            r#"{"ref":"a","to":"x","body":""}"#,
            ErrorKind::MissingField("type"),
        ),
        (r#"{"ref":"a","type":"Send"}"#, ErrorKind::UnknownType),
        (r#"{"ref":"a","type":""}"#, ErrorKind::UnknownType),
        (r#"{"ref":"a","type":"receive"}"#, ErrorKind::UnknownType),
        (
            r#"{"ref":"a","type":null}"#,
            ErrorKind::InvalidField("type"),
        ),
        (
            r#"{"ref":"a","type":["send"]}"#,
            ErrorKind::InvalidField("type"),
        ),
        (
            r#"{"ref":"a","type":"send","body":""}"#,
            ErrorKind::MissingField("to"),
        ),
        (
            r#"{"ref":"a","type":"send","to":"x"}"#,
            ErrorKind::MissingField("body"),
        ),
        (
            r#"{"ref":"a","type":"send","to":7,"body":""}"#,
            ErrorKind::InvalidField("to"),
        ),
        (
            r#"{"ref":"a","type":"send","to":"x","body":7}"#,
            ErrorKind::InvalidField("body"),
        ),
        (
            r#"{"ref":"a","type":"send","to":"x","body":null}"#,
            ErrorKind::InvalidField("body"),
        ),
        (
            r#"{"ref":"a","type":"send","to":"x","body_b64":{}}"#,
            ErrorKind::InvalidField("body_b64"),
        ),
        (
            r#"{"ref":"a","type":"send","to":"x","body":"","json":1}"#,
            ErrorKind::ConflictingFields,
        ),
        (
            r#"{"ref":"a","type":"send","to":"x","body":"","body_b64":""}"#,
            ErrorKind::ConflictingFields,
        ),
        (
            r#"{"ref":"a","type":"send","to":"x","body_b64":"","json":null}"#,
            ErrorKind::ConflictingFields,
        ),
        (
            r#"{"ref":"a","type":"send","type":"send","to":"x","body":""}"#,
            ErrorKind::DuplicateField("type"),
        ),
        (
            r#"{"ref":"a","type":"send","to":"x","to":"y","body":""}"#,
            ErrorKind::DuplicateField("to"),
        ),
        (
            r#"{"ref":"a","type":"send","to":"x","body":"","body":""}"#,
            ErrorKind::DuplicateField("body"),
        ),
        (
            r#"{"ref":"a","type":"send","to":"x","json":1,"json":2}"#,
            ErrorKind::DuplicateField("json"),
        ),
        (
            r#"{"ref":"a","type":"send","to":"x","body":7,"body":""}"#,
            ErrorKind::DuplicateField("body"),
        ),
    ];
    for (msg, kind) in cases {
        assert_eq!(err(msg), (kind, r("a")), "{msg}");
    }
}

/// `to` is checked with the HTTP path's own rule (`auth::valid_id`).
#[test]
fn recipients() {
    let longest = "a".repeat(64);
    let msg = format!(r#"{{"type":"send","to":"{longest}","body":""}}"#);
    assert_eq!(send(&msg).0, longest);
    let too_long = "a".repeat(65);
    for to in [
        "",
        too_long.as_str(),
        "a b",
        "a/b",
        "é",
        "a\\u0000",
        "..%2F",
    ] {
        assert!(!crate::auth::valid_id(&to.replace("\\u0000", "\0")));
        let msg = format!(r#"{{"type":"send","to":"{to}","body":"","ref":"t"}}"#);
        assert_eq!(err(&msg), (ErrorKind::InvalidRecipient, r("t")), "{to:?}");
    }
}

/// `--max-message` on the decoded body (`body`, `body_b64`) and on the JSON
/// value as sent (`json`): exactly the limit passes, one byte more does not.
#[test]
fn body_limits() {
    let max = 12;
    let parse_at = |msg: &str| match parse(msg.as_bytes(), max) {
        Ok(Command::Send { body, .. }) => Ok(body.bytes.len()),
        Ok(_) => Ok(usize::MAX),
        Err(e) => Err(e.kind()),
    };
    let too_large = |msg: &str| {
        (
            err_with(msg.as_bytes(), max),
            parse(msg.as_bytes(), max)
                .map_err(|e| (e.code(), e.status()))
                .err(),
        )
    };
    let send_of =
        |field: &str, v: &str| format!(r#"{{"type":"send","to":"x","{field}":{v},"ref":"L"}}"#);
    let at = send_of("body", &format!("\"{}\"", "é".repeat(6)));
    assert_eq!(parse_at(&at), Ok(12));
    // Escapes count as the bytes they stand for.
    let at = send_of("body", &format!("\"{}\"", "\\n".repeat(12)));
    assert_eq!(parse_at(&at), Ok(12));
    let at = send_of("body_b64", &format!("\"{}\"", STANDARD.encode([0xff; 12])));
    assert_eq!(parse_at(&at), Ok(12));
    let at = send_of("json", "[1, 2, 3, 4]");
    assert_eq!(parse_at(&at), Ok(9));
    for over in [
        send_of("body", &format!("\"{}x\"", "é".repeat(6))),
        send_of("body", &format!("\"{}\"", "\\n".repeat(13))),
        send_of("body_b64", &format!("\"{}\"", STANDARD.encode([0xff; 13]))),
        send_of("body_b64", &format!("\"{}\"", STANDARD.encode([0xff; 14]))),
        send_of("body_b64", &format!("\"{}\"", STANDARD.encode([0xff; 15]))),
        send_of("json", "[1, 2, 3, 4 ]"),
    ] {
        let ((kind, ref_), answer) = too_large(&over);
        assert_eq!(
            (kind, ref_),
            (ErrorKind::TooLarge { limit: max }, r("L")),
            "{over}"
        );
        assert_eq!(answer, Some(("payload_too_large", 413)), "{over}");
    }
}

/// The codes (and statuses) of faults the HTTP send path has too are its own.
#[test]
fn codes_are_the_http_paths() {
    use crate::proto::request::RequestError;
    use crate::proto::route::RouteError;
    let e = parse(br#"{"type":"send","to":"","body":""}"#, MAX).expect_err("refused");
    assert_eq!(
        (e.code(), e.status()),
        (RouteError::InvalidRecipient.code(), 400)
    );
    assert_eq!(e.code(), "invalid_recipient");
    assert_eq!(e.message(), RouteError::InvalidRecipient.message(""));
    let e = parse(br#"{"type":"send","to":"x","body":"ab"}"#, 1).expect_err("refused");
    let http = RequestError::TooLarge { limit: 1 };
    assert_eq!(
        (e.code(), e.status(), e.message()),
        (http.code(), http.status(), http.message())
    );
}

/// Every fault's error event: valid JSON with the event name, the ref (if
/// any), the code and a message.
#[test]
fn error_events() {
    let cases: [(&str, &str); 13] = [
        ("{", "malformed_json"),
        ("[]", "not_an_object"),
        (r#"{"ref":"1","type":"x"}"#, "unknown_type"),
        (r#"{"ref":"1"}"#, "missing_field"),
        (
            r#"{"ref":"1","type":"clients","type":"clients"}"#,
            "duplicate_field",
        ),
        (
            r#"{"ref":"1","type":"send","to":"x","body":"","json":1}"#,
            "conflicting_fields",
        ),
        (
            r#"{"ref":"1","type":"clients","to":"x"}"#,
            "unexpected_field",
        ),
        (r#"{"ref":"1","type":7}"#, "invalid_field"),
        (
            r#"{"ref":"1","type":"send","to":"x","body_b64":"!"}"#,
            "bad_base64",
        ),
        (
            r#"{"ref":"1","type":"send","to":"","body":""}"#,
            "invalid_recipient",
        ),
        (
            r#"{"ref":"1","type":"send","to":"x","body":"0123456789abcdef"}"#,
            "payload_too_large",
        ),
        (r#"{"ref":"\"\n","type":"send","to":"x"}"#, "missing_field"),
        (
            &format!(r#"{{"ref":"{}","type":"send"}}"#, "r".repeat(200)),
            "ref_too_long",
        ),
    ];
    for (msg, code) in cases {
        let e = parse(msg.as_bytes(), 10).expect_err("refused");
        assert_eq!(e.code(), code, "{msg}");
        let mut out = b"prefix".to_vec();
        e.encode(&mut out);
        assert!(out.starts_with(b"prefix"));
        let v: serde_json::Value = serde_json::from_slice(&out[6..]).expect("valid JSON");
        assert_eq!(v["event"], "error", "{msg}");
        assert_eq!(v["error"], code, "{msg}");
        assert_eq!(v["message"], e.message(), "{msg}");
        match e.ref_() {
            Some(r) => assert_eq!(v["ref"], r, "{msg}"),
            None => assert!(v.get("ref").is_none(), "{msg}"),
        }
        assert_eq!(
            v.as_object().map(|o| o.len()),
            Some(3 + e.ref_().is_some() as usize)
        );
    }
}
