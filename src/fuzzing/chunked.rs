//! The `chunked` fuzz target.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------
// chunked
// ---------------------------------------------------------------------------

/// What feeding some pieces to a fresh chunked decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ChunkOutcome {
    out: Vec<u8>,
    /// Total consumed; `None` after an error (irrelevant once the body is rejected).
    consumed: Option<usize>,
    result: Result<bool, ChunkError>,
}

/// Feeds `pieces` in order, re-passing unconsumed bytes as the contract
/// requires, checking the per-call contract, and stops at the end of the body
/// or at an error.
pub(super) fn decode_pieces(pieces: &[&[u8]], max_body: usize) -> ChunkOutcome {
    let mut dec = ChunkedDecoder::new(max_body);
    let mut pending: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        pending.extend_from_slice(piece);
        match dec.decode(&pending, &mut out) {
            Ok((n, done)) => {
                assert!(
                    n <= pending.len(),
                    "chunked: consumed {n} of {} bytes",
                    pending.len()
                );
                pending.drain(..n);
                consumed += n;
                if done {
                    assert!(dec.is_done(), "chunked: done but not is_done()");
                    let again = dec.decode(b"1\r\nx\r\n0\r\n\r\n", &mut out);
                    assert!(
                        again == Ok((0, true)),
                        "chunked: finished decoder gave {again:?}"
                    );
                    return ChunkOutcome {
                        out,
                        consumed: Some(consumed),
                        result: Ok(true),
                    };
                }
                assert!(
                    pending.is_empty(),
                    "chunked: {} bytes held back before the end of the body",
                    pending.len()
                );
            }
            Err(e) => {
                let again = dec.decode(b"0\r\n\r\n", &mut Vec::new());
                assert!(
                    again == Err(e.clone()),
                    "chunked: error {e:?} not sticky: {again:?}"
                );
                return ChunkOutcome {
                    out,
                    consumed: None,
                    result: Err(e),
                };
            }
        }
    }
    ChunkOutcome {
        out,
        consumed: Some(consumed),
        result: Ok(false),
    }
}

/// Fuzzes [`ChunkedDecoder`].
///
/// Layout: a body-limit byte, a style byte, a split count and selectors, then the body bytes.
///
/// Properties:
/// * Decoding the input whole, split at the fuzzer-chosen points, and byte by
///   byte gives the same output, the same result (done / not done / error) and
///   the same total consumed.
/// * Per call: `consumed <= input`, nothing is held back unless the body is
///   done; a finished decoder takes no more bytes; errors are sticky.
/// * The decoded length never exceeds the limit; an unfinished body consumed
///   everything.
/// * Round trip: the payload encoded as a valid chunked body (chunk sizes from
///   the split points, hex case, extensions and trailers from the style byte,
///   followed by a pipelined request) decodes to exactly the payload and stops
///   right after the final CRLF; with a limit one byte smaller it is `TooLarge`.
pub fn chunked(data: &[u8]) {
    let mut inp = Input::new(data);
    let max_body = body_limit(inp.byte());
    let style = inp.byte();
    let selectors = inp.splits();
    let body = inp.rest();

    let whole = decode_pieces(&[body], max_body);
    assert!(
        whole.out.len() <= max_body,
        "chunked: decoded {} bytes with max_body {max_body}",
        whole.out.len()
    );
    match (&whole.result, whole.consumed) {
        (Ok(true), Some(n)) => assert!(n <= body.len(), "chunked: consumed {n} > {}", body.len()),
        (Ok(false), Some(n)) => assert!(
            n == body.len(),
            "chunked: unfinished body consumed {n} of {}",
            body.len()
        ),
        _ => {}
    }

    let split = decode_pieces(&pieces(body, &selectors), max_body);
    assert!(
        split == whole,
        "chunked: split at {:?} gives {split:?}, whole gives {whole:?}; input {}",
        cut_points(&selectors, body.len()),
        show(body)
    );
    if body.len() <= 4096 {
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        let one = decode_pieces(&bytes, max_body);
        assert!(
            one == whole,
            "chunked: byte by byte gives {one:?}, whole gives {whole:?}; input {}",
            show(body)
        );
    }

    chunked_round_trip(body, style, &selectors);
}

/// Encodes `payload` as a valid chunked body and checks it decodes back.
pub(super) fn chunked_round_trip(payload: &[u8], style: u8, selectors: &[u8]) {
    let mut enc = Vec::new();
    for chunk in pieces(payload, selectors) {
        if chunk.is_empty() {
            continue; // a zero-size chunk would end the body
        }
        let size = if style & 1 != 0 {
            format!("{:X}", chunk.len())
        } else {
            format!("{:x}", chunk.len())
        };
        if style & 2 != 0 {
            enc.extend_from_slice(b"000");
        }
        enc.extend_from_slice(size.as_bytes());
        if style & 4 != 0 {
            enc.extend_from_slice(b" ;ext=\"v;x\"\t;y");
        }
        enc.extend_from_slice(b"\r\n");
        enc.extend_from_slice(chunk);
        enc.extend_from_slice(b"\r\n");
    }
    enc.extend_from_slice(b"0\r\n");
    if style & 8 != 0 {
        enc.extend_from_slice(b"X-Trailer: a b\xff\r\nY:\r\n");
    }
    enc.extend_from_slice(b"\r\n");
    let body_len = enc.len();
    enc.extend_from_slice(b"POST / HTTP/1.1\r\nHost: h\r\n\r\n5\r\nhello\r\n0\r\n\r\n");

    let got = decode_pieces(&pieces(&enc, selectors), payload.len());
    let expected = ChunkOutcome {
        out: payload.to_vec(),
        consumed: Some(body_len),
        result: Ok(true),
    };
    assert!(
        got == expected,
        "chunked: valid encoding {} decodes to {got:?}",
        show(&enc)
    );
    if let Some(smaller) = payload.len().checked_sub(1) {
        let got = decode_pieces(&[&enc], smaller);
        assert!(
            got.result == Err(ChunkError::TooLarge),
            "chunked: {} bytes with limit {smaller} gave {:?}",
            payload.len(),
            got.result
        );
    }
}
