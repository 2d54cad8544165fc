//! `plenary`: one binary, one subcommand per job.

mod cred;
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
    Turn(turn_cmd::TurnArgs),
    /// Print a TURN REST username and password made from a shared secret.
    Cred(cred::CredArgs),
    /// Validate a TURN config (Plenary TOML or coturn syntax) without starting.
    CheckConfig(turn_cmd::ConfigSource),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Turn(args) => turn_cmd::run(args),
        Command::Cred(args) => cred::run(args),
        Command::CheckConfig(source) => turn_cmd::check(source),
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
