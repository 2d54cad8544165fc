//! Quotas and limits from DESIGN.md, set through coturn's own option names: per-user and
//! total allocation quotas (486) and relay port exhaustion (508).
//!
//! Relay port ranges used here: k = 33..=35.

mod common;

use common::stun_client::*;
use common::*;

fn client(server: &Server, user: &str) -> TurnClient {
    let username = format!("{}:{user}", unix_now() + 3600);
    let password = rest_password(BARE_SECRET, &username);
    TurnClient::new(Transport::udp(server.addr()), &username, &password)
}

fn bare_server(k: u16, extra: &str, relay_ports: u16) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = ServerSpec::new(bare_conf(dir.path(), extra), k);
    spec.relay_ports = relay_ports;
    (Server::start(&spec), dir)
}

#[test]
fn user_quota_refuses_with_486_and_frees_on_deallocate() {
    let (server, _dir) = bare_server(33, "user-quota=1\n", 200);
    let mut a1 = client(&server, "alice");
    a1.allocate(None).expect("alice's first allocation");
    // Same REST username, new 5-tuple: over alice's quota.
    let mut a2 = TurnClient::new(
        Transport::udp(server.addr()),
        &a1.username.clone(),
        &a1.password.clone(),
    );
    assert_eq!(a2.allocate(None), Err(486), "second allocation of one user");
    let mut b = client(&server, "bob");
    assert!(b.allocate(None).is_ok(), "another user is not affected");
    // Deallocating gives the quota back (coturn frees it a moment later: bounded retries).
    assert_eq!(a1.refresh(0), Ok(0));
    let freed = (0..10).any(|_| {
        let mut a3 = TurnClient::new(
            Transport::udp(server.addr()),
            &a1.username.clone(),
            &a1.password.clone(),
        );
        let ok = a3.allocate(None).is_ok();
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        ok
    });
    assert!(freed, "quota not released within 2 s of Refresh 0");
}

#[test]
fn total_quota_refuses_further_allocations() {
    let (server, _dir) = bare_server(34, "total-quota=2\n", 200);
    let mut clients: Vec<TurnClient> = (0..3)
        .map(|i| client(&server, &format!("user{i}")))
        .collect();
    assert!(clients[0].allocate(None).is_ok());
    assert!(clients[1].allocate(None).is_ok());
    let third = clients[2].allocate(None);
    match server.kind {
        ServerKind::Plenary => assert_eq!(third, Err(486), "third allocation over total-quota=2"),
        ServerKind::Coturn => {
            assert!(
                third.is_err(),
                "coturn allowed an allocation over total-quota"
            );
            if third != Err(486) {
                note_difference(&format!("coturn answers total-quota with {third:?}"));
            }
        }
    }
}

#[test]
fn relay_port_exhaustion_gives_508() {
    const PORTS: u16 = 4;
    let (server, _dir) = bare_server(35, "", PORTS);
    let mut clients = Vec::new();
    let mut first_error = None;
    for i in 0..(PORTS + 3) {
        let mut c = client(&server, &format!("user{i}"));
        match c.allocate(None) {
            Ok(relayed) => {
                assert!(
                    (server.relay_range.0..=server.relay_range.1).contains(&relayed.port()),
                    "relayed port {} outside the configured range {:?}",
                    relayed.port(),
                    server.relay_range
                );
                clients.push(c);
            }
            Err(code) => {
                first_error = Some(code);
                break;
            }
        }
    }
    assert!(!clients.is_empty(), "no allocation at all");
    assert!(
        clients.len() <= usize::from(PORTS),
        "{} allocations from {PORTS} relay ports",
        clients.len()
    );
    assert_eq!(first_error, Some(508), "port exhaustion answer");
}
