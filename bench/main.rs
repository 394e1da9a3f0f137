//! `switchboard-bench`: load tools for the Switchboard gateway.
//!
//! `switchboard-bench idle` opens many idle `/v1/receive` (SSE) connections
//! from one single-threaded mio event loop and measures how much memory the
//! server spends per idle connection. See `bench/idle.sh` and `PERF.md`.
//! `relay`, `churn` and `detect` are the other scenarios, `floor` the
//! kernel's share of a relayed message; `--target` picks
//! Switchboard or a peer (nginx + nchan, Redis pub/sub, Mosquitto) where it applies.

mod admin;
mod churn;
mod detect;
mod floor;
mod idle;
mod mem;
mod mqtt;
mod proto;
mod relay;
mod target;
mod ws;

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
    /// S keep-alive senders post fixed-size messages to R receivers: messages/s, latency, exactly-once.
    Relay(relay::RelayArgs),
    /// Connect/receive/disconnect cycles at a fixed rate, then a leak check against the baseline.
    Churn(churn::ChurnArgs),
    /// Time until the server notices receive clients that vanished (clean close, silent loss).
    Detect(detect::DetectArgs),
    /// The kernel's share of a relayed message: one read and two writes of its sizes on loopback TCP.
    Floor(floor::FloorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Idle(a) => idle::run(a),
        Command::Relay(a) => relay::run(a),
        Command::Churn(a) => churn::run(a),
        Command::Detect(a) => detect::run(a),
        Command::Floor(a) => floor::run(a),
    }
}
