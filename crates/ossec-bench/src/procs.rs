//! Child processes and what /proc says about them: the release binaries
//! next to ours, free ports, CPU time and RSS of a process, the machine's
//! busy time, a child that is stopped when dropped, and reading one
//! Prometheus metric over plain HTTP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A binary of the workspace next to this one (target/release/NAME).
pub fn sibling(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("locating ossec-bench")?;
    let p = me
        .parent()
        .map(|d| d.join(name))
        .context("ossec-bench has no directory")?;
    if !p.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p ossec-collector -p ossec-agent-sim -p ossec-bench`",
            p.display()
        );
    }
    Ok(p)
}

/// A TCP port nobody listens on now.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Fields of /proc/PID/stat after the command name (field 3 is index 0).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse::<i64>().map(|v| v.max(0) as u64).unwrap_or(0))
            .collect(),
    )
}

/// utime+stime of a process, seconds.
pub fn cpu_s(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    Some((f.get(11)? + f.get(12)?) as f64 / clk_tck())
}

/// utime+stime+cutime+cstime of a process (itself and its waited-for
/// children), seconds.
pub fn cpu_with_children_s(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    Some((f.get(11)? + f.get(12)? + f.get(13)? + f.get(14)?) as f64 / clk_tck())
}

/// The live children of a process.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(f) = stat_fields(p) {
            if f.get(1).copied() == Some(pid as u64) {
                out.push(p);
            }
        }
    }
    out
}

/// A field of /proc/PID/status in kB (VmRSS, VmHWM).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Busy and total time of the whole machine (all CPUs), seconds.
pub fn machine_s() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(l) = s.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    let v: Vec<u64> = l
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let t = clk_tck();
    ((total - idle) as f64 / t, total as f64 / t)
}

/// `uptime`'s load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A child process that is stopped (SIGTERM, then SIGKILL after 30 s) when
/// dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Proc> {
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            child,
            name: name.into(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM and wait (SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) {
        if !self.running() {
            return;
        }
        self.signal(libc::SIGTERM);
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(30));
    }
}

/// Waits until `file` has a line containing `needle` (at most `timeout`,
/// failing early when `proc` exits) and returns that line.
pub fn wait_for_line(
    file: &Path,
    needle: &str,
    proc: &mut Proc,
    timeout: Duration,
) -> Result<String> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(file) {
            if let Some(l) = s.lines().find(|l| l.contains(needle)) {
                return Ok(l.to_string());
            }
        }
        if !proc.running() {
            bail!(
                "{} exited before printing {needle:?} (see {})",
                proc.name,
                file.display()
            );
        }
        if Instant::now() > end {
            bail!(
                "{} did not print {needle:?} within {timeout:?} (see {})",
                proc.name,
                file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sum of a Prometheus metric's samples (every label set) from
/// `http://ADDR/metrics`; `None` when it cannot be read.
pub fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let body = http_get(addr, "/metrics").ok()?;
    let mut sum = 0.0;
    let mut seen = false;
    for l in body.lines() {
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            sum += v;
            seen = true;
        }
    }
    seen.then_some(sum)
}

fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => bail!("GET {path} from {addr} failed"),
    }
}
