//! coturn habits that must not break silently (issue 15): `allow-loopback-peers` alone opens
//! loopback peers as in coturn, and what still differs (the server's own addresses, the
//! built-in peer list, metrics on loopback) is named by `check-config` and at start, with the
//! line to add.
//!
//! Relay port ranges used here: k = 46.

mod common;

use common::stun_client::*;
use common::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

fn check_config(conf: &std::path::Path) -> (bool, String) {
    let mut cmd = Command::new(plenary_bin());
    cmd.arg("check-config").arg("--coturn-conf").arg(conf);
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(20));
    assert!(!timed_out, "check-config hung");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn check_config_names_every_difference_with_the_line_to_add() {
    let dir = tempfile::tempdir().expect("tempdir");
    // bare_conf listens and relays on 127.0.0.1 and has no denied-peer-ip.
    let conf = bare_conf(
        dir.path(),
        "allow-loopback-peers\nprometheus\nlog-file=/var/log/turn.log\n",
    );
    let (ok, text) = check_config(&conf);
    assert!(ok, "{text}");
    assert!(text.contains(": OK"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("coturn options that mean something else in Plenary:"))
        .unwrap_or_else(|| panic!("no differences line:\n{text}"));
    for expected in [
        "allow-loopback-peers (opens loopback peers as in coturn, but not this server's own addresses 127.0.0.1: add allowed-peer-ip=127.0.0.1",
        "denied-peer-ip (Plenary also refuses private",
        "prometheus (metrics bind to 127.0.0.1",
        "log-file (written to exactly this path",
    ] {
        assert!(line.contains(expected), "missing `{expected}` in:\n{line}");
    }

    // BBB's installer file: deny-all plus its own address allowed, no loopback flag. Nothing
    // it says means something else in Plenary.
    let (ok, text) = check_config(&fixture(INSTALL_FIXTURE));
    assert!(ok, "{text}");
    assert!(
        !text.contains("mean something else"),
        "BBB's installer config has no difference to report:\n{text}"
    );
}

#[test]
fn allow_loopback_peers_alone_relays_to_loopback_and_the_start_log_says_what_stays_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = bare_conf(dir.path(), "allow-loopback-peers\n");
    let server = Server::start(&ServerSpec::new(conf, 46));
    let echo = UdpSocket::bind("127.0.0.2:0").expect("bind echo on 127.0.0.2");
    echo.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let echo_addr = echo.local_addr().expect("addr");

    let username = format!("{}:loop", unix_now() + 3600);
    let password = rest_password(BARE_SECRET, &username);
    let mut c = TurnClient::new(Transport::udp(server.addr()), &username, &password);
    c.allocate(None).expect("allocate");
    assert_eq!(
        c.create_permission(echo_addr),
        Ok(()),
        "allow-loopback-peers alone opens 127.0.0.2, as in coturn"
    );
    c.send_indication(echo_addr, b"through the relay");
    let mut buf = [0u8; 64];
    let (n, _) = echo
        .recv_from(&mut buf)
        .expect("the loopback peer got the relayed datagram");
    assert_eq!(&buf[..n], b"through the relay");

    let own = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
    let got = c.create_permission(own);
    match server.kind {
        ServerKind::Plenary => {
            assert_eq!(got, Err(403), "the server's own address stays closed");
            let log = server.log();
            assert!(
                log.contains("add allowed-peer-ip=127.0.0.1 to relay to peers there"),
                "the start-up log names the line to add:\n{log}"
            );
        }
        ServerKind::Coturn => note_difference(&format!(
            "coturn relays to its own address 127.0.0.1 with allow-loopback-peers: {got:?}"
        )),
    }
}
