//! The process's own figures for `/metrics`, under Prometheus' standard
//! names (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_start_time_seconds`,
//! `process_open_fds`, `process_max_fds`), as the Go and Python clients
//! export them: CPU time from `getrusage`, the rest from `/proc/self` (Linux).
//! Read at scrape time; nothing is kept.

use std::sync::OnceLock;

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

/// Reads the figures; `None` where `/proc` is not there.
pub fn read() -> Option<ProcessStats> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut f = statm.split_ascii_whitespace();
    let pages = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let (size, resident) = (pages(f.next()), pages(f.next()));
    let page = page_size();
    Some(ProcessStats {
        cpu_seconds: cpu_seconds(),
        resident_bytes: resident * page,
        virtual_bytes: size * page,
        start_time_seconds: START.get_or_init(start_time).unwrap_or(0.0),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0),
        max_fds: max_fds(),
    })
}

static START: OnceLock<Option<f64>> = OnceLock::new();

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes only the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn max_fds() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } == 0 {
        l.rlim_cur
    } else {
        0
    }
}

/// The process start (Unix seconds): its start in clock ticks after boot
/// (`/proc/self/stat` field 22) plus the boot time (`/proc/stat` btime).
fn start_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    start_time_from(
        &stat,
        &std::fs::read_to_string("/proc/stat").ok()?,
        clock_ticks(),
    )
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as f64
    } else {
        100.0
    }
}

fn start_time_from(self_stat: &str, proc_stat: &str, ticks: f64) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &self_stat[self_stat.rfind(')')? + 1..];
    // Field 3 is the first after it: field 22 is the 20th.
    let start_ticks: f64 = after.split_ascii_whitespace().nth(19)?.parse().ok()?;
    let btime: f64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime + start_ticks / ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_parses_proc() {
        let stat =
            "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 4 0 250 1000 10";
        assert_eq!(
            start_time_from(stat, "cpu 1 2\nbtime 1700000000\n", 100.0),
            Some(1_700_000_002.5)
        );
        assert_eq!(start_time_from("garbage", "btime 1\n", 100.0), None);
    }

    #[test]
    fn reads_this_process() {
        let p = read().expect("/proc on Linux");
        assert!(p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes);
        assert!(p.open_fds > 0 && p.max_fds >= p.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds > now - 86_400.0 && p.start_time_seconds <= now + 1.0);
    }
}
