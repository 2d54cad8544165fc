//! STUN/TURN request handlers: Binding, Allocate, Refresh, CreatePermission, ChannelBind,
//! and Send indications (RFC 8489, RFC 8656, RFC 6156).

use super::allocation::{family_index, family_of, Allocation, ByteBucket, ChannelBindError, Relay};
use super::auth::{authenticate, mint_nonce, nonce_is_valid};
use super::core::{Outcome, PeerRef};
use super::reply::Reply;
use super::shared::QuotaRefusal;
use super::*;
use crate::policy::Verdict;
use crate::stun::{attr, channel_data, method, Class, Message};
use std::time::Duration;

/// How long a port held for a RESERVATION-TOKEN stays held (RFC 8656 suggests ~30 s).
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// Who sent an authenticated request.
struct Caller {
    /// `None` when the server runs without authentication.
    key: Option<[u8; 16]>,
    username: String,
    quota_user: String,
}

/// Attributes this server understands; any other comprehension-required one gets a 420.
fn understood(typ: u16) -> bool {
    matches!(
        typ,
        attr::MAPPED_ADDRESS
            | attr::USERNAME
            | attr::MESSAGE_INTEGRITY
            | attr::ERROR_CODE
            | attr::UNKNOWN_ATTRIBUTES
            | attr::CHANNEL_NUMBER
            | attr::LIFETIME
            | attr::XOR_PEER_ADDRESS
            | attr::DATA
            | attr::REALM
            | attr::NONCE
            | attr::XOR_RELAYED_ADDRESS
            | attr::REQUESTED_ADDRESS_FAMILY
            | attr::REQUESTED_TRANSPORT
            | attr::DONT_FRAGMENT
            | attr::EVEN_PORT
            | attr::RESERVATION_TOKEN
            // Verified through MESSAGE-INTEGRITY, which every client sends alongside.
            | attr::MESSAGE_INTEGRITY_SHA256
            | attr::XOR_MAPPED_ADDRESS
            // ICE PRIORITY / USE-CANDIDATE, harmless in a Binding request.
            | 0x0024
            | 0x0025
    )
}

impl Server {
    pub(super) fn client_stun(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message<'_>,
        scratch: &mut [u8],
        relays: &mut dyn RelayPorts,
    ) -> Outcome {
        match (msg.class(), msg.method()) {
            (Class::Request, method::BINDING) => self.binding(from, msg, scratch),
            (Class::Request, m)
                if matches!(
                    m,
                    method::ALLOCATE
                        | method::REFRESH
                        | method::CREATE_PERMISSION
                        | method::CHANNEL_BIND
                ) =>
            {
                let caller = match self.authenticate(now, from, msg, scratch) {
                    Ok(caller) => caller,
                    Err(outcome) => return outcome,
                };
                let mut unknown = [0u16; 8];
                let n = msg.unknown_required(understood, &mut unknown);
                if n > 0 {
                    self.stats.unknown_attribute += 1;
                    let r = Reply::error(msg, 420, "Unknown Attribute", caller.key);
                    return self.send(r.with_unknown(&unknown[..n]), scratch);
                }
                match m {
                    method::ALLOCATE => self.allocate(now, from, msg, caller, scratch, relays),
                    method::REFRESH => self.refresh(now, from, msg, caller, scratch, relays),
                    method::CREATE_PERMISSION => {
                        self.create_permission(now, from, msg, caller, scratch)
                    }
                    _ => self.channel_bind(now, from, msg, caller, scratch),
                }
            }
            (Class::Request, _) => {
                self.stats.bad_request += 1;
                self.send(Reply::error(msg, 400, "", None), scratch)
            }
            (Class::Indication, method::SEND) => self.send_indication(now, from, msg),
            // Binding indications are keepalives; responses are not for us.
            _ => Outcome::Nothing,
        }
    }

    fn send(&mut self, reply: Reply, scratch: &mut [u8]) -> Outcome {
        match reply.write(scratch, self.shared.settings.software.as_deref()) {
            Some(len) => Outcome::Reply(len),
            None => {
                self.stats.malformed_dropped += 1;
                Outcome::Nothing
            }
        }
    }

