//! WebSocket (RFC 6455), sans-IO: the opening handshake, the decoder of
//! client frames (with message reassembly and incremental UTF-8 checks), the
//! encoder of server frames, and the closing handshake. Nothing here reads a
//! socket or a clock; the server wires it to connections.
//!
//! | module | what |
//! |---|---|
//! | [`handshake`] | checks `Upgrade: websocket` requests, computes `Sec-WebSocket-Accept`, writes the `101` |
//! | [`frame`] | [`frame::FrameDecoder`]: client frames to messages, pings, pongs and Close |
//! | [`encode`] | server frames: text (also encoded in place), ping, pong, close |
//! | [`close`] | status codes, Close payload validation, the closing handshake's state |
//! | [`utf8`] | UTF-8 validation across fragments |
//!
//! Memory: the decoder is 32 bytes with no heap memory between messages (the
//! bytes of an incomplete message live in a buffer the caller owns and that
//! exists only while a message is incomplete); the closing state is 1 byte.

pub mod close;
pub mod encode;
pub mod frame;
pub mod handshake;
pub mod utf8;
