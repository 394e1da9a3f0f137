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

/// State machine decoding a chunked body piece by piece.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    _private: (),
}

impl ChunkedDecoder {
    /// A decoder that rejects bodies larger than `max_body` decoded bytes.
    pub fn new(max_body: usize) -> Self {
        let _ = max_body;
        todo!()
    }

    /// Decodes as much of `input` as possible, appending body bytes to `out`.
    ///
    /// Returns `(consumed, done)`: `consumed` bytes of `input` were used (never
    /// more than `input.len()`); `done` is true once the last chunk and trailers
    /// were read, and then `consumed` stops right after the final CRLF so that a
    /// pipelined request that follows is left untouched. Bytes not consumed must
    /// be passed again (with more appended) on the next call.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), ChunkError> {
        let _ = (input, out);
        todo!()
    }
}
