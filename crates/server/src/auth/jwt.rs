//! HS256 tokens signed with a per-installation secret kept in the data dir.

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use raworc_api::{OperatorRole, PrincipalType};
use serde::{Deserialize, Serialize};

use crate::keyfile;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Principal name.
    pub sub: String,
    /// `User` or `Operator`.
    pub typ: PrincipalType,
    /// Role at issue time (operators' role is re-read on every request).
    pub role: OperatorRole,
    /// The operator's token generation; absent for `User` principals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#gen: Option<i64>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens whose signature was checked, with their claims: clients send
    /// the same token on every request, and checking it again (base64, HMAC,
    /// JSON) was a visible part of each request's cost. Expiry is checked on
    /// every use; revocation is the caller's check of `gen`.
    verified: RwLock<HashMap<String, Claims>>,
}

/// Most tokens remembered as verified; the map starts over when full.
const VERIFIED_CAPACITY: usize = 10_000;

impl JwtKeys {
    /// Loads `jwt.key` from the data dir, creating it (0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<JwtKeys> {
        let secret = keyfile::load_or_create(&data_dir.join("jwt.key"), 64)?;
        Ok(JwtKeys::from_secret(&secret))
    }

    pub fn from_secret(secret: &[u8]) -> JwtKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            verified: RwLock::new(HashMap::new()),
        }
    }

    pub fn issue(&self, claims: &Claims) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    /// Verifies signature and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        self.verify_at(token, chrono::Utc::now().timestamp())
    }

    fn verify_at(&self, token: &str, now: i64) -> Result<Claims, jsonwebtoken::errors::Error> {
        let known = self
            .verified
            .read()
            .ok()
            .and_then(|m| m.get(token).cloned());
        let claims = match known {
            Some(claims) => claims,
            None => {
                let claims =
                    jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims;
                if let Ok(mut m) = self.verified.write() {
                    if m.len() >= VERIFIED_CAPACITY {
                        m.clear();
                    }
                    m.insert(token.to_string(), claims.clone());
                }
                claims
            }
        };
        // The decoder's rule, applied on every use: expired once `exp` is in the past.
        if claims.exp < now {
            return Err(jsonwebtoken::errors::ErrorKind::ExpiredSignature.into());
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "alice".into(),
            typ: PrincipalType::Operator,
            role: OperatorRole::User,
            r#gen: Some(7),
            iat: 0,
            exp,
            jti: "x".into(),
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let keys = JwtKeys::from_secret(b"k1");
        let now = chrono::Utc::now().timestamp();
        let token = keys.issue(&claims(now + 60)).unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, "alice");
        let expired = keys.issue(&claims(now - 1)).unwrap();
        assert!(keys.verify(&expired).is_err());
        let other = JwtKeys::from_secret(b"k2");
        assert!(other.verify(&token).is_err());
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let keys = JwtKeys::from_secret(b"k1");
        let now = chrono::Utc::now().timestamp();
        let token = keys.issue(&claims(now + 60)).unwrap();
        assert!(keys.verify_at(&token, now).is_ok());
        assert!(keys.verified.read().unwrap().contains_key(&token));
        let late = keys.verify_at(&token, now + 61).unwrap_err();
        assert_eq!(
            late.kind(),
            &jsonwebtoken::errors::ErrorKind::ExpiredSignature
        );
        // A token with a bad signature is never remembered.
        let dot = token.rfind('.').unwrap();
        let first = if &token[dot + 1..dot + 2] == "A" {
            "B"
        } else {
            "A"
        };
        let forged = format!("{}{first}{}", &token[..=dot], &token[dot + 2..]);
        assert!(keys.verify(&forged).is_err());
        assert!(!keys.verified.read().unwrap().contains_key(&forged));
    }
}
