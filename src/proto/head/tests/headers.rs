//! Header fields: `Host`, `Connection`, the body's framing (`Content-Length`,
//! `Transfer-Encoding`), the token and `Last-Event-ID`, `Origin` and
//! `Upgrade`, `Expect`, the JSON content type.

use super::*;

#[test]
fn host_header() {
    let h = ok("GET / HTTP/1.1\r\nhost:  gw.example:80 \r\n\r\n");
    assert_eq!(h.host(), Some("gw.example:80"));
    // HTTP/1.0 may omit it.
    assert_eq!(ok("GET / HTTP/1.0\r\n\r\n").host(), None);
    assert_eq!(ok("GET / HTTP/1.0\r\nHost: a\r\n\r\n").host(), Some("a"));
    // RFC 9112 3.2: missing on HTTP/1.1, or repeated, is 400.
    let missing = HeadError::Malformed("missing Host header");
    assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), missing);
    assert_eq!(err(b"GET / HTTP/1.1\r\nHostx: a\r\n\r\n"), missing);
    assert_eq!(missing.status(), 400);
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\nHOST: a\r\n\r\n"),
        HeadError::Malformed("duplicate Host header")
    );
    assert_eq!(
        err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
        HeadError::Malformed("duplicate Host header")
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: \xff\r\n\r\n"),
        HeadError::Malformed("Host header is not valid UTF-8")
    );
    // An empty Host is present (RFC 9110 7.2 allows it for URIs without authority).
    assert_eq!(ok("GET / HTTP/1.1\r\nHost:\r\n\r\n").host(), Some(""));
}

#[test]
fn connection_tokens() {
    assert!(ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").close);
    assert!(ok("GET / HTTP/1.1\r\nHost: h\r\nconnection: Upgrade, CLOSE\r\n\r\n").close);
    assert!(
        ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n")
            .close
    );
    assert!(!ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n").close);
    assert!(!ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n").close);
}

#[test]
fn content_length() {
    let cl = |v: &str| {
        let input = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {v}\r\n\r\n");
        match check_prefixes(input.as_bytes(), &Limits::default()) {
            Ok(Parse::Complete(h)) => Ok(h.content_length),
            Ok(Parse::Partial) => panic!("partial"),
            Err(e) => Err(e),
        }
    };
    assert_eq!(cl("0"), Ok(Some(0)));
    assert_eq!(cl("5"), Ok(Some(5)));
    assert_eq!(cl("  5  "), Ok(Some(5)));
    assert_eq!(cl("005"), Ok(Some(5)));
    assert_eq!(cl("5, 5"), Ok(Some(5)));
    assert_eq!(cl("5,5,5"), Ok(Some(5)));
    assert_eq!(cl("18446744073709551615"), Ok(Some(u64::MAX)));
    for bad in [
        "+5",
        "-1",
        "5 5",
        "5a",
        "0x5",
        "",
        "5,",
        "5, 6",
        "18446744073709551616",
        "99999999999999999999999",
        "5.0",
        "\u{0665}",
    ] {
        assert_eq!(cl(bad), Err(HeadError::BadContentLength), "{bad:?}");
    }
    let h = ok("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n");
    assert_eq!(h.content_length, Some(7));
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\nCONTENT-LENGTH: 8\r\n\r\n"),
        HeadError::BadContentLength
    );
    assert_eq!(ok("GET / HTTP/1.1\r\nHost: h\r\n\r\n").content_length, None);
}

#[test]
fn transfer_encoding() {
    let h = ok("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert!(h.chunked);
    assert_eq!(h.content_length, None);
    assert!(ok("POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding:  Chunked \r\n\r\n").chunked);
    assert!(ok("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , chunked\r\n\r\n").chunked);
    assert!(!ok("POST / HTTP/1.1\r\nHost: h\r\n\r\n").chunked);
    for bad in [
        "gzip",
        "gzip, chunked",
        "chunked, gzip",
        "chunked, chunked",
        "identity",
        "",
        "chunkedx",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {bad}\r\n\r\n");
        assert_eq!(
            err(input.as_bytes()),
            HeadError::UnsupportedTransferEncoding,
            "{bad:?}"
        );
    }
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
        HeadError::UnsupportedTransferEncoding
    );
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        HeadError::ConflictingLength
    );
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
        HeadError::ConflictingLength
    );
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n"),
        HeadError::ConflictingLength
    );
    assert_eq!(
        err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request")
    );
}

#[test]
fn auth_and_last_event_id() {
    let h = ok(
        "GET / HTTP/1.1\r\nHost: h\r\nauthorization:   Bearer a.b.c  \r\nlast-event-id: \r\n\r\n",
    );
    assert_eq!(h.authorization(), Some("Bearer a.b.c"));
    assert_eq!(h.last_event_id(), Some(""));
    let h = ok("GET / HTTP/1.1\r\nHost: h\r\nLast-Event-ID: \u{e9}t\u{e9}\r\n\r\n");
    assert_eq!(h.last_event_id(), Some("\u{e9}t\u{e9}"));
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nAuthorization: a\r\n\r\n"),
        HeadError::Malformed("duplicate Authorization header")
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nLast-Event-ID: 1\r\nlast-event-id: 2\r\n\r\n"),
        HeadError::Malformed("duplicate Last-Event-ID header")
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: \xff\xfe\r\n\r\n"),
        HeadError::Malformed("Authorization header is not valid UTF-8")
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nLast-Event-ID: \xc3\r\n\r\n"),
        HeadError::Malformed("Last-Event-ID header is not valid UTF-8")
    );
    // Non-UTF-8 in headers we ignore is fine.
    assert_eq!(
        ok("GET / HTTP/1.1\r\nHost: h\r\nX: \u{e9}\r\n\r\n").authorization(),
        None
    );
}

