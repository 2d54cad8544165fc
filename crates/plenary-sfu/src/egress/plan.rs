//! The body of `POST /rooms/{room}/egress`, checked into what one `plenary egress` child
//! does: receivers, an HLS directory and a recording named inside `[egress] dir`, the output
//! format. Sans-IO: nothing here touches the file system.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Receivers one egress pushes to at most.
const MAX_RECEIVERS: usize = 8;
/// Longest receiver URL accepted.
const MAX_URL: usize = 2048;
/// Longest `hls` / `record` name, and the most parts (directories) it may have.
const MAX_NAME: usize = 200;
const MAX_NAME_PARTS: usize = 4;

/// What a client posts. Unknown fields are refused, so a typo is a 400, not an ignored option.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EgressRequest {
    /// rtmp://, rtmps:// and srt:// receivers.
    #[serde(default)]
    pub to: Vec<String>,
    /// An HLS directory, relative to `[egress] dir`.
    pub hls: Option<String>,
    /// An MP4 file, relative to `[egress] dir`.
    pub record: Option<String>,
    /// `WIDTHxHEIGHT` (the egress's `--size`; default 1280x720).
    pub size: Option<String>,
    /// The egress's `--fps` (default 30).
    pub fps: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PlanError {
    #[error("nothing to do: give \"to\" receivers, \"hls\" or \"record\"")]
    NoOutput,
    #[error("at most {MAX_RECEIVERS} receivers in \"to\"")]
    TooManyReceivers,
    #[error("receiver {0:?} is not a rtmp://HOST/APP/KEY, rtmps://HOST/APP/KEY or srt://HOST:PORT[?streamid=ID] URL")]
    BadReceiver(String),
    #[error("{0} needs [egress] dir on the server (HLS and recordings are written only there)")]
    NoDir(&'static str),
    #[error("{0} {1:?} must be a relative name inside the egress directory: parts of letters, digits, '-', '_' and '.' joined by '/', not starting with '.', no '..', no leading '/', at most {MAX_NAME} characters")]
    BadName(&'static str, String),
    #[error("record {0:?} must end in .mp4")]
    NotMp4(String),
    #[error("size {0:?} is not WIDTHxHEIGHT with even sides from 16x16 to 7680x4320")]
    BadSize(String),
    #[error("fps {0} is outside 1..=60")]
    BadFps(u32),
}

/// A path below the egress directory, as checked parts (never `..`, never absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelName(Vec<String>);

impl RelName {
    fn parse(field: &'static str, raw: &str) -> Result<RelName, PlanError> {
        let bad = || PlanError::BadName(field, raw.to_owned());
        if raw.is_empty() || raw.len() > MAX_NAME {
            return Err(bad());
        }
        let parts: Vec<&str> = raw.split('/').collect();
        let part_ok = |p: &&str| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if parts.len() > MAX_NAME_PARTS || !parts.iter().all(part_ok) {
            return Err(bad());
        }
        Ok(RelName(parts.into_iter().map(str::to_owned).collect()))
    }

    pub fn under(&self, dir: &Path) -> PathBuf {
        self.0
            .iter()
            .fold(dir.to_path_buf(), |p, part| p.join(part))
    }

    /// Whether `self` is `other` or one of its directories.
    fn contains(&self, other: &RelName) -> bool {
        other.0.starts_with(&self.0)
    }

    /// The recording of run `run` (0 the first): a restarted child must not overwrite what
    /// the crashed one recorded, so later runs get `-1`, `-2`... before `.mp4`.
    pub fn for_run(&self, run: u32) -> RelName {
        let mut parts = self.0.clone();
        if run > 0 {
            if let Some(last) = parts.last_mut() {
                let stem = last.strip_suffix(".mp4").unwrap_or(last).to_owned();
                *last = format!("{stem}-{run}.mp4");
            }
        }
        RelName(parts)
    }
}

impl std::fmt::Display for RelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// One egress as the server will run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub to: Vec<String>,
    pub hls: Option<RelName>,
    pub record: Option<RelName>,
    pub size: Option<String>,
    pub fps: Option<u32>,
}

impl Plan {
    /// Checks a request; `has_dir`: whether `[egress] dir` is configured.
    pub fn check(req: EgressRequest, has_dir: bool) -> Result<Plan, PlanError> {
        if req.to.is_empty() && req.hls.is_none() && req.record.is_none() {
            return Err(PlanError::NoOutput);
        }
        if req.to.len() > MAX_RECEIVERS {
            return Err(PlanError::TooManyReceivers);
        }
        if let Some(bad) = req.to.iter().find(|u| !receiver_ok(u)) {
            return Err(PlanError::BadReceiver(bad.clone()));
        }
        let name = |field: &'static str, v: Option<String>| -> Result<_, PlanError> {
            let Some(v) = v else { return Ok(None) };
            if !has_dir {
                return Err(PlanError::NoDir(field));
            }
            RelName::parse(field, &v).map(Some)
        };
        let hls = name("hls", req.hls)?;
        let record = name("record", req.record)?;
        if let Some(r) = &record {
            if !r.to_string().ends_with(".mp4") {
                return Err(PlanError::NotMp4(r.to_string()));
            }
        }
        if let Some(s) = &req.size {
            if !size_ok(s) {
                return Err(PlanError::BadSize(s.clone()));
            }
        }
        if let Some(f) = req.fps {
            if !(1..=60).contains(&f) {
                return Err(PlanError::BadFps(f));
            }
        }
        Ok(Plan {
            to: req.to,
            hls,
            record,
            size: req.size,
            fps: req.fps,
        })
    }

    /// The outputs as shown to clients and in logs: no stream key, no SRT passphrase.
    pub fn outputs(&self, run: u32) -> Vec<String> {
        let mut out: Vec<String> = self.to.iter().map(|u| keyless(u)).collect();
        out.extend(self.hls.iter().map(|h| format!("hls:{h}")));
        out.extend(
            self.record
                .iter()
                .map(|r| format!("file:{}", r.for_run(run))),
        );
        out
    }

    /// The child's arguments after the executable (the token travels in its environment,
    /// not here: arguments are visible to every user in `ps`).
    pub fn args(&self, from: &str, dir: Option<&Path>, run: u32) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["egress".into(), "--from".into(), from.into()];
        for t in &self.to {
            a.push("--to".into());
            a.push(t.into());
        }
        if let Some(dir) = dir {
            if let Some(h) = &self.hls {
                a.push("--hls".into());
                a.push(h.under(dir).into());
            }
            if let Some(r) = &self.record {
                a.push("--record".into());
                a.push(r.for_run(run).under(dir).into());
            }
        }
        if let Some(s) = &self.size {
            a.push("--size".into());
            a.push(s.into());
        }
        if let Some(f) = self.fps {
            a.push("--fps".into());
            a.push(f.to_string().into());
        }
        // Status lines go to the SFU's log: one per output every 30 s, not every 5 s.
        a.push("--status-every".into());
        a.push("30".into());
        a
    }

    /// Why `self` cannot run beside `other` (both would write the same files), if so.
    pub fn clash(&self, other: &Plan) -> Option<String> {
        let mine = self.hls.iter().chain(&self.record);
        for a in mine {
            for b in other.hls.iter().chain(&other.record) {
                if a.contains(b) || b.contains(a) {
                    return Some(format!("\"{a}\" overlaps \"{b}\" of a running egress"));
                }
            }
        }
        None
    }
}

