//! `plenary egress` without building the whole `plenary` binary (quicker while working on
//! this crate): `cargo run -p plenary-egress --example egress -- --from ... --to ...`.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: plenary_egress::EgressArgs,
}

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(plenary_egress::run(Cli::parse().args))
}
