//! Client identity: JWT HS256 tokens (sans-IO: the current time is passed in).
//!
//! Claims: `sub` = client id, `acct` = account id (both 1-64 chars of
//! `[A-Za-z0-9._-]`), `exp` required, optional `nbf`, optional `role`
//! (`agent` | `console`, default `agent`). Only HS256 is accepted.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};

mod strict;

/// The role a client plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A device-side client (the default when `role` is absent).
    Agent,
    /// An operator console.
    Console,
}

impl Role {
    /// `"agent"` or `"console"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Console => "console",
        }
    }
    /// Parses `"agent"` / `"console"`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "agent" => Some(Role::Agent),
            "console" => Some(Role::Console),
            _ => None,
        }
    }
}

/// A verified client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Account id (`acct` claim).
    pub account: String,
    /// Client id (`sub` claim). Shared: every message the client sends is
    /// retained with it as its `from`, without a copy per message.
    pub client: std::sync::Arc<str>,
    /// Role (`role` claim, default [`Role::Agent`]).
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token was refused. All map to 401 with [`AuthError::code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token in the request.
    Missing,
    /// Not a well-formed JWT (bad base64, bad JSON, wrong number of parts).
    Malformed,
    /// Header `alg` is not HS256 (includes `none`).
    BadAlgorithm,
    /// Signature does not match.
    BadSignature,
    /// `exp` is in the past.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// A required claim is missing or has the wrong type (names the claim).
    MissingClaim(&'static str),
    /// `sub`, `acct` or `role` has a forbidden value (names the claim).
    BadClaim(&'static str),
    /// The header or the claims repeat a member name (names which).
    DuplicateMember(&'static str),
    /// The header has a `crit` parameter: it names extensions we do not
    /// understand (RFC 7515 §4.1.11).
    CriticalExtension,
}

impl AuthError {
    /// Machine-readable code, e.g. `"token_expired"`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Malformed => "malformed_token",
            AuthError::BadAlgorithm => "bad_algorithm",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::BadClaim(_) => "bad_claim",
            AuthError::DuplicateMember(_) => "malformed_token",
            AuthError::CriticalExtension => "invalid_token",
        }
    }
    /// Human-readable text.
    pub fn message(&self) -> String {
        match self {
            AuthError::Missing => "no bearer token was supplied".to_owned(),
            AuthError::Malformed => "the token is not a well-formed JWT".to_owned(),
            AuthError::BadAlgorithm => "the token algorithm is not HS256".to_owned(),
            AuthError::BadSignature => "the token signature is invalid".to_owned(),
            AuthError::Expired => "the token has expired".to_owned(),
            AuthError::NotYetValid => "the token is not valid yet".to_owned(),
            AuthError::MissingClaim(claim) => {
                format!("the token claim `{claim}` is missing or has the wrong type")
            }
            AuthError::BadClaim(claim) => {
                format!("the token claim `{claim}` has a forbidden value")
            }
            AuthError::DuplicateMember(part) => {
                format!("the token {part} repeat a member name")
            }
            AuthError::CriticalExtension => {
                "the token header names critical extensions (crit) this server does not understand"
                    .to_owned()
            }
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for AuthError {}

/// True if `s` is a valid client or account id: 1-64 chars of `[A-Za-z0-9._-]`.
pub fn valid_id(s: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Longest id accepted by [`valid_id`], in bytes.
const MAX_ID_LEN: usize = 64;

/// Longest token [`Verifier::verify`] will attempt to decode, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Verifies HS256 tokens with one secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        // Only HS256 is allowed; every other `alg` (including `none`) is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        // Time-based checks are done by `verify` against the caller's clock
        // (sans-IO), so jsonwebtoken must not consult the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.reject_tokens_expiring_in_less_than = 0;
        // Presence and types of claims are checked by `verify` so that errors
        // can name the claim.
        validation.required_spec_claims.clear();
        // No audience is configured; an `aud` claim is ignored rather than
        // making every such token fail with an unmapped error.
        validation.validate_aud = false;
        Verifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Verifies `token` at time `now_secs` (seconds since the Unix epoch).
    /// The signature comparison is constant-time.
    ///
    /// Constant time: with the `rust_crypto` feature, jsonwebtoken 11 verifies
    /// HS256 in `crypto::rust_crypto::hmac::Hs256Verifier`, which calls
    /// `hmac::Mac::verify_slice` (digest 0.10). That checks the tag length (public,
    /// always 32 bytes) and then compares with `subtle::ConstantTimeEq::ct_eq`,
    /// so the comparison does not leak how many bytes matched.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let header_b64 = match split_token(token) {
            Some((header, _, _)) => header,
            None => return Err(AuthError::Malformed),
        };
        check_algorithm(token, header_b64)?;

        let claims = match decode::<serde_json::Value>(token, &self.key, &self.validation) {
            Ok(data) => data.claims,
            // jsonwebtoken also reads `exp`, `nbf` and `sub` into a struct of
            // its own; an array or object there derails its JSON parser (after
            // the signature check). Name the bad claim instead of `Malformed`.
            Err(e) if matches!(e.kind(), ErrorKind::Json(_)) => {
                return Err(self.unreadable_claims_error(token, now_secs));
            }
            Err(e) => return Err(map_jwt_error(e.kind())),
        };
        let claims = match claims {
            serde_json::Value::Object(map) => map,
            _ => return Err(AuthError::Malformed),
        };
        check_strict(token)?;
        identity_from_claims(&claims, now_secs)
    }

    /// The error for a token whose payload jsonwebtoken could not read: after
    /// checking the signature again, the claim error [`identity_from_claims`]
    /// finds in the payload, else `Malformed`. Never accepts the token.
    fn unreadable_claims_error(&self, token: &str, now_secs: u64) -> AuthError {
        let Some((header, payload, signature)) = split_token(token) else {
            return AuthError::Malformed;
        };
        let message = &token[..header.len() + 1 + payload.len()];
        match jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            &self.key,
            Algorithm::HS256,
        ) {
            Ok(true) => {}
            Ok(false) => return AuthError::BadSignature,
            Err(_) => return AuthError::Malformed,
        }
        let claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok());
        match claims {
            Some(serde_json::Value::Object(map)) => identity_from_claims(&map, now_secs)
                .err()
                .unwrap_or(AuthError::Malformed),
            _ => AuthError::Malformed,
        }
    }
}

/// Checks the claims of a token whose signature is valid.
fn identity_from_claims(
    claims: &serde_json::Map<String, serde_json::Value>,
    now_secs: u64,
) -> Result<Identity, AuthError> {
    let client = id_claim(claims, "sub")?;
    let account = id_claim(claims, "acct")?;
    let role = match claims.get("role") {
        None => Role::Agent,
        Some(v) => v
            .as_str()
            .and_then(Role::parse)
            .ok_or(AuthError::BadClaim("role"))?,
    };
    let exp = match claims.get("exp") {
        Some(v) => v.as_u64().ok_or(AuthError::MissingClaim("exp"))?,
        None => return Err(AuthError::MissingClaim("exp")),
    };
    let nbf = match claims.get("nbf") {
        Some(v) => Some(v.as_u64().ok_or(AuthError::MissingClaim("nbf"))?),
        None => None,
    };

    if now_secs >= exp {
        return Err(AuthError::Expired);
    }
    if let Some(nbf) = nbf {
        if now_secs < nbf {
            return Err(AuthError::NotYetValid);
        }
    }
    Ok(Identity {
        account,
        client: client.into(),
        role,
        exp,
    })
}

/// After the signature check: refuses a header or claims that repeat a
/// member name, and a header with `crit` (see [`strict`]).
fn check_strict(token: &str) -> Result<(), AuthError> {
    let (header, payload, _) = split_token(token).ok_or(AuthError::Malformed)?;
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| AuthError::Malformed)
    };
    let header = decode(header)?;
    if !strict::no_duplicate_members(&header) {
        return Err(AuthError::DuplicateMember("header parameters"));
    }
    if strict::has_crit(&header) {
        return Err(AuthError::CriticalExtension);
    }
    if !strict::no_duplicate_members(&decode(payload)?) {
        return Err(AuthError::DuplicateMember("claims"));
    }
    Ok(())
}

/// Splits a compact JWS into exactly three `.`-separated parts.
fn split_token(token: &str) -> Option<(&str, &str, &str)> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => Some((h, p, s)),
        _ => None,
    }
}

/// Classifies the header's `alg` before any signature work: anything but
/// HS256 is `BadAlgorithm`, an unreadable header is `Malformed`.
fn check_algorithm(token: &str, header_b64: &str) -> Result<(), AuthError> {
    match decode_header(token) {
        Ok(header) if header.alg == Algorithm::HS256 => Ok(()),
        Ok(_) => Err(AuthError::BadAlgorithm),
        // jsonwebtoken cannot represent algorithms it does not know (such as
        // `none`), so look at the raw JSON: a parseable header with a string
        // `alg` other than HS256 is an algorithm error, anything else is junk.
        Err(_) => {
            let raw = URL_SAFE_NO_PAD
                .decode(header_b64)
                .map_err(|_| AuthError::Malformed)?;
            let json: serde_json::Value =
                serde_json::from_slice(&raw).map_err(|_| AuthError::Malformed)?;
            match json.get("alg").and_then(|a| a.as_str()) {
                Some(alg) if alg != "HS256" => Err(AuthError::BadAlgorithm),
                _ => Err(AuthError::Malformed),
            }
        }
    }
}

/// Maps a jsonwebtoken error to an [`AuthError`].
fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => AuthError::BadAlgorithm,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        // InvalidToken, Base64, Json, Utf8, and anything else jsonwebtoken may
        // add: refuse the token as malformed.
        _ => AuthError::Malformed,
    }
}

/// Reads a required id claim (`sub` or `acct`).
fn id_claim(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &'static str,
) -> Result<String, AuthError> {
    let value = claims
        .get(name)
        .and_then(|v| v.as_str())
        .ok_or(AuthError::MissingClaim(name))?;
    if !valid_id(value) {
        return Err(AuthError::BadClaim(name));
    }
    Ok(value.to_owned())
}

/// Signs a token for `client` in `account`, valid from `now_secs` for `ttl_secs`.
/// Fails with `BadClaim` if an id is invalid.
pub fn sign(
    secret: &[u8],
    account: &str,
    client: &str,
    role: Role,
    now_secs: u64,
    ttl_secs: u64,
) -> Result<String, AuthError> {
    if !valid_id(client) {
        return Err(AuthError::BadClaim("sub"));
    }
    if !valid_id(account) {
        return Err(AuthError::BadClaim("acct"));
    }
    let claims = serde_json::json!({
        "sub": client,
        "acct": account,
        "role": role.as_str(),
        "iat": now_secs,
        "exp": now_secs.saturating_add(ttl_secs),
    });
    // HS256 accepts keys of any length, so encoding cannot fail in practice;
    // map the impossible error rather than panicking.
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| map_jwt_error(e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret-0123456789";
    const NOW: u64 = 1_700_000_000;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Signs arbitrary claims with HS256 and `SECRET`.
    fn sign_claims(claims: &serde_json::Value) -> String {
        sign_with(Algorithm::HS256, SECRET, claims)
    }

    fn sign_with(alg: Algorithm, secret: &[u8], claims: &serde_json::Value) -> String {
        encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("encode")
    }

    fn good_claims() -> serde_json::Value {
        json!({"sub": "client-1", "acct": "acct_9", "exp": NOW + 60})
    }

    fn without(claim: &str) -> serde_json::Value {
        let mut c = good_claims();
        c.as_object_mut().expect("object").remove(claim);
        c
    }

    fn with(claim: &str, value: serde_json::Value) -> serde_json::Value {
        let mut c = good_claims();
        c.as_object_mut()
            .expect("object")
            .insert(claim.to_owned(), value);
        c
    }

    /// Hand-builds a token with the given raw header JSON and a garbage signature.
    fn hand_built(header_json: &str, signature: &str) -> String {
        let payload = serde_json::to_vec(&good_claims()).expect("json");
        format!(
            "{}.{}.{}",
            b64(header_json.as_bytes()),
            b64(&payload),
            signature
        )
    }

    fn verify(token: &str) -> Result<Identity, AuthError> {
        Verifier::new(SECRET).verify(token, NOW)
    }

    #[test]
    fn round_trip() {
        let token = sign(SECRET, "acct_9", "client-1", Role::Console, NOW, 300).expect("sign");
        let id = verify(&token).expect("verify");
        assert_eq!(
            id,
            Identity {
                account: "acct_9".into(),
                client: "client-1".into(),
                role: Role::Console,
                exp: NOW + 300
            }
        );
        let header = decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn role_defaults_to_agent() {
        assert_eq!(
            verify(&sign_claims(&good_claims())).expect("verify").role,
            Role::Agent
        );
        let t = sign_claims(&with("role", json!("agent")));
        assert_eq!(verify(&t).expect("verify").role, Role::Agent);
    }

    #[test]
    fn expired() {
        let v = Verifier::new(SECRET);
        let t = sign_claims(&with("exp", json!(NOW)));
        assert_eq!(v.verify(&t, NOW), Err(AuthError::Expired));
        assert_eq!(v.verify(&t, NOW + 1000), Err(AuthError::Expired));
        assert!(v.verify(&t, NOW - 1).is_ok());
        let t = sign_claims(&with("exp", json!(NOW - 1)));
        assert_eq!(v.verify(&t, NOW), Err(AuthError::Expired));
        let t = sign(SECRET, "a", "b", Role::Agent, NOW, 0).expect("sign");
        assert_eq!(v.verify(&t, NOW), Err(AuthError::Expired));
    }

    #[test]
    fn not_yet_valid() {
        let v = Verifier::new(SECRET);
        let t = sign_claims(&with("nbf", json!(NOW + 10)));
        assert_eq!(v.verify(&t, NOW), Err(AuthError::NotYetValid));
        assert_eq!(v.verify(&t, NOW + 9), Err(AuthError::NotYetValid));
        assert!(v.verify(&t, NOW + 10).is_ok());
        let t = sign_claims(&with("nbf", json!(NOW)));
        assert!(v.verify(&t, NOW).is_ok());
        let t = sign_claims(&with("nbf", json!("soon")));
        assert_eq!(v.verify(&t, NOW), Err(AuthError::MissingClaim("nbf")));
    }

    #[test]
    fn wrong_secret() {
        let t = sign(b"other-secret", "acct", "client", Role::Agent, NOW, 60).expect("sign");
        assert_eq!(verify(&t), Err(AuthError::BadSignature));
        let t = sign(b"", "acct", "client", Role::Agent, NOW, 60).expect("sign");
        assert_eq!(verify(&t), Err(AuthError::BadSignature));
    }

    #[test]
    fn flipped_signature_bit() {
        let token = sign(SECRET, "acct", "client", Role::Agent, NOW, 60).expect("sign");
        let (h, p, s) = split_token(&token).expect("three parts");
        let sig = URL_SAFE_NO_PAD.decode(s).expect("sig b64");
        assert_eq!(sig.len(), 32);
        for bit in [0usize, 7, 100, 255] {
            let mut bad = sig.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let t = format!("{h}.{p}.{}", b64(&bad));
            assert_eq!(verify(&t), Err(AuthError::BadSignature), "bit {bit}");
        }
        // Truncated and empty signatures are also refused.
        assert_eq!(
            verify(&format!("{h}.{p}.{}", b64(&sig[..31]))),
            Err(AuthError::BadSignature)
        );
        assert_eq!(verify(&format!("{h}.{p}.")), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampered_payload() {
        let token = sign(SECRET, "acct", "client", Role::Agent, NOW, 60).expect("sign");
        let (h, _, s) = split_token(&token).expect("three parts");
        let payload =
            serde_json::to_vec(&json!({"sub": "client", "acct": "other", "exp": NOW + 60}))
                .expect("json");
        assert_eq!(
            verify(&format!("{h}.{}.{s}", b64(&payload))),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn alg_none_refused() {
        let t = hand_built(r#"{"alg":"none","typ":"JWT"}"#, "");
        assert_eq!(verify(&t), Err(AuthError::BadAlgorithm));
        let t = hand_built(r#"{"alg":"None"}"#, "");
        assert_eq!(verify(&t), Err(AuthError::BadAlgorithm));
        let t = hand_built(r#"{"alg":"hs256"}"#, "c2ln");
        assert_eq!(verify(&t), Err(AuthError::BadAlgorithm));
    }

    #[test]
    fn other_algorithms_refused() {
        for header in [
            r#"{"alg":"HS384","typ":"JWT"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
            r#"{"alg":"RS256","typ":"JWT"}"#,
            r#"{"alg":"ES256","typ":"JWT"}"#,
            r#"{"alg":"EdDSA","typ":"JWT"}"#,
        ] {
            let t = hand_built(header, "Z2FyYmFnZS1zaWduYXR1cmU");
            assert_eq!(verify(&t), Err(AuthError::BadAlgorithm), "{header}");
        }
        // Correctly signed with the right secret, but HS384: still refused.
        let t = sign_with(Algorithm::HS384, SECRET, &good_claims());
        assert_eq!(verify(&t), Err(AuthError::BadAlgorithm));
    }

    #[test]
    fn bad_headers_are_malformed() {
        let sig = "Z2FyYmFnZQ";
        assert_eq!(
            verify(&hand_built(r#"{"typ":"JWT"}"#, sig)),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            verify(&hand_built(r#"{"alg":256}"#, sig)),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            verify(&hand_built(r#"[1,2]"#, sig)),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            verify(&hand_built("not json", sig)),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            verify(&format!("!!!.{}.sig", b64(b"{}"))),
            Err(AuthError::Malformed)
        );
    }

    /// Signs `payload` (raw JSON text) under `header` (raw JSON text) with the secret.
    fn sign_raw(header: &str, payload: &str) -> String {
        let message = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .expect("sign");
        format!("{message}.{sig}")
    }

    #[test]
    fn duplicate_members_are_refused() {
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        let exp = NOW + 60;
        let good = format!(r#"{{"sub":"c","acct":"acme","exp":{exp}}}"#);
        assert!(verify(&sign_raw(header, &good)).is_ok());
        for claims in [
            format!(r#"{{"sub":"c","acct":"acme","exp":{exp},"acct":"evil"}}"#),
            format!(r#"{{"sub":"c","acct":"acme","exp":{exp},"\u0061cct":"evil"}}"#),
            format!(r#"{{"sub":"c","acct":"acme","exp":{exp},"x":{{"y":1,"y":2}}}}"#),
        ] {
            assert_eq!(
                verify(&sign_raw(header, &claims)),
                Err(AuthError::DuplicateMember("claims")),
                "{claims}"
            );
        }
        assert_eq!(
            verify(&sign_raw(r#"{"alg":"HS256","x":1,"x":2}"#, &good)),
            Err(AuthError::DuplicateMember("header parameters"))
        );
        // jsonwebtoken itself refuses a repeated parameter it knows.
        assert_eq!(
            verify(&sign_raw(r#"{"alg":"HS256","typ":"JWT","typ":"x"}"#, &good)),
            Err(AuthError::Malformed)
        );
        // Equal names only after decoding escapes are still one name.
        assert!(verify(&sign_raw(header, &good.replace("\"sub\"", "\"s\\u0075b\""))).is_ok());
    }

    #[test]
    fn crit_is_refused() {
        let exp = NOW + 60;
        let claims = format!(r#"{{"sub":"c","acct":"acme","exp":{exp},"b64":false}}"#);
        for header in [
            r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
            r#"{"alg":"HS256","crit":["exp"]}"#,
            r#"{"alg":"HS256","crit":[]}"#,
        ] {
            let e = verify(&sign_raw(header, &claims)).unwrap_err();
            assert_eq!(e, AuthError::CriticalExtension, "{header}");
            assert_eq!(e.code(), "invalid_token");
        }
    }

    #[test]
    fn missing_claims() {
        for claim in ["sub", "acct", "exp"] {
            let t = sign_claims(&without(claim));
            assert_eq!(verify(&t), Err(AuthError::MissingClaim(claim)), "{claim}");
        }
    }

    #[test]
    fn wrong_claim_types() {
        let cases = [
            ("exp", json!("1700000060")),
            ("exp", json!(1_700_000_060.5)),
            ("exp", json!(-1)),
            ("exp", json!(null)),
            ("sub", json!(42)),
            ("sub", json!(null)),
            ("acct", json!(["a"])),
        ];
        for (claim, value) in cases {
            let t = sign_claims(&with(claim, value.clone()));
            assert_eq!(
                verify(&t),
                Err(AuthError::MissingClaim(claim)),
                "{claim}={value}"
            );
        }
    }

    /// Found by the `token` fuzz target (fuzz/regressions/token/): an array or
    /// object in `exp`, `nbf` or `sub` made jsonwebtoken fail with a JSON error,
    /// reported as `Malformed` instead of naming the claim.
    #[test]
    fn array_or_object_claims_are_named() {
        let cases = [
            ("exp", json!(["soon"])),
            ("exp", json!({"t": 1})),
            ("nbf", json!([NOW])),
            ("nbf", json!({})),
            ("sub", json!(["client-1"])),
            ("sub", json!({"id": "client-1"})),
        ];
        for (claim, value) in cases {
            let t = sign_claims(&with(claim, value.clone()));
            assert_eq!(
                verify(&t),
                Err(AuthError::MissingClaim(claim)),
                "{claim}={value}"
            );
            // Still never accepted, and a forged one is still a bad signature.
            let forged = sign_with(Algorithm::HS256, b"other", &with(claim, value.clone()));
            assert_eq!(
                verify(&forged),
                Err(AuthError::BadSignature),
                "{claim}={value}"
            );
        }
        // Claims that are otherwise fine but unreadable for jsonwebtoken
        // (duplicate `exp`) stay `Malformed`.
        let payload = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"sub":"c","acct":"a","exp":{},"exp":{}}}"#,
            NOW + 60,
            NOW + 60
        ));
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let message = format!("{header}.{payload}");
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .expect("sign");
        assert_eq!(
            verify(&format!("{message}.{sig}")),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn non_object_payload_is_malformed() {
        for payload in [json!([1, 2, 3]), json!("x"), json!(5)] {
            assert_eq!(verify(&sign_claims(&payload)), Err(AuthError::Malformed));
        }
    }

    #[test]
    fn forbidden_ids() {
        let long = "x".repeat(65);
        for bad in ["a b", "a/b", "é", long.as_str(), "", "a\n", "a:b"] {
            assert!(!valid_id(bad), "{bad:?}");
            assert_eq!(
                verify(&sign_claims(&with("sub", json!(bad)))),
                Err(AuthError::BadClaim("sub"))
            );
            assert_eq!(
                verify(&sign_claims(&with("acct", json!(bad)))),
                Err(AuthError::BadClaim("acct"))
            );
            assert_eq!(
                sign(SECRET, "acct", bad, Role::Agent, NOW, 60),
                Err(AuthError::BadClaim("sub"))
            );
            assert_eq!(
                sign(SECRET, bad, "client", Role::Agent, NOW, 60),
                Err(AuthError::BadClaim("acct"))
            );
        }
    }

    #[test]
    fn valid_ids() {
        let max = "Z".repeat(64);
        for good in ["a", "A-z_0.9", max.as_str(), "...", "-"] {
            assert!(valid_id(good), "{good:?}");
        }
    }

    #[test]
    fn bad_role() {
        for role in [
            json!("admin"),
            json!("Agent"),
            json!(""),
            json!(1),
            json!(null),
        ] {
            let t = sign_claims(&with("role", role.clone()));
            assert_eq!(verify(&t), Err(AuthError::BadClaim("role")), "{role}");
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let big = "a".repeat(10 * 1024);
        let big_dots = format!(
            "{}.{}.{}",
            "a".repeat(4000),
            "b".repeat(4000),
            "c".repeat(300)
        );
        for g in [
            "",
            "a.b",
            "a.b.c.d",
            "a.b.c",
            "..",
            "...",
            "abc",
            big.as_str(),
            big_dots.as_str(),
        ] {
            assert_eq!(
                verify(g),
                Err(AuthError::Malformed),
                "{:?}",
                &g[..g.len().min(20)]
            );
        }
        // A valid token with an extra part is not accepted either.
        let t = sign(SECRET, "acct", "client", Role::Agent, NOW, 60).expect("sign");
        assert_eq!(verify(&format!("{t}.x")), Err(AuthError::Malformed));
        // Padded base64 in the signature is not valid base64url-without-padding.
        assert_eq!(verify(&format!("{t}=")), Err(AuthError::Malformed));
    }

    #[test]
    fn oversized_token_is_malformed_even_if_valid() {
        let padding = "p".repeat(MAX_TOKEN_LEN);
        let t = sign_claims(&with("pad", json!(padding)));
        assert!(t.len() > MAX_TOKEN_LEN);
        assert_eq!(verify(&t), Err(AuthError::Malformed));
    }

    #[test]
    fn codes_and_messages() {
        let all = [
            (AuthError::Missing, "missing_token"),
            (AuthError::Malformed, "malformed_token"),
            (AuthError::BadAlgorithm, "bad_algorithm"),
            (AuthError::BadSignature, "bad_signature"),
            (AuthError::Expired, "token_expired"),
            (AuthError::NotYetValid, "token_not_yet_valid"),
            (AuthError::MissingClaim("exp"), "missing_claim"),
            (AuthError::BadClaim("role"), "bad_claim"),
            (AuthError::DuplicateMember("claims"), "malformed_token"),
            (AuthError::CriticalExtension, "invalid_token"),
        ];
        for (err, code) in all {
            assert_eq!(err.code(), code);
            assert!(!err.message().is_empty());
        }
        assert!(AuthError::MissingClaim("exp").message().contains("exp"));
        assert!(AuthError::BadClaim("role").message().contains("role"));
    }
}
