//! Cross-origin access (CORS) for browser pages served from another origin
//! than the gateway (`--allowed-origins`). Pure: the event loop asks
//! [`Origins::check`] about every request before its token is looked at, and
//! appends [`insert_headers`] to the answers of allowed ones.
//!
//! * A request without an `Origin` header (curl, agents), or one the browser
//!   marks as same-origin, is not a CORS request: nothing is checked or added.
//! * A request whose origin is listed (or any origin, with `*`) gets
//!   `Access-Control-Allow-Origin` and `Vary: Origin` on its answer, whatever
//!   the answer is (stream, 202, error), so a page can read errors too.
//! * Any other origin is refused (`403 origin_not_allowed`) before its token
//!   or any session is touched: a page the operator did not allow can never
//!   take or hold a client's stream.
//!
//! With `*` the answer is the literal `Access-Control-Allow-Origin: *`:
//! tokens travel in a header or the query, never in cookies, so requests are
//! never credentialed and `*` is valid for every one of them, and a
//! connection needs to remember nothing but which kind of answer it gets.

/// Most listed origins (an index into the list must fit [`Allow::Listed`]).
pub const MAX_ORIGINS: usize = 1024;
/// Longest listed origin, in bytes.
pub const MAX_ORIGIN_LEN: usize = 255;
/// `Access-Control-Max-Age` of preflight answers, in seconds (Chromium caps it at 7200).
pub const PREFLIGHT_MAX_AGE_S: u32 = 600;

/// Methods the API takes (answer to a preflight).
const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// Request headers the API reads (answer to a preflight). `Last-Event-ID` is
/// what `EventSource` sends when it reconnects.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";
/// Response headers a page may read beyond the CORS-safelisted ones
/// (`Content-Type`, `Content-Length`, ...): JSON bodies say everything else.
/// `Retry-After` is named for answers that carry it.
const EXPOSE_HEADERS: &str = "Retry-After";

/// The origins allowed to make cross-origin requests (`--allowed-origins`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origins {
    /// None: same-origin and non-browser clients only (the default).
    #[default]
    None,
    /// `*`: every origin.
    Any,
    /// These origins, each `scheme://host[:port]` in lower case.
    List(Vec<String>),
}

/// What an answer carries for the request's origin. Small and `Copy`: a
/// connection keeps the one of its current request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Allow {
    /// Not a cross-origin request: no CORS headers.
    #[default]
    Plain,
    /// `Access-Control-Allow-Origin: *`.
    Any,
    /// `Access-Control-Allow-Origin: <the listed origin at this index>`.
    Listed(u16),
}

/// A request from an origin that is not allowed (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

impl Refused {
    /// HTTP status to answer with.
    pub fn status(&self) -> u16 {
        403
    }
    /// Machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        "origin_not_allowed"
    }
    /// Human-readable text for the JSON error body.
    pub fn message(&self, origin: &str) -> String {
        format!("requests from origin {origin:?} are not allowed here (see --allowed-origins)")
    }
}

impl Origins {
    /// Parses the items of `--allowed-origins`: `*` alone, or origins such as
    /// `https://console.example.com` or `http://127.0.0.1:8000` (scheme, host,
    /// optional port; no path, not even a trailing `/`). Empty items are
    /// ignored, so no items (or only empty ones) means [`Origins::None`].
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Origins, String> {
        let items: Vec<&str> = items
            .iter()
            .map(|s| s.as_ref().trim())
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            return Ok(Origins::None);
        }
        if items.contains(&"*") {
            if items.len() > 1 {
                return Err("`*` allows every origin: give it alone".into());
            }
            return Ok(Origins::Any);
        }
        if items.len() > MAX_ORIGINS {
            return Err(format!("at most {MAX_ORIGINS} origins"));
        }
        let mut list = Vec::with_capacity(items.len());
        for item in items {
            let o = item.to_ascii_lowercase();
            valid_origin(&o).map_err(|why| format!("{item:?}: {why}"))?;
            if !list.contains(&o) {
                list.push(o);
            }
        }
        Ok(Origins::List(list))
    }

    /// Decides a request: `origin` is its `Origin` header, `same_origin` says
    /// the browser sent it to its own origin (see [`RequestHead::same_origin`]).
    ///
    /// [`RequestHead::same_origin`]: super::head::RequestHead::same_origin
    pub fn check(&self, origin: Option<&str>, same_origin: bool) -> Result<Allow, Refused> {
        let Some(origin) = origin else {
            return Ok(Allow::Plain);
        };
        if same_origin {
            return Ok(Allow::Plain);
        }
        match self {
            Origins::None => Err(Refused),
            Origins::Any => Ok(Allow::Any),
            Origins::List(list) => list
                .iter()
                .position(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
                .and_then(|i| u16::try_from(i).ok())
                .map(Allow::Listed)
                .ok_or(Refused),
        }
    }

    /// The value of `Access-Control-Allow-Origin` for `allow`, if any.
    pub fn allow_origin(&self, allow: Allow) -> Option<&str> {
        match (allow, self) {
            (Allow::Plain, _) => None,
            (Allow::Any, _) => Some("*"),
            (Allow::Listed(i), Origins::List(list)) => list.get(usize::from(i)).map(|s| s.as_str()),
            (Allow::Listed(_), _) => None,
        }
    }
}

