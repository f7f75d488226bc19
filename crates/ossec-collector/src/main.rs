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
    /// List the current agents with their status (like Wazuh's agent_control -l).
    List {
        /// Only agents with this status.
        #[arg(long, value_parser = ["never_connected", "pending", "active", "disconnected"])]
        status: Option<String>,
        /// `table` or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Add an agent and print the client.keys line to give it (like manage_agents -a). Running collectors accept it within 2 seconds.
    Add {
        /// The agent name (2-128 characters of A-Z a-z 0-9 . _ -).
        name: String,
        /// The address the agent may send from: an IP, a network (10.0.0.0/8) or `any`.
        #[arg(long)]
        ip: Option<String>,
        /// Group(s), comma-separated.
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove an agent; running collectors reject it within 2 seconds.
    Remove {
        /// The agent ID.
        id: String,
        /// Also remove an agent that the --keys file of `serve` manages.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write a client.keys of every current key (to FILE, mode 0600, or stdout).
    ExportKeys {
        file: Option<PathBuf>,
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
        .with_writer(std::io::stderr)
        // A closed stderr (a pipe whose reader went away) must not turn a
        // log line into a panic that loses the queued events: such lines
        // are dropped instead.
        .log_internal_errors(false);
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

/// Runs an `agents …` command against the store.
fn agents(command: AgentsCommand) -> i32 {
    use ossec_collector::tools::agents_cli;
    let store_args = match &command {
        AgentsCommand::ResetCounters { store, .. }
        | AgentsCommand::List { store, .. }
        | AgentsCommand::Add { store, .. }
        | AgentsCommand::Remove { store, .. }
        | AgentsCommand::ExportKeys { store, .. } => store,
    };
    let args = ServeArgs {
        database_url: store_args.database_url.clone(),
        database_url_file: store_args.database_url_file.clone(),
        config: store_args.config.clone(),
        ..Default::default()
    };
    let settings = match args.resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let result = runtime().map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(async {
            let store = agents_cli::open(&settings.database_url).await?;
            let out = match command {
                AgentsCommand::ResetCounters { id, .. } => {
                    if store.reset_counters(&id).await? {
                        format!("agent {id}: receive counters reset; a running collector applies it within 2 seconds\n")
                    } else {
                        anyhow::bail!("no agent {id} in the store");
                    }
                }
                AgentsCommand::List { status, format, .. } => {
                    let status = status.as_deref().map(ossec_store::AgentStatus::parse);
                    agents_cli::list(&store, status, format == "json").await?
                }
                AgentsCommand::Add { name, ip, group, .. } => {
                    let k = agents_cli::add(&store, &name, ip.as_deref(), group.as_deref()).await?;
                    eprintln!("agent {} ({}) added; give the agent this client.keys line (running collectors accept it within 2 seconds):", k.id, k.name);
                    format!("{} {} {} {}\n", k.id, k.name, k.ip, k.key)
                }
                AgentsCommand::Remove { id, force, .. } => {
                    let k = agents_cli::remove(&store, &id, force).await?;
                    format!("agent {} ({}) removed; running collectors reject it within 2 seconds\n", k.id, k.name)
                }
                AgentsCommand::ExportKeys { file, .. } => {
                    let text = agents_cli::export(&store).await?;
                    match file {
                        Some(path) => {
                            ossec_collector::tools::write_secret_file(&path, text.as_bytes())
                                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                            eprintln!("wrote {} keys to {}", text.lines().count(), path.display());
                            String::new()
                        }
                        None => text,
                    }
                }
            };
            store.close().await;
            anyhow::Ok(out)
        })
    });
    match result {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
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
            let settings_json = settings.log_format == LogFormat::Json;
            let result = runtime()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(ossec_collector::server::run(settings)));
            match result {
                Ok(()) => 0,
                Err(e) => {
                    // One line: JSON logs get it as a log event (for log
                    // pipelines), text logs as a plain `error:` line.
                    if settings_json {
                        tracing::error!("{e:#}");
                    } else {
                        eprintln!("error: {e:#}");
                    }
                    1
                }
            }
        }
        Command::Agents { command } => agents(command),
    };
    std::process::exit(code);
}
