//! `ossec-bench`: the benchmarks as code. Each subcommand starts what it
//! needs (a PostgreSQL cluster of its own, `ossec-collector serve`, the
//! agent simulator, the C reference decoder), measures, prints a human
//! table and then ONE JSON object as its last line of stdout (the field
//! names are a contract for other tools; see docs/benchmarks.md).

mod decode;
mod e2e;
mod fleet;
mod pg;
mod procs;
mod report;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ossec-bench",
    version,
    about = "Benchmarks of ossec-collector stated as ratios against limits measured in the same run; prints a table and one JSON object as its last line."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pre-sealed agents into `serve` on PostgreSQL, against PostgreSQL's own binary COPY of the same rows.
    E2e(e2e::Args),
    /// Per-message decode (decrypt, inflate, MD5 check, counters) against the C reference in bench/reference/.
    Decode(decode::Args),
    /// Many idle TCP agents: RSS per connected agent and ACK latency.
    Fleet(fleet::Args),
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::E2e(a) => e2e::run(a),
        Command::Decode(a) => decode::run(a),
        Command::Fleet(a) => fleet::run(a),
    };
    if let Err(e) = r {
        eprintln!("ossec-bench: error: {e:#}");
        std::process::exit(1);
    }
}
