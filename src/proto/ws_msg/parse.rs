//! [`parse`]: one text message to a [`Command`], in one pass of `serde_json`
//! over the message with no tree built: the string fields are borrowed from
//! the message (copied only if they hold escapes), a `json` value is captured
//! as the slice it occupies, checked by the same pass, then compacted.

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{Body, Command, CommandError, ErrorKind, MAX_REF_LEN};

/// Parses one complete text message of a client into a command. `max_body`
/// is `--max-message`, checked against the body as [`ErrorKind::TooLarge`]
/// says. Never panics, whatever the input; bytes that are not UTF-8 (which
/// the frame layer refuses before) are [`ErrorKind::Malformed`].
pub fn parse(msg: &[u8], max_body: usize) -> Result<Command<'_>, CommandError<'_>> {
    let Ok(text) = std::str::from_utf8(msg) else {
        return Err(CommandError::new(ErrorKind::Malformed, None));
    };
    let mut fields = Fields::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let read = (&mut de)
        .deserialize_map(Collect(&mut fields))
        .and_then(|()| de.end());
    if read.is_err() {
        // The ref, if it was read before the fault, says which command failed.
        let ref_ = fields.ref_.and_then(|r| usable_ref(r).ok());
        let object = text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{');
        let not_object = !object && serde_json::from_str::<IgnoredAny>(text).is_ok();
        let kind = match not_object {
            true => ErrorKind::NotAnObject,
            false => ErrorKind::Malformed,
        };
        return Err(CommandError::new(kind, ref_));
    }
    fields.command(max_body)
}

/// A string field as read: the string, or `Other` for any other JSON value.
#[derive(Debug)]
enum Str<'a> {
    Str(Cow<'a, str>),
    Other,
}

/// The known fields of a command object, as read.
#[derive(Default)]
struct Fields<'a> {
    type_: Option<Str<'a>>,
    to: Option<Str<'a>>,
    body: Option<Str<'a>>,
    body_b64: Option<Str<'a>>,
    json: Option<&'a RawValue>,
    ref_: Option<Str<'a>>,
    /// The first known key seen twice.
    duplicate: Option<&'static str>,
}

