//! TLS for TURN over TLS: rustls (ring), TLS 1.2 and 1.3 only, suites picked from coturn's
//! OpenSSL-style `cipher-list`, and a certificate that can be reloaded without a restart.

use crate::config::TlsConfig;
use rustls::crypto::ring::{cipher_suite as cs, default_provider};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no PEM certificate found", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no PEM private key found (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("{} / {}: {source}", cert.display(), key.display())]
    BadKey {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error(
        "cipher-list names no suite Plenary supports (given: {given}); supported: {supported}"
    )]
    NoUsableCipher { given: String, supported: String },
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
}

/// OpenSSL names (and the IANA names, which rustls uses) of every suite we can offer.
const SUITE_NAMES: &[(&str, &str, SupportedCipherSuite)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    // OpenSSL spells TLS 1.3 suites with their IANA names.
    (
        "TLS_AES_128_GCM_SHA256",
        "TLS13_AES_128_GCM_SHA256",
        cs::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        "TLS13_AES_256_GCM_SHA384",
        cs::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS13_CHACHA20_POLY1305_SHA256",
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ),
];

/// OpenSSL keywords that mean "the strong defaults": every suite rustls has qualifies.
const DEFAULT_KEYWORDS: &[&str] = &["DEFAULT", "ALL", "HIGH", "SECURE", "COMPLEMENTOFDEFAULT"];

/// The suites and protocol versions a `cipher-list` maps to.
#[derive(Debug)]
pub struct CipherSelection {
    pub suites: Vec<SupportedCipherSuite>,
    pub versions: Vec<&'static SupportedProtocolVersion>,
    /// One line per name that was not honoured, for the start-up log.
    pub warnings: Vec<String>,
}

/// Maps an OpenSSL cipher list to rustls suites.
///
/// As in OpenSSL, where `cipher-list` only governs TLS ≤ 1.2 and TLS 1.3 suites are set
/// apart, a list naming no TLS 1.3 suite keeps all TLS 1.3 suites. A list naming TLS 1.3
/// suites only turns TLS 1.2 off. Exclusions (`!x`, `-x`) and ordering directives are
/// accepted silently: rustls offers no weak suite to exclude. Entries may themselves hold
/// `:`, `,` or space separated lists.
pub fn select_cipher_suites(list: &[String]) -> Result<CipherSelection, TlsError> {
    let mut warnings = Vec::new();
    let mut tls12 = Vec::new();
    let mut tls13 = Vec::new();
    let mut any_default = false;
    let mut given = Vec::new();
    for name in list.iter().flat_map(|e| e.split([':', ',', ' '])) {
        let name = name.trim().trim_matches('"');
        if name.is_empty() {
            continue;
        }
        given.push(name);
        if name.starts_with(['!', '-']) || name.starts_with('@') {
            continue;
        }
        let bare = name.trim_start_matches('+');
        if DEFAULT_KEYWORDS
            .iter()
            .any(|k| k.eq_ignore_ascii_case(bare))
        {
            any_default = true;
            continue;
        }
        let found = SUITE_NAMES.iter().find(|(ossl, iana, _)| {
            ossl.eq_ignore_ascii_case(bare) || iana.eq_ignore_ascii_case(bare)
        });
        match found {
            Some((_, _, suite)) => {
                let bucket = if suite.tls13().is_some() {
                    &mut tls13
                } else {
                    &mut tls12
                };
                if !bucket.contains(suite) {
                    bucket.push(*suite);
                }
            }
            None => warnings.push(format!(
                "cipher-list: {bare:?} has no equivalent in Plenary's TLS (rustls); ignored"
            )),
        }
    }
    let all = default_provider().cipher_suites;
    if list.is_empty() || given.iter().all(|n| n.starts_with(['!', '-', '@'])) || any_default {
        // Nothing positive named, or a keyword for the defaults: everything rustls has.
        return Ok(CipherSelection {
            suites: all,
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            warnings,
        });
    }
    if tls12.is_empty() && tls13.is_empty() {
        return Err(TlsError::NoUsableCipher {
            given: given.join(":"),
            supported: SUITE_NAMES
                .iter()
                .map(|(o, _, _)| *o)
                .collect::<Vec<_>>()
                .join(":"),
        });
    }
    let mut versions: Vec<&'static SupportedProtocolVersion> = vec![&rustls::version::TLS13];
    if tls13.is_empty() {
        tls13 = all
            .iter()
            .filter(|s| s.tls13().is_some())
            .copied()
            .collect();
    }
    if tls12.is_empty() {
        warnings.push("cipher-list names TLS 1.3 suites only: TLS 1.2 is disabled".into());
    } else {
        versions.push(&rustls::version::TLS12);
    }
    tls13.extend(tls12);
    Ok(CipherSelection {
        suites: tls13,
        versions,
        warnings,
    })
}

/// The server certificate, swapped on reload. Read once per handshake (a read lock and an
/// `Arc` clone), never on the packet path.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
}

impl CertResolver {
    fn load(
        cert_path: &Path,
        key_path: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let key = load_certified_key(cert_path, key_path, &provider)?;
        Ok(CertResolver {
            current: RwLock::new(Arc::new(key)),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
        })
    }

    /// Re-reads the certificate and key files. On error the old certificate stays in use.
    /// Established connections are not affected either way.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load_certified_key(&self.cert_path, &self.key_path, &self.provider)?;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        *cur = Arc::new(key);
        Ok(())
    }

    /// The certificate chain currently served (end entity first).
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(&cert_pem[..]))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: cert_path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = rustls_pemfile::private_key(&mut BufReader::new(&key_pem[..]))
        .map_err(|source| TlsError::Read {
            path: key_path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::NoPrivateKey {
            path: key_path.to_owned(),
        })?;
    CertifiedKey::from_der(certs, key, provider).map_err(|source| TlsError::BadKey {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        source,
    })
}

/// Everything the drivers need for TLS.
#[derive(Clone)]
pub struct TlsSetup {
    pub acceptor: TlsAcceptor,
    pub resolver: Arc<CertResolver>,
    /// Start-up warnings (unsupported cipher names).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

/// Builds the TLS server configuration from `config`: loads the certificate and key and
/// maps the cipher list.
pub fn build_tls(config: &TlsConfig) -> Result<TlsSetup, TlsError> {
    let selection = select_cipher_suites(&config.cipher_list)?;
    let provider = Arc::new(CryptoProvider {
        cipher_suites: selection.suites,
        ..default_provider()
    });
    let resolver = Arc::new(CertResolver::load(
        &config.cert,
        &config.key,
        provider.clone(),
    )?);
    let server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&selection.versions)
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    Ok(TlsSetup {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        resolver,
        warnings: selection.warnings,
    })
}

/// Whether the first byte of a stream starts a TLS handshake (a TLS record of type
/// handshake, 0x16). ChannelData starts with 0x40..=0x7f, and the STUN messages TURN uses
/// start with 0x00 or 0x01 (a first byte of 0x16 would be a method number above 0x580).
pub fn is_tls_client_hello(first_byte: u8) -> bool {
    first_byte == 0x16
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
