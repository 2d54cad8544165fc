//! TLS and transport settings of the link.
//!
//! Each node makes a throwaway self-signed certificate: membership is proved by the
//! cluster-secret tag (see `auth`), which is bound to this TLS session, so the client accepts
//! any certificate but still checks the handshake signature made with it. That check keeps the
//! exporter bound to a key the server really holds.

use std::sync::Arc;
use std::time::Duration;

use plenary_ops::tls::AnyCertSignedHandshake;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{ALPN, SERVER_NAME};

/// A peer silent this long is dead (the design's 3 s goal).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Keeps an idle but healthy link from hitting the idle timeout, and loss detection warm.
pub const KEEP_ALIVE: Duration = Duration::from_millis(500);
/// Room for bursts of forwarded media (a few hundred video packets) on the receiving side.
const DATAGRAM_BUFFER: usize = 4 << 20;
/// What may wait for the congestion window on the sending side: bounded so a slow link
/// drops media (counted) rather than delaying all of it.
const DATAGRAM_SEND_BUFFER: usize = 1 << 20;
/// Congestion window at start. Links join servers, and a room's media starts at full rate
/// when the link comes up: with QUIC's default ~14 KB window, slow start queued the first
/// seconds of video for hundreds of milliseconds.
const INITIAL_WINDOW: u64 = 1 << 20;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> anyhow::Result<Arc<TransportConfig>> {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(IdleTimeout::try_from(IDLE_TIMEOUT)?))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER)
        // One control stream, opened by the connector; nothing else.
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    let mut cc = quinn::congestion::CubicConfig::default();
    cc.initial_window(INITIAL_WINDOW);
    t.congestion_controller_factory(Arc::new(cc));
    Ok(Arc::new(t))
}

pub(super) fn server_config() -> anyhow::Result<quinn::ServerConfig> {
    let cert = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    cfg.transport_config(transport()?);
    Ok(cfg)
}

pub(super) fn client_config() -> anyhow::Result<quinn::ClientConfig> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertSignedHandshake::new(provider, false)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    cfg.transport_config(transport()?);
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::CertificateDer;
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[test]
    fn configs_build() {
        assert!(server_config().is_ok());
        assert!(client_config().is_ok());
    }

    /// A handshake-style signature by the certificate's key, as rustls would receive it.
    fn signed(msg: &[u8]) -> (CertificateDer<'static>, Vec<u8>) {
        let cert =
            rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()]).expect("test cert");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
        let key = provider()
            .key_provider
            .load_private_key(key)
            .expect("ring loads rcgen keys");
        let signer = key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .expect("P-256 key");
        let sig = signer.sign(msg).expect("sign");
        // DigitallySignedStruct wire form: scheme, u16 length, signature.
        let mut dss = u16::from(signer.scheme()).to_be_bytes().to_vec();
        dss.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        dss.extend_from_slice(&sig);
        (cert.cert.der().clone(), dss)
    }

    fn dss(bytes: &[u8]) -> DigitallySignedStruct {
        use rustls::internal::msgs::codec::{Codec, Reader};
        DigitallySignedStruct::read(&mut Reader::init(bytes)).expect("well-formed")
    }

    #[test]
    fn verifier_accepts_any_cert_but_checks_the_handshake_signature() {
        let v = AnyCertSignedHandshake::new(provider(), false);
        let (cert, good) = signed(b"transcript");
        assert!(v
            .verify_tls13_signature(b"transcript", &cert, &dss(&good))
            .is_ok());
        assert!(v
            .verify_tls13_signature(b"other", &cert, &dss(&good))
            .is_err());
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(v
            .verify_tls13_signature(b"transcript", &cert, &dss(&bad))
            .is_err());
        // Signed by another key than the certificate's.
        let (other_cert, _) = signed(b"x");
        assert!(v
            .verify_tls13_signature(b"transcript", &other_cert, &dss(&good))
            .is_err());
        assert!(v
            .verify_tls12_signature(b"transcript", &cert, &dss(&good))
            .is_err());
    }
}
