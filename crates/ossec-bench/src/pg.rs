//! PostgreSQL for a benchmark: a cluster of its own (initdb in the run's
//! directory, a free port, the settings `docker-compose.yml` gives its
//! database), or the server the user names; fresh databases with the
//! collector's schema; the CPU time of the cluster's processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::procs;

/// The settings `docker-compose.yml` gives its PostgreSQL (a test keeps the
/// two equal), so the figures are those of the deployment we ship.
pub const PG_TUNING: &[&str] = &[
    "shared_buffers=1GB",
    "wal_buffers=64MB",
    "max_wal_size=8GB",
    "min_wal_size=1GB",
    "checkpoint_timeout=15min",
];

/// A PostgreSQL to run against.
pub struct Pg {
    /// `postgres://user@host:port` without a database.
    pub base_url: String,
    /// Our own cluster (stopped and removed on drop), if we started one.
    own: Option<OwnCluster>,
}

struct OwnCluster {
    bin: PathBuf,
    data: PathBuf,
    keep: bool,
}

impl Pg {
    /// A cluster of our own under `dir` (with `extra` settings after the
    /// compose file's), or the server at `url` when one is given.
    pub fn start(dir: &Path, url: Option<&str>, extra: &[String], keep: bool) -> Result<Pg> {
        if let Some(u) = url {
            return Ok(Pg {
                base_url: u.trim_end_matches('/').to_string(),
                own: None,
            });
        }
        let bin = pg_bin()?;
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        chown_postgres(dir)?;
        chown_postgres(&data)?;
        let log = dir.join("initdb.log");
        let out = as_postgres(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .output()
            .context("running initdb")?;
        std::fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat()).ok();
        if !out.status.success() {
            bail!("initdb failed (see {})", log.display());
        }
        let port = procs::free_port()?;
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            data.display()
        );
        for s in PG_TUNING
            .iter()
            .map(|s| s.to_string())
            .chain(extra.iter().cloned())
        {
            opts.push_str(" -c ");
            opts.push_str(&s);
        }
        let st = as_postgres(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("pg.log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .stdout(std::process::Stdio::null())
            .status()
            .context("running pg_ctl start")?;
        if !st.success() {
            bail!(
                "our PostgreSQL did not start (see {})",
                dir.join("pg.log").display()
            );
        }
        Ok(Pg {
            base_url: format!("postgres://postgres@127.0.0.1:{port}"),
            own: Some(OwnCluster { bin, data, keep }),
        })
    }

    /// What this is, for the report.
    pub fn label(&self) -> String {
        match &self.own {
            Some(_) => format!(
                "a cluster of the benchmark's own with docker-compose.yml's settings ({})",
                PG_TUNING.join(", ")
            ),
            None => format!("the server at {}", self.base_url),
        }
    }

    /// URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("{}/{db}", self.base_url)
    }

    /// Creates database `db` (dropping one of that name first).
    pub async fn fresh_db(&self, db: &str) -> Result<String> {
        let admin = self.url("postgres");
        let mut c = connect(&admin).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&mut c)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&mut c)
            .await
            .with_context(|| format!("CREATE DATABASE {db}"))?;
        Ok(self.url(db))
    }

    /// Drops database `db`.
    pub async fn drop_db(&self, db: &str) -> Result<()> {
        let mut c = connect(&self.url("postgres")).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&mut c)
            .await?;
        Ok(())
    }

    /// utime+stime (seconds) of every process of our cluster, including
    /// what its exited children (backends, autovacuum workers) left in the
    /// postmaster's cutime+cstime. `None` for a server we did not start.
    pub fn cpu_s(&self) -> Option<f64> {
        let own = self.own.as_ref()?;
        let pid_file = std::fs::read_to_string(own.data.join("postmaster.pid")).ok()?;
        let pm: u32 = pid_file.lines().next()?.trim().parse().ok()?;
        let mut total = procs::cpu_with_children_s(pm)?;
        for child in procs::children(pm) {
            total += procs::cpu_s(child).unwrap_or(0.0);
        }
        Some(total)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(own) = &self.own {
            let _ = as_postgres(&own.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&own.data)
                .args(["-m", "fast", "-w", "stop"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            if !own.keep {
                let _ = std::fs::remove_dir_all(&own.data);
            }
        }
    }
}

/// Connects to `url` (retrying for 30 s while the server starts).
pub async fn connect(url: &str) -> Result<sqlx::postgres::PgConnection> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match <sqlx::postgres::PgConnection as sqlx::Connection>::connect(url).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("connecting to {url}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The directory of initdb and pg_ctl.
fn pg_bin() -> Result<PathBuf> {
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if d.join("initdb").exists() {
            return Ok(d);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .context("no initdb/pg_ctl found (install the PostgreSQL server package, or pass --pg-url)")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `cmd` run as the postgres user when we are root (the server refuses to
/// run as root).
fn as_postgres(cmd: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(cmd);
        c
    } else {
        Command::new(cmd)
    }
}

fn chown_postgres(p: &Path) -> Result<()> {
    if is_root() {
        let st = Command::new("chown").arg("postgres:").arg(p).status()?;
        if !st.success() {
            bail!("chown postgres: {} failed", p.display());
        }
    }
    Ok(())
}
