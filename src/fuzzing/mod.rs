//! Fuzzing harnesses for the sans-IO protocol code.
//!
//! Each function takes arbitrary bytes, drives one piece of [`crate::proto`],
//! [`crate::auth`] or [`crate::ids`] with them, and checks *properties* of the
//! result: it panics (with a message saying which property failed) when one is
//! violated, and never otherwise. The cargo-fuzz targets in `fuzz/fuzz_targets/`
//! are one-line wrappers around these functions; the unit tests at the end of
//! this file replay the committed corpus (`fuzz/corpus/<target>/`) and crash
//! reproducers (`fuzz/regressions/<target>/`) on stable Rust, so
//! `cargo test --release --lib fuzzing` keeps old findings fixed.
//!
//! Input layout: every harness reads a few *parameter bytes* from the front of
//! the input (limits, split points, flags; missing bytes read as 0) and treats
//! the rest as the payload. See `docs/fuzzing.md` for the layout of each target.
//!
//! Only compiled with `--cfg fuzzing` (set by cargo-fuzz) or in tests.

use std::borrow::Cow;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

use crate::auth::{self, AuthError, Role, Verifier};
use crate::ids::EventId;
use crate::proto::chunked::{ChunkError, ChunkedDecoder};
use crate::proto::head::{parse_head, query_param, HeadError, Limits, RequestHead};
use crate::proto::request::{Request, RequestError, RequestReader};
use crate::proto::sse::{encode_comment, encode_event, message_json};
use crate::proto::Parse;

// ---------------------------------------------------------------------------
// Input helpers
// ---------------------------------------------------------------------------

/// Reads parameter bytes from the front of the fuzzer input; past the end,
/// every byte reads as 0, so any input is usable.
pub(super) struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A count byte `k` (taken modulo 8) followed by `k` split-selector bytes.
    fn splits(&mut self) -> Vec<u8> {
        let k = self.byte() % 8;
        (0..k).map(|_| self.byte()).collect()
    }

    fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// Turns split-selector bytes into sorted, distinct cut positions in
/// `0..=len`, each proportional to its selector (`0` is the start, `255` near
/// the end).
pub(super) fn cut_points(selectors: &[u8], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = selectors
        .iter()
        .map(|&s| usize::from(s) * (len + 1) / 256)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Splits `buf` at the positions from [`cut_points`].
pub(super) fn pieces<'b>(buf: &'b [u8], selectors: &[u8]) -> Vec<&'b [u8]> {
    let mut out = Vec::new();
    let mut prev = 0;
    for c in cut_points(selectors, buf.len()) {
        out.push(&buf[prev..c]);
        prev = c;
    }
    out.push(&buf[prev..]);
    out
}

/// Head limits from four parameter bytes: if bit 7 of the first is set the
/// production defaults, else small limits (request line 0..=255 bytes, head
/// 0..=1020 bytes, 0..=15 header fields) so that every limit is reachable.
pub(super) fn head_limits(inp: &mut Input<'_>) -> Limits {
    let (sel, a, b, c) = (inp.byte(), inp.byte(), inp.byte(), inp.byte());
    if sel & 0x80 != 0 {
        Limits::default()
    } else {
        Limits {
            max_request_line: usize::from(a),
            max_head: usize::from(b) * 4,
            max_headers: usize::from(c % 16),
        }
    }
}

/// Body limits chosen by one byte. Kept at or below 1 MiB: the gateway's
/// configured `max_body` is of that order, and a request reader given a huge
/// limit legitimately reserves `Content-Length` bytes up front.
pub(super) const BODY_LIMITS: [usize; 9] = [0, 1, 2, 5, 16, 100, 1000, 65536, 1 << 20];

pub(super) fn body_limit(b: u8) -> usize {
    BODY_LIMITS[usize::from(b) % BODY_LIMITS.len()]
}

pub(super) fn show(buf: &[u8]) -> String {
    let end = buf.len().min(200);
    format!("{:?}", String::from_utf8_lossy(&buf[..end]))
}

