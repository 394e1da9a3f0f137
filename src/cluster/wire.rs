//! The messages nodes exchange over Redis pub/sub, and their binary encoding
//! (sans-IO: pure encode/decode over byte slices, typed errors, no panics).
//!
//! Layout: one tag byte, then the fields in order. Integers are 8-byte
//! little-endian; strings and byte strings are a 4-byte little-endian length
//! followed by the bytes. Every length is checked against what is left
//! before anything is allocated.

/// A message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    /// Deliver a message to `to`, which the receiving node holds. `json`:
    /// the body is compact JSON, delivered as a value (tag
    /// [`DELIVER_JSON`] instead of [`DELIVER`], same fields).
    Deliver {
        req: u64,
        reply_node: String,
        account: String,
        from: String,
        to: String,
        body: Vec<u8>,
        json: bool,
    },
    /// The answer to `Deliver`: `status` 0 = accepted with event id `id`, 1 = offline, 2 = overloaded.
    Delivered { req: u64, status: u8, id: String },
    /// Hand the session of `client` over to `reply_node` (its client reconnected there).
    Takeover {
        req: u64,
        reply_node: String,
        account: String,
        client: String,
    },
    /// The answer to `Takeover`: the encoded session of `client`, if the node
    /// still had it. Also sent unasked (`req` 0, or a request the asker gave
    /// up on) by a node that finds it holds a session another node owns: the
    /// owner then takes over what that session had not delivered.
    /// A snapshot carries `ack` (not 0) and the sending node (`reply_node`):
    /// the receiver answers `Delivered` with `req` = `ack`, and the sender
    /// publishes it again until it is answered (pub/sub may lose it); the
    /// receiver takes each (`reply_node`, `ack`) once.
    Snapshot {
        req: u64,
        ack: u64,
        reply_node: String,
        account: String,
        client: String,
        session: Option<Vec<u8>>,
    },
    /// `client` exchanged a message with `peer` (conversation tracking for peer-gone).
    Touch {
        account: String,
        client: String,
        peer: String,
    },
    /// `client` went offline for good (broadcast): its partners get peer-gone.
    Gone {
        account: String,
        client: String,
        reason: String,
    },
}

/// Why bytes could not be decoded (a peer node's fault, or corruption).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The input ended inside a field.
    Truncated,
    /// Unknown message tag.
    UnknownTag(u8),
    /// A string field is not UTF-8.
    BadUtf8,
    /// Bytes left over after the last field.
    TrailingBytes,
}

const DELIVER: u8 = 1;
const DELIVERED: u8 = 2;
const TAKEOVER: u8 = 3;
const SNAPSHOT: u8 = 4;
const TOUCH: u8 = 5;
const GONE: u8 = 6;
/// `Snapshot` with the account and client it is for (tag 4, without them, is
/// what nodes before 2026-12-07 sent; still decoded).
const SNAPSHOT_FOR: u8 = 7;
/// `Deliver` of a JSON body (since 2026-12-07; a plain body still goes as
/// [`DELIVER`], which every node reads). A node older than that answers
/// neither: the send times out for its sender instead of arriving as text.
const DELIVER_JSON: u8 = 8;

/// Appends encoded fields to a buffer.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }
}

/// Reads fields from a byte slice.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let b = self.take(4)?;
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        self.take(n)
    }
    pub fn string(&mut self) -> Result<String, WireError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_string)
            .map_err(|_| WireError::BadUtf8)
    }
    /// True when everything was read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// Fails unless everything was read.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

