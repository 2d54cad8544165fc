//! SRTP key capture from str0m's DTLS, without a fork.
//!
//! str0m takes its DTLS from a `&'static dyn DtlsProvider` inside the `CryptoProvider`, and
//! the instance it creates reports the exported keying material through
//! `DtlsOutput::KeyingMaterial`. We wrap the default (aws-lc-rs) provider: every call goes
//! through unchanged, and the instance made for an `Rtc` built by [`build_rtc`] also copies
//! the keys into that `Rtc`'s [`KeySlot`].
//!
//! Matching instances to `Rtc`s: `RtcConfig::build` calls `DtlsProvider::new_dtls` exactly
//! once, synchronously, on the calling thread. [`build_rtc`] parks the new slot in a
//! thread-local just before `build` and takes it back after; `new_dtls` takes it from
//! there. Nothing else can run on this thread in between, so the slot can only reach the
//! instance of that `Rtc`. An `Rtc` built any other way with this provider gets a plain,
//! unwrapped instance. If a str0m upgrade stopped creating DTLS inside `build`, the slot
//! would still be parked afterwards and [`build_rtc`] reports [`CaptureError::NotWired`]
//! rather than returning an `Rtc` whose keys would never arrive.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider};
use str0m::crypto::dtls::{DtlsVersion, ProtocolVersion, SrtpProfile as DtlsSrtpProfile};
use str0m::crypto::{CryptoError, CryptoProvider};
use str0m::{Rtc, RtcConfig};

use crate::keys::{DtlsRole, SrtpKeys, SrtpProfile};

/// Where one `Rtc`'s SRTP keys appear once its DTLS handshake has exported them. They are
/// there before str0m reports `Event::Connected`; use them only after it (str0m checks the
/// peer's certificate fingerprint before it connects).
#[derive(Debug, Clone, Default)]
pub struct KeySlot(Arc<OnceLock<SrtpKeys>>);

impl KeySlot {
    pub fn get(&self) -> Option<&SrtpKeys> {
        self.0.get()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("str0m built the Rtc without creating its DTLS instance; key capture is not wired for this str0m version")]
    NotWired,
}

struct Pending {
    slot: KeySlot,
    /// Tests only: make both str0m peers use this profile instead of the negotiated one.
    #[cfg(test)]
    force: Option<SrtpProfile>,
}

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Clears the parked slot even if `build` panics, so it cannot leak into a later `Rtc`.
struct ClearPending;

impl Drop for ClearPending {
    fn drop(&mut self) {
        PENDING.with(|p| p.borrow_mut().take());
    }
}

/// The process-wide crypto provider: str0m's default (aws-lc-rs) with capturing DTLS.
pub fn capturing_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(wrap_provider(str0m::crypto::from_feature_flags())))
        .clone()
}

/// Wraps the DTLS of another base provider. Leaks one small struct (the provider holds
/// `&'static` references), so call it once per base, at start.
pub fn wrap_provider(base: CryptoProvider) -> CryptoProvider {
    let dtls: &'static CapturingDtls = Box::leak(Box::new(CapturingDtls {
        inner: base.dtls_provider,
    }));
    CryptoProvider {
        dtls_provider: dtls,
        ..base
    }
}

/// Builds an `Rtc` from `config` with the capturing provider (replacing any provider set
/// on `config`) and returns the slot its keys will land in.
pub fn build_rtc(config: RtcConfig, now: Instant) -> Result<(Rtc, KeySlot), CaptureError> {
    build(config, capturing_provider(), now, |slot| Pending {
        slot,
        #[cfg(test)]
        force: None,
    })
}

/// Like [`build_rtc`], but this `Rtc`'s str0m is handed `profile` and keying material cut
/// from the negotiated one. Two peers built this way agree, which lets the tests check
/// every profile against str0m's own SRTP (str0m peers negotiate only AES-256-GCM).
#[cfg(test)]
pub(crate) fn build_rtc_forcing(
    config: RtcConfig,
    now: Instant,
    profile: SrtpProfile,
) -> Result<(Rtc, KeySlot), CaptureError> {
    build(config, capturing_provider(), now, |slot| Pending {
        slot,
        force: Some(profile),
    })
}

