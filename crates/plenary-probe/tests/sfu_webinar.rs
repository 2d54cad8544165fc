//! The webinar scenario end to end against the embedded SFU on 127.0.0.1: one presenter
//! over WHIP, five viewers over WHEP, a few seconds of synthetic VP8 and Opus. It checks
//! what the probe measured (everyone joined, nothing lost, frames rendered), not how fast
//! anything was: the machine is shared, so timing belongs to loadtest/, not to tests.
//! Once on the receive fast path (the default), once on str0m's (`--str0m-receive`), one
//! at a time.

use clap::Parser;
use plenary_probe::sfu::{run, SfuProbeArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: SfuProbeArgs,
}

/// Two embedded SFUs and probes at once would share two busy cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn webinar_against_the_embedded_sfu() {
    let r = webinar(&[]);
    assert_eq!(r["config"]["receive_path"], "fast");
    let fast = &r["steps"][0]["receive"]["fast"];
    assert!(fast["delivered"].as_u64().unwrap() > 1000, "{fast}");
    assert_eq!(fast["unrouted"], 0, "{fast}");
    assert_eq!(fast["srtp_rejected"], 0, "{fast}");
}

#[test]
fn webinar_on_str0m_s_receive_path() {
    let r = webinar(&["--str0m-receive"]);
    assert_eq!(r["config"]["receive_path"], "str0m");
    assert_eq!(r["steps"][0]["receive"]["fast"]["delivered"], 0);
}

/// Runs the webinar with 5 viewers and checks what every receive path must give; returns
/// the report.
fn webinar(extra: &[&str]) -> serde_json::Value {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tag = if extra.is_empty() { "fast" } else { "str0m" };
    let dir =
        std::env::temp_dir().join(format!("plenary-sfu-webinar-{tag}-{}", std::process::id()));
    let mut argv = vec![
        "probe",
        "--embedded",
        "--scenario",
        "webinar",
        "--ramp",
        "5:5:5",
        "--hold",
        "3",
        "--warmup",
        "1",
        "--quiet",
        "--report",
        dir.to_str().unwrap(),
    ];
    argv.extend_from_slice(extra);
    let cli = Cli::parse_from(argv);
    let code = run(cli.args).expect("probe runs");
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    let r: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    eprintln!("exit {code}: {}", r["summary"]);
    let step = &r["steps"][0];
    assert_eq!(
        step["joins"]["succeeded"], 6,
        "presenter + 5 viewers joined: {}",
        step["joins"]
    );
    assert_eq!(step["tracks_video"], 5);
    assert_eq!(step["tracks_audio"], 5);
    let m = &step["metrics"];
    let p = |k: &str, q: &str| m[k][q].as_f64().unwrap_or(f64::NAN);
    assert_eq!(m["audio_loss_pct"]["count"], 5);
    assert!(
        p("audio_loss_pct", "max") <= 1.0,
        "audio loss {}",
        m["audio_loss_pct"]
    );
    assert!(
        p("video_loss_pct", "max") <= 1.0,
        "video loss {}",
        m["video_loss_pct"]
    );
    // Every viewer rendered frames (the worst one still had some).
    assert!(
        p("frame_rate_pct", "max") > 0.0,
        "frame rate {}",
        m["frame_rate_pct"]
    );
    assert!(r["capacity"].is_u64() && r["valid"].is_boolean());
    assert!(r.get("first_breach").is_some());
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
    assert!(html.contains("<svg") && html.contains("Audio loss"));
    let ndjson = std::fs::read_to_string(dir.join("timeseries.ndjson")).expect("timeseries.ndjson");
    assert!(ndjson.lines().count() >= 3);
    for line in ndjson.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("one JSON object per line");
    }
    let _ = std::fs::remove_dir_all(&dir);
    r
}
