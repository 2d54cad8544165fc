//! SIGTERM drains: new Allocates are refused with 508 while existing allocations keep
//! relaying until they end, then the process exits by itself.
//!
//! Relay port ranges used here: k = 28..=29.

mod common;

use common::stun_client::*;
use common::*;
use std::net::UdpSocket;
use std::time::Duration;

fn client(server: &Server, secret: &str, user: &str) -> TurnClient {
    let username = format!("{}:{user}", unix_now() + 3600);
    let password = rest_password(secret, &username);
    TurnClient::new(Transport::udp(server.addr()), &username, &password)
}

fn relay_echo(c: &mut TurnClient, echo: &UdpSocket, tag: &str) {
    let echo_addr = echo.local_addr().expect("echo addr");
    c.send_indication(echo_addr, tag.as_bytes());
    let mut buf = [0u8; 256];
    let (n, from) = echo
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("peer got nothing through the relay ({tag}): {e}"));
    assert_eq!(&buf[..n], tag.as_bytes());
    echo.send_to(&buf[..n], from).expect("echo back");
    let (_, data) = c
        .recv_data(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no Data indication back ({tag})"));
    assert_eq!(data, tag.as_bytes());
}

#[test]
fn sigterm_drains_then_exits() {
    let conf = fixture(INSTALL_FIXTURE);
    let secret = conf_value(&conf, "static-auth-secret");
    let mut spec = ServerSpec::new(conf, 28);
    spec.allow_loopback = true;
    let mut server = Server::start(&spec);

    let echo = UdpSocket::bind("127.0.0.1:0").expect("bind echo");
    echo.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut old = client(&server, &secret, "before-drain");
    old.allocate(None).expect("allocate before SIGTERM");
    old.create_permission(echo.local_addr().expect("addr"))
        .expect("permission (allowed-peer-ip=127.0.0.1)");
    relay_echo(&mut old, &echo, "before SIGTERM");

    server.signal(libc::SIGTERM);
    if server.kind == ServerKind::Coturn {
        // coturn stops at once on SIGTERM: there is no drain to test.
        let status = server.wait_exit(Duration::from_secs(10));
        note_difference(&format!(
            "coturn exits on SIGTERM without draining: {status:?}"
        ));
        return;
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.is_alive(),
        "server exited at once with an allocation still live"
    );

    let mut newcomer = client(&server, &secret, "during-drain");
    assert_eq!(
        newcomer.allocate(None),
        Err(508),
        "new Allocate during drain"
    );

    relay_echo(&mut old, &echo, "during drain");
    assert!(
        old.refresh(600).is_ok(),
        "Refresh of an existing allocation during drain"
    );

    // The last allocation ends: nothing is left to drain.
    assert_eq!(old.refresh(0), Ok(0), "deallocation (Refresh 0)");
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some(),
        "server still running 20 s after its last allocation ended"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "drain should end with a clean exit: {status:?}"
    );
}

#[test]
fn sigterm_with_no_allocations_exits_promptly() {
    let conf = fixture(INSTALL_FIXTURE);
    let spec = ServerSpec::new(conf, 29);
    let mut server = Server::start(&spec);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some(),
        "server ignored SIGTERM with nothing to drain"
    );
    if server.kind == ServerKind::Plenary {
        assert!(
            status.is_some_and(|s| s.success()),
            "exit status {status:?}"
        );
    }
}
