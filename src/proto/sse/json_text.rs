//! JSON string escaping of message bodies, in blocks of 8, 16 or 64 bytes
//! (the `flagged*` tests, SSE2 and AVX2 on x86-64), and the UTF-8 check
//! done in the same pass.

/// True if `s` is UTF-8 text that a JSON string holds as it is: no byte
/// below 0x20, no `"` and no `\` (what [`push_json_text`] would escape).
/// The escape pass's scan, without copying anything.
pub fn plain_json_text(s: &[u8]) -> bool {
    matches!(next_special(s, 0, &mut false), Ok(None))
}

/// Not UTF-8 (found by [`next_special`]).
struct NotUtf8;

/// From `i`, the position of the next byte of `s` that JSON escapes (below
/// 0x20, `"` or `\`), or `None` at the end. Unless `*valid`, checks on the
/// way that `s` is UTF-8: from its first byte of 0x80 or above, the rest is
/// checked once with `std::str::from_utf8` (the bytes before were ASCII, so no
/// character starts earlier) and `*valid` is set.
#[inline(always)]
fn next_special(s: &[u8], mut i: usize, valid: &mut bool) -> Result<Option<usize>, NotUtf8> {
    loop {
        i = skip_clean(s, i, *valid);
        let Some(&b) = s.get(i) else {
            return Ok(None);
        };
        if b >= 0x80 && !*valid {
            if std::str::from_utf8(&s[i..]).is_err() {
                return Err(NotUtf8);
            }
            *valid = true;
        }
        if b < 0x20 || b == b'"' || b == b'\\' {
            return Ok(Some(i));
        }
        i += 1;
    }
}

/// From `i`, past the 64-, 16- and 8-byte blocks of `s` with no byte below
/// 0x20, no `"`, no `\` (and, unless `valid`, no byte of 0x80 or above):
/// where the bytes must be looked at one by one, or the end of `s`.
#[inline(always)]
fn skip_clean(s: &[u8], mut i: usize, valid: bool) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if s.len().saturating_sub(i) >= AVX2_MIN && std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            i = unsafe { skip_clean64_avx2(s, i, !valid) };
        }
        while i + 64 <= s.len() && !flagged64(&s[i..i + 64], !valid) {
            i += 64;
        }
    }
    loop {
        #[cfg(target_arch = "x86_64")]
        if i + 16 <= s.len() && !flagged16(&s[i..i + 16], !valid) {
            i += 16;
            continue;
        }
        if i + 8 <= s.len() && !flagged8(&s[i..i + 8], !valid) {
            i += 8;
            continue;
        }
        return i;
    }
}

/// True if one of the 8 bytes of `chunk` is below 0x20, `"` or `\`, or, with
/// `high`, 0x80 or above (may also flag a byte next to such a byte: flagged
/// blocks are looked at byte by byte).
fn flagged8(chunk: &[u8], high: bool) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut b = [0u8; 8];
    b.copy_from_slice(&chunk[..8]);
    let w = u64::from_le_bytes(b);
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let below_space = w.wrapping_sub(LO * 0x20) & !w & HI;
    let top = if high { w & HI } else { 0 };
    (below_space | zero(w ^ (LO * b'"' as u64)) | zero(w ^ (LO * b'\\' as u64)) | top) != 0
}

/// True if one of the 16 bytes of `chunk` is below 0x20, `"` or `\`, or,
/// with `high`, 0x80 or above (SSE2, which every x86-64 CPU has).
#[cfg(target_arch = "x86_64")]
fn flagged16(chunk: &[u8], high: bool) -> bool {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    debug_assert!(chunk.len() >= 16);
    // SAFETY: SSE2 is part of the x86-64 baseline; the unaligned load reads 16
    // bytes and `chunk` has at least 16 (checked by the caller).
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr() as *const __m128i);
        // min(v, 0x1f) == v exactly for the bytes <= 0x1f (unsigned).
        let ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        let special = _mm_movemask_epi8(_mm_or_si128(ctl, _mm_or_si128(quote, backslash)));
        // The sign bits of the bytes themselves are the bytes >= 0x80.
        (special | if high { _mm_movemask_epi8(v) } else { 0 }) != 0
    }
}

/// Shortest rest of a text that [`skip_clean`] scans with AVX2 (where the
/// CPU has it); shorter ones are not worth the feature check.
#[cfg(target_arch = "x86_64")]
const AVX2_MIN: usize = 256;