/// Why an `--allowed-origins` entry is not an origin.
fn valid_origin(o: &str) -> Result<(), &'static str> {
    if o.len() > MAX_ORIGIN_LEN {
        return Err("too long");
    }
    let (scheme, rest) = o
        .split_once("://")
        .ok_or("expected scheme://host[:port], e.g. https://console.example.com")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err("bad scheme");
    }
    if rest.contains('/') {
        return Err("an origin has no path, not even a trailing '/'");
    }
    let host = match rest.rsplit_once(':') {
        // An IPv6 literal `[::1]` without a port has colons inside brackets.
        Some((h, port)) if !port.contains(']') => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err("bad port");
            }
            h
        }
        _ => rest,
    };
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"-._~[]:%".contains(&b);
    if host.is_empty() || !host.bytes().all(ok) {
        return Err("bad host");
    }
    Ok(())
}

/// The pieces of the CORS header lines of an answer allowed for `origin`.
fn header_pieces(origin: &str) -> [&[u8]; 5] {
    [
        b"Access-Control-Allow-Origin: ",
        origin.as_bytes(),
        b"\r\nVary: Origin\r\nAccess-Control-Expose-Headers: ",
        EXPOSE_HEADERS.as_bytes(),
        b"\r\n",
    ]
}

/// Inserts the CORS header lines for `allow` into the answer that starts at
/// `start` in `out`, right after its status line (so answers need not know
/// about CORS). Does nothing for [`Allow::Plain`], or if no status line ends
/// after `start`.
pub fn insert_headers(out: &mut Vec<u8>, start: usize, allow: Allow, origins: &Origins) {
    let Some(origin) = origins.allow_origin(allow) else {
        return;
    };
    let Some(line_end) = out
        .get(start..)
        .and_then(|o| o.windows(2).position(|w| w == b"\r\n"))
    else {
        return;
    };
    let at = start + line_end + 2;
    let pieces = header_pieces(origin);
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    // Move what follows the status line up and write the lines into the gap.
    let end = out.len();
    out.resize(end + len, 0);
    out.copy_within(at..end, at + len);
    let mut pos = at;
    for p in pieces {
        out[pos..pos + p.len()].copy_from_slice(p);
        pos += p.len();
    }
}

