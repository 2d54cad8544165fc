//! TLS client configuration: verified against a CA bundle, or (`--insecure`) against
//! nothing, for self-signed test certificates. Handshake signatures are still checked in
//! insecure mode, so the session is at least bound to the key the server showed.

use anyhow::Context as _;
use plenary_ops::tls::AnyCertSignedHandshake;
use rustls::crypto::ring::default_provider;
use rustls::ClientConfig;
use std::path::Path;
use std::sync::Arc;

/// Debian's bundle, used when no --ca-file is given.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub fn client_config(insecure: bool, ca_file: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertSignedHandshake::new(provider, true)))
            .with_no_client_auth()
    } else {
        let path = ca_file.unwrap_or(Path::new(SYSTEM_BUNDLE));
        let pem = std::fs::read(path)
            .with_context(|| format!("reading CA certificates from {}", path.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing {}", path.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        anyhow::ensure!(
            added > 0,
            "no usable CA certificate in {} (use --ca-file, or --insecure for test certificates)",
            path.display()
        );
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_config_builds_and_missing_ca_file_is_explained() {
        assert!(client_config(true, None).is_ok());
        let err = client_config(false, Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/ca.pem"));
    }
}
