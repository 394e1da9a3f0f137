//! Client identity: JWT HS256 tokens (sans-IO: the current time is passed in).
//!
//! Claims: `sub` = client id, `acct` = account id (both 1-64 chars of
//! `[A-Za-z0-9._-]`), `exp` required, optional `nbf`, optional `role`
//! (`agent` | `console`, default `agent`). Only HS256 is accepted.

/// The role a client plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Agent,
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
    pub account: String,
    pub client: String,
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
}

impl AuthError {
    /// Machine-readable code, e.g. `"token_expired"`.
    pub fn code(&self) -> &'static str {
        todo!()
    }
    /// Human-readable text.
    pub fn message(&self) -> String {
        todo!()
    }
}

/// True if `s` is a valid client or account id: 1-64 chars of `[A-Za-z0-9._-]`.
pub fn valid_id(s: &str) -> bool {
    let _ = s;
    todo!()
}

/// Verifies HS256 tokens with one secret.
pub struct Verifier {
    _private: (),
}

impl Verifier {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let _ = secret;
        todo!()
    }

    /// Verifies `token` at time `now_secs` (seconds since the Unix epoch).
    /// The signature comparison is constant-time.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Identity, AuthError> {
        let _ = (token, now_secs);
        todo!()
    }
}

/// Signs a token for `client` in `account`, valid from `now_secs` for `ttl_secs`.
/// Fails with `BadClaim` if an id is invalid.
pub fn sign(secret: &[u8], account: &str, client: &str, role: Role, now_secs: u64, ttl_secs: u64) -> Result<String, AuthError> {
    let _ = (secret, account, client, role, now_secs, ttl_secs);
    todo!()
}