    fn binding(&mut self, from: FiveTuple, msg: &Message<'_>, scratch: &mut [u8]) -> Outcome {
        self.stats.binding_requests += 1;
        let mut unknown = [0u16; 8];
        let n = msg.unknown_required(understood, &mut unknown);
        if n > 0 {
            self.stats.unknown_attribute += 1;
            let r = Reply::error(msg, 420, "", None).with_unknown(&unknown[..n]);
            return self.send(r, scratch);
        }
        self.send(Reply::success(msg, None).mapped(from.client), scratch)
    }

    /// Long-term credential check (RFC 8489 §9.2). Errors before authentication carry no
    /// MESSAGE-INTEGRITY and are rate-limited.
    fn authenticate(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message<'_>,
        scratch: &mut [u8],
    ) -> Result<Caller, Outcome> {
        let settings = &self.shared.settings;
        if settings.no_auth {
            return Ok(Caller {
                key: None,
                username: String::new(),
                quota_user: String::new(),
            });
        }
        let text = |typ| msg.get(typ).and_then(|a| attr::text(a.value).ok());
        if msg.get(attr::MESSAGE_INTEGRITY).is_none() {
            return Err(self.challenge(now, from, msg, 401, scratch));
        }
        let (Some(username), Some(_realm), Some(nonce)) =
            (text(attr::USERNAME), text(attr::REALM), text(attr::NONCE))
        else {
            self.stats.bad_request += 1;
            return Err(self.send(Reply::error(msg, 400, "", None), scratch));
        };
        let now_unix = self.unix_now(now);
        if !nonce_is_valid(&self.shared.nonce_key, from.client.ip(), nonce, now_unix) {
            self.stats.stale_nonce += 1;
            return Err(self.challenge(now, from, msg, 438, scratch));
        }
        if let Some(alloc) = self.allocation(&from) {
            if alloc.username == username {
                if msg.check_integrity(&alloc.key) == crate::stun::IntegrityCheck::Valid {
                    return Ok(Caller {
                        key: Some(alloc.key),
                        username: alloc.username.clone(),
                        quota_user: alloc.quota_user.clone(),
                    });
                }
                return Err(self.challenge(now, from, msg, 401, scratch));
            }
            if msg.method() != method::ALLOCATE {
                return Err(self.challenge(now, from, msg, 441, scratch));
            }
        }
        match authenticate(&self.shared.settings, username, msg, now_unix) {
            Ok(identity) => Ok(Caller {
                key: Some(identity.key),
                username: username.to_owned(),
                quota_user: identity.quota_user,
            }),
            Err(_) => Err(self.challenge(now, from, msg, 401, scratch)),
        }
    }

    /// 401, 438 or 441 with a fresh nonce and the realm, within the global rate limit.
    fn challenge(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message<'_>,
        code: u16,
        scratch: &mut [u8],
    ) -> Outcome {
        self.stats.unauthorized += 1;
        if !self.unauth_reply_allowed(now) {
            return Outcome::Nothing;
        }
        let settings = &self.shared.settings;
        let expiry = self.unix_now(now) + settings.limits.nonce_lifetime.as_secs().max(1);
        let nonce = mint_nonce(&self.shared.nonce_key, from.client.ip(), expiry);
        let realm = settings.realm.clone();
        let reply = Reply::error(msg, code, "", None).realm_nonce(realm, nonce);
        self.send(reply, scratch)
    }

    fn desired_lifetime(&self, msg: &Message<'_>) -> Duration {
        let limits = &self.shared.settings.limits;
        match msg
            .get(attr::LIFETIME)
            .and_then(|a| attr::u32_value(a.value).ok())
        {
            Some(0) => Duration::ZERO,
            Some(secs) => Duration::from_secs(u64::from(secs))
                .min(limits.max_lifetime)
                .max(limits.default_lifetime),
            None => limits.default_lifetime,
        }
    }

