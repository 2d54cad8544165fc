//! A hand-driven peer speaking the link protocol from its description (not through
//! `plenary_cascade::link`), to send what a well-behaved node never would.
#![allow(dead_code)] // each test binary uses part of it

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use plenary_cascade::auth::{self, Role, EXPORTER_LABEL};
use plenary_cascade::link::{ALPN, SERVER_NAME};
use plenary_cascade::wire::{encode_control, ControlMsg};
use plenary_ops::tls::AnyCertSignedHandshake;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, RecvStream, SendStream};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct RawPeer {
    conn: quinn::Connection,
    send: Option<SendStream>,
    _recv: Option<RecvStream>,
    _ep: quinn::Endpoint,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_millis(500)));
    Arc::new(t)
}

fn client_endpoint() -> quinn::Endpoint {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertSignedHandshake::new(provider(), false)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut cfg =
        quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).expect("quic tls")));
    cfg.transport_config(transport());
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("bind");
    ep.set_default_client_config(cfg);
    ep
}

fn exporter(conn: &quinn::Connection) -> [u8; 32] {
    let mut out = [0; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .expect("exporter");
    out
}

/// An endpoint of `node` on a free loopback port (what every link test starts from).
pub fn bind(
    node: &str,
    secret: &[u8],
) -> (
    plenary_cascade::link::Endpoint,
    tokio::sync::mpsc::Receiver<plenary_cascade::link::Link>,
) {
    plenary_cascade::link::Endpoint::bind(plenary_cascade::link::LinkConfig {
        node: node.into(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        secret: secret.to_vec(),
    })
    .expect("bind")
}

impl RawPeer {
    /// QUIC handshake, then nothing: no stream, no tag.
    pub async fn handshake_only(addr: SocketAddr) -> Self {
        let ep = client_endpoint();
        let conn = ep
            .connect(addr, SERVER_NAME)
            .expect("connect")
            .await
            .expect("handshake");
        RawPeer {
            conn,
            send: None,
            _recv: None,
            _ep: ep,
        }
    }

    /// Opens the control stream and sends `tag` as the connector's tag.
    pub async fn connect_with_tag(addr: SocketAddr, tag: [u8; 32]) -> Self {
        Self::send_tag(Self::handshake_only(addr).await, tag).await
    }

    /// A full, correct opening as node `node`.
    pub async fn connect(addr: SocketAddr, secret: &[u8], node: &str) -> Self {
        let peer = Self::handshake_only(addr).await;
        let exp = exporter(&peer.conn);
        let tag = auth::tag(secret, Role::Connector, &exp);
        let mut peer = Self::send_tag(peer, tag).await;
        let recv = peer._recv.as_mut().expect("stream");
        let mut theirs = [0; 32];
        recv.read_exact(&mut theirs).await.expect("their tag");
        assert!(auth::verify(secret, Role::Acceptor, &exp, &theirs));
        let mut len = [0; 4];
        recv.read_exact(&mut len).await.expect("hello length");
        let mut hello = vec![0; u32::from_be_bytes(len) as usize];
        recv.read_exact(&mut hello).await.expect("hello");
        let mut out = Vec::new();
        encode_control(&ControlMsg::Hello { node: node.into() }, &mut out);
        peer.send_raw(&out).await;
        peer
    }

    async fn send_tag(mut peer: RawPeer, tag: [u8; 32]) -> Self {
        let (mut send, recv) = peer.conn.open_bi().await.expect("open");
        send.write_all(&tag).await.expect("write tag");
        peer.send = Some(send);
        peer._recv = Some(recv);
        peer
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let send = self.send.as_mut().expect("stream open");
        send.write_all(bytes).await.expect("write");
    }

    /// One frame with a correct length prefix around `body`.
    pub async fn send_frame(&mut self, body: &[u8]) {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        self.send_raw(&frame).await;
    }

    /// The application close code the other side closed with.
    pub async fn close_code(&self) -> Option<u32> {
        match self.conn.closed().await {
            ConnectionError::ApplicationClosed(c) => u32::try_from(c.error_code.into_inner()).ok(),
            _ => None,
        }
    }
}

/// A listener without the secret that answers a connector by echoing its tag back.
pub fn reflecting_server() -> SocketAddr {
    let cert = rcgen::generate_simple_self_signed(vec![SERVER_NAME.into()]).expect("cert");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("cert");
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(tls).expect("quic tls"),
    ));
    cfg.transport_config(transport());
    let ep = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = ep.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                    return;
                };
                let mut tag = [0; 32];
                if recv.read_exact(&mut tag).await.is_ok() {
                    let _ = send.write_all(&tag).await;
                }
                conn.closed().await;
            });
        }
    });
    addr
}
