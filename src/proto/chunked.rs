//! Incremental decoder for `Transfer-Encoding: chunked` request bodies.

/// Why a chunked body was rejected (all are the client's fault: 400, or 413 for `TooLarge`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// Chunk-size line is not hex, is empty, or has more than 16 hex digits.
    BadSize,
    /// Chunk-size line (with extensions) longer than 4 KiB.
    LineTooLong,
    /// The CRLF after a chunk's data is missing.
    BadTerminator,
    /// Trailer section longer than 4 KiB or malformed.
    BadTrailer,
    /// The decoded body would exceed the limit given to [`ChunkedDecoder::new`].
    TooLarge,
}

/// Longest chunk-size line (size digits and extensions, without the CRLF).
const MAX_SIZE_LINE: usize = 4096;
/// Longest trailer section (all trailer field lines with their CRLFs, without the final CRLF).
const MAX_TRAILER: usize = 4096;
/// Most hex digits in a chunk size (enough for any `u64`).
const MAX_SIZE_DIGITS: u8 = 16;

/// Where the decoder is in the chunked syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size,
    /// After the digits: optional whitespace before `;` or the CR.
    SizeWs,
    /// Inside chunk extensions (ignored) up to the CR.
    Ext,
    /// Saw the CR ending the size line; expecting LF.
    SizeLf,
    /// Copying chunk data; `remaining` bytes of it left.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value, up to the CR.
    TrailerValue,
    /// Saw the CR ending a trailer line; expecting LF.
    TrailerLf,
    /// Saw the CR of the final empty line; expecting LF.
    FinalLf,
    /// The whole body has been read.
    Done,
    /// An error was reported; it is reported again on every call.
    Failed(FailKind),
}

/// Copyable mirror of [`ChunkError`], kept in [`State::Failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailKind {
    BadSize,
    LineTooLong,
    BadTerminator,
    BadTrailer,
    TooLarge,
}

impl FailKind {
    fn error(self) -> ChunkError {
        match self {
            FailKind::BadSize => ChunkError::BadSize,
            FailKind::LineTooLong => ChunkError::LineTooLong,
            FailKind::BadTerminator => ChunkError::BadTerminator,
            FailKind::BadTrailer => ChunkError::BadTrailer,
            FailKind::TooLarge => ChunkError::TooLarge,
        }
    }
}

/// State machine decoding a chunked body piece by piece.
///
/// Syntax (RFC 9112 §7.1): `chunk-size [ BWS ; ext... ] CRLF data CRLF`, repeated,
/// then `0 [ext] CRLF`, trailer fields, and a final CRLF. Every line must end
/// in CRLF; a bare LF is rejected (`BadSize` in a size line, `BadTerminator`
/// after data, `BadTrailer` in the trailer section). Trailer fields are checked
/// for syntax (`token ":" value`) and discarded.
///
/// The decoder keeps O(1) state and no buffer: every byte it is given is
/// consumed (partial size lines are remembered in the state), so `consumed`
/// equals `input.len()` except on the call that finishes the body, which stops
/// right after the final CRLF.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Largest total of decoded bytes allowed.
    max_body: u64,
    /// Sum of the chunk sizes announced so far (including the current chunk).
    total: u64,
    /// Chunk size being parsed (in `Size`) or data bytes left (in `Data`).
    value: u64,
    /// Hex digits read for the current chunk size.
    digits: u8,
    /// Bytes of the current size line read so far (without CRLF).
    line_len: usize,
    /// Bytes of the trailer section read so far.
    trailer_len: usize,
}

impl ChunkedDecoder {
    /// A decoder that rejects bodies larger than `max_body` decoded bytes.
    pub fn new(max_body: usize) -> Self {
        ChunkedDecoder {
            state: State::Size,
            max_body: u64::try_from(max_body).unwrap_or(u64::MAX),
            total: 0,
            value: 0,
            digits: 0,
            line_len: 0,
            trailer_len: 0,
        }
    }

