//! The IO side of the probe: peers built on str0m (the SFU's own stack, decision 0002) in
//! RTP mode, and driver threads that run many of them over non-blocking sockets.

pub mod build;
pub mod clock;
pub mod driver;
pub mod load;
pub mod peer;

/// Whether the receive fast path takes the SFU's UDP GSO runs whole (`UDP_GRO` on its
/// sockets, one message per run, split back in user space): `PLENARY_PROBE_GRO=on`. Off
/// by default: side by side it saved no measurable probe or server CPU
/// (`loadtest/results/probe-receive-path.md`, "UDP GRO"). The sockets and the drivers'
/// read buffers must agree, so both ask here.
pub fn gro_wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WANTED.get_or_init(|| {
        cfg!(target_os = "linux")
            && std::env::var("PLENARY_PROBE_GRO").is_ok_and(|v| v.trim() == "on")
    })
}
