//! Connect-time authentication: JWTs validated with `jsonwebtoken`, and the claims the gateway
//! uses (`exp`, and `channels`, the topic patterns a connection may join).
//!
//! The token comes from the `token` connect parameter, or from the `phoenix` subprotocol's
//! `base64url.bearer.phx.<token>` entry (what phoenix.js sends for its `authToken` option: despite
//! the name, standard base64 without padding). The accepted algorithms are pinned by the config,
//! never read from the token, so `none` and HS/RS confusion are refused by construction.

use std::path::Path;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::phoenix::router::Route;
use crate::ws::handshake::{query_param, RequestHead};

/// The `[auth]` section. Auth is on when `secret` or `public_key_file` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HMAC secret for HS256 tokens. Unset by default (auth off).
    pub secret: Option<String>,
    /// PEM public key for RS256 (default with a key) or ES256 tokens. Unset by default.
    pub public_key_file: Option<String>,
    /// `HS256`, `RS256` or `ES256`; default from the key kind (HS256 for a secret, RS256 for a
    /// public key). Pinned: a token's own `alg` header never chooses.
    pub algorithm: Option<String>,
    /// Required `aud` claim value, when set.
    pub audience: Option<String>,
    /// Required `iss` claim value, when set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, seconds. Default 30: clocks of token issuers and the
    /// gateway drift; more would extend stolen tokens' lives.
    pub leeway_s: Option<u64>,
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        self.secret.is_some() || self.public_key_file.is_some()
    }
}

/// The claims the gateway reads; others are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    /// Topic patterns (`rooms:*`, `user:42`) this connection may join; absent = any routed topic.
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// Every other claim (presence routes may key or describe members by them).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// Why a token was refused (logged at debug, counted; the token itself is never logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("token not decodable")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("bad signature")]
    BadSignature,
    #[error("algorithm not accepted")]
    WrongAlgorithm,
    #[error("wrong audience")]
    Audience,
    #[error("wrong issuer")]
    Issuer,
    #[error("invalid claims")]
    Claims,
}

/// A configured validator, shared read-only by every worker.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

fn algorithm(name: &str) -> Result<Algorithm, String> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        other => Err(format!(
            "unsupported algorithm {other:?}: use HS256, RS256 or ES256"
        )),
    }
}

impl Authenticator {
    /// `None` when auth is off.
    pub fn from_config(cfg: &AuthConfig) -> Result<Option<Self>, String> {
        let (key, default_alg) = match (&cfg.secret, &cfg.public_key_file) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err("set either auth.secret or auth.public_key_file, not both".into())
            }
            (Some(secret), None) => (DecodingKey::from_secret(secret.as_bytes()), "HS256"),
            (None, Some(path)) => {
                let pem = std::fs::read(Path::new(path))
                    .map_err(|e| format!("cannot read {path}: {e}"))?;
                let alg = cfg.algorithm.as_deref().unwrap_or("RS256");
                let key = match alg {
                    "ES256" => DecodingKey::from_ec_pem(&pem),
                    _ => DecodingKey::from_rsa_pem(&pem),
                }
                .map_err(|e| format!("invalid public key {path}: {e}"))?;
                (key, "RS256")
            }
        };
        let alg = algorithm(cfg.algorithm.as_deref().unwrap_or(default_alg))?;
        if cfg.secret.is_some() != (alg == Algorithm::HS256) {
            return Err(
                "HS256 goes with auth.secret; RS256/ES256 with auth.public_key_file".into(),
            );
        }
        let mut validation = Validation::new(alg);
        validation.leeway = cfg.leeway_s.unwrap_or(30);
        validation.validate_nbf = true;
        validation.validate_aud = cfg.audience.is_some();
        if let Some(aud) = &cfg.audience {
            validation.set_audience(&[aud]);
        }
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Some(Self { key, validation }))
    }

    /// Validates signature, algorithm, `exp`, `nbf`, and `aud`/`iss` when configured.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind as K;
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                K::ExpiredSignature => AuthError::Expired,
                K::ImmatureSignature => AuthError::NotYetValid,
                K::InvalidSignature => AuthError::BadSignature,
                K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => {
                    AuthError::WrongAlgorithm
                }
                K::InvalidAudience => AuthError::Audience,
                K::InvalidIssuer => AuthError::Issuer,
                K::MissingRequiredClaim(_) | K::Json(_) => AuthError::Claims,
                _ => AuthError::Malformed,
            })
    }
}

/// The prefix of the subprotocol entry that carries a token.
pub const BEARER_PROTOCOL_PREFIX: &str = "base64url.bearer.phx.";

/// The token of an upgrade request: the `token` connect parameter, else the bearer subprotocol.
pub fn token_from_request(head: &RequestHead) -> Option<String> {
    if let Some(t) = query_param(&head.query, "token") {
        return Some(t);
    }
    let protocols = &head.upgrade.as_ref()?.protocols;
    let encoded = protocols
        .iter()
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX))?;
    let engines = [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let trimmed = encoded.trim_end_matches('=');
    engines
        .iter()
        .find_map(|e| e.decode(trimmed).ok())
        .and_then(|b| String::from_utf8(b).ok())
}

/// Whether `topic` matches a claim pattern (same syntax as routes: exact, or prefix ending in `*`).
pub fn claim_allows(patterns: &[String], topic: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => topic == p,
    })
}

/// Whether a join of a topic routed by `route` is allowed with these claim patterns.
pub fn join_allowed(route: Option<&Route>, patterns: Option<&[String]>, topic: &str) -> bool {
    match patterns {
        Some(p) => claim_allows(p, topic),
        None => !route.is_some_and(|r| r.require_claim),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_patterns_match_like_routes() {
        let p = vec!["rooms:*".to_string(), "user:42".to_string()];
        assert!(claim_allows(&p, "rooms:lobby"));
        assert!(claim_allows(&p, "user:42"));
        assert!(!claim_allows(&p, "user:43"));
        assert!(!claim_allows(&[], "rooms:lobby"));
    }

    #[test]
    fn config_pins_the_algorithm_to_the_key_kind() {
        let cfg = AuthConfig {
            secret: Some("s".into()),
            algorithm: Some("RS256".into()),
            ..AuthConfig::default()
        };
        assert!(Authenticator::from_config(&cfg).is_err());
        let cfg = AuthConfig {
            secret: Some("s".into()),
            ..AuthConfig::default()
        };
        assert!(Authenticator::from_config(&cfg).unwrap().is_some());
        assert!(Authenticator::from_config(&AuthConfig::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_none_algorithm_token_is_refused() {
        let cfg = AuthConfig {
            secret: Some("s".into()),
            ..AuthConfig::default()
        };
        let auth = Authenticator::from_config(&cfg).unwrap().unwrap();
        // {"alg":"none","typ":"JWT"} . {"exp":9999999999} . (no signature)
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJleHAiOjk5OTk5OTk5OTl9.";
        assert!(auth.verify(token).is_err());
    }
}
