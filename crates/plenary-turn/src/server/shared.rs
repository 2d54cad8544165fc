//! Settings and quota counters shared by every worker's core.
//!
//! Touched on allocate/delete only, never per packet, so a mutex for the per-user map is
//! fine here.

use crate::config::{ExternalIp, Limits, TurnConfig, UserSecret};
use crate::policy::PeerPolicy;
use crate::stun::integrity::long_term_key;
use rustc_hash::FxHashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Settings derived from [`TurnConfig`] once at start.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub(crate) realm: String,
    pub(crate) no_auth: bool,
    /// Static users with their precomputed long-term keys.
    pub(crate) users: FxHashMap<String, [u8; 16]>,
    pub(crate) secrets: Vec<String>,
    pub(crate) rest_separator: char,
    pub(crate) limits: Limits,
    pub(crate) policy: PeerPolicy,
    pub(crate) external_ips: Vec<ExternalIp>,
    pub(crate) keep_address_family: bool,
    pub(crate) software: Option<String>,
}

impl ServerSettings {
    /// `own_addrs`: listening and relay addresses (never relayed to).
    pub fn from_config(config: &TurnConfig, own_addrs: Vec<IpAddr>) -> Self {
        let users = config
            .auth
            .users
            .iter()
            .map(|u| {
                let key = match &u.secret {
                    UserSecret::Password(p) => long_term_key(&u.name, &config.realm, p),
                    UserSecret::Key(k) => *k,
                };
                (u.name.clone(), key)
            })
            .collect();
        ServerSettings {
            realm: config.realm.clone(),
            no_auth: config.auth.no_auth,
            users,
            secrets: config.auth.secrets.clone(),
            rest_separator: config.auth.rest_separator,
            limits: config.limits.clone(),
            policy: PeerPolicy::new(config.peers.clone(), own_addrs),
            external_ips: config.external_ips.clone(),
            keep_address_family: config.keep_address_family,
            software: config.software.clone(),
        }
    }

    /// The address a client is told for a local relay address (coturn `external-ip`).
    pub(crate) fn advertised(&self, local: SocketAddr) -> SocketAddr {
        for ext in &self.external_ips {
            let applies = match ext.private {
                Some(private) => private == local.ip(),
                None => ext.public.is_ipv4() == local.is_ipv4(),
            };
            if applies {
                return SocketAddr::new(ext.public, local.port());
            }
        }
        local
    }
}

/// State shared by all workers: read-only settings plus quota counters.
#[derive(Debug)]
pub struct Shared {
    pub(crate) settings: ServerSettings,
    pub(crate) nonce_key: [u8; 32],
    draining: AtomicBool,
    total: AtomicU64,
    per_user: Mutex<FxHashMap<String, u32>>,
    /// RESERVATION-TOKEN → held relay address and its expiry. Shared because the Allocate
    /// that redeems a token comes from another 5-tuple, which may land on another worker.
    tokens: Mutex<FxHashMap<[u8; 8], (SocketAddr, Instant)>>,
}

/// Why a quota refused an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QuotaRefusal {
    Draining,
    Total,
    User,
}

impl Shared {
    /// `nonce_key`: random bytes from the driver (the core reads no randomness).
    pub fn new(settings: ServerSettings, nonce_key: [u8; 32]) -> Arc<Self> {
        Arc::new(Shared {
            settings,
            nonce_key,
            draining: AtomicBool::new(false),
            total: AtomicU64::new(0),
            per_user: Mutex::new(FxHashMap::default()),
            tokens: Mutex::new(FxHashMap::default()),
        })
    }

    /// Stop granting new allocations (graceful drain); existing ones keep working.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Allocations alive across all workers.
    pub fn total_allocations(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Reserves one allocation for `user` against the total and per-user quotas.
    pub(crate) fn reserve(&self, user: &str) -> Result<(), QuotaRefusal> {
        if self.is_draining() {
            return Err(QuotaRefusal::Draining);
        }
        let limits = &self.settings.limits;
        let total_cap = u64::from(limits.total_quota);
        let reserved = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (total_cap == 0 || n < total_cap).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(QuotaRefusal::Total);
        }
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_user.entry(user.to_owned()).or_insert(0);
        if limits.user_quota != 0 && *count >= limits.user_quota {
            drop(per_user);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(QuotaRefusal::User);
        }
        *count += 1;
        Ok(())
    }

    pub(crate) fn add_token(&self, token: [u8; 8], held: SocketAddr, expires: Instant) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.insert(token, (held, expires));
    }

    /// Takes a live token's held address (each token is redeemed once).
    pub(crate) fn redeem_token(&self, token: &[u8], now: Instant) -> Option<SocketAddr> {
        let token: [u8; 8] = token.try_into().ok()?;
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        match tokens.get(&token) {
            Some(&(addr, expires)) if expires > now => {
                tokens.remove(&token);
                Some(addr)
            }
            _ => None,
        }
    }

    /// Removes expired tokens, returning the addresses whose holds must be given up.
    pub(crate) fn expire_tokens(&self, now: Instant) -> Vec<SocketAddr> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.is_empty() {
            return Vec::new();
        }
        let mut expired = Vec::new();
        tokens.retain(|_, (addr, expires)| {
            let keep = *expires > now;
            if !keep {
                expired.push(*addr);
            }
            keep
        });
        expired
    }

    /// Returns what [`Shared::reserve`] took.
    pub(crate) fn release(&self, user: &str) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_user.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_user.remove(user);
            }
        }
    }
}