impl Wire {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Wire::Deliver {
                req,
                reply_node,
                account,
                from,
                to,
                body,
                json,
            } => {
                w.u8(if *json { DELIVER_JSON } else { DELIVER })
                    .u64(*req)
                    .str(reply_node)
                    .str(account)
                    .str(from)
                    .str(to)
                    .bytes(body);
            }
            Wire::Delivered { req, status, id } => {
                w.u8(DELIVERED).u64(*req).u8(*status).str(id);
            }
            Wire::Takeover {
                req,
                reply_node,
                account,
                client,
            } => {
                w.u8(TAKEOVER)
                    .u64(*req)
                    .str(reply_node)
                    .str(account)
                    .str(client);
            }
            Wire::Snapshot {
                req,
                ack,
                reply_node,
                account,
                client,
                session,
            } => {
                w.u8(SNAPSHOT_FOR)
                    .u64(*req)
                    .u64(*ack)
                    .str(reply_node)
                    .str(account)
                    .str(client);
                match session {
                    Some(s) => w.u8(1).bytes(s),
                    None => w.u8(0),
                };
            }
            Wire::Touch {
                account,
                client,
                peer,
            } => {
                w.u8(TOUCH).str(account).str(client).str(peer);
            }
            Wire::Gone {
                account,
                client,
                reason,
            } => {
                w.u8(GONE).str(account).str(client).str(reason);
            }
        }
        w.0
    }

    /// Decodes one message; the whole input must be exactly one message.
    pub fn decode(buf: &[u8]) -> Result<Wire, WireError> {
        let mut r = Reader::new(buf);
        let m = match r.u8()? {
            tag @ (DELIVER | DELIVER_JSON) => Wire::Deliver {
                req: r.u64()?,
                reply_node: r.string()?,
                account: r.string()?,
                from: r.string()?,
                to: r.string()?,
                body: r.bytes()?.to_vec(),
                json: tag == DELIVER_JSON,
            },
            DELIVERED => Wire::Delivered {
                req: r.u64()?,
                status: r.u8()?,
                id: r.string()?,
            },
            TAKEOVER => Wire::Takeover {
                req: r.u64()?,
                reply_node: r.string()?,
                account: r.string()?,
                client: r.string()?,
            },
            tag @ (SNAPSHOT | SNAPSHOT_FOR) => {
                let req = r.u64()?;
                let (ack, reply_node, account, client) = if tag == SNAPSHOT_FOR {
                    (r.u64()?, r.string()?, r.string()?, r.string()?)
                } else {
                    (0, String::new(), String::new(), String::new())
                };
                let session = match r.u8()? {
                    0 => None,
                    _ => Some(r.bytes()?.to_vec()),
                };
                Wire::Snapshot {
                    req,
                    ack,
                    reply_node,
                    account,
                    client,
                    session,
                }
            }
            TOUCH => Wire::Touch {
                account: r.string()?,
                client: r.string()?,
                peer: r.string()?,
            },
            GONE => Wire::Gone {
                account: r.string()?,
                client: r.string()?,
                reason: r.string()?,
            },
            t => return Err(WireError::UnknownTag(t)),
        };
        r.finish()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Wire> {
        vec![
            Wire::Deliver {
                req: 7,
                reply_node: "n1".into(),
                account: "acme".into(),
                from: "console-1".into(),
                to: "agent-1".into(),
                body: vec![0, 255, 10, 13],
                json: false,
            },
            Wire::Deliver {
                req: 8,
                reply_node: "n1".into(),
                account: "acme".into(),
                from: "console-1".into(),
                to: "agent-1".into(),
                body: b"{\"cmd\":\"backup\"}".to_vec(),
                json: true,
            },
            Wire::Delivered {
                req: u64::MAX,
                status: 0,
                id: "abc-1".into(),
            },
            Wire::Takeover {
                req: 1,
                reply_node: "n2".into(),
                account: "a".into(),
                client: "c".into(),
            },
            Wire::Snapshot {
                req: 2,
                ack: 5,
                reply_node: "n1".into(),
                account: "a".into(),
                client: "c".into(),
                session: Some(vec![1, 2, 3]),
            },
            Wire::Snapshot {
                req: 3,
                ack: 0,
                reply_node: "n1".into(),
                account: "a".into(),
                client: "c".into(),
                session: None,
            },
            Wire::Touch {
                account: "a".into(),
                client: "b".into(),
                peer: "c".into(),
            },
            Wire::Gone {
                account: "a".into(),
                client: "b".into(),
                reason: "offline".into(),
            },
        ]
    }

    #[test]
    fn round_trip() {
        for m in samples() {
            assert_eq!(Wire::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for m in samples() {
            let b = m.encode();
            for n in 0..b.len() {
                assert!(Wire::decode(&b[..n]).is_err(), "{m:?} cut at {n}");
            }
            let mut longer = b.clone();
            longer.push(0);
            assert_eq!(Wire::decode(&longer), Err(WireError::TrailingBytes));
        }
    }

    #[test]
    fn the_older_snapshot_layout_still_decodes() {
        let mut b = vec![SNAPSHOT];
        b.extend_from_slice(&9u64.to_le_bytes());
        b.push(0);
        assert_eq!(
            Wire::decode(&b),
            Ok(Wire::Snapshot {
                req: 9,
                ack: 0,
                reply_node: String::new(),
                account: String::new(),
                client: String::new(),
                session: None
            })
        );
    }

    /// A plain `Deliver` is encoded as before 2026-12-07 (tag 1, which
    /// older nodes read); a JSON one differs only in its tag.
    #[test]
    fn deliver_tags_plain_and_json() {
        let plain = Wire::Deliver {
            req: 1,
            reply_node: "n".into(),
            account: "a".into(),
            from: "f".into(),
            to: "t".into(),
            body: b"[1]".to_vec(),
            json: false,
        };
        let mut b = vec![DELIVER];
        b.extend_from_slice(&1u64.to_le_bytes());
        for s in ["n", "a", "f", "t", "[1]"] {
            b.extend_from_slice(&(s.len() as u32).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        assert_eq!(plain.encode(), b);
        assert_eq!(Wire::decode(&b), Ok(plain.clone()));
        b[0] = DELIVER_JSON;
        let Wire::Deliver { json, .. } = Wire::decode(&b).expect("decodes") else {
            panic!("not a Deliver");
        };
        assert!(json);
        let json_deliver = Wire::Deliver {
            req: 1,
            reply_node: "n".into(),
            account: "a".into(),
            from: "f".into(),
            to: "t".into(),
            body: b"[1]".to_vec(),
            json: true,
        };
        assert_eq!(json_deliver.encode(), b);
    }

    #[test]
    fn huge_length_does_not_allocate() {
        let mut b = vec![TOUCH];
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Wire::decode(&b), Err(WireError::Truncated));
        assert_eq!(Wire::decode(&[99]), Err(WireError::UnknownTag(99)));
        let mut bad = vec![GONE];
        bad.extend_from_slice(&1u32.to_le_bytes());
        bad.push(0xff);
        assert_eq!(Wire::decode(&bad), Err(WireError::BadUtf8));
    }
}
