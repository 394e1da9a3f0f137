//! The limits: request line length, head size, header count.

use super::*;

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