fn build(
    config: RtcConfig,
    provider: Arc<CryptoProvider>,
    now: Instant,
    pending: impl FnOnce(KeySlot) -> Pending,
) -> Result<(Rtc, KeySlot), CaptureError> {
    let slot = KeySlot::default();
    let _clear = ClearPending;
    PENDING.with(|p| *p.borrow_mut() = Some(pending(slot.clone())));
    let rtc = config.set_crypto_provider(provider).build(now);
    let unclaimed = PENDING.with(|p| p.borrow_mut().take()).is_some();
    if unclaimed {
        return Err(CaptureError::NotWired);
    }
    Ok((rtc, slot))
}

#[derive(Debug)]
struct CapturingDtls {
    inner: &'static dyn DtlsProvider,
}

impl DtlsProvider for CapturingDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let pending = PENDING.with(|p| p.borrow_mut().take());
        let inner = self.inner.new_dtls(cert, now, dtls_version, mtu)?;
        let Some(pending) = pending else {
            return Ok(inner);
        };
        Ok(Box::new(CapturingInstance {
            inner,
            slot: pending.slot,
            #[cfg(test)]
            force: pending.force,
        }))
    }

    fn is_test(&self) -> bool {
        self.inner.is_test()
    }
}

#[derive(Debug)]
struct CapturingInstance {
    inner: Box<dyn DtlsInstance>,
    slot: KeySlot,
    #[cfg(test)]
    force: Option<SrtpProfile>,
}

impl CapturingInstance {
    fn capture(&self, material: &[u8], profile: SrtpProfile) {
        let role = if self.inner.is_active() {
            DtlsRole::Client
        } else {
            DtlsRole::Server
        };
        // A second export (never seen from str0m) keeps the first keys: str0m does the same.
        if let Ok(keys) = SrtpKeys::from_keying_material(profile, role, material) {
            let _ = self.slot.0.set(keys);
        }
    }
}

fn profile_of(p: DtlsSrtpProfile) -> Option<SrtpProfile> {
    match p {
        DtlsSrtpProfile::AES128_CM_SHA1_80 => Some(SrtpProfile::Aes128CmHmacSha1_80),
        DtlsSrtpProfile::AEAD_AES_128_GCM => Some(SrtpProfile::AeadAes128Gcm),
        DtlsSrtpProfile::AEAD_AES_256_GCM => Some(SrtpProfile::AeadAes256Gcm),
        // A profile we cannot run: no keys, so the owner keeps str0m's SRTP path.
        _ => None,
    }
}

#[cfg(test)]
fn dtls_profile_of(p: SrtpProfile) -> DtlsSrtpProfile {
    match p {
        SrtpProfile::Aes128CmHmacSha1_80 => DtlsSrtpProfile::AES128_CM_SHA1_80,
        SrtpProfile::AeadAes128Gcm => DtlsSrtpProfile::AEAD_AES_128_GCM,
        SrtpProfile::AeadAes256Gcm => DtlsSrtpProfile::AEAD_AES_256_GCM,
    }
}

impl DtlsInstance for CapturingInstance {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active)
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let out = self.inner.poll_output(buf);
        let DtlsOutput::KeyingMaterial(material, negotiated) = &out else {
            return out;
        };
        #[cfg(test)]
        if let Some(forced) = self.force {
            let cut = str0m::config::KeyingMaterial::new(&material[..forced.keying_material_len()]);
            self.capture(&cut, forced);
            return DtlsOutput::KeyingMaterial(cut, dtls_profile_of(forced));
        }
        if let Some(profile) = profile_of(*negotiated) {
            self.capture(material, profile);
        }
        out
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}
