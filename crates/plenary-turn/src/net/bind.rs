//! Binding every listening socket before any thread starts, so bind errors come out of
//! `start`, and choosing the relay addresses.

use super::port_lock::{self, PortClaim};
use super::service::{BoundAddrs, StartError};
use super::sockets::{bind_tcp_listener, bind_udp_group, primary_address};
use crate::config::TurnConfig;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Bind attempts when a port is 0 (ephemeral) and the port picked for TCP turns out to be
/// taken for UDP (or on another address).
const EPHEMERAL_BIND_ATTEMPTS: usize = 10;

/// Sockets bound by `start` before any thread exists.
pub(crate) struct Bound {
    /// Per worker: one UDP socket per listening address.
    pub udp: Vec<Vec<std::net::UdpSocket>>,
    pub tcp: Vec<std::net::TcpListener>,
    pub addrs: BoundAddrs,
    /// This process's claim on each listening port (see `port_lock`); held until exit.
    pub claims: Vec<PortClaim>,
}

pub(crate) fn bind_with_retries(
    config: &TurnConfig,
    workers: usize,
    warnings: &mut Vec<String>,
) -> Result<Bound, StartError> {
    let ephemeral = config.listening_port == 0 || config.tls_listening_port == Some(0);
    let attempts = if ephemeral {
        EPHEMERAL_BIND_ATTEMPTS
    } else {
        1
    };
    let mut last = None;
    for _ in 0..attempts {
        let mut w = Vec::new();
        match bind_all(config, workers, &mut w) {
            Ok(b) => {
                warnings.extend(w);
                return Ok(b);
            }
            Err(e @ StartError::InUse { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(StartError::NoListener))
}

fn bind_all(
    config: &TurnConfig,
    workers: usize,
    warnings: &mut Vec<String>,
) -> Result<Bound, StartError> {
    let implicit = config.listening_ips.is_empty();
    let ips: Vec<IpAddr> = if implicit {
        vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()]
    } else {
        config.listening_ips.clone()
    };
    let err = |what, addr, source: io::Error| match source.kind() {
        io::ErrorKind::AddrInUse => StartError::InUse {
            what,
            addr,
            holder: "another process",
        },
        _ => StartError::Bind { what, addr, source },
    };
    let mut bound = Bound {
        udp: (0..workers).map(|_| Vec::new()).collect(),
        tcp: Vec::new(),
        addrs: BoundAddrs::default(),
        claims: Vec::new(),
    };
    let mut port = config.listening_port;
    let mut tls_port = config
        .tls_listening_port
        .filter(|&p| p == 0 || p != config.listening_port);
    // Fixed ports are claimed before anything is bound; ephemeral ones once the kernel has
    // picked them.
    let first_ip = ips.first().copied().unwrap_or(Ipv4Addr::UNSPECIFIED.into());
    for (what, p) in [("UDP/TCP", port), ("TLS", tls_port.unwrap_or(0))] {
        if p != 0 {
            bound
                .claims
                .push(claim(what, SocketAddr::new(first_ip, p))?);
        }
    }
    for ip in ips {
        let addr = SocketAddr::new(ip, port);
        let tcp = match bind_tcp_listener(addr) {
            Ok(l) => l,
            // The implicit IPv6 wildcard is best effort: hosts without IPv6 still start.
            Err(e) if implicit && ip.is_ipv6() && e.kind() != io::ErrorKind::AddrInUse => {
                warnings.push(format!("IPv6 unavailable ({e}): listening on IPv4 only"));
                continue;
            }
            Err(e) => return Err(err("TCP", addr, e)),
        };
        let local = tcp.local_addr().map_err(|e| err("TCP", addr, e))?;
        if port == 0 {
            bound.claims.push(claim("UDP/TCP", local)?);
        }
        port = local.port();
        let addr = SocketAddr::new(ip, port);
        let group = bind_udp_group(addr, workers).map_err(|e| err("UDP", addr, e))?;
        for (socks, s) in bound.udp.iter_mut().zip(group) {
            socks.push(s);
        }
        bound.addrs.udp.push(addr);
        bound.addrs.tcp.push(local);
        bound.tcp.push(tcp);
        if let Some(tp) = tls_port {
            let addr = SocketAddr::new(ip, tp);
            let l = bind_tcp_listener(addr).map_err(|e| err("TLS", addr, e))?;
            let local = l.local_addr().map_err(|e| err("TLS", addr, e))?;
            if tp == 0 {
                bound.claims.push(claim("TLS", local)?);
            }
            tls_port = Some(local.port());
            bound.addrs.tls.push(local);
            bound.tcp.push(l);
        }
    }
    if bound.addrs.udp.is_empty() {
        return Err(StartError::NoListener);
    }
    Ok(bound)
}

/// Claims `addr`'s port for this process (see `port_lock`).
fn claim(what: &'static str, addr: SocketAddr) -> Result<PortClaim, StartError> {
    port_lock::claim(addr.port()).map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => StartError::InUse {
            what,
            addr,
            holder: "another plenary turn on this host (perhaps still draining)",
        },
        _ => StartError::Bind { what, addr, source },
    })
}

