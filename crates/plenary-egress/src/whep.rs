//! WHEP signalling (draft-ietf-wish-whep): POST the SDP offer, read the answer and the
//! resource `Location`, DELETE it when done. Follows the SFU's 307 placement redirects.

use std::time::Duration;
use url::Url;

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 3;
/// The SFU refuses offers over 64 KiB; its answers are smaller still.
const MAX_ANSWER: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    #[error("--from {0:?} is not an http:// WHEP URL (expected http://NODE/whep/ROOM)")]
    BadUrl(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} answered without an SDP body or a Location header")]
    Malformed { url: String },
    #[error("{url}: more than {MAX_REDIRECTS} redirects")]
    Redirects { url: String },
}

impl WhepError {
    /// Worth retrying later: the node may come back, the room may fill. A refused token or
    /// a malformed URL will not get better.
    pub fn is_retryable(&self) -> bool {
        match self {
            WhepError::BadUrl(_) => false,
            WhepError::Status { status, .. } => !matches!(status, 400 | 401 | 403),
            _ => true,
        }
    }
}

/// An established WHEP session: the answer, and the resource to DELETE at the end.
#[derive(Clone, Debug)]
pub struct Session {
    pub answer: String,
    pub resource: String,
}

/// Checks `--from` before anything starts.
pub fn check_url(raw: &str) -> Result<Url, WhepError> {
    let url = Url::parse(raw).map_err(|_| WhepError::BadUrl(raw.to_owned()))?;
    if url.scheme() != "http" || url.host_str().is_none_or(str::is_empty) {
        return Err(WhepError::BadUrl(raw.to_owned()));
    }
    Ok(url)
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(TIMEOUT)
        .redirects(0)
        .build()
}

fn with_token(req: ureq::Request, token: Option<&str>) -> ureq::Request {
    match token {
        Some(t) => req.set("Authorization", &format!("Bearer {t}")),
        None => req,
    }
}

/// POSTs `offer` to the WHEP endpoint.
pub fn post_offer(url: &Url, token: Option<&str>, offer: &str) -> Result<Session, WhepError> {
    let agent = agent();
    let mut url = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let req = with_token(agent.post(url.as_str()), token)
            .set("Content-Type", "application/sdp")
            .set("Accept", "application/sdp");
        let resp = match req.send_string(offer) {
            Ok(r) => r,
            Err(ureq::Error::Status(status, r)) => {
                let body = read_body(r).unwrap_or_default();
                return Err(WhepError::Status {
                    url: url.to_string(),
                    status,
                    body: body
                        .lines()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(200)
                        .collect(),
                });
            }
            Err(e) => {
                return Err(WhepError::Unreachable {
                    url: url.to_string(),
                    reason: e.to_string(),
                })
            }
        };
        let location = resp.header("Location").map(str::to_owned);
        if (300..400).contains(&resp.status()) {
            let next =
                location
                    .and_then(|l| url.join(&l).ok())
                    .ok_or_else(|| WhepError::Malformed {
                        url: url.to_string(),
                    })?;
            tracing::info!(from = %url, to = %next, "WHEP endpoint redirects");
            url = next;
            continue;
        }
        let malformed = || WhepError::Malformed {
            url: url.to_string(),
        };
        let resource = location
            .and_then(|l| url.join(&l).ok())
            .ok_or_else(malformed)?;
        let answer = read_body(resp).ok_or_else(malformed)?;
        if !answer.starts_with("v=0") {
            return Err(malformed());
        }
        return Ok(Session {
            answer,
            resource: resource.to_string(),
        });
    }
    Err(WhepError::Redirects {
        url: url.to_string(),
    })
}

fn read_body(resp: ureq::Response) -> Option<String> {
    use std::io::Read;
    let mut body = String::new();
    resp.into_reader()
        .take(MAX_ANSWER)
        .read_to_string(&mut body)
        .ok()?;
    Some(body)
}

/// Ends the session on the SFU. Best effort: the SFU also drops peers that go silent.
pub fn delete(resource: &str, token: Option<&str>) {
    if let Err(e) = with_token(agent().delete(resource), token).call() {
        tracing::debug!(%resource, error = %e, "WHEP DELETE failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host() {
        assert!(check_url("http://127.0.0.1:8080/whep/room").is_ok());
        assert!(matches!(check_url("whep"), Err(WhepError::BadUrl(_))));
        assert!(matches!(
            check_url("rtmp://h/a/b"),
            Err(WhepError::BadUrl(_))
        ));
    }

    #[test]
    fn refused_tokens_are_final_missing_rooms_are_not() {
        let status = |status| WhepError::Status {
            url: "u".into(),
            status,
            body: String::new(),
        };
        assert!(!status(401).is_retryable());
        assert!(!status(403).is_retryable());
        assert!(status(404).is_retryable());
        assert!(status(503).is_retryable());
    }
}
