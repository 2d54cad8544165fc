//! Room tokens (who may join which room) and the ICE servers offered to clients.
//!
//! Token = `base64url(claims) "." base64url(HMAC-SHA256(secret, base64url(claims)))`, claims
//! `{"room", "exp", "name"?}`. Several secrets may be valid at once so one can be rotated.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::signal::IceServerInfo;
use crate::IceServers;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub room: String,
    /// Unix seconds after which the token is refused.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("a room token is required (?token= or Authorization: Bearer)")]
    Missing,
    #[error("room token is malformed")]
    Malformed,
    #[error("room token signature does not match")]
    BadSignature,
    #[error("room token has expired")]
    Expired,
    #[error("room token is for another room")]
    WrongRoom,
}

fn sign(secret: &str, claims_b64: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(claims_b64.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Issues a token (used by `plenary cred --room` and the tests).
pub fn issue(secret: &str, claims: &Claims) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let sig = URL_SAFE_NO_PAD.encode(sign(secret, &body));
    format!("{body}.{sig}")
}

/// Checks `token` for `room` against any of `secrets`. No secrets: every request passes.
pub fn verify(
    secrets: &[String],
    token: Option<&str>,
    room: &str,
    now_unix: u64,
) -> Result<Option<Claims>, TokenError> {
    if secrets.is_empty() {
        return Ok(None);
    }
    let token = token.ok_or(TokenError::Missing)?;
    let (body, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    let good = secrets.iter().any(|s| {
        let mut mac = Hmac::<Sha256>::new_from_slice(s.as_bytes()).expect("HMAC takes any key");
        mac.update(body.as_bytes());
        mac.verify_slice(&sig).is_ok()
    });
    if !good {
        return Err(TokenError::BadSignature);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)?;
    if claims.exp < now_unix {
        return Err(TokenError::Expired);
    }
    if claims.room != room {
        return Err(TokenError::WrongRoom);
    }
    Ok(Some(claims))
}

/// ICE servers with fresh TURN REST credentials (`expiry:plenary-sfu`).
pub fn ice_servers(cfg: &IceServers, now_unix: u64) -> Vec<IceServerInfo> {
    let username = format!("{}:plenary-sfu", now_unix + cfg.ttl.as_secs());
    let password = plenary_turn::stun::integrity::rest_password(cfg.secret.as_bytes(), &username);
    cfg.urls
        .iter()
        .map(|u| {
            let turn = u.starts_with("turn:") || u.starts_with("turns:");
            IceServerInfo {
                urls: vec![u.clone()],
                username: turn.then(|| username.clone()),
                credential: turn.then(|| password.clone()),
            }
        })
        .collect()
}

/// The same servers as WHIP/WHEP `Link` header values (draft-ietf-wish-whip §4.6).
pub fn link_headers(servers: &[IceServerInfo]) -> Vec<String> {
    servers
        .iter()
        .flat_map(|s| {
            s.urls.iter().map(move |u| {
                let mut v = format!("<{u}>; rel=\"ice-server\"");
                if let (Some(user), Some(cred)) = (&s.username, &s.credential) {
                    v.push_str(&format!(
                        "; username=\"{user}\"; credential=\"{cred}\"; credential-type=\"password\""
                    ));
                }
                v
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn claims(room: &str, exp: u64) -> Claims {
        Claims {
            room: room.into(),
            exp,
            name: Some("ada".into()),
        }
    }

    #[test]
    fn a_token_opens_its_room_until_it_expires() {
        let secrets = vec!["old".to_string(), "new".to_string()];
        let t = issue("new", &claims("ga", 1000));
        assert_eq!(
            verify(&secrets, Some(&t), "ga", 999).unwrap(),
            Some(claims("ga", 1000))
        );
        assert_eq!(
            verify(&secrets, Some(&t), "ga", 1001),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(&secrets, Some(&t), "other", 999),
            Err(TokenError::WrongRoom)
        );
    }

    #[test]
    fn forged_missing_and_garbage_tokens_are_refused() {
        let secrets = vec!["s".to_string()];
        let forged = issue("not-s", &claims("ga", u64::MAX));
        assert_eq!(
            verify(&secrets, Some(&forged), "ga", 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(verify(&secrets, None, "ga", 0), Err(TokenError::Missing));
        for junk in ["", ".", "abc", "a.b", "!!.!!", "e30.AAAA"] {
            assert!(verify(&secrets, Some(junk), "ga", 0).is_err(), "{junk}");
        }
        // Valid signature over claims that are not JSON.
        let body = URL_SAFE_NO_PAD.encode(b"nope");
        let sig = URL_SAFE_NO_PAD.encode(sign("s", &body));
        assert_eq!(
            verify(&secrets, Some(&format!("{body}.{sig}")), "ga", 0),
            Err(TokenError::Malformed)
        );
        assert_eq!(verify(&[], None, "ga", 0), Ok(None));
    }

    #[test]
    fn link_headers_carry_turn_rest_credentials() {
        let cfg = IceServers {
            urls: vec![
                "stun:127.0.0.1:3478".into(),
                "turn:127.0.0.1:3478?transport=udp".into(),
            ],
            secret: "k".into(),
            ttl: Duration::from_secs(60),
        };
        let servers = ice_servers(&cfg, 1000);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].username.as_deref(), Some("1060:plenary-sfu"));
        let expect = plenary_turn::stun::integrity::rest_password(b"k", "1060:plenary-sfu");
        assert_eq!(servers[1].credential.as_deref(), Some(expect.as_str()));
        let links = link_headers(&servers);
        assert_eq!(links[0], "<stun:127.0.0.1:3478>; rel=\"ice-server\"");
        assert!(links[1].contains("credential-type=\"password\""));
    }
}
