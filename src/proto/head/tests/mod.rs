//! Unit tests of the request-head reader ([`parse_head`], [`query_param`]):
//! limits, leniencies, errors, and answers that do not depend on how the
//! input is split.

use super::*;

mod headers;
mod limits;
mod malformed;
mod request_line;

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
