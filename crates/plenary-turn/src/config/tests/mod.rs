mod coturn;
mod toml_format;
mod validate;

use super::ConfigError;

/// Asserts an error names `line` and mentions `needle` in its message.
#[track_caller]
fn assert_error_at(result: Result<impl std::fmt::Debug, ConfigError>, line: usize, needle: &str) {
    let err = result.expect_err("expected a config error");
    assert_eq!(err.line, Some(line), "wrong line in: {err}");
    assert!(
        err.message.contains(needle),
        "message {:?} should mention {needle:?}",
        err.message
    );
    assert!(
        !err.fix.is_empty(),
        "an error must say how to fix it: {err}"
    );
}
