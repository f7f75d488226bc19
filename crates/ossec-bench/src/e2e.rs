//! `ossec-bench e2e`: pre-sealed simulated agents into `ossec-collector
//! serve` on PostgreSQL, then PostgreSQL alone taking the very same rows by
//! binary COPY (1 and 2 streams, a fresh database with the same schema), in
//! the same run. Reports committed events/s, loss, the collector's CPU per
//! stored event and the ratio of the two rates.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::pg::{self, Pg};
use crate::procs::{self, Proc};
use crate::report::{self, round};

/// Columns the collector writes (ossec_store's COPY), in its order.
const EVENT_COLUMNS: &str = "received_at, agent_id, agent_name, source_ip, transport, queue, queue_name, location, message, message_raw, location_raw, global_counter, local_counter, data";

#[derive(clap::Args)]
pub struct Args {
    /// Simulated agents.
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Transport of every agent.
    #[arg(long, value_parser = ["tcp", "udp"], default_value = "tcp")]
    pub transport: String,
    /// Events per second over all agents; 0 = as fast as the collector takes them (UDP then loses datagrams).
    #[arg(long, default_value_t = 0.0)]
    pub eps: f64,
    /// Events pre-sealed before the clock starts [default: 100,000 per second of --duration].
    #[arg(long)]
    pub preseal: Option<u64>,
    /// PostgreSQL to use instead of a cluster of the benchmark's own (e.g. postgres://postgres@127.0.0.1:5432); it must allow CREATE DATABASE.
    #[arg(long, value_name = "URL")]
    pub pg_url: Option<String>,
    /// More settings for our own cluster, after docker-compose.yml's (repeatable), e.g. `--pg-setting wal_buffers=16MB`.
    #[arg(long, value_name = "NAME=VALUE")]
    pub pg_setting: Vec<String>,
    /// Rows PostgreSQL alone takes (from the start of what the collector stored).
    #[arg(long, default_value_t = 1_000_000)]
    pub pg_alone_rows: u64,
    /// One more argument for `ossec-collector serve` (repeatable), e.g. `--collector-arg=--event-data=false`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub collector_arg: Vec<String>,
    /// One more argument for `ossec-agent-sim` (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub sim_arg: Vec<String>,
    /// Directory for logs and raw results [default: target/bench/e2e-<time>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep our cluster's data directory.
    #[arg(long)]
    pub keep: bool,
    /// The `ossec-collector` binary to measure [default: the one next to ossec-bench] (e.g. an older build, for a before/after).
    #[arg(long, value_name = "PATH")]
    pub collector_bin: Option<PathBuf>,
    /// A short correctness run for CI (4 agents, 3 s, a few thousand rows): fails on loss, a missing step or a failed handshake, never on speed.
    #[arg(long)]
    pub smoke: bool,
}

pub fn run(mut a: Args) -> Result<()> {
    if a.smoke {
        a.agents = 4;
        a.duration = 3.0;
        a.preseal = Some(4000);
        a.pg_alone_rows = 2000;
        a.sim_arg.extend(["--zlib-level".into(), "1".into()]);
    }
    let out = out_dir(a.out.as_deref(), "e2e")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pg = Pg::start(&out, a.pg_url.as_deref(), &a.pg_setting, a.keep)?;
    let r = rt.block_on(measure(&a, &pg, &out));
    drop(pg);
    let (rows, j) = r?;
    std::fs::write(out.join("result.json"), format!("{j:#}\n")).ok();
    report::print(
        &format!("ossec-bench e2e (results in {})", out.display()),
        &rows,
        &j,
    );
    if a.smoke {
        let lost = j["events_lost"].as_i64().unwrap_or(-1);
        let handshaken = j["agents_handshaken"].as_u64().unwrap_or(0);
        if j["events_sent"].as_u64().unwrap_or(0) == 0
            || lost != 0
            || handshaken != a.agents as u64
            || j["pg_alone_rows_per_s"].as_f64().unwrap_or(0.0) <= 0.0
        {
            bail!("smoke run failed: {j}");
        }
    }
    Ok(())
}

