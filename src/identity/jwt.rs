//! Compact JWS with RS256 (RFC 7515, RFC 7518 3.3): the JWTs minted for Azure and Google.
//!
//! Contract: [`encode`] signs a JSON claims object with the signing key and returns
//! `base64url(header) "." base64url(claims) "." base64url(signature)`, the header being
//! `{"alg":"RS256","kid":<kid>,"typ":"JWT"}`. The signature is deterministic (PKCS#1 v1.5), so
//! equal claims give equal tokens.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::keys::{IdentityKeys, KeyError};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Signs `claims` as a compact JWT.
pub fn encode(keys: &IdentityKeys, claims: &Map<String, Value>) -> Result<String, KeyError> {
    let header = serde_json::json!({ "alg": "RS256", "kid": keys.kid(), "typ": "JWT" });
    let mut out = B64.encode(header.to_string());
    out.push('.');
    out.push_str(&B64.encode(Value::Object(claims.clone()).to_string()));
    let signature = keys.sign(out.as_bytes())?;
    out.push('.');
    out.push_str(&B64.encode(signature));
    Ok(out)
}

/// The claims of a compact JWT, without checking anything (for tests and diagnostics).
pub fn claims(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = B64.decode(payload).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// (Tests.) Verifies a token against a JWKS document the way a relying party does: find the key
/// by `kid`, rebuild it from `n` and `e`, check the RS256 signature.
#[cfg(test)]
pub fn verify_with_jwks(token: &str, jwks: &str) -> Result<Map<String, Value>, String> {
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier;
    use rsa::{BigUint, RsaPublicKey};
    use sha2::Sha256;

    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return Err("not three parts".into());
    };
    let header: Value = serde_json::from_slice(&B64.decode(h).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let jwks: Value = serde_json::from_str(jwks).map_err(|e| e.to_string())?;
    let key = jwks["keys"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kid"] == header["kid"]))
        .ok_or("no key with that kid")?;
    let int = |name: &str| -> Result<BigUint, String> {
        let text = key[name].as_str().ok_or("missing")?;
        Ok(BigUint::from_bytes_be(
            &B64.decode(text).map_err(|e| e.to_string())?,
        ))
    };
    let public = RsaPublicKey::new(int("n")?, int("e")?).map_err(|e| e.to_string())?;
    let signature = Signature::try_from(B64.decode(s).map_err(|e| e.to_string())?.as_slice())
        .map_err(|e| e.to_string())?;
    VerifyingKey::<Sha256>::new(public)
        .verify(format!("{h}.{p}").as_bytes(), &signature)
        .map_err(|e| e.to_string())?;
    claims(token).ok_or_else(|| "claims are not an object".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_against_the_jwks_and_nothing_else() {
        let keys = IdentityKeys::fixed();
        let mut claims = Map::new();
        claims.insert("aud".into(), "a".into());
        claims.insert("exp".into(), 5.into());
        let token = encode(&keys, &claims).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verify_with_jwks(&token, keys.jwks()), Ok(claims.clone()));
        assert_eq!(
            encode(&keys, &claims).ok(),
            Some(token.clone()),
            "deterministic"
        );

        let mut forged: Vec<&str> = token.split('.').collect();
        let other = B64.encode(r#"{"aud":"b","exp":5}"#);
        forged[1] = &other;
        assert!(verify_with_jwks(&forged.join("."), keys.jwks()).is_err());
        let jwks: Value = serde_json::from_str(keys.jwks()).unwrap_or_default();
        assert_eq!(jwks["keys"][0]["kid"], keys.kid());
        assert_eq!(jwks["keys"][0]["e"], "AQAB");
    }
}
