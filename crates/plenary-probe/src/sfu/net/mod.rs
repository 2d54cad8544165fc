//! Signalling with servers: WHIP/WHEP, the room API (0003) and Janus's HTTP API.
pub mod http;
pub mod janus;
pub mod rooms;
pub mod stay;
pub mod whip;
