//! The WebSocket transport's application messages: the commands a client
//! sends in text messages (`send`, `clients`) and the events the gateway
//! sends back, one JSON object per text message. Sans-IO: [`parse`] takes one
//! complete, reassembled message (the frame layer in `super::ws` checked its
//! UTF-8 and its size against `--max-message`); the encoders append one
//! message's payload to a buffer (the frame layer puts the frame header
//! before it).
//!
//! Client to server:
//!
//! ```text
//! {"type":"send","to":"<client>","body":"<text>"|"body_b64":"<base64>"|"json":<value>,"ref":"<tag>"}
//! {"type":"clients","ref":"<tag>"}
//! ```
//!
//! answered with `{"event":"accepted","ref","id"}`, `{"event":"clients","ref","clients"}`
//! or `{"event":"error","ref","error","message"}`. A command that cannot be
//! carried out is refused with an error event and the connection goes on.
//! Keys other than the six above are ignored (a newer client's additions);
//! a known key twice, or one that does not belong to the command, is refused.
//!
//! Server to client: the SSE events with their name inside the object and
//! their id, if they have one, as `id` (see [`encode`]).

use std::borrow::Cow;

mod encode;
mod parse;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_events;

pub use encode::{
    encode_accepted, encode_clients, encode_error, encode_event, encode_gap, encode_message,
    encode_message_head, encode_peer_gone, encode_ready, encode_reconnect, encode_replaced,
    message_tail, ClientEntry, Ready,
};
pub use parse::parse;

/// Longest `ref` a command may carry, in bytes (after JSON unescaping): a
/// client's tag for matching answers to commands (a counter, a UUID), echoed
/// in the answer, never kept past it.
pub const MAX_REF_LEN: usize = 128;

/// A client's command, borrowing from the message it came in where it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Relay `body` to client `to` of the sender's account (what
    /// `POST /v1/send/<to>` does); answered `accepted` or `error`.
    Send {
        /// A valid client id (`crate::auth::valid_id`).
        to: Cow<'a, str>,
        body: Body<'a>,
        ref_: Option<Cow<'a, str>>,
    },
    /// List the clients of the sender's account (what `GET /v1/clients` does).
    Clients { ref_: Option<Cow<'a, str>> },
}

impl Command<'_> {
    /// The client's tag, to echo in the answer.
    pub fn ref_(&self) -> Option<&str> {
        match self {
            Command::Send { ref_, .. } | Command::Clients { ref_ } => ref_.as_deref(),
        }
    }
}

/// A message body as the relay takes it from an HTTP send: the bytes, and
/// whether they are a compact JSON value (`crate::proto::json_body`) to be
/// delivered as `json` instead of as `body`/`body_b64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body<'a> {
    /// `body`: the string's UTF-8 bytes (borrowed unless it had escapes);
    /// `body_b64`: the decoded bytes; `json`: the value, compacted.
    pub bytes: Cow<'a, [u8]>,
    pub json: bool,
}

/// Why a command was refused: the fault, and the command's `ref` if it could
/// be read (a string of at most [`MAX_REF_LEN`] bytes, given once), so the
/// answer can say which command it refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError<'a> {
    kind: ErrorKind,
    ref_: Option<Cow<'a, str>>,
}

