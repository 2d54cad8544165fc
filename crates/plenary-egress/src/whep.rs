//! WHEP signalling (draft-ietf-wish-whep): POST the SDP offer, read the answer and the
//! resource `Location`, DELETE it when done. Follows the SFU's 307 placement redirects, and
//! reads the other nodes of a cascaded room from the answer's `Link: <URL>; rel="alternate"`
//! headers (where to pull from when this node goes away).

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
    /// The endpoint that answered (after redirects).
    pub url: Url,
    /// The room's other nodes, in the order the answer listed them, as WHEP endpoints with
    /// our query (`screen=1`, a token given in the URL) on them.
    pub alternates: Vec<Url>,
}

/// The query parameter asking the SFU for the room's screen share on the second video m-line.
const SCREEN_PARAM: &str = "screen";

/// `--from` with `screen=1` added unless the user set `screen` already; and whether the
/// screen share is asked for (`screen=0` turns it off).
pub fn with_screen(url: &Url) -> (Url, bool) {
    if let Some((_, v)) = url.query_pairs().find(|(k, _)| k == SCREEN_PARAM) {
        let on = v != "0";
        return (url.clone(), on);
    }
    let mut url = url.clone();
    url.query_pairs_mut().append_pair(SCREEN_PARAM, "1");
    (url, true)
}

/// The URL for people and logs: a token given in the query is masked.
pub fn display(url: &Url) -> String {
    if !url.query_pairs().any(|(k, _)| k == "token") {
        return url.to_string();
    }
    let mut shown = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "token" { "****".into() } else { v };
            (k.into_owned(), v.into_owned())
        })
        .collect();
    shown.query_pairs_mut().clear().extend_pairs(pairs);
    shown.to_string()
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
        let links: Vec<String> = resp.all("Link").into_iter().map(str::to_owned).collect();
        let answer = read_body(resp).ok_or_else(malformed)?;
        if !answer.starts_with("v=0") {
            return Err(malformed());
        }
        let alternates = alternates(links.iter().map(String::as_str), &url);
        return Ok(Session {
            answer,
            resource: resource.to_string(),
            url,
            alternates,
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

/// The `rel="alternate"` targets of an answer's Link headers (RFC 8288), in order, resolved
/// against the endpoint that answered, each given `answered`'s query when it has none (the
/// SFU lists bare room URLs: `screen=1` and a token in the query are ours to add). Other
/// relations (the SFU's `ice-server` links) are skipped, and so is what does not parse.
/// Parsed here because the `parse_link_header` crate keys links by relation, keeping one
/// `alternate` of several. The node that answered is not its own alternate.
pub fn alternates<'a>(headers: impl IntoIterator<Item = &'a str>, answered: &Url) -> Vec<Url> {
    let mut found: Vec<Url> = Vec::new();
    for header in headers {
        for (target, params) in link_values(header) {
            let alternate = params.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("rel")
                    && v.split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("alternate"))
            });
            let Some(mut url) = alternate.then(|| answered.join(target).ok()).flatten() else {
                continue;
            };
            if url.scheme() != "http" {
                continue;
            }
            if url.query().is_none() {
                url.set_query(answered.query());
            }
            if url != *answered && !found.contains(&url) {
                found.push(url);
            }
        }
    }
    found
}

/// One Link header's values: `<target>; k=v; k="quoted"`, comma-separated.
fn link_values(header: &str) -> Vec<(&str, Vec<(&str, String)>)> {
    let mut values = Vec::new();
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let Some(after) = rest.strip_prefix('<') else {
            return values;
        };
        let Some((target, tail)) = after.split_once('>') else {
            return values;
        };
        rest = tail;
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', '\t']);
            let Some(after) = rest.strip_prefix(';') else {
                break;
            };
            let after = after.trim_start_matches([' ', '\t']);
            let key_end = after.find(['=', ';', ',']).unwrap_or(after.len());
            let key = after[..key_end].trim();
            rest = &after[key_end..];
            let mut value = String::new();
            if let Some(v) = rest.strip_prefix('=') {
                let v = v.trim_start_matches([' ', '\t']);
                if let Some(quoted) = v.strip_prefix('"') {
                    let mut chars = quoted.char_indices();
                    let mut end = quoted.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, esc)) = chars.next() {
                                    value.push(esc);
                                }
                            }
                            '"' => {
                                end = i + 1;
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    rest = &quoted[end..];
                } else {
                    let end = v.find([';', ',']).unwrap_or(v.len());
                    value = v[..end].trim().to_owned();
                    rest = &v[end..];
                }
            }
            params.push((key, value));
        }
        values.push((target.trim(), params));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn screen_is_asked_for_unless_turned_off() {
        let (u, on) = with_screen(&url("http://n:8080/whep/room"));
        assert_eq!((u.as_str(), on), ("http://n:8080/whep/room?screen=1", true));
        let (u, on) = with_screen(&url("http://n/whep/room?token=abc"));
        assert_eq!(
            (u.as_str(), on),
            ("http://n/whep/room?token=abc&screen=1", true)
        );
        let (u, on) = with_screen(&url("http://n/whep/room?screen=0"));
        assert_eq!((u.as_str(), on), ("http://n/whep/room?screen=0", false));
    }

    #[test]
    fn tokens_are_masked_for_display() {
        assert_eq!(
            display(&url("http://n/whep/r?token=s3cret&screen=1")),
            "http://n/whep/r?token=****&screen=1"
        );
        assert_eq!(display(&url("http://n/whep/r")), "http://n/whep/r");
    }

    #[test]
    fn alternates_in_order_with_our_query_other_relations_skipped() {
        let answered = url("http://10.0.0.2:8080/whep/room?token=t&screen=1");
        let headers = [
            r#"<stun:stun.example:3478>; rel="ice-server""#,
            r#"<http://10.0.0.3:8080/whep/room>; rel="alternate""#,
            r#"<http://10.0.0.1:8080/whep/room>;rel=alternate, <http://10.0.0.4/whep/room>; rel="next alternate"; title="a, b; c""#,
            r#"<http://10.0.0.3:8080/whep/room>; rel="alternate""#,
            r#"<http://10.0.0.5/whep/room?screen=0>; rel="alternate""#,
            r#"<https://10.0.0.6/whep/room>; rel="alternate""#,
            r#"garbage, <unterminated"#,
            r#"</whep/room>; rel="alternate""#,
        ];
        let found: Vec<String> = alternates(headers, &answered)
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            found,
            [
                "http://10.0.0.3:8080/whep/room?token=t&screen=1",
                "http://10.0.0.1:8080/whep/room?token=t&screen=1",
                "http://10.0.0.4/whep/room?token=t&screen=1",
                "http://10.0.0.5/whep/room?screen=0",
            ]
        );
    }

    #[test]
    fn link_params_parse_with_quotes_and_escapes() {
        let v = link_values(r#"<a>; rel="x\"y"; k ; n=1,<b>"#);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0, "a");
        assert_eq!(
            v[0].1,
            [
                ("rel", "x\"y".to_owned()),
                ("k", String::new()),
                ("n", "1".to_owned())
            ]
        );
        assert_eq!(v[1], ("b", vec![]));
    }

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