    fn allocate(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message<'_>,
        caller: Caller,
        scratch: &mut [u8],
        relays: &mut dyn RelayPorts,
    ) -> Outcome {
        let key = caller.key;
        if let Some(existing) = self.allocation(&from) {
            if existing.allocate_txid == msg.transaction_id() {
                let remaining = existing.expires.saturating_duration_since(now);
                let reply = Reply::success(msg, key)
                    .relayed(&existing.relays, &self.shared.settings)
                    .lifetime(remaining)
                    .mapped(from.client);
                return self.send(reply, scratch);
            }
            return self.fail(msg, 437, "Allocation Mismatch", key, scratch);
        }
        match msg
            .get(attr::REQUESTED_TRANSPORT)
            .map(|a| attr::requested_transport(a.value))
        {
            None | Some(Err(_)) => return self.fail(msg, 400, "Bad Request", key, scratch),
            Some(Ok(attr::TRANSPORT_UDP)) => {}
            Some(Ok(_)) => return self.fail(msg, 442, "Unsupported Transport", key, scratch),
        }
        let requested = msg.get(attr::REQUESTED_ADDRESS_FAMILY);
        let additional = msg.get(attr::ADDITIONAL_ADDRESS_FAMILY);
        let primary = match requested.map(|a| attr::address_family(a.value)) {
            _ if requested.is_some() && additional.is_some() => {
                return self.fail(msg, 400, "Bad Request", key, scratch)
            }
            Some(Ok(attr::FAMILY_IPV4)) => Family::V4,
            Some(Ok(attr::FAMILY_IPV6)) => Family::V6,
            Some(_) => return self.fail(msg, 440, "Address Family not Supported", key, scratch),
            None if self.shared.settings.keep_address_family => family_of(&from.client),
            None => Family::V4,
        };
        let also_v6 = match additional.map(|a| attr::address_family(a.value)) {
            None => false,
            Some(Ok(attr::FAMILY_IPV6)) => true,
            Some(_) => return self.fail(msg, 400, "Bad Request", key, scratch),
        };
        // EVEN-PORT: an even port, and with the R bit the next port is held for a later
        // Allocate that presents the RESERVATION-TOKEN (RTP/RTCP pairs, RFC 8656 §7.2).
        let even = msg
            .get(attr::EVEN_PORT)
            .map(|a| a.value.first().is_some_and(|b| b & 0x80 != 0));
        let token = msg.get(attr::RESERVATION_TOKEN);
        if token.is_some() && (even.is_some() || requested.is_some() || additional.is_some()) {
            return self.fail(msg, 400, "Bad Request", key, scratch);
        }
        let port_choice = match (token, even) {
            (Some(token), _) => match self.shared.redeem_token(token.value, now) {
                Some(held) => PortChoice::Held(held),
                None => return self.fail(msg, 508, "Insufficient Capacity", key, scratch),
            },
            (None, Some(_)) => PortChoice::Even,
            (None, None) => PortChoice::Any,
        };
        let reserve_next = even == Some(true);
        let lifetime = self.desired_lifetime(msg).max(Duration::from_secs(1));
        if let Err(refusal) = self.shared.reserve(&caller.quota_user) {
            return match refusal {
                QuotaRefusal::Draining => {
                    self.stats.allocations_refused_ports += 1;
                    self.fail(msg, 508, "Server Draining", key, scratch)
                }
                QuotaRefusal::Total | QuotaRefusal::User => {
                    self.stats.allocations_refused_quota += 1;
                    self.fail(msg, 486, "Allocation Quota Reached", key, scratch)
                }
            };
        }
        let mut slots: [Option<Relay>; 2] = [None, None];
        let primary = match port_choice {
            PortChoice::Held(addr) => family_of(&addr),
            _ => primary,
        };
        match relays.open(primary, port_choice) {
            Ok(opened) => {
                slots[family_index(primary)] = Some(Relay {
                    handle: opened.handle,
                    local: opened.local,
                })
            }
            Err(err) => {
                self.shared.release(&caller.quota_user);
                return match err {
                    OpenError::Exhausted => {
                        self.stats.allocations_refused_ports += 1;
                        self.fail(msg, 508, "Insufficient Capacity", key, scratch)
                    }
                    OpenError::FamilyUnsupported => {
                        self.fail(msg, 440, "Address Family not Supported", key, scratch)
                    }
                };
            }
        }
        let mut v6_error = None;
        if also_v6 {
            match relays.open(Family::V6, PortChoice::Any) {
                Ok(opened) => {
                    slots[1] = Some(Relay {
                        handle: opened.handle,
                        local: opened.local,
                    })
                }
                Err(OpenError::Exhausted) => v6_error = Some(508),
                Err(OpenError::FamilyUnsupported) => v6_error = Some(440),
            }
        }
        let mut reservation = None;
        if reserve_next {
            let held = slots[family_index(primary)].and_then(|r| {
                let next = r.local.port().checked_add(1)?;
                let next = SocketAddr::new(r.local.ip(), next);
                relays.hold(next).then_some(next)
            });
            let Some(held) = held else {
                for relay in slots.iter().flatten() {
                    relays.close(relay.handle);
                }
                self.shared.release(&caller.quota_user);
                self.stats.allocations_refused_ports += 1;
                return self.fail(msg, 508, "Insufficient Capacity", key, scratch);
            };
            let token = self.next_token();
            self.shared
                .add_token(token, held, now + RESERVATION_LIFETIME);
            reservation = Some(token);
        }
        let max_bps = self.shared.settings.limits.max_bps;
        let alloc = Allocation {
            five_tuple: from,
            relays: slots,
            expires: now + lifetime,
            username: caller.username,
            quota_user: caller.quota_user,
            key: key.unwrap_or_default(),
            allocate_txid: msg.transaction_id(),
            fingerprint: msg.has_fingerprint(),
            permissions: Vec::new(),
            channels: Vec::new(),
            to_peer_budget: ByteBucket::new(max_bps, now),
            to_client_budget: ByteBucket::new(max_bps, now),
        };
        let mut reply = Reply::success(msg, key)
            .relayed(&alloc.relays, &self.shared.settings)
            .lifetime(lifetime)
            .mapped(from.client);
        if let Some(code) = v6_error {
            reply = reply.address_error(Family::V6, code);
        }
        if let Some(token) = reservation {
            reply = reply.reservation_token(token);
        }
        self.insert(alloc);
        self.send(reply, scratch)
    }

