//! The control stream's opening: cluster-secret tags both ways, then `Hello` both ways.

use std::net::SocketAddr;

use quinn::{
    ConnectionError, ReadError, ReadExactError, RecvStream, SendStream, VarInt, WriteError,
};
use tracing::debug;

use super::{
    warn_limited, LinkError, LogKind, AUTH_TIMEOUT, CLOSE_AUTH_TIMEOUT, CLOSE_NORMAL,
    CLOSE_PROTOCOL, CLOSE_WRONG_SECRET, IDLE_TIMEOUT,
};
use crate::auth::{self, Role, TAG_LEN};
use crate::wire::{encode_control, ControlDecoder, ControlMsg};

/// Read size on the control stream; also bounds what the decoder holds beyond one frame.
pub(super) const READ_CHUNK: usize = 64 * 1024;
/// Node names become metric labels, log fields and directory keys: the directory's rule.
const MAX_NODE_NAME: usize = 64;

pub(super) fn usable_name(name: &str) -> bool {
    (1..=MAX_NODE_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// An authenticated control stream, with any bytes read past the peer's `Hello`.
pub(super) struct Ready {
    pub peer: String,
    pub send: SendStream,
    pub recv: RecvStream,
    pub decoder: ControlDecoder,
}

#[derive(Debug)]
pub(super) enum HandshakeError {
    /// The peer's tag did not verify.
    WrongSecret,
    /// The peer closed the connection because our tag did not verify.
    RefusedByPeer,
    NoTagInTime,
    Connection(ConnectionError),
    Protocol(String),
}

impl HandshakeError {
    /// How to close the connection after this failure.
    pub fn close_code(&self) -> (u32, &'static str) {
        match self {
            HandshakeError::WrongSecret => (CLOSE_WRONG_SECRET, "wrong cluster secret"),
            HandshakeError::NoTagInTime => (CLOSE_AUTH_TIMEOUT, "no tag in time"),
            HandshakeError::Protocol(_) => (CLOSE_PROTOCOL, "bad handshake"),
            // Already closed; closing again changes nothing.
            HandshakeError::RefusedByPeer | HandshakeError::Connection(_) => (CLOSE_NORMAL, ""),
        }
    }

    /// The connector's view of the failure.
    pub fn into_link_error(self, addr: SocketAddr) -> LinkError {
        match self {
            HandshakeError::WrongSecret => {
                crate::metrics::auth_failure();
                LinkError::Refused
            }
            HandshakeError::RefusedByPeer => LinkError::Refused,
            HandshakeError::NoTagInTime => LinkError::Timeout(AUTH_TIMEOUT),
            HandshakeError::Connection(e) => connection_error(e, addr),
            HandshakeError::Protocol(why) => LinkError::Protocol(format!("{addr}: {why}")),
        }
    }

    /// The acceptor's report of a refused incoming link.
    pub fn log_refusal(&self, addr: SocketAddr) {
        match self {
            HandshakeError::WrongSecret => {
                crate::metrics::auth_failure();
                warn_limited(
                    LogKind::WrongSecret,
                    format_args!("cascade: refused link from {addr}: wrong cluster secret"),
                );
            }
            HandshakeError::NoTagInTime => {
                crate::metrics::auth_failure();
                warn_limited(
                    LogKind::NoTag,
                    format_args!(
                        "cascade: refused link from {addr}: no authentication within {AUTH_TIMEOUT:?}"
                    ),
                );
            }
            HandshakeError::Protocol(why) => warn_limited(
                LogKind::BadHandshake,
                format_args!("cascade: refused link from {addr}: {why}"),
            ),
            HandshakeError::RefusedByPeer | HandshakeError::Connection(_) => {
                debug!(from = %addr, "cascade: incoming link lost during setup: {self:?}");
            }
        }
    }
}

/// Describes a QUIC connection failure for the operator.
pub(super) fn connection_error(e: ConnectionError, addr: SocketAddr) -> LinkError {
    match e {
        ConnectionError::ApplicationClosed(c)
            if c.error_code == VarInt::from_u32(CLOSE_WRONG_SECRET) =>
        {
            LinkError::Refused
        }
        ConnectionError::TimedOut => {
            LinkError::Unreachable(format!("{addr}: no answer within {IDLE_TIMEOUT:?}"))
        }
        ConnectionError::Reset => LinkError::Unreachable(format!("{addr}: connection reset")),
        ConnectionError::ApplicationClosed(c) => LinkError::Closed(format!(
            "{addr}: closed by peer: {}",
            String::from_utf8_lossy(&c.reason)
        )),
        ConnectionError::ConnectionClosed(_)
        | ConnectionError::VersionMismatch
        | ConnectionError::TransportError(_) => LinkError::Protocol(format!("{addr}: {e}")),
        ConnectionError::LocallyClosed | ConnectionError::CidsExhausted => {
            LinkError::Closed(e.to_string())
        }
    }
}

fn lost(e: ConnectionError) -> HandshakeError {
    match &e {
        ConnectionError::ApplicationClosed(c)
            if c.error_code == VarInt::from_u32(CLOSE_WRONG_SECRET) =>
        {
            HandshakeError::RefusedByPeer
        }
        _ => HandshakeError::Connection(e),
    }
}

impl From<ReadError> for HandshakeError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::ConnectionLost(e) => lost(e),
            other => HandshakeError::Protocol(format!("control stream: {other}")),
        }
    }
}

