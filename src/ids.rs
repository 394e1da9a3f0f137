//! Session ids and message event ids.

use std::fmt;

/// A short random session id, rendered as 10 lowercase base32 characters.
/// Stored as a `u64` so that a connection carries no allocation for it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

impl SessionId {
    /// A fresh random id.
    pub fn random() -> Self {
        SessionId(random_u64() & ((1 << 50) - 1))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut s = [0u8; 10];
        for (i, c) in s.iter_mut().enumerate() {
            *c = ALPHABET[((self.0 >> (45 - 5 * i)) & 31) as usize];
        }
        // The alphabet is ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&s).unwrap_or("??????????"))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A random `u64` from the operating system's generator.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // getrandom only fails if the OS has no entropy source at all; fall back to time+address.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ (&b as *const _ as u64).rotate_left(32);
    }
    u64::from_le_bytes(b)
}

/// A message's event id: the session epoch (random per session incarnation)
/// and a sequence number within it. Rendered as `<epoch hex>-<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventId {
    pub epoch: u64,
    pub seq: u64,
}

impl EventId {
    /// Parses the rendered form; `None` if it is not one of ours.
    pub fn parse(s: &str) -> Option<EventId> {
        let (e, q) = s.split_once('-')?;
        if e.is_empty() || e.len() > 16 || q.is_empty() || q.len() > 20 {
            return None;
        }
        if !e.bytes().all(|b| b.is_ascii_hexdigit()) || !q.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(EventId {
            epoch: u64::from_str_radix(e, 16).ok()?,
            seq: q.parse().ok()?,
        })
    }
}

impl EventId {
    /// Appends the rendered form (the same text as `Display`) without the
    /// formatting machinery: this runs twice per relayed message.
    pub fn push_to(&self, out: &mut Vec<u8>) {
        let mut hex = [0u8; 16];
        hex[..8].copy_from_slice(&hex8(self.epoch >> 32).to_be_bytes());
        hex[8..].copy_from_slice(&hex8(self.epoch & 0xffff_ffff).to_be_bytes());
        // Without leading zeros, but at least one digit.
        let skip = (self.epoch.leading_zeros() as usize / 4).min(15);
        out.extend_from_slice(&hex[skip..]);
        out.push(b'-');
        crate::proto::response::push_decimal(out, self.seq);
    }
}

/// The 8 lowercase hex digits of `x` (< 2^32), most significant first in the
/// big-endian bytes of the result: the nibbles are spread one per byte, then
/// each becomes '0'..'9' or 'a'..'f' in the same word operations (a random
/// 64-bit epoch has 16 digits, and a digit at a time cost ~120 instructions).
fn hex8(x: u64) -> u64 {
    debug_assert!(x <= u32::MAX as u64);
    let mut v = ((x & 0xffff_0000) << 16) | (x & 0xffff);
    v = ((v & 0x0000_ff00_0000_ff00) << 8) | (v & 0x0000_00ff_0000_00ff);
    v = ((v & 0x00f0_00f0_00f0_00f0) << 4) | (v & 0x000f_000f_000f_000f);
    // 1 in each byte whose nibble is 10 or more.
    let letter = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    v + 0x3030_3030_3030_3030 + letter * (b'a' - b'0' - 10) as u64
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{}", self.epoch, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_push_to_renders_like_display() {
        let mut values = vec![
            0u64,
            1,
            9,
            10,
            15,
            16,
            0xff,
            0x100,
            u64::MAX,
            1 << 52,
            (1 << 52) - 1,
        ];
        for shift in 0..64 {
            values.push(1 << shift);
            values.push((1 << shift) - 1);
            values.push(0xa5a5_a5a5_a5a5_a5a5 >> shift);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x);
            values.push(x >> 12);
        }
        for epoch in values {
            let id = EventId {
                epoch,
                seq: epoch % 1000,
            };
            let mut out = Vec::new();
            id.push_to(&mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                id.to_string(),
                "{epoch:#x}"
            );
        }
    }

    #[test]
    fn session_id_renders_ten_chars() {
        for _ in 0..100 {
            let s = SessionId::random().to_string();
            assert_eq!(s.len(), 10);
            assert!(s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        }
    }

    #[test]
    fn event_id_round_trip() {
        let id = EventId {
            epoch: 0xdead_beef_1234,
            seq: 42,
        };
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
        for bad in [
            "",
            "-",
            "x-1",
            "12-",
            "-5",
            "12-a",
            "12-1-2",
            "11111111111111111-1",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn push_to_matches_display() {
        for (epoch, seq) in [
            (0, 0),
            (1, 9),
            (0xf, 10),
            (0xdead_beef, 1_234_567),
            (u64::MAX, u64::MAX),
            (0x10, 100),
        ] {
            let id = EventId { epoch, seq };
            let mut out = b"x".to_vec();
            id.push_to(&mut out);
            assert_eq!(&out[1..], id.to_string().as_bytes());
        }
    }
}
