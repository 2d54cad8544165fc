//! WHIP and WHEP (RFC 9725 and the WHEP draft): POST the offer, get `201` with the answer
//! and a `Location`, DELETE it to leave. A cascade node that will not take the session
//! answers `307` with the node that will; the same offer is posted there.

use super::http::{request, resolve};
use crate::sfu::cascade::Redirects;
use std::time::Duration;

/// Where an exchange ended up.
#[derive(Clone, Debug)]
pub struct Exchanged {
    /// The session's resource URL, to DELETE.
    pub location: Option<String>,
    /// The URL that answered (after redirects).
    pub url: String,
    pub redirects: u32,
}

/// Posts `offer` to `url`, following up to three 307s; returns the answer and where the
/// session lives.
pub async fn exchange(
    url: &str,
    offer: String,
    timeout: Duration,
) -> Result<(String, Exchanged), String> {
    let mut url = url.to_string();
    let mut redirects = Redirects::default();
    loop {
        let r = request(
            "POST",
            &url,
            Some("application/sdp"),
            offer.clone(),
            timeout,
        )
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
        match (r.status, r.location) {
            (307 | 308, Some(loc)) => {
                let next = resolve(&url, &loc);
                url = redirects
                    .follow(&next)
                    .map_err(|e| format!("POST {url}: {e}"))?;
            }
            (200 | 201, location) => {
                let location = location.map(|l| resolve(&url, &l));
                let x = Exchanged {
                    location,
                    url,
                    redirects: redirects.followed,
                };
                return Ok((r.body, x));
            }
            (status, _) => {
                return Err(format!(
                    "POST {url}: {status} {}",
                    r.body.lines().next().unwrap_or("").trim()
                ))
            }
        }
    }
}

pub async fn delete(url: &str, timeout: Duration) {
    let _ = request("DELETE", url, None, String::new(), timeout).await;
}
