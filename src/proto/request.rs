//! A connection's request reader: the state machine that turns the bytes a
//! client sends into complete requests (head and body), one at a time, with
//! every size limit enforced before anything is buffered beyond it.
//!
//! Sans-IO: the caller keeps the unconsumed input and feeds it again with more
//! bytes appended; the answer does not depend on how the bytes were split.

use super::chunked::{ChunkError, ChunkedDecoder};
use super::head::{parse_head, HeadError, Limits, RequestHead};
use super::Parse;

/// Most memory reserved for a `Content-Length` body before its bytes arrive.
/// The buffer then grows with what is received (each step at most doubling
/// it), so a client that declares a large body and sends little of it holds
/// little: with `--max-message` raised to 1 GiB, a thousand such clients
/// would otherwise reserve a terabyte of address space, which a host with
/// strict overcommit refuses (and a refused allocation aborts the process).
pub const BODY_RESERVE_STEP: usize = 64 << 10;

/// A complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub head: RequestHead,
    pub body: Vec<u8>,
}

/// Why a request was rejected. All are the client's fault; after an error the
/// connection must be answered with [`RequestError::status`] and closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The head was rejected.
    Head(HeadError),
    /// A chunked body was malformed.
    Chunked(ChunkError),
    /// The body is larger than the limit (declared or decoded).
    TooLarge { limit: usize },
}

impl RequestError {
    /// HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Head(e) => e.status(),
            RequestError::Chunked(ChunkError::TooLarge) | RequestError::TooLarge { .. } => 413,
            RequestError::Chunked(_) => 400,
        }
    }

    /// Machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Head(e) => e.code(),
            RequestError::Chunked(ChunkError::TooLarge) | RequestError::TooLarge { .. } => {
                "payload_too_large"
            }
            RequestError::Chunked(_) => "bad_chunked_body",
        }
    }

    /// Human-readable text for the JSON error body.
    pub fn message(&self) -> String {
        match self {
            RequestError::Head(e) => e.message(),
            RequestError::TooLarge { limit } => {
                format!("body larger than the limit of {limit} bytes")
            }
            RequestError::Chunked(ChunkError::TooLarge) => {
                "chunked body larger than the limit".to_string()
            }
            RequestError::Chunked(e) => format!("malformed chunked body: {e:?}"),
        }
    }
}

struct Body {
    head: RequestHead,
    body: Vec<u8>,
    decoder: Option<ChunkedDecoder>,
    remaining: u64,
    /// The client asked for `100 Continue` and has not been answered yet
    /// (see [`RequestReader::take_expect`]).
    expect: bool,
}

impl Body {
    /// The body that `head` announces, with nothing read yet; its declared
    /// length (`declared`, 0 if chunked) was checked against `max_body`.
    fn open(head: RequestHead, declared: u64, max_body: usize) -> Box<Body> {
        let decoder = head.chunked.then(|| ChunkedDecoder::new(max_body));
        // At most `max_body`, a usize.
        let cap = if head.chunked {
            0
        } else {
            (declared as usize).min(BODY_RESERVE_STEP)
        };
        let expect = head.expect_continue;
        Box::new(Body {
            head,
            body: Vec::with_capacity(cap),
            decoder,
            remaining: declared,
            expect,
        })
    }
}

/// Reads requests from a connection. Holds nothing while between requests.
#[derive(Default)]
pub struct RequestReader {
    body: Option<Box<Body>>,
}

impl RequestReader {
    /// A reader waiting for a request head.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while a request body is being read (a head was complete).
    pub fn in_body(&self) -> bool {
        self.body.is_some()
    }

    /// While a `Content-Length` body is being read: its buffer and how many
    /// bytes the caller may append to it now, so that it can receive them
    /// straight into it and report them with [`RequestReader::body_received`]
    /// (the next [`RequestReader::feed`], even with no input, then returns the
    /// request once the body is whole). `None` otherwise (no body, chunked,
    /// complete).
    ///
    /// The amount is what the body still lacks, but at most the larger of
    /// [`BODY_RESERVE_STEP`] and what it holds already: the buffer grows with
    /// what arrives, not with what the client declared.
    pub fn body_target(&mut self) -> Option<(&mut Vec<u8>, usize)> {
        let b = self.body.as_mut()?;
        if b.decoder.is_some() || b.remaining == 0 {
            return None;
        }
        let step = b.body.len().max(BODY_RESERVE_STEP) as u64;
        // At most `step`, a usize.
        let want = b.remaining.min(step) as usize;
        Some((&mut b.body, want))
    }

