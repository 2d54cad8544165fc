//! `plenary probe turn`: the TURN load generator.
//!
//! - [`client`]: sans-IO TURN client (401 → Allocate → ChannelBind/CreatePermission,
//!   refreshes, release), tested with canned messages.
//! - [`flow`]: flow shapes and the single-timer pacing schedule.
//! - [`payload`]: the timestamp/sequence header every packet carries.
//! - `conn`, `alloc`, `sender`, `peer`, `run`: the thin tokio driver.
//! - `step`: one measured step reduced to a result and a verdict.

mod alloc;
mod args;
pub mod client;
mod conn;
pub mod flow;
mod outcome;
pub mod payload;
mod peer;
mod plan;
mod run;
mod sender;
mod shared;
pub mod step;
mod tls;

pub use args::{name, FlowKind, PeerMode, Transport, TurnProbeArgs};

use crate::report;
use anyhow::Context as _;

/// Runs the probe and returns the process exit code: 0 held, 1 thresholds breached (or
/// capacity below `--require`), 2 invalid run. Errors are setup problems (bad arguments,
/// unresolvable server, unwritable report directory). Builds its own tokio runtime.
pub fn run(args: TurnProbeArgs) -> anyhow::Result<i32> {
    let plan = plan::Plan::new(&args)?;
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let started = std::time::SystemTime::now();
    let budget = plan.budget(args.setup_concurrency);
    let output = runtime.block_on(async {
        tokio::time::timeout(budget, run::execute(&args, &plan))
            .await
            .map_err(|_| anyhow::anyhow!("run exceeded its time budget of {budget:?}"))?
    })?;
    // Tasks still holding sockets (a wedged server) must not delay the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let report = outcome::build_report(&args, &plan, output, started);
    print!("{}", report::table::summary(&report));
    if let Some(dir) = &args.report {
        report::write(dir, &report)
            .with_context(|| format!("writing the report to {}", dir.display()))?;
        eprintln!("report: {}/report.html", dir.display());
    }
    Ok(report.result.exit_code)
}