/// `--out`, or target/bench/<kind>-<time> under the workspace (or the
/// working directory).
pub fn out_dir(given: Option<&Path>, kind: &str) -> Result<PathBuf> {
    let d = match given {
        Some(d) => d.to_path_buf(),
        None => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let base = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent()?.parent().map(|t| t.join("bench")))
                .unwrap_or_else(|| PathBuf::from("target/bench"));
            base.join(format!("{kind}-{secs}-{}", std::process::id()))
        }
    };
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// What `serve`'s ready line says.
pub struct Serving {
    pub proc: Proc,
    pub agent_addr: String,
    pub metrics: SocketAddr,
}

/// Starts `ossec-collector serve` on `db_url` with the keys in `keys`,
/// every listener on a free port, its spool in `dir/spool` unless `extra`
/// gives `--spool-dir` itself (e.g. `--spool-dir=off`, to measure the spool).
pub fn start_collector(
    dir: &Path,
    keys: &Path,
    db_url: &str,
    transport: &str,
    extra: &[String],
    bin: Option<&Path>,
) -> Result<Serving> {
    let col = match bin {
        Some(b) => b.to_path_buf(),
        None => procs::sibling("ossec-collector")?,
    };
    let log = dir.join("collector.log");
    let f = File::create(&log)?;
    let mut cmd = Command::new(col);
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--keys"])
        .arg(keys)
        .args(["--database-url", db_url])
        .args(["--verify-counters", "true"])
        .args(["--metrics-listen", "127.0.0.1:0", "--log-format", "json"]);
    if !extra.iter().any(|a| a.starts_with("--spool-dir")) {
        cmd.arg("--spool-dir").arg(dir.join("spool"));
    }
    cmd.args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f);
    let mut proc = Proc::spawn("ossec-collector serve", &mut cmd)?;
    let line = procs::wait_for_line(
        &log,
        "ossec-collector ready",
        &mut proc,
        Duration::from_secs(120),
    )?;
    let v: Value = serde_json::from_str(&line).context("the ready line is not JSON")?;
    let field = |k: &str| v["fields"][k].as_str().unwrap_or("off").to_string();
    let agent_addr = field(transport);
    if agent_addr == "off" {
        bail!("the collector does not listen on {transport}: {line}");
    }
    let metrics = field("metrics")
        .parse()
        .with_context(|| format!("metrics address in {line}"))?;
    Ok(Serving {
        proc,
        agent_addr,
        metrics,
    })
}

/// Writes client.keys for `agents` simulated agents.
pub fn write_keys(dir: &Path, agents: usize) -> Result<PathBuf> {
    let keys = dir.join("client.keys");
    let st = Command::new(procs::sibling("ossec-agent-sim")?)
        .args(["--generate-keys", &agents.to_string(), "--write-keys"])
        .arg(&keys)
        .args(["--keys-only", "--seed", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("ossec-agent-sim --generate-keys failed");
    }
    Ok(keys)
}

/// Starts the simulator; its summary goes to dir/summary.json, its log to
/// dir/sim.log.
pub fn start_sim(dir: &Path, keys: &Path, server: &str, args: &[String]) -> Result<Proc> {
    let mut cmd = Command::new(procs::sibling("ossec-agent-sim")?);
    cmd.args(["--server", server, "--keys"])
        .arg(keys)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("summary.json"))?)
        .stderr(File::create(dir.join("sim.log"))?);
    Proc::spawn("ossec-agent-sim", &mut cmd)
}

/// Reads the simulator's JSON summary once it has exited.
pub fn sim_summary(dir: &Path) -> Result<Value> {
    let s = std::fs::read_to_string(dir.join("summary.json"))?;
    let line = s
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| {
            format!(
                "the simulator printed no summary (see {})",
                dir.join("sim.log").display()
            )
        })?;
    Ok(serde_json::from_str(line)?)
}