    /// Once, right after a head with `Expect: 100-continue` opened its body:
    /// that head, so the caller can check the request (route, token) and
    /// answer `100 Continue`, or the final error without reading the body.
    /// `None` otherwise, and on every later call.
    pub fn take_expect(&mut self) -> Option<&RequestHead> {
        let b = self.body.as_mut()?;
        if !std::mem::take(&mut b.expect) {
            return None;
        }
        Some(&b.head)
    }

    /// Counts `n` bytes the caller appended to the buffer from
    /// [`RequestReader::body_target`] (at most the bytes it lacked).
    pub fn body_received(&mut self, n: usize) {
        if let Some(b) = self.body.as_mut() {
            b.remaining = b.remaining.saturating_sub(n as u64);
        }
    }

    /// True if a `Content-Length` body is complete and `feed` will return its request.
    pub fn body_complete(&self) -> bool {
        self.body
            .as_ref()
            .is_some_and(|b| b.decoder.is_none() && b.remaining == 0)
    }

    /// For a reader between requests: if `input` starts with a complete head
    /// that declares a `Content-Length` body (within `max_body`), takes the
    /// head and as much of the body as `input` holds, and returns how many
    /// bytes it took. The rest of `input` (the next requests, if the body is
    /// complete) is left to the caller; a complete body's request comes out
    /// of the next [`RequestReader::feed`], even one with no input, before
    /// anything else. Otherwise (a partial or rejected head, no body, a
    /// chunked body, a reader already in a body) it takes nothing and returns
    /// `None`: `feed` then handles `input` as usual, errors included.
    ///
    /// This lets the caller hand a large read to the body without first
    /// copying it into its input buffer. In the `None` case `feed` parses the
    /// head again, so call it only for reads that are likely to carry a
    /// large body.
    pub fn begin_body(&mut self, input: &[u8], limits: &Limits, max_body: usize) -> Option<usize> {
        if self.body.is_some() {
            return None;
        }
        let head = match parse_head(input, limits) {
            Ok(Parse::Complete(h)) => h,
            _ => return None,
        };
        let declared = head.content_length?;
        // A client that expects `100 Continue` is answered first (`feed`).
        if head.chunked || head.expect_continue || declared == 0 || declared > max_body as u64 {
            return None;
        }
        let head_len = head.head_len.min(input.len());
        let rest = &input[head_len..];
        // At most `rest.len()`, a usize.
        let take = declared.min(rest.len() as u64) as usize;
        let mut b = Body::open(head, declared, max_body);
        b.body.extend_from_slice(&rest[..take]);
        b.remaining -= take as u64;
        // A complete body's request comes out of the next `feed`.
        self.body = Some(b);
        Some(head_len + take)
    }

