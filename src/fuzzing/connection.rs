//! The `connection` fuzz target.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------
// Corpus replay (stable)
// ---------------------------------------------------------------------------
// connection
// ---------------------------------------------------------------------------

/// What the connection state machine decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// Refused with this status and code.
    Refused(u16, &'static str),
    /// Accepted for this route (its `Debug` form, as the route borrows from
    /// the request), on behalf of this account/client.
    Accepted(String, String, String),
}

/// Drives a whole client connection without sockets and with a fixed clock:
/// bytes (in fuzzer-chosen pieces) through the request reader, each complete
/// request through routing and token verification at `NOW`, until the
/// connection would be closed.
///
/// Layout: a split count and selectors (as for `request`), then the bytes the
/// client sends. Tokens in the input are verified with the harness secret;
/// the seed corpus holds valid ones (signed at `NOW`).
///
/// Properties:
/// * The same decisions, in the same order, however the bytes arrive.
/// * A request is accepted only with a token that verifies at `NOW`, for the
///   route's method, and a send's recipient is exactly the path suffix.
/// * Every refusal is one of the statuses the gateway documents, and a
///   request error ends the connection (nothing after it is decided).
/// * A connection that asked to close (`Connection: close`, HTTP/1.0) decides
///   nothing after that request, and a receive route ends request processing.
pub fn connection(data: &[u8]) {
    let mut inp = Input::new(data);
    let selectors = inp.splits();
    let input = inp.rest();
    let whole = run_connection(&[input]);
    let split = run_connection(&pieces(input, &selectors));
    assert!(
        split == whole,
        "connection: split gives {split:?}, whole gives {whole:?}; input {}",
        show(input)
    );
}

pub(super) fn run_connection(pieces: &[&[u8]]) -> Vec<Decision> {
    use crate::proto::route::{route, Route};
    let verifier = Verifier::new(SECRET);
    let limits = Limits::default();
    let max_body = 64 * 1024;
    let mut reader = RequestReader::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match reader.feed(&buf, &limits, max_body) {
                Ok((n, None)) => {
                    buf.drain(..n.min(buf.len()));
                    if n == 0 {
                        break;
                    }
                }
                Ok((n, Some(req))) => {
                    buf.drain(..n.min(buf.len()));
                    let close = req.head.close;
                    let (d, receive) = match route(&req.head) {
                        Err(e) => {
                            let _ = e.message(req.head.path());
                            (Decision::Refused(e.status(), e.code()), false)
                        }
                        Ok((r, token)) => match verifier.verify(&token, NOW) {
                            Err(e) => (Decision::Refused(401, e.code()), false),
                            Ok(id) => {
                                assert!(id.exp > NOW, "connection: accepted an expired token");
                                assert!(
                                    crate::auth::valid_id(&id.account)
                                        && crate::auth::valid_id(&id.client)
                                );
                                if let Route::Send { to } = &r {
                                    assert!(crate::auth::valid_id(to));
                                    assert!(req.head.path().starts_with("/v1/send/"));
                                    assert_eq!(req.head.method, crate::proto::head::Method::Post);
                                } else {
                                    assert_eq!(req.head.method, crate::proto::head::Method::Get);
                                }
                                let receive = matches!(r, Route::Receive { .. });
                                (
                                    Decision::Accepted(
                                        format!("{r:?}"),
                                        id.account,
                                        id.client.to_string(),
                                    ),
                                    receive,
                                )
                            }
                        },
                    };
                    if let Decision::Refused(status, code) = &d {
                        assert!(
                            [401, 404, 405].contains(status)
                                || (*status == 400 && *code == "invalid_recipient"),
                            "connection: unexpected status {status}"
                        );
                    }
                    out.push(d);
                    if close || receive {
                        return out;
                    }
                }
                Err(e) => {
                    assert!(
                        [400, 413, 414, 431, 501, 505].contains(&e.status()),
                        "connection: unexpected status {}",
                        e.status()
                    );
                    out.push(Decision::Refused(e.status(), e.code()));
                    return out;
                }
            }
        }
    }
    out
}