#[test]
fn origin_and_upgrade() {
    // Every combination of the text parts keeps each in its place.
    for auth in [None, Some("Bearer t"), Some("")] {
        for lei in [None, Some("e-1"), Some("")] {
            for origin in [None, Some("http://127.0.0.1:8000"), Some("")] {
                let mut raw = "GET /v1/receive?x=1 HTTP/1.1\r\nHost: gw:1\r\n".to_string();
                if let Some(o) = origin {
                    raw.push_str(&format!("Origin: {o}\r\n"));
                }
                if let Some(l) = lei {
                    raw.push_str(&format!("Last-Event-ID: {l}\r\n"));
                }
                if let Some(a) = auth {
                    raw.push_str(&format!("Authorization: {a}\r\n"));
                }
                raw.push_str("\r\n");
                let h = ok(&raw);
                assert_eq!(
                    (
                        h.path(),
                        h.query(),
                        h.authorization(),
                        h.last_event_id(),
                        h.origin()
                    ),
                    ("/v1/receive", Some("x=1"), auth, lei, origin),
                    "{raw:?}"
                );
                assert!(!h.same_origin() && !h.websocket);
                assert_eq!(h.host(), Some("gw:1"), "{raw:?}");
            }
        }
    }
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nOrigin: http://a\r\norigin: http://a\r\n\r\n"),
        HeadError::Malformed("duplicate Origin header")
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nOrigin: http://\xff\r\n\r\n"),
        HeadError::Malformed("Origin header is not valid UTF-8")
    );
    // Same origin: the browser says so, or Origin names the Host.
    let same = |extra: &str| {
        let host = if extra.contains("Host:") {
            ""
        } else {
            "Host: other\r\n"
        };
        ok(&format!("GET / HTTP/1.1\r\n{host}{extra}\r\n")).same_origin()
    };
    assert!(same(
        "Origin: http://gw.example:8080\r\nHost: GW.example:8080\r\n"
    ));
    assert!(same("Host: gw\r\nOrigin: https://gw\r\n"));
    assert!(same("Origin: http://a\r\nSec-Fetch-Site: same-origin\r\n"));
    assert!(!same("Origin: http://gw:8000\r\nHost: gw:8080\r\n"));
    assert!(!same("Origin: http://a\r\nSec-Fetch-Site: same-site\r\n"));
    assert!(!same("Origin: null\r\nHost: null\r\n"));
    assert!(!same("Origin: http://a\r\n"));
    assert!(!same("Host: a\r\n"));
    assert!(!same("Origin: http://\r\nHost: \r\n"));
    // Upgrade: websocket, alone or in a list, in any case.
    let ws = |v: &str| {
        ok(&format!(
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: {v}\r\n\r\n"
        ))
        .websocket
    };
    assert!(ws("websocket"));
    assert!(ws("WebSocket"));
    assert!(ws("h2c, websocket"));
    assert!(!ws("h2c"));
    assert!(!ws("websockets"));
    assert_eq!(
        ok("OPTIONS /v1/x HTTP/1.1\r\nHost: h\r\n\r\n").method,
        Method::Options
    );
}

#[test]
fn expect_continue_only_in_http_1_1() {
    let h = ok(
        "POST /v1/send/a HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n",
    );
    assert!(h.expect_continue);
    let h = ok("POST /v1/send/a HTTP/1.1\r\nHost: h\r\nExpect:  100-continue \r\n\r\n");
    assert!(h.expect_continue);
    let h = ok("POST /v1/send/a HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
    assert!(!h.expect_continue);
    let h = ok("POST /v1/send/a HTTP/1.1\r\nHost: h\r\nExpect: something-else\r\n\r\n");
    assert!(!h.expect_continue);
    assert!(!ok("POST /v1/send/a HTTP/1.1\r\nHost: h\r\n\r\n").expect_continue);
}

#[test]
fn json_content_type() {
    for (value, json) in [
        ("application/json", true),
        ("Application/JSON", true),
        ("application/json; charset=utf-8", true),
        (" application/json ;charset=UTF-8", true),
        ("application/jsonx", false),
        ("text/plain", false),
        ("application/x-www-form-urlencoded", false),
        ("", false),
    ] {
        let h = ok(&format!(
            "POST /v1/send/a HTTP/1.1\r\nHost: h\r\nContent-Type: {value}\r\n\r\n"
        ));
        assert_eq!(h.json, json, "{value:?}");
    }
    assert!(!ok("POST /v1/send/a HTTP/1.1\r\nHost: h\r\n\r\n").json);
}
