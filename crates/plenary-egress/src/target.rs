//! Where the broadcast goes: receivers named on the command line, checked before anything
//! starts so that a typo is one clear line and exit code 2, not a reconnect loop.

use std::fmt;
use std::path::PathBuf;
use url::Url;

/// One destination of the broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// FLV over RTMP or RTMPS: `location` is the full URL with the stream key.
    Rtmp { location: String },
    /// MPEG-TS over SRT, as caller. `uri` has no query; the stream id is set on its own.
    Srt {
        uri: String,
        streamid: Option<String>,
        passphrase: Option<String>,
        latency_ms: Option<u32>,
    },
    /// HLS playlist and segments written into a directory.
    Hls { dir: PathBuf },
    /// A fragmented MP4 file.
    Record { path: PathBuf },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("--to {0:?} is not a URL; expected rtmp://HOST/APP/KEY, rtmps://HOST/APP/KEY or srt://HOST:PORT[?streamid=ID]")]
    NotUrl(String),
    #[error("--to {0:?}: scheme {1:?} is not supported; use rtmp, rtmps or srt (HLS: --hls DIR, a file: --record FILE.mp4)")]
    Scheme(String, String),
    #[error("--to {0:?} has no host")]
    NoHost(String),
    #[error("--to {0:?}: an RTMP URL needs an application and a stream key: rtmp://HOST/APP/KEY")]
    RtmpPath(String),
    #[error("--to {0:?}: an SRT URL needs a port: srt://HOST:PORT")]
    SrtPort(String),
    #[error("--to {0:?}: SRT option {1:?} is not understood (known: streamid, passphrase, latency, mode=caller)")]
    SrtOption(String, String),
    #[error("nothing to do: give at least one --to URL, --hls DIR or --record FILE")]
    NoOutput,
}

impl Target {
    /// Parses one `--to` URL.
    pub fn parse(raw: &str) -> Result<Target, TargetError> {
        let url = Url::parse(raw).map_err(|_| TargetError::NotUrl(raw.to_owned()))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| TargetError::NoHost(raw.to_owned()))?;
        match url.scheme() {
            "rtmp" | "rtmps" => {
                let segments: Vec<&str> = url
                    .path_segments()
                    .map(|s| s.filter(|p| !p.is_empty()).collect())
                    .unwrap_or_default();
                if segments.len() < 2 {
                    return Err(TargetError::RtmpPath(raw.to_owned()));
                }
                Ok(Target::Rtmp {
                    location: raw.to_owned(),
                })
            }
            "srt" => {
                let port = url
                    .port()
                    .ok_or_else(|| TargetError::SrtPort(raw.to_owned()))?;
                let (mut streamid, mut passphrase, mut latency_ms) = (None, None, None);
                for (k, v) in url.query_pairs() {
                    match k.as_ref() {
                        "streamid" => streamid = Some(v.into_owned()),
                        "passphrase" => passphrase = Some(v.into_owned()),
                        "latency" => {
                            latency_ms = Some(v.parse().map_err(|_| {
                                TargetError::SrtOption(raw.to_owned(), format!("latency={v}"))
                            })?)
                        }
                        "mode" if v == "caller" => {}
                        _ => {
                            return Err(TargetError::SrtOption(raw.to_owned(), format!("{k}={v}")))
                        }
                    }
                }
                Ok(Target::Srt {
                    uri: format!("srt://{host}:{port}"),
                    streamid,
                    passphrase,
                    latency_ms,
                })
            }
            other => Err(TargetError::Scheme(raw.to_owned(), other.to_owned())),
        }
    }

    /// All outputs of one run, in command-line order: `--to`s, then HLS, then the recording.
    pub fn all(
        to: &[String],
        hls: Option<PathBuf>,
        record: Option<PathBuf>,
    ) -> Result<Vec<Target>, TargetError> {
        let mut out = to
            .iter()
            .map(|t| Target::parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        out.extend(hls.map(|dir| Target::Hls { dir }));
        out.extend(record.map(|path| Target::Record { path }));
        if out.is_empty() {
            return Err(TargetError::NoOutput);
        }
        Ok(out)
    }

    /// Files and directories stop being worth retrying once they fail; network receivers
    /// come and go.
    pub fn is_network(&self) -> bool {
        matches!(self, Target::Rtmp { .. } | Target::Srt { .. })
    }
}

/// The name shown in status lines, logs and metric labels: never the stream key or the
/// passphrase.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Rtmp { location } => match location.rsplit_once('/') {
                Some((base, _key)) => write!(f, "{base}/****"),
                None => f.write_str(location),
            },
            Target::Srt { uri, .. } => f.write_str(uri),
            Target::Hls { dir } => write!(f, "hls:{}", dir.display()),
            Target::Record { path } => write!(f, "file:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_needs_app_and_key_and_hides_the_key() {
        let t = Target::parse("rtmp://127.0.0.1:1935/live/secret").unwrap();
        assert_eq!(t.to_string(), "rtmp://127.0.0.1:1935/live/****");
        assert!(t.is_network());
        assert_eq!(
            Target::parse("rtmp://host/live"),
            Err(TargetError::RtmpPath("rtmp://host/live".into()))
        );
        assert!(Target::parse("rtmps://a.example/app/k").is_ok());
    }

    #[test]
    fn srt_takes_streamid_and_refuses_unknown_options() {
        let t = Target::parse("srt://127.0.0.1:9000?streamid=publish:x&latency=200").unwrap();
        assert_eq!(
            t,
            Target::Srt {
                uri: "srt://127.0.0.1:9000".into(),
                streamid: Some("publish:x".into()),
                passphrase: None,
                latency_ms: Some(200),
            }
        );
        assert!(matches!(
            Target::parse("srt://h:1?mode=listener"),
            Err(TargetError::SrtOption(..))
        ));
        assert!(matches!(
            Target::parse("srt://h"),
            Err(TargetError::SrtPort(_))
        ));
    }

    #[test]
    fn garbage_and_other_schemes_are_refused_by_name() {
        assert!(matches!(
            Target::parse("not a url"),
            Err(TargetError::NotUrl(_))
        ));
        let e = Target::parse("http://h/x").unwrap_err();
        assert!(e.to_string().contains("rtmp, rtmps or srt"), "{e}");
        assert_eq!(Target::all(&[], None, None), Err(TargetError::NoOutput));
    }
}
