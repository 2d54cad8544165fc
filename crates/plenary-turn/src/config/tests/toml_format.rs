use super::assert_error_at;
use crate::config::{parse_toml, ExternalIp, LogFormat, TurnConfig, UserSecret};
use crate::policy::IpRange;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

const SHIPPED: &str = include_str!("../../../../../configs/turn.toml");

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn shipped_turn_toml_is_the_default() {
    let c = parse_toml(SHIPPED, "configs/turn.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c, TurnConfig::default());
}

/// `# key = value` or `# [section]`: a documented example, not prose.
fn is_commented_example(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("# ")?;
    let key = rest.split(" = ").next()?;
    let is_key = key.len() < rest.len() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    (rest.starts_with('[') || is_key).then_some(rest)
}

#[test]
fn shipped_turn_toml_examples_are_valid() {
    // Uncommenting every documented example must give a valid file: catches stale docs.
    let uncommented: Vec<&str> = SHIPPED
        .lines()
        .map(|l| is_commented_example(l).unwrap_or(l))
        .collect();
    let text = uncommented.join("\n");
    let c = parse_toml(&text, "turn.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(c.tls_listening_port, Some(443));
    assert_eq!(c.auth.users.len(), 2);
    assert!(c.tls.is_some());
    assert_eq!(c.software, None);
}

#[test]
fn every_section() {
    let text = r#"
[listen]
ips = ["192.0.2.1", "2001:db8::1"]
port = 3479
tls_port = 443

[relay]
ips = ["192.0.2.2"]
min_port = 40000
max_port = 40100
external_ips = ["203.0.113.9", "203.0.113.10/192.0.2.2"]
keep_address_family = true

[auth]
realm = "turn.example.coop"
secrets = ["new", "old"]
rest_separator = "-"

[[auth.users]]
name = "alice"
password = "pw"

[[auth.users]]
name = "bob"
key = "bc807ee29df3c9ffa736523fb2c4e8ee"

[tls]
cert = "certs/fullchain.pem"
key = "/etc/plenary/privkey.pem"
cipher_list = ["ECDHE-RSA-AES128-GCM-SHA256"]

[peers]
allowed = ["127.0.0.1", "10.0.0.0/8"]
denied = ["0.0.0.0-255.255.255.255"]
allow_loopback = true

[limits]
user_quota = 5
total_quota = 500
max_bps = 125000
default_lifetime = 300
max_lifetime = 1200
permission_lifetime = 200
channel_lifetime = 500
nonce_lifetime = 900
unauthorized_per_sec = 50
stream_idle_timeout = 5
tls_handshake_timeout = 3

[ops]
metrics_addr = "off"
log_format = "json"
log_level = "debug"
log_file = "/var/log/plenary.log"

[server]
software = ""
drain_timeout = 5
workers = 3
"#;
    let c = parse_toml(text, "/etc/plenary/turn.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listening_ips, [ip("192.0.2.1"), ip("2001:db8::1")]);
    assert_eq!((c.listening_port, c.tls_listening_port), (3479, Some(443)));
    assert_eq!(c.relay_ips, [ip("192.0.2.2")]);
    assert_eq!((c.min_port, c.max_port), (40000, 40100));
    assert_eq!(
        c.external_ips,
        [
            ExternalIp {
                public: ip("203.0.113.9"),
                private: None
            },
            ExternalIp {
                public: ip("203.0.113.10"),
                private: Some(ip("192.0.2.2"))
            },
        ]
    );
    assert!(c.keep_address_family);
    assert_eq!(c.realm, "turn.example.coop");
    assert_eq!(c.auth.secrets, ["new", "old"]);
    assert_eq!(c.auth.rest_separator, '-');
    assert_eq!(c.auth.users[0].secret, UserSecret::Password("pw".into()));
    assert!(matches!(
        c.auth.users[1].secret,
        UserSecret::Key([0xbc, ..])
    ));
    let tls = c.tls.as_ref().unwrap();
    assert_eq!(tls.cert, PathBuf::from("/etc/plenary/certs/fullchain.pem"));
    assert_eq!(tls.key, PathBuf::from("/etc/plenary/privkey.pem"));
    assert_eq!(tls.cipher_list, ["ECDHE-RSA-AES128-GCM-SHA256"]);
    assert_eq!(c.peers.allowed[1], "10.0.0.0/8".parse::<IpRange>().unwrap());
    assert_eq!(c.peers.denied.len(), 1);
    assert!(c.peers.allow_loopback);
    let l = &c.limits;
    assert_eq!((l.user_quota, l.total_quota, l.max_bps), (5, 500, 125000));
    assert_eq!(l.default_lifetime, Duration::from_secs(300));
    assert_eq!(l.max_lifetime, Duration::from_secs(1200));
    assert_eq!(l.permission_lifetime, Duration::from_secs(200));
    assert_eq!(l.channel_lifetime, Duration::from_secs(500));
    assert_eq!(l.nonce_lifetime, Duration::from_secs(900));
    assert_eq!(l.unauthorized_per_sec, 50);
    assert_eq!(l.stream_idle_timeout, Duration::from_secs(5));
    assert_eq!(l.tls_handshake_timeout, Duration::from_secs(3));
    assert_eq!(c.ops.metrics_addr, None);
    assert_eq!(c.ops.log_format, LogFormat::Json);
    assert_eq!(c.ops.log_level, "debug");
    assert_eq!(c.ops.log_file, Some(PathBuf::from("/var/log/plenary.log")));
    assert_eq!(c.software, None);
    assert_eq!(c.drain_timeout, Duration::from_secs(5));
    assert_eq!(c.workers, 3);
}

#[test]
fn empty_file_is_the_default() {
    assert_eq!(parse_toml("", "t").unwrap(), TurnConfig::default());
    let c = parse_toml("[ops]\nmetrics_addr = \"[::1]:9000\"\n", "t").unwrap();
    assert_eq!(
        c.ops.metrics_addr,
        Some(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 9000)))
    );
}

#[test]
fn unknown_key_names_its_line() {
    let text = "[listen]\nport = 3478\n\n[peers]\nallow_loopbak = true\n";
    assert_error_at(parse_toml(text, "t"), 5, "allow_loopbak");
    assert_error_at(parse_toml("[listne]\nport = 1\n", "t"), 1, "listne");
    assert_error_at(parse_toml("port = 3478\n", "t"), 1, "port");
}

#[test]
fn bad_values_name_their_line() {
    assert_error_at(parse_toml("[listen]\nport = 70000\n", "t"), 2, "");
    assert_error_at(
        parse_toml("[listen]\nport = \"3478\"\n", "t"),
        2,
        "invalid type",
    );
    assert_error_at(
        parse_toml(
            "[peers]\nallowed = [\n  \"10.0.0.1\",\n  \"10.0.0.9-10.0.0.1\",\n]\n",
            "t",
        ),
        4,
        "starts after it ends",
    );
    assert_error_at(
        parse_toml("[relay]\nexternal_ips = [\"1.2.3.4/nope\"]\n", "t"),
        2,
        "PUBLIC/PRIVATE",
    );
    assert_error_at(parse_toml("[listen]\nips = [\"localhost\"]\n", "t"), 2, "");
    assert_error_at(
        parse_toml("\n[ops]\nmetrics_addr = \"9641\"\n", "t"),
        3,
        "ADDRESS:PORT",
    );
    assert_error_at(parse_toml("[ops]\nlog_format = \"xml\"\n", "t"), 2, "xml");
    assert_error_at(parse_toml("[auth]\nrest_separator = \"::\"\n", "t"), 2, "");
    assert_error_at(parse_toml("[listen]\nport = \n", "t"), 2, "");
}

#[test]
fn user_needs_one_secret() {
    let text =
        "[auth]\nrealm = \"r\"\n\n[[auth.users]]\nname = \"a\"\npassword = \"p\"\nkey = \"00\"\n";
    let err = parse_toml(text, "t").unwrap_err();
    assert!(err.message.contains("exactly one"), "{err}");
    assert!(matches!(err.line, Some(4..=7)), "{err}");
    let text = "[[auth.users]]\nname = \"a\"\nkey = \"0x1234\"\n";
    assert!(parse_toml(text, "t")
        .unwrap_err()
        .message
        .contains("32 hex"));
}

#[test]
fn validation_runs_after_parsing() {
    let err = parse_toml("[listen]\ntls_port = 443\n", "turn.toml").unwrap_err();
    assert!(err.message.contains("TLS port"), "{err}");
    let err = parse_toml("[relay]\nmin_port = 60000\nmax_port = 50000\n", "t").unwrap_err();
    assert!(err.message.contains("relay port range"), "{err}");
    let err = parse_toml("[auth]\nno_auth = true\nsecrets = [\"s\"]\n", "t").unwrap_err();
    assert!(err.message.contains("no-auth"), "{err}");
}

#[test]
fn a_coturn_file_given_as_toml_is_named_with_the_flag_to_use() {
    let bbb = include_str!("../../../../../tests/fixtures/bbb-install-turnserver.conf");
    let err = parse_toml(bbb, "/etc/turnserver.conf").expect_err("coturn syntax is not TOML");
    assert!(
        err.fix.contains("--coturn-conf /etc/turnserver.conf"),
        "the fix should name --coturn-conf: {err}"
    );
    let secret = "static-auth-secret=do-not-print-me";
    let err = parse_toml(secret, "t").expect_err("coturn syntax is not TOML");
    assert!(err.fix.contains("`static-auth-secret`"), "{err}");
    assert!(
        !err.to_string().contains("do-not-print-me"),
        "a value was echoed: {err}"
    );
    // Broken TOML that merely has a hyphen somewhere keeps the TOML advice.
    let err = parse_toml("[listen]\nport = 34-78\n", "t").expect_err("not a number");
    assert!(!err.fix.contains("coturn"), "{err}");
}
