//! Cross-field checks that no single key can express. They run after either parser, so
//! both formats refuse the same mistakes.

use super::{ConfigError, TurnConfig};
use std::collections::HashSet;
use std::time::Duration;

/// REALM must stay under 128 characters (RFC 8489 §14.9).
const MAX_REALM_CHARS: usize = 127;

pub(super) fn check(c: &TurnConfig, file: &str) -> Result<(), ConfigError> {
    let err = |message: String, fix: &str| Err(ConfigError::new(file, None, message, fix));

    // Port 0 asks the OS for a free port (tests, probes); the bound port is logged.
    if c.min_port == 0 || c.min_port > c.max_port {
        return err(
            format!(
                "the relay port range {}–{} is empty or starts at 0",
                c.min_port, c.max_port
            ),
            "set min port ≥ 1 and min port ≤ max port (the default is 49152–65535)",
        );
    }
    check_tls(c, &err)?;

    if c.realm.trim().is_empty() {
        return err(
            "the realm is empty".into(),
            "set a realm, usually the server's domain name",
        );
    }
    if c.realm.chars().count() > MAX_REALM_CHARS {
        return err(
            format!("the realm is longer than {MAX_REALM_CHARS} characters"),
            "use a shorter realm (STUN limits REALM to 127 characters)",
        );
    }
    check_auth(c, &err)?;
    check_limits(c, &err)?;
    check_external_ips(c, &err)?;

    if c.ops.log_level.trim().is_empty() {
        return err(
            "the log level is empty".into(),
            "set a level such as \"info\" or \"debug\"",
        );
    }
    Ok(())
}

type ErrFn<'a> = dyn Fn(String, &str) -> Result<(), ConfigError> + 'a;

fn check_tls(c: &TurnConfig, err: &ErrFn) -> Result<(), ConfigError> {
    if let Some(port) = c.tls_listening_port {
        if c.tls.is_none() {
            return err(
                format!("a TLS port ({port}) is set but no certificate and key"),
                "configure the certificate and private key files, or remove the TLS port",
            );
        }
        if port != 0 && port == c.listening_port {
            return err(
                format!("the TLS port and the plain port are both {port}"),
                "use two different ports; TLS is also detected on the plain TCP port",
            );
        }
    }
    if let Some(tls) = &c.tls {
        if tls.cert.as_os_str().is_empty() || tls.key.as_os_str().is_empty() {
            return err(
                "the TLS certificate or key path is empty".into(),
                "give the paths of the PEM certificate chain and private key",
            );
        }
        if tls.cipher_list.iter().any(|s| s.trim().is_empty()) {
            return err(
                "the TLS cipher list has an empty entry".into(),
                "list suite names without empty entries, or leave the list empty for rustls defaults",
            );
        }
    }
    Ok(())
}

fn check_auth(c: &TurnConfig, err: &ErrFn) -> Result<(), ConfigError> {
    let a = &c.auth;
    if a.no_auth && (!a.users.is_empty() || !a.secrets.is_empty()) {
        return err(
            "authentication is switched off (no-auth) but users or shared secrets are also configured"
                .into(),
            "remove no-auth to keep authentication, or remove the users and secrets",
        );
    }
    if a.secrets.iter().any(|s| s.is_empty()) {
        return err(
            "a shared secret is empty".into(),
            "remove the empty secret or give it a long random value",
        );
    }
    let mut names = HashSet::new();
    for u in &a.users {
        if u.name.is_empty() {
            return err(
                "a static user has an empty name".into(),
                "give every user a name",
            );
        }
        if !names.insert(u.name.as_str()) {
            return err(
                format!("the user `{}` is defined twice", u.name),
                "keep one definition per user",
            );
        }
    }
    let sep = a.rest_separator;
    if sep.is_ascii_digit() || sep.is_whitespace() || sep.is_control() {
        return err(
            format!(
                "the REST username separator {sep:?} is a digit, a space or a control character"
            ),
            "use a punctuation character such as ':' (the default)",
        );
    }
    Ok(())
}

fn check_limits(c: &TurnConfig, err: &ErrFn) -> Result<(), ConfigError> {
    let l = &c.limits;
    let named = [
        ("default allocation lifetime", l.default_lifetime),
        ("maximum allocation lifetime", l.max_lifetime),
        ("permission lifetime", l.permission_lifetime),
        ("channel lifetime", l.channel_lifetime),
        ("nonce lifetime", l.nonce_lifetime),
    ];
    for (what, d) in named {
        if d < Duration::from_secs(1) {
            return err(
                format!("the {what} is shorter than one second"),
                "give lifetimes in whole seconds, at least 1",
            );
        }
        if d.as_secs() > u64::from(u32::MAX) {
            return err(
                format!("the {what} does not fit STUN's 32-bit LIFETIME"),
                "use a lifetime below 4294967295 seconds",
            );
        }
    }
    if l.default_lifetime > l.max_lifetime {
        return err(
            format!(
                "the default allocation lifetime ({} s) exceeds the maximum ({} s)",
                l.default_lifetime.as_secs(),
                l.max_lifetime.as_secs()
            ),
            "raise the maximum lifetime or lower the default",
        );
    }
    for (what, d) in [
        ("stream idle timeout", l.stream_idle_timeout),
        ("TLS handshake timeout", l.tls_handshake_timeout),
    ] {
        if d < Duration::from_secs(1) {
            return err(
                format!("the {what} is shorter than one second"),
                "give timeouts in whole seconds, at least 1 (defaults: 30 idle, 10 handshake)",
            );
        }
    }
    if l.unauthorized_per_sec == 0 {
        return err(
            "the 401 rate limit is 0, which would refuse every first request".into(),
            "allow at least 1 response per second (the default is 1000)",
        );
    }
    Ok(())
}

fn check_external_ips(c: &TurnConfig, err: &ErrFn) -> Result<(), ConfigError> {
    let mut plain_v4 = false;
    let mut plain_v6 = false;
    for e in &c.external_ips {
        match e.private {
            Some(p) if p.is_ipv4() != e.public.is_ipv4() => {
                return err(
                    format!("external IP {}/{p} maps across address families", e.public),
                    "pair a public IPv4 with a private IPv4, and IPv6 with IPv6",
                );
            }
            Some(_) => {}
            None => {
                let seen = if e.public.is_ipv4() {
                    &mut plain_v4
                } else {
                    &mut plain_v6
                };
                if std::mem::replace(seen, true) {
                    return err(
                        format!(
                            "more than one external IP without a private address ({} is the second)",
                            e.public
                        ),
                        "give one PUBLIC per family, or map each one as PUBLIC/PRIVATE",
                    );
                }
            }
        }
    }
    Ok(())
}
