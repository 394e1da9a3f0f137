//! Forged and invalid tokens: 401 with the right error code.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;

use super::*;

// ---------------------------------------------------------------------------
// 4. Bad tokens
// ---------------------------------------------------------------------------

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn sign_claims(alg: jsonwebtoken::Algorithm, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode")
}

fn good_claims() -> serde_json::Value {
    json!({"sub": "console-9", "acct": ACCT, "role": "console", "exp": now_secs() + 3600})
}

fn with(mut c: serde_json::Value, k: &str, v: serde_json::Value) -> serde_json::Value {
    c[k] = v;
    c
}

fn without(mut c: serde_json::Value, k: &str) -> serde_json::Value {
    c.as_object_mut().unwrap().remove(k);
    c
}

/// Signs raw header and claims JSON text (which `serde_json::Value` could not
/// hold: repeated member names) with the node's secret.
fn sign_raw(header: &str, claims: &str) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        jsonwebtoken::Algorithm::HS256,
    )
    .expect("sign");
    format!("{message}.{sig}")
}

#[test]
fn forged_and_invalid_tokens_are_401_with_the_right_code() {
    use jsonwebtoken::Algorithm::{HS256, HS384, HS512};
    let _g = serial();
    let node = Node::start(&["--workers", "2"]);
    let mut rx = open_rx(&node, "agent-1");
    let now = now_secs();
    let claims = good_claims();

    let good = sign_claims(HS256, &claims);
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    let alg_none_sig = format!(
        "{}.{}",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        good.split_once('.').unwrap().1
    );
    let alg_none_lower = format!("{}.{}.", b64(&json!({"alg": "None"})), b64(&claims));
    let rs256 = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "RS256", "typ": "JWT"})),
        b64(&claims),
        URL_SAFE_NO_PAD.encode([7u8; 256])
    );
    // The HS256 signature under an RS256 header (key-confusion style).
    let rs256_hmac = {
        let h = b64(&json!({"alg": "RS256", "typ": "JWT"}));
        let p = b64(&claims);
        let hs = sign_claims(HS256, &claims);
        format!("{h}.{p}.{}", hs.rsplit('.').next().unwrap())
    };
    let flipped = {
        let (rest, sig) = good.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        raw[17] ^= 0x04;
        format!("{rest}.{}", URL_SAFE_NO_PAD.encode(raw))
    };
    let flipped_payload = {
        let mut parts: Vec<String> = good.split('.').map(String::from).collect();
        let mut raw = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
        let i = raw.iter().position(|&b| b == b'9').unwrap(); // console-9 -> console-8
        raw[i] ^= 0x01;
        parts[1] = URL_SAFE_NO_PAD.encode(raw);
        parts.join(".")
    };

    let cases: Vec<(&str, String, &str, Option<&str>)> = vec![
        ("alg none", alg_none, "bad_algorithm", None),
        (
            "alg none with a signature",
            alg_none_sig,
            "bad_algorithm",
            None,
        ),
        ("alg None", alg_none_lower, "bad_algorithm", None),
        ("HS384", sign_claims(HS384, &claims), "bad_algorithm", None),
        ("HS512", sign_claims(HS512, &claims), "bad_algorithm", None),
        ("RS256", rs256, "bad_algorithm", None),
        (
            "RS256 header, HS256 signature",
            rs256_hmac,
            "bad_algorithm",
            None,
        ),
        (
            "expired",
            sign_claims(HS256, &with(claims.clone(), "exp", json!(now - 10))),
            "token_expired",
            None,
        ),
        (
            "exp now",
            sign_claims(HS256, &with(claims.clone(), "exp", json!(now - 1))),
            "token_expired",
            None,
        ),
        (
            "nbf in the future",
            sign_claims(HS256, &with(claims.clone(), "nbf", json!(now + 3600))),
            "token_not_yet_valid",
            None,
        ),
        ("flipped signature bit", flipped, "bad_signature", None),
        (
            "flipped payload bit",
            flipped_payload,
            "bad_signature",
            None,
        ),
        (
            "missing sub",
            sign_claims(HS256, &without(claims.clone(), "sub")),
            "missing_claim",
            Some("sub"),
        ),
        (
            "missing acct",
            sign_claims(HS256, &without(claims.clone(), "acct")),
            "missing_claim",
            Some("acct"),
        ),
        (
            "missing exp",
            sign_claims(HS256, &without(claims.clone(), "exp")),
            "missing_claim",
            Some("exp"),
        ),
        (
            "exp as a string",
            sign_claims(
                HS256,
                &with(claims.clone(), "exp", json!((now + 3600).to_string())),
            ),
            "missing_claim",
            Some("exp"),
        ),
        (
            "sub as a number",
            sign_claims(HS256, &with(claims.clone(), "sub", json!(42))),
            "missing_claim",
            Some("sub"),
        ),
        (
            "sub as an array",
            sign_claims(HS256, &with(claims.clone(), "sub", json!(["console-9"]))),
            "missing_claim",
            Some("sub"),
        ),
        (
            "sub with a space",
            sign_claims(HS256, &with(claims.clone(), "sub", json!("a b"))),
            "bad_claim",
            Some("sub"),
        ),
        (
            "sub with a slash",
            sign_claims(HS256, &with(claims.clone(), "sub", json!("a/b"))),
            "bad_claim",
            Some("sub"),
        ),
        (
            "sub of 65 chars",
            sign_claims(HS256, &with(claims.clone(), "sub", json!("s".repeat(65)))),
            "bad_claim",
            Some("sub"),
        ),
        (
            "empty sub",
            sign_claims(HS256, &with(claims.clone(), "sub", json!(""))),
            "bad_claim",
            Some("sub"),
        ),
        (
            "acct with a newline",
            sign_claims(HS256, &with(claims.clone(), "acct", json!("ac\nme"))),
            "bad_claim",
            Some("acct"),
        ),
        (
            "role admin",
            sign_claims(HS256, &with(claims.clone(), "role", json!("admin"))),
            "bad_claim",
            Some("role"),
        ),
        (
            "acct repeated (the last one would win)",
            sign_raw(
                r#"{"alg":"HS256","typ":"JWT"}"#,
                &format!(
                    r#"{{"sub":"console-9","acct":"{ACCT}","role":"console","exp":{},"acct":"evil"}}"#,
                    now + 3600
                ),
            ),
            "malformed_token",
            None,
        ),
        (
            "acct repeated under an escaped name",
            sign_raw(
                r#"{"alg":"HS256","typ":"JWT"}"#,
                &format!(
                    r#"{{"sub":"console-9","acct":"{ACCT}","exp":{},"\u0061cct":"evil"}}"#,
                    now + 3600
                ),
            ),
            "malformed_token",
            None,
        ),
        (
            "header parameter repeated",
            sign_raw(r#"{"alg":"HS256","x":1,"x":2}"#, &claims.to_string()),
            "malformed_token",
            None,
        ),
        (
            "crit header parameter",
            sign_raw(
                r#"{"alg":"HS256","typ":"JWT","crit":["b64"],"b64":false}"#,
                &claims.to_string(),
            ),
            "invalid_token",
            None,
        ),
        (
            "two parts",
            good.rsplit_once('.').unwrap().0.to_string(),
            "malformed_token",
            None,
        ),
        ("four parts", format!("{good}.x"), "malformed_token", None),
        (
            "token over 8 KiB",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "HS256"})),
                "A".repeat(9000),
                "x"
            ),
            "malformed_token",
            None,
        ),
    ];
    // 65 chars is one too many; 64 is fine (checked below).
    let sub64 = sign_claims(HS256, &with(claims.clone(), "sub", json!("s".repeat(64))));

    // All on one keep-alive connection: a 401 does not close it.
    let mut http = Http::connect(node.addr);
    for (what, tok, code, claim) in &cases {
        let r = http.request("GET", "/v1/clients", Some(tok), b"");
        assert_eq!(
            r.status,
            401,
            "{what}: {} {:?}",
            r.head,
            String::from_utf8_lossy(&r.body)
        );
        assert_error(&r, 401, code);
        if let Some(c) = claim {
            let msg = r.json()["message"].as_str().unwrap().to_string();
            assert!(
                msg.contains(&format!("`{c}`")),
                "{what}: message {msg:?} does not name {c}"
            );
        }
        // The send and receive endpoints refuse it the same way.
        let r = send(node.addr, tok, "agent-1", &format!("forged: {what}"));
        assert_error(&r, 401, code);
        let (rcv, status) = Receiver::try_open(node.addr, "/v1/receive", Some(tok), &[]);
        assert_eq!(status, 401, "{what}: receive {}", rcv.head);
    }
    assert_eq!(
        http.request("GET", "/v1/clients", Some(&good), b"").status,
        200
    );
    assert_eq!(
        http.request("GET", "/v1/clients", Some(&sub64), b"").status,
        200
    );
    // No forged client ever showed up, and nothing forged was delivered.
    let listed = clients(node.addr, &good);
    assert_eq!(listed.len(), 1, "{listed:?}");
    arrives_within(
        &node,
        &mut rx,
        "agent-1",
        "after bad tokens",
        Duration::from_millis(500),
    );
    assert_no_error_log(&node);
}
