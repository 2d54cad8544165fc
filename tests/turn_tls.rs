//! TLS and plain TCP on the one TLS port, and certificate reload on SIGHUP/SIGUSR2 without
//! dropping allocations, with a rustls client that records the certificate it was shown.
//!
//! Relay port ranges used here: k = 20..=24.

mod common;

use common::stun_client::*;
use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stun::message::METHOD_BINDING;

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Connects with TLS, trusting exactly `trusted`; returns the stream and the server's leaf
/// certificate.
fn tls_connect(addr: SocketAddr, trusted: &[&[u8]]) -> Result<(TlsStream, Vec<u8>), String> {
    let mut roots = RootCertStore::empty();
    for der in trusted {
        roots
            .add(CertificateDer::from(der.to_vec()))
            .map_err(|e| format!("root: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, tcp);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls.conn.is_handshaking() {
        if Instant::now() > deadline {
            return Err("TLS handshake timed out".into());
        }
        match tls.conn.complete_io(&mut tls.sock) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("TLS handshake: {e}")),
        }
    }
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no peer certificate")?;
    Ok((tls, leaf))
}

/// Writes cert and key through a rename, so the server never reads half a file.
fn install_cert(cert: &TestCert, cert_path: &Path, key_path: &Path) {
    for (from, to) in [(&cert.cert_path, cert_path), (&cert.key_path, key_path)] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp).expect("copy");
        std::fs::rename(&tmp, to).expect("rename");
    }
}

fn external_tls_server(k: u16, cert_path: &Path, key_path: &Path) -> Server {
    let conf = fixture(EXTERNAL_FIXTURE);
    let mut spec = ServerSpec::new(conf, k);
    spec.tls = true;
    // The relay checks use an echo socket on 127.0.0.2.
    spec.allow_loopback = true;
    spec.allowed_peer_ips = vec!["127.0.0.2".into()];
    spec.cert = Some((cert_path.to_path_buf(), key_path.to_path_buf()));
    Server::start(&spec)
}

fn binding_over(t: &mut Transport) -> bool {
    t.transact(&request(METHOD_BINDING, vec![]), Duration::from_secs(5))
        .as_ref()
        .is_some_and(is_success)
}

#[test]
fn tls_and_plain_tcp_share_the_tls_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = make_cert(dir.path(), "only");
    let server = external_tls_server(20, &cert.cert_path, &cert.key_path);

    let (tls, leaf) = tls_connect(server.tls_addr(), &[&cert.der]).expect("TLS connect");
    assert_eq!(leaf, cert.der, "server presented another certificate");
    let mut t = Transport::stream(Box::new(tls));
    assert!(binding_over(&mut t), "Binding over TLS on the TLS port");

    let mut plain = Transport::tcp(server.tls_addr());
    assert!(
        binding_over(&mut plain),
        "Binding over plain TCP on the TLS port"
    );

    let mut plain_main = Transport::tcp(server.addr());
    assert!(
        binding_over(&mut plain_main),
        "Binding over TCP on the main port"
    );

    // Both at once on one port: neither connection disturbs the other.
    assert!(binding_over(&mut t), "second Binding over TLS");
    assert!(binding_over(&mut plain), "second Binding over plain TCP");
}

/// A TLS connection that sees `want` within the deadline (new connections only).
fn wait_for_cert(addr: SocketAddr, trusted: &[&[u8]], want: &[u8]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok((_, leaf)) = tls_connect(addr, trusted) {
            if leaf == want {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Relays one datagram through the allocation to an echo socket and back.
fn relay_echo(c: &mut TurnClient, echo: &UdpSocket, tag: &str) {
    let echo_addr = echo.local_addr().expect("echo addr");
    c.send_indication(echo_addr, tag.as_bytes());
    let mut buf = [0u8; 256];
    let (n, from) = echo
        .recv_from(&mut buf)
        .expect("peer got nothing through the relay");
    assert_eq!(&buf[..n], tag.as_bytes());
    echo.send_to(&buf[..n], from).expect("echo back");
    let (src, data) = c
        .recv_data(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no Data indication back ({tag})"));
    assert_eq!(data, tag.as_bytes());
    if let Some(src) = src {
        assert_eq!(src, echo_addr);
    }
}

#[test]
fn cert_reload_on_signal_keeps_allocations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = make_cert(dir.path(), "a");
    let b = make_cert(dir.path(), "b");
    let cert_path = dir.path().join("fullchain.pem");
    let key_path = dir.path().join("privkey.pem");
    install_cert(&a, &cert_path, &key_path);
    let server = external_tls_server(21, &cert_path, &key_path);
    let conf = fixture(EXTERNAL_FIXTURE);
    let secret = conf_value(&conf, "static-auth-secret");
    let trusted: [&[u8]; 2] = [&a.der, &b.der];

    // An allocation made over TLS while cert A is served.
    let (tls, leaf) = tls_connect(server.tls_addr(), &trusted).expect("TLS connect");
    assert_eq!(leaf, a.der, "cert A expected first");
    let username = format!("{}:tls-user", unix_now() + 3600);
    let password = rest_password(&secret, &username);
    let mut c = TurnClient::new(Transport::stream(Box::new(tls)), &username, &password);
    c.allocate(None).expect("allocate over TLS");
    let echo = UdpSocket::bind("127.0.0.2:0").expect("bind echo");
    echo.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.create_permission(echo.local_addr().expect("addr"))
        .expect("permission for 127.0.0.2");
    relay_echo(&mut c, &echo, "before reload");

    // Swap the files for cert B and signal. coturn reloads on SIGUSR2 only.
    install_cert(&b, &cert_path, &key_path);
    let first_signal = match server.kind {
        ServerKind::Plenary => libc::SIGHUP,
        ServerKind::Coturn => libc::SIGUSR2,
    };
    server.signal(first_signal);
    assert!(
        wait_for_cert(server.tls_addr(), &trusted, &b.der),
        "new TLS connections still see the old certificate after signal {first_signal}"
    );

    // The allocation made before the reload is untouched.
    assert!(
        c.refresh(600).is_ok(),
        "Refresh on the old TLS connection failed"
    );
    relay_echo(&mut c, &echo, "after reload");

    // And back to A with the other signal.
    install_cert(&a, &cert_path, &key_path);
    server.signal(libc::SIGUSR2);
    assert!(
        wait_for_cert(server.tls_addr(), &trusted, &a.der),
        "SIGUSR2 did not reload the certificate"
    );
    assert!(
        c.refresh(600).is_ok(),
        "Refresh after the second reload failed"
    );
}

#[test]
fn broken_cert_on_reload_keeps_serving_the_old_one() {
    // An operator's half-written renewal must not take TLS down.
    let dir = tempfile::tempdir().expect("tempdir");
    let a = make_cert(dir.path(), "a");
    let cert_path = dir.path().join("fullchain.pem");
    let key_path = dir.path().join("privkey.pem");
    install_cert(&a, &cert_path, &key_path);
    let mut server = external_tls_server(22, &cert_path, &key_path);
    std::fs::write(&cert_path, "-----BEGIN CERTIFICATE-----\nnot base64\n").expect("write");
    let sig = match server.kind {
        ServerKind::Plenary => libc::SIGHUP,
        ServerKind::Coturn => libc::SIGUSR2,
    };
    server.signal(sig);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        server.is_alive(),
        "server died on a broken certificate reload"
    );
    let (_, leaf) = tls_connect(server.tls_addr(), &[&a.der]).expect("TLS after bad reload");
    assert_eq!(leaf, a.der, "the old certificate should still be served");
}
