//! The request line: methods, targets (and their query parameters), versions,
//! leading empty lines.

use super::*;

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
