//! Close frames: the status codes (RFC 6455 §7.4), the validation of a
//! received Close payload, and the closing handshake's state.

use super::frame::FrameError;

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The endpoint is going away (server shutdown).
pub const GOING_AWAY: u16 = 1001;
/// Protocol error.
pub const PROTOCOL_ERROR: u16 = 1002;
/// Data of a type the endpoint does not accept.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// Data inconsistent with the message type (text that is not UTF-8).
pub const INVALID_PAYLOAD: u16 = 1007;
/// Policy violation.
pub const POLICY_VIOLATION: u16 = 1008;
/// A message too big to process.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// Unexpected condition on the server.
pub const INTERNAL_ERROR: u16 = 1011;
/// The server restarts (drain): reconnect (IANA registry).
pub const SERVICE_RESTART: u16 = 1012;

/// Longest reason that fits in a Close frame with its 2-byte code (control
/// frames carry at most 125 bytes).
pub const MAX_REASON: usize = 123;

/// True if `code` may be sent in a Close frame: 1000-1003, 1007-1014 (RFC
/// 6455 §7.4.1 and the IANA registry: 1012 service restart, 1013 try again
/// later, 1014 bad gateway; the gateway itself closes with 1012 when it
/// drains, so a client that echoes it must not be refused), 3000-4999
/// (registered and private use). Never 1004-1006 and 1015 (reserved,
/// "MUST NOT be set as a status code in a Close control frame"), nor
/// anything below 1000 or in 1016-2999 (unassigned). Autobahn|Testsuite 7.7.x
/// sends the valid ones and 7.9.x the invalid ones.
pub fn valid_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A received Close frame's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The status code.
    pub code: u16,
    /// The reason (UTF-8, at most [`MAX_REASON`] bytes, often empty).
    pub reason: std::borrow::Cow<'a, str>,
}

/// Checks a received Close payload: empty (no status), or a valid status
/// code ([`valid_code`]) and a UTF-8 reason. A 1-byte payload or an invalid
/// code is [`FrameError::CloseCode`] (1002); a reason that is not UTF-8 is
/// [`FrameError::CloseReason`] (1007: Autobahn 7.5.1 accepts 1002 or 1007,
/// and 1007 is what a text message's bad UTF-8 gets). Returns the code and
/// the reason's bytes.
pub fn parse_payload(payload: &[u8]) -> Result<Option<(u16, &str)>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::CloseCode(0)),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !valid_code(code) {
                return Err(FrameError::CloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::CloseReason)?;
            Ok(Some((code, reason)))
        }
    }
}

/// The code to answer a received Close with: the same code (RFC 6455 §5.5.1:
/// "typically echos the status code it received"), or 1000 when it had none.
pub fn reply_code(received: Option<u16>) -> u16 {
    received.unwrap_or(NORMAL)
}

/// Where a connection is in the closing handshake (RFC 6455 §7.1.2). One byte;
/// the server keeps it with the connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Closing {
    /// Neither side has sent a Close.
    #[default]
    Open,
    /// The server sent its Close and waits for the client's (with a timeout);
    /// it sends nothing more, and data frames that still arrive are dropped.
    Sent,
    /// Both Closes are out: close the TCP connection (the server closes first,
    /// §7.1.1).
    Done,
}

impl Closing {
    /// The server wants to close. True if a Close frame must be sent now
    /// (the first time); false if one was already sent or the handshake is over.
    pub fn send(&mut self) -> bool {
        if *self == Closing::Open {
            *self = Closing::Sent;
            true
        } else {
            false
        }
    }

    /// A Close arrived with `code` (`None`: empty payload). Returns the code
    /// of the Close to send in reply, or `None` if the server had already
    /// sent its own (the handshake is then complete). Either way the state
    /// becomes [`Closing::Done`]: after the reply, close the connection.
    pub fn received(&mut self, code: Option<u16>) -> Option<u16> {
        let reply = (*self == Closing::Open).then(|| reply_code(code));
        *self = Closing::Done;
        reply
    }

    /// True once no more frames may be sent (a Close went out).
    pub fn sent(&self) -> bool {
        *self != Closing::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes() {
        let valid = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ];
        let invalid = [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ];
        for c in valid {
            assert!(valid_code(c), "{c}");
        }
        for c in invalid {
            assert!(!valid_code(c), "{c}");
        }
        assert_eq!(
            (0..=u16::MAX).filter(|&c| valid_code(c)).count(),
            4 + 8 + 2000
        );
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_payload(b""), Ok(None));
        assert_eq!(parse_payload(b"\x03"), Err(FrameError::CloseCode(0)));
        assert_eq!(parse_payload(b"\x03\xe8"), Ok(Some((1000, ""))));
        assert_eq!(parse_payload(b"\x03\xe9bye"), Ok(Some((1001, "bye"))));
        assert_eq!(parse_payload(b"\x0f\xa0\xce\xba"), Ok(Some((4000, "κ"))));
        assert_eq!(parse_payload(b"\x03\xed"), Err(FrameError::CloseCode(1005)));
        assert_eq!(parse_payload(b"\x00\x00"), Err(FrameError::CloseCode(0)));
        assert_eq!(
            parse_payload(b"\xff\xffa"),
            Err(FrameError::CloseCode(65535))
        );
        assert_eq!(
            parse_payload(b"\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"),
            Err(FrameError::CloseReason)
        );
        assert_eq!(parse_payload(b"\x03\xe8\xce"), Err(FrameError::CloseReason));
        // The code is judged before the reason.
        assert_eq!(
            parse_payload(b"\x03\xec\xff"),
            Err(FrameError::CloseCode(1004))
        );
        assert_eq!(FrameError::CloseCode(5).close_code(), PROTOCOL_ERROR);
        assert_eq!(FrameError::CloseReason.close_code(), INVALID_PAYLOAD);
    }

    #[test]
    fn closing_handshake() {
        // The client closes: echo its code (or 1000), then done.
        let mut c = Closing::default();
        assert!(!c.sent());
        assert_eq!(c.received(Some(1001)), Some(1001));
        assert_eq!(c, Closing::Done);
        assert!(!c.send());
        let mut c = Closing::default();
        assert_eq!(c.received(None), Some(NORMAL));
        // The server closes: send once, then the client's Close completes it.
        let mut c = Closing::default();
        assert!(c.send());
        assert!(c.sent());
        assert!(!c.send());
        assert_eq!(c.received(Some(1000)), None);
        assert_eq!(c, Closing::Done);
        assert_eq!(c.received(Some(1000)), None);
    }
}
