//! Sans-IO protocol code: HTTP/1.1 request heads, chunked bodies, responses,
//! Server-Sent Events, the WebSocket framing and the WebSocket transport's JSON
//! messages. Nothing in here touches a socket or a clock.

pub mod chunked;
pub mod cors;
pub mod events;
pub mod head;
pub mod json_body;
pub mod request;
pub mod response;
pub mod route;
pub mod sse;
pub mod stream;
pub mod ws;
pub mod ws_msg;

/// Outcome of feeding bytes to an incremental parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse<T> {
    /// More bytes are needed before anything can be decided.
    Partial,
    /// A complete item was parsed.
    Complete(T),
}
