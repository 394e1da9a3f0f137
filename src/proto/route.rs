//! What a complete request asks for: the endpoint, its method, and the token
//! it carries. Pure: the event loop verifies the token (with the current
//! time) and carries the request out.

use std::borrow::Cow;

use super::head::{query_param, Method, RequestHead};
use super::ws::handshake::{self, Accept, HandshakeError};
use crate::auth::AuthError;

/// A routed request; borrows from the [`RequestHead`] it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'h> {
    /// `GET /v1/receive`, resuming after `last_event_id` (header, else query) if given.
    Receive { last_event_id: Option<String> },
    /// `POST /v1/send/<to>`; `to` is percent-decoded and a valid client id.
    Send { to: Cow<'h, str> },
    /// `GET /v1/clients`.
    Clients,
    /// `OPTIONS` on any `/v1/` path: a CORS preflight, answered without a token.
    Preflight,
    /// `GET /v1/connect` upgraded to WebSocket (the handshake checked),
    /// resuming after `last_event_id` (header, else query) if given.
    Connect {
        last_event_id: Option<String>,
        accept: Box<Accept>,
    },
}

/// Why a request was refused before its token was checked, or why its token is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No such endpoint (404).
    NotFound,
    /// The endpoint takes another method (405); names it.
    MethodNotAllowed(&'static str),
    /// A WebSocket handshake (`Upgrade: websocket`) on a path other than
    /// `/v1/connect`: 400, so the client's handshake fails at once instead
    /// of hanging.
    WebSocketUnsupported,
    /// `/v1/connect` without a valid WebSocket handshake (its status: 426
    /// without `Upgrade: websocket` or with another version, else 400 or 405).
    Handshake(HandshakeError),
    /// No token, or not a bearer token (401).
    Token(AuthError),
    /// `POST /v1/send/<to>` where `to` (percent-decoded) can never be a
    /// client id: empty, too long, or outside `[A-Za-z0-9._-]` (400).
    InvalidRecipient,
}

impl RouteError {
    /// HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            RouteError::NotFound => 404,
            RouteError::MethodNotAllowed(_) => 405,
            RouteError::WebSocketUnsupported => 400,
            RouteError::Handshake(e) => e.status(),
            RouteError::Token(_) => 401,
            RouteError::InvalidRecipient => 400,
        }
    }

    /// Machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            RouteError::NotFound => "not_found",
            RouteError::MethodNotAllowed(_) => "method_not_allowed",
            RouteError::WebSocketUnsupported => "websocket_unsupported",
            RouteError::Handshake(HandshakeError::NotUpgrade) => "websocket_required",
            RouteError::Handshake(e) => e.code(),
            RouteError::Token(e) => e.code(),
            RouteError::InvalidRecipient => "invalid_recipient",
        }
    }

    /// Human-readable text for the JSON error body.
    pub fn message(&self, path: &str) -> String {
        match self {
            RouteError::NotFound => {
                "no such endpoint; use /v1/receive, /v1/connect, /v1/send/<client> or /v1/clients"
                    .into()
            }
            RouteError::MethodNotAllowed(m) => format!("{path} takes {m}"),
            RouteError::WebSocketUnsupported => {
                "WebSocket connections are served on GET /v1/connect".into()
            }
            RouteError::Handshake(e) => e.message().into(),
            RouteError::Token(e) => e.message(),
            RouteError::InvalidRecipient => {
                "the recipient must be a client id: 1-64 characters of [A-Za-z0-9._-]".into()
            }
        }
    }
}

/// Routes a request head; returns the route and the token to verify (borrowed
/// from the head when it came in the Authorization header; empty for
/// [`Route::Preflight`], which needs none).
pub fn route(head: &RequestHead) -> Result<(Route<'_>, Cow<'_, str>), RouteError> {
    if head.websocket && head.path() != "/v1/connect" {
        return Err(RouteError::WebSocketUnsupported);
    }
    if head.method == Method::Options && head.path().starts_with("/v1/") {
        return Ok((Route::Preflight, Cow::Borrowed("")));
    }
    let (route, method) = match head.path() {
        "/v1/receive" => (
            Route::Receive {
                last_event_id: resume_point(head),
            },
            Method::Get,
        ),
        "/v1/clients" => (Route::Clients, Method::Get),
        "/v1/connect" => return connect(head),
        p => match p.strip_prefix("/v1/send/") {
            Some(to) => (Route::Send { to: recipient(to) }, Method::Post),
            None => return Err(RouteError::NotFound),
        },
    };
    if head.method != method {
        return Err(RouteError::MethodNotAllowed(if method == Method::Get {
            "GET"
        } else {
            "POST"
        }));
    }
    if let Route::Send { to } = &route {
        if !crate::auth::valid_id(to) {
            return Err(RouteError::InvalidRecipient);
        }
    }
    let token = token_of(head).map_err(RouteError::Token)?;
    Ok((route, token))
}

