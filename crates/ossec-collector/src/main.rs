//! The `ossec-collector` executable: parses the command line and hands off
//! to the library. Exit status: 0 success, 1 failure (or any input failed
//! for `decode`/`keys check`), 2 bad usage.

use std::path::PathBuf;

/// mimalloc: every event is a few allocations freed on another thread (the
/// store writer); glibc's malloc spent a third of the collector's CPU on
/// that pattern in the benchmark profile (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use ossec_collector::config::{LogFormat, ServeArgs};
use ossec_collector::tools;

#[derive(Parser)]
#[command(
    name = "ossec-collector",
    version,
    about = "Speaks the Wazuh/OSSEC agent protocol on port 1514 (UDP and TCP) and writes agent events into PostgreSQL or SQLite.",
    long_about = "Speaks the Wazuh/OSSEC agent protocol on port 1514 (UDP and TCP): finds each agent's key in client.keys, decrypts, decompresses and checks every message, answers agents like a Wazuh manager so they stay connected, and writes their events into a SQL store (SQLite by default, PostgreSQL in production).\n\nEvery `serve` flag can also be set with the environment variable OSSEC_COLLECTOR_<FLAG> (e.g. OSSEC_COLLECTOR_DATABASE_URL) or a key of the --config TOML file; precedence is flag > environment > file > default."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector: listen for agents and store their events.
    Serve(Box<ServeArgs>),
    /// Decode raw agent messages (files or --hex) into one JSON line each.
    Decode(tools::DecodeArgs),
    /// Inspect keys: derivation steps, or problems in a client.keys file.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Exit 0 if a running collector's /health answers 200 (for container healthchecks; needs no curl).
    Healthcheck {
        /// The /health URL (http only) [default: from OSSEC_COLLECTOR_METRICS_LISTEN, 0.0.0.0 meaning 127.0.0.1; else http://127.0.0.1:9514/health].
        #[arg(long, env = "OSSEC_COLLECTOR_HEALTH_URL")]
        url: Option<String>,
    },
    /// Act on agents' stored state.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print every step of an agent's key derivation (MD5 strings, 47-byte material, AES and Blowfish keys).
    Derive {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        /// The key field of the client.keys line.
        #[arg(long)]
        key: String,
    },
    /// Report what in a client.keys file would stop `serve` or silently break agents; exit 1 if anything.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Forget an agent's receive counters so that a reinstalled agent (whose counters restarted) is accepted again. Works on a running collector too.
    ResetCounters {
        /// The agent ID.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the store is (same settings as `serve`).
#[derive(clap::Args)]
struct StoreArgs {
    /// Store URL [default: sqlite://ossec-collector.db].
    #[arg(long, env = "OSSEC_COLLECTOR_DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
    /// Read the store URL from this file.
    #[arg(long, env = "OSSEC_COLLECTOR_DATABASE_URL_FILE", value_name = "FILE")]
    database_url_file: Option<PathBuf>,
    /// The TOML config file of `serve`.
    #[arg(long, env = "OSSEC_COLLECTOR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

fn init_logs(format: LogFormat) {
    // sqlx reports "relation _sqlx_migrations already exists" as a notice at
    // every start; that is not news.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Decode(a) => tools::decode(&a),
        Command::Keys {
            command: KeysCommand::Derive { id, name, key },
        } => tools::keys_derive(&id, &name, &key),
        Command::Keys {
            command: KeysCommand::Check { file },
        } => tools::keys_check(&file),
        Command::Healthcheck { url } => {
            let metrics = std::env::var("OSSEC_COLLECTOR_METRICS_LISTEN").ok();
            tools::healthcheck(&url.unwrap_or_else(|| tools::health_url(metrics.as_deref())))
        }
        Command::Serve(args) => {
            let settings = match args.resolve() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(2);
                }
            };
            init_logs(settings.log_format);
            let result = runtime()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(ossec_collector::server::run(settings)));
            match result {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
        Command::Agents {
            command: AgentsCommand::ResetCounters { id, store },
        } => {
            let args = ServeArgs {
                database_url: store.database_url,
                database_url_file: store.database_url_file,
                config: store.config,
                ..Default::default()
            };
            let settings = match args.resolve() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(2);
                }
            };
            let result = runtime().map_err(anyhow::Error::from).and_then(|rt| {
                rt.block_on(async {
                    let store = ossec_store::Store::connect(&settings.database_url).await?;
                    let found = store.reset_counters(&id).await?;
                    store.close().await;
                    anyhow::Ok(found)
                })
            });
            match result {
                Ok(true) => {
                    println!("agent {id}: receive counters reset; a running collector applies it within 2 seconds");
                    0
                }
                Ok(false) => {
                    eprintln!("error: no agent {id} in the store");
                    1
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}