mod chunked;
mod connection;
mod head;
mod request;
mod sse;
mod token;
mod ws;
pub use chunked::chunked;
#[allow(unused_imports)]
use chunked::*;
pub use connection::connection;
#[allow(unused_imports)]
use connection::*;
pub use head::head;
#[allow(unused_imports)]
use head::*;
pub use request::request;
#[allow(unused_imports)]
use request::*;
pub use sse::sse;
#[allow(unused_imports)]
use sse::*;
pub use token::token;
#[allow(unused_imports)]
use token::*;
pub use ws::ws;
#[allow(unused_imports)]
use ws::*;

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::path::Path;

    type Harness = fn(&[u8]);

    const TARGETS: [(&str, Harness); 7] = [
        ("connection", super::connection),
        ("head", super::head),
        ("chunked", super::chunked),
        ("request", super::request),
        ("token", super::token),
        ("sse", super::sse),
        ("ws", super::ws),
    ];

    /// Runs `harness` on every file in `dir`; returns how many there were.
    fn replay_dir(dir: &Path, harness: Harness) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for path in &paths {
            let data =
                std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let result = std::panic::catch_unwind(|| harness(&data));
            if let Err(cause) = result {
                eprintln!("replaying {} failed", path.display());
                std::panic::resume_unwind(cause);
            }
        }
        paths.len()
    }

    fn replay(target: &str) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let harness = TARGETS
            .iter()
            .find(|(name, _)| *name == target)
            .map(|&(_, h)| h)
            .unwrap_or_else(|| panic!("unknown target {target}"));
        let corpus = replay_dir(&root.join("corpus").join(target), harness);
        assert!(corpus > 0, "fuzz/corpus/{target}/ is empty or missing");
        replay_dir(&root.join("regressions").join(target), harness);
    }

    #[test]
    fn replay_head() {
        replay("head");
    }

    #[test]
    fn replay_chunked() {
        replay("chunked");
    }

    #[test]
    fn replay_request() {
        replay("request");
    }

    #[test]
    fn replay_token() {
        replay("token");
    }

    #[test]
    fn replay_sse() {
        replay("sse");
    }

    #[test]
    fn replay_ws() {
        replay("ws");
    }

    #[test]
    fn replay_connection() {
        replay("connection");
    }

    /// The seeds exercise acceptance, not only refusals.
    #[test]
    fn connection_seeds_are_accepted() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/connection");
        let data = std::fs::read(dir.join("send_keepalive-0")).expect("seed");
        let d = super::run_connection(&[&data[1..]]);
        assert_eq!(
            d.iter()
                .filter(|x| matches!(x, super::Decision::Accepted(..)))
                .count(),
            3,
            "{d:?}"
        );
        let data = std::fs::read(dir.join("errors-0")).expect("seed");
        let d = super::run_connection(&[&data[1..]]);
        let statuses: Vec<u16> = d
            .iter()
            .map(|x| match x {
                super::Decision::Refused(s, _) => *s,
                _ => 200,
            })
            .collect();
        assert_eq!(statuses, vec![404, 405, 401, 401, 200], "{d:?}");
    }

    /// The hand-written `ws` seeds named `err-*` end in an error, the others
    /// decode without one (so the seeds reach both sides of every rule).
    #[test]
    fn ws_seeds_are_what_they_say() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ws");
        let mut seen = (0, 0);
        for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/ws") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            // Fuzzer-found inputs (named by their SHA-1) may do anything.
            if name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let data = std::fs::read(&path).expect("seed");
            let (limit, mode, k) = (data[0], data[1], usize::from(data[2] % 8));
            let payload = &data[3 + k..];
            let max = super::WS_LIMITS[usize::from(limit) % super::WS_LIMITS.len()];
            let stream = if mode & 1 != 0 {
                super::ws_script(payload, [0; 4])
            } else {
                payload.to_vec()
            };
            let failed = super::ws_decode(&[&stream], max).error.is_some();
            if name.starts_with("err-") {
                assert!(failed, "{name} decodes without an error");
                seen.0 += 1;
            } else if !name.starts_with("round-trip") && !name.starts_with("script-rsv") {
                assert!(!failed, "{name} fails");
                seen.1 += 1;
            }
        }
        assert!(seen.0 >= 20 && seen.1 >= 15, "{seen:?}");
    }

    #[test]
    fn harnesses_accept_empty_and_tiny_inputs() {
        for (_, harness) in TARGETS {
            harness(b"");
            for b in 0..=255u8 {
                harness(&[b]);
            }
        }
    }
}

// The WebSocket transport's messages (issue 26); its replay test is in the module.
mod ws_msg;
pub use ws_msg::ws_msg;