/// Waits until `ossec_events_stored_total` reaches `target`, or has not
/// moved for 30 s (at most 10 min); returns the count. A scrape that fails
/// (the collector busy for longer than the scrape timeout) says nothing:
/// it is neither progress nor quiet.
pub fn drain(metrics: SocketAddr, target: f64) -> f64 {
    let mut last = -1.0;
    let mut since = Instant::now();
    let end = Instant::now() + Duration::from_secs(600);
    while Instant::now() < end {
        if let Some(cur) = procs::metric(metrics, "ossec_events_stored_total") {
            if cur >= target {
                return cur;
            }
            if cur != last {
                last = cur;
                since = Instant::now();
            } else if since.elapsed() >= Duration::from_secs(30) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last.max(0.0)
}

async fn measure(a: &Args, pg: &Pg, out: &Path) -> Result<(Vec<(String, String)>, Value)> {
    let load_before = procs::loadavg();
    let db = "ossec_bench_e2e";
    let url = pg.fresh_db(db).await?;
    let keys = write_keys(out, a.agents)?;
    let mut col = start_collector(
        out,
        &keys,
        &url,
        &a.transport,
        &a.collector_arg,
        a.collector_bin.as_deref(),
    )?;
    let preseal = a.preseal.unwrap_or((100_000.0 * a.duration) as u64);
    let mut sim_args: Vec<String> = vec![
        "--agents".into(),
        a.agents.to_string(),
        "--transport".into(),
        a.transport.clone(),
        "--eps".into(),
        a.eps.to_string(),
        "--duration".into(),
        a.duration.to_string(),
        "--keepalive".into(),
        "20".into(),
        "--preseal".into(),
        preseal.to_string(),
    ];
    sim_args.extend(a.sim_arg.iter().cloned());
    eprintln!(
        "[e2e] {} agents -> {} ({}), pre-sealing {preseal} events",
        a.agents, col.agent_addr, a.transport
    );
    let mut sim = start_sim(out, &keys, &col.agent_addr, &sim_args)?;
    // Measuring starts when the simulator starts sending.
    procs::wait_for_line(
        &out.join("sim.log"),
        "; sending",
        &mut sim,
        Duration::from_secs(600),
    )?;
    let t0 = Instant::now();
    let c0 = procs::cpu_s(col.proc.pid()).unwrap_or(0.0);
    let pg0 = pg.cpu_s();
    let (mb0, mt0) = procs::machine_s();
    let s0 = procs::metric(col.metrics, "ossec_events_stored_total").unwrap_or(0.0);
    let mut samples: Vec<(f64, f64)> = vec![(0.0, s0)];
    while sim.running() {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(s) = procs::metric(col.metrics, "ossec_events_stored_total") {
            samples.push((t0.elapsed().as_secs_f64(), s));
        }
    }
    let send_s = t0.elapsed().as_secs_f64();
    // The simulator has exited: its summary says how many to wait for.
    let summary = sim_summary(out)?;
    let sent = summary[format!("sent_{}", a.transport)]
        .as_u64()
        .or_else(|| summary["sent"].as_u64())
        .unwrap_or(0);
    let stored_metric = drain(col.metrics, s0 + sent as f64);
    let wall_s = t0.elapsed().as_secs_f64();
    let c1 = procs::cpu_s(col.proc.pid()).unwrap_or(0.0);
    let pg1 = pg.cpu_s();
    let (mb1, mt1) = procs::machine_s();
    let peak_rss_kb = procs::status_kb(col.proc.pid(), "VmHWM").unwrap_or(0);
    col.proc.stop(Duration::from_secs(60));

    let stored_during = stored_metric - s0;
    let collector_cpu_s = c1 - c0;
    // The steady state: after a warm-up (a quarter of the run, at most 10 s)
    // until a second before the simulator stopped.
    let warm = (a.duration / 4.0).min(10.0);
    let window: Vec<&(f64, f64)> = samples
        .iter()
        .filter(|(t, _)| *t >= warm && *t <= a.duration.min(send_s) - 1.0)
        .collect();
    let events_per_s = match (window.first(), window.last()) {
        (Some(x), Some(y)) if y.0 > x.0 && y.1 > x.1 => (y.1 - x.1) / (y.0 - x.0),
        // A short run that stored everything before the window opened:
        // what was stored over the time it took.
        _ => stored_during / wall_s.max(1e-9),
    };

    let mut c = pg::connect(&url).await?;
    let where_transport = format!("WHERE transport = '{}'", a.transport);
    let (stored_rows,): (i64,) =
        sqlx::query_as(&format!("SELECT count(*) FROM events {where_transport}"))
            .fetch_one(&mut c)
            .await?;
    let lost = sent as i64 - stored_rows;

    // PostgreSQL alone, on the very same rows.
    let n = a.pg_alone_rows.min(stored_rows.max(0) as u64);
    let mut alone = Vec::new();
    if n > 0 {
        alone = pg_alone(pg, &mut c, n).await?;
    }
    drop(c);
    pg.drop_db(db).await.ok();
    let pg_alone_rows_per_s = alone
        .iter()
        .filter_map(|s| s["rows_per_s"].as_f64())
        .fold(0.0, f64::max);
    let e2e_ratio = if pg_alone_rows_per_s > 0.0 {
        events_per_s / pg_alone_rows_per_s
    } else {
        0.0
    };
    let us_per_event = if stored_during > 0.0 {
        collector_cpu_s * 1e6 / stored_during
    } else {
        0.0
    };
    let pg_us_per_row = match (pg0, pg1) {
        (Some(x), Some(y)) if stored_during > 0.0 => Some(round((y - x) * 1e6 / stored_during, 1)),
        _ => None,
    };
    let machine_busy_pct = if mt1 > mt0 {
        (mb1 - mb0) * 100.0 / (mt1 - mt0)
    } else {
        0.0
    };
    let ack_p99_ms = summary["ack_latency_p99_ms"].as_f64();
    let j = json!({
        "events_per_s": events_per_s.round(),
        "events_sent": sent,
        "events_stored": stored_rows,
        "events_lost": lost,
        "pg_alone_rows_per_s": pg_alone_rows_per_s.round(),
        "e2e_ratio": round(e2e_ratio, 3),
        "collector_cpu_us_per_event": round(us_per_event, 2),
        "ack_p99_ms": ack_p99_ms,
        "agents": a.agents,
        "agents_handshaken": summary["agents_handshaken"],
        "transport": a.transport,
        "duration_s": a.duration,
        "collector_cpu_s": round(collector_cpu_s, 2),
        "collector_peak_rss_mb": round(peak_rss_kb as f64 / 1024.0, 1),
        "postgres_us_per_row": pg_us_per_row,
        "machine_busy_pct": machine_busy_pct.round(),
        "pg_alone": alone,
        "postgresql": pg.label(),
        "loadavg_before": load_before,
        "loadavg_after": procs::loadavg(),
        "collector_args": a.collector_arg,
        "sim_args": sim_args,
    });
    let mut rows = vec![
        (
            "committed events/s (steady state)".into(),
            format!("{:.0}", events_per_s),
        ),
        (
            "PostgreSQL alone, best rows/s".into(),
            format!("{pg_alone_rows_per_s:.0}"),
        ),
        (
            "e2e ratio (target >= 0.9)".into(),
            format!("{e2e_ratio:.3}"),
        ),
        (
            "collector CPU per stored event (target <= 3 us)".into(),
            format!("{us_per_event:.2} us ({collector_cpu_s:.2} s for {stored_during:.0} events)"),
        ),
        (
            "sent / stored / lost".into(),
            format!("{sent} / {stored_rows} / {lost}"),
        ),
        (
            "ACK p99".into(),
            ack_p99_ms
                .map(|v| format!("{v} ms"))
                .unwrap_or_else(|| "-".into()),
        ),
    ];
    if let Some(p) = pg_us_per_row {
        rows.push((
            "PostgreSQL CPU per row in the pipeline".into(),
            format!("{p} us"),
        ));
    }
    for s in &alone {
        rows.push((
            format!("PostgreSQL alone, {} stream(s)", s["streams"]),
            format!(
                "{} rows/s ({} rows, {} us of PostgreSQL CPU per row)",
                s["rows_per_s"], s["rows"], s["pg_us_per_row"]
            ),
        ));
    }
    rows.push(("machine busy".into(), format!("{machine_busy_pct:.0} %")));
    rows.push((
        "load average before / after".into(),
        format!("{} / {}", load_before, procs::loadavg()),
    ));
    Ok((rows, j))
}

/// Exports the first `n` rows the collector stored (binary COPY, in id
/// order) and COPYs them into a fresh database with the collector's schema,
/// by 1 stream and by 2 concurrent streams (each half of them), nothing
/// else running.
async fn pg_alone(pg: &Pg, c: &mut sqlx::postgres::PgConnection, n: u64) -> Result<Vec<Value>> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for q in [
        format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY id LIMIT {n}"),
        format!("SELECT {EVENT_COLUMNS} FROM (SELECT * FROM events ORDER BY id LIMIT {n}) e WHERE id % 2 = 0"),
        format!("SELECT {EVENT_COLUMNS} FROM (SELECT * FROM events ORDER BY id LIMIT {n}) e WHERE id % 2 = 1"),
    ] {
        parts.push(copy_out(c, &format!("COPY ({q}) TO STDOUT WITH (FORMAT binary)")).await?);
    }
    let mut results = Vec::new();
    for streams in [1usize, 2] {
        let db = "ossec_bench_pg_alone";
        let url = pg.fresh_db(db).await?;
        // The collector's schema, by its own migrations.
        ossec_store::Store::connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("migrating {db}: {e}"))?
            .close()
            .await;
        let mut conns = Vec::new();
        for _ in 0..streams {
            conns.push(pg::connect(&url).await?);
        }
        sqlx::query("CHECKPOINT").execute(&mut conns[0]).await?;
        let data: Vec<&[u8]> = if streams == 1 {
            vec![&parts[0]]
        } else {
            vec![&parts[1], &parts[2]]
        };
        let pg0 = pg.cpu_s();
        let t0 = Instant::now();
        let futs = conns.iter_mut().zip(data).map(|(c, d)| copy_in(c, d));
        let done = futures_util::future::join_all(futs).await;
        let secs = t0.elapsed().as_secs_f64();
        let pg1 = pg.cpu_s();
        let mut rows = 0u64;
        for d in done {
            rows += d?;
        }
        drop(conns);
        let r = json!({
            "streams": streams,
            "rows": rows,
            "wall_s": round(secs, 2),
            "rows_per_s": (rows as f64 / secs.max(1e-9)).round(),
            "pg_us_per_row": match (pg0, pg1) {
                (Some(x), Some(y)) if rows > 0 => Some(round((y - x) * 1e6 / rows as f64, 1)),
                _ => None,
            },
        });
        eprintln!("[e2e] PostgreSQL alone: {r}");
        results.push(r);
        pg.drop_db(db).await.ok();
    }
    Ok(results)
}

async fn copy_out(c: &mut sqlx::postgres::PgConnection, stmt: &str) -> Result<Vec<u8>> {
    use futures_util::TryStreamExt;
    let mut s = c.copy_out_raw(stmt).await?;
    let mut buf = Vec::new();
    while let Some(chunk) = s.try_next().await? {
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

async fn copy_in(c: &mut sqlx::postgres::PgConnection, data: &[u8]) -> Result<u64> {
    let mut cp = c
        .copy_in_raw(&format!(
            "COPY events ({EVENT_COLUMNS}) FROM STDIN WITH (FORMAT binary)"
        ))
        .await?;
    for chunk in data.chunks(1 << 20) {
        cp.send(chunk).await?;
    }
    Ok(cp.finish().await?)
}
