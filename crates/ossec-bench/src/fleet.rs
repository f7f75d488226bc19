//! `ossec-bench fleet`: many connected, idle TCP agents (startup, then a
//! keepalive every `--keepalive` seconds and almost no events) against
//! `ossec-collector serve`, each from its own loopback address. Reports
//! how many stayed connected, the collector's resident memory per
//! connected agent (RSS with every agent connected and quiet, minus RSS
//! with the keys loaded and none connected) and the slowest startup or
//! keepalive ACK the agents saw.
//!
//! Both processes need one descriptor per agent: the open-files limit is
//! raised to its hard limit, and when that cannot hold the agents asked
//! for the run is capped and says so (`capped_by_fd_limit`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use crate::e2e::{out_dir, sim_summary, start_collector, start_sim, write_keys};
use crate::procs;
use crate::report::{self, round};

#[derive(clap::Args)]
pub struct Args {
    /// Agents to connect.
    #[arg(long, default_value_t = 50_000)]
    agents: usize,
    /// Seconds the simulator runs (ramp-up included).
    #[arg(long, default_value_t = 50.0)]
    duration: f64,
    /// Seconds between an agent's keepalives.
    #[arg(long, default_value_t = 20.0)]
    keepalive: f64,
    /// Seconds over which the agents connect [default: agents / 2000, at most 15].
    #[arg(long)]
    ramp_up: Option<f64>,
    /// Network the agents' source addresses come from (one per agent).
    #[arg(long, default_value = "127.1.0.0/16")]
    source_ips: String,
    /// One more argument for `ossec-collector serve` (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    collector_arg: Vec<String>,
    /// The `ossec-collector` binary to measure [default: the one next to ossec-bench].
    #[arg(long, value_name = "PATH")]
    collector_bin: Option<PathBuf>,
    /// Directory for logs and raw results [default: target/bench/fleet-<time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// 200 agents for 12 s (CI): fails when one does not connect or handshake, never on memory.
    #[arg(long)]
    smoke: bool,
}

/// Descriptors kept for what is not an agent connection (store, spool,
/// listeners, logs).
const FD_MARGIN: u64 = 300;

