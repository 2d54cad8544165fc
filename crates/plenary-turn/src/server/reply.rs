//! Builds responses. Unauthenticated responses carry only what the RFCs require, so an
//! unauthenticated request never gets back more than it sent beyond that (no SOFTWARE,
//! no reason phrase, FINGERPRINT only if the request had one).

use super::allocation::Relay;
use super::auth::NONCE_LEN;
use super::shared::ServerSettings;
use super::Family;
use crate::stun::{attr, Class, Message, MessageWriter, TransactionId};
use std::net::SocketAddr;
use std::time::Duration;

pub(super) struct Reply {
    method: u16,
    class: Class,
    txid: TransactionId,
    key: Option<[u8; 16]>,
    fingerprint: bool,
    error: Option<(u16, &'static str)>,
    unknown: ([u16; 8], usize),
    realm_nonce: Option<(String, [u8; NONCE_LEN])>,
    relayed: [Option<SocketAddr>; 2],
    address_error: Option<(Family, u16)>,
    lifetime: Option<u32>,
    mapped: Option<SocketAddr>,
    reservation_token: Option<[u8; 8]>,
}

impl Reply {
    fn new(msg: &Message<'_>, class: Class, key: Option<[u8; 16]>) -> Self {
        Reply {
            method: msg.method(),
            class,
            txid: msg.transaction_id(),
            key,
            fingerprint: key.is_some() || msg.has_fingerprint(),
            error: None,
            unknown: ([0; 8], 0),
            realm_nonce: None,
            relayed: [None, None],
            address_error: None,
            lifetime: None,
            mapped: None,
            reservation_token: None,
        }
    }

    /// `key`: the caller's long-term key; `None` for unauthenticated replies.
    pub fn success(msg: &Message<'_>, key: Option<[u8; 16]>) -> Self {
        Self::new(msg, Class::Success, key)
    }

    pub fn error(
        msg: &Message<'_>,
        code: u16,
        reason: &'static str,
        key: Option<[u8; 16]>,
    ) -> Self {
        let mut reply = Self::new(msg, Class::Error, key);
        // Reason phrases only on authenticated replies (amplification budget).
        reply.error = Some((code, if key.is_some() { reason } else { "" }));
        reply
    }

    pub fn with_unknown(mut self, types: &[u16]) -> Self {
        let n = types.len().min(8);
        self.unknown.0[..n].copy_from_slice(&types[..n]);
        self.unknown.1 = n;
        self
    }

    pub fn realm_nonce(mut self, realm: String, nonce: [u8; NONCE_LEN]) -> Self {
        self.realm_nonce = Some((realm, nonce));
        self
    }

    pub fn relayed(mut self, relays: &[Option<Relay>; 2], settings: &ServerSettings) -> Self {
        for (out, relay) in self.relayed.iter_mut().zip(relays) {
            *out = relay.map(|r| settings.advertised(r.local));
        }
        self
    }

    pub fn address_error(mut self, family: Family, code: u16) -> Self {
        self.address_error = Some((family, code));
        self
    }

    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX));
        self
    }

    pub fn reservation_token(mut self, token: [u8; 8]) -> Self {
        self.reservation_token = Some(token);
        self
    }

    pub fn mapped(mut self, addr: SocketAddr) -> Self {
        self.mapped = Some(addr);
        self
    }

    /// Writes the reply; `None` only if `out` is too small.
    pub fn write(&self, out: &mut [u8], software: Option<&str>) -> Option<usize> {
        let mut w = MessageWriter::new(out, self.method, self.class, &self.txid).ok()?;
        if let Some((code, reason)) = self.error {
            w.error_code(code, reason).ok()?;
        }
        if self.unknown.1 > 0 {
            w.unknown_attributes(&self.unknown.0[..self.unknown.1])
                .ok()?;
        }
        if let Some((realm, nonce)) = &self.realm_nonce {
            w.attr(attr::REALM, realm.as_bytes()).ok()?;
            w.attr(attr::NONCE, nonce).ok()?;
        }
        for addr in self.relayed.iter().flatten() {
            w.xor_address(attr::XOR_RELAYED_ADDRESS, *addr).ok()?;
        }
        if let Some((family, code)) = self.address_error {
            // RFC 8656 §18.12: family, reserved, class, number (no reason phrase).
            let family = match family {
                Family::V4 => attr::FAMILY_IPV4,
                Family::V6 => attr::FAMILY_IPV6,
            };
            let value = [family, 0, (code / 100) as u8, (code % 100) as u8];
            w.attr(attr::ADDRESS_ERROR_CODE, &value).ok()?;
        }
        if let Some(token) = &self.reservation_token {
            w.attr(attr::RESERVATION_TOKEN, token).ok()?;
        }
        if let Some(lifetime) = self.lifetime {
            w.u32(attr::LIFETIME, lifetime).ok()?;
        }
        if let Some(addr) = self.mapped {
            w.xor_address(attr::XOR_MAPPED_ADDRESS, addr).ok()?;
        }
        if let Some(key) = &self.key {
            if let Some(software) = software {
                w.attr(attr::SOFTWARE, software.as_bytes()).ok()?;
            }
            w.message_integrity(key).ok()?;
        }
        if self.fingerprint {
            w.fingerprint().ok()?;
        }
        Some(w.finish())
    }
}
