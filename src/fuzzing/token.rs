//! The `token` fuzz target.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------
// token
// ---------------------------------------------------------------------------

pub(super) const SECRET: &[u8] = b"fuzz-secret-0123456789";
pub(super) const NOW: u64 = 1_700_000_000;

/// Checks what every accepted identity must satisfy.
pub(super) fn check_identity(r: &Result<auth::Identity, AuthError>, now: u64) {
    match r {
        Ok(id) => {
            assert!(
                auth::valid_id(&id.account) && auth::valid_id(&id.client),
                "token: accepted invalid ids {id:?}"
            );
            assert!(
                id.exp > now,
                "token: accepted expired token {id:?} at {now}"
            );
        }
        Err(e) => {
            let _ = (e.code(), e.message(), e.to_string());
        }
    }
}

/// Fuzzes [`Verifier::verify`] and [`auth::sign`].
///
/// Layout: a mode byte, then mode-specific bytes. Every mode first verifies
/// the rest of the input as a token (lossy UTF-8): it must not panic, and an
/// accepted token has valid ids and `exp > now`. Then:
/// * mode 0: nothing more (raw token text).
/// * mode 1: header and payload bytes (split at the first `0xFF`; bit 0 of a
///   flag byte replaces the header with a standard HS256 header) are
///   base64url-encoded and *correctly signed*, so the claim checks are reached
///   with arbitrary JSON; the same acceptance properties hold.
/// * mode 2: claims built from selector bytes (`sub`, `acct`, `role`, `exp`,
///   `nbf` each absent, valid, invalid or of the wrong type) and signed: the
///   token is accepted exactly when every claim is valid and `nbf <= now < exp`,
///   and then the identity matches the claims; errors are claim/time errors.
/// * mode 3: `sign` with ids from the input: it succeeds exactly when both ids
///   are valid, then the token verifies to the same identity (and is `Expired`
///   at `exp`); flipping any one character of the signature, or verifying with
///   another secret, makes it fail.
pub fn token(data: &[u8]) {
    let mut inp = Input::new(data);
    let mode = inp.byte() % 4;
    let rest = inp.rest();
    let verifier = Verifier::new(SECRET);
    check_identity(&verifier.verify(&String::from_utf8_lossy(rest), NOW), NOW);

    match mode {
        1 => token_raw_parts(&verifier, rest),
        2 => token_claims(&verifier, rest),
        3 => token_sign(&verifier, rest),
        _ => {}
    }
}

pub(super) fn token_raw_parts(verifier: &Verifier, rest: &[u8]) {
    let mut inp = Input::new(rest);
    let flags = inp.byte();
    let rest = inp.rest();
    let (header, payload) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    let header: &[u8] = if flags & 1 != 0 {
        br#"{"alg":"HS256","typ":"JWT"}"#
    } else {
        header
    };
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    let Ok(sig) =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
    else {
        panic!("token: HMAC signing failed");
    };
    let token = format!("{message}.{sig}");
    check_identity(&verifier.verify(&token, NOW), NOW);
}

/// One claim value chosen by a selector byte.
pub(super) fn claim_value(sel: u8, text: &str, number: u64) -> Option<serde_json::Value> {
    use serde_json::Value;
    match sel % 10 {
        0 => None,
        1 => Some(Value::from(text)),
        2 => Some(Value::from(number)),
        3 => Some(Value::from(-1i64 - (number % 1000) as i64)),
        4 => Some(Value::from(number as f64 + 0.5)),
        5 => Some(Value::Null),
        6 => Some(Value::Bool(true)),
        7 => Some(Value::from(vec![text])),
        8 => Some(Value::from(u64::MAX)),
        _ => Some(Value::from("")),
    }
}

