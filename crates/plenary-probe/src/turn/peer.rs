//! The peers the relay forwards to: UDP sockets the probe runs itself. An echo peer sends
//! each packet back to the relayed address it came from; a sink only counts (and, being
//! in the same process as the sender, measures one-way delay on the same clock).

use super::args::PeerMode;
use super::payload::Stamp;
use super::shared::{Counters, Shared};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Large buffers: one peer socket takes the traffic of many flows in bursts.
const PEER_SOCKET_BUFFER: usize = 4 << 20;

fn bind(ip: IpAddr) -> io::Result<UdpSocket> {
    let sock = Socket::new(
        Domain::for_address((ip, 0).into()),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = sock.set_recv_buffer_size(PEER_SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(PEER_SOCKET_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&SocketAddr::new(ip, 0).into())?;
    UdpSocket::from_std(sock.into())
}

/// Binds `count` peer sockets on `ip` and spawns one task per socket. Returns their
/// addresses; flow `i` uses `addrs[i % count]`.
pub fn spawn(
    ip: IpAddr,
    count: usize,
    mode: PeerMode,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> io::Result<(Vec<SocketAddr>, Vec<tokio::task::JoinHandle<()>>)> {
    let mut addrs = Vec::with_capacity(count);
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let sock = bind(ip)?;
        addrs.push(sock.local_addr()?);
        tasks.push(tokio::spawn(serve(
            sock,
            mode,
            shared.clone(),
            stop.clone(),
        )));
    }
    Ok((addrs, tasks))
}

async fn serve(
    sock: UdpSocket,
    mode: PeerMode,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 65_536];
    let c = &shared.counters;
    let mut errors_in_a_row = 0u32;
    loop {
        let (n, from) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors from earlier sends surface here; a socket that only errors
                // is broken, and its flows will show as lost.
                Err(_) if errors_in_a_row < 1000 => {
                    errors_in_a_row += 1;
                    continue;
                }
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        errors_in_a_row = 0;
        let data = &buf[..n];
        let Some(stamp) = Stamp::read(data) else {
            continue;
        };
        if let Some(mut flow) = shared.flow(stamp.flow) {
            flow.on_peer(stamp.epoch, stamp.seq, stamp.sent_us, shared.now_us());
        }
        Counters::add(&c.at_peer, 1);
        if mode == PeerMode::Echo {
            match sock.try_send_to(data, from) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Counters::add(&c.local_drops, 1),
                Err(_) => Counters::add(&c.send_errors, 1),
            }
        }
    }
}
