use super::assert_error_at;
use crate::config::coturn_options::{Arg, Class, OPTIONS};
use crate::config::{parse_coturn, CoturnReport, ExternalIp, TurnConfig, UserSecret};
use crate::policy::{DenyReason, IpRange, PeerPolicy, Verdict};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fixture(name: &str) -> (String, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {} must exist: {e}", path.display()));
    (text, path.display().to_string())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn parse(text: &str) -> (TurnConfig, CoturnReport) {
    parse_coturn(text, "test.conf").unwrap_or_else(|e| panic!("should parse: {e}"))
}

const SECRET: &str = "Zm9vYmFyLXRlc3Qtc2VjcmV0LW9ubHk=";

#[test]
fn bbb_install_fixture() {
    let (text, file) = fixture("bbb-install-turnserver.conf");
    let (c, report) = parse_coturn(&text, &file).unwrap();
    assert_eq!(c.listening_port, 3478);
    assert_eq!(c.tls_listening_port, None);
    assert_eq!(c.tls, None);
    assert_eq!(c.listening_ips, vec![ip("127.0.0.1")]);
    assert_eq!(c.relay_ips, vec![ip("127.0.0.1")]);
    assert_eq!((c.min_port, c.max_port), (32769, 65535));
    assert_eq!(c.ops.log_level, "debug");
    assert_eq!(c.auth.secrets, vec![SECRET.to_string()]);
    assert!(c.auth.users.is_empty());
    assert!(!c.auth.no_auth);
    assert_eq!(c.realm, "bbb.example.coop");
    assert!(c.keep_address_family);
    assert_eq!(
        c.peers.denied,
        vec![
            "0.0.0.0-255.255.255.255".parse::<IpRange>().unwrap(),
            "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
                .parse()
                .unwrap(),
        ]
    );
    assert_eq!(c.peers.allowed, vec![IpRange::single(ip("127.0.0.1"))]);
    assert!(!c.peers.allow_loopback);
    assert_eq!(c.software, None);
    assert_eq!(c.ops.metrics_addr, None);
    assert_eq!(report.summary_line(), None, "{report:?}");
    assert_eq!(report.differs_line(&c), None, "{report:?}");

    // As coturn: without allow-loopback-peers the allowed 127.0.0.1 stays refused.
    let policy = PeerPolicy::new(c.peers.clone(), vec![ip("127.0.0.1")]);
    assert_eq!(
        policy.check(ip("127.0.0.1")),
        Verdict::Denied(DenyReason::Loopback)
    );
    assert_eq!(
        policy.check(ip("8.8.8.8")),
        Verdict::Denied(DenyReason::DeniedByConfig)
    );
}

#[test]
fn bbb_external_fixture() {
    let (text, file) = fixture("bbb-external-turnserver.conf");
    let (c, report) = parse_coturn(&text, &file).unwrap();
    assert_eq!(c.listening_port, 3478);
    assert_eq!(c.tls_listening_port, Some(443));
    assert_eq!(c.listening_ips, vec![ip("127.0.0.1")]);
    assert_eq!(c.relay_ips, vec![ip("127.0.0.1")]);
    assert_eq!(
        c.external_ips,
        vec![ExternalIp {
            public: ip("127.0.0.1"),
            private: None
        }]
    );
    assert_eq!((c.min_port, c.max_port), (32769, 65535));
    assert_eq!(c.ops.log_level, "debug");
    assert_eq!(c.auth.secrets, vec![SECRET.to_string()]);
    assert_eq!(c.realm, "turn.example.coop");
    let tls = c.tls.as_ref().expect("TLS is configured");
    assert_eq!(tls.cert, PathBuf::from("/etc/turnserver/fullchain.pem"));
    assert_eq!(tls.key, PathBuf::from("/etc/turnserver/privkey.pem"));
    assert_eq!(
        tls.cipher_list,
        [
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "ECDHE-RSA-CHACHA20-POLY1305",
        ]
    );
    assert!(c.keep_address_family);
    assert_eq!(
        c.ops.log_file,
        Some(PathBuf::from("/var/log/turnserver/turnserver.log"))
    );
    assert!(c.peers.allowed.is_empty() && c.peers.denied.is_empty());
    assert!(!c.peers.allow_loopback);

    assert_eq!(report.unsupported.len(), 2, "{report:?}");
    assert!(report.unsupported[0].starts_with("dh-file ("));
    assert!(report.unsupported[1].starts_with("DTLS ("), "{report:?}");
    let line = report.summary_line().unwrap();
    assert!(
        line.starts_with("coturn options accepted but not acted on: dh-file (rustls"),
        "{line}"
    );
    assert!(!line.contains('\n'));
    // No deny-all here: the built-in peer list is a difference the operator must hear of.
    // log-file comes with simple-log, which is what Plenary does.
    let differs = report.differs_line(&c).unwrap();
    assert!(!differs.contains("log-file"), "{differs}");
    let (c, report) = parse("log-file=/var/log/turn.log\n");
    let line = report.differs_line(&c).unwrap();
    assert!(
        line.contains("log-file (written to exactly this path"),
        "{line}"
    );
    assert!(
        differs.contains("denied-peer-ip (Plenary also refuses private"),
        "{differs}"
    );
    assert!(differs.contains("cipher-list (OpenSSL names"), "{differs}");
}

#[test]
fn allow_loopback_peers_alone_opens_loopback_and_names_what_stays_closed() {
    // A single-host setup: the server listens and relays on 127.0.0.1, peers on loopback.
    let (c, report) = parse(
        "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nallow-loopback-peers\n\
         denied-peer-ip=0.0.0.0-255.255.255.255\nallowed-peer-ip=127.0.0.0/8\n",
    );
    assert_eq!(
        report.differs_line(&c),
        None,
        "own address allowed: {report:?}"
    );
    let (c, report) = parse("listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nallow-loopback-peers\n");
    let p = PeerPolicy::new(c.peers.clone(), vec![ip("127.0.0.1")]);
    assert_eq!(p.check(ip("127.0.0.2")), Verdict::Allowed, "as in coturn");
    assert_eq!(
        p.check(ip("127.0.0.1")),
        Verdict::Denied(DenyReason::ServerOwn)
    );
    let line = report.differs_line(&c).unwrap();
    assert!(
        line.contains(
            "allow-loopback-peers (opens loopback peers as in coturn, but not this server's own addresses 127.0.0.1: add allowed-peer-ip=127.0.0.1"
        ),
        "{line}"
    );
    // Listening on the wildcard: nothing of loopback is the server's own, so the option
    // means what it means in coturn.
    let (c, report) = parse("allow-loopback-peers\ndenied-peer-ip=0.0.0.0-255.255.255.255\n");
    assert_eq!(report.differs_line(&c), None);
    // Switched off again: nothing to say about it.
    let (c, report) = parse("listening-ip=127.0.0.1\nallow-loopback-peers\nno-loopback-peers\n");
    assert!(!report.differs_line(&c).unwrap().contains("allow-loopback"));
}

#[test]
fn example_config_parses() {
    let text = include_str!("../../../../../configs/coturn-example.conf");
    let (c, report) = parse_coturn(text, "configs/coturn-example.conf").unwrap();
    assert_eq!(c.tls_listening_port, Some(443));
    assert_eq!(c.limits.user_quota, 12);
    assert_eq!(c.limits.total_quota, 1200);
    assert_eq!(c.limits.max_bps, 3_000_000);
    assert_eq!(
        c.ops.metrics_addr,
        Some(SocketAddr::from(([127, 0, 0, 1], 9641)))
    );
    assert!(report
        .differences(&c)
        .iter()
        .any(|s| s.starts_with("prometheus (metrics bind to 127.0.0.1")));
}

#[test]
fn line_syntax_variants() {
    let (c, _) = parse(
        "# comment\n\
         \n\
         \t  # indented comment\n\
         --listening-port 3479\n\
         realm = \"two words\"  \n\
         min-port\t40000\r\n\
         max-port==50000\n\
         -V\n\
         static-auth-secret=\"a=b c\"\n",
    );
    assert_eq!(c.listening_port, 3479);
    assert_eq!(c.realm, "two words");
    assert_eq!((c.min_port, c.max_port), (40000, 50000));
    assert_eq!(c.ops.log_level, "trace");
    assert_eq!(c.auth.secrets, ["a=b c"]);
}

#[test]
fn short_aliases_and_case() {
    let (c, _) = parse("-p 3480\n-r example.org\n-v\n");
    assert_eq!(c.listening_port, 3480);
    assert_eq!(c.realm, "example.org");
    assert_eq!(c.ops.log_level, "debug");
    // `verbose` after `Verbose` does not lower the level, as in coturn.
    assert_eq!(parse("Verbose\nverbose\n").0.ops.log_level, "trace");
    assert_error_at(parse_coturn("VERBOSE\n", "t"), 1, "unknown option");
}

#[test]
fn several_secrets_and_users() {
    let (c, _) = parse(
        "lt-cred-mech\nuse-auth-secret\nstatic-auth-secret=old\nstatic-auth-secret=new\n\
         user=alice:pa:ss\nuser=bob:0xBC807EE29DF3C9FFA736523FB2C4E8EE\nrest-api-separator=.\n",
    );
    assert_eq!(c.auth.secrets, ["old", "new"]);
    assert_eq!(c.auth.users[0].name, "alice");
    assert_eq!(c.auth.users[0].secret, UserSecret::Password("pa:ss".into()));
    assert_eq!(
        c.auth.users[1].secret,
        UserSecret::Key([
            0xbc, 0x80, 0x7e, 0xe2, 0x9d, 0xf3, 0xc9, 0xff, 0xa7, 0x36, 0x52, 0x3f, 0xb2, 0xc4,
            0xe8, 0xee
        ])
    );
    assert_eq!(c.auth.rest_separator, '.');
    assert_error_at(parse_coturn("user=bob:0x1234\n", "t"), 1, "32 hex");
    assert_error_at(parse_coturn("\nuser=bob\n", "t"), 2, "`:`");
    assert_error_at(
        parse_coturn("rest-api-separator=::\n", "t"),
        1,
        "single character",
    );
}

#[test]
fn auth_mechanisms_need_credentials() {
    assert_error_at(
        parse_coturn("realm=x\nlt-cred-mech\n", "t"),
        2,
        "lt-cred-mech",
    );
    assert_error_at(
        parse_coturn("use-auth-secret\nlt-cred-mech\n", "t"),
        1,
        "static-auth-secret",
    );
    let (c, _) = parse("lt-cred-mech\nuser=a:b\n");
    assert_eq!(c.auth.users.len(), 1);
    assert!(parse("no-auth\n").0.auth.no_auth);
    assert!(!parse("no-auth=off\n").0.auth.no_auth);
    let err = parse_coturn("no-auth\nstatic-auth-secret=s\n", "t").unwrap_err();
    assert!(err.message.contains("no-auth"), "{err}");
}

#[test]
fn tls_options() {
    // cert + pkey without a TLS port: coturn's 5349.
    let (c, _) = parse("cert=/c.pem\npkey=/k.pem\ncipher-list=DEFAULT\n");
    assert_eq!(c.tls_listening_port, Some(5349));
    assert!(c.tls.unwrap().cipher_list.is_empty());
    // no-tls switches TLS off entirely.
    let (c, _) = parse("tls-listening-port=443\ncert=/c.pem\npkey=/k.pem\nno-tls\n");
    assert_eq!((c.tls_listening_port, c.tls), (None, None));
    // Relative paths are relative to the config file.
    let (c, _) = parse_coturn(
        "cert=fullchain.pem\npkey=/abs/key.pem\n",
        "/etc/turnserver/turnserver.conf",
    )
    .unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(tls.cert, PathBuf::from("/etc/turnserver/fullchain.pem"));
    assert_eq!(tls.key, PathBuf::from("/abs/key.pem"));
    // Half a key pair names the line that is there.
    assert_error_at(parse_coturn("realm=x\npkey=/k.pem\n", "t"), 2, "cert");
    // A TLS port without certificate is refused by validation.
    let err = parse_coturn("tls-listening-port=443\n", "t").unwrap_err();
    assert!(err.message.contains("TLS port"), "{err}");
}

#[test]
fn addresses_and_peers() {
    let (c, _) = parse(
        "listening-ip=192.0.2.1\nlistening-ip=2001:db8::1\nrelay-ip=192.0.2.2\n\
         external-ip=203.0.113.5/192.0.2.2\nallow-loopback-peers\nallowed-peer-ip=10.0.0.0/8\n\
         denied-peer-ip=203.0.113.0-203.0.113.255\n",
    );
    assert_eq!(c.listening_ips, [ip("192.0.2.1"), ip("2001:db8::1")]);
    assert_eq!(c.relay_ips, [ip("192.0.2.2")]);
    assert_eq!(
        c.external_ips,
        [ExternalIp {
            public: ip("203.0.113.5"),
            private: Some(ip("192.0.2.2"))
        }]
    );
    assert!(c.peers.allow_loopback);
    assert_eq!(c.peers.allowed, ["10.0.0.0/8".parse::<IpRange>().unwrap()]);
    assert!(
        !parse("allow-loopback-peers\nno-loopback-peers\n")
            .0
            .peers
            .allow_loopback
    );
    assert_error_at(
        parse_coturn("realm=x\n\ndenied-peer-ip=10.0.0.9-10.0.0.1\n", "t"),
        3,
        "denied-peer-ip",
    );
    assert_error_at(
        parse_coturn("listening-ip=turn.example.org\n", "t"),
        1,
        "listening-ip",
    );
    assert_error_at(
        parse_coturn("external-ip=1.2.3.4/x\n", "t"),
        1,
        "external-ip",
    );
}

#[test]
fn limits_and_lifetimes() {
    let (c, _) = parse(
        "user-quota=10\ntotal-quota=100\nmax-bps=64000\nmax-allocate-lifetime=300\n\
         channel-lifetime=900\npermission-lifetime=120\nstale-nonce=60\nrelay-threads=0\n",
    );
    let l = &c.limits;
    assert_eq!((l.user_quota, l.total_quota, l.max_bps), (10, 100, 64000));
    assert_eq!(l.max_lifetime, Duration::from_secs(300));
    assert_eq!(l.default_lifetime, Duration::from_secs(300));
    assert_eq!(l.channel_lifetime, Duration::from_secs(900));
    assert_eq!(l.permission_lifetime, Duration::from_secs(120));
    assert_eq!(l.nonce_lifetime, Duration::from_secs(60));
    assert_eq!(c.workers, 1);
    // A bare stale-nonce means coturn's 600 s.
    assert_eq!(
        parse("stale-nonce\n").0.limits.nonce_lifetime,
        Duration::from_secs(600)
    );
    let (c, report) = parse("stale-nonce=0\n");
    assert_eq!(c.limits.nonce_lifetime, Duration::from_secs(600));
    assert!(report.unsupported[0].starts_with("stale-nonce=0"));
    assert_error_at(
        parse_coturn("channel-lifetime=0\n", "t"),
        1,
        "channel-lifetime",
    );
    assert_error_at(parse_coturn("user-quota=-1\n", "t"), 1, "user-quota");
}

#[test]
fn bad_port_names_its_line() {
    let text = "listening-port=3478\nrealm=x\nmin-port=70000\nmax-port=65535\n";
    assert_error_at(parse_coturn(text, "t"), 3, "min-port");
    assert_error_at(
        parse_coturn("\n\n\n\nlistening-port=34x\n", "t"),
        5,
        "listening-port",
    );
    assert_error_at(parse_coturn("listening-port=0\n", "t"), 1, "listening-port");
    let err = parse_coturn("#\nmax-port=abc\n", "/etc/turnserver.conf").unwrap_err();
    assert!(
        err.to_string().starts_with("/etc/turnserver.conf:2: "),
        "{err}"
    );
}

#[test]
fn unknown_option_names_its_line() {
    assert_error_at(
        parse_coturn("listening-port=3478\nlistening-prot=3478\n", "t"),
        2,
        "unknown option `listening-prot`",
    );
    assert_error_at(parse_coturn("sha256\n", "t"), 1, "unknown option");
}

#[test]
fn security_options_stop_the_start() {
    for line in [
        "secure-stun",
        "no-udp",
        "no-tcp",
        "no-udp-relay",
        "stun-only",
        "oauth",
        "check-origin-consistency",
        "no-tlsv1_2",
        "CA-file=/etc/ca.pem",
        "pkey-pwd=secret",
        "proc-user=turnserver",
        "proc-group=turnserver",
        "userdb=/var/lib/turn/turndb",
        "redis-userdb=\"ip=127.0.0.1\"",
        "listening-device=eth0",
        "relay-device=eth0",
        "bps-capacity=1000000",
    ] {
        let text = format!("realm=x\n{line}\n");
        let name = line.split('=').next().unwrap();
        assert_error_at(parse_coturn(&text, "t"), 2, name);
    }
    // Switched off explicitly, they ask for coturn's default: fine.
    parse("secure-stun=off\nno-udp=0\nstun-only=false\noauth=no\n");
    assert_error_at(parse_coturn("no-udp=maybe\n", "t"), 1, "boolean");
}

#[test]
fn harmless_options_are_reported_once() {
    let (_, report) = parse(
        "pidfile=/var/run/turnserver.pid\naux-server=1.2.3.4:3479\naux-server=1.2.3.4:3480\n\
         log-file=syslog\ncli-password=x\nfingerprint=off\n",
    );
    let names: Vec<&str> = report
        .unsupported
        .iter()
        .map(|s| s.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "pidfile",
            "aux-server",
            "log-file=syslog",
            "cli-password",
            "fingerprint=off"
        ]
    );
    let line = report.summary_line().unwrap();
    assert!(line.contains("pidfile (no pid file is written"), "{line}");
    assert_eq!(CoturnReport::default().summary_line(), None);
}

