//! `tracing` subscriber setup: a level filter, plain or JSON lines, stderr or a log file.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Mutex;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log level {level:?}: {source}")]
    BadLevel {
        level: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber.
///
/// `level` is a tracing filter directive ("info", "plenary_turn=debug,info"). `RUST_LOG`,
/// when set and valid, replaces it, so an operator can raise verbosity without editing the
/// config. `file` is opened for appending; if that fails, logs go to stderr and the
/// returned string says why (the caller logs it once the logger is up).
pub fn init(
    level: &str,
    format: LogFormat,
    file: Option<&Path>,
) -> Result<Option<String>, LogError> {
    let filter = build_filter(level)?;
    let mut warning = None;
    let file = match file.map(|p| (p, open_append(p))) {
        None => None,
        Some((_, Ok(f))) => Some(f),
        Some((p, Err(e))) => {
            warning = Some(format!(
                "cannot open log file {}: {e}; logging to stderr instead",
                p.display()
            ));
            None
        }
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match (format, file) {
        // Colours only on a terminal: journald and log collectors get plain text.
        (LogFormat::Plain, None) => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init(),
        (LogFormat::Plain, Some(f)) => builder
            .with_ansi(false)
            .with_writer(Mutex::new(f))
            .try_init(),
        (LogFormat::Json, None) => builder.json().with_writer(std::io::stderr).try_init(),
        (LogFormat::Json, Some(f)) => builder
            .json()
            .with_ansi(false)
            .with_writer(Mutex::new(f))
            .try_init(),
    };
    result.map_err(|_| LogError::AlreadyInstalled)?;
    Ok(warning)
}

/// The filter `init` would use: `RUST_LOG` when set and parseable, else `level`.
pub fn build_filter(level: &str) -> Result<EnvFilter, LogError> {
    if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
        if let Ok(f) = EnvFilter::try_from_default_env() {
            return Ok(f);
        }
    }
    EnvFilter::try_new(level).map_err(|source| LogError::BadLevel {
        level: level.to_owned(),
        source,
    })
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_level_is_an_error() {
        // Only meaningful when RUST_LOG is not set in the test environment.
        if std::env::var_os("RUST_LOG").is_none() {
            assert!(matches!(
                build_filter("info,=["),
                Err(LogError::BadLevel { .. })
            ));
            assert!(build_filter("debug").is_ok());
            assert!(build_filter("plenary_turn=debug,info").is_ok());
        }
    }

    #[test]
    fn unopenable_file_falls_back_with_warning() {
        let w = init(
            "info",
            LogFormat::Json,
            Some(Path::new("/nonexistent-dir/x/plenary.log")),
        );
        match w {
            Ok(Some(msg)) => assert!(msg.contains("cannot open log file")),
            // Another test in this process may have installed the logger first.
            Err(LogError::AlreadyInstalled) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
