//! The room-API scenarios end to end against the embedded SFU on 127.0.0.1: a small
//! assembly (presenter with simulcast camera and screen share, cameras, listeners with
//! muted microphones in DTX) and a small meeting (every camera on, last-N). Checks what the
//! probe measured: joins, tracks received, no audio lost, frames rendered. No timing.

use clap::Parser;
use plenary_probe::sfu::{run, SfuProbeArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: SfuProbeArgs,
}

/// One probe at a time: two at once share the two cores with their SFU, and the audio-loss
/// check is about the client, not about an overloaded machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn probe(scenario: &str, tag: &str, ramp: &str) -> serde_json::Value {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("plenary-sfu-{tag}-{}", std::process::id()));
    let cli = Cli::parse_from([
        "probe",
        "--embedded",
        "--scenario",
        scenario,
        "--ramp",
        ramp,
        "--hold",
        "4",
        "--warmup",
        "3",
        "--quiet",
        "--report",
        dir.to_str().unwrap(),
    ]);
    let code = run(cli.args).expect("probe runs");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report"))
            .expect("JSON");
    eprintln!(
        "{tag}: exit {code}: {}; pooled {}",
        r["summary"], r["steps"][0]["pooled"]
    );
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn check(r: &serde_json::Value, participants: u64) -> &serde_json::Value {
    let step = &r["steps"][0];
    assert_eq!(
        step["joins"]["succeeded"], participants,
        "{}",
        step["joins"]
    );
    let m = &step["metrics"];
    assert_eq!(
        m["audio_loss_pct"]["count"], participants,
        "every subscriber has audio: {}",
        m["audio_loss_pct"]
    );
    let max = |k: &str| m[k]["max"].as_f64().unwrap_or(f64::NAN);
    assert!(
        max("audio_loss_pct") <= 1.0,
        "audio loss {}",
        m["audio_loss_pct"]
    );
    // Video loss and delay are the server's to keep low (its pacer and layer choice
    // decide them); this test is about the client, so it only prints them.
    eprintln!("video loss {} delay {}", m["video_loss_pct"], m["delay_ms"]);
    assert!(
        max("frame_rate_pct") > 0.0,
        "every subscriber rendered frames: {}",
        m["frame_rate_pct"]
    );
    step
}

#[test]
fn assembly_over_the_room_api() {
    let r = probe("assembly", "assembly", "12:12:12");
    let step = check(&r, 12);
    // Each of the 12 gets the presenter's camera and screen and the other cameras.
    assert!(
        step["tracks_video"].as_u64().unwrap_or(0) >= 12 * 9,
        "{}",
        step["tracks_video"]
    );
}

#[test]
fn meeting_over_the_room_api() {
    let text = plenary_probe::sfu::scenario::BUILTIN
        .iter()
        .find(|(n, _)| *n == "meeting")
        .map(|(_, t)| t.replace("room_size = 50", "room_size = 6"))
        .unwrap();
    let path = std::env::temp_dir().join(format!("plenary-meeting-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let r = probe(path.to_str().unwrap(), "meeting", "6:6:6");
    let _ = std::fs::remove_file(&path);
    let step = check(&r, 6);
    assert!(
        step["tracks_video"].as_u64().unwrap_or(0) >= 6 * 5,
        "{}",
        step["tracks_video"]
    );
}