#[test]
fn logging_metrics_and_software() {
    assert_eq!(parse("log-file=stdout\n").0.ops.log_file, None);
    assert_eq!(parse("log-file=-\n").0.ops.log_file, None);
    let (c, report) = parse("prometheus\nprometheus-port=9100\nprometheus-address=0.0.0.0\n");
    assert_eq!(
        c.ops.metrics_addr,
        Some(SocketAddr::from(([0, 0, 0, 0], 9100)))
    );
    assert!(report.unsupported.is_empty());
    assert_eq!(parse("prometheus-port=9100\n").0.ops.metrics_addr, None);
    assert!(parse("software-attribute\n").0.software.is_some());
    assert_eq!(parse("software-attribute\nprod\n").0.software, None);
    assert!(
        parse("allocation-default-address-family=keep\n")
            .0
            .keep_address_family
    );
    assert_error_at(
        parse_coturn("allocation-default-address-family=both\n", "t"),
        1,
        "ipv4, ipv6, keep",
    );
    assert_error_at(parse_coturn("realm\n", "t"), 1, "needs a value");
}

/// A plausible value for every option that takes one.
fn sample(name: &str) -> &'static str {
    match name {
        "listening-ip" | "relay-ip" | "external-ip" | "prometheus-address" => "192.0.2.1",
        "allowed-peer-ip" | "denied-peer-ip" => "192.0.2.0/24",
        "allocation-default-address-family" => "keep",
        "user" => "alice:secret",
        "rest-api-separator" => ";",
        "cert" => "/etc/c.pem",
        "pkey" => "/etc/k.pem",
        "cipher-list" => "ECDHE-RSA-AES128-GCM-SHA256",
        "log-file" => "/var/log/turn.log",
        "realm" | "static-auth-secret" => "x",
        "tls-listening-port" => "5349",
        "max-port" => "65535",
        _ => "5",
    }
}