pub(super) fn token_claims(verifier: &Verifier, rest: &[u8]) {
    let mut inp = Input::new(rest);
    let sels: Vec<u8> = (0..5).map(|_| inp.byte()).collect();
    let nums: Vec<u64> = (0..2)
        .map(|_| {
            // Times around NOW: NOW - 32768 ..= NOW + 32767 from two bytes.
            let v = u64::from(inp.byte()) << 8 | u64::from(inp.byte());
            NOW - 32768 + v
        })
        .collect();
    let text = String::from_utf8_lossy(inp.rest());
    let mut texts = text.split('\u{1}');
    let sub_text = texts.next().unwrap_or("");
    let acct_text = texts.next().unwrap_or("");
    let role_text = texts.next().unwrap_or("");

    let mut claims = serde_json::Map::new();
    let role_value = match sels[2] % 4 {
        0 => None,
        1 => Some(serde_json::Value::from("agent")),
        2 => Some(serde_json::Value::from("console")),
        _ => claim_value(sels[2] / 4, role_text, 7),
    };
    let entries = [
        ("sub", claim_value(sels[0], sub_text, 1)),
        ("acct", claim_value(sels[1], acct_text, 2)),
        ("role", role_value),
        ("exp", claim_value(sels[3], "soon", nums[0])),
        ("nbf", claim_value(sels[4], "now", nums[1])),
    ];
    for (name, value) in &entries {
        if let Some(v) = value {
            claims.insert((*name).to_string(), v.clone());
        }
    }
    let claims = serde_json::Value::Object(claims);
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let Ok(token) = jsonwebtoken::encode(&header, &claims, &key) else {
        panic!("token: encoding {claims} failed");
    };
    let got = verifier.verify(&token, NOW);
    check_identity(&got, NOW);
    if token.len() > auth::MAX_TOKEN_LEN {
        // Oversized tokens are refused before anything else is looked at.
        assert!(
            got == Err(AuthError::Malformed),
            "token: {} byte token gave {got:?}",
            token.len()
        );
        return;
    }

    // Independent expectation.
    let id_ok = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .and_then(|v| v.as_str())
            .is_some_and(auth::valid_id)
    };
    let role = match &entries[2].1 {
        None => Some(Role::Agent),
        Some(v) => v.as_str().and_then(Role::parse),
    };
    let exp = entries[3].1.as_ref().and_then(|v| v.as_u64());
    let nbf_ok = match &entries[4].1 {
        None => true,
        Some(v) => v.as_u64().is_some_and(|n| n <= NOW),
    };
    let expect_ok = id_ok(&entries[0].1)
        && id_ok(&entries[1].1)
        && role.is_some()
        && exp.is_some_and(|e| e > NOW)
        && nbf_ok;
    match &got {
        Ok(id) => {
            assert!(expect_ok, "token: accepted {claims} as {id:?}");
            let same = Some(&*id.client) == entries[0].1.as_ref().and_then(|v| v.as_str())
                && Some(id.account.as_str()) == entries[1].1.as_ref().and_then(|v| v.as_str())
                && Some(id.role) == role
                && Some(id.exp) == exp;
            assert!(
                same,
                "token: identity {id:?} does not match claims {claims}"
            );
        }
        Err(e) => {
            assert!(!expect_ok, "token: refused valid claims {claims}: {e:?}");
            assert!(
                matches!(
                    e,
                    AuthError::MissingClaim(_)
                        | AuthError::BadClaim(_)
                        | AuthError::Expired
                        | AuthError::NotYetValid
                ),
                "token: correctly signed claims {claims} refused with {e:?}"
            );
        }
    }
}

pub(super) const B64URL: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub(super) fn token_sign(verifier: &Verifier, rest: &[u8]) {
    let mut inp = Input::new(rest);
    let role = if inp.byte() & 1 == 0 {
        Role::Agent
    } else {
        Role::Console
    };
    let ttl = u64::from(inp.byte()) << 8 | u64::from(inp.byte());
    let flip_pos = usize::from(inp.byte());
    let flip_to = inp.byte();
    let acct_len = usize::from(inp.byte());
    let rest = inp.rest();
    let (acct, client) = rest.split_at(acct_len.min(rest.len()));
    let acct = String::from_utf8_lossy(acct);
    let client = String::from_utf8_lossy(client);

    let signed = auth::sign(SECRET, &acct, &client, role, NOW, ttl);
    let valid = auth::valid_id(&acct) && auth::valid_id(&client);
    let token = match signed {
        Ok(t) => t,
        Err(e) => {
            assert!(
                !valid,
                "token: sign refused valid ids {acct:?} / {client:?}: {e:?}"
            );
            assert!(
                matches!(e, AuthError::BadClaim(_)),
                "token: sign failed with {e:?}"
            );
            return;
        }
    };
    assert!(
        valid,
        "token: sign accepted invalid ids {acct:?} / {client:?}"
    );

    let got = verifier.verify(&token, NOW);
    if ttl == 0 {
        assert!(got == Err(AuthError::Expired), "token: ttl 0 gave {got:?}");
    } else {
        let expected = auth::Identity {
            account: acct.to_string(),
            client: client.to_string().into(),
            role,
            exp: NOW + ttl,
        };
        assert!(
            got == Ok(expected),
            "token: round trip of {acct:?}/{client:?} gave {got:?}"
        );
        let at_exp = verifier.verify(&token, NOW + ttl);
        assert!(
            at_exp == Err(AuthError::Expired),
            "token: at exp gave {at_exp:?}"
        );
    }
    let other = Verifier::new(b"another-secret").verify(&token, NOW);
    assert!(
        other.is_err(),
        "token: accepted with the wrong secret: {other:?}"
    );

    // Flip one character of the signature to another base64url character.
    let sig_start = token.rfind('.').map_or(0, |i| i + 1);
    let sig_len = token.len() - sig_start;
    if sig_len == 0 {
        panic!("token: signed token {token:?} has an empty signature");
    }
    let pos = sig_start + flip_pos % sig_len;
    let mut bytes = token.into_bytes();
    let old = bytes[pos];
    let Some(old_index) = B64URL.iter().position(|&c| c == old) else {
        panic!("token: signature byte {old:?} is not base64url");
    };
    bytes[pos] = B64URL[(old_index + 1 + usize::from(flip_to) % 63) % 64];
    let tampered = String::from_utf8_lossy(&bytes);
    let got = verifier.verify(&tampered, NOW);
    assert!(
        got.is_err(),
        "token: accepted with signature character {} changed: {tampered:?}",
        pos - sig_start
    );
}
