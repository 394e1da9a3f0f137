//! The `request` fuzz target.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------
// request
// ---------------------------------------------------------------------------

/// What a connection's request reader made of some input.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RequestOutcome {
    requests: Vec<Request>,
    error: Option<RequestError>,
    /// Total bytes consumed (only compared when there is no error).
    consumed: Option<usize>,
}

/// Feeds `pieces` to a fresh [`RequestReader`] the way the event loop does
/// (keep the unconsumed bytes, append new ones, call again while it makes
/// progress), collecting requests until an error or the end of the input.
pub(super) fn read_requests(pieces: &[&[u8]], limits: &Limits, max_body: usize) -> RequestOutcome {
    read_pieces(pieces, limits, max_body, false)
}

/// [`read_requests`] the way the server reads: while no input is buffered,
/// bytes go straight into an open `Content-Length` body
/// ([`RequestReader::body_target`]) and a piece that starts a request with
/// such a body is handed to it ([`RequestReader::begin_body`], here for
/// pieces of any length); the rest goes through the buffer. A request whose
/// body was completed that way comes out of a `feed` that consumes nothing.
pub(super) fn read_requests_direct(
    pieces: &[&[u8]],
    limits: &Limits,
    max_body: usize,
) -> RequestOutcome {
    read_pieces(pieces, limits, max_body, true)
}

/// [`read_requests`] (`direct` false) and [`read_requests_direct`].
fn read_pieces(pieces: &[&[u8]], limits: &Limits, max_body: usize, direct: bool) -> RequestOutcome {
    let mut reader = RequestReader::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut requests = Vec::new();
    let mut consumed = 0usize;
    for piece in pieces {
        let mut avail: &[u8] = piece;
        while direct && !avail.is_empty() && buf.is_empty() {
            if let Some((body, want)) = reader.body_target() {
                let k = want.min(avail.len());
                assert!(want > 0, "request: body_target offered no room");
                body.extend_from_slice(&avail[..k]);
                reader.body_received(k);
                consumed += k;
                avail = &avail[k..];
                continue;
            }
            if let Some(k) = reader.begin_body(avail, limits, max_body) {
                assert!(
                    k > 0 && k <= avail.len(),
                    "request: begin_body took {k} of {} bytes",
                    avail.len()
                );
                consumed += k;
                avail = &avail[k..];
                if !reader.body_complete() {
                    continue;
                }
            }
            break;
        }
        buf.extend_from_slice(avail);
        loop {
            // Only a body completed by direct reads comes out without input.
            let complete = direct && reader.body_complete();
            match reader.feed(&buf, limits, max_body) {
                Ok((n, req)) => {
                    assert!(
                        n <= buf.len(),
                        "request: consumed {n} of {} bytes",
                        buf.len()
                    );
                    buf.drain(..n);
                    consumed += n;
                    match req {
                        Some(r) => {
                            assert!(
                                n > 0 || complete,
                                "request: a request was produced without consuming input"
                            );
                            check_request(&r, max_body);
                            requests.push(r);
                        }
                        None if n == 0 => break,
                        None => {}
                    }
                }
                Err(e) => {
                    let _ = (e.status(), e.code(), e.message());
                    return RequestOutcome {
                        requests,
                        error: Some(e),
                        consumed: None,
                    };
                }
            }
        }
    }
    RequestOutcome {
        requests,
        error: None,
        consumed: Some(consumed),
    }
}

pub(super) fn check_request(r: &Request, max_body: usize) {
    assert!(
        r.body.len() <= max_body,
        "request: body of {} bytes with max_body {max_body}",
        r.body.len()
    );
    if !r.head.chunked {
        let declared = r.head.content_length.unwrap_or(0);
        assert!(
            r.body.len() as u64 == declared,
            "request: body of {} bytes, Content-Length {declared}",
            r.body.len()
        );
    }
}

/// Fuzzes [`RequestReader`], the per-connection request state machine (head,
/// then a Content-Length or chunked body, pipelined).
///
/// Layout: 4 limit bytes (as for `head`), a body-limit byte, a split count and
/// selectors, then the bytes the client sends.
///
/// Properties:
/// * The same sequence of requests, the same final error (if any) and the same
///   total consumed whether the input arrives whole, in the fuzzer-chosen
///   pieces, in those pieces read the server's way (bodies received straight
///   into their buffers, `begin_body`), or (inputs up to 512 bytes) byte by
///   byte.
/// * Every call consumes at most what it was given, and a request is never
///   produced without consuming bytes (no livelock).
/// * Bodies are at most `max_body`; a non-chunked body is exactly Content-Length.
/// * Total consumed is at most the input length.
pub fn request(data: &[u8]) {
    let mut inp = Input::new(data);
    let limits = head_limits(&mut inp);
    let max_body = body_limit(inp.byte());
    let selectors = inp.splits();
    let input = inp.rest();

    let whole = read_requests(&[input], &limits, max_body);
    if let Some(n) = whole.consumed {
        assert!(n <= input.len(), "request: consumed {n} > {}", input.len());
    }
    let split = read_requests(&pieces(input, &selectors), &limits, max_body);
    assert!(
        split == whole,
        "request: split at {:?} gives {split:?}, whole gives {whole:?}; input {}",
        cut_points(&selectors, input.len()),
        show(input)
    );
    let direct = read_requests_direct(&pieces(input, &selectors), &limits, max_body);
    assert!(
        direct == whole,
        "request: the server's direct body reads, split at {:?}, give {direct:?}; whole gives {whole:?}; input {}",
        cut_points(&selectors, input.len()),
        show(input)
    );
    if input.len() <= 512 {
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let one = read_requests(&bytes, &limits, max_body);
        assert!(
            one == whole,
            "request: byte by byte gives {one:?}, whole gives {whole:?}; input {}",
            show(input)
        );
    }
}
