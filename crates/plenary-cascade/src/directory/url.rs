//! `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]`, parsed here rather than by the redis crate so
//! that other schemes (unix sockets, TLS) are refused with one clear message and the password
//! never reaches a log line.

use redis::{ConnectionAddr, ConnectionInfo, ProtocolVersion, RedisConnectionInfo};

use super::DirectoryError;

pub(super) struct ParsedUrl {
    pub info: ConnectionInfo,
    /// The URL with any password replaced by `***`, for errors and logs.
    pub shown: String,
}

pub(super) fn parse(url: &str) -> Result<ParsedUrl, DirectoryError> {
    let bad = || DirectoryError::BadUrl(redact(url));
    let rest = url.strip_prefix("redis://").ok_or_else(bad)?;
    let (authority, db) = match rest.split_once('/') {
        None => (rest, 0),
        Some((a, "")) => (a, 0),
        Some((a, db)) => (a, db.parse::<i64>().map_err(|_| bad())?),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        hostport.rsplit_once(':').ok_or_else(bad)?
    };
    if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (
                (!user.is_empty()).then(|| user.to_string()),
                Some(pass.to_string()),
            ),
            None => (None, Some(u.to_string())),
        },
    };
    Ok(ParsedUrl {
        info: ConnectionInfo {
            addr: ConnectionAddr::Tcp(host.to_string(), port),
            redis: RedisConnectionInfo {
                db,
                username,
                password,
                protocol: ProtocolVersion::RESP2,
            },
        },
        shown: redact(url),
    })
}

fn redact(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(i + 3);
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let p = parse("redis://127.0.0.1:6379/2").unwrap();
        assert_eq!(p.info.redis.db, 2);
        assert!(matches!(p.info.addr, ConnectionAddr::Tcp(ref h, 6379) if h == "127.0.0.1"));
        let p = parse("redis://:s3cret@[::1]:7000").unwrap();
        assert_eq!(p.info.redis.password.as_deref(), Some("s3cret"));
        assert!(matches!(p.info.addr, ConnectionAddr::Tcp(ref h, 7000) if h == "::1"));
        assert_eq!(p.shown, "redis://***@[::1]:7000");
        for bad in [
            "http://x",
            "rediss://h:1",
            "redis://h",
            "redis://h:0",
            "redis://h:1/x",
            "redis://:1",
            "unix:///tmp/r.sock",
        ] {
            assert!(
                matches!(parse(bad), Err(DirectoryError::BadUrl(_))),
                "{bad}"
            );
        }
        match parse("http://u:pw@h:1") {
            Err(DirectoryError::BadUrl(u)) => assert_eq!(u, "http://***@h:1"),
            _ => unreachable!(),
        }
    }
}