fn receiver_ok(url: &str) -> bool {
    if url.len() > MAX_URL
        || url
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return false;
    }
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return false;
    };
    if uri.host().is_none_or(str::is_empty) {
        return false;
    }
    match uri.scheme_str() {
        // rtmp://HOST/APP/KEY: an application and a stream key.
        Some("rtmp" | "rtmps") => uri.path().split('/').filter(|p| !p.is_empty()).count() >= 2,
        Some("srt") => uri.port_u16().is_some(),
        _ => false,
    }
}

fn size_ok(size: &str) -> bool {
    let Some((w, h)) = size.split_once(['x', 'X']) else {
        return false;
    };
    let (Ok(w), Ok(h)) = (w.parse::<u32>(), h.parse::<u32>()) else {
        return false;
    };
    (16..=7680).contains(&w) && (16..=4320).contains(&h) && w % 2 == 0 && h % 2 == 0
}

/// A receiver URL without its secret parts: the RTMP stream key (last path part) and the
/// SRT query (stream id, passphrase).
pub(crate) fn keyless(url: &str) -> String {
    if url.starts_with("srt://") {
        return url.split('?').next().unwrap_or(url).to_owned();
    }
    match url.rsplit_once('/') {
        Some((base, _key)) if base.len() > "rtmps://".len() => format!("{base}/****"),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(to: &[&str], hls: Option<&str>, record: Option<&str>) -> EgressRequest {
        EgressRequest {
            to: to.iter().map(|s| s.to_string()).collect(),
            hls: hls.map(str::to_owned),
            record: record.map(str::to_owned),
            ..EgressRequest::default()
        }
    }

    #[test]
    fn names_stay_inside_the_directory() {
        for bad in [
            "../x",
            "a/../../etc",
            "/etc/passwd",
            "..",
            ".",
            "",
            "a//b",
            ".hidden",
            "a/.b",
            "a\\b",
            "a b",
            "a/b/c/d/e",
        ] {
            let e = Plan::check(req(&[], Some(bad), None), true).unwrap_err();
            assert!(matches!(e, PlanError::BadName("hls", _)), "{bad}: {e}");
        }
        let p = Plan::check(req(&[], Some("ga/hls-1"), Some("ga/rec_1.mp4")), true).unwrap();
        let dir = Path::new("/srv/egress");
        assert_eq!(
            p.hls.as_ref().unwrap().under(dir),
            Path::new("/srv/egress/ga/hls-1")
        );
        let e = Plan::check(req(&[], None, Some("ga.ts")), true).unwrap_err();
        assert_eq!(e, PlanError::NotMp4("ga.ts".into()));
        let e = Plan::check(req(&[], Some("ga"), None), false).unwrap_err();
        assert_eq!(e, PlanError::NoDir("hls"));
        assert!(e.to_string().contains("[egress] dir"), "{e}");
    }

    #[test]
    fn receivers_are_rtmp_with_a_key_or_srt_with_a_port() {
        for good in [
            "rtmp://127.0.0.1:1935/live/key",
            "rtmps://a.example/app/k",
            "srt://10.0.0.5:9000?streamid=publish:x&passphrase=secret1234",
        ] {
            assert!(
                Plan::check(req(&[good], None, None), false).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "rtmp://host/live",
            "srt://host",
            "http://host/a/b",
            "garbage",
            "rtmp:///app/key",
            "rtmp://host/app/key with space",
            "-x",
        ] {
            assert!(
                matches!(
                    Plan::check(req(&[bad], None, None), false),
                    Err(PlanError::BadReceiver(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            Plan::check(req(&[], None, None), true),
            Err(PlanError::NoOutput)
        );
        let many = vec!["rtmp://h/a/k"; MAX_RECEIVERS + 1];
        assert_eq!(
            Plan::check(req(&many, None, None), false),
            Err(PlanError::TooManyReceivers)
        );
    }

    #[test]
    fn size_and_fps_are_checked() {
        let mut r = req(&["rtmp://h/a/k"], None, None);
        r.size = Some("1920x1080".into());
        r.fps = Some(25);
        assert!(Plan::check(r, false).is_ok());
        for s in ["1281x720", "8x8", "big", "1280x", "99999x720"] {
            let mut r = req(&["rtmp://h/a/k"], None, None);
            r.size = Some(s.into());
            assert_eq!(Plan::check(r, false), Err(PlanError::BadSize(s.into())));
        }
        let mut r = req(&["rtmp://h/a/k"], None, None);
        r.fps = Some(0);
        assert_eq!(Plan::check(r, false), Err(PlanError::BadFps(0)));
    }

    #[test]
    fn the_command_line_has_no_secret_and_recordings_are_never_overwritten() {
        let mut r = req(
            &[
                "rtmp://h:1935/live/streamkey",
                "srt://h:9000?passphrase=p4ssphrase",
            ],
            Some("hls"),
            Some("rec/ga.mp4"),
        );
        r.size = Some("640x360".into());
        let p = Plan::check(r, true).unwrap();
        let args: Vec<String> = p
            .args("http://127.0.0.1:8280/whep/ga", Some(Path::new("/d")), 2)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "egress",
                "--from",
                "http://127.0.0.1:8280/whep/ga",
                "--to",
                "rtmp://h:1935/live/streamkey",
                "--to",
                "srt://h:9000?passphrase=p4ssphrase",
                "--hls",
                "/d/hls",
                "--record",
                "/d/rec/ga-2.mp4",
                "--size",
                "640x360",
                "--status-every",
                "30"
            ]
        );
        assert!(!args.iter().any(|a| a.contains("token")));
        assert_eq!(
            p.outputs(0),
            [
                "rtmp://h:1935/live/****",
                "srt://h:9000",
                "hls:hls",
                "file:rec/ga.mp4"
            ]
        );
        assert_eq!(p.outputs(1)[3], "file:rec/ga-1.mp4");
    }

    #[test]
    fn two_egresses_never_write_the_same_files() {
        let a = Plan::check(req(&[], Some("ga"), None), true).unwrap();
        let b = Plan::check(req(&[], None, Some("ga/x.mp4")), true).unwrap();
        let c = Plan::check(req(&[], Some("gb"), Some("ga.mp4")), true).unwrap();
        let rtmp = Plan::check(req(&["rtmp://h/a/k"], None, None), true).unwrap();
        assert!(a.clash(&b).is_some() && b.clash(&a).is_some());
        assert_eq!(a.clash(&c), None, "ga.mp4 is not inside ga/");
        assert_eq!(a.clash(&a.clone()).map(|_| ()), Some(()));
        assert_eq!(rtmp.clash(&rtmp.clone()), None);
    }
}
