//! Sans-IO TURN client for one allocation: 401 → authenticated Allocate → ChannelBind (or
//! CreatePermission) → ready, then refreshes, then a Refresh with lifetime 0 on close.
//!
//! Like the server core it takes `(now, bytes)` and hands back datagrams to send, the next
//! deadline and events; the driver owns the sockets and the clock. One request is in
//! flight at a time: the sequence is inherently serial, and it keeps retransmission and
//! matching trivial.

use plenary_turn::stun::{
    attr, channel_data, frame_kind, integrity::long_term_key, method, Class, FrameKind,
    IntegrityCheck, Message, MessageWriter, TransactionId,
};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod types;
pub use types::{ClientConfig, Credentials, Event, Failure, Input, Op, Phase};

/// RFC 8489 §6.2.1 initial retransmission timeout (doubled after each try) on UDP.
const INITIAL_RTO: Duration = Duration::from_millis(500);
/// Permissions live 300 s (RFC 8656 §9); refreshing at 240 s leaves a minute of slack.
pub const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// After a refresh fails, try again this much later (the old grant is still running).
const REFRESH_RETRY: Duration = Duration::from_secs(10);
/// Stale-nonce answers tolerated in a row before giving up.
const MAX_STALE: u8 = 3;
const SOFTWARE: &[u8] = b"plenary-probe";

#[derive(Clone, Copy, Debug)]
struct Pending {
    op: Op,
    txid: TransactionId,
    give_up: Instant,
    next_retx: Option<Instant>,
    rto: Duration,
    authed: bool,
    stale: u8,
}

pub struct TurnClient {
    cfg: ClientConfig,
    phase: Phase,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<[u8; 16]>,
    pending: Option<Pending>,
    out: Box<[u8; 2048]>,
    out_len: usize,
    transmit: bool,
    events: VecDeque<Event>,
    relayed: Option<SocketAddr>,
    lifetime: u32,
    alloc_refresh_at: Option<Instant>,
    perm_refresh_at: Option<Instant>,
    rng: u64,
}

/// When to refresh an allocation granted for `lifetime` seconds: a minute early, or half
/// way through for short grants.
pub fn alloc_refresh_delay(lifetime: u32) -> Duration {
    let secs = u64::from(lifetime);
    Duration::from_secs(secs.saturating_sub(60).max(secs / 2).max(1))
}

fn method_of(op: Op) -> u16 {
    match op {
        Op::Allocate => method::ALLOCATE,
        Op::CreatePermission => method::CREATE_PERMISSION,
        Op::ChannelBind => method::CHANNEL_BIND,
        Op::Refresh | Op::Deallocate => method::REFRESH,
    }
}

impl TurnClient {
    /// Creates the client and queues the first (unauthenticated) Allocate.
    pub fn new(cfg: ClientConfig, now: Instant) -> Self {
        let rng = cfg.seed | 1;
        let mut c = TurnClient {
            cfg,
            phase: Phase::Allocating,
            realm: None,
            nonce: None,
            key: None,
            pending: None,
            out: Box::new([0; 2048]),
            out_len: 0,
            transmit: false,
            events: VecDeque::with_capacity(4),
            relayed: None,
            lifetime: 0,
            alloc_refresh_at: None,
            perm_refresh_at: None,
            rng,
        };
        c.request(now, Op::Allocate, 0);
        c
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed
    }
    pub fn channel(&self) -> Option<u16> {
        self.cfg.channel
    }
    pub fn peer(&self) -> SocketAddr {
        self.cfg.peer
    }

    /// The next datagram/frame to send, once per (re)transmission.
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        if !std::mem::take(&mut self.transmit) {
            return None;
        }
        Some(&self.out[..self.out_len])
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(p) = &self.pending {
            return Some(p.next_retx.map_or(p.give_up, |r| r.min(p.give_up)));
        }
        if self.phase != Phase::Ready {
            return None;
        }
        match (self.alloc_refresh_at, self.perm_refresh_at) {
            (Some(a), Some(p)) => Some(a.min(p)),
            (a, p) => a.or(p),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(p) = self.pending.as_mut() {
            if now >= p.give_up {
                let op = p.op;
                self.pending = None;
                self.fail(now, Failure::Timeout(op));
            } else if p.next_retx.is_some_and(|t| now >= t) {
                p.rto *= 2;
                p.next_retx = Some(now + p.rto).filter(|&t| t < p.give_up);
                self.transmit = true;
            }
            return;
        }
        if self.phase != Phase::Ready {
            return;
        }
        if self.alloc_refresh_at.is_some_and(|t| now >= t) {
            self.request(now, Op::Refresh, 0);
        } else if self.perm_refresh_at.is_some_and(|t| now >= t) {
            let op = self.permission_op();
            self.request(now, op, 0);
        }
    }

