//! WHIP and WHEP (RFC 9725 and the WHEP draft): POST the offer, get `201` with the answer
//! and a `Location`, DELETE it to leave.

use super::http::{request, resolve};
use std::time::Duration;

/// Posts `offer` to `url`; returns the answer and the session's resource URL.
pub async fn exchange(
    url: &str,
    offer: String,
    timeout: Duration,
) -> Result<(String, Option<String>), String> {
    let r = request("POST", url, Some("application/sdp"), offer, timeout)
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if r.status != 201 && r.status != 200 {
        return Err(format!(
            "POST {url}: {} {}",
            r.status,
            r.body.lines().next().unwrap_or("").trim()
        ));
    }
    Ok((r.body, r.location.map(|l| resolve(url, &l))))
}

pub async fn delete(url: &str, timeout: Duration) {
    let _ = request("DELETE", url, None, String::new(), timeout).await;
}