    /// True once the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as possible, appending body bytes to `out`.
    ///
    /// Returns `(consumed, done)`: `consumed` bytes of `input` were used (never
    /// more than `input.len()`); `done` is true once the last chunk and trailers
    /// were read, and then `consumed` stops right after the final CRLF so that a
    /// pipelined request that follows is left untouched. Bytes not consumed must
    /// be passed again (with more appended) on the next call.
    ///
    /// This implementation consumes all of `input` unless the body ends inside
    /// it. `TooLarge` is reported as soon as a chunk size pushes the total over
    /// the limit, before any of that chunk's data is appended. After an error,
    /// every later call returns the same error.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok((i, true)),
                State::Failed(kind) => return Err(kind.error()),
                State::Data => {
                    let left = usize::try_from(self.value).unwrap_or(usize::MAX);
                    let n = left.min(input.len() - i);
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    // `n <= value` because `n <= left` and `left` is `value` capped.
                    self.value -= n as u64;
                    if self.value == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                _ => {}
            }
            i += 1;
            if let Err(kind) = self.step(b) {
                self.state = State::Failed(kind);
                return Err(kind.error());
            }
            if self.state == State::Done {
                return Ok((i, true));
            }
        }
        match self.state {
            State::Done => Ok((i, true)),
            State::Failed(kind) => Err(kind.error()),
            _ => Ok((i, false)),
        }
    }

    /// Advances over one byte outside chunk data.
    fn step(&mut self, b: u8) -> Result<(), FailKind> {
        match self.state {
            State::Size => match hex_value(b) {
                Some(d) => {
                    if self.digits == MAX_SIZE_DIGITS {
                        return Err(FailKind::BadSize);
                    }
                    self.digits += 1;
                    // At most 16 digits, so this never overflows a u64.
                    self.value = (self.value << 4) | u64::from(d);
                    self.line_len += 1;
                }
                None => {
                    if self.digits == 0 {
                        return Err(FailKind::BadSize);
                    }
                    self.end_of_size()?;
                    self.state = State::SizeWs;
                    self.size_line_byte(b)?;
                }
            },
            State::SizeWs => self.size_line_byte(b)?,
            State::Ext => match b {
                b'\r' => self.state = State::SizeLf,
                b'\n' => return Err(FailKind::BadSize),
                _ => self.count_line_byte()?,
            },
            State::SizeLf => {
                if b != b'\n' {
                    return Err(FailKind::BadSize);
                }
                self.line_len = 0;
                self.digits = 0;
                if self.value == 0 {
                    self.state = State::TrailerStart;
                } else {
                    self.state = State::Data;
                }
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(FailKind::BadTerminator);
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(FailKind::BadTerminator);
                }
                self.state = State::Size;
            }
            State::TrailerStart => {
                if b == b'\r' {
                    self.state = State::FinalLf;
                } else if is_tchar(b) {
                    self.count_trailer_byte()?;
                    self.state = State::TrailerName;
                } else {
                    return Err(FailKind::BadTrailer);
                }
            }
            State::TrailerName => {
                self.count_trailer_byte()?;
                if b == b':' {
                    self.state = State::TrailerValue;
                } else if !is_tchar(b) {
                    return Err(FailKind::BadTrailer);
                }
            }
            State::TrailerValue => {
                self.count_trailer_byte()?;
                if b == b'\r' {
                    self.state = State::TrailerLf;
                } else if !(b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80) {
                    return Err(FailKind::BadTrailer);
                }
            }
            State::TrailerLf => {
                self.count_trailer_byte()?;
                if b != b'\n' {
                    return Err(FailKind::BadTrailer);
                }
                self.state = State::TrailerStart;
            }
            State::FinalLf => {
                if b != b'\n' {
                    return Err(FailKind::BadTrailer);
                }
                self.state = State::Done;
            }
            // Handled by `decode` before calling `step`.
            State::Data | State::Done | State::Failed(_) => {}
        }
        Ok(())
    }

    /// The chunk size is known: check it against the body limit.
    fn end_of_size(&mut self) -> Result<(), FailKind> {
        match self.total.checked_add(self.value) {
            Some(total) if total <= self.max_body => {
                self.total = total;
                Ok(())
            }
            _ => Err(FailKind::TooLarge),
        }
    }

    /// A byte after the size digits, before any `;`: whitespace, `;` or CR.
    fn size_line_byte(&mut self, b: u8) -> Result<(), FailKind> {
        match b {
            b'\r' => self.state = State::SizeLf,
            b' ' | b'\t' => self.count_line_byte()?,
            b';' => {
                self.count_line_byte()?;
                self.state = State::Ext;
            }
            _ => return Err(FailKind::BadSize),
        }
        Ok(())
    }

    fn count_line_byte(&mut self) -> Result<(), FailKind> {
        self.line_len += 1;
        if self.line_len > MAX_SIZE_LINE {
            Err(FailKind::LineTooLong)
        } else {
            Ok(())
        }
    }

    fn count_trailer_byte(&mut self) -> Result<(), FailKind> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILER {
            Err(FailKind::BadTrailer)
        } else {
            Ok(())
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `tchar` from RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What feeding some pieces to a fresh decoder produced.
    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        out: Vec<u8>,
        consumed: usize,
        result: Result<bool, ChunkError>,
    }

    /// Feeds `pieces` in order, re-passing unconsumed bytes as the contract
    /// requires, and stops at the end of the body or at an error.
    fn feed(pieces: &[&[u8]], max_body: usize) -> Outcome {
        let mut dec = ChunkedDecoder::new(max_body);
        let mut pending = Vec::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            pending.extend_from_slice(piece);
            match dec.decode(&pending, &mut out) {
                Ok((n, done)) => {
                    assert!(n <= pending.len());
                    pending.drain(..n);
                    consumed += n;
                    if done {
                        // Finished decoders stay finished and take nothing more.
                        assert_eq!(dec.decode(&pending, &mut out), Ok((0, true)));
                        assert_eq!(dec.decode(b"1\r\nx\r\n", &mut out), Ok((0, true)));
                        assert!(dec.is_done());
                        return Outcome {
                            out,
                            consumed,
                            result: Ok(true),
                        };
                    }
                    // Never holds back bytes unless done.
                    assert!(pending.is_empty());
                }
                Err(e) => {
                    // Errors are sticky.
                    assert_eq!(dec.decode(b"0\r\n\r\n", &mut Vec::new()), Err(e.clone()));
                    // How much earlier calls consumed is irrelevant once the body is rejected.
                    return Outcome {
                        out,
                        consumed: 0,
                        result: Err(e),
                    };
                }
            }
        }
        Outcome {
            out,
            consumed,
            result: Ok(false),
        }
    }

    /// Decodes `input` whole, split at every point into two pieces, and byte by
    /// byte; all must agree. Returns the whole-input outcome.
    fn decode_all_splits(input: &[u8], max_body: usize) -> Outcome {
        let whole = feed(&[input], max_body);
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            assert_eq!(
                feed(&[a, b], max_body),
                whole,
                "split at {i} of {:?}",
                show(input)
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed(&bytes, max_body), whole, "byte by byte");
        whole
    }

    fn show(input: &[u8]) -> String {
        String::from_utf8_lossy(&input[..input.len().min(60)]).into_owned()
    }

    fn body(input: &[u8]) -> Vec<u8> {
        let o = decode_all_splits(input, 1 << 20);
        assert_eq!(o.result, Ok(true), "{:?}", show(input));
        assert_eq!(o.consumed, input.len());
        o.out
    }

    fn error(input: &[u8], max_body: usize) -> ChunkError {
        match decode_all_splits(input, max_body).result {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", show(input)),
        }
    }

    #[test]
    fn simple_bodies() {
        assert_eq!(body(b"5\r\nhello\r\n0\r\n\r\n"), b"hello");
        assert_eq!(body(b"0\r\n\r\n"), b"");
        assert_eq!(body(b"000\r\n\r\n"), b"");
        assert_eq!(
            body(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            b"hello world"
        );
        assert_eq!(
            body(b"a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n"),
            b"0123456789abcdefghij"
        );
        assert_eq!(body(b"1\r\n\r\r\n1\r\n\n\r\n0\r\n\r\n"), b"\r\n");
        assert_eq!(body(b"0000000000000003\r\nabc\r\n0\r\n\r\n"), b"abc");
    }

    #[test]
    fn extensions_are_ignored() {
        assert_eq!(body(b"5;foo=bar\r\nhello\r\n0;last\r\n\r\n"), b"hello");
        assert_eq!(body(b"5 ;a=\"q;x\"\r\nhello\r\n0\t;b\r\n\r\n"), b"hello");
        assert_eq!(body(b"5  \r\nhello\r\n0\r\n\r\n"), b"hello");
    }

    #[test]
    fn trailers_are_skipped() {
        assert_eq!(
            body(b"5\r\nhello\r\n0\r\nX-Trailer: v\r\nY:z\r\n\r\n"),
            b"hello"
        );
        assert_eq!(body(b"0\r\nExpires: \xff\t x\r\n\r\n"), b"");
    }

    #[test]
    fn pipelined_bytes_are_not_consumed() {
        let bodies: [&[u8]; 3] = [
            b"5\r\nhello\r\n0\r\n\r\n",
            b"3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n",
            b"0\r\n\r\n",
        ];
        for b in bodies {
            let mut input = b.to_vec();
            input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n0\r\n\r\n");
            let o = decode_all_splits(&input, 100);
            assert_eq!(o.result, Ok(true));
            assert_eq!(o.consumed, b.len());
        }
    }

    #[test]
    fn incomplete_bodies() {
        let full = b"5;e\r\nhello\r\n0\r\nT: v\r\n\r\n";
        for n in 0..full.len() {
            let o = feed(&[&full[..n]], 100);
            assert_eq!(o.result, Ok(false), "prefix {n}");
            assert_eq!(o.consumed, n);
        }
    }

    #[test]
    fn bad_sizes() {
        assert_eq!(error(b"\r\nhello\r\n0\r\n\r\n", 100), ChunkError::BadSize);
        assert_eq!(error(b";ext\r\n", 100), ChunkError::BadSize);
        assert_eq!(error(b"g\r\n", 100), ChunkError::BadSize);
        assert_eq!(error(b"-5\r\n", 100), ChunkError::BadSize);
        assert_eq!(error(b"+5\r\n", 100), ChunkError::BadSize);
        assert_eq!(error(b"0x5\r\nhello\r\n", 100), ChunkError::BadSize);
        assert_eq!(error(b" 5\r\nhello\r\n", 100), ChunkError::BadSize);
        assert_eq!(error(b"5x\r\nhello\r\n", 100), ChunkError::BadSize);
        assert_eq!(error(b"5 5\r\nhello\r\n", 100), ChunkError::BadSize);
        assert_eq!(error(b"5\r\rhello\r\n", 100), ChunkError::BadSize);
        // A bare LF does not end a size line.
        assert_eq!(error(b"5\nhello\r\n0\r\n\r\n", 100), ChunkError::BadSize);
        assert_eq!(error(b"5;a\nhello\r\n0\r\n\r\n", 100), ChunkError::BadSize);
        assert_eq!(error(b"5\r\nhello\r\n0\n\n", 100), ChunkError::BadSize);
        // 17 digits are too many even with leading zeros.
        assert_eq!(
            error(b"00000000000000001\r\nx\r\n0\r\n\r\n", 100),
            ChunkError::BadSize
        );
        assert_eq!(
            error(b"10000000000000000\r\n", usize::MAX),
            ChunkError::BadSize
        );
        assert_eq!(
            error(b"fffffffffffffffff\r\n", usize::MAX),
            ChunkError::BadSize
        );
        // 16 digits are fine.
        assert_eq!(body(b"0000000000000001\r\nx\r\n0\r\n\r\n"), b"x");
    }

    #[test]
    fn missing_data_terminator() {
        assert_eq!(
            error(b"5\r\nhelloX\r\n0\r\n\r\n", 100),
            ChunkError::BadTerminator
        );
        assert_eq!(
            error(b"5\r\nhello\n0\r\n\r\n", 100),
            ChunkError::BadTerminator
        );
        assert_eq!(
            error(b"5\r\nhello\r0\r\n\r\n", 100),
            ChunkError::BadTerminator
        );
        assert_eq!(
            error(b"3\r\nhello\r\n0\r\n\r\n", 100),
            ChunkError::BadTerminator
        );
        let o = decode_all_splits(b"5\r\nhello0\r\n\r\n", 100);
        assert_eq!(
            (o.out.as_slice(), o.result),
            (&b"hello"[..], Err(ChunkError::BadTerminator))
        );
    }

    #[test]
    fn size_line_length_limit() {
        let mut ok_line = b"5;".to_vec();
        ok_line.resize(4096, b'a');
        ok_line.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert_eq!(body(&ok_line), b"hello");
        let mut long = b"5;".to_vec();
        long.resize(4097, b'a');
        assert_eq!(error(&long, 100), ChunkError::LineTooLong);
        let mut spaces = b"5".to_vec();
        spaces.resize(4097, b' ');
        assert_eq!(error(&spaces, 100), ChunkError::LineTooLong);
    }

    #[test]
    fn body_limit() {
        assert_eq!(body(b"5\r\nhello\r\n0\r\n\r\n"), b"hello");
        let exact = decode_all_splits(b"5\r\nhello\r\n0\r\n\r\n", 5);
        assert_eq!(
            (exact.out.as_slice(), exact.result),
            (&b"hello"[..], Ok(true))
        );
        assert_eq!(error(b"5\r\nhello\r\n0\r\n\r\n", 4), ChunkError::TooLarge);
        assert_eq!(
            error(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", 5),
            ChunkError::TooLarge
        );
        assert_eq!(
            error(b"ffffffffffffffff\r\n", usize::MAX - 1),
            ChunkError::TooLarge
        );
        assert_eq!(
            error(b"1\r\na\r\nffffffffffffffff\r\n", usize::MAX),
            ChunkError::TooLarge
        );
        let empty = decode_all_splits(b"0\r\n\r\n", 0);
        assert_eq!((empty.out.len(), empty.result), (0, Ok(true)));
        assert_eq!(error(b"1\r\nx\r\n0\r\n\r\n", 0), ChunkError::TooLarge);
    }

    #[test]
    fn too_large_is_reported_before_the_data() {
        // Known as soon as the size digits end, before the line or any data.
        let mut dec = ChunkedDecoder::new(5);
        let mut out = Vec::new();
        assert_eq!(dec.decode(b"6", &mut out), Ok((1, false)));
        assert_eq!(dec.decode(b"\r", &mut out), Err(ChunkError::TooLarge));
        let mut dec = ChunkedDecoder::new(5);
        assert_eq!(
            dec.decode(b"3\r\nabc\r\n3;ext\r\nde", &mut out),
            Err(ChunkError::TooLarge)
        );
        assert_eq!(out, b"abc");
    }

    #[test]
    fn trailer_errors() {
        assert_eq!(error(b"0\r\n: v\r\n\r\n", 100), ChunkError::BadTrailer);
        assert_eq!(error(b"0\r\nNoColon\r\n\r\n", 100), ChunkError::BadTrailer);
        assert_eq!(error(b"0\r\nX : v\r\n\r\n", 100), ChunkError::BadTrailer);
        assert_eq!(
            error(b"0\r\nX: v\nY: w\r\n\r\n", 100),
            ChunkError::BadTrailer
        );
        assert_eq!(error(b"0\r\nX: a\0b\r\n\r\n", 100), ChunkError::BadTrailer);
        assert_eq!(error(b"0\r\n\rX", 100), ChunkError::BadTrailer);
        assert_eq!(error(b"0\r\n\n", 100), ChunkError::BadTrailer);
        // Trailer section limit: 4096 bytes of field lines.
        let mut ok_trailer = b"0\r\nX: ".to_vec();
        ok_trailer.resize(3 + 4094, b'v');
        ok_trailer.extend_from_slice(b"\r\n\r\n");
        assert_eq!(body(&ok_trailer), b"");
        let mut long = b"0\r\nX: ".to_vec();
        long.resize(3 + 4095, b'v');
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(error(&long, 100), ChunkError::BadTrailer);
    }
}
