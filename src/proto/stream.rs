//! Framing of a receive stream's body. An HTTP/1.1 client gets it as
//! `Transfer-Encoding: chunked`, each write of events one chunk
//! (`<hex length>\r\n<events>\r\n`), as nginx and Go's net/http stream: a
//! client library that reads a body without a length or chunks to its end
//! before it hands anything over (Python `requests` with `iter_content()`)
//! then sees each event when it comes. An HTTP/1.0 client gets the events as
//! they are, delimited by the connection closing.
//!
//! The framing is written into the same buffer as the events, around them,
//! before anything is sent: whatever part of it the kernel does not take is
//! queued with the rest, so a partial write never leaves a chunk half framed.
//! A chunk is never empty (an empty chunk ends the stream).

/// Room reserved in front of a chunk's data for its size line: up to 16 hex
/// digits and CRLF.
pub const SIZE_LINE_MAX: usize = 18;

/// What follows every chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk (no trailers): the clean end of a chunked stream.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How a receive stream's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// As it is, to the end of the connection (HTTP/1.0).
    Plain,
    /// `Transfer-Encoding: chunked`, one chunk per write (HTTP/1.1).
    Chunked,
    /// A WebSocket connection (`GET /v1/connect`): each event is a text
    /// frame of its own (`crate::proto::events`), so a write needs no framing
    /// around it.
    WebSocket,
}

impl Framing {
    /// The framing for a request of HTTP/1.`version_minor`.
    pub fn for_version(version_minor: u8) -> Framing {
        if version_minor >= 1 {
            Framing::Chunked
        } else {
            Framing::Plain
        }
    }

    /// Starts a write of events at the end of `out`, which may already hold
    /// bytes that go out before it (the response head): reserves the room for
    /// the chunk's size line. Returns the mark for [`Framing::finish`].
    #[inline]
    pub fn begin(self, out: &mut Vec<u8>) -> usize {
        let mark = out.len();
        if self == Framing::Chunked {
            out.resize(mark + SIZE_LINE_MAX, 0);
        }
        mark
    }

    /// Ends the write begun at `mark`: the events appended since become one
    /// chunk (its size line written just in front of them, the bytes `out`
    /// held before `mark` moved up against it, CRLF appended). Returns where
    /// the bytes to send start in `out`: the events' wire offsets are their
    /// positions in `out` minus that. With nothing appended since `begin`, no
    /// chunk is made (the reservation goes) and 0 is returned.
    #[inline]
    pub fn finish(self, out: &mut Vec<u8>, mark: usize) -> usize {
        let start = self.finish_around(out, mark, 0);
        if self == Framing::Chunked && out.len() > mark {
            out.extend_from_slice(CHUNK_END);
        }
        start
    }

    /// [`Framing::finish`] for a chunk whose data continues, after what `out`
    /// holds, with `more` bytes kept elsewhere (sent from where they are,
    /// then [`CHUNK_END`], which this does not append).
    #[inline]
    pub fn finish_around(self, out: &mut Vec<u8>, mark: usize, more: usize) -> usize {
        if self != Framing::Chunked {
            return 0;
        }
        let data = mark + SIZE_LINE_MAX;
        let len = out.len().saturating_sub(data) + more;
        if len == 0 {
            out.truncate(mark);
            return 0;
        }
        let mut line = [0u8; SIZE_LINE_MAX];
        let n = size_line(len, &mut line);
        let start = data - n;
        out[start..data].copy_from_slice(&line[..n]);
        // What came before the chunk (the response head) joins it.
        let skip = SIZE_LINE_MAX - n;
        out.copy_within(..mark, skip);
        skip
    }

    /// A heartbeat: an SSE comment (`:` and a blank line), framed; a Ping
    /// with no payload on a WebSocket connection.
    pub fn heartbeat(self) -> &'static [u8] {
        match self {
            Framing::Plain => b":\n\n",
            Framing::Chunked => b"3\r\n:\n\n\r\n",
            Framing::WebSocket => &[0x89, 0x00],
        }
    }

    /// What ends the stream when the server closes it cleanly (the last
    /// chunk; nothing for a plain stream; a WebSocket connection ends with a
    /// Close frame, [`crate::proto::events::end`]).
    pub fn end(self) -> &'static [u8] {
        match self {
            Framing::Plain | Framing::WebSocket => b"",
            Framing::Chunked => LAST_CHUNK,
        }
    }

    /// True if events are written as WebSocket frames.
    #[inline]
    pub fn is_websocket(self) -> bool {
        self == Framing::WebSocket
    }
}

