//! `plenary`: one binary, one subcommand per job.

fn main() {
    println!("plenary: not yet");
}
