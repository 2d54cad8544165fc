//! The webrtc-rs `turn` crate's client (what Rust WebRTC stacks use) against the server:
//! allocate, create a permission, send to a UDP echo socket on loopback, and read the echo
//! back through the relay, with BBB REST credentials printed by `plenary cred`.
//!
//! Relay port ranges used here: k = 10..=11.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

/// Echoes every datagram back to its sender, a bounded number of times.
async fn echo_server(sock: UdpSocket, max: usize) {
    let mut buf = vec![0u8; 2048];
    for _ in 0..max {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let _ = sock.send_to(&buf[..n], from).await;
    }
}

async fn relay_round_trip(server: &Server, secret: &str, echo_ip: &str) {
    let (username, password) = plenary_cred(secret, Some("webrtc-rs"), 600);
    let echo = UdpSocket::bind(format!("{echo_ip}:0"))
        .await
        .expect("bind echo");
    let echo_addr = echo.local_addr().expect("echo addr");
    let echo_task = tokio::spawn(echo_server(echo, 64));

    let conn = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind client"));
    let server_addr = server.addr().to_string();
    let client = Client::new(ClientConfig {
        stun_serv_addr: server_addr.clone(),
        turn_serv_addr: server_addr,
        username,
        password,
        realm: String::new(), // learned from the 401
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await
    .expect("client");
    client.listen().await.expect("listen");

    // A Binding first: the mapped address is our own loopback socket.
    let mapped = client.send_binding_request().await.expect("binding");
    assert!(mapped.ip().is_loopback(), "mapped address {mapped}");

    let relay = client.allocate().await.expect("allocate");
    let relayed: SocketAddr = relay.local_addr().expect("relayed address");
    assert!(
        relayed.port() >= server.relay_range.0 && relayed.port() <= server.relay_range.1,
        "relayed port {} outside --min-port/--max-port {:?}",
        relayed.port(),
        server.relay_range
    );

    // send_to creates the permission (and later a channel) for the echo peer.
    let mut buf = vec![0u8; 2048];
    for i in 0..10u32 {
        let msg = format!("plenary relay round trip {i}");
        relay
            .send_to(msg.as_bytes(), echo_addr)
            .await
            .expect("send through relay");
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), relay.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no echo {i} back through the relay"))
            .expect("recv");
        assert_eq!(from, echo_addr, "echo came from the wrong peer");
        assert_eq!(&buf[..n], msg.as_bytes(), "echo {i} corrupted");
    }
    relay.close().await.expect("close relay (Refresh 0)");
    client.close().await.expect("close client");
    echo_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_client_relays_to_echo_on_install_conf() {
    let conf = fixture(INSTALL_FIXTURE);
    let secret = conf_value(&conf, "static-auth-secret");
    let mut spec = ServerSpec::new(conf, 10);
    spec.allow_loopback = true; // the fixture allows 127.0.0.1 (BBB's own media server)
    let server = Server::start(&spec);
    tokio::time::timeout(
        Duration::from_secs(30),
        relay_round_trip(&server, &secret, "127.0.0.1"),
    )
    .await
    .expect("round trip within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_client_relays_to_echo_on_external_conf() {
    let conf = fixture(EXTERNAL_FIXTURE);
    let secret = conf_value(&conf, "static-auth-secret");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = make_cert(dir.path(), "server");
    let mut spec = ServerSpec::new(conf, 11);
    spec.allow_loopback = true;
    spec.allowed_peer_ips = vec!["127.0.0.2".into()];
    spec.tls = true;
    spec.cert = Some((cert.cert_path, cert.key_path));
    let server = Server::start(&spec);
    // 127.0.0.2: loopback, but not the server's own address.
    tokio::time::timeout(
        Duration::from_secs(30),
        relay_round_trip(&server, &secret, "127.0.0.2"),
    )
    .await
    .expect("round trip within 30 s");
}