/// The `ref` to echo: a string of at most [`MAX_REF_LEN`] bytes.
fn usable_ref(r: Str<'_>) -> Result<Cow<'_, str>, ErrorKind> {
    match r {
        Str::Str(s) if s.len() <= MAX_REF_LEN => Ok(s),
        Str::Str(_) => Err(ErrorKind::RefTooLong),
        Str::Other => Err(ErrorKind::InvalidField("ref")),
    }
}

impl<'a> Fields<'a> {
    /// The command the fields make, or what is wrong with them.
    fn command(mut self, max_body: usize) -> Result<Command<'a>, CommandError<'a>> {
        let ref_ = match self.ref_.take() {
            None => None,
            // A ref given twice is not echoed: which one would it be?
            Some(_) if self.duplicate == Some("ref") => None,
            Some(r) => match usable_ref(r) {
                Ok(r) => Some(r),
                Err(kind) => return Err(CommandError::new(kind, None)),
            },
        };
        match self.check(max_body) {
            Ok(None) => Ok(Command::Clients { ref_ }),
            Ok(Some((to, body))) => Ok(Command::Send { to, body, ref_ }),
            Err(kind) => Err(CommandError::new(kind, ref_)),
        }
    }

    /// Everything but the ref: `None` for `clients`, the recipient and body
    /// of a `send`.
    #[allow(clippy::type_complexity)]
    fn check(self, max_body: usize) -> Result<Option<(Cow<'a, str>, Body<'a>)>, ErrorKind> {
        if let Some(f) = self.duplicate {
            return Err(ErrorKind::DuplicateField(f));
        }
        let type_ = match self.type_ {
            None => return Err(ErrorKind::MissingField("type")),
            Some(Str::Other) => return Err(ErrorKind::InvalidField("type")),
            Some(Str::Str(t)) => t,
        };
        let bodies =
            self.body.is_some() as u8 + self.body_b64.is_some() as u8 + self.json.is_some() as u8;
        match &*type_ {
            "clients" => {
                if self.to.is_some() {
                    return Err(ErrorKind::UnexpectedField("to"));
                }
                if bodies > 0 {
                    let f = match (&self.body, &self.body_b64) {
                        (Some(_), _) => "body",
                        (None, Some(_)) => "body_b64",
                        (None, None) => "json",
                    };
                    return Err(ErrorKind::UnexpectedField(f));
                }
                Ok(None)
            }
            "send" => {
                let to = match self.to {
                    None => return Err(ErrorKind::MissingField("to")),
                    Some(Str::Other) => return Err(ErrorKind::InvalidField("to")),
                    Some(Str::Str(to)) if !crate::auth::valid_id(&to) => {
                        return Err(ErrorKind::InvalidRecipient)
                    }
                    Some(Str::Str(to)) => to,
                };
                let body = match (self.body, self.body_b64, self.json) {
                    _ if bodies > 1 => Err(ErrorKind::ConflictingFields),
                    (Some(b), _, _) => text_body(b, max_body),
                    (_, Some(b), _) => b64_body(b, max_body),
                    (_, _, Some(raw)) => json_body(raw, max_body),
                    (None, None, None) => Err(ErrorKind::MissingField("body")),
                }?;
                Ok(Some((to, body)))
            }
            _ => Err(ErrorKind::UnknownType),
        }
    }
}

/// `body`: the string's UTF-8 bytes.
fn text_body(b: Str<'_>, max_body: usize) -> Result<Body<'_>, ErrorKind> {
    let Str::Str(s) = b else {
        return Err(ErrorKind::InvalidField("body"));
    };
    if s.len() > max_body {
        return Err(ErrorKind::TooLarge { limit: max_body });
    }
    let bytes = match s {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    };
    Ok(Body { bytes, json: false })
}

/// `body_b64`: decoded, the size checked from the text's length first (so an
/// oversized body is refused without decoding it).
fn b64_body(b: Str<'_>, max_body: usize) -> Result<Body<'static>, ErrorKind> {
    let Str::Str(s) = b else {
        return Err(ErrorKind::InvalidField("body_b64"));
    };
    // Padded base64 is 4 characters per 3 bytes; the padding is subtracted
    // when it is there (a text that is not a multiple of 4 is refused below).
    let pad = s.bytes().rev().take(2).filter(|&c| c == b'=').count();
    if (s.len() / 4 * 3).saturating_sub(pad) > max_body {
        return Err(ErrorKind::TooLarge { limit: max_body });
    }
    let bytes = STANDARD
        .decode(s.as_bytes())
        .map_err(|_| ErrorKind::BadBase64)?;
    if bytes.len() > max_body {
        return Err(ErrorKind::TooLarge { limit: max_body });
    }
    Ok(Body {
        bytes: Cow::Owned(bytes),
        json: false,
    })
}

/// `json`: the value as sent (checked by the parse that captured it),
/// compacted as an HTTP JSON body is.
fn json_body(raw: &RawValue, max_body: usize) -> Result<Body<'_>, ErrorKind> {
    let text = raw.get();
    if text.len() > max_body {
        return Err(ErrorKind::TooLarge { limit: max_body });
    }
    let mut bytes = text.as_bytes().to_vec();
    crate::proto::json_body::compact(&mut bytes);
    Ok(Body {
        bytes: Cow::Owned(bytes),
        json: true,
    })
}

/// Reads the top-level object into [`Fields`] (kept outside, so that a
/// `ref` read before a syntax error is still there).
struct Collect<'f, 'a>(&'f mut Fields<'a>);

impl<'de> Visitor<'de> for Collect<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a command object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let fields = self.0;
        while let Some(key) = map.next_key_seed(StrSeed)? {
            let key: &str = match &key {
                Str::Str(k) => k,
                Str::Other => "", // keys are strings: not reached
            };
            let (name, seen): (&'static str, bool) = match key {
                "type" => ("type", fields.type_.is_some()),
                "to" => ("to", fields.to.is_some()),
                "body" => ("body", fields.body.is_some()),
                "body_b64" => ("body_b64", fields.body_b64.is_some()),
                "json" => ("json", fields.json.is_some()),
                "ref" => ("ref", fields.ref_.is_some()),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if seen {
                fields.duplicate.get_or_insert(name);
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            match name {
                "json" => fields.json = Some(map.next_value::<&'de RawValue>()?),
                _ => {
                    let v = map.next_value_seed(StrSeed)?;
                    let slot = match name {
                        "type" => &mut fields.type_,
                        "to" => &mut fields.to,
                        "body" => &mut fields.body,
                        "body_b64" => &mut fields.body_b64,
                        _ => &mut fields.ref_,
                    };
                    *slot = Some(v);
                }
            }
        }
        Ok(())
    }
}

/// Reads any JSON value as a [`Str`]: a string borrowed from the input when it
/// has no escapes; anything else skipped without building it.
struct StrSeed;

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = Str<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Str<'de>, D::Error> {
        d.deserialize_any(StrVisitor)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Str<'de>, E> {
        Ok(Str::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Str<'de>, E> {
        Ok(Str::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Str<'de>, E> {
        Ok(Str::Str(Cow::Owned(s)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Str<'de>, E> {
        Ok(Str::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Str<'de>, E> {
        Ok(Str::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Str<'de>, E> {
        Ok(Str::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Str<'de>, E> {
        Ok(Str::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Str<'de>, E> {
        Ok(Str::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Str<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Str::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Str<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Str::Other)
    }
}
