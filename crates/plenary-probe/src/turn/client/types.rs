//! The client's configuration, inputs and outputs.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `None`: never authenticate (a 401 then fails the allocation).
    pub credentials: Option<Credentials>,
    /// Realm for the key; `None`: the one the server names in its 401.
    pub realm: Option<String>,
    pub peer: SocketAddr,
    /// `Some`: ChannelBind this number to the peer; `None`: CreatePermission only, and the
    /// data goes in Send/Data indications.
    pub channel: Option<u16>,
    /// TCP/TLS: the transport retransmits, so the client only waits.
    pub reliable: bool,
    /// How long one transaction may take, retransmissions included.
    pub timeout: Duration,
    /// Seeds the transaction-id generator (ids only need to be unpredictable enough not
    /// to collide between allocations).
    pub seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Allocate,
    CreatePermission,
    ChannelBind,
    Refresh,
    Deallocate,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    Timeout(Op),
    /// An error response other than the authentication dance.
    Rejected {
        op: Op,
        code: u16,
    },
    /// The server asked for credentials and none were given.
    NeedCredentials,
    /// A second 401 after authenticating: wrong secret, user or realm.
    AuthRejected(Op),
    /// A success response without what it must carry, or an undecodable error.
    Malformed(Op),
    /// The request did not fit the buffer (absurdly long username, realm or nonce).
    TooLarge(Op),
}

impl Failure {
    /// The transaction that failed, when there was one.
    pub fn op(&self) -> Option<Op> {
        match self {
            Failure::Timeout(op)
            | Failure::Rejected { op, .. }
            | Failure::AuthRejected(op)
            | Failure::Malformed(op)
            | Failure::TooLarge(op) => Some(*op),
            Failure::NeedCredentials => None,
        }
    }

    /// Short key for grouping failures in a report: "timeout", "401", "486", ...
    pub fn label(&self) -> String {
        match self {
            Failure::Timeout(_) => "timeout".into(),
            Failure::Rejected { code, .. } => code.to_string(),
            Failure::NeedCredentials | Failure::AuthRejected(_) => "401".into(),
            Failure::Malformed(_) => "malformed".into(),
            Failure::TooLarge(_) => "too-large".into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout(op) => write!(f, "{op:?} timed out"),
            Failure::Rejected { op, code } => write!(f, "{op:?} rejected with {code}"),
            Failure::NeedCredentials => {
                write!(f, "server requires credentials: pass --secret or --user")
            }
            Failure::AuthRejected(op) => write!(
                f,
                "{op:?}: credentials rejected (401 after authenticating; check secret/user/realm)"
            ),
            Failure::Malformed(op) => write!(f, "{op:?}: malformed response"),
            Failure::TooLarge(op) => write!(f, "{op:?}: request too large"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Allocated {
        relayed: SocketAddr,
        mapped: Option<SocketAddr>,
        lifetime: u32,
    },
    /// Permission (and channel) installed: data may flow.
    Ready,
    Refreshed(Op),
    /// A refresh failed; the client retries while the previous grant lasts.
    RefreshFailed(Failure),
    /// Setup failed; the client is finished.
    Failed(Failure),
    Closed,
}

/// What an incoming frame was.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Application data from a peer (ChannelData on our channel, or a Data indication).
    Data(&'a [u8]),
    /// A response to our request: check `poll_transmit` and `poll_event`.
    Control,
    Ignored,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Allocating,
    Permitting,
    Ready,
    Closing,
    Closed,
    Failed,
}
