//! A small HTTP/1.1 client on hyper, one connection per request: WHIP/WHEP and Janus need
//! only a handful of requests per participant, and a fresh connection per request keeps a
//! slow server from serializing the joins of others.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use std::time::Duration;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad URL {0}")]
    Url(String),
    #[error("connect {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

/// Largest response body read (SDP answers and Janus events are a few KiB).
const MAX_BODY: usize = 1 << 20;

/// `http://host:port/path` split into (host:port, path).
pub fn split_url(url: &str) -> Result<(String, String), HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Url(format!("{url} (only http:// is supported)")))?;
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if auth.is_empty() {
        return Err(HttpError::Url(url.into()));
    }
    let auth = if auth.contains(':') && !auth.ends_with(']') {
        auth.to_string()
    } else {
        format!("{auth}:80")
    };
    Ok((auth, path.to_string()))
}

/// Sends one request and reads the whole response, all within `timeout`.
pub async fn request(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: String,
    timeout: Duration,
) -> Result<Response, HttpError> {
    tokio::time::timeout(timeout, send(method, url, content_type, body))
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

async fn send(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: String,
) -> Result<Response, HttpError> {
    let (auth, path) = split_url(url)?;
    let tcp = tokio::net::TcpStream::connect(&auth)
        .await
        .map_err(|e| HttpError::Connect(auth.clone(), e))?;
    let _ = tcp.set_nodelay(true);
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    let conn_task = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(&path)
        .header("host", &auth)
        .header("connection", "close");
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = tx
        .send_request(req.body(Full::new(Bytes::from(body)))?)
        .await;
    let out = async {
        let resp = resp?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                bytes.extend_from_slice(&data);
                if bytes.len() > MAX_BODY {
                    return Err(HttpError::TooLarge(MAX_BODY));
                }
            }
        }
        Ok(Response {
            status,
            location,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
    .await;
    conn_task.abort();
    out
}

/// Resolves a `Location` header against the URL it came from.
pub fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") {
        return location.to_string();
    }
    match split_url(base) {
        Ok((auth, _)) if location.starts_with('/') => format!("http://{auth}{location}"),
        _ => {
            let dir = base.rsplit_once('/').map_or(base, |(d, _)| d);
            format!("{dir}/{location}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_resolve() {
        let (a, p) = split_url("http://127.0.0.1:8080/whip/r1").unwrap();
        assert_eq!((a.as_str(), p.as_str()), ("127.0.0.1:8080", "/whip/r1"));
        assert_eq!(
            split_url("http://example.org").unwrap(),
            ("example.org:80".into(), "/".into())
        );
        assert!(split_url("https://x/").is_err());
        assert!(split_url("http:///x").is_err());
        assert_eq!(
            resolve("http://h:1/whep/r", "/resource/7"),
            "http://h:1/resource/7"
        );
        assert_eq!(resolve("http://h:1/whep/r", "http://o:2/x"), "http://o:2/x");
        assert_eq!(
            resolve("http://h:1/whep/r", "res/7"),
            "http://h:1/whep/res/7"
        );
    }
}
