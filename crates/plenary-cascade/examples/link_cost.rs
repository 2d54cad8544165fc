//! CPU cost of one media datagram across a cascade link, both ends together: two endpoints
//! in this process on 127.0.0.1, one sending N datagrams of an RTP-sized payload at a fixed
//! rate, the other receiving and decoding them. Prints process CPU (user + system, from
//! getrusage) per datagram delivered, and the loss. Used by loadtest/cascade-link-cost.sh.
//!
//! cargo run --release -p plenary-cascade --example link_cost -- [N] [PPS] [PAYLOAD]

use std::time::{Duration, Instant};

use plenary_cascade::link::{Endpoint, LinkConfig};
use plenary_cascade::wire::{decode_datagram, MediaPacket};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we own; RUSAGE_SELF is always valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let pps: u64 = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let payload: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let secret = b"link-cost-cluster-secret-0123456789".to_vec();
    let any = "127.0.0.1:0".parse()?;
    let (a, _) = Endpoint::bind(LinkConfig {
        node: "a".into(),
        listen: any,
        secret: secret.clone(),
    })?;
    let (b, mut incoming) = Endpoint::bind(LinkConfig {
        node: "b".into(),
        listen: any,
        secret,
    })?;
    let link_a = a
        .connect(b.local_addr())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let link_b = incoming
        .recv()
        .await
        .ok_or_else(|| anyhow::anyhow!("no link"))?;
    let body = vec![0x5au8; payload];
    let rx = link_b.handle.clone();
    let receiver = tokio::spawn(async move {
        let mut got = 0u64;
        let idle = Duration::from_millis(500);
        while let Ok(Ok(d)) = tokio::time::timeout(idle, rx.recv_datagram()).await {
            if decode_datagram(&d).is_ok() {
                got += 1;
            }
        }
        got
    });
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut sent = 0u64;
    let tick = Duration::from_millis(1);
    let per_tick = (pps / 1000).max(1);
    let mut next = Instant::now();
    while sent < n {
        for _ in 0..per_tick.min(n - sent) {
            let p = MediaPacket {
                track: 0x105,
                layer: 0,
                ssrc: 1,
                pt: 96,
                seq: sent as u16,
                ts: sent as u32 * 3000,
                marker: false,
                audio_level: None,
                voice_activity: None,
                video_orientation: None,
                payload: &body,
            };
            link_a.handle.send_media(&p);
            sent += 1;
        }
        next += tick;
        tokio::time::sleep_until(next.into()).await;
    }
    let got = receiver.await?;
    let cpu = cpu_seconds() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    println!(
        "link_cost: {sent} datagrams of {payload} B payload at {pps}/s: delivered {got} ({:.3}% lost), process CPU {cpu:.2} s over {wall:.1} s = {:.2} us per datagram (send + receive)",
        100.0 * (sent - got) as f64 / sent as f64,
        cpu * 1e6 / got.max(1) as f64
    );
    Ok(())
}
