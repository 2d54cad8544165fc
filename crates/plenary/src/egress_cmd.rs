//! `plenary egress`: hands the arguments to the egress crate and its exit code to the shell.

use std::process::ExitCode;

pub fn run(args: plenary_egress::EgressArgs) -> ExitCode {
    ExitCode::from(plenary_egress::run(args))
}