    /// Releases the allocation (Refresh with lifetime 0); `Closed` follows its answer or
    /// its timeout. Before the allocation exists there is nothing to release.
    pub fn close(&mut self, now: Instant) {
        match self.phase {
            Phase::Closing | Phase::Closed | Phase::Failed => {}
            _ if self.relayed.is_none() => self.set_closed(),
            _ => {
                self.phase = Phase::Closing;
                self.request(now, Op::Deallocate, 0);
            }
        }
    }

    /// Feeds one datagram (UDP) or one whole frame (TCP/TLS) from the server.
    pub fn handle_input<'a>(&mut self, now: Instant, bytes: &'a [u8]) -> Input<'a> {
        let Some(&first) = bytes.first() else {
            return Input::Ignored;
        };
        match frame_kind(first) {
            FrameKind::ChannelData => match channel_data::parse(bytes) {
                Some((ch, data)) if Some(ch) == self.cfg.channel => Input::Data(data),
                _ => Input::Ignored,
            },
            FrameKind::Stun => {
                let Ok(msg) = Message::parse(bytes) else {
                    return Input::Ignored;
                };
                match msg.class() {
                    Class::Indication if msg.method() == method::DATA => msg
                        .get(attr::DATA)
                        .map_or(Input::Ignored, |a| Input::Data(a.value)),
                    Class::Success | Class::Error
                        if self.pending.is_some_and(|p| p.txid == msg.transaction_id()) =>
                    {
                        self.on_response(now, &msg);
                        Input::Control
                    }
                    _ => Input::Ignored,
                }
            }
            FrameKind::Other => Input::Ignored,
        }
    }

    fn permission_op(&self) -> Op {
        if self.cfg.channel.is_some() {
            Op::ChannelBind
        } else {
            Op::CreatePermission
        }
    }

    fn next_txid(&mut self) -> TransactionId {
        let mut next = || {
            // xorshift64*: cheap and good enough for non-colliding transaction ids.
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let (a, b) = (next().to_be_bytes(), next().to_be_bytes());
        let mut txid = [0u8; 12];
        txid[..8].copy_from_slice(&a);
        txid[8..].copy_from_slice(&b[..4]);
        txid
    }

    /// Encodes and queues a request for `op` (authenticated once a nonce is known).
    fn request(&mut self, now: Instant, op: Op, stale: u8) {
        let txid = self.next_txid();
        let authed = self.key.is_some() && self.nonce.is_some();
        match self.encode(op, &txid) {
            Ok(len) => {
                self.out_len = len;
                self.transmit = true;
                self.pending = Some(Pending {
                    op,
                    txid,
                    give_up: now + self.cfg.timeout,
                    next_retx: (!self.cfg.reliable).then_some(now + INITIAL_RTO),
                    rto: INITIAL_RTO,
                    authed,
                    stale,
                });
            }
            Err(_) => self.fail(now, Failure::TooLarge(op)),
        }
    }

    fn encode(
        &mut self,
        op: Op,
        txid: &TransactionId,
    ) -> Result<usize, plenary_turn::stun::EncodeError> {
        let mut w = MessageWriter::new(&mut self.out[..], method_of(op), Class::Request, txid)?;
        match op {
            Op::Allocate => {
                w.attr(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0])?;
                // The relayed address must be of the peer's family (RFC 6156).
                if self.cfg.peer.is_ipv6() {
                    w.attr(
                        attr::REQUESTED_ADDRESS_FAMILY,
                        &[attr::FAMILY_IPV6, 0, 0, 0],
                    )?;
                }
            }
            Op::CreatePermission => w.xor_address(attr::XOR_PEER_ADDRESS, self.cfg.peer)?,
            Op::ChannelBind => {
                let [hi, lo] = self.cfg.channel.unwrap_or_default().to_be_bytes();
                w.attr(attr::CHANNEL_NUMBER, &[hi, lo, 0, 0])?;
                w.xor_address(attr::XOR_PEER_ADDRESS, self.cfg.peer)?;
            }
            Op::Refresh => w.u32(attr::LIFETIME, self.lifetime)?,
            Op::Deallocate => w.u32(attr::LIFETIME, 0)?,
        }
        w.attr(attr::SOFTWARE, SOFTWARE)?;
        if let (Some(key), Some(nonce), Some(creds)) =
            (&self.key, &self.nonce, &self.cfg.credentials)
        {
            w.attr(attr::USERNAME, creds.username.as_bytes())?;
            w.attr(attr::REALM, self.realm.as_deref().unwrap_or("").as_bytes())?;
            w.attr(attr::NONCE, nonce.as_bytes())?;
            w.message_integrity(key)?;
        }
        w.fingerprint()?;
        Ok(w.finish())
    }

    fn on_response(&mut self, now: Instant, msg: &Message<'_>) {
        let Some(p) = self.pending else { return };
        if msg.class() == Class::Error {
            return self.on_error(now, p, msg);
        }
        // A response that carries integrity must carry ours; anything else is not from
        // the server we authenticated with.
        if let Some(key) = &self.key {
            if msg.has_integrity() && msg.check_integrity(key) == IntegrityCheck::Invalid {
                return;
            }
        }
        self.pending = None;
        match p.op {
            Op::Allocate => {
                let Ok(Some(relayed)) = msg.get_xor_address(attr::XOR_RELAYED_ADDRESS) else {
                    return self.fail(now, Failure::Malformed(Op::Allocate));
                };
                let mapped = msg.get_xor_address(attr::XOR_MAPPED_ADDRESS).ok().flatten();
                self.lifetime = msg.get_u32(attr::LIFETIME).ok().flatten().unwrap_or(600);
                self.relayed = Some(relayed);
                self.alloc_refresh_at = Some(now + alloc_refresh_delay(self.lifetime));
                self.events.push_back(Event::Allocated {
                    relayed,
                    mapped,
                    lifetime: self.lifetime,
                });
                self.phase = Phase::Permitting;
                let op = self.permission_op();
                self.request(now, op, 0);
            }
            Op::CreatePermission | Op::ChannelBind => {
                self.perm_refresh_at = Some(now + PERMISSION_REFRESH);
                if self.phase == Phase::Permitting {
                    self.phase = Phase::Ready;
                    self.events.push_back(Event::Ready);
                } else {
                    self.events.push_back(Event::Refreshed(p.op));
                }
            }
            Op::Refresh => {
                if let Ok(Some(lifetime)) = msg.get_u32(attr::LIFETIME) {
                    self.lifetime = lifetime;
                }
                self.alloc_refresh_at = Some(now + alloc_refresh_delay(self.lifetime));
                self.events.push_back(Event::Refreshed(Op::Refresh));
            }
            Op::Deallocate => self.set_closed(),
        }
    }

    fn on_error(&mut self, now: Instant, p: Pending, msg: &Message<'_>) {
        self.pending = None;
        let code = msg
            .get(attr::ERROR_CODE)
            .and_then(|a| attr::error_code(a.value).ok())
            .map(|(code, _)| code);
        let nonce = msg.get_text(attr::NONCE).ok().flatten();
        match (code, nonce) {
            (Some(401), Some(nonce)) if !p.authed => {
                let Some(creds) = &self.cfg.credentials else {
                    return self.fail(now, Failure::NeedCredentials);
                };
                let server_realm = msg.get_text(attr::REALM).ok().flatten().unwrap_or("");
                let realm = self
                    .cfg
                    .realm
                    .clone()
                    .unwrap_or_else(|| server_realm.to_string());
                self.key = Some(long_term_key(&creds.username, &realm, &creds.password));
                self.realm = Some(realm);
                self.nonce = Some(nonce.to_string());
                self.request(now, p.op, p.stale);
            }
            (Some(438), Some(nonce)) if p.stale < MAX_STALE => {
                self.nonce = Some(nonce.to_string());
                self.request(now, p.op, p.stale + 1);
            }
            (Some(401), _) if self.cfg.credentials.is_none() => {
                self.fail(now, Failure::NeedCredentials)
            }
            (Some(401), _) => self.fail(now, Failure::AuthRejected(p.op)),
            (Some(code), _) => self.fail(now, Failure::Rejected { op: p.op, code }),
            (None, _) => self.fail(now, Failure::Malformed(p.op)),
        }
    }

    fn fail(&mut self, now: Instant, failure: Failure) {
        match self.phase {
            // A failed refresh is not fatal: the previous grant still runs for a while.
            Phase::Ready => {
                // Push the failed refresh's deadline back so it is retried, not spun on.
                let retry = Some(now + REFRESH_RETRY);
                match failure.op() {
                    Some(Op::Refresh) => self.alloc_refresh_at = retry,
                    Some(_) => self.perm_refresh_at = retry,
                    None => (self.alloc_refresh_at, self.perm_refresh_at) = (retry, retry),
                }
                self.events.push_back(Event::RefreshFailed(failure));
            }
            Phase::Closing => self.set_closed(),
            Phase::Closed | Phase::Failed => {}
            Phase::Allocating | Phase::Permitting => {
                self.phase = Phase::Failed;
                self.events.push_back(Event::Failed(failure));
            }
        }
    }

    fn set_closed(&mut self) {
        self.phase = Phase::Closed;
        self.pending = None;
        self.events.push_back(Event::Closed);
    }
}

#[cfg(test)]
mod tests;
