//! The `ossec-agent-sim` executable: parses the options, loads or writes
//! the keys, runs the simulation and prints ONE JSON summary on stdout
//! (progress and logs go to stderr). Exit status: 0 when the run completed
//! (whatever it measured), 1 on a fatal error, 2 on bad usage.

use std::net::SocketAddr;
use std::path::PathBuf;

/// mimalloc, as in the collector: the load generator should spend as little
/// of the machine as it can on allocation.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ossec_agent_sim::{generate_keys, Cidr, CipherChoice, Flavor, Mix, SimConfig, TransportChoice};
use ossec_proto::ClientKeys;
use rand::SeedableRng;

#[derive(Parser, Debug)]
#[command(
    name = "ossec-agent-sim",
    version,
    about = "Simulates Wazuh 4.x / OSSEC agents against a port-1514 server and prints one JSON summary.",
    long_about = "Simulates Wazuh 4.x (default) or OSSEC 3.x/4.x agents against a server of the agent protocol (port 1514): each agent connects, sends its startup until it is ACKed, keepalives every --keepalive seconds (checking that every reply decodes to exactly `#!-agent ack `), reconnects when ACKs stop, and sends a realistic mix of events (sshd syslog, FIM JSON, Windows eventchannel JSON, rootcheck; 100 B to 4 KB). At the end ONE JSON object is printed on stdout: sent, acked, missing_acks, reconnects, errors, achieved_eps and more."
)]
struct Args {
    /// The server (host:port).
    #[arg(long, default_value = "127.0.0.1:1514", value_name = "ADDR")]
    server: String,
    /// How many agents to simulate [default: every agent of the keys].
    #[arg(long, value_name = "N")]
    agents: Option<usize>,
    /// A client.keys with the agents to simulate (the same file the server uses).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["generate_keys", "enroll"])]
    keys: Option<PathBuf>,
    /// Enroll the agents first over TLS at this address (port 1515), as Wazuh 4.x agents do, then use the returned keys on 1514. Needs --agents.
    #[arg(
        long,
        value_name = "ADDR",
        requires = "agents",
        conflicts_with = "generate_keys"
    )]
    enroll: Option<SocketAddr>,
    /// The enrollment password (first line of the file), sent as `OSSEC PASS: …`.
    #[arg(long, value_name = "FILE", requires = "enroll")]
    enroll_password_file: Option<PathBuf>,
    /// Names of enrolled agents: PREFIX-0001, PREFIX-0002, … [default: sim-<random>].
    #[arg(long, value_name = "PREFIX", requires = "enroll")]
    enroll_prefix: Option<String>,
    /// Generate N agents (IDs 001…, names sim-NNN, IP any, random 64-hex keys)…
    #[arg(long, value_name = "N", requires = "write_keys")]
    generate_keys: Option<usize>,
    /// …and write them to this client.keys for the server, then simulate them (with --enroll: the enrolled keys).
    #[arg(long, value_name = "FILE")]
    write_keys: Option<PathBuf>,
    /// Only write the keys (with --generate-keys/--write-keys), do not simulate.
    #[arg(long)]
    keys_only: bool,
    /// tcp, udp, or mixed (even agents TCP, odd UDP) [default: tcp; udp for --flavor ossec].
    #[arg(long, value_enum)]
    transport: Option<TransportChoice>,
    /// aes, blowfish, or mixed (alternating pairs of agents).
    #[arg(long, value_enum, default_value = "aes")]
    cipher: CipherChoice,
    /// wazuh (4.x) or ossec (3.x with blowfish, 4.x random-IV AES with aes; UDP only).
    #[arg(long, value_enum, default_value = "wazuh")]
    flavor: Flavor,
    /// Events per second over all agents; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0, value_name = "EPS")]
    eps: f64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    duration: f64,
    /// Seconds between keepalives.
    #[arg(long, default_value_t = 20.0, value_name = "SECONDS")]
    keepalive: f64,
    /// Reconnect when a startup/keepalive is not ACKed within this many seconds [default: 3 × keepalive].
    #[arg(long, value_name = "SECONDS")]
    ack_timeout: Option<f64>,
    /// Seconds between startup resends while waiting for the ACK.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    startup_retry: f64,
    /// Spread agent starts over this many seconds [default: agents / 2000, at most 10].
    #[arg(long, value_name = "SECONDS")]
    ramp_up: Option<f64>,
    /// Bind each agent to its own source address from this network (e.g. 127.1.0.0/16), so many connections do not run out of ports.
    #[arg(long, value_name = "CIDR")]
    source_ips: Option<Cidr>,
    /// Put the send time into every event (`stamp=<unix µs> ` after the syslog header, `"stamp":<µs>` first in JSON).
    #[arg(long)]
    stamp: bool,
    /// Event mix weights, e.g. syslog=55,syscheck=15,eventchannel=20,rootcheck=10.
    #[arg(long, value_name = "WEIGHTS")]
    mix: Option<Mix>,
    /// zlib level of the messages: 9 like real agents; receivers accept any level, and 1 costs the simulator half the CPU.
    #[arg(long, default_value_t = 9, value_name = "0-9", value_parser = clap::value_parser!(u32).range(0..=9))]
    zlib_level: u32,
    /// Seal this many events (over all agents) before the run and only write them while it runs, so that the simulator takes almost no CPU from the server it measures; `auto` = --eps × --duration. Agents still handshake, keepalive and check ACKs live; with --stamp, one live stamped event follows every --stamp-every pre-sealed ones; an agent that has sent all of its share sends no more events. Memory: about 0.5 KB per event [default: 0, seal every event when it is sent].
    #[arg(long, value_name = "N|auto")]
    preseal: Option<String>,
    /// With --preseal and --stamp: a live stamped event after every N pre-sealed ones of an agent.
    #[arg(long, value_name = "N", default_value_t = ossec_agent_sim::preseal::STAMP_EVERY as u64, value_parser = clap::value_parser!(u64).range(1..))]
    stamp_every: u64,
    /// Seconds to wait at the end for outstanding ACKs.
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    ack_grace: f64,
    /// Seconds to wait at the end for the server to read everything sent over TCP.
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    drain_timeout: f64,
    /// Print a progress line (JSON) on stderr every N seconds; 0 = never.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    progress: f64,
    /// Runtime worker threads [default: number of CPUs].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Random seed (keys, counters' rand, events) for reproducible runs.
    #[arg(long)]
    seed: Option<u64>,
}

fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        s.is_finite() && s >= 0.0,
        "--{what} must be a number of seconds >= 0"
    );
    Ok(Duration::from_secs_f64(s))
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main(args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// `--enroll`: enrolls `--agents` agents and returns their client.keys.
fn enroll_agents(args: &Args, seed: u64) -> anyhow::Result<String> {
    let Some(addr) = args.enroll else {
        anyhow::bail!("--enroll needs an address");
    };
    let n = args.agents.unwrap_or(1);
    let password = match &args.enroll_password_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
        None => None,
    };
    let prefix = args
        .enroll_prefix
        .clone()
        .unwrap_or_else(|| format!("sim-{:06x}", seed & 0xff_ffff));
    let names = (1..=n).map(|i| format!("{prefix}-{i:04}")).collect();
    let client = ossec_agent_sim::enroll::EnrollClient::new(addr, password, None, &[])?;
    let started = std::time::Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let keys = rt.block_on(ossec_agent_sim::enroll::enroll_many(&client, names, 32))?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "enrolled {} agents at {addr} in {secs:.2} s ({:.0} enrollments/s)",
        keys.len(),
        keys.len() as f64 / secs.max(1e-9)
    );
    Ok(keys.iter().map(|k| k.line()).collect())
}

fn real_main(args: Args) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let keys_text = match (&args.keys, args.generate_keys, &args.write_keys) {
        (_, Some(n), Some(path)) => {
            anyhow::ensure!(n > 0, "--generate-keys needs at least 1 agent");
            let text = generate_keys(n, &mut rand::rngs::StdRng::seed_from_u64(seed));
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {n} agents to {}", path.display());
            if args.keys_only {
                return Ok(());
            }
            text.into_bytes()
        }
        (Some(path), None, None) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        (None, None, write) if args.enroll.is_some() => {
            let text = enroll_agents(&args, seed)?;
            if let Some(path) = write {
                std::fs::write(path, &text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            text.into_bytes()
        }
        _ => {
            eprintln!("error: give --keys FILE, or --generate-keys N --write-keys FILE");
            std::process::exit(2);
        }
    };
    let keys =
        Arc::new(ClientKeys::parse(&keys_text).context("the keys are not a valid client.keys")?);
    let agents = args.agents.unwrap_or(keys.len());
    anyhow::ensure!(
        agents >= 1 && agents <= keys.len(),
        "--agents {agents}: the keys hold {} agents",
        keys.len()
    );
    let transport = match (args.flavor, args.transport) {
        (Flavor::Ossec, None | Some(TransportChoice::Udp)) => TransportChoice::Udp,
        (Flavor::Ossec, Some(t)) => {
            eprintln!("error: --flavor ossec agents use UDP only (got --transport {t:?})");
            std::process::exit(2);
        }
        (Flavor::Wazuh, t) => t.unwrap_or(TransportChoice::Tcp),
    };
    anyhow::ensure!(
        args.eps >= 0.0 && args.eps.is_finite(),
        "--eps must be >= 0"
    );
    let keepalive = secs(args.keepalive, "keepalive")?;
    anyhow::ensure!(!keepalive.is_zero(), "--keepalive must be > 0");
    let fds = ossec_agent_sim::raise_fd_limit();
    if fds > 0 && (fds as usize) < agents + 64 {
        eprintln!(
            "warning: the open-files limit is {fds}, too low for {agents} agents (raise it with ulimit -n)"
        );
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt.build()?;
    let summary = rt.block_on(async {
        let server = tokio::net::lookup_host(&args.server)
            .await
            .with_context(|| format!("cannot resolve --server {}", args.server))?
            .next()
            .with_context(|| format!("--server {} has no address", args.server))?;
        let mut cfg = SimConfig::new(server, keys);
        cfg.agents = agents;
        cfg.flavor = args.flavor;
        cfg.transport = transport;
        cfg.cipher = args.cipher;
        cfg.eps = args.eps;
        cfg.duration = secs(args.duration, "duration")?;
        cfg.keepalive = keepalive;
        cfg.ack_timeout = match args.ack_timeout {
            Some(s) => secs(s, "ack-timeout")?,
            None => keepalive * 3,
        };
        cfg.startup_retry =
            secs(args.startup_retry, "startup-retry")?.max(Duration::from_millis(100));
        cfg.ramp_up = match args.ramp_up {
            Some(s) => secs(s, "ramp-up")?,
            None => Duration::from_secs_f64((agents as f64 / 2000.0).min(10.0)),
        };
        cfg.ack_grace = secs(args.ack_grace, "ack-grace")?;
        cfg.drain_timeout = secs(args.drain_timeout, "drain-timeout")?;
        cfg.source_ips = args.source_ips;
        cfg.stamp = args.stamp;
        cfg.mix = args.mix.unwrap_or_default();
        cfg.zlib_level = args.zlib_level;
        cfg.stamp_every = usize::try_from(args.stamp_every).unwrap_or(usize::MAX);
        cfg.preseal = match args.preseal.as_deref() {
            None => 0,
            Some("auto") => {
                anyhow::ensure!(
                    args.eps > 0.0,
                    "--preseal auto needs --eps > 0 (with --eps 0 give the number of events)"
                );
                (args.eps * cfg.duration.as_secs_f64()).ceil() as u64
            }
            Some(n) => n
                .parse()
                .with_context(|| format!("--preseal `{n}` is not a number of events or `auto`"))?,
        };
        cfg.seed = seed;
        cfg.progress = (args.progress > 0.0)
            .then(|| secs(args.progress, "progress"))
            .transpose()?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping (again to abort)");
                let _ = stop_tx.send(true);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
            // Keep the sender alive so the run is not stopped early.
            std::future::pending::<()>().await;
        });
        ossec_agent_sim::run(cfg, stop_rx).await
    })?;
    println!("{}", serde_json::to_string(&summary)?);
    // Do not wait for lingering tasks (e.g. the signal watcher).
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}
