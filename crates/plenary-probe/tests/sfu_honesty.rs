//! Honesty: impose a known loss and delay between the SFU and its viewers, and the probe
//! must report them (audio loss within ±1 percentage point, one-way delay within ±5 ms).
//! Audio is the yardstick: it has no retransmission, so imposed loss stays loss.
//!
//! Two ways to impose them:
//! - `netem_in_a_namespace`: the SFU in one network namespace, the probe in another, a veth
//!   pair between, `netem loss 5% delay 40ms` on the SFU's side. Needs root and a kernel
//!   with sch_netem; skips (and says why) otherwise.
//! - `impairment_relay_on_loopback`: a userspace relay on 127.0.0.2 that the SFU advertises
//!   as its media address, forwarding viewers' packets at once and the SFU's after 40 ms,
//!   dropping 5%. Runs anywhere.

mod common;

use clap::Parser;
use common::{relay, sfu_runtime, Impairment};
use plenary_probe::sfu::{run, SfuProbeArgs};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LOSS_PCT: f64 = 5.0;
const DELAY_MS: f64 = 40.0;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: SfuProbeArgs,
}

/// Runs the webinar scenario with 8 viewers for 20 s against `target` and checks the
/// pooled audio loss and delay.
fn probe_and_check(target: &str, tag: &str) {
    let dir =
        std::env::temp_dir().join(format!("plenary-sfu-honesty-{tag}-{}", std::process::id()));
    let cli = Cli::parse_from([
        "probe",
        "--target",
        target,
        "--scenario",
        "webinar",
        "--ramp",
        "8:8:8",
        "--hold",
        "20",
        "--warmup",
        "3",
        "--quiet",
        "--report",
        dir.to_str().unwrap(),
    ]);
    let code = run(cli.args).expect("probe runs");
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    let r: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let step = &r["steps"][0];
    let pooled = &step["pooled"];
    eprintln!("{tag}: exit {code}, {}; pooled {pooled}", r["summary"]);
    assert_eq!(step["joins"]["succeeded"], 9, "{}", step["joins"]);
    let loss = pooled["audio_loss_pct"].as_f64().unwrap();
    let expected = pooled["audio_expected"].as_u64().unwrap();
    assert!(
        expected > 5_000,
        "enough audio packets for a ±1 point check: {expected}"
    );
    assert!(
        (loss - LOSS_PCT).abs() <= 1.0,
        "imposed {LOSS_PCT}% audio loss, measured {loss:.2}%"
    );
    let delay = pooled["audio_delay_p50_ms"].as_f64().unwrap();
    assert!(
        (delay - DELAY_MS).abs() <= 5.0,
        "imposed {DELAY_MS} ms, measured {delay:.2} ms"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn impairment_relay_on_loopback() {
    let rt = sfu_runtime();
    let sfu = rt
        .block_on(plenary_sfu::serve(plenary_sfu::SfuConfig {
            http: "127.0.0.1:0".parse().unwrap(),
            media: "127.0.0.1:0".parse().unwrap(),
            public_ip: Some(IpAddr::from([127, 0, 0, 2])),
            ..plenary_sfu::SfuConfig::default()
        }))
        .expect("sfu starts");
    let media = sfu.media_addr();
    let front = UdpSocket::bind(SocketAddr::new([127, 0, 0, 2].into(), media.port()))
        .expect("relay binds the advertised address");
    let stop = Arc::new(AtomicBool::new(false));
    let relay_thread = {
        let stop = stop.clone();
        let imp = Impairment {
            loss_pct: LOSS_PCT,
            delay_ms: DELAY_MS,
        };
        std::thread::spawn(move || relay(front, media, stop, imp))
    };
    let target = format!("http://{}", sfu.http_addr());
    probe_and_check(&target, "relay");
    stop.store(true, Ordering::Relaxed);
    relay_thread.join().unwrap();
    rt.block_on(sfu.shutdown());
}

/// Network namespaces and a veth pair, removed on drop.
struct Netns {
    names: Vec<String>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Moves the calling thread into namespace `name`.
fn enter(name: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{name}")).expect("netns file");
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

fn setup(tag: u32) -> Result<Netns, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    let (s, c) = (format!("plpr-s-{tag}"), format!("plpr-c-{tag}"));
    sh(&["ip", "netns", "add", &s])?;
    let mut ns = Netns {
        names: vec![s.clone()],
    };
    sh(&["ip", "netns", "add", &c])?;
    ns.names.push(c.clone());
    let (vs, vc) = (format!("pls{tag}"), format!("plc{tag}"));
    sh(&[
        "ip", "link", "add", &vs, "type", "veth", "peer", "name", &vc,
    ])?;
    sh(&["ip", "link", "set", &vs, "netns", &s])?;
    sh(&["ip", "link", "set", &vc, "netns", &c])?;
    for (n, v, a) in [(&s, &vs, "10.213.77.1/24"), (&c, &vc, "10.213.77.2/24")] {
        sh(&["ip", "-n", n, "addr", "add", a, "dev", v])?;
        sh(&["ip", "-n", n, "link", "set", v, "up"])?;
        sh(&["ip", "-n", n, "link", "set", "lo", "up"])?;
    }
    sh(&[
        "ip", "netns", "exec", &s, "tc", "qdisc", "add", "dev", &vs, "root", "netem", "loss", "5%",
        "delay", "40ms",
    ])?;
    Ok(ns)
}

#[test]
fn netem_in_a_namespace() {
    let tag = std::process::id() % 100_000;
    let ns = match setup(tag) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!(
                "SKIPPED netem_in_a_namespace: {e} (impairment_relay_on_loopback covers the check)"
            );
            return;
        }
    };
    let (s, c) = (ns.names[0].clone(), ns.names[1].clone());
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let sfu_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            enter(&s);
            let rt = sfu_runtime();
            let any: SocketAddr = "10.213.77.1:0".parse().unwrap();
            let sfu = rt
                .block_on(plenary_sfu::serve(plenary_sfu::SfuConfig {
                    http: any,
                    media: any,
                    ..plenary_sfu::SfuConfig::default()
                }))
                .expect("sfu");
            addr_tx.send(sfu.http_addr()).unwrap();
            let until = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            rt.block_on(sfu.shutdown());
        })
    };
    let http = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("sfu address");
    let probe = std::thread::spawn(move || {
        enter(&c);
        probe_and_check(&format!("http://{http}"), "netem");
    });
    let result = probe.join();
    stop.store(true, Ordering::Relaxed);
    let _ = sfu_thread.join();
    drop(ns);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
