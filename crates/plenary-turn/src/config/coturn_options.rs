//! Every option coturn's `turnserver` accepts (4.5 – 4.6, with the deprecated names still
//! found in old configs), and what Plenary does with each. Nothing is left out: a name
//! missing here is reported as an unknown option.

/// How the value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arg {
    /// Boolean flag; a bare name means true, `name=off` false (coturn's spellings).
    Flag,
    /// A value is required.
    Value,
    /// A value may be given; empty means coturn's default.
    Optional,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    /// Mapped into `TurnConfig` by the parser.
    Honoured,
    /// Accepted and named in the start-up line, with why ignoring it is harmless.
    Unsupported(&'static str),
    /// Stops the start: ignoring it would weaken security or open what the operator
    /// closed. The text is the fix.
    Refused(&'static str),
    /// Honoured, but its meaning differs from coturn's: named by `check-config` and at
    /// start, with the difference. (Differences that depend on the rest of the file, such
    /// as `allow-loopback-peers` next to loopback listening addresses, are found by the
    /// parser when the file is read.)
    Differs(&'static str),
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Opt {
    pub name: &'static str,
    pub arg: Arg,
    pub class: Class,
}

use Arg::{Flag, Optional, Value};
use Class::{Differs, Honoured, Refused, Unsupported};

const fn o(name: &'static str, arg: Arg, class: Class) -> Opt {
    Opt { name, arg, class }
}

const NO_CLI: &str = "Plenary has no telnet CLI";
const NO_WEB_ADMIN: &str = "Plenary has no web admin; metrics are on the Prometheus endpoint";
const NO_DHE: &str = "rustls has no DHE suites; not needed";
const NO_5780: &str = "Plenary has no RFC 5780 NAT-behaviour discovery; the port stays closed";
const SYSTEMD_LOGS: &str = "logs go to stderr (journald under systemd) or to log-file";
const TIMESTAMPS: &str = "log timestamps are always RFC 3339";
const NO_REDIRECT: &str = "no ALTERNATE-SERVER redirects; this server serves every client itself";
const NO_DB: &str = "Plenary reads no user database: move users to user= lines or the \
    shared secret to static-auth-secret=, then remove this line";
const PRIVS: &str = "Plenary does not switch user itself: start it as that user (systemd \
    User= and Group=) and remove this line";

pub(super) const OPTIONS: &[Opt] = &[
    // Listeners and relay addresses.
    o("listening-port", Value, Honoured),
    o("tls-listening-port", Value, Honoured),
    o("listening-ip", Value, Honoured),
    o("relay-ip", Value, Honoured),
    o("external-ip", Value, Honoured),
    o("relay-threads", Value, Differs(
        "sets the worker threads, each serving clients and relays on the shared port; 0 means 1",
    )),
    o("min-port", Value, Honoured),
    o("max-port", Value, Honoured),
    o("alt-listening-port", Value, Unsupported(NO_5780)),
    o("alt-tls-listening-port", Value, Unsupported(NO_5780)),
    o("no-rfc5780", Flag, Honoured),
    o("response-origin-only-with-rfc5780", Flag, Unsupported("not configurable in Plenary")),
    o("no-stun-backward-compatibility", Flag, Unsupported("not configurable in Plenary")),
    o("tcp-proxy-port", Value, Unsupported("no PROXY-protocol listener; the port stays closed")),
    o("aux-server", Value, Unsupported("auxiliary listeners are not opened; use listening-ip")),
    o("udp-self-balance", Flag, Unsupported("UDP is spread over cores with SO_REUSEPORT")),
    o("alternate-server", Value, Unsupported(NO_REDIRECT)),
    o("tls-alternate-server", Value, Unsupported(NO_REDIRECT)),
    o("listening-device", Value, Refused(
        "replace it with listening-ip=<the device's address>; ignoring it would listen on every interface",
    )),
    o("relay-device", Value, Refused(
        "replace it with relay-ip=<the device's address>; ignoring it would relay from every interface",
    )),
    o("no-udp", Flag, Refused(
        "Plenary always listens on UDP at listening-port: remove no-udp and close the port in the firewall if it must stay shut",
    )),
    o("no-tcp", Flag, Refused(
        "Plenary always listens on TCP at listening-port: remove no-tcp and close the port in the firewall if it must stay shut",
    )),
    o("no-tls", Flag, Honoured),
    o("no-dtls", Flag, Honoured),
    o("no-udp-relay", Flag, Refused(
        "Plenary relays over UDP only, so it cannot honour no-udp-relay: remove the line",
    )),
    o("no-tcp-relay", Flag, Honoured),
    o("stun-only", Flag, Refused(
        "Plenary always offers TURN relaying: remove stun-only, or keep a STUN-only server for this job",
    )),
    o("no-stun", Flag, Unsupported("Binding requests are always answered")),
    o("server-relay", Flag, Unsupported("permissions are always enforced (the safe choice)")),
    o("mobility", Flag, Unsupported("ICE mobility (MICE) is not implemented; clients re-allocate")),
    o("allocation-default-address-family", Value, Honoured),
    o("keep-address-family", Flag, Honoured),
    // Authentication.
    o("lt-cred-mech", Flag, Honoured),
    o("no-auth", Flag, Honoured),
    o("user", Value, Honoured),
    o("use-auth-secret", Flag, Honoured),
    o("static-auth-secret", Value, Honoured),
    o("rest-api-separator", Value, Honoured),
    o("realm", Value, Honoured),
    o("secret-ts-exp-time", Optional, Unsupported("deprecated in coturn, where it has no effect either")),
    o("server-name", Value, Unsupported("only used for oAuth, which Plenary does not offer")),
    o("oauth", Flag, Refused(
        "Plenary has no oAuth: use use-auth-secret with static-auth-secret (TURN REST, as BBB does) or user= lines",
    )),
    o("secure-stun", Flag, Refused(
        "Plenary answers Binding requests without authentication: remove secure-stun",
    )),
    o("check-origin-consistency", Flag, Refused(
        "Plenary does not check the ORIGIN attribute: remove the line",
    )),
    o("userdb", Value, Refused(NO_DB)),
    o("db", Value, Refused(NO_DB)),
    o("psql-userdb", Value, Refused(NO_DB)),
    o("sql-userdb", Value, Refused(NO_DB)),
    o("mysql-userdb", Value, Refused(NO_DB)),
    o("mongo-userdb", Value, Refused(NO_DB)),
    o("redis-userdb", Value, Refused(NO_DB)),
    o("secret-key-file", Value, Unsupported("only decrypts a database password; Plenary uses no database")),
    o("no-auth-pings", Flag, Honoured),
    o("no-dynamic-ip-list", Flag, Honoured),
    o("no-dynamic-realms", Flag, Honoured),
    // Quotas, limits and timers.
    o("user-quota", Value, Honoured),
    o("total-quota", Value, Honoured),
    o("max-bps", Value, Honoured),
    o("bps-capacity", Value, Refused(
        "Plenary has no server-wide bandwidth cap: bound each allocation with max-bps and their number with total-quota, then remove bps-capacity",
    )),
    o("stale-nonce", Optional, Honoured),
    o("max-allocate-lifetime", Optional, Honoured),
    o("channel-lifetime", Optional, Honoured),
    o("permission-lifetime", Optional, Honoured),
    o("max-allocate-timeout", Value, Unsupported("an Allocate completes in one exchange; nothing to time out")),
    // Peer filtering.
    o("no-multicast-peers", Flag, Honoured),
    o("no-loopback-peers", Flag, Honoured),
    o("allow-loopback-peers", Flag, Honoured),
    o("allowed-peer-ip", Value, Honoured),
    o("denied-peer-ip", Value, Honoured),
    // TLS.
    o("cert", Value, Honoured),
    o("pkey", Value, Honoured),
    o("cipher-list", Value, Differs(
        "OpenSSL names are mapped to rustls suites; names rustls lacks are skipped with a warning, and the TLS 1.3 suites are always offered",
    )),
    o("no-sslv2", Flag, Honoured),
    o("no-sslv3", Flag, Honoured),
    o("no-tlsv1", Flag, Honoured),
    o("no-tlsv1_1", Flag, Honoured),
    o("no-tlsv1_2", Flag, Refused(
        "Plenary cannot limit TLS to 1.3 yet (it offers TLS 1.2 with ECDHE AEAD suites only): remove no-tlsv1_2",
    )),
    o("pkey-pwd", Value, Refused(
        "encrypted private keys are not supported: decrypt the key once (openssl pkey -in KEY -out KEY.plain), point pkey= at it and remove pkey-pwd",
    )),
    o("CA-file", Value, Refused(
        "Plenary does not verify client certificates: remove CA-file, or put a TLS proxy that checks them in front",
    )),
    o("dh-file", Value, Unsupported(NO_DHE)),
    o("dh566", Flag, Unsupported(NO_DHE)),
    o("dh1066", Flag, Unsupported(NO_DHE)),
    o("dh2066", Flag, Unsupported(NO_DHE)),
    o("ec-curve-name", Value, Unsupported("rustls negotiates the key-exchange group itself")),
    o("raw-public-keys", Flag, Unsupported("TLS raw public keys are not offered; the certificate is used")),
    // Logging, metrics, process.
    o("verbose", Flag, Honoured),
    o("Verbose", Flag, Honoured),
    o("fingerprint", Flag, Honoured),
    o("log-file", Value, Honoured),
    o("no-stdout-log", Flag, Honoured),
    o("simple-log", Flag, Honoured),
    o("syslog", Flag, Unsupported(SYSTEMD_LOGS)),
    o("syslog-facility", Value, Unsupported(SYSTEMD_LOGS)),
    o("new-log-timestamp", Flag, Unsupported(TIMESTAMPS)),
    o("new-log-timestamp-format", Value, Unsupported(TIMESTAMPS)),
    o("log-binding", Flag, Unsupported("Binding requests are counted in metrics, not logged")),
    o("prometheus", Flag, Honoured),
    o("prometheus-port", Optional, Honoured),
    o("prometheus-address", Value, Honoured),
    o("prometheus-username-labels", Flag, Unsupported(
        "metrics never carry user names (unbounded label sets)",
    )),
    o("redis-statsdb", Value, Unsupported("no Redis statistics; use the Prometheus endpoint")),
    o("no-software-attribute", Flag, Honoured),
    o("prod", Flag, Honoured),
    o("software-attribute", Flag, Honoured),
    o("daemon", Flag, Unsupported("Plenary runs in the foreground; systemd supervises it")),
    o("pidfile", Value, Unsupported("no pid file is written; systemd tracks the process")),
    o("proc-user", Value, Refused(PRIVS)),
    o("proc-group", Value, Refused(PRIVS)),
    o("ne", Value, Unsupported("coturn's internal network-engine choice")),
    o("version", Flag, Unsupported("prints coturn's version; meaningless in a config file")),
    o("acme-redirect", Value, Unsupported(
        "TURN ports serve no HTTP; answer ACME challenges from the web server",
    )),
    o("respond-http-unsupported", Flag, Unsupported(
        "connections that are neither STUN nor TLS are closed",
    )),
    // Admin surfaces.
    o("no-cli", Flag, Honoured),
    o("cli-ip", Value, Unsupported(NO_CLI)),
    o("cli-port", Value, Unsupported(NO_CLI)),
    o("cli-password", Value, Unsupported(NO_CLI)),
    o("cli-max-output-sessions", Value, Unsupported(NO_CLI)),
    o("web-admin", Flag, Unsupported(NO_WEB_ADMIN)),
    o("web-admin-ip", Value, Unsupported(NO_WEB_ADMIN)),
    o("web-admin-port", Value, Unsupported(NO_WEB_ADMIN)),
    o("web-admin-listen-on-workers", Flag, Unsupported(NO_WEB_ADMIN)),
];

/// coturn's one-letter aliases (`-V`, `-p 3478`, ...), for configs pasted from a command line.
const SHORT: &[(char, &str)] = &[
    ('d', "listening-device"),
    ('p', "listening-port"),
    ('L', "listening-ip"),
    ('E', "relay-ip"),
    ('X', "external-ip"),
    ('i', "relay-device"),
    ('m', "relay-threads"),
    ('l', "log-file"),
    ('r', "realm"),
    ('u', "user"),
    ('b', "userdb"),
    ('B', "bps-capacity"),
    ('e', "psql-userdb"),
    ('M', "mysql-userdb"),
    ('J', "mongo-userdb"),
    ('N', "redis-userdb"),
    ('O', "redis-statsdb"),
    ('q', "user-quota"),
    ('Q', "total-quota"),
    ('s', "max-bps"),
    ('C', "rest-api-separator"),
    ('K', "keep-address-family"),
    ('A', "allocation-default-address-family"),
    ('v', "verbose"),
    ('V', "Verbose"),
    ('o', "daemon"),
    ('f', "fingerprint"),
    ('a', "lt-cred-mech"),
    ('z', "no-auth"),
    ('S', "stun-only"),
];

/// Finds an option by its long name (case matters: `verbose` and `Verbose` differ) or,
/// for a single character, by its short alias.
pub(super) fn lookup(name: &str) -> Option<&'static Opt> {
    let mut chars = name.chars();
    let long = match (chars.next(), chars.next()) {
        (Some(c), None) => SHORT.iter().find(|&&(s, _)| s == c)?.1,
        _ => name,
    };
    OPTIONS.iter().find(|o| o.name == long)
}