/// Every option in coturn's table behaves as its class says, so the table and the
/// parser cannot drift apart.
#[test]
fn every_option_follows_its_class() {
    for opt in OPTIONS {
        let value = match opt.arg {
            Arg::Flag => String::new(),
            Arg::Value | Arg::Optional => format!("={}", sample(opt.name)),
        };
        let mut text = format!("{}{value}\n", opt.name);
        // Prerequisites so the option is checked alone.
        match opt.name {
            "lt-cred-mech" | "use-auth-secret" => text.push_str("static-auth-secret=s\n"),
            // no-dtls keeps the "DTLS not offered" note out of these reports.
            "cert" => text.push_str("pkey=/k.pem\nno-dtls\n"),
            "pkey" | "tls-listening-port" => text.push_str("cert=/c.pem\npkey=/k.pem\nno-dtls\n"),
            _ => {}
        }
        let result = parse_coturn(&text, "t");
        match opt.class {
            Class::Honoured => {
                let (_, report) = result.unwrap_or_else(|e| panic!("{}: {e}", opt.name));
                assert!(report.unsupported.is_empty(), "{}: {report:?}", opt.name);
                // These two differ only in context (no address given; no simple-log).
                if !["prometheus", "log-file"].contains(&opt.name) {
                    assert!(report.differs.is_empty(), "{}: {report:?}", opt.name);
                }
            }
            Class::Differs(how) => {
                let (_, report) = result.unwrap_or_else(|e| panic!("{}: {e}", opt.name));
                assert!(report.unsupported.is_empty(), "{}: {report:?}", opt.name);
                assert_eq!(report.differs, [format!("{} ({how})", opt.name)]);
            }
            Class::Unsupported(why) => {
                let (_, report) = result.unwrap_or_else(|e| panic!("{}: {e}", opt.name));
                assert_eq!(report.unsupported, [format!("{} ({why})", opt.name)]);
            }
            Class::Refused(fix) => {
                let err = result.expect_err(opt.name);
                assert_eq!((err.line, err.fix.as_str()), (Some(1), fix), "{}", opt.name);
            }
        }
    }
}

