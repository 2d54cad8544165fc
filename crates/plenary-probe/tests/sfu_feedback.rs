//! The receive fast path keeps the server's work what a browser causes: its subscribers'
//! TWCC feedback drives the SFU's bandwidth estimator and their NACKs make it retransmit.
//! The SFU runs in this process behind a relay that drops 5% of what it sends, with its
//! Prometheus exporter on loopback; the probe's own counters say what it sent and got.

mod common;

use clap::Parser;
use common::{relay, sfu_runtime, Impairment};
use plenary_probe::sfu::{run, SfuProbeArgs};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: SfuProbeArgs,
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("exporter");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the first sample of `name` (any labels), 0 if absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn fast_path_subscribers_send_twcc_and_nacks_the_sfu_acts_on() {
    let metrics = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    plenary_ops::metrics::start_exporter(metrics).expect("exporter starts");
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
            loss_pct: 5.0,
            delay_ms: 20.0,
        };
        std::thread::spawn(move || relay(front, media, stop, imp))
    };
    let before = scrape(metrics);
    let dir = std::env::temp_dir().join(format!("plenary-sfu-feedback-{}", std::process::id()));
    let cli = Cli::parse_from([
        "probe",
        "--target",
        &format!("http://{}", sfu.http_addr()),
        "--scenario",
        "webinar",
        "--ramp",
        "4:4:4",
        "--hold",
        "8",
        "--warmup",
        "2",
        "--quiet",
        "--report",
        dir.to_str().unwrap(),
    ]);
    let code = run(cli.args).expect("probe runs");
    let after = scrape(metrics);
    stop.store(true, Ordering::Relaxed);
    relay_thread.join().unwrap();
    rt.block_on(sfu.shutdown());

    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    let r: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let step = &r["steps"][0];
    let fast = &step["receive"]["fast"];
    let n = |k: &str| fast[k].as_u64().unwrap_or(0);
    let d = |name: &str| sample(&after, name) - sample(&before, name);
    let nacks = d("plenary_sfu_nacks_received_total");
    let estimates = d("plenary_sfu_subscriber_estimate_bps_count");
    eprintln!(
        "exit {code}: {}\nreceive {}\npooled {}\nsfu: nacks received {nacks}, subscriber estimates {estimates}",
        r["summary"], step["receive"], step["pooled"]
    );
    assert_eq!(step["receive"]["path"], "fast");
    assert_eq!(r["config"]["receive_path"], "fast");
    assert_eq!(step["joins"]["succeeded"], 5, "{}", step["joins"]);
    assert_eq!(n("srtp_rejected"), 0, "every SRTP packet opened: {fast}");
    assert_eq!(n("unrouted"), 0, "every SSRC mapped to a track: {fast}");
    // 4 viewers, one report per 100 ms each, over 8 s.
    assert!(n("twcc_reports") > 4 * 8 * 5, "TWCC reports sent: {fast}");
    // 5% of the video dropped: the viewers ask for it and get retransmissions.
    assert!(n("nacked") > 20, "NACKed packets: {fast}");
    assert!(n("rtx") > 20, "retransmissions received: {fast}");
    // Each viewer's fast path and its str0m both send a reference time each second, from
    // two SSRCs; the SFU must answer both (about 7 answers per viewer in the hold). Answering
    // only the latest of them gave 1 to 11 in all, and failed CI once with 0.
    assert!(
        n("rtt_samples") > 4 * 3,
        "the SFU answered the RRTRs: {fast}"
    );

    assert!(nacks > 0.0, "the SFU counted the viewers' NACKs");
    // Without TWCC the estimator reports its start value once per subscriber (4 here,
    // measured with the fast path's TWCC turned off); the viewers' reports move it.
    assert!(
        estimates > 2.0 * 4.0,
        "the SFU's estimator moved on the viewers' TWCC: {estimates} estimates"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