/// Writes the size line of a chunk of `len` bytes (lowercase hex, no
/// leading zeros, CRLF) into `line`; returns its length.
fn size_line(len: usize, line: &mut [u8; SIZE_LINE_MAX]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, d) in line[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *d = HEX[(len >> shift) & 15];
    }
    line[digits..digits + 2].copy_from_slice(b"\r\n");
    digits + 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::chunked::ChunkedDecoder;

    /// Decodes a chunked body with the request side's decoder, split at
    /// every byte boundary (of the first and last 300 bytes of a long one);
    /// returns the data, and whether it ended.
    fn dechunk(wire: &[u8]) -> (Vec<u8>, bool) {
        let mut whole = None;
        let n = wire.len();
        let cuts = (0..=n).filter(|&c| n < 600 || c < 300 || c > n - 300);
        for cut in cuts {
            let mut dec = ChunkedDecoder::new(usize::MAX);
            let mut data = Vec::new();
            let (n, mut done) = dec.decode(&wire[..cut], &mut data).expect("valid chunking");
            assert!(n <= cut);
            let mut rest = wire[n..cut].to_vec();
            rest.extend_from_slice(&wire[cut..]);
            if !done {
                let (_, d) = dec.decode(&rest, &mut data).expect("valid chunking");
                done = d;
            }
            match &whole {
                None => whole = Some((data, done)),
                Some(w) => assert_eq!(*w, (data, done), "cut {cut}"),
            }
        }
        whole.expect("at least one cut")
    }

    #[test]
    fn size_lines() {
        for (len, want) in [
            (1usize, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (255, "ff\r\n"),
            (4096, "1000\r\n"),
            (0x1234_5678, "12345678\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let mut line = [0u8; SIZE_LINE_MAX];
            let n = size_line(len, &mut line);
            assert_eq!(&line[..n], want.as_bytes(), "{len}");
        }
    }

    #[test]
    fn chunks_with_and_without_a_head() {
        for head in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            for len in [1usize, 9, 15, 16, 17, 255, 256, 4095, 4096, 70_000] {
                let events: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                let mut out = head.to_vec();
                let mark = Framing::Chunked.begin(&mut out);
                out.extend_from_slice(&events);
                let start = Framing::Chunked.finish(&mut out, mark);
                let wire = &out[start..];
                assert_eq!(&wire[..head.len()], head);
                let body = &wire[head.len()..];
                assert!(body.ends_with(CHUNK_END));
                let mut stream = body.to_vec();
                stream.extend_from_slice(Framing::Chunked.end());
                assert_eq!(dechunk(&stream), (events.clone(), true), "{len}");
                // The events sit at their position in `out` minus `start` on the wire.
                let at = out.len() - CHUNK_END.len() - len;
                assert_eq!(&wire[at - start..at - start + len], &events[..]);
                // Plain: the events as they are.
                let mut out = head.to_vec();
                let mark = Framing::Plain.begin(&mut out);
                out.extend_from_slice(&events);
                assert_eq!(Framing::Plain.finish(&mut out, mark), 0);
                assert_eq!(&out[head.len()..], &events[..]);
            }
        }
    }

    #[test]
    fn nothing_written_makes_no_chunk() {
        for head in [&b""[..], b"head"] {
            let mut out = head.to_vec();
            let mark = Framing::Chunked.begin(&mut out);
            assert_eq!(Framing::Chunked.finish(&mut out, mark), 0);
            assert_eq!(out, head);
        }
    }

    #[test]
    fn data_kept_elsewhere_and_several_writes() {
        let body = vec![b'x'; 5000];
        let mut out = Vec::new();
        let mark = Framing::Chunked.begin(&mut out);
        out.extend_from_slice(b"event head ");
        let start = Framing::Chunked.finish_around(&mut out, mark, body.len() + 3);
        let mut wire = out[start..].to_vec();
        wire.extend_from_slice(&body);
        wire.extend_from_slice(b"end");
        wire.extend_from_slice(CHUNK_END);
        wire.extend_from_slice(Framing::Chunked.heartbeat());
        wire.extend_from_slice(Framing::Chunked.end());
        let mut want = b"event head ".to_vec();
        want.extend_from_slice(&body);
        want.extend_from_slice(b"end:\n\n");
        assert_eq!(dechunk(&wire), (want, true));
        assert_eq!(Framing::Plain.heartbeat(), b":\n\n");
        assert_eq!(Framing::Plain.end(), b"");
        assert_eq!(Framing::for_version(0), Framing::Plain);
        assert_eq!(Framing::for_version(1), Framing::Chunked);
    }
}