/// Relay IPs: `relay_ips`, else the specific listening IPs, else (wildcard listening) the
/// host's primary address of each family listened on.
pub(crate) fn choose_relay_ips(
    config: &TurnConfig,
    listening: &[SocketAddr],
    warnings: &mut Vec<String>,
) -> Vec<IpAddr> {
    if !config.relay_ips.is_empty() {
        return config.relay_ips.clone();
    }
    let specific: Vec<IpAddr> = listening
        .iter()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    if !specific.is_empty() {
        return specific;
    }
    let mut ips = Vec::new();
    for v6 in [false, true] {
        if !listening.iter().any(|a| a.is_ipv6() == v6) {
            continue;
        }
        match primary_address(v6) {
            Some(ip) => ips.push(ip),
            None if !v6 => {
                warnings.push(
                    "no relay-ip set and no default route: relayed addresses will read 0.0.0.0; set relay-ip".into(),
                );
                ips.push(Ipv4Addr::UNSPECIFIED.into());
            }
            None => {}
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_config() -> TurnConfig {
        TurnConfig {
            listening_ips: vec![Ipv4Addr::LOCALHOST.into()],
            listening_port: 0,
            tls_listening_port: Some(0),
            ..TurnConfig::default()
        }
    }

    #[test]
    fn ephemeral_ports_are_resolved_and_shared_by_udp_and_tcp() {
        let mut w = Vec::new();
        let b = bind_with_retries(&loopback_config(), 3, &mut w).expect("bind");
        assert_eq!(b.udp.len(), 3);
        assert!(b.udp.iter().all(|s| s.len() == 1));
        let port = b.addrs.udp[0].port();
        assert_ne!(port, 0);
        assert_eq!(b.addrs.tcp[0].port(), port);
        for s in b.udp.iter().flatten() {
            assert_eq!(s.local_addr().expect("addr").port(), port);
        }
        assert_eq!(b.addrs.tls.len(), 1);
        assert_ne!(b.addrs.tls[0].port(), port);
        assert_eq!(b.tcp.len(), 2);
    }

    #[test]
    fn same_tls_and_main_port_binds_once() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        let p = probe.local_addr().expect("addr").port();
        drop(probe);
        let cfg = TurnConfig {
            listening_port: p,
            tls_listening_port: Some(p),
            ..loopback_config()
        };
        let mut w = Vec::new();
        match bind_with_retries(&cfg, 1, &mut w) {
            Ok(b) => {
                assert_eq!(b.tcp.len(), 1);
                assert!(b.addrs.tls.is_empty());
            }
            // Someone took the port between probe and bind.
            Err(StartError::Bind { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn relay_ips_prefer_config_then_listening() {
        let mut w = Vec::new();
        let cfg = TurnConfig {
            relay_ips: vec![Ipv4Addr::new(127, 0, 0, 2).into()],
            ..loopback_config()
        };
        let l = [SocketAddr::from(([127, 0, 0, 1], 3478))];
        assert_eq!(choose_relay_ips(&cfg, &l, &mut w), cfg.relay_ips);
        assert_eq!(
            choose_relay_ips(&loopback_config(), &l, &mut w),
            vec![IpAddr::from([127, 0, 0, 1])]
        );
        let wild = [SocketAddr::from(([0, 0, 0, 0], 3478))];
        let got = choose_relay_ips(&TurnConfig::default(), &wild, &mut w);
        assert_eq!(got.len(), 1);
        assert!(got[0].is_ipv4());
    }
}
