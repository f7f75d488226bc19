//! The event mix: realistic agent events, 100 bytes to 4 KB, built fresh for
//! every message (random hosts, users, addresses, hashes, sizes).
//!
//! Owns the templates (sshd/sudo/kernel syslog lines, Wazuh FIM JSON, Windows
//! eventchannel JSON, rootcheck, OSSEC text syscheck), the `--mix` weights,
//! the `--stamp` marker and the civil-time formatting they need. Every
//! builder appends the whole payload `Q:location:message` to a buffer.

use std::fmt::Write as _;
use std::str::FromStr;

use rand::Rng;

use crate::agent::Flavor;

/// Largest payload the generator produces.
pub const MAX_EVENT: usize = 4096;
/// Smallest payload the generator produces.
pub const MIN_EVENT: usize = 100;

/// The kinds of events the simulator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `1:/var/log/auth.log:` sshd, sudo, cron and kernel lines.
    Syslog,
    /// `8:syscheck:` Wazuh 4.x FIM JSON (OSSEC: the text form).
    Syscheck,
    /// `f:EventChannel:` Windows event JSON (Wazuh only).
    EventChannel,
    /// `9:rootcheck:` policy monitoring text.
    Rootcheck,
    /// `1:wazuh-agent:ossec: Agent started: …` after every handshake.
    AgentStarted,
}

impl EventKind {
    pub const MIX: [EventKind; 4] = [
        EventKind::Syslog,
        EventKind::Syscheck,
        EventKind::EventChannel,
        EventKind::Rootcheck,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Syslog => "syslog",
            EventKind::Syscheck => "syscheck",
            EventKind::EventChannel => "eventchannel",
            EventKind::Rootcheck => "rootcheck",
            EventKind::AgentStarted => "agent_started",
        }
    }

    pub fn index(self) -> usize {
        match self {
            EventKind::Syslog => 0,
            EventKind::Syscheck => 1,
            EventKind::EventChannel => 2,
            EventKind::Rootcheck => 3,
            EventKind::AgentStarted => 4,
        }
    }
}

/// Relative weights of the four mixed kinds (`--mix syslog=55,syscheck=15,…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 4],
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            weights: [55, 15, 20, 10],
        }
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut weights = [0u32; 4];
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not KIND=WEIGHT"))?;
            let v: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("weight `{v}` is not a number"))?;
            let i = EventKind::MIX
                .iter()
                .position(|e| e.as_str() == k.trim())
                .ok_or_else(|| {
                    format!("unknown event kind `{k}` (syslog, syscheck, eventchannel, rootcheck)")
                })?;
            weights[i] = v;
        }
        if weights.iter().all(|&w| w == 0) {
            return Err("every weight is 0".into());
        }
        Ok(Mix { weights })
    }
}

impl Mix {
    /// Picks a kind; Windows events become syslog lines for OSSEC agents.
    pub fn pick(&self, rng: &mut impl Rng, flavor: Flavor) -> EventKind {
        let total: u32 = self.weights.iter().sum();
        let mut r = rng.gen_range(0..total);
        for (i, &w) in self.weights.iter().enumerate() {
            if r < w {
                let k = EventKind::MIX[i];
                return match (k, flavor) {
                    (EventKind::EventChannel, Flavor::Ossec) => EventKind::Syslog,
                    _ => k,
                };
            }
            r -= w;
        }
        EventKind::Syslog
    }
}

/// What an event needs to know about its sender and the time.
pub struct EventCtx<'a> {
    pub name: &'a str,
    /// The `client.keys` IP field (`any`), as agents write it.
    pub key_ip: &'a str,
    pub flavor: Flavor,
    /// Unix time in microseconds at which the message is built.
    pub now_us: i64,
    /// Put `stamp=<now_us>` (text) or `"stamp":<now_us>` (JSON) in the message.
    pub stamp: bool,
}