#[test]
fn option_table_has_no_duplicates() {
    let mut names: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len());
}

#[test]
fn no_multicast_peers_beats_allowed_ranges() {
    let (c, _) = parse(
        "no-multicast-peers\nallowed-peer-ip=0.0.0.0-255.255.255.255\nallowed-peer-ip=::/0\n\
         allowed-peer-ip=::ffff:0.0.0.0-::ffff:255.255.255.255\n",
    );
    let p = PeerPolicy::new(c.peers, Vec::new());
    let multicast = Verdict::Denied(DenyReason::Multicast);
    for addr in [
        "224.0.0.1",
        "239.255.255.255",
        "ff02::1",
        "::ffff:224.0.0.1",
    ] {
        assert_eq!(p.check(ip(addr)), multicast, "{addr}");
    }
    for addr in [
        "10.0.0.1",
        "223.255.255.255",
        "240.0.0.1",
        "fe80::1",
        "::ffff:10.0.0.1",
    ] {
        assert_eq!(p.check(ip(addr)), Verdict::Allowed, "{addr}");
    }
    // Without it, allowed-peer-ip wins over the built-in multicast entry, as in coturn.
    let (c, _) = parse("allowed-peer-ip=224.0.0.0/4\n");
    let p = PeerPolicy::new(c.peers, Vec::new());
    assert_eq!(p.check(ip("224.0.0.1")), Verdict::Allowed);
}

#[test]
fn flags_switched_off() {
    let (c, report) =
        parse("no-dtls=off\nno-tcp-relay=no\nno-software-attribute=false\nkeep-address-family=0\n");
    assert!(c.software.is_some());
    assert!(!c.keep_address_family);
    let names: Vec<&str> = report
        .unsupported
        .iter()
        .map(|s| s.split(' ').next().unwrap())
        .collect();
    assert_eq!(names, ["no-dtls=off", "no-tcp-relay=off"]);
    assert_eq!(parse("verbose\nverbose=off\n").0.ops.log_level, "info");
}