pub fn run(mut a: Args) -> Result<()> {
    if a.smoke {
        a.agents = 200;
        a.duration = 12.0;
        a.keepalive = 2.0;
        a.ramp_up = Some(1.0);
    }
    if a.agents == 0 {
        bail!("--agents must be at least 1");
    }
    let fd_limit = match ossec_agent_sim::raise_fd_limit() {
        0 => 1024,
        n => n,
    };
    let cap = fd_limit.saturating_sub(FD_MARGIN) as usize;
    let agents = a.agents.min(cap);
    let capped = agents < a.agents;
    if agents == 0 {
        bail!("the open-files limit ({fd_limit}) leaves no room for agents");
    }
    if capped {
        eprintln!(
            "[fleet] the open-files hard limit is {fd_limit} (raising it needs CAP_SYS_RESOURCE): {agents} agents instead of {}",
            a.agents
        );
    }
    let out = out_dir(a.out.as_deref(), "fleet")?;
    let keys = write_keys(&out, agents)?;
    let db = format!("sqlite://{}", out.join("fleet.db").display());
    let mut col = start_collector(
        &out,
        &keys,
        &db,
        "tcp",
        &a.collector_arg,
        a.collector_bin.as_deref(),
    )?;
    let pid = col.proc.pid();
    // The keys are loaded and nothing is connected: the base.
    std::thread::sleep(Duration::from_secs(2));
    let rss_before = procs::status_kb(pid, "VmRSS").unwrap_or(0);
    let ramp = a
        .ramp_up
        .unwrap_or_else(|| (agents as f64 / 2000.0).min(15.0));
    let load_before = procs::loadavg();
    let sim_args: Vec<String> = [
        "--agents",
        &agents.to_string(),
        "--transport",
        "tcp",
        "--eps",
        "1",
        "--duration",
        &a.duration.to_string(),
        "--keepalive",
        &a.keepalive.to_string(),
        "--ramp-up",
        &ramp.to_string(),
        "--source-ips",
        &a.source_ips,
        "--seed",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    eprintln!(
        "[fleet] {agents} TCP agents -> {} over {ramp} s, keepalive every {} s, {} s",
        col.agent_addr, a.keepalive, a.duration
    );
    let mut sim = start_sim(&out, &keys, &col.agent_addr, &sim_args)?;
    // Wait until every agent is connected (or the simulator ends).
    let start = Instant::now();
    let mut open_max = 0.0f64;
    let mut all_at = None;
    while sim.running() {
        let open = procs::metric(col.metrics, "ossec_tcp_connections_open").unwrap_or(0.0);
        open_max = open_max.max(open);
        if open as usize >= agents {
            all_at = Some(start.elapsed().as_secs_f64());
            break;
        }
        if !col.proc.running() {
            bail!(
                "the collector exited (see {})",
                out.join("collector.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Connected and quiet: let the first keepalives and the state writer
    // settle, then sample (the median of five samples a second apart).
    let mut samples = Vec::new();
    if all_at.is_some() {
        // Sample only while the simulator is surely still holding every
        // connection: it closes them all when its --duration ends, and a
        // sample taken then counts agents on their way out.
        let sample_until = start + Duration::from_secs_f64((a.duration - 1.5).max(0.0));
        std::thread::sleep(
            Duration::from_secs(3).min(sample_until.saturating_duration_since(Instant::now())),
        );
        for _ in 0..5 {
            if !sim.running() || Instant::now() >= sample_until {
                break;
            }
            let open = procs::metric(col.metrics, "ossec_tcp_connections_open").unwrap_or(0.0);
            open_max = open_max.max(open);
            if let Some(r) = procs::status_kb(pid, "VmRSS") {
                samples.push((r, open));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    // The rest of the run: keepalives keep coming.
    let deadline = Instant::now() + Duration::from_secs_f64(a.duration + 180.0);
    while sim.running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    if sim.running() {
        sim.stop(Duration::from_secs(5));
        bail!("the simulator did not finish");
    }
    let open_end = procs::metric(col.metrics, "ossec_tcp_connections_open").unwrap_or(0.0);
    let peak_kb = procs::status_kb(pid, "VmHWM").unwrap_or(0);
    col.proc.stop(Duration::from_secs(20));
    let sum = sim_summary(&out)?;
    samples.sort_unstable_by_key(|s| s.0);
    let (rss_connected, open_at_sample) =
        samples.get(samples.len() / 2).copied().unwrap_or((0, 0.0));
    // With no sample (all connected too late in the run for one), the
    // most seen at once.
    let connected = if samples.is_empty() {
        open_max as u64
    } else {
        open_at_sample as u64
    };
    // No sample, no figure (null in the JSON), rather than a made-up 0.
    let per_agent = if !samples.is_empty() && connected > 0 {
        rss_connected.saturating_sub(rss_before) as f64 / connected as f64
    } else {
        f64::NAN
    };
    let handshaken = sum["agents_handshaken"].as_u64().unwrap_or(0);
    let ack_max = sum["max_ack_latency_ms"].as_f64().unwrap_or(f64::NAN);
    let json = json!({
        "agents_connected": connected,
        "rss_kb_per_agent": round(per_agent, 2),
        "ack_max_ms": round(ack_max, 1),
        "agents_requested": a.agents,
        "agents": agents,
        "agents_handshaken": handshaken,
        "agents_connected_max": open_max as u64,
        "agents_connected_end": open_end as u64,
        "all_connected_after_s": all_at.map(|s| round(s, 1)),
        "acks_over_1s": sum["acks_over_1s"],
        "ack_timeouts": sum["ack_timeouts"],
        "reconnects": sum["reconnects"],
        "connect_errors": sum["connect_errors"],
        "keepalives_sent": sum["keepalives_sent"],
        "collector_rss_before_mb": round(rss_before as f64 / 1024.0, 1),
        "collector_rss_connected_mb": round(rss_connected as f64 / 1024.0, 1),
        "collector_peak_rss_mb": round(peak_kb as f64 / 1024.0, 1),
        "fd_limit": fd_limit,
        "capped_by_fd_limit": capped,
        "ramp_up_s": ramp,
        "keepalive_s": a.keepalive,
        "duration_s": a.duration,
        "loadavg_before": load_before,
        "loadavg_after": procs::loadavg(),
        "smoke": a.smoke,
    });
    let mut rows = vec![
        (
            "agents connected (asked)".to_string(),
            format!("{connected} ({})", a.agents),
        ),
        (
            "RSS per connected idle agent (target <= 10 KB)".into(),
            format!(
                "{per_agent:.2} KB ({:.1} MB with none -> {:.1} MB with all)",
                rss_before as f64 / 1024.0,
                rss_connected as f64 / 1024.0
            ),
        ),
        (
            "slowest startup/keepalive ACK (target < 1 s)".into(),
            format!("{ack_max:.1} ms ({} over 1 s)", sum["acks_over_1s"]),
        ),
        (
            "handshaken / reconnects / ACK timeouts".into(),
            format!(
                "{handshaken} / {} / {}",
                sum["reconnects"], sum["ack_timeouts"]
            ),
        ),
    ];
    if capped {
        rows.push((
            "capped".into(),
            format!(
                "open-files hard limit {fd_limit}: {agents} agents, not {}",
                a.agents
            ),
        ));
    }
    let _ = std::fs::write(out.join("result.json"), json.to_string());
    report::print(
        &format!("ossec-bench fleet (results in {})", out.display()),
        &rows,
        &json,
    );
    if (connected as usize) < agents || (handshaken as usize) < agents {
        bail!(
            "{connected} of {agents} agents were connected and {handshaken} handshaken (see {})",
            out.display()
        );
    }
    Ok(())
}
