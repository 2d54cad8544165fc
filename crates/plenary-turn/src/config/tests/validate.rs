use crate::config::{ConfigError, ExternalIp, StaticUser, TlsConfig, TurnConfig, UserSecret};
use std::path::PathBuf;
use std::time::Duration;

#[track_caller]
fn refused(c: &TurnConfig, needle: &str) {
    let err = c.validate("turn.toml").expect_err("should be refused");
    assert!(err.message.contains(needle), "{err}");
    assert_eq!(err.file, "turn.toml");
    assert!(!err.fix.is_empty());
}

fn tls() -> Option<TlsConfig> {
    Some(TlsConfig {
        cert: PathBuf::from("/c.pem"),
        key: PathBuf::from("/k.pem"),
        cipher_list: Vec::new(),
    })
}

#[test]
fn default_is_valid() {
    TurnConfig::default().validate("x").unwrap();
}

#[test]
fn ports() {
    let mut c = TurnConfig::default();
    (c.min_port, c.max_port) = (50000, 40000);
    refused(&c, "relay port range");
    (c.min_port, c.max_port) = (0, 40000);
    refused(&c, "relay port range");
    (c.min_port, c.max_port) = (40000, 40000);
    c.validate("x").unwrap();
    // Port 0 means "any free port" (tests and probes read the bound port from the log).
    c.listening_port = 0;
    c.validate("x").unwrap();
}

#[test]
fn tls_port_needs_certificate_and_key() {
    let mut c = TurnConfig {
        tls_listening_port: Some(443),
        ..TurnConfig::default()
    };
    refused(&c, "no certificate");
    c.tls = tls();
    c.validate("x").unwrap();
    c.tls.as_mut().unwrap().key = PathBuf::new();
    refused(&c, "path is empty");
    c.tls = tls();
    c.tls_listening_port = Some(c.listening_port);
    refused(&c, "both");
}

#[test]
fn realm_must_be_set() {
    let mut c = TurnConfig {
        realm: " ".into(),
        ..TurnConfig::default()
    };
    refused(&c, "realm is empty");
    c.realm = "x".repeat(128);
    refused(&c, "longer");
}

#[test]
fn lifetimes_must_be_sane() {
    let mut c = TurnConfig::default();
    c.limits.default_lifetime = Duration::from_secs(7200);
    refused(&c, "exceeds the maximum");
    let mut c = TurnConfig::default();
    c.limits.permission_lifetime = Duration::ZERO;
    refused(&c, "permission lifetime");
    let mut c = TurnConfig::default();
    c.limits.nonce_lifetime = Duration::from_millis(500);
    refused(&c, "nonce lifetime");
    let mut c = TurnConfig::default();
    c.limits.unauthorized_per_sec = 0;
    refused(&c, "401");
    let mut c = TurnConfig::default();
    c.limits.stream_idle_timeout = Duration::ZERO;
    refused(&c, "stream idle timeout");
    let mut c = TurnConfig::default();
    c.limits.tls_handshake_timeout = Duration::ZERO;
    refused(&c, "TLS handshake timeout");
}

#[test]
fn no_auth_excludes_credentials() {
    let mut c = TurnConfig::default();
    c.auth.no_auth = true;
    c.validate("x").unwrap();
    c.auth.secrets.push("s".into());
    refused(&c, "no-auth");
    c.auth.secrets.clear();
    c.auth.users.push(StaticUser {
        name: "a".into(),
        secret: UserSecret::Password("p".into()),
    });
    refused(&c, "no-auth");
}

#[test]
fn credentials_are_well_formed() {
    let mut c = TurnConfig::default();
    c.auth.secrets.push(String::new());
    refused(&c, "secret is empty");
    let mut c = TurnConfig::default();
    let user = StaticUser {
        name: "a".into(),
        secret: UserSecret::Key([0; 16]),
    };
    c.auth.users = vec![user.clone(), user];
    refused(&c, "defined twice");
    let mut c = TurnConfig::default();
    c.auth.rest_separator = '7';
    refused(&c, "separator");
}

#[test]
fn external_ips() {
    let ext = |p: &str, q: Option<&str>| ExternalIp {
        public: p.parse().unwrap(),
        private: q.map(|q| q.parse().unwrap()),
    };
    let mut c = TurnConfig {
        external_ips: vec![ext("203.0.113.1", Some("2001:db8::1"))],
        ..TurnConfig::default()
    };
    refused(&c, "across address families");
    c.external_ips = vec![ext("203.0.113.1", None), ext("203.0.113.2", None)];
    refused(&c, "more than one");
    c.external_ips = vec![
        ext("203.0.113.1", None),
        ext("2001:db8::1", None),
        ext("203.0.113.2", Some("10.0.0.2")),
    ];
    c.validate("x").unwrap();
}

#[test]
fn error_display_names_file_line_and_fix() {
    let e = ConfigError::new("/etc/turnserver.conf", Some(7), "bad thing", "do this");
    assert_eq!(
        e.to_string(),
        "/etc/turnserver.conf:7: bad thing\n  fix: do this"
    );
    let e = ConfigError::new("turn.toml", None, "bad thing", "do this");
    assert_eq!(e.to_string(), "turn.toml: bad thing\n  fix: do this");
}