    fn fail(
        &mut self,
        msg: &Message<'_>,
        code: u16,
        reason: &'static str,
        key: Option<[u8; 16]>,
        scratch: &mut [u8],
    ) -> Outcome {
        if code == 400 {
            self.stats.bad_request += 1;
        }
        self.send(Reply::error(msg, code, reason, key), scratch)
    }

    fn refresh(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message<'_>,
        caller: Caller,
        scratch: &mut [u8],
        relays: &mut dyn RelayPorts,
    ) -> Outcome {
        let key = caller.key;
        let lifetime = self.desired_lifetime(msg);
        let family = match msg
            .get(attr::REQUESTED_ADDRESS_FAMILY)
            .map(|a| attr::address_family(a.value))
        {
            None => None,
            Some(Ok(attr::FAMILY_IPV4)) => Some(Family::V4),
            Some(Ok(attr::FAMILY_IPV6)) => Some(Family::V6),
            Some(_) => return self.fail(msg, 440, "Address Family not Supported", key, scratch),
        };
        let Some(alloc) = self.allocation_mut(&from) else {
            return self.fail(msg, 437, "Allocation Mismatch", key, scratch);
        };
        if family.is_some_and(|f| alloc.relay_for(f).is_none()) {
            return self.fail(msg, 443, "Peer Address Family Mismatch", key, scratch);
        }
        if lifetime.is_zero() {
            self.delete(&from, relays);
        } else {
            alloc.expires = now + lifetime;
        }
        self.send(Reply::success(msg, key).lifetime(lifetime), scratch)
    }

    /// Checks a peer against the allocation's families and the peer policy.
    fn vet_peer(&mut self, from: &FiveTuple, peer: SocketAddr) -> Result<(), (u16, &'static str)> {
        let Some(alloc) = self.allocation(from) else {
            return Err((437, "Allocation Mismatch"));
        };
        if alloc.relay_for(family_of(&peer)).is_none() {
            return Err((443, "Peer Address Family Mismatch"));
        }
        if let Verdict::Denied(_) = self.shared.settings.policy.check(peer.ip()) {
            self.stats.peer_denied += 1;
            return Err((403, "Forbidden"));
        }
        Ok(())
    }