/// The faults of a command. Where the HTTP send path has the same fault, the
/// code is its code (`invalid_recipient`, `payload_too_large`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not one JSON text (a syntax error, trailing bytes, not UTF-8, a number
    /// too large for a double in a field read as a string).
    Malformed,
    /// Valid JSON, but not an object.
    NotAnObject,
    /// `type` names no command.
    UnknownType,
    /// A field the command needs is missing (`type`, `to`, or all of `body`,
    /// `body_b64` and `json`).
    MissingField(&'static str),
    /// A known key appears twice.
    DuplicateField(&'static str),
    /// More than one of `body`, `body_b64` and `json`.
    ConflictingFields,
    /// A known key that the command does not take (`to` or a body in `clients`).
    UnexpectedField(&'static str),
    /// A field that must be a string is not one (`type`, `to`, `body`, `body_b64`, `ref`).
    InvalidField(&'static str),
    /// `body_b64` is not standard base64 with padding.
    BadBase64,
    /// `ref` is longer than [`MAX_REF_LEN`] bytes.
    RefTooLong,
    /// `to` can never be a client id.
    InvalidRecipient,
    /// The body is larger than `--max-message` (`limit`): the decoded bytes of
    /// `body` and `body_b64`, the value as sent of `json` (as HTTP counts a
    /// JSON body before compacting it).
    TooLarge { limit: usize },
}

impl<'a> CommandError<'a> {
    pub(crate) fn new(kind: ErrorKind, ref_: Option<Cow<'a, str>>) -> Self {
        CommandError { kind, ref_ }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The refused command's `ref`, if it could be read.
    pub fn ref_(&self) -> Option<&str> {
        self.ref_.as_deref()
    }

    /// The status the same fault has over HTTP (for the per-status error
    /// metrics): 413 for [`ErrorKind::TooLarge`], else 400.
    pub fn status(&self) -> u16 {
        match self.kind {
            ErrorKind::TooLarge { limit } => {
                super::request::RequestError::TooLarge { limit }.status()
            }
            ErrorKind::InvalidRecipient => super::route::RouteError::InvalidRecipient.status(),
            _ => 400,
        }
    }

    /// Machine-readable code of the `error` event.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::Malformed => "malformed_json",
            ErrorKind::NotAnObject => "not_an_object",
            ErrorKind::UnknownType => "unknown_type",
            ErrorKind::MissingField(_) => "missing_field",
            ErrorKind::DuplicateField(_) => "duplicate_field",
            ErrorKind::ConflictingFields => "conflicting_fields",
            ErrorKind::UnexpectedField(_) => "unexpected_field",
            ErrorKind::InvalidField(_) => "invalid_field",
            ErrorKind::BadBase64 => "bad_base64",
            ErrorKind::RefTooLong => "ref_too_long",
            ErrorKind::InvalidRecipient => super::route::RouteError::InvalidRecipient.code(),
            ErrorKind::TooLarge { limit } => {
                super::request::RequestError::TooLarge { limit }.code()
            }
        }
    }

    /// Human-readable text of the `error` event.
    pub fn message(&self) -> String {
        match self.kind {
            ErrorKind::Malformed => "the message is not one valid JSON text".into(),
            ErrorKind::NotAnObject => "a command is a JSON object".into(),
            ErrorKind::UnknownType => {
                "unknown type; the commands are \"send\" and \"clients\"".into()
            }
            ErrorKind::MissingField("body") => {
                "a send carries one of \"body\", \"body_b64\" and \"json\"".into()
            }
            ErrorKind::MissingField(f) => format!("the command needs \"{f}\""),
            ErrorKind::DuplicateField(f) => format!("\"{f}\" appears more than once"),
            ErrorKind::ConflictingFields => {
                "a send carries only one of \"body\", \"body_b64\" and \"json\"".into()
            }
            ErrorKind::UnexpectedField(f) => format!("\"{f}\" does not belong to this command"),
            ErrorKind::InvalidField(f) => format!("\"{f}\" must be a string"),
            ErrorKind::BadBase64 => "\"body_b64\" is not standard base64 with padding".into(),
            ErrorKind::RefTooLong => format!("\"ref\" is longer than {MAX_REF_LEN} bytes"),
            ErrorKind::InvalidRecipient => super::route::RouteError::InvalidRecipient.message(""),
            ErrorKind::TooLarge { limit } => {
                super::request::RequestError::TooLarge { limit }.message()
            }
        }
    }

    /// Appends the `error` event that answers the command.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_error(out, self.ref_(), self.code(), &self.message());
    }
}
