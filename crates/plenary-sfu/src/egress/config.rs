//! The `[egress]` section of `configs/sfu.toml`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::EgressConfig;
use crate::config::ConfigError;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct EgressDoc {
    binary: Option<String>,
    dir: Option<String>,
    max_running: Option<usize>,
    max_restarts: Option<u32>,
    token_ttl_seconds: Option<u64>,
}

/// Most egress children one node may be configured to run (each takes ~40% of a core).
const MAX_RUNNING: usize = 64;

pub(crate) fn parse(
    d: &EgressDoc,
    err: &dyn Fn(&str, String, &str) -> ConfigError,
) -> Result<EgressConfig, ConfigError> {
    let mut c = EgressConfig::default();
    let set = |v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).map(PathBuf::from);
    c.binary = set(&d.binary);
    if let Some(dir) = set(&d.dir) {
        if !dir.is_absolute() {
            return Err(err(
                "egress.dir",
                format!("dir = \"{}\" is not an absolute path", dir.display()),
                "give an absolute directory, e.g. \"/var/lib/plenary/egress\"",
            ));
        }
        c.dir = Some(dir);
    }
    if let Some(v) = d.max_running {
        if v > MAX_RUNNING {
            return Err(err(
                "egress.max-running",
                format!("max-running = {v} is more than {MAX_RUNNING}"),
                "one egress takes about 40% of a core: count cores, or 0 to turn egress off",
            ));
        }
        c.max_running = v;
    }
    if let Some(v) = d.max_restarts {
        if v > 100 {
            return Err(err(
                "egress.max-restarts",
                format!("max-restarts = {v} is more than 100"),
                "use a small number (5 is the default), or 0 to never restart",
            ));
        }
        c.max_restarts = v;
    }
    if let Some(v) = d.token_ttl_seconds {
        if !(60..=366 * 86400).contains(&v) {
            return Err(err(
                "egress.token-ttl-seconds",
                format!("token-ttl-seconds = {v} is outside 60..=31622400"),
                "use at least the longest broadcast, e.g. 86400",
            ));
        }
        c.token_ttl = Duration::from_secs(v);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use crate::config::parse_toml;
    use std::time::Duration;

    const EMBEDDED: &str = include_str!("../../../../configs/sfu.toml");

    #[test]
    fn the_embedded_config_has_egress_defaults() {
        let (c, _) = parse_toml(EMBEDDED, "configs/sfu.toml").unwrap();
        let e = c.egress;
        assert_eq!((e.binary, e.dir), (None, None));
        assert_eq!((e.max_running, e.max_restarts), (4, 5));
        assert_eq!(e.token_ttl, Duration::from_secs(86400));
    }

    #[test]
    fn egress_keys_are_checked_with_their_line() {
        let (c, _) = parse_toml(
            "[egress]\nbinary = \"/usr/bin/plenary\"\ndir = \"/srv/egress\"\nmax-running = 2\n",
            "e.toml",
        )
        .unwrap();
        assert_eq!(c.egress.dir.unwrap().to_str(), Some("/srv/egress"));
        assert_eq!(c.egress.max_running, 2);
        let e = parse_toml("[egress]\nmax-running = 1\ndir = \"rel/dir\"\n", "e.toml").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = parse_toml("[egress]\nmax-running = 1000\n", "e.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = parse_toml("[egress]\ntoken-ttl-seconds = 5\n", "e.toml").unwrap_err();
        assert!(e.to_string().starts_with("e.toml:2: "), "{e}");
        let e = parse_toml("[egress]\nbinray = \"x\"\n", "e.toml").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
