//! Malformed and partial heads: bare LFs, syntax errors and their codes,
//! inputs cut short, mutated heads.

use super::*;

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
