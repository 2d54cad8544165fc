use super::*;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn names(list: &str) -> Vec<String> {
    vec![list.to_owned()]
}

fn suite_names(sel: &CipherSelection) -> Vec<String> {
    sel.suites
        .iter()
        .map(|s| format!("{:?}", s.suite()))
        .collect()
}

/// The cipher list BBB's installer writes for coturn.
const BBB_LIST: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

#[test]
fn bbb_cipher_list_maps_fully_and_keeps_tls13() {
    let sel = select_cipher_suites(&names(BBB_LIST)).expect("maps");
    assert!(sel.warnings.is_empty(), "{:?}", sel.warnings);
    assert_eq!(sel.suites.iter().filter(|s| s.tls13().is_none()).count(), 6);
    assert_eq!(sel.suites.iter().filter(|s| s.tls13().is_some()).count(), 3);
    assert_eq!(sel.versions.len(), 2);
}

#[test]
fn unknown_names_are_reported_not_fatal() {
    let sel = select_cipher_suites(&names(
        "DHE-RSA-AES256-SHA:ECDHE-RSA-AES128-GCM-SHA256,AES128-SHA",
    ))
    .expect("maps");
    assert_eq!(sel.warnings.len(), 2, "{:?}", sel.warnings);
    assert!(sel.warnings[0].contains("DHE-RSA-AES256-SHA"));
    let tls12: Vec<_> = sel.suites.iter().filter(|s| s.tls13().is_none()).collect();
    assert_eq!(tls12.len(), 1);
    assert_eq!(
        format!("{:?}", tls12[0].suite()),
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    );
}

#[test]
fn nothing_usable_is_an_error() {
    let err = select_cipher_suites(&names("DHE-RSA-AES256-SHA:RC4-MD5")).expect_err("no suite");
    let msg = err.to_string();
    assert!(
        msg.contains("RC4-MD5") && msg.contains("ECDHE-RSA-AES128-GCM-SHA256"),
        "{msg}"
    );
}

#[test]
fn tls13_only_list_turns_tls12_off() {
    let sel = select_cipher_suites(&names("TLS_AES_256_GCM_SHA384")).expect("maps");
    assert_eq!(suite_names(&sel), ["TLS13_AES_256_GCM_SHA384"]);
    assert_eq!(sel.versions.len(), 1);
    assert_eq!(sel.warnings.len(), 1);
}

#[test]
fn defaults_exclusions_and_iana_names() {
    let all = select_cipher_suites(&[]).expect("empty");
    assert_eq!(all.suites.len(), 9);
    let excl = select_cipher_suites(&names("!aNULL:!MD5:@STRENGTH")).expect("exclusions only");
    assert_eq!(excl.suites.len(), 9);
    assert!(excl.warnings.is_empty());
    let high = select_cipher_suites(&names("HIGH:!aNULL")).expect("keyword");
    assert_eq!(high.suites.len(), 9);
    let iana = select_cipher_suites(&[
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
        "\"ecdhe-rsa-aes256-gcm-sha384\"".into(),
    ])
    .expect("iana + lowercase + quotes");
    assert!(iana.warnings.is_empty(), "{:?}", iana.warnings);
    assert_eq!(
        iana.suites.iter().filter(|s| s.tls13().is_none()).count(),
        2
    );
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "plenary-tls-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a new self-signed cert for "localhost" to `dir`; returns its DER.
fn write_cert(dir: &Path) -> CertificateDer<'static> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).expect("write key");
    ck.cert.der().clone()
}

fn tls_config(dir: &Path, ciphers: &str) -> TlsConfig {
    TlsConfig {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        cipher_list: if ciphers.is_empty() {
            vec![]
        } else {
            names(ciphers)
        },
    }
}

/// Handshakes over loopback, trusting `root`; returns the server's leaf cert and the suite.
async fn handshake(
    acceptor: &TlsAcceptor,
    root: &CertificateDer<'static>,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<(CertificateDer<'static>, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).map_err(|e| e.to_string())?;
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let acceptor = acceptor.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 4];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        tls.write_all(&b).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    });
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 4];
    tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    assert_eq!(&b, b"ping");
    server.await.map_err(|e| e.to_string())??;
    let (_, conn) = tls.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no cert")?;
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .ok_or("no suite")?;
    Ok((leaf, suite))
}

#[tokio::test]
async fn serves_tls12_and_tls13_and_reloads_the_certificate() {
    let dir = TempDir::new();
    let first = write_cert(&dir.0);
    let setup = build_tls(&tls_config(&dir.0, BBB_LIST)).expect("build");
    assert!(setup.warnings.is_empty());

    let (leaf, suite) = handshake(&setup.acceptor, &first, &[&rustls::version::TLS13])
        .await
        .expect("tls13");
    assert_eq!(leaf, first);
    assert!(suite.starts_with("TLS13_"), "{suite}");
    let (_, suite) = handshake(&setup.acceptor, &first, &[&rustls::version::TLS12])
        .await
        .expect("tls12");
    assert!(suite.starts_with("TLS_ECDHE_ECDSA_"), "{suite}");

    // Reload picks up a new certificate for new handshakes.
    let second = write_cert(&dir.0);
    setup.resolver.reload().expect("reload");
    let (leaf, _) = handshake(&setup.acceptor, &second, &[&rustls::version::TLS13])
        .await
        .expect("after reload");
    assert_eq!(leaf, second);

    // A broken file keeps the current certificate.
    std::fs::write(dir.0.join("cert.pem"), "not a pem").expect("write");
    assert!(matches!(
        setup.resolver.reload(),
        Err(TlsError::NoCertificate { .. })
    ));
    let (leaf, _) = handshake(&setup.acceptor, &second, &[&rustls::version::TLS13])
        .await
        .expect("still serving");
    assert_eq!(leaf, second);
}

#[tokio::test]
async fn cipher_list_restricts_tls12_suites() {
    let dir = TempDir::new();
    let cert = write_cert(&dir.0);
    let setup = build_tls(&tls_config(&dir.0, "ECDHE-ECDSA-CHACHA20-POLY1305")).expect("build");
    let (_, suite) = handshake(&setup.acceptor, &cert, &[&rustls::version::TLS12])
        .await
        .expect("tls12");
    assert_eq!(suite, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256");
}

#[test]
fn file_errors_are_typed() {
    let dir = TempDir::new();
    let missing = build_tls(&tls_config(&dir.0, "")).expect_err("missing files");
    assert!(matches!(missing, TlsError::Read { .. }), "{missing}");

    write_cert(&dir.0);
    std::fs::write(dir.0.join("key.pem"), "").expect("write");
    assert!(matches!(
        build_tls(&tls_config(&dir.0, "")),
        Err(TlsError::NoPrivateKey { .. })
    ));

    // A key that does not belong to the certificate.
    write_cert(&dir.0);
    let other = rcgen::KeyPair::generate().expect("key");
    std::fs::write(dir.0.join("key.pem"), other.serialize_pem()).expect("write");
    assert!(matches!(
        build_tls(&tls_config(&dir.0, "")),
        Err(TlsError::BadKey { .. })
    ));
}

#[test]
fn sniffing_first_byte() {
    assert!(is_tls_client_hello(0x16));
    for b in [0x00, 0x01, 0x40, 0x4f] {
        assert!(!is_tls_client_hello(b));
    }
}
