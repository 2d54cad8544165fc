//! coturn `turnserver.conf` syntax: `name=value`, `name value`, bare flags, `#` comments,
//! optional leading `--`. Every option is either honoured, named as unsupported in the
//! report (one line at start), or, when ignoring it would weaken security, an error.

use super::{ConfigError, TurnConfig};

/// What the operator must be told at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoturnReport {
    /// Options accepted but not honoured (harmless), e.g. `no-cli`, `dh-file` — with why.
    pub unsupported: Vec<String>,
}

impl CoturnReport {
    /// The one line logged at start, or `None` when everything was honoured.
    pub fn summary_line(&self) -> Option<String> {
        todo!()
    }
}

/// Parses coturn syntax. `file` names the source in errors.
pub fn parse_coturn(text: &str, file: &str) -> Result<(TurnConfig, CoturnReport), ConfigError> {
    let _ = (text, file);
    todo!()
}
