//! `switchboard-bench`: load tools for the Switchboard gateway.
//!
//! `switchboard-bench idle` opens many idle `/v1/receive` (SSE) connections
//! from one single-threaded mio event loop and measures how much memory the
//! server spends per idle connection. See `bench/idle.sh` and `PERF.md`.

mod idle;
mod mem;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "switchboard-bench",
    about = "Load tools for the Switchboard gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open N idle receive (SSE) connections, hold them, and measure the server's memory per connection.
    Idle(idle::IdleArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Idle(a) => idle::run(a),
    }
}
