//! Starting one `plenary egress` child: its command line and environment, its death with
//! the SFU, and its output. The output goes to a log file, not a pipe: a pipe would close
//! with a dying SFU and the egress would fail on its next line to stderr instead of
//! finishing its files. A thread copies each line of the file into the SFU's log.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The egress reads its room token from here (`plenary egress --token` has `env`).
const TOKEN_ENV: &str = "PLENARY_EGRESS_TOKEN";
/// Longest line copied as one log line; longer ones are cut.
const LINE_MAX: usize = 4096;
/// Characters of the latest line kept for the listing.
const LAST_LINE_SHOWN: usize = 300;
/// How often the log file is read for new lines.
const TAIL_EVERY: Duration = Duration::from_millis(200);

/// What one child run needs.
pub(crate) struct ChildSpec<'a> {
    pub binary: &'a Path,
    pub args: Vec<OsString>,
    /// The room token, passed in the environment: arguments are visible to all in `ps`.
    pub token: Option<String>,
    pub cwd: Option<&'a Path>,
    pub log: &'a LogTail,
}

/// Starts the child. It gets SIGTERM when the SFU dies (`PR_SET_PDEATHSIG`; the egress
/// then finishes its files), and must be forked by a thread that lives as long as the SFU:
/// the signal is sent when the forking *thread* ends.
pub(crate) fn spawn(spec: ChildSpec<'_>) -> Result<Child, String> {
    let mut cmd = Command::new(spec.binary);
    cmd.args(&spec.args);
    match spec.token {
        Some(t) => cmd.env(TOKEN_ENV, t),
        None => cmd.env_remove(TOKEN_ENV),
    };
    if let Some(dir) = spec.cwd {
        cmd.current_dir(dir);
    }
    let out = spec.log.writer()?;
    let err = out
        .try_clone()
        .map_err(|e| format!("log {}: {e}", spec.log.path.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let sfu_pid = std::process::id();
    // SAFETY: between fork and exec the closure makes only async-signal-safe calls
    // (prctl, getppid) and allocates nothing (OS errors carry only their number).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The SFU died before prctl took effect: do not run as an orphan.
            if u32::try_from(libc::getppid()) != Ok(sfu_pid) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("{}: {e}", spec.binary.display()))
}

/// One egress's log file (every run appends to it) and the thread copying its lines into
/// the SFU's log at info (target `plenary_sfu::egress`, with the egress id and room).
pub(crate) struct LogTail {
    pub path: PathBuf,
    last_line: Arc<Mutex<Option<String>>>,
    /// Set once no child will write any more: the thread reads to the end and stops.
    done: Arc<AtomicBool>,
}

impl LogTail {
    pub fn start(path: PathBuf, id: u64, room: &str) -> Result<LogTail, String> {
        let shown = |e: std::io::Error| format!("log {}: {e}", path.display());
        File::create(&path).map_err(shown)?;
        let reader = File::open(&path).map_err(shown)?;
        let tail = LogTail {
            path,
            last_line: Arc::new(Mutex::new(None)),
            done: Arc::new(AtomicBool::new(false)),
        };
        let (last, done, room) = (tail.last_line.clone(), tail.done.clone(), room.to_owned());
        std::thread::Builder::new()
            .name(format!("egress-{id}-log"))
            .spawn(move || copy_lines(reader, id, &room, &last, &done))
            .map_err(|e| format!("cannot start the log reader: {e}"))?;
        Ok(tail)
    }

    fn writer(&self) -> Result<File, String> {
        OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("log {}: {e}", self.path.display()))
    }

    pub fn last_line(&self) -> Option<String> {
        lock(&self.last_line).clone()
    }

    /// Shown instead of the child's own last line (a restart that could not start).
    pub fn note(&self, line: String) {
        *lock(&self.last_line) = Some(line);
    }

    pub fn finish(&self) {
        self.done.store(true, Ordering::Release);
    }
}

impl Drop for LogTail {
    fn drop(&mut self) {
        self.finish();
    }
}

fn copy_lines(
    mut file: File,
    id: u64,
    room: &str,
    last: &Mutex<Option<String>>,
    done: &AtomicBool,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    let emit = |bytes: &[u8]| {
        let line = String::from_utf8_lossy(bytes);
        let line = line.trim_end();
        if !line.is_empty() {
            tracing::info!(target: "plenary_sfu::egress", egress = id, room = %room, "{line}");
            *lock(last) = Some(line.chars().take(LAST_LINE_SHOWN).collect());
        }
    };
    loop {
        // Read before looking at the end of the file, so nothing written before `done`
        // is lost.
        let finished = done.load(Ordering::Acquire);
        match file.read(&mut chunk) {
            Ok(0) if finished => {
                emit(&pending);
                return;
            }
            Ok(0) => std::thread::sleep(TAIL_EVERY),
            Ok(n) => {
                pending.extend_from_slice(&chunk[..n]);
                while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                    emit(&pending[..i]);
                    pending.drain(..=i);
                }
                if pending.len() > LINE_MAX {
                    emit(&pending[..LINE_MAX]);
                    pending.clear();
                }
            }
            Err(e) => {
                tracing::debug!(egress = id, "egress log unreadable: {e}");
                return;
            }
        }
    }
}

/// Whether `target` (which may not exist yet) resolves inside `dir`: its deepest existing
/// ancestor, with symbolic links followed, must be `dir` or below it.
pub(crate) fn stays_inside(dir: &Path, target: &Path) -> bool {
    let mut probe = target;
    loop {
        if let Ok(real) = probe.canonicalize() {
            return real.starts_with(dir);
        }
        match probe.parent() {
            Some(p) => probe = p,
            None => return false,
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symbolic_link_out_of_the_directory_is_caught() {
        let base =
            std::env::temp_dir().join(format!("plenary-egress-inside-{}", std::process::id()));
        let dir = base.join("dir");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let dir = dir.canonicalize().unwrap();
        std::os::unix::fs::symlink(&base, dir.join("out")).unwrap();
        assert!(stays_inside(&dir, &dir.join("sub/new/x.mp4")));
        assert!(stays_inside(&dir, &dir.join("fresh")));
        assert!(!stays_inside(&dir, &dir.join("out/x")));
        assert!(!stays_inside(&dir, &dir.join("out")));
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn every_line_reaches_the_listing_even_the_last_unterminated_one() {
        let path = std::env::temp_dir().join(format!("plenary-egress-log-{}", std::process::id()));
        let tail = LogTail::start(path.clone(), 1, "ga").unwrap();
        use std::io::Write;
        let mut w = tail.writer().unwrap();
        w.write_all(b"first\nsecond\nlast without newline").unwrap();
        tail.finish();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while tail.last_line().as_deref() != Some("last without newline") {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                tail.last_line()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&path);
    }
}