    fn create_permission(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message<'_>,
        caller: Caller,
        scratch: &mut [u8],
    ) -> Outcome {
        let key = caller.key;
        if self.allocation(&from).is_none() {
            return self.fail(msg, 437, "Allocation Mismatch", key, scratch);
        }
        let txid = msg.transaction_id();
        let mut count = 0;
        // Validate every peer before installing any: the request is all or nothing.
        for a in msg.attrs().take_while(|a| a.typ != attr::MESSAGE_INTEGRITY) {
            if a.typ != attr::XOR_PEER_ADDRESS {
                continue;
            }
            let Ok(peer) = attr::xor_address(a.value, &txid) else {
                return self.fail(msg, 400, "Bad Request", key, scratch);
            };
            if let Err((code, reason)) = self.vet_peer(&from, peer) {
                return self.fail(msg, code, reason, key, scratch);
            }
            count += 1;
        }
        if count == 0 {
            return self.fail(msg, 400, "Bad Request", key, scratch);
        }
        let until = now + self.shared.settings.limits.permission_lifetime;
        let Some(alloc) = self.allocation_mut(&from) else {
            return Outcome::Nothing;
        };
        let mut full = false;
        for a in msg.attrs().take_while(|a| a.typ != attr::MESSAGE_INTEGRITY) {
            if a.typ == attr::XOR_PEER_ADDRESS {
                if let Ok(peer) = attr::xor_address(a.value, &txid) {
                    full |= !alloc.permit(peer.ip(), until);
                }
            }
        }
        if full {
            return self.fail(msg, 508, "Insufficient Capacity", key, scratch);
        }
        self.send(Reply::success(msg, key), scratch)
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message<'_>,
        caller: Caller,
        scratch: &mut [u8],
    ) -> Outcome {
        let key = caller.key;
        if self.allocation(&from).is_none() {
            return self.fail(msg, 437, "Allocation Mismatch", key, scratch);
        }
        let number = msg
            .get(attr::CHANNEL_NUMBER)
            .and_then(|a| attr::channel_number(a.value).ok())
            .filter(|n| (channel_data::MIN_CHANNEL..=channel_data::MAX_CHANNEL).contains(n));
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|a| attr::xor_address(a.value, &msg.transaction_id()).ok());
        let (Some(number), Some(peer)) = (number, peer) else {
            return self.fail(msg, 400, "Bad Request", key, scratch);
        };
        if let Err((code, reason)) = self.vet_peer(&from, peer) {
            return self.fail(msg, code, reason, key, scratch);
        }
        let limits = &self.shared.settings.limits;
        let (channel_until, permission_until) = (
            now + limits.channel_lifetime,
            now + limits.permission_lifetime,
        );
        let Some(alloc) = self.allocation_mut(&from) else {
            return Outcome::Nothing;
        };
        match alloc.bind_channel(number, peer, channel_until, now) {
            Ok(()) if alloc.permit(peer.ip(), permission_until) => {
                self.send(Reply::success(msg, key), scratch)
            }
            Ok(()) | Err(ChannelBindError::Full) => {
                self.fail(msg, 508, "Insufficient Capacity", key, scratch)
            }
            Err(ChannelBindError::Conflict) => self.fail(msg, 400, "Bad Request", key, scratch),
        }
    }

    fn send_indication(&mut self, now: Instant, from: FiveTuple, msg: &Message<'_>) -> Outcome {
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|a| attr::xor_address(a.value, &msg.transaction_id()).ok());
        let data = msg.get(attr::DATA);
        let (Some(peer), Some(data)) = (peer, data) else {
            self.stats.malformed_dropped += 1;
            return Outcome::Nothing;
        };
        let start = data.offset + 4;
        let dont_fragment = msg.get(attr::DONT_FRAGMENT).is_some();
        let payload = start..start + data.value.len();
        self.relay_to_peer(now, from, PeerRef::Addr(peer), payload, dont_fragment)
    }
}
