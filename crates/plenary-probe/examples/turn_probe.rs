//! `plenary probe turn` without the `plenary` binary, for working on the probe alone:
//! `cargo run -p plenary-probe --release --example turn_probe -- --help`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "turn_probe")]
struct Cli {
    #[command(flatten)]
    args: plenary_probe::turn::TurnProbeArgs,
}

fn main() {
    let code = match plenary_probe::turn::run(Cli::parse().args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("turn_probe: {err:#}");
            2
        }
    };
    std::process::exit(code);
}
