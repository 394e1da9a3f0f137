//! Checks on the JSON of a token's header and claims that `serde_json`
//! does not make: no object repeats a member name (RFC 7515 §5.2 lets a
//! receiver either refuse such a JWS or take the last value; we refuse, so
//! `{"acct":"acme","acct":"evil"}` cannot mean one thing here and another in
//! a parser that keeps the first), and no `crit` header parameter (RFC 7515
//! §4.1.11: a token naming a critical extension the receiver does not
//! understand must be refused, and we understand none).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// True if `json` is JSON in which no object (at any depth) has two members
/// whose names are equal once escapes are decoded. Invalid JSON is `false`.
pub(super) fn no_duplicate_members(json: &[u8]) -> bool {
    serde_json::from_slice::<Checked>(json).is_ok()
}

/// True if the header JSON has a `crit` member (whatever its value).
pub(super) fn has_crit(header_json: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(header_json) {
        Ok(serde_json::Value::Object(map)) => map.contains_key("crit"),
        _ => false,
    }
}

/// Deserializes any JSON value, keeping nothing, and fails on a repeated
/// member name. Depth is bounded by `serde_json`'s recursion limit (128).
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut seen = HashSet::new();
        // Keys as `String`: escapes decoded, so `"a"` and `"\u0061"` are one name.
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(de::Error::custom("duplicate member"));
            }
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_at_any_depth_are_found() {
        let ok = [
            r#"{"acct":"acme","sub":"a"}"#,
            r#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#,
            r#"{"a\"b":1,"a":2,"ab":3}"#,
            r#"{"ä":1,"a":2}"#,
            r#"[1,"x",null,true,-1.5e3,{}]"#,
            r#""plain""#,
        ];
        for j in ok {
            assert!(no_duplicate_members(j.as_bytes()), "{j}");
        }
        let dup = [
            r#"{"acct":"acme","sub":"a","acct":"evil"}"#,
            r#"{"a":{"b":1,"b":2}}"#,
            r#"{"x":[{"k":1,"k":1}]}"#,
            // Escapes decode to the same name.
            r#"{"acct":"acme","\u0061cct":"evil"}"#,
            r#"{"a\"":1,"a\u0022":2}"#,
            r#"{"\u00e4":1,"ä":2}"#,
        ];
        for j in dup {
            assert!(!no_duplicate_members(j.as_bytes()), "{j}");
        }
        // Not JSON at all.
        assert!(!no_duplicate_members(b"{\"a\":"));
        // Deep nesting is refused by the recursion limit, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(!no_duplicate_members(deep.as_bytes()));
    }

    #[test]
    fn crit_is_seen() {
        assert!(has_crit(br#"{"alg":"HS256","crit":["exp"],"exp":1}"#));
        assert!(has_crit(br#"{"alg":"HS256","crit":[]}"#));
        assert!(!has_crit(br#"{"alg":"HS256","x":{"crit":1}}"#));
        assert!(!has_crit(b"[1]"));
    }
}
