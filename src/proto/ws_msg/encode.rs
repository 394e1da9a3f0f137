//! The events of a WebSocket connection: each one JSON object, one text
//! message. The same content as the SSE event of the same name (its `data`),
//! with the name inside as `event` and the event id, where the SSE event has
//! an `id:` line, as `id`. Written straight into the caller's buffer, the
//! strings escaped by the SSE encoder's escape pass (byte for byte what
//! `serde_json` writes).

use crate::ids::{EventId, SessionId};
use crate::proto::response::push_decimal;
use crate::proto::sse::{push_body_field, push_json_str};

/// Appends `{"event":"<event>"` (event names are ASCII without quotes).
fn start(out: &mut Vec<u8>, event: &str) {
    out.extend_from_slice(b"{\"event\":");
    push_json_str(out, event.as_bytes());
}

/// Appends `,"<key>":` (keys are ASCII without quotes).
fn key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Appends `,"<key>":"<value>"`, escaped.
fn str_field(out: &mut Vec<u8>, k: &str, value: &str) {
    key(out, k);
    push_json_str(out, value.as_bytes());
}

/// Appends `,"id":"<id>"` (hex digits, a dash and digits: nothing to escape).
fn id_field(out: &mut Vec<u8>, id: EventId) {
    out.extend_from_slice(b",\"id\":\"");
    id.push_to(out);
    out.push(b'"');
}

/// Appends `,"ref":"<ref>"` if there is a ref.
fn ref_field(out: &mut Vec<u8>, ref_: Option<&str>) {
    if let Some(r) = ref_ {
        str_field(out, "ref", r);
    }
}

/// Appends `,"<key>":<n>`.
fn num_field(out: &mut Vec<u8>, k: &str, n: u64) {
    key(out, k);
    push_decimal(out, n);
}

/// Appends an event from the data of its SSE form (`data`, a JSON object, as
/// the server builds it for SSE): `{"event":"<event>","id":"<id>",` and the
/// members of `data`. For the events that have no encoder of their own; the
/// typed ones below write the same.
///
/// `data` must be a JSON object (the server's own text, not a peer's); if it
/// is not one, it is carried as the value of `"data"` so the result is still
/// valid JSON when `data` is.
pub fn encode_event(out: &mut Vec<u8>, event: &str, id: Option<&str>, data: &str) {
    start(out, event);
    if let Some(id) = id {
        str_field(out, "id", id);
    }
    let data = data.trim_matches([' ', '\t', '\r', '\n']);
    match data.strip_prefix('{') {
        Some(members) if members.trim_start_matches([' ', '\t', '\r', '\n']) == "}" => {
            out.push(b'}')
        }
        Some(members) => {
            out.push(b',');
            out.extend_from_slice(members.as_bytes());
        }
        None => {
            key(out, "data");
            out.extend_from_slice(data.as_bytes());
            out.push(b'}');
        }
    }
}

/// Appends a `message` event: `{"event":"message","id":..,"from":..,"body":..}`,
/// with `body_b64` (standard base64 with padding) if the body is not UTF-8,
/// or with `json` (the body itself, a compact JSON value) if `json`. The
/// per-message hot path: no intermediate string, one escape pass.
pub fn encode_message(out: &mut Vec<u8>, id: EventId, from: &str, body: &[u8], json: bool) {
    message_start(out, id, from);
    push_body_field(out, body, json);
    out.push(b'}');
}

/// `{"event":"message","id":"<id>","from":"<from>"`.
fn message_start(out: &mut Vec<u8>, id: EventId, from: &str) {
    out.extend_from_slice(b"{\"event\":\"message\"");
    id_field(out, id);
    str_field(out, "from", from);
}

/// Appends the start of the `message` event of a body that is written as it
/// is kept: a JSON body (`json`), or a text body for which
/// [`crate::proto::sse::plain_json_text`] holds (then up to the string's
/// opening quote). The event is these bytes, the body's own bytes and
/// [`message_tail`]: the same bytes as [`encode_message`], without copying
/// the body into the event (as the SSE path does).
pub fn encode_message_head(out: &mut Vec<u8>, id: EventId, from: &str, json: bool) {
    message_start(out, id, from);
    out.extend_from_slice(if json { b",\"json\":" } else { b",\"body\":\"" });
}

/// What follows the body in the event [`encode_message_head`] starts.
pub fn message_tail(json: bool) -> &'static [u8] {
    if json {
        b"}"
    } else {
        b"\"}"
    }
}

