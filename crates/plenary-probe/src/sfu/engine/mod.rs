//! The IO side of the probe: peers built on str0m (the SFU's own stack, decision 0002) in
//! RTP mode, and driver threads that run many of them over non-blocking sockets.

pub mod build;
pub mod clock;
pub mod driver;
pub mod load;
pub mod peer;
