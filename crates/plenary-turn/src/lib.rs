//! STUN/TURN server for Plenary.
//!
//! - [`stun`]: zero-copy wire codec.
//! - [`policy`]: which peers may be relayed to.
//! - [`server`]: the sans-IO server core (allocations, auth, quotas).
//! - [`config`]: typed config from Plenary TOML or coturn syntax.
//! - [`net`]: the tokio/socket2/rustls drivers. The only module that does IO.

pub mod config;
pub mod net;
pub mod policy;
pub mod server;
pub mod stun;