/// The fields of the `ready` event (the first of every connection).
#[derive(Debug, Clone, Copy)]
pub struct Ready<'a> {
    pub session: SessionId,
    pub account: &'a str,
    pub client: &'a str,
    pub node: &'a str,
    pub heartbeat_ms: u64,
    /// The session's epoch, written in hex as in event ids.
    pub epoch: u64,
}

/// Appends `{"event":"ready","account","client","epoch","heartbeat_ms","node","session"}`.
pub fn encode_ready(out: &mut Vec<u8>, r: &Ready<'_>) {
    start(out, "ready");
    str_field(out, "account", r.account);
    str_field(out, "client", r.client);
    str_field(out, "epoch", &format!("{:x}", r.epoch));
    num_field(out, "heartbeat_ms", r.heartbeat_ms);
    str_field(out, "node", r.node);
    str_field(out, "session", &r.session.to_string());
    out.push(b'}');
}

/// Appends `{"event":"gap","after":"<event id>","reason":"<reason>"}`:
/// messages after `after` could not be kept.
pub fn encode_gap(out: &mut Vec<u8>, after: &str, reason: &str) {
    start(out, "gap");
    str_field(out, "after", after);
    str_field(out, "reason", reason);
    out.push(b'}');
}

/// Appends `{"event":"peer-gone","id":"<id>","peer":"<client>","reason":".."}`:
/// a retained event with an id, like a message.
pub fn encode_peer_gone(out: &mut Vec<u8>, id: EventId, peer: &str, reason: &str) {
    start(out, "peer-gone");
    id_field(out, id);
    str_field(out, "peer", peer);
    str_field(out, "reason", reason);
    out.push(b'}');
}

/// Appends `{"event":"replaced","node":"<node>","session":"<session>"|null}`:
/// the newer connection's session (`None`: it is on another node, which
/// took the session over).
pub fn encode_replaced(out: &mut Vec<u8>, session: Option<SessionId>, node: &str) {
    start(out, "replaced");
    str_field(out, "node", node);
    match session {
        Some(s) => str_field(out, "session", &s.to_string()),
        None => out.extend_from_slice(b",\"session\":null"),
    }
    out.push(b'}');
}

/// Appends `{"event":"reconnect","reason":"draining","retry_ms":<ms>}`: the
/// node is draining; the client reconnects after `retry_ms`.
pub fn encode_reconnect(out: &mut Vec<u8>, retry_ms: u64) {
    start(out, "reconnect");
    str_field(out, "reason", "draining");
    num_field(out, "retry_ms", retry_ms);
    out.push(b'}');
}

/// Appends `{"event":"accepted","ref":"<ref>","id":"<id>"}` (no `ref` if the
/// send had none): what `202 {"status":"accepted","id"}` says over HTTP.
pub fn encode_accepted(out: &mut Vec<u8>, ref_: Option<&str>, id: EventId) {
    start(out, "accepted");
    ref_field(out, ref_);
    id_field(out, id);
    out.push(b'}');
}

/// Appends `{"event":"error","ref":"<ref>","error":"<code>","message":".."}`
/// (no `ref` if the command had none or it could not be read).
pub fn encode_error(out: &mut Vec<u8>, ref_: Option<&str>, code: &str, message: &str) {
    start(out, "error");
    ref_field(out, ref_);
    str_field(out, "error", code);
    str_field(out, "message", message);
    out.push(b'}');
}

/// A client in a `clients` answer (an entry of `GET /v1/clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEntry<'a> {
    pub client: &'a str,
    /// `agent` or `console`.
    pub role: &'a str,
    /// Has a receive connection (`"online"`), else held (`"held"`).
    pub online: bool,
    pub since_ms: u64,
}

/// Appends `{"event":"clients","ref":"<ref>","clients":[{"client","role","state","since_ms"}..]}`,
/// the clients in the order given.
pub fn encode_clients<'c>(
    out: &mut Vec<u8>,
    ref_: Option<&str>,
    clients: impl IntoIterator<Item = ClientEntry<'c>>,
) {
    start(out, "clients");
    ref_field(out, ref_);
    out.extend_from_slice(b",\"clients\":[");
    for (i, c) in clients.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"client\":");
        push_json_str(out, c.client.as_bytes());
        str_field(out, "role", c.role);
        num_field(out, "since_ms", c.since_ms);
        str_field(out, "state", if c.online { "online" } else { "held" });
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}
