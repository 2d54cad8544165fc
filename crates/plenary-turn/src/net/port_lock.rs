//! One owner per listening port. The UDP listening sockets use SO_REUSEPORT so that every
//! worker shares the port; a second `plenary turn` on the same port would join that group
//! and the kernel would split clients between the two (one of them perhaps draining, answering
//! 508). Each listening port is therefore claimed first by binding an abstract Unix socket
//! named after it. The name is per network namespace, as ports are, and the kernel frees it
//! when the process ends, however it ends: no stale lock file after a crash.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// A claimed port; the claim lasts as long as this value (in practice, the process).
#[derive(Debug)]
pub(crate) struct PortClaim {
    _socket: UnixDatagram,
}

/// The abstract socket name for `port` (shown by `ss -xl` as `@plenary-turn/port/N`).
fn name(port: u16) -> String {
    format!("plenary-turn/port/{port}")
}

/// Claims `port` for this process. `AddrInUse` when another process holds it.
pub(crate) fn claim(port: u16) -> io::Result<PortClaim> {
    let addr = SocketAddr::from_abstract_name(name(port).as_bytes())?;
    let socket = UnixDatagram::bind_addr(&addr)?;
    Ok(PortClaim { _socket: socket })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_has_one_claim_at_a_time() {
        // A port no test server uses: listening ports there are picked from 1024..20000 or
        // the ephemeral range, never 1.
        let first = claim(1).expect("first claim");
        assert_eq!(
            claim(1).expect_err("second claim").kind(),
            io::ErrorKind::AddrInUse
        );
        drop(first);
        claim(1).expect("claimable again once released");
    }
}
