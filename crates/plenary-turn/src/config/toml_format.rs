//! Plenary's own TOML format, documented in `configs/turn.toml`.

use super::{ConfigError, TurnConfig};

/// Parses Plenary TOML; unknown keys are errors naming the line.
pub fn parse_toml(text: &str, file: &str) -> Result<TurnConfig, ConfigError> {
    let _ = (text, file);
    todo!()
}