    /// Feeds the unconsumed input. Returns how many bytes were consumed (never
    /// more than `input.len()`) and the request if one is complete. Call again
    /// with the remaining bytes for pipelined requests.
    pub fn feed(
        &mut self,
        input: &[u8],
        limits: &Limits,
        max_body: usize,
    ) -> Result<(usize, Option<Request>), RequestError> {
        let mut consumed = 0;
        if self.body.is_none() {
            let head = match parse_head(input, limits).map_err(RequestError::Head)? {
                Parse::Partial => return Ok((0, None)),
                Parse::Complete(h) => h,
            };
            consumed = head.head_len;
            let declared = head.content_length.unwrap_or(0);
            if !head.chunked && declared == 0 {
                return Ok((
                    consumed,
                    Some(Request {
                        head,
                        body: Vec::new(),
                    }),
                ));
            }
            if declared > max_body as u64 {
                return Err(RequestError::TooLarge { limit: max_body });
            }
            self.body = Some(Body::open(head, declared, max_body));
        }
        let Some(b) = self.body.as_mut() else {
            return Ok((consumed, None));
        };
        let rest = &input[consumed..];
        let done = match &mut b.decoder {
            Some(dec) => {
                let (n, done) = dec
                    .decode(rest, &mut b.body)
                    .map_err(RequestError::Chunked)?;
                consumed += n.min(rest.len());
                done
            }
            None => {
                let take = (b.remaining.min(rest.len() as u64)) as usize;
                b.body.extend_from_slice(&rest[..take]);
                b.remaining -= take as u64;
                consumed += take;
                b.remaining == 0
            }
        };
        if !done {
            return Ok((consumed, None));
        }
        let Some(b) = self.body.take() else {
            return Ok((consumed, None));
        };
        let b = *b;
        Ok((
            consumed,
            Some(Request {
                head: b.head,
                body: b.body,
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], max_body: usize) -> (Vec<Request>, Option<RequestError>, usize) {
        let limits = Limits::default();
        let mut r = RequestReader::new();
        let mut out = Vec::new();
        let mut off = 0;
        loop {
            match r.feed(&input[off..], &limits, max_body) {
                Ok((n, req)) => {
                    off += n;
                    match req {
                        Some(q) => out.push(q),
                        None => return (out, None, off),
                    }
                }
                Err(e) => return (out, Some(e), off),
            }
        }
    }

    /// Feeds `input` split at `cut` (first part, then everything), collecting requests.
    fn run_split(
        input: &[u8],
        cut: usize,
        max_body: usize,
    ) -> (Vec<Request>, Option<RequestError>) {
        let limits = Limits::default();
        let mut r = RequestReader::new();
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        for part in [&input[..cut], &input[cut..]] {
            buf.extend_from_slice(part);
            loop {
                match r.feed(&buf, &limits, max_body) {
                    Ok((n, req)) => {
                        assert!(n <= buf.len());
                        buf.drain(..n);
                        match req {
                            Some(q) => out.push(q),
                            None => break,
                        }
                    }
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    const PIPELINE: &[u8] = b"POST /v1/send/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloPOST /v1/send/b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET /v1/clients HTTP/1.1\r\nHost: h\r\n\r\n";

    #[test]
    fn pipelined_requests_at_every_split() {
        let (whole, err, used) = run(PIPELINE, 1024);
        assert!(err.is_none());
        assert_eq!(used, PIPELINE.len());
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].body, b"hello");
        assert_eq!(whole[1].body, b"abcde");
        assert_eq!(whole[2].head.path(), "/v1/clients");
        for cut in 0..=PIPELINE.len() {
            let (reqs, err) = run_split(PIPELINE, cut, 1024);
            assert!(err.is_none(), "cut {cut}: {err:?}");
            assert_eq!(reqs, whole, "cut {cut}");
        }
    }

    /// The server's way of reading: while a `Content-Length` body is open and
    /// no input is buffered, bytes go straight into the body (`body_target`,
    /// `body_received`); the rest through the input buffer. The same requests
    /// come out as from `feed` alone, for every way of cutting the input in
    /// two reads and for reads of every fixed size.
    #[test]
    fn bodies_received_straight_into_their_buffer_give_the_same_requests() {
        let mut input = PIPELINE.to_vec();
        input.extend_from_slice(
            b"POST /v1/send/c HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\n\r\n",
        );
        input.extend_from_slice(&[b'z'; 40]);
        input.extend_from_slice(b"GET /v1/clients HTTP/1.1\r\nHost: h\r\n\r\n");
        let (whole, err, _) = run(&input, 1024);
        assert!(err.is_none());
        assert_eq!(whole.len(), 5);
        let limits = Limits::default();
        // Reads: `reads` gives the sizes the "socket" hands out.
        let read_all = |reads: &mut dyn Iterator<Item = usize>| -> Vec<Request> {
            let mut r = RequestReader::new();
            let mut buf: Vec<u8> = Vec::new();
            let mut out = Vec::new();
            let mut off = 0;
            while off < input.len() {
                let n = reads.next().unwrap_or(input.len()).min(input.len() - off);
                let mut avail = &input[off..off + n];
                off += n;
                while !avail.is_empty() {
                    if buf.is_empty() {
                        if let Some((body, want)) = r.body_target() {
                            let k = want.min(avail.len());
                            body.extend_from_slice(&avail[..k]);
                            r.body_received(k);
                            avail = &avail[k..];
                            continue;
                        }
                    }
                    buf.extend_from_slice(avail);
                    avail = &[];
                }
                while !buf.is_empty() || r.body_complete() {
                    let (n, req) = r.feed(&buf, &limits, 1024).expect("valid input");
                    buf.drain(..n);
                    match req {
                        Some(q) => out.push(q),
                        None => break,
                    }
                }
                // Mirrors the server: a body that filled up by direct reads is
                // returned by the next feed even with no input.
                while r.body_complete() {
                    let (_, req) = r.feed(&buf, &limits, 1024).expect("valid input");
                    out.extend(req);
                }
            }
            out
        };
        for cut in 0..=input.len() {
            let got = read_all(&mut [cut, input.len()].into_iter());
            assert_eq!(got, whole, "cut {cut}");
        }
        for size in 1..=input.len() {
            let got = read_all(&mut std::iter::repeat(size));
            assert_eq!(got, whole, "reads of {size}");
        }
    }

    /// `begin_body` takes the head and what the input holds of a
    /// `Content-Length` body (never more); the rest, fed as usual, gives the
    /// same requests as `feed` alone, at every cut. Everything else it leaves
    /// to `feed`.
    #[test]
    fn begin_body_takes_the_head_and_the_body_and_leaves_the_rest() {
        let limits = Limits::default();
        let body: Vec<u8> = (0..3000).map(|i| b'a' + (i % 26) as u8).collect();
        let mut input =
            b"POST /v1/send/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3000\r\n\r\n".to_vec();
        let head_len = input.len();
        input.extend_from_slice(&body);
        input.extend_from_slice(b"GET /v1/clients HTTP/1.1\r\nHost: h\r\n\r\n");
        let (whole, err, _) = run(&input, 4096);
        assert!(err.is_none());
        assert_eq!(whole.len(), 2);
        for cut in 0..=input.len() {
            let mut r = RequestReader::new();
            let taken = r.begin_body(&input[..cut], &limits, 4096);
            let want = (cut >= head_len).then_some(cut.min(head_len + body.len()));
            assert_eq!(taken, want, "cut {cut}");
            // Then the rest, the way the server does it.
            let mut buf = input[taken.unwrap_or(0)..].to_vec();
            let mut out = Vec::new();
            loop {
                let (n, req) = r.feed(&buf, &limits, 4096).expect("valid input");
                buf.drain(..n);
                match req {
                    Some(q) => out.push(q),
                    None => break,
                }
            }
            assert_eq!(out, whole, "cut {cut}");
        }
        // Nothing taken: chunked bodies, bodies over the limit, bad heads, no
        // body, a reader already in a body.
        let mut r = RequestReader::new();
        let chunked = b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        assert_eq!(r.begin_body(chunked, &limits, 4096), None);
        let big = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\nabc";
        assert_eq!(r.begin_body(big, &limits, 4096), None);
        assert_eq!(
            r.feed(big, &limits, 4096).err(),
            Some(RequestError::TooLarge { limit: 4096 })
        );
        let mut r = RequestReader::new();
        let bad = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\nab";
        assert_eq!(r.begin_body(bad, &limits, 4096), None);
        assert_eq!(
            r.begin_body(
                b"GET /v1/clients HTTP/1.1\r\nHost: h\r\n\r\n",
                &limits,
                4096
            ),
            None
        );
        assert!(!r.in_body());
        let first = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc";
        assert_eq!(r.begin_body(first, &limits, 4096), Some(first.len()));
        assert!(r.in_body());
        assert_eq!(r.begin_body(first, &limits, 4096), None);
    }

    /// A large declared body reserves one step, then grows with what arrives
    /// (through `feed` and through direct reads alike), and comes out whole.
    #[test]
    fn a_large_declared_body_reserves_memory_as_it_arrives() {
        let size = 5 * BODY_RESERVE_STEP + 123;
        let max = 1 << 30;
        let limits = Limits::default();
        let head = format!("POST /v1/send/a HTTP/1.1\r\nHost: h\r\nContent-Length: {size}\r\n\r\n");
        let mut r = RequestReader::new();
        let (n, req) = r.feed(head.as_bytes(), &limits, max).expect("valid head");
        assert_eq!((n, req), (head.len(), None));
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut off = 0;
        let mut turn = 0;
        while off < size {
            turn += 1;
            if turn % 2 == 0 {
                // Through `feed`, 1000 bytes at a time.
                let k = (size - off).min(1000);
                let (used, req) = r
                    .feed(&payload[off..off + k], &limits, max)
                    .expect("valid body");
                assert_eq!(used, k);
                off += k;
                if off < size {
                    assert!(req.is_none());
                } else {
                    assert_eq!(req.map(|q| q.body), Some(payload.clone()));
                }
                continue;
            }
            let (body, want) = r.body_target().expect("an open Content-Length body");
            let held = body.len();
            assert_eq!(held, off);
            assert!(
                want <= held.max(BODY_RESERVE_STEP),
                "want {want} with {held} held"
            );
            assert!(want <= size - off);
            assert!(
                body.capacity() <= 2 * held.max(BODY_RESERVE_STEP),
                "capacity {} with {held} held",
                body.capacity()
            );
            body.extend_from_slice(&payload[off..off + want]);
            r.body_received(want);
            off += want;
            if off == size {
                assert!(r.body_complete());
                let (_, req) = r.feed(&[], &limits, max).expect("complete");
                assert_eq!(req.map(|q| q.body), Some(payload.clone()));
            }
        }
    }

    #[test]
    fn declared_body_over_limit_is_rejected_before_reading_it() {
        let input = b"POST /v1/send/a HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n";
        let (reqs, err, _) = run(input, 1000);
        assert!(reqs.is_empty());
        assert_eq!(err, Some(RequestError::TooLarge { limit: 1000 }));
        assert_eq!(err.map(|e| e.status()), Some(413));
    }

    #[test]
    fn chunked_body_over_limit_is_413() {
        let input = b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n";
        let (_, err, _) = run(input, 1000);
        assert_eq!(err.as_ref().map(|e| e.status()), Some(413));
    }

    #[test]
    fn bad_chunk_is_400() {
        let input = b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let (_, err, _) = run(input, 1000);
        assert_eq!(err.as_ref().map(|e| e.status()), Some(400));
        assert_eq!(err.as_ref().map(|e| e.code()), Some("bad_chunked_body"));
    }

    #[test]
    fn idle_reader_holds_nothing() {
        let r = RequestReader::new();
        assert!(!r.in_body());
        assert_eq!(
            std::mem::size_of::<RequestReader>(),
            std::mem::size_of::<usize>()
        );
    }

    /// `Expect: 100-continue` is reported once, when the head opens its
    /// body, however the input is split; a declared length over the limit is
    /// refused at once instead; a head without it, or with no body, is never
    /// reported; and a large read is not taken by `begin_body`.
    #[test]
    fn expect_continue_is_reported_once_when_the_body_opens() {
        let limits = Limits::default();
        let req =
            b"POST /v1/send/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello";
        let head_len = req.len() - 5;
        for cut in 0..=req.len() {
            let mut r = RequestReader::new();
            let mut reported = 0;
            let mut buf: Vec<u8> = Vec::new();
            let mut done = None;
            for part in [&req[..cut], &req[cut..]] {
                buf.extend_from_slice(part);
                let (n, q) = r.feed(&buf, &limits, 64).expect("valid");
                buf.drain(..n);
                if r.take_expect().is_some() {
                    reported += 1;
                    assert!(cut >= head_len, "reported before the head at {cut}");
                }
                assert!(r.take_expect().is_none());
                done = done.or(q);
            }
            // Reported when the head arrived before the whole body, not when
            // the request came complete in one piece.
            let opened_first = cut >= head_len && cut < req.len();
            assert_eq!(reported, usize::from(opened_first), "cut {cut}");
            assert_eq!(done.expect("complete").body, b"hello");
        }
        let mut r = RequestReader::new();
        let big = b"POST /v1/send/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 65\r\n\r\n";
        assert_eq!(
            r.feed(big, &limits, 64).map(|(n, _)| n),
            Err(RequestError::TooLarge { limit: 64 })
        );
        let mut r = RequestReader::new();
        let plain = b"POST /v1/send/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(r.feed(plain, &limits, 64).map(|(n, _)| n), Ok(plain.len()));
        assert!(r.take_expect().is_none());
        let mut r = RequestReader::new();
        let empty = b"POST /v1/send/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n";
        let (_, q) = r.feed(empty, &limits, 64).expect("valid");
        assert!(q.is_some() && r.take_expect().is_none());
        let mut r = RequestReader::new();
        assert_eq!(r.begin_body(&req[..], &limits, 64), None);
    }
}