/// Routes `GET /v1/connect`: the WebSocket handshake is checked first (its
/// refusals name the method and version it needs), then the token.
fn connect(head: &RequestHead) -> Result<(Route<'_>, Cow<'_, str>), RouteError> {
    let accept = handshake::accept(head).map_err(RouteError::Handshake)?;
    let token = token_of(head).map_err(RouteError::Token)?;
    let route = Route::Connect {
        last_event_id: resume_point(head),
        accept: Box::new(accept),
    };
    Ok((route, token))
}

/// Where a stream resumes: the `Last-Event-ID` header, else the
/// `last_event_id` query parameter.
fn resume_point(head: &RequestHead) -> Option<String> {
    match head.last_event_id() {
        Some(l) => Some(l.to_string()),
        None => head.query().and_then(|q| query_param(q, "last_event_id")),
    }
}

/// The recipient named by the path after `/v1/send/`, percent-decoded
/// (borrowed when it has no `%`; an escape that does not decode to UTF-8
/// leaves it as it is, which [`crate::auth::valid_id`] then refuses).
fn recipient(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    match String::from_utf8(super::head::percent_decode(raw)) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(raw),
    }
}

/// The token of a request: `Authorization: Bearer <t>`, else the `access_token` query parameter.
pub fn token_of(head: &RequestHead) -> Result<Cow<'_, str>, AuthError> {
    if let Some(v) = head.authorization() {
        // `Bearer`, one or more spaces, the token. The value comes without
        // surrounding whitespace (the head parser trims it), so the common
        // case is one prefix comparison, not a scan of the whole token.
        let (scheme, rest) = v.split_at_checked(6).ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || !rest.starts_with(' ') {
            return Err(AuthError::Malformed);
        }
        return Ok(Cow::Borrowed(rest.trim()));
    }
    head.query()
        .and_then(|q| query_param(q, "access_token"))
        .map(Cow::Owned)
        .ok_or(AuthError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::head::{parse_head, Limits};
    use crate::proto::Parse;

    /// Parses `raw`, with a `Host` line added to an HTTP/1.1 head without one.
    fn head(raw: &str) -> RequestHead {
        let raw = match raw.split_once("\r\n") {
            Some((line, rest)) if line.ends_with("1.1") && !raw.contains("\nHost:") => {
                format!("{line}\r\nHost: h\r\n{rest}")
            }
            _ => raw.to_string(),
        };
        match parse_head(raw.as_bytes(), &Limits::default()) {
            Ok(Parse::Complete(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn routes() {
        let h =
            head("GET /v1/receive?last_event_id=a-1 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\n\r\n");
        assert_eq!(
            route(&h),
            Ok((
                Route::Receive {
                    last_event_id: Some("a-1".into())
                },
                "t".into()
            ))
        );
        let h = head(
            "GET /v1/receive HTTP/1.1\r\nHost: h\r\nLast-Event-ID: b-2\r\nAuthorization: bearer  t \r\n\r\n",
        );
        assert_eq!(
            route(&h),
            Ok((
                Route::Receive {
                    last_event_id: Some("b-2".into())
                },
                "t".into()
            ))
        );
        let h =
            head("POST /v1/send/agent-1 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\n\r\n");
        assert_eq!(
            route(&h),
            Ok((
                Route::Send {
                    to: "agent-1".into()
                },
                "t".into()
            ))
        );
        // Escapes of characters an id may hold are decoded.
        let h =
            head("POST /v1/send/agent%2D1 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\n\r\n");
        assert_eq!(
            route(&h),
            Ok((
                Route::Send {
                    to: "agent-1".into()
                },
                "t".into()
            ))
        );
        let h = head("GET /v1/clients?access_token=q HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(route(&h), Ok((Route::Clients, "q".into())));
        // A preflight on any API path, with or without a token.
        for target in [
            "/v1/send/agent-1",
            "/v1/receive?x=1",
            "/v1/clients",
            "/v1/nope",
        ] {
            let h = head(&format!("OPTIONS {target} HTTP/1.1\r\n\r\n"));
            assert_eq!(route(&h), Ok((Route::Preflight, "".into())), "{target}");
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(
            route(&head("GET /nope HTTP/1.1\r\nHost: h\r\n\r\n")).map_err(|e| e.status()),
            Err(404)
        );
        assert_eq!(
            route(&head("POST /v1/receive HTTP/1.1\r\nHost: h\r\n\r\n")).map_err(|e| e.status()),
            Err(405)
        );
        assert_eq!(
            route(&head("GET /v1/send/x HTTP/1.1\r\nHost: h\r\n\r\n")).map_err(|e| e.code()),
            Err("method_not_allowed")
        );
        assert_eq!(
            route(&head("GET /v1/clients HTTP/1.1\r\nHost: h\r\n\r\n")).map_err(|e| e.code()),
            Err("missing_token")
        );
        assert_eq!(
            route(&head("OPTIONS /health HTTP/1.1\r\n\r\n")).map_err(|e| e.status()),
            Err(404)
        );
        // A WebSocket handshake, wherever it goes and whatever it carries, is
        // refused before anything else; other upgrades (h2c) are ignored.
        for h in [
            "GET /v1/receive?access_token=t HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET /v1/receive HTTP/1.1\r\nUpgrade: h2c, WebSocket\r\nAuthorization: Bearer t\r\n\r\n",
            "OPTIONS /v1/receive HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        ] {
            let h = head(h);
            let r = route(&h);
            assert_eq!(r.as_ref().map_err(|e| e.status()), Err(400), "{h:?}");
            assert_eq!(r.map_err(|e| e.code()), Err("websocket_unsupported"));
        }
        let h = head("GET /v1/clients HTTP/1.1\r\nUpgrade: h2c\r\nAuthorization: Bearer t\r\n\r\n");
        assert_eq!(route(&h), Ok((Route::Clients, "t".into())));
        // WebSocket on /v1/connect: the handshake, then the token.
        const HS: &str = "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let h = head(&format!(
            "GET /v1/connect?access_token=tok&last_event_id=5-3 HTTP/1.1\r\n{HS}Sec-WebSocket-Version: 13\r\n\r\n"
        ));
        match route(&h) {
            Ok((
                Route::Connect {
                    last_event_id,
                    accept,
                },
                token,
            )) => {
                assert_eq!(token, "tok");
                assert_eq!(last_event_id.as_deref(), Some("5-3"));
                assert_eq!(accept.accept_key(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
            }
            other => panic!("{other:?}"),
        }
        for (raw, status, code) in [
            // No upgrade at all: 426 naming websocket.
            ("GET /v1/connect?access_token=t HTTP/1.1\r\nHost: h\r\n\r\n".to_string(), 426, "websocket_required"),
            (format!("GET /v1/connect?access_token=t HTTP/1.1\r\n{HS}Sec-WebSocket-Version: 12\r\n\r\n"), 426, "unsupported_websocket_version"),
            (format!("POST /v1/connect?access_token=t HTTP/1.1\r\n{HS}Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"), 405, "method_not_allowed"),
            // The handshake is checked before the token.
            (format!("GET /v1/connect HTTP/1.1\r\n{HS}\r\n"), 426, "unsupported_websocket_version"),
            (format!("GET /v1/connect HTTP/1.1\r\n{HS}Sec-WebSocket-Version: 13\r\n\r\n"), 401, "missing_token"),
        ] {
            let h = head(&raw);
            let r = route(&h);
            assert_eq!(r.as_ref().map_err(|e| (e.status(), e.code())), Err((status, code)), "{raw:?}");
        }
        // A preflight of /v1/connect is a preflight.
        let h = head("OPTIONS /v1/connect HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(route(&h), Ok((Route::Preflight, "".into())));
        let h = head("GET /v1/clients HTTP/1.1\r\nUpgrade: h2c\r\nAuthorization: Bearer t\r\n\r\n");
        assert_eq!(route(&h), Ok((Route::Clients, "t".into())));
        assert_eq!(
            route(&head(
                "GET /v1/clients HTTP/1.1\r\nHost: h\r\nAuthorization: Basic x\r\n\r\n"
            ))
            .map_err(|e| e.status()),
            Err(401)
        );
        // Not `Bearer`, space, token: refused as malformed, never half-read.
        for value in [
            "Bearer",
            "Bearerx y",
            "Bearer\tx",
            "Bear",
            "B\u{e9}arer x",
            "xBearer y",
        ] {
            let h = head(&format!(
                "GET /v1/clients HTTP/1.1\r\nHost: h\r\nAuthorization: {value}\r\n\r\n"
            ));
            assert_eq!(
                route(&h).map_err(|e| e.code()),
                Err(AuthError::Malformed.code()),
                "{value:?}"
            );
        }
        // A recipient that can never be a client id (checked before the token).
        let long = format!("/v1/send/{}", "a".repeat(65));
        for path in [
            "/v1/send/",
            "/v1/send/bad%20name",
            "/v1/send/a/b",
            "/v1/send/%ff",
            "/v1/send/%",
            "/v1/send/a+b",
            long.as_str(),
        ] {
            let h = head(&format!("POST {path} HTTP/1.1\r\n\r\n"));
            assert_eq!(
                route(&h).map_err(|e| (e.status(), e.code())),
                Err((400, "invalid_recipient")),
                "{path:?}"
            );
        }
        let ok = format!("/v1/send/{}", "a".repeat(64));
        let h = head(&format!(
            "POST {ok} HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n"
        ));
        assert!(route(&h).is_ok());
        // Surrounding whitespace of the token itself is not part of it.
        let h = head("GET /v1/clients HTTP/1.1\r\nHost: h\r\nAuthorization: BEARER   t\r\n\r\n");
        assert_eq!(route(&h).map(|r| r.1.into_owned()), Ok("t".to_string()));
    }
}
