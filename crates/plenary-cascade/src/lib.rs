//! Cascade: one meeting across several `plenary sfu` nodes.
//!
//! - `wire`: the sans-IO link format. Media is RTP over QUIC datagrams
//!   (draft-ietf-avtcore-rtp-over-quic: a varint flow id, then the RTP packet); control is
//!   length-prefixed JSON frames on one reliable stream.
//! - `auth`: both ends prove they hold the cluster secret, bound to the QUIC session.
//! - `link`: the quinn driver: one connection per pair of nodes, carrying every room they share.
//! - `directory`: the Redis (or Valkey) control plane: heartbeats, room → nodes, track → owner,
//!   load.

pub mod auth;
pub mod directory;
pub mod link;
pub mod metrics;
pub mod wire;