/// Appends the answer to a preflight (`OPTIONS` on an API path): `204` with
/// the methods and request headers the API takes and how long a browser may
/// remember that, plus the allowed origin (for [`Allow::Plain`], a plain
/// `OPTIONS` request, just `Allow`).
pub fn write_preflight(out: &mut Vec<u8>, allow: Allow, origins: &Origins, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 204 No Content\r\nAllow: ");
    out.extend_from_slice(ALLOW_METHODS.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(origin) = origins.allow_origin(allow) {
        out.extend_from_slice(b"Access-Control-Allow-Origin: ");
        out.extend_from_slice(origin.as_bytes());
        out.extend_from_slice(b"\r\nVary: Origin\r\nAccess-Control-Allow-Methods: ");
        out.extend_from_slice(ALLOW_METHODS.as_bytes());
        out.extend_from_slice(b"\r\nAccess-Control-Allow-Headers: ");
        out.extend_from_slice(ALLOW_HEADERS.as_bytes());
        out.extend_from_slice(b"\r\nAccess-Control-Max-Age: ");
        super::response::push_decimal(out, u64::from(PREFLIGHT_MAX_AGE_S));
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Origins {
        Origins::parse(items).expect("valid origins")
    }

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn parses_origin_lists() {
        assert_eq!(Origins::parse::<&str>(&[]), Ok(Origins::None));
        assert_eq!(Origins::parse(&["", " "]), Ok(Origins::None));
        assert_eq!(Origins::parse(&["*"]), Ok(Origins::Any));
        assert_eq!(Origins::parse(&[" * "]), Ok(Origins::Any));
        assert_eq!(
            list(&[
                "https://Console.Example.com",
                "http://127.0.0.1:8000",
                "http://[::1]:3000"
            ]),
            Origins::List(vec![
                "https://console.example.com".into(),
                "http://127.0.0.1:8000".into(),
                "http://[::1]:3000".into(),
            ])
        );
        // Duplicates are kept once.
        assert_eq!(
            list(&["http://a", "http://A"]),
            Origins::List(vec!["http://a".into()])
        );
        for bad in [
            "console.example.com",
            "https://console.example.com/",
            "https://console.example.com/app",
            "https://",
            "://x",
            "https://x:",
            "https://x:123456",
            "https://x:80a",
            "http s://x",
            "https://a b",
            "null",
        ] {
            assert!(Origins::parse(&[bad]).is_err(), "{bad:?}");
        }
        assert!(Origins::parse(&["*", "http://a"]).is_err());
        let long = format!("https://{}", "a".repeat(MAX_ORIGIN_LEN));
        assert!(Origins::parse(&[long]).is_err());
    }

    #[test]
    fn checks_requests() {
        let l = list(&["http://a:1", "https://b"]);
        // No Origin, or same-origin: not a CORS request, whatever the list.
        for o in [&Origins::None, &Origins::Any, &l] {
            assert_eq!(o.check(None, false), Ok(Allow::Plain));
            assert_eq!(o.check(Some("http://evil"), true), Ok(Allow::Plain));
        }
        assert_eq!(Origins::None.check(Some("http://a:1"), false), Err(Refused));
        assert_eq!(Origins::Any.check(Some("http://x"), false), Ok(Allow::Any));
        assert_eq!(Origins::Any.check(Some("null"), false), Ok(Allow::Any));
        assert_eq!(l.check(Some("http://a:1"), false), Ok(Allow::Listed(0)));
        assert_eq!(l.check(Some("HTTPS://B"), false), Ok(Allow::Listed(1)));
        for other in [
            "http://a",
            "http://a:12",
            "https://a:1",
            "https://b.",
            "null",
            "",
        ] {
            assert_eq!(l.check(Some(other), false), Err(Refused), "{other:?}");
        }
        assert_eq!(l.allow_origin(Allow::Listed(1)), Some("https://b"));
        assert_eq!(l.allow_origin(Allow::Listed(2)), None);
        assert_eq!(l.allow_origin(Allow::Any), Some("*"));
        assert_eq!(l.allow_origin(Allow::Plain), None);
        assert_eq!(Refused.status(), 403);
        assert_eq!(Refused.code(), "origin_not_allowed");
    }

    #[test]
    fn headers_go_after_the_status_line() {
        let l = list(&["http://a:1"]);
        let answer = "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}";
        let mut out = b"earlier".to_vec();
        out.extend_from_slice(answer.as_bytes());
        insert_headers(&mut out, 7, Allow::Listed(0), &l);
        assert_eq!(
            text(&out),
            "earlierHTTP/1.1 202 Accepted\r\nAccess-Control-Allow-Origin: http://a:1\r\n\
             Vary: Origin\r\nAccess-Control-Expose-Headers: Retry-After\r\n\
             Content-Length: 2\r\n\r\n{}"
        );
        // Nothing for a plain request, or without a status line.
        for (allow, s) in [(Allow::Plain, answer), (Allow::Any, "HTTP/1.1 200 OK")] {
            let mut out = s.as_bytes().to_vec();
            insert_headers(&mut out, 0, allow, &l);
            assert_eq!(text(&out), s);
        }
        let mut out = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        insert_headers(&mut out, 0, Allow::Any, &Origins::Any);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nVary: Origin\r\n\
             Access-Control-Expose-Headers: Retry-After\r\n\r\n"
        );
    }

    #[test]
    fn preflight_answers() {
        let l = list(&["http://a:1"]);
        let mut out = Vec::new();
        write_preflight(&mut out, Allow::Listed(0), &l, false);
        assert_eq!(
            text(&out),
            "HTTP/1.1 204 No Content\r\nAllow: GET, POST, OPTIONS\r\n\
             Access-Control-Allow-Origin: http://a:1\r\nVary: Origin\r\n\
             Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n\
             Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID\r\n\
             Access-Control-Max-Age: 600\r\n\r\n"
        );
        out.clear();
        write_preflight(&mut out, Allow::Plain, &l, true);
        assert_eq!(
            text(&out),
            "HTTP/1.1 204 No Content\r\nAllow: GET, POST, OPTIONS\r\nConnection: close\r\n\r\n"
        );
    }
}