impl From<ReadExactError> for HandshakeError {
    fn from(e: ReadExactError) -> Self {
        match e {
            ReadExactError::ReadError(e) => e.into(),
            ReadExactError::FinishedEarly(_) => {
                HandshakeError::Protocol("control stream ended during authentication".into())
            }
        }
    }
}

impl From<WriteError> for HandshakeError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::ConnectionLost(e) => lost(e),
            other => HandshakeError::Protocol(format!("control stream: {other}")),
        }
    }
}

fn exporter(conn: &quinn::Connection) -> Result<[u8; TAG_LEN], HandshakeError> {
    let mut out = [0; TAG_LEN];
    conn.export_keying_material(&mut out, auth::EXPORTER_LABEL, b"")
        .map_err(|_| HandshakeError::Protocol("TLS exporter unavailable".into()))?;
    Ok(out)
}

/// Connector: send our tag, check theirs, then Hello both ways.
pub(super) async fn as_connector(
    conn: &quinn::Connection,
    node: &str,
    secret: &[u8],
) -> Result<Ready, HandshakeError> {
    let exp = exporter(conn)?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(lost)?;
    send.write_all(&auth::tag(secret, Role::Connector, &exp))
        .await?;
    let mut theirs = [0; TAG_LEN];
    recv.read_exact(&mut theirs).await?;
    if !auth::verify(secret, Role::Acceptor, &exp, &theirs) {
        return Err(HandshakeError::WrongSecret);
    }
    let mut hello = Vec::new();
    encode_control(&ControlMsg::Hello { node: node.into() }, &mut hello);
    send.write_all(&hello).await?;
    let (peer, decoder) = read_hello(&mut recv, node).await?;
    Ok(Ready {
        peer,
        send,
        recv,
        decoder,
    })
}

/// Acceptor: check the connector's tag before revealing anything, then answer with ours.
pub(super) async fn as_acceptor(
    conn: &quinn::Connection,
    node: &str,
    secret: &[u8],
) -> Result<Ready, HandshakeError> {
    let (mut send, mut recv) = conn.accept_bi().await.map_err(lost)?;
    let exp = exporter(conn)?;
    let mut theirs = [0; TAG_LEN];
    recv.read_exact(&mut theirs).await?;
    if !auth::verify(secret, Role::Connector, &exp, &theirs) {
        return Err(HandshakeError::WrongSecret);
    }
    let mut out = auth::tag(secret, Role::Acceptor, &exp).to_vec();
    encode_control(&ControlMsg::Hello { node: node.into() }, &mut out);
    send.write_all(&out).await?;
    let (peer, decoder) = read_hello(&mut recv, node).await?;
    Ok(Ready {
        peer,
        send,
        recv,
        decoder,
    })
}

async fn read_hello(
    recv: &mut RecvStream,
    own: &str,
) -> Result<(String, ControlDecoder), HandshakeError> {
    let mut decoder = ControlDecoder::new();
    loop {
        match decoder.next() {
            Some(Ok(ControlMsg::Hello { node })) => {
                if !usable_name(&node) {
                    return Err(HandshakeError::Protocol(
                        "unusable node name in Hello".into(),
                    ));
                }
                // Two nodes sharing a name would corrupt the directory; also catches a node
                // dialling its own address.
                if node == own {
                    return Err(HandshakeError::Protocol(format!(
                        "peer uses this node's own name {own:?}"
                    )));
                }
                return Ok((node, decoder));
            }
            Some(Ok(_)) => {
                return Err(HandshakeError::Protocol(
                    "first control frame is not Hello".into(),
                ))
            }
            Some(Err(e)) => return Err(HandshakeError::Protocol(format!("bad Hello: {e}"))),
            None => {}
        }
        match recv.read_chunk(READ_CHUNK, true).await? {
            Some(chunk) => decoder.push(&chunk.bytes),
            None => {
                return Err(HandshakeError::Protocol(
                    "control stream ended before Hello".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::usable_name;

    #[test]
    fn node_names_follow_the_directory_rule() {
        assert!(usable_name("sfu-1.example_A"));
        assert!(usable_name(&"n".repeat(64)));
        for bad in ["", "a:b", "a b", "é", "a\n", &"n".repeat(65)] {
            assert!(!usable_name(bad), "{bad:?}");
        }
    }
}
