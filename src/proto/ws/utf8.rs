//! Incremental UTF-8 validation across the fragments of a text message.
//!
//! A fragment may end inside a code point; [`Utf8::feed`] remembers what the
//! next bytes must be (at most 3 bytes' worth, in 3 bytes of state) and fails
//! at the first byte after which no continuation could make the text valid
//! (Autobahn|Testsuite 6.4.x: fail fast, without waiting for the end of the
//! fragment or the message). The rules are RFC 3629's: no overlong forms, no
//! surrogates (U+D800..U+DFFF), nothing above U+10FFFF.

/// The text is not UTF-8 (the message or close reason is refused with 1007).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error;

/// Where a validation stands between two pieces of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8 {
    /// Continuation bytes still expected in the current code point (0: between code points).
    need: u8,
    /// The next byte must be in `lo..=hi` (the second byte of E0, ED, F0 and
    /// F4 sequences has a narrower range than `80..=BF`).
    lo: u8,
    hi: u8,
}

impl Default for Utf8 {
    fn default() -> Self {
        Utf8 {
            need: 0,
            lo: 0x80,
            hi: 0xBF,
        }
    }
}

impl Utf8 {
    /// True between code points: the text so far is complete UTF-8.
    pub fn is_complete(&self) -> bool {
        self.need == 0
    }

    /// Validates the next piece of text. After an error the state is unspecified.
    pub fn feed(&mut self, mut s: &[u8]) -> Result<(), Utf8Error> {
        // Finish a code point started in an earlier piece.
        while self.need > 0 {
            let Some((&b, rest)) = s.split_first() else {
                return Ok(());
            };
            self.step(b)?;
            s = rest;
        }
        match std::str::from_utf8(s) {
            Ok(_) => Ok(()),
            // Invalid whatever follows.
            Err(e) if e.error_len().is_some() => Err(Utf8Error),
            // A valid prefix of a code point at the end: remember it.
            Err(e) => s[e.valid_up_to()..].iter().try_for_each(|&b| self.step(b)),
        }
    }

    /// One byte through the automaton.
    fn step(&mut self, b: u8) -> Result<(), Utf8Error> {
        if self.need > 0 {
            if b < self.lo || b > self.hi {
                return Err(Utf8Error);
            }
            *self = Utf8 {
                need: self.need - 1,
                ..Utf8::default()
            };
            return Ok(());
        }
        let (need, lo, hi) = match b {
            0x00..=0x7F => return Ok(()),
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            // Continuation bytes without a lead, C0/C1 (overlong), F5..FF.
            _ => return Err(Utf8Error),
        };
        *self = Utf8 { need, lo, hi };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validates `s` whole, split at every point, and byte by byte; all agree
    /// with each other and with `std::str::from_utf8`. Also checks fail-fast:
    /// the shortest failing prefix is exactly where std says the text breaks.
    fn check(s: &[u8]) -> bool {
        let run = |pieces: &[&[u8]]| {
            let mut u = Utf8::default();
            for p in pieces {
                if u.feed(p).is_err() {
                    return false;
                }
            }
            u.is_complete()
        };
        let whole = run(&[s]);
        assert_eq!(whole, std::str::from_utf8(s).is_ok(), "{s:x?}");
        for i in 0..=s.len() {
            assert_eq!(run(&[&s[..i], &s[i..]]), whole, "{s:x?} split at {i}");
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(run(&bytes), whole, "{s:x?} byte by byte");
        // Fail fast: a prefix fails to feed exactly when std finds an error
        // that no continuation can repair.
        for i in 0..=s.len() {
            let fed = Utf8::default().feed(&s[..i]).is_ok();
            let repairable = match std::str::from_utf8(&s[..i]) {
                Ok(_) => true,
                Err(e) => e.error_len().is_none(),
            };
            assert_eq!(fed, repairable, "{s:x?} prefix {i}");
        }
        whole
    }

    #[test]
    fn valid_text() {
        for s in [
            "",
            "hello",
            "κόσμε",
            "\u{80}\u{7ff}\u{800}\u{d7ff}\u{e000}\u{fffd}\u{ffff}\u{10000}\u{10ffff}",
            "Hello-µ@ßöäüàá-UTF-8!!",
        ] {
            assert!(check(s.as_bytes()), "{s}");
        }
    }

    #[test]
    fn invalid_text() {
        let bad: &[&[u8]] = &[
            // Overlong forms (Autobahn 6.8, 6.9).
            b"\xc0\xaf",
            b"\xc1\xbf",
            b"\xe0\x80\xaf",
            b"\xe0\x9f\xbf",
            b"\xf0\x80\x80\xaf",
            b"\xf0\x8f\xbf\xbf",
            // Surrogates U+D800..U+DFFF (6.11, 6.12).
            b"\xed\xa0\x80",
            b"\xed\xbf\xbf",
            b"\xed\xa0\x80\xed\xb0\x80",
            // Above U+10FFFF (6.3.2).
            b"\xf4\x90\x80\x80",
            b"\xf5\x80\x80\x80",
            b"\xf7\xbf\xbf\xbf",
            b"\xf8\x88\x80\x80\x80",
            b"\xfe",
            b"\xff",
            // Lone continuation bytes, truncated sequences (6.5, 6.6).
            b"\x80",
            b"a\xbf",
            b"\xc2",
            b"\xe1\x80",
            b"\xf1\x80\x80",
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            b"\xe1\x80a",
        ];
        for s in bad {
            assert!(!check(s), "{s:x?}");
        }
    }

    #[test]
    fn every_two_byte_prefix_agrees_with_std() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let s = [a, b];
                let mut u = Utf8::default();
                let ok = u.feed(&s).is_ok() && u.is_complete();
                assert_eq!(ok, std::str::from_utf8(&s).is_ok(), "{s:x?}");
            }
        }
    }
}
