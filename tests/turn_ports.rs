//! One owner per listening port, with real `plenary turn` processes on loopback: the workers
//! of one server share its port (SO_REUSEPORT), but a second server on a port already served
//! refuses to start with "address in use", also while the first is draining, so the kernel
//! never splits clients between a live server and one answering 508.
//!
//! Relay port ranges used here: k = 40..=44.

mod common;
mod turn_proc;

use common::stun_client::*;
use common::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use turn_proc::Proc;

fn turn_cmd(conf: &Path, port: u16, k: u16) -> Command {
    let (min, max) = relay_range(k);
    let mut c = Command::new(plenary_bin());
    c.arg("turn")
        .arg("--coturn-conf")
        .arg(conf)
        .args(["--listening-port", &port.to_string()])
        .args([
            "--min-port",
            &min.to_string(),
            "--max-port",
            &max.to_string(),
        ])
        .args(["--workers", "2", "--no-metrics"]);
    c
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// The second server must exit promptly, non-zero, saying why in words an operator knows.
fn assert_refused(second: &mut Proc, port: u16) {
    let status = second.wait_exit(Duration::from_secs(15));
    let log = second.log();
    assert!(
        status.is_some_and(|s| !s.success()),
        "a second server on port {port} did not refuse to start ({status:?}):\n{log}"
    );
    assert!(
        log.contains("address in use") && log.contains(&format!("port {port}")),
        "the refusal does not say `address in use` for port {port}:\n{log}"
    );
}

fn client(addr: SocketAddr, user: &str) -> TurnClient {
    let username = format!("{}:{user}", unix_now() + 3600);
    let password = rest_password(BARE_SECRET, &username);
    TurnClient::new(Transport::udp(addr), &username, &password)
}

#[test]
fn a_second_server_on_a_served_port_refuses_and_the_workers_share_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = bare_conf(dir.path(), "");
    let port = free_port();
    let mut first = Proc::spawn(turn_cmd(&conf, port, 40), dir.path(), "first");
    first.wait_stun(loopback(port));

    let mut second = Proc::spawn(turn_cmd(&conf, port, 41), dir.path(), "second");
    assert_refused(&mut second, port);

    // The first server's two workers still share the port: clients from many source ports
    // (spread over both workers by the kernel's hash) are all answered.
    let answered = (0..32)
        .filter(|_| udp_binding(loopback(port), Duration::from_secs(2)).is_some())
        .count();
    assert_eq!(answered, 32, "Binding answers from the first server");
    assert!(first.is_alive(), "the first server died:\n{}", first.log());
}

#[test]
fn a_draining_server_keeps_its_port_until_it_has_exited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = bare_conf(dir.path(), "");
    let port = free_port();
    let mut old = Proc::spawn(turn_cmd(&conf, port, 42), dir.path(), "old");
    old.wait_stun(loopback(port));
    let mut held = client(loopback(port), "held");
    held.allocate(None).expect("allocate before the drain");

    old.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(old.is_alive(), "exited with an allocation live");
    // A restart that does not wait: refused, so no client is ever hashed to a server that
    // answers 508 while the other one serves.
    let mut early = Proc::spawn(turn_cmd(&conf, port, 43), dir.path(), "early");
    assert_refused(&mut early, port);
    assert_eq!(
        client(loopback(port), "late").allocate(None),
        Err(508),
        "the draining server answers new clients itself"
    );
    assert!(held.refresh(600).is_ok(), "the live allocation still works");

    // The last allocation ends, the old server exits, and the port is free for the new one.
    assert_eq!(held.refresh(0), Ok(0));
    let status = old.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "old exit: {status:?}");
    let mut new = Proc::spawn(turn_cmd(&conf, port, 43), dir.path(), "new");
    new.wait_stun(loopback(port));
    client(loopback(port), "after")
        .allocate(None)
        .expect("the new server takes allocations");
}

#[test]
fn two_servers_started_at_once_leave_one_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = bare_conf(dir.path(), "");
    let port = free_port();
    let mut a = Proc::spawn(turn_cmd(&conf, port, 44), dir.path(), "a");
    let mut b = Proc::spawn(turn_cmd(&conf, port, 41), dir.path(), "b");
    // Whichever lost exits; the other serves.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while a.is_alive() && b.is_alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (winner, loser) = if a.is_alive() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert_refused(loser, port);
    winner.wait_stun(loopback(port));
    std::thread::sleep(Duration::from_millis(500));
    assert!(winner.is_alive(), "no server left:\n{}", winner.log());
}
