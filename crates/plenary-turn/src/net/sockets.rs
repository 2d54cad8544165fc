//! Socket creation with the options each role needs (socket2), returned as non-blocking
//! std sockets so they can be created on one thread and registered with another thread's
//! runtime.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};

/// Kernel buffers for the shared listening sockets: bursts from many clients land here.
/// The kernel caps them at net.core.{r,w}mem_max, so failure to get this much is fine.
const LISTEN_SOCKET_BUFFER: usize = 4 << 20;

/// The UDP listening sockets of every worker on `addr`. Each binds with SO_REUSEPORT and
/// the kernel spreads clients across them by 4-tuple hash, so one client always lands on
/// the same worker.
///
/// SO_REUSEPORT would also let us silently join another process's group on the same port
/// (same user: a second instance, or coturn), splitting traffic between the two. So the
/// address is first bound without it, which fails if anyone holds it.
pub(crate) fn bind_udp_group(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    drop(udp_socket(addr, false)?);
    (0..n).map(|_| udp_socket(addr, true)).collect()
}

fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_port(reuse_port)?;
    sock.set_nonblocking(true)?;
    let _ = sock.set_recv_buffer_size(LISTEN_SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(LISTEN_SOCKET_BUFFER);
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// A relay socket: exclusive (no SO_REUSEADDR/SO_REUSEPORT, so nobody shares its traffic),
/// IPv6 sockets IPv6-only so an IPv6 allocation never relays IPv4.
pub(crate) fn bind_relay(ip: IpAddr, port: u16) -> io::Result<std::net::UdpSocket> {
    let addr = SocketAddr::new(ip, port);
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// A TCP listener. SO_REUSEADDR so a restart does not wait for TIME_WAIT to clear.
pub(crate) fn bind_tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

/// The source address the kernel would pick to reach the public internet, found by
/// "connecting" a UDP socket (a route lookup: no packet is sent). Used to report a real
/// relay address when none is configured and we listen on the wildcard.
pub(crate) fn primary_address(v6: bool) -> Option<IpAddr> {
    let (bind, probe): (SocketAddr, SocketAddr) = if v6 {
        (
            ([0u16; 8], 0).into(),
            ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 9).into(),
        )
    } else {
        (([0, 0, 0, 0], 0).into(), ([192, 0, 2, 1], 9).into())
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(probe).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_group_refuses_a_port_someone_holds() {
        let first = bind_udp_group(([127, 0, 0, 1], 0).into(), 1).expect("first");
        let addr = first[0].local_addr().expect("addr");
        let group = bind_udp_group(addr, 2);
        assert_eq!(
            group.expect_err("port held").kind(),
            io::ErrorKind::AddrInUse
        );
        drop(first);
        let group = bind_udp_group(addr, 3).expect("free again");
        assert!(group.iter().all(|s| s.local_addr().ok() == Some(addr)));
    }
}
