//! Unit tests of the request-head reader ([`parse_head`], [`query_param`]):
//! limits, leniencies, errors, and answers that do not depend on how the
//! input is split.

use super::*;

fn lim(max_request_line: usize, max_head: usize, max_headers: usize) -> Limits {
    Limits {
        max_request_line,
        max_head,
        max_headers,
    }
}

/// Parses `input` whole and checks every prefix: a prefix must give
/// `Partial` or the very error the whole input gives (never a different
/// error, never a `Complete`). Returns the result for the whole input.
fn check_prefixes(input: &[u8], limits: &Limits) -> Result<Parse<RequestHead>, HeadError> {
    let full = parse_head(input, limits);
    let end = match &full {
        Ok(Parse::Complete(h)) => h.head_len,
        _ => input.len(),
    };
    for n in 0..end {
        let r = parse_head(&input[..n], limits);
        match (&r, &full) {
            (Ok(Parse::Partial), _) => {}
            (Err(e), Err(f)) if e == f => {}
            _ => panic!(
                "prefix {n} of {:?}: got {r:?}, whole input gives {full:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }
    // Appending bytes after a complete head or an error changes nothing.
    if !matches!(full, Ok(Parse::Partial)) {
        let mut longer = input.to_vec();
        longer.extend_from_slice(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(parse_head(&longer, limits), full, "with bytes appended");
    }
    full
}

fn ok(input: &str) -> RequestHead {
    match check_prefixes(input.as_bytes(), &Limits::default()) {
        Ok(Parse::Complete(h)) => h,
        other => panic!("{input:?}: {other:?}"),
    }
}

fn err(input: &[u8]) -> HeadError {
    err_with(input, &Limits::default())
}

fn err_with(input: &[u8], limits: &Limits) -> HeadError {
    match check_prefixes(input, limits) {
        Err(e) => e,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

#[test]
fn simple_get() {
    let input = "GET /events?token=abc&x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\nLast-Event-ID: 42\r\n\r\nBODY";
    let h = ok(input);
    assert_eq!(
        (h.method, h.path(), h.query(), h.version_minor),
        (Method::Get, "/events", Some("token=abc&x=1"), 1)
    );
    assert_eq!((h.content_length, h.chunked, h.close), (None, false, false));
    assert_eq!(
        (h.authorization(), h.last_event_id(), h.head_len),
        (Some("Bearer t"), Some("42"), input.len() - 4)
    );
    // Each part on its own, and in other combinations of present / absent.
    let h = ok("GET /a HTTP/1.1\r\nHost: h\r\nLast-Event-ID: 7\r\n\r\n");
    assert_eq!(
        (h.path(), h.query(), h.authorization(), h.last_event_id()),
        ("/a", None, None, Some("7"))
    );
    let h = ok("GET /a? HTTP/1.1\r\nHost: h\r\nAuthorization: x\r\n\r\n");
    assert_eq!(
        (h.path(), h.query(), h.authorization(), h.last_event_id()),
        ("/a", Some(""), Some("x"), None)
    );
    let h = ok("GET /a?q HTTP/1.1\r\nHost: h\r\nAuthorization:\r\nLast-Event-ID:\r\n\r\n");
    assert_eq!(
        (h.path(), h.query(), h.authorization(), h.last_event_id()),
        ("/a", Some("q"), Some(""), Some(""))
    );
}

#[test]
fn methods() {
    assert_eq!(ok("GET / HTTP/1.1\r\nHost: h\r\n\r\n").method, Method::Get);
    assert_eq!(
        ok("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n").method,
        Method::Head
    );
    assert_eq!(
        ok("POST / HTTP/1.1\r\nHost: h\r\n\r\n").method,
        Method::Post
    );
    assert_eq!(
        ok("PUT / HTTP/1.1\r\nHost: h\r\n\r\n").method,
        Method::Other
    );
    assert_eq!(
        ok("get / HTTP/1.1\r\nHost: h\r\n\r\n").method,
        Method::Other
    );
    assert_eq!(
        ok("Post / HTTP/1.1\r\nHost: h\r\n\r\n").method,
        Method::Other
    );
    assert_eq!(
        ok("X-CUSTOM! / HTTP/1.1\r\nHost: h\r\n\r\n").method,
        Method::Other
    );
}

#[test]
fn path_and_query() {
    let h = ok("GET /a/b HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((h.path(), h.query()), ("/a/b", None));
    let h = ok("GET /a?b?c HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((h.path(), h.query()), ("/a", Some("b?c")));
    let h = ok("GET /? HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((h.path(), h.query()), ("/", Some("")));
    let h = ok("GET /%20x HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(h.path(), "/%20x");
    let h = ok("GET /caf\u{e9} HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(h.path(), "/caf\u{e9}");
}

#[test]
fn target_forms() {
    let e = HeadError::Malformed(
        "request target must be origin-form (/path) or absolute-form (http://host/path)",
    );
    assert_eq!(err(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), e);
    assert_eq!(err(b"CONNECT a:443 HTTP/1.1\r\nHost: h\r\n\r\n"), e);
    assert_eq!(err(b"GET ftp://a/x HTTP/1.1\r\nHost: h\r\n\r\n"), e);
    assert_eq!(err(b"GET http:/a/x HTTP/1.1\r\nHost: h\r\n\r\n"), e);
    // Absolute form (RFC 9112 3.2.2): routed by its path; its authority is the host.
    let h = ok("POST http://gw.example:8080/v1/send/x?a=b HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(
        (h.path(), h.query(), h.host()),
        ("/v1/send/x", Some("a=b"), Some("gw.example:8080"))
    );
    let h = ok("GET HTTPS://[::1]:9 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(
        (h.path(), h.query(), h.host()),
        ("/", None, Some("[::1]:9"))
    );
    let h = ok("GET http://a?x=1 HTTP/1.0\r\n\r\n");
    assert_eq!(
        (h.path(), h.query(), h.host()),
        ("/", Some("x=1"), Some("a"))
    );
    let h =
        ok("GET http://a/p HTTP/1.1\r\nHost: a\r\nAuthorization: t\r\nLast-Event-ID: 5\r\n\r\n");
    assert_eq!(
        (h.path(), h.authorization(), h.last_event_id(), h.host()),
        ("/p", Some("t"), Some("5"), Some("a"))
    );
    assert_eq!(
        err(b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n"),
        HeadError::Malformed("empty authority in request target")
    );
    assert_eq!(
        err(b"GET http://u:p@a/x HTTP/1.1\r\nHost: h\r\n\r\n"),
        HeadError::Malformed("userinfo in request target")
    );
    assert_eq!(
        err(b"GET http://a#f HTTP/1.1\r\nHost: h\r\n\r\n"),
        HeadError::Malformed("fragment in request target")
    );
    // The Host header is still required with an absolute-form target.
    assert_eq!(
        err(b"GET http://a/ HTTP/1.1\r\n\r\n"),
        HeadError::Malformed("missing Host header")
    );
}

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
fn versions() {
    let h = ok("GET / HTTP/1.0\r\n\r\n");
    assert_eq!((h.version_minor, h.close), (0, true));
    let h = ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!((h.version_minor, h.close), (0, false));
    let h = ok("GET / HTTP/1.0\r\nConnection: Keep-Alive, close\r\n\r\n");
    assert!(h.close);
    let h = ok("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((h.version_minor, h.close), (1, false));
    for v in [
        "HTTP/2.0", "HTTP/2", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0", "HTTP/1.9",
    ] {
        let input = format!("GET / {v}\r\n\r\n");
        assert_eq!(err(input.as_bytes()), HeadError::UnsupportedVersion, "{v}");
    }
    for v in [
        "http/1.1",
        "HTTP/1.x",
        "HTTP/x.1",
        "HTTP/11.1",
        "HTTX/1.1",
        "HTTP/1.1 ",
    ] {
        let input = format!("GET / {v}\r\n\r\n");
        assert!(
            matches!(err(input.as_bytes()), HeadError::Malformed(_)),
            "{v}"
        );
    }
    assert_eq!(
        err(b"GET /\r\n\r\n"),
        HeadError::Malformed("missing HTTP version")
    );
    assert_eq!(
        err(b"GET / HTTP/1.1x\r\n\r\n"),
        HeadError::Malformed("invalid line ending")
    );
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
fn leading_empty_lines_are_skipped() {
    let input = "\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    let h = ok(input);
    assert_eq!(h.head_len, input.len());
    // They count towards max_head but not towards max_request_line.
    let limits = lim(14, 1000, 8);
    assert!(matches!(
        check_prefixes(b"\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", &limits),
        Ok(Parse::Complete(_))
    ));
    let limits = lim(100, 10, 8);
    assert_eq!(
        err_with(b"\r\n\r\n\r\n\r\n\r\n\r\n", &limits),
        HeadError::HeadTooLarge
    );
    assert_eq!(
        err(b"\r GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        HeadError::Malformed("invalid line ending")
    );
}

/// The heads of `bare_lf_is_refused_wherever_it_is`, each with one or more
/// bare LFs; `check_prefixes` tries every split point.
const BARE_LF_HEADS: &[&[u8]] = &[
    // In the request line.
    b"GET / HTTP/1.1\nHost: a\r\n\r\n",
    // In a header line.
    b"GET / HTTP/1.1\r\nHost: a\nAuthorization: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: x\n\r\n",
    // As the blank line ending the head.
    b"GET / HTTP/1.1\r\nHost: a\r\n\n",
    // Everything bare LF.
    b"GET / HTTP/1.1\nHost: a\nAuthorization: x\n\n",
    // Mixed: CRLF lines, then one bare LF.
    b"POST /v1/send/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\nX: y\r\n\r\nhi",
    // A leading empty line.
    b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    // CR LF LF: the second LF is bare.
    b"GET / HTTP/1.1\r\n\nHost: a\r\n\r\n",
];

#[test]
fn bare_lf_is_refused_wherever_it_is() {
    for input in BARE_LF_HEADS {
        assert_eq!(
            err(input),
            HeadError::BareLf,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let e = HeadError::BareLf;
    assert_eq!((e.status(), e.code()), (400, "malformed_request"));
    assert!(
        e.message().contains("line endings must be CRLF"),
        "{}",
        e.message()
    );
    // A syntax error before the bare LF is reported as such.
    assert_eq!(
        err(b"G@T / HTTP/1.1\nHost: a\n\n"),
        HeadError::Malformed("invalid method token")
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: a\rb\n\n"),
        HeadError::Malformed("invalid header field value")
    );
    // A bare LF after the head (in the body, or the next request) is not the head's.
    let h = ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\na\nb\n\n");
    assert_eq!(h.head_len, 47);
}

#[test]
fn crlf_split_between_cr_and_lf_is_not_a_bare_lf() {
    let input: &[u8] = b"\r\nGET /a HTTP/1.1\r\nHost: a\r\nAuthorization: x\r\n\r\n";
    // Every prefix (in particular those ending in the CR of a CRLF) is
    // Partial and the whole head parses: check_prefixes asserts both.
    let h = ok(std::str::from_utf8(input).unwrap_or_default());
    assert_eq!(h.head_len, input.len());
    for n in 0..input.len() {
        if input[..n].ends_with(b"\r") {
            assert_eq!(
                parse_head(&input[..n], &Limits::default()),
                Ok(Parse::Partial)
            );
        }
    }
}

#[test]
fn request_line_limit() {
    // "GET /aaaa HTTP/1.1" is 18 bytes.
    let input = b"GET /aaaa HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(matches!(
        check_prefixes(input, &lim(18, 1000, 8)),
        Ok(Parse::Complete(_))
    ));
    assert_eq!(err_with(input, &lim(17, 1000, 8)), HeadError::UriTooLong);
    // A bare LF right after the longest allowed line is the error; one byte
    // earlier the line is already too long.
    let lf_input = b"GET /aaaa HTTP/1.1\nHost: x\n\n";
    assert_eq!(err_with(lf_input, &lim(18, 1000, 8)), HeadError::BareLf);
    assert_eq!(err_with(lf_input, &lim(17, 1000, 8)), HeadError::UriTooLong);
    // Incomplete request line: decided as soon as it is too long.
    let long = b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_eq!(
        parse_head(&long[..18], &lim(18, 1000, 8)),
        Ok(Parse::Partial)
    );
    assert_eq!(
        parse_head(&long[..19], &lim(18, 1000, 8)),
        Err(HeadError::UriTooLong)
    );
    // A CR right at the limit may still be the end of the line.
    assert_eq!(
        parse_head(b"GET /aaaa HTTP/1.1\r", &lim(18, 1000, 8)),
        Ok(Parse::Partial)
    );
    // Long line with a syntax error before the limit: the syntax error wins.
    let bad = b"G\0T /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(
        err_with(bad, &lim(18, 1000, 8)),
        HeadError::Malformed("invalid method token")
    );
    // ... and after the limit: the limit wins.
    let bad = b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\0aaaaaaaaaaaa HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(err_with(bad, &lim(18, 1000, 8)), HeadError::UriTooLong);
    // The default limit.
    let mut big = b"GET /".to_vec();
    big.resize(8 * 1024 - 9, b'a');
    big.extend_from_slice(b" HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(matches!(
        parse_head(&big, &Limits::default()),
        Ok(Parse::Complete(_))
    ));
    big.insert(5, b'a');
    assert_eq!(
        parse_head(&big, &Limits::default()),
        Err(HeadError::UriTooLong)
    );
}

#[test]
fn head_size_limit() {
    let input = b"GET / HTTP/1.1\r\nHost: abc\r\n\r\n"; // 29 bytes
    assert_eq!(input.len(), 29);
    assert!(matches!(
        check_prefixes(input, &lim(100, 29, 8)),
        Ok(Parse::Complete(_))
    ));
    assert_eq!(err_with(input, &lim(100, 28, 8)), HeadError::HeadTooLarge);
    // Complete within the limit, body bytes beyond it don't matter.
    let mut with_body = input.to_vec();
    with_body.extend_from_slice(&[b'x'; 100]);
    assert!(matches!(
        parse_head(&with_body, &lim(100, 29, 8)),
        Ok(Parse::Complete(_))
    ));
    // Incomplete head: decided once the buffer is over the limit.
    assert_eq!(
        parse_head(&input[..20], &lim(100, 20, 8)),
        Ok(Parse::Partial)
    );
    assert_eq!(
        parse_head(&input[..21], &lim(100, 20, 8)),
        Err(HeadError::HeadTooLarge)
    );
    // A syntax error past the limit is not looked at.
    assert_eq!(
        err_with(
            b"GET / HTTP/1.1\r\nHost: abc\r\nX\0: y\r\n\r\n",
            &lim(100, 28, 8)
        ),
        HeadError::HeadTooLarge
    );
    assert_eq!(
        err_with(
            b"GET / HTTP/1.1\r\nHost: abc\r\nX\0: y\r\n\r\n",
            &lim(100, 29, 8)
        ),
        HeadError::Malformed("invalid header field name")
    );
    // A syntax error before the limit wins.
    assert_eq!(
        err_with(
            b"GET / HTTP/1.1\r\nHost: h\r\nHo\0st: abcdefghijklmnopqrstuvwxyz\r\n\r\n",
            &lim(100, 30, 8)
        ),
        HeadError::Malformed("invalid header field name")
    );
}

#[test]
fn header_count_limit() {
    // Host is one of the fields.
    let mut input = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
    for i in 0..3 {
        input.push_str(&format!("X-{i}: v\r\n"));
    }
    input.push_str("\r\n");
    assert!(matches!(
        check_prefixes(input.as_bytes(), &lim(100, 1000, 4)),
        Ok(Parse::Complete(_))
    ));
    assert_eq!(
        err_with(input.as_bytes(), &lim(100, 1000, 3)),
        HeadError::HeadTooLarge
    );
    assert_eq!(
        err_with(input.as_bytes(), &lim(100, 1000, 0)),
        HeadError::HeadTooLarge
    );
    assert!(matches!(
        check_prefixes(b"GET / HTTP/1.0\r\n\r\n", &lim(100, 1000, 0)),
        Ok(Parse::Complete(_))
    ));

    // Above the stack array size.
    let mut input = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
    for i in 0..199 {
        input.push_str(&format!("X-{i}: v\r\n"));
    }
    input.push_str("\r\n");
    assert!(matches!(
        parse_head(input.as_bytes(), &lim(100, 100_000, 200)),
        Ok(Parse::Complete(_))
    ));
    assert_eq!(
        parse_head(input.as_bytes(), &lim(100, 100_000, 199)),
        Err(HeadError::HeadTooLarge)
    );
    assert_eq!(
        parse_head(input.as_bytes(), &lim(100, 100_000, 128)),
        Err(HeadError::HeadTooLarge)
    );
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
fn malformed() {
    let m = HeadError::Malformed;
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n"),
        m("invalid header field value")
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nX\0: ab\r\n\r\n"),
        m("invalid header field name")
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nX : ab\r\n\r\n"),
        m("invalid header field name")
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\n X: ab\r\n\r\n"),
        m("invalid header field name")
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n"),
        m("invalid header field name")
    );
    assert_eq!(
        err(b"GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n"),
        m("NUL byte in request target")
    );
    assert_eq!(
        err(b"GET /a\x7fb HTTP/1.1\r\nHost: h\r\n\r\n"),
        m("invalid byte in request target")
    );
    assert_eq!(
        err(b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n"),
        m("request target is not valid UTF-8")
    );
    assert_eq!(
        err(b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n"),
        m("empty request target")
    );
    assert_eq!(
        err(b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n"),
        m("invalid method token")
    );
    assert_eq!(
        err(b" GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        m("invalid method token")
    );
    assert_eq!(
        err(b"\0GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        m("invalid method token")
    );
    assert_eq!(err(b"GET\r\n\r\n"), m("invalid method token"));
    assert_eq!(err(b"GET / HTTP/1.1\r\r\n\r\n"), m("invalid line ending"));
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nX: y\r\n\rx"),
        m("invalid line ending")
    );
}

#[test]
fn partial_inputs() {
    let limits = Limits::default();
    for input in [
        "",
        "\r",
        "\r\n",
        "G",
        "GET",
        "GET ",
        "GET /x",
        "GET /x HTTP/1.",
        "GET / HTTP/1.1\r",
        "GET / HTTP/1.1\r\nHost: a\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\n\r",
    ] {
        assert_eq!(
            parse_head(input.as_bytes(), &limits),
            Ok(Parse::Partial),
            "{input:?}"
        );
    }
}

#[test]
fn error_codes() {
    let all = [
        (HeadError::UriTooLong, 414, "uri_too_long"),
        (HeadError::HeadTooLarge, 431, "headers_too_large"),
        (HeadError::Malformed("x y"), 400, "malformed_request"),
        (HeadError::BadContentLength, 400, "bad_content_length"),
        (HeadError::ConflictingLength, 400, "conflicting_length"),
        (
            HeadError::UnsupportedTransferEncoding,
            501,
            "unsupported_transfer_encoding",
        ),
        (
            HeadError::UnsupportedVersion,
            505,
            "http_version_not_supported",
        ),
    ];
    for (e, status, code) in all {
        assert_eq!(e.status(), status);
        assert_eq!(e.code(), code);
        assert!(!e.message().is_empty());
    }
    assert!(HeadError::Malformed("x y").message().contains("x y"));
}

#[test]
fn query_params() {
    assert_eq!(query_param("a=1&b=2", "b").as_deref(), Some("2"));
    assert_eq!(query_param("a=1&b=2", "c"), None);
    assert_eq!(query_param("a=1&a=2", "a").as_deref(), Some("1"));
    assert_eq!(query_param("flag&x=1", "flag").as_deref(), Some(""));
    assert_eq!(query_param("x=&y", "x").as_deref(), Some(""));
    assert_eq!(query_param("", "x"), None);
    assert_eq!(query_param("&&x=1&", "x").as_deref(), Some("1"));
    assert_eq!(query_param("x=a+b%20c%2B", "x").as_deref(), Some("a b c+"));
    assert_eq!(query_param("x=%C3%A9", "x").as_deref(), Some("\u{e9}"));
    assert_eq!(query_param("x=%c3%a9", "x").as_deref(), Some("\u{e9}"));
    assert_eq!(query_param("x=%ff", "x"), None);
    assert_eq!(query_param("x=%ff&x=ok", "x"), None);
    assert_eq!(query_param("x=100%&y=%zz%4", "x").as_deref(), Some("100%"));
    assert_eq!(query_param("x=100%&y=%zz%4", "y").as_deref(), Some("%zz%4"));
    assert_eq!(query_param("my%20key=v", "my key").as_deref(), Some("v"));
    assert_eq!(query_param("my+key=v", "my key").as_deref(), Some("v"));
    assert_eq!(query_param("x=a=b", "x").as_deref(), Some("a=b"));
    assert_eq!(query_param("X=1", "x"), None);
}

/// Deterministic pseudo-random mutations of valid heads: whatever the
/// outcome, no prefix may disagree with the whole input.
#[test]
fn mutated_heads_are_split_independent() {
    let seeds: [&[u8]; 4] = [
        b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"\r\nPOST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        b"HEAD /x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\nLast-Event-ID: 9\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
    ];
    let alphabet = b"\r\n \t:/?0aZ\0\x7f\xff\xc3.HTP12";
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..3000 {
        let mut input = seeds[round % seeds.len()].to_vec();
        for _ in 0..(next() % 4) {
            let pos = (next() as usize) % (input.len() + 1);
            let byte = alphabet[(next() as usize) % alphabet.len()];
            match next() % 3 {
                0 => input.insert(pos, byte),
                1 if pos < input.len() => input[pos] = byte,
                _ if pos < input.len() => {
                    input.remove(pos);
                }
                _ => {}
            }
        }
        let limits = lim(
            8 + (next() % 20) as usize,
            20 + (next() % 60) as usize,
            (next() % 4) as usize,
        );
        let _ = check_prefixes(&input, &limits);
        let _ = check_prefixes(&input, &Limits::default());
    }
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