const USERS: [&str; 12] = [
    "root", "admin", "ubuntu", "deploy", "oracle", "postgres", "git", "test", "guest", "jenkins",
    "alice", "bob",
];
const COMMANDS: [&str; 8] = [
    "systemctl restart nginx",
    "apt-get update",
    "journalctl -u ssh --since today",
    "cat /etc/shadow",
    "docker ps -a",
    "tail -f /var/log/syslog",
    "vi /etc/ssh/sshd_config",
    "kill -9 4242",
];
const FILES: [&str; 10] = [
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/hosts",
    "/etc/ssh/sshd_config",
    "/etc/sudoers",
    "/usr/bin/sudo",
    "/usr/sbin/sshd",
    "/etc/crontab",
    "/etc/resolv.conf",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// UTC broken down: (year, month, day, hour, minute, second).
pub fn utc(unix_secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let (y, m, d) = civil(unix_secs.div_euclid(86_400));
    let s = unix_secs.rem_euclid(86_400) as u32;
    (y, m, d, s / 3600, s / 60 % 60, s % 60)
}

fn hex(rng: &mut impl Rng, out: &mut String, chars: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut left = chars;
    while left > 0 {
        let mut v: u64 = rng.gen();
        for _ in 0..left.min(16) {
            out.push(HEX[(v & 15) as usize] as char);
            v >>= 4;
        }
        left -= left.min(16);
    }
}

fn ipv4(rng: &mut impl Rng, out: &mut String) {
    let v: u32 = rng.gen();
    let _ = write!(
        out,
        "{}.{}.{}.{}",
        [198, 203, 185, 45, 91][(v % 5) as usize],
        (v >> 8) & 0xff,
        (v >> 16) & 0xff,
        1 + (v >> 24) % 254
    );
}

fn pick<'a, T: ?Sized>(rng: &mut impl Rng, xs: &'a [&'a T]) -> &'a T {
    xs[rng.gen_range(0..xs.len())]
}

/// Appends one event payload of `kind` to `out` (which is cleared first).
pub fn build(kind: EventKind, ctx: &EventCtx<'_>, rng: &mut impl Rng, out: &mut String) {
    out.clear();
    match kind {
        EventKind::Syslog => syslog(ctx, rng, out),
        EventKind::Syscheck => match ctx.flavor {
            Flavor::Wazuh => syscheck_json(ctx, rng, out),
            Flavor::Ossec => syscheck_text(ctx, rng, out),
        },
        EventKind::EventChannel => eventchannel(ctx, rng, out),
        EventKind::Rootcheck => rootcheck(ctx, rng, out),
        EventKind::AgentStarted => {
            let loc = match ctx.flavor {
                Flavor::Wazuh => "wazuh-agent",
                Flavor::Ossec => "ossec",
            };
            let _ = write!(out, "1:{loc}:ossec: ");
            stamp_text(ctx, out);
            let _ = write!(
                out,
                "Agent started: '{}->{}'. Simulated by ossec-agent-sim {}.",
                ctx.name,
                ctx.key_ip,
                env!("CARGO_PKG_VERSION")
            );
        }
    }
    // Every template is well under the limit; this only guards against a
    // future template growing past it.
    if out.len() > MAX_EVENT {
        let mut cut = MAX_EVENT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
}

fn stamp_text(ctx: &EventCtx<'_>, out: &mut String) {
    if ctx.stamp {
        let _ = write!(out, "stamp={} ", ctx.now_us);
    }
}

fn stamp_json(ctx: &EventCtx<'_>, out: &mut String) {
    if ctx.stamp {
        let _ = write!(out, "\"stamp\":{},", ctx.now_us);
    }
}

/// `Nov 29 10:00:01 host prog[pid]: ` (the syslog header), then the stamp.
fn syslog_header(ctx: &EventCtx<'_>, prog: &str, pid: Option<u32>, out: &mut String) {
    let (_, mo, d, h, mi, s) = utc(ctx.now_us / 1_000_000);
    let _ = write!(
        out,
        "{} {:2} {:02}:{:02}:{:02} {} {}",
        MONTHS[(mo - 1) as usize],
        d,
        h,
        mi,
        s,
        ctx.name,
        prog
    );
    if let Some(p) = pid {
        let _ = write!(out, "[{p}]");
    }
    out.push_str(": ");
    stamp_text(ctx, out);
}

fn syslog(ctx: &EventCtx<'_>, rng: &mut impl Rng, out: &mut String) {
    let pid = rng.gen_range(300..65_000);
    let user = pick(rng, &USERS);
    let port = rng.gen_range(1024..65_535);
    match rng.gen_range(0..10) {
        0..=2 => {
            out.push_str("1:/var/log/auth.log:");
            syslog_header(ctx, "sshd", Some(pid), out);
            let _ = write!(out, "Failed password for {user} from ");
            ipv4(rng, out);
            let _ = write!(out, " port {port} ssh2");
        }
        3 => {
            out.push_str("1:/var/log/auth.log:");
            syslog_header(ctx, "sshd", Some(pid), out);
            let _ = write!(out, "Accepted publickey for {user} from ");
            ipv4(rng, out);
            let _ = write!(out, " port {port} ssh2: ED25519 SHA256:");
            hex(rng, out, 43);
        }
        4 => {
            out.push_str("1:/var/log/auth.log:");
            syslog_header(ctx, "sshd", Some(pid), out);
            let _ = write!(out, "Invalid user {user}{} from ", rng.gen_range(0..100));
            ipv4(rng, out);
            let _ = write!(out, " port {port}");
        }
        5 => {
            out.push_str("1:/var/log/auth.log:");
            syslog_header(ctx, "sshd", Some(pid), out);
            let _ = write!(
                out,
                "pam_unix(sshd:session): session opened for user {user}(uid={}) by (uid=0)",
                rng.gen_range(1000..2000)
            );
        }
        6 => {
            out.push_str("1:/var/log/auth.log:");
            syslog_header(ctx, "sudo", None, out);
            let _ = write!(
                out,
                "   {user} : TTY=pts/{} ; PWD=/home/{user} ; USER=root ; COMMAND=/usr/bin/{}",
                rng.gen_range(0..8),
                pick(rng, &COMMANDS)
            );
        }
        7 => {
            out.push_str("1:/var/log/auth.log:");
            syslog_header(ctx, "sshd", Some(pid), out);
            let _ = write!(out, "Disconnected from authenticating user {user} ");
            ipv4(rng, out);
            let _ = write!(out, " port {port} [preauth]");
        }
        8 => {
            out.push_str("1:/var/log/syslog:");
            syslog_header(ctx, "kernel", None, out);
            let _ = write!(
                out,
                "[{}.{:06}] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:",
                rng.gen_range(1000..900_000),
                rng.gen_range(0..1_000_000)
            );
            hex(rng, out, 6);
            out.push_str(":08:00 SRC=");
            ipv4(rng, out);
            let _ = write!(
                out,
                " DST=10.0.{}.{} LEN={} TOS=0x00 PREC=0x00 TTL={} ID={} DF PROTO=TCP SPT={port} DPT={} WINDOW=64240 RES=0x00 SYN URGP=0",
                rng.gen_range(0..255),
                rng.gen_range(1..255),
                rng.gen_range(40..1500),
                rng.gen_range(30..64),
                rng.gen_range(0..65_535),
                [22, 23, 80, 443, 3306, 5432, 6379][rng.gen_range(0..7)]
            );
        }
        _ => {
            out.push_str("1:/var/log/syslog:");
            syslog_header(ctx, "CRON", Some(pid), out);
            let _ = write!(
                out,
                "pam_unix(cron:session): session closed for user {user}; (CMD (cd / && run-parts --report /etc/cron.hourly))"
            );
        }
    }
}

fn fim_attributes(rng: &mut impl Rng, out: &mut String, mtime: i64) {
    let _ = write!(
        out,
        "{{\"type\":\"file\",\"size\":{},\"perm\":\"{}\",\"uid\":\"0\",\"gid\":\"0\",\"user_name\":\"root\",\"group_name\":\"root\",\"inode\":{},\"mtime\":{},\"hash_md5\":\"",
        rng.gen_range(10..2_000_000),
        ["rw-r--r--", "rw-r-----", "rwxr-xr-x", "rw-------"][rng.gen_range(0..4)],
        rng.gen_range(100_000..9_000_000),
        mtime
    );
    hex(rng, out, 32);
    out.push_str("\",\"hash_sha1\":\"");
    hex(rng, out, 40);
    out.push_str("\",\"hash_sha256\":\"");
    hex(rng, out, 64);
    out.push_str("\",\"checksum\":\"");
    hex(rng, out, 40);
    out.push_str("\"}");
}

fn syscheck_json(ctx: &EventCtx<'_>, rng: &mut impl Rng, out: &mut String) {
    let now = ctx.now_us / 1_000_000;
    let path = pick(rng, &FILES);
    let mode = ["realtime", "scheduled", "whodata"][rng.gen_range(0..3)];
    out.push_str("8:syscheck:{");
    stamp_json(ctx, out);
    let _ = write!(
        out,
        "\"type\":\"event\",\"data\":{{\"path\":\"{path}\",\"version\":2.0,\"mode\":\"{mode}\",\"type\":\"modified\",\"timestamp\":{now},\"attributes\":"
    );
    let mtime = now - rng.gen_range(0..5);
    fim_attributes(rng, out, mtime);
    out.push_str(
        ",\"changed_attributes\":[\"size\",\"mtime\",\"md5\",\"sha1\",\"sha256\"],\"old_attributes\":",
    );
    let old_mtime = now - rng.gen_range(3600..8_000_000);
    fim_attributes(rng, out, old_mtime);
    out.push_str("}}");
}

fn syscheck_text(ctx: &EventCtx<'_>, rng: &mut impl Rng, out: &mut String) {
    out.push_str("8:syscheck:");
    stamp_text(ctx, out);
    let _ = write!(
        out,
        "{}:{}:0:0:",
        rng.gen_range(10..2_000_000),
        [33188, 33261, 33184][rng.gen_range(0..3)]
    );
    hex(rng, out, 32);
    out.push(':');
    hex(rng, out, 40);
    out.push(':');
    hex(rng, out, 64);
    let _ = write!(out, " {}", pick(rng, &FILES));
}

fn eventchannel(ctx: &EventCtx<'_>, rng: &mut impl Rng, out: &mut String) {
    let (y, mo, d, h, mi, s) = utc(ctx.now_us / 1_000_000);
    let frac = ctx.now_us % 1_000_000;
    let ts = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:06}0Z");
    let user = pick(rng, &USERS);
    let host = ctx.name.to_ascii_uppercase();
    let record = rng.gen_range(100_000..90_000_000u64);
    let (pid, tid) = (rng.gen_range(400..9000), rng.gen_range(400..9000));
    out.push_str("f:EventChannel:{");
    stamp_json(ctx, out);
    if rng.gen_bool(0.5) {
        // 4625: failed logon.
        let mut src = String::new();
        ipv4(rng, &mut src);
        let _ = write!(
            out,
            "\"Message\":\"An account failed to log on.\\r\\n\\r\\nSubject:\\r\\n\\tSecurity ID:\\t\\tS-1-0-0\\r\\n\\tAccount Name:\\t\\t-\\r\\n\\tAccount Domain:\\t\\t-\\r\\n\\tLogon ID:\\t\\t0x0\\r\\n\\r\\nLogon Type:\\t\\t\\t3\\r\\n\\r\\nAccount For Which Logon Failed:\\r\\n\\tSecurity ID:\\t\\tS-1-0-0\\r\\n\\tAccount Name:\\t\\t{user}\\r\\n\\tAccount Domain:\\t\\t{host}\\r\\n\\r\\nFailure Information:\\r\\n\\tFailure Reason:\\t\\tUnknown user name or bad password.\\r\\n\\tStatus:\\t\\t\\t0xC000006D\\r\\n\\tSub Status:\\t\\t0xC000006A\\r\\n\\r\\nProcess Information:\\r\\n\\tCaller Process ID:\\t0x0\\r\\n\\tCaller Process Name:\\t-\\r\\n\\r\\nNetwork Information:\\r\\n\\tWorkstation Name:\\t-\\r\\n\\tSource Network Address:\\t{src}\\r\\n\\tSource Port:\\t\\t{port}\\r\\n\\r\\nDetailed Authentication Information:\\r\\n\\tLogon Process:\\t\\tNtLmSsp \\r\\n\\tAuthentication Package:\\tNTLM\\r\\n\\tTransited Services:\\t-\\r\\n\\tPackage Name (NTLM only):\\t-\\r\\n\\tKey Length:\\t\\t0\\r\\n\\r\\nThis event is generated when a logon request fails. It is generated on the computer where access was attempted.\",\
\"Event\":\"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-Security-Auditing' Guid='{{54849625-5478-4994-a5ba-3e3b0328c30d}}'/><EventID>4625</EventID><Version>0</Version><Level>0</Level><Task>12544</Task><Opcode>0</Opcode><Keywords>0x8010000000000000</Keywords><TimeCreated SystemTime='{ts}'/><EventRecordID>{record}</EventRecordID><Correlation/><Execution ProcessID='{pid}' ThreadID='{tid}'/><Channel>Security</Channel><Computer>{host}</Computer><Security/></System><EventData><Data Name='SubjectUserSid'>S-1-0-0</Data><Data Name='SubjectUserName'>-</Data><Data Name='SubjectDomainName'>-</Data><Data Name='SubjectLogonId'>0x0</Data><Data Name='TargetUserSid'>S-1-0-0</Data><Data Name='TargetUserName'>{user}</Data><Data Name='TargetDomainName'>{host}</Data><Data Name='Status'>0xc000006d</Data><Data Name='FailureReason'>%%2313</Data><Data Name='SubStatus'>0xc000006a</Data><Data Name='LogonType'>3</Data><Data Name='LogonProcessName'>NtLmSsp </Data><Data Name='AuthenticationPackageName'>NTLM</Data><Data Name='WorkstationName'>-</Data><Data Name='TransmittedServices'>-</Data><Data Name='LmPackageName'>-</Data><Data Name='KeyLength'>0</Data><Data Name='ProcessId'>0x0</Data><Data Name='ProcessName'>-</Data><Data Name='IpAddress'>{src}</Data><Data Name='IpPort'>{port}</Data></EventData></Event>\"}}",
            port = rng.gen_range(1024..65_535),
        );
    } else {
        // 4688: process creation, with a command line of random length so
        // that the sizes spread up to 4 KB.
        let mut cmdline =
            String::from("powershell.exe -NoProfile -ExecutionPolicy Bypass -EncodedCommand ");
        let extra = rng.gen_range(0..800);
        while cmdline.len() < 70 + extra {
            hex(rng, &mut cmdline, 16);
        }
        let logon = rng.gen_range(0x10000..0xfffffff);
        let _ = write!(
            out,
            "\"Message\":\"A new process has been created.\\r\\n\\r\\nCreator Subject:\\r\\n\\tSecurity ID:\\t\\tS-1-5-21-1004336348-1177238915-682003330-1001\\r\\n\\tAccount Name:\\t\\t{user}\\r\\n\\tAccount Domain:\\t\\t{host}\\r\\n\\tLogon ID:\\t\\t0x{logon:X}\\r\\n\\r\\nTarget Subject:\\r\\n\\tSecurity ID:\\t\\tS-1-0-0\\r\\n\\tAccount Name:\\t\\t-\\r\\n\\tAccount Domain:\\t\\t-\\r\\n\\tLogon ID:\\t\\t0x0\\r\\n\\r\\nProcess Information:\\r\\n\\tNew Process ID:\\t\\t0x{pid:x}\\r\\n\\tNew Process Name:\\tC:\\\\Windows\\\\System32\\\\WindowsPowerShell\\\\v1.0\\\\powershell.exe\\r\\n\\tToken Elevation Type:\\t%%1938\\r\\n\\tMandatory Label:\\t\\tS-1-16-8192\\r\\n\\tCreator Process ID:\\t0x{tid:x}\\r\\n\\tCreator Process Name:\\tC:\\\\Windows\\\\explorer.exe\\r\\n\\tProcess Command Line:\\t{cmdline}\",\
\"Event\":\"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-Security-Auditing' Guid='{{54849625-5478-4994-a5ba-3e3b0328c30d}}'/><EventID>4688</EventID><Version>2</Version><Level>0</Level><Task>13312</Task><Opcode>0</Opcode><Keywords>0x8020000000000000</Keywords><TimeCreated SystemTime='{ts}'/><EventRecordID>{record}</EventRecordID><Correlation/><Execution ProcessID='4' ThreadID='{tid}'/><Channel>Security</Channel><Computer>{host}</Computer><Security/></System><EventData><Data Name='SubjectUserSid'>S-1-5-21-1004336348-1177238915-682003330-1001</Data><Data Name='SubjectUserName'>{user}</Data><Data Name='SubjectDomainName'>{host}</Data><Data Name='SubjectLogonId'>0x{logon:x}</Data><Data Name='NewProcessId'>0x{pid:x}</Data><Data Name='NewProcessName'>C:\\\\Windows\\\\System32\\\\WindowsPowerShell\\\\v1.0\\\\powershell.exe</Data><Data Name='TokenElevationType'>%%1938</Data><Data Name='ProcessId'>0x{tid:x}</Data><Data Name='CommandLine'>{cmdline}</Data><Data Name='TargetUserSid'>S-1-0-0</Data><Data Name='MandatoryLabel'>S-1-16-8192</Data><Data Name='ParentProcessName'>C:\\\\Windows\\\\explorer.exe</Data></EventData></Event>\"}}",
        );
    }
}

fn rootcheck(ctx: &EventCtx<'_>, rng: &mut impl Rng, out: &mut String) {
    out.push_str("9:rootcheck:");
    stamp_text(ctx, out);
    match rng.gen_range(0..3) {
        0 => {
            let _ = write!(
                out,
                "Trojaned version of file '/bin/{}' detected. Signature used: 'bash|^/bin/sh|file\\.h|proc\\.h|/dev/[^n]|^/bin/.*sh' (Generic).",
                ["diff", "ls", "ps", "netstat", "login"][rng.gen_range(0..5)]
            );
        }
        1 => {
            let _ = write!(
                out,
                "System Audit: CIS - Debian Linux - 1.4 - Robust partition scheme - /tmp is not on its own partition {{Uses /tmp}}. File: /etc/fstab. Reference: https://benchmarks.cisecurity.org/tools2/linux/CIS_Debian_Benchmark_v{}.0.pdf .",
                rng.gen_range(1..4)
            );
        }
        _ => {
            let _ = write!(
                out,
                "Process '{}' hidden from /proc. Possible kernel level rootkit (pid {} is not in ps output, but kill(2) reaches it).",
                rng.gen_range(300..65_000),
                rng.gen_range(300..65_000)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sizes_and_shapes() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut out = String::new();
        for flavor in [Flavor::Wazuh, Flavor::Ossec] {
            for stamp in [false, true] {
                let ctx = EventCtx {
                    name: "sim-001",
                    key_ip: "any",
                    flavor,
                    now_us: 1_764_410_401_123_456,
                    stamp,
                };
                for kind in EventKind::MIX.iter().chain([&EventKind::AgentStarted]) {
                    let (mut lo, mut hi) = (usize::MAX, 0);
                    for _ in 0..500 {
                        build(*kind, &ctx, &mut rng, &mut out);
                        lo = lo.min(out.len());
                        hi = hi.max(out.len());
                        let ev = ossec_proto::payload::event(out.as_bytes()).unwrap();
                        if stamp {
                            assert!(
                                out.contains("stamp=1764410401123456 ")
                                    || out.contains("\"stamp\":1764410401123456,"),
                                "{out}"
                            );
                        }
                        if out.starts_with("8:syscheck:{") || out.starts_with("f:") {
                            serde_json::from_slice::<serde_json::Value>(ev.message)
                                .unwrap_or_else(|e| panic!("{e}: {out}"));
                        }
                    }
                    eprintln!("{flavor:?} stamp={stamp} {kind:?}: {lo}..={hi} bytes");
                    // The lifecycle event is as short as the real one.
                    assert!(
                        lo >= MIN_EVENT || *kind == EventKind::AgentStarted,
                        "{kind:?} {lo}"
                    );
                    assert!(hi <= MAX_EVENT, "{kind:?} {hi}");
                }
            }
        }
    }

    #[test]
    fn syslog_header_format() {
        assert_eq!(utc(1_764_410_401), (2025, 11, 29, 10, 0, 1));
        let ctx = EventCtx {
            name: "web-01",
            key_ip: "any",
            flavor: Flavor::Wazuh,
            now_us: 1_764_410_401_000_000,
            stamp: true,
        };
        let mut out = String::new();
        syslog_header(&ctx, "sshd", Some(42), &mut out);
        assert_eq!(
            out,
            "Nov 29 10:00:01 web-01 sshd[42]: stamp=1764410401000000 "
        );
    }

    #[test]
    fn mix_parsing() {
        let m: Mix = "syslog=1,eventchannel=0".parse().unwrap();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        assert!((0..100).all(|_| m.pick(&mut rng, Flavor::Wazuh) == EventKind::Syslog));
        assert!("bogus=1".parse::<Mix>().is_err());
        assert!("syslog=0".parse::<Mix>().is_err());
    }
}
