//! `plenary`: one binary, one subcommand per job.

mod cred;
mod egress_cmd;
mod sfu_cmd;
mod turn_cmd;
mod turn_run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "plenary",
    version,
    about = "Media-plane relay for cooperative video hosting",
    long_about = "Media-plane relay for cooperative video hosting.\n\n\
        Every subcommand runs with no arguments on an embedded default config."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the TURN/STUN server (a drop-in for coturn next to a BigBlueButton node).
    Turn(Box<turn_cmd::TurnArgs>),
    /// Run the selective forwarding unit: WHIP/WHEP, the room API and the demo page at /.
    Sfu(Box<sfu_cmd::SfuArgs>),
    /// Print a TURN REST username and password made from a shared secret.
    Cred(cred::CredArgs),
    /// Validate a TURN config (Plenary TOML or coturn syntax) without starting.
    CheckConfig(turn_cmd::ConfigSource),
    /// Pull a room's programme over WHEP and push it as a broadcast: H.264 at a fixed size and
    /// one mixed AAC track, over RTMP(S) and SRT, as HLS and as an MP4 recording. Each output
    /// reconnects on its own. Exit code: 0 stopped (signal or --duration), 1 media pipeline
    /// failure, 2 bad arguments, 3 WHEP refused (token), 4 GStreamer plugins missing.
    Egress(Box<plenary_egress::EgressArgs>),
    /// Load generators that measure a server's capacity.
    #[command(subcommand)]
    Probe(ProbeCommand),
}

#[derive(Subcommand)]
enum ProbeCommand {
    /// Synthetic TURN clients against any TURN server: allocation time, relayed packets,
    /// loss, RTT and jitter, optional staircase ramp with the knee, JSON and HTML report.
    /// Exit code: 0 held, 1 thresholds breached or capacity below --require, 2 invalid run.
    Turn(Box<plenary_probe::turn::TurnProbeArgs>),
    /// Synthetic WebRTC participants against an SFU (Plenary or Janus): a scenario from
    /// loadtest/*.toml, a staircase ramp, receiver-side QoE, the capacity that held, JSON,
    /// HTML and NDJSON reports. Exit code: 0 held (capacity >= --require), 1 below, 2 invalid.
    Sfu(Box<plenary_probe::sfu::SfuProbeArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Turn(args) => turn_cmd::run(*args),
        Command::Sfu(args) => sfu_cmd::run(*args),
        Command::Cred(args) => cred::run(args),
        Command::Egress(args) => return egress_cmd::run(*args),
        Command::CheckConfig(source) => turn_cmd::check(source),
        Command::Probe(ProbeCommand::Turn(args)) => {
            return match plenary_probe::turn::run(*args) {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(2)),
                Err(err) => {
                    eprintln!("plenary probe turn: {}", explain(&err));
                    ExitCode::from(2)
                }
            };
        }
        Command::Probe(ProbeCommand::Sfu(args)) => {
            let format = plenary_ops::logging::LogFormat::Plain;
            match plenary_ops::logging::init(&args.log_level, format, None) {
                Ok(_) => {}
                Err(err) => {
                    eprintln!("plenary probe sfu: --log-level: {err}");
                    return ExitCode::from(2);
                }
            }
            return match plenary_probe::sfu::run(*args) {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(2)),
                Err(err) => {
                    eprintln!("plenary probe sfu: {}", explain(&err));
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("plenary: {}", explain(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, skipping a cause whose text an outer message already quotes
/// (library errors often include their source in their own message).
fn explain(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