/// From `i`, past the 64-byte blocks of `s` that [`flagged64`] would pass,
/// two 32-byte AVX2 loads per block (about twice as fast as SSE2 on a large
/// body).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn skip_clean64_avx2(s: &[u8], mut i: usize, high: bool) -> usize {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_min_epu8, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set1_epi8,
    };
    let ctl_max = _mm256_set1_epi8(0x1f);
    let quote = _mm256_set1_epi8(b'"' as i8);
    let backslash = _mm256_set1_epi8(b'\\' as i8);
    let special = |v: __m256i| {
        let ctl = _mm256_cmpeq_epi8(_mm256_min_epu8(v, ctl_max), v);
        let q = _mm256_cmpeq_epi8(v, quote);
        let b = _mm256_cmpeq_epi8(v, backslash);
        _mm256_or_si256(ctl, _mm256_or_si256(q, b))
    };
    while i + 64 <= s.len() {
        // SAFETY: bytes i..i + 64 are within `s` (the loop condition); the
        // loads are unaligned.
        let (a, b) = unsafe {
            let p = s.as_ptr().add(i) as *const __m256i;
            (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)))
        };
        let mut m = _mm256_movemask_epi8(_mm256_or_si256(special(a), special(b)));
        if high {
            m |= _mm256_movemask_epi8(_mm256_or_si256(a, b));
        }
        if m != 0 {
            break;
        }
        i += 64;
    }
    i
}

/// [`flagged16`] for 64 bytes at once: four loads, one test (a large body is
/// mostly clean blocks, and this is most of the time its scan takes).
#[cfg(target_arch = "x86_64")]
fn flagged64(chunk: &[u8], high: bool) -> bool {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm_setzero_si128,
    };
    assert!(chunk.len() >= 64);
    // SAFETY: SSE2 is part of the x86-64 baseline; the four unaligned loads
    // read bytes 0..64 of `chunk`, which has at least 64 (asserted above).
    unsafe {
        let p = chunk.as_ptr() as *const __m128i;
        let (ctl_max, quote, backslash) = (
            _mm_set1_epi8(0x1f),
            _mm_set1_epi8(b'"' as i8),
            _mm_set1_epi8(b'\\' as i8),
        );
        let mut special = _mm_setzero_si128();
        let mut any = _mm_setzero_si128();
        for k in 0..4 {
            let v = _mm_loadu_si128(p.add(k));
            let ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, ctl_max), v);
            let q = _mm_cmpeq_epi8(v, quote);
            let b = _mm_cmpeq_epi8(v, backslash);
            special = _mm_or_si128(special, _mm_or_si128(ctl, _mm_or_si128(q, b)));
            any = _mm_or_si128(any, v);
        }
        (_mm_movemask_epi8(special) | if high { _mm_movemask_epi8(any) } else { 0 }) != 0
    }
}

/// Appends `s` (valid UTF-8) as a JSON string, escaped exactly as
/// `serde_json` does: `"` and `\`, the short forms `\b \t \n \f \r`, and
/// `\u00XX` for the other control characters; everything else as is.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &[u8]) {
    escape_json(out, s, true);
}

/// [`push_json_str`] for bytes that may not be UTF-8: returns false, and
/// appends nothing, if they are not. An ASCII body is checked in the same
/// pass that escapes it; from its first byte of 0x80 or above on, the rest is
/// checked once with `std::str::from_utf8` (the bytes before it were ASCII,
/// so no character starts earlier).
pub(crate) fn push_json_text(out: &mut Vec<u8>, s: &[u8]) -> bool {
    escape_json(out, s, false)
}

/// The escape pass of [`push_json_str`] and [`push_json_text`].
///
/// Sixteen (SSE2 on x86-64) or eight bytes at a time: a block with no byte
/// below 0x20, no `"`, no `\` (and, until the text is known to be valid,
/// no byte of 0x80 or above) is copied in one run; only blocks that have one
/// are looked at byte by byte. A 64 KiB text body is escaped several times
/// faster than with `serde_json`.
fn escape_json(out: &mut Vec<u8>, s: &[u8], mut valid: bool) -> bool {
    let start = out.len();
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut run = 0; // start of the bytes not yet copied
    loop {
        let i = match next_special(s, run, &mut valid) {
            Ok(Some(i)) => i,
            Ok(None) => break,
            Err(NotUtf8) => {
                out.truncate(start);
                return false;
            }
        };
        let b = s[i];
        out.extend_from_slice(&s[run..i]);
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            _ => b"",
        };
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        } else {
            out.extend_from_slice(short);
        }
        run = i + 1;
    }
    out.extend_from_slice(&s[run..]);
    out.push(b'"');
    true
}
