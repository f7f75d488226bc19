//! `serve` settings: flags, environment, TOML file, defaults.
//!
//! Owns the list of settings and their precedence: a flag beats its
//! `OSSEC_COLLECTOR_<NAME>` environment variable (clap merges those two),
//! which beats the `--config` file, which beats the default. The file's keys
//! are the flag names with `_` for `-`; unknown keys are an error naming
//! them; `${VAR}` and `${VAR:-default}` are replaced from the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// What `serve` does when the disk spool is full (Vector's terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// TCP reads pause until there is room (agents buffer); UDP datagrams
    /// are dropped and counted (`spool_full`).
    #[default]
    Block,
    /// New events are dropped and counted (`spool_full`).
    DropNewest,
}

/// The flags of `serve`. Every one is optional here so that the file and
/// the defaults can fill what flags and environment left unset; the default
/// of each is given in its help text.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of these settings (keys are the flag names with `_`).
    #[arg(long, env = "OSSEC_COLLECTOR_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address for UDP and TCP [default: 0.0.0.0:1514]. IPv6 works, e.g. `[::]:1514`.
    #[arg(long, env = "OSSEC_COLLECTOR_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Do not listen on UDP.
    #[arg(long, env = "OSSEC_COLLECTOR_NO_UDP", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub no_udp: Option<bool>,
    /// Do not listen on TCP.
    #[arg(long, env = "OSSEC_COLLECTOR_NO_TCP", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub no_tcp: Option<bool>,
    /// A client.keys file whose agents are imported into the store (origin `file`) at start, on SIGHUP and when it changes; removing a line removes only that agent [default: ./client.keys if it exists, else none: keys come from the store only].
    #[arg(long, env = "OSSEC_COLLECTOR_KEYS", value_name = "FILE")]
    pub keys: Option<PathBuf>,
    /// Reads the keys from this file instead (e.g. a mounted secret); same as --keys.
    #[arg(
        long,
        env = "OSSEC_COLLECTOR_KEYS_FILE",
        value_name = "FILE",
        hide = true
    )]
    #[serde(skip)]
    pub keys_file: Option<PathBuf>,
    /// Store: `sqlite://FILE` (created if missing) or `postgres://…` [default: sqlite://ossec-collector.db].
    #[arg(long, env = "OSSEC_COLLECTOR_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Reads the database URL from this file (e.g. a compose secret) [default: none].
    #[arg(long, env = "OSSEC_COLLECTOR_DATABASE_URL_FILE", value_name = "FILE")]
    pub database_url_file: Option<PathBuf>,
    /// Reject replayed messages (counters not newer than the last accepted), as OSSEC does [default: true].
    #[arg(long, env = "OSSEC_COLLECTOR_VERIFY_COUNTERS", value_name = "BOOL")]
    pub verify_counters: Option<bool>,
    /// Seconds without a keepalive after which an agent is `disconnected` [default: 900].
    #[arg(long, env = "OSSEC_COLLECTOR_DISCONNECT_AFTER", value_name = "SECONDS")]
    pub disconnect_after: Option<u64>,
    /// Most TCP connections open at once; more are refused [default: 65000].
    #[arg(long, env = "OSSEC_COLLECTOR_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Seconds a TCP connection may stay silent before it is closed [default: 900].
    #[arg(long, env = "OSSEC_COLLECTOR_TCP_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub tcp_idle_timeout: Option<u64>,
    /// Events held between decoding and the store; when full TCP stops reading and UDP drops (counted) [default: 200000].
    #[arg(long, env = "OSSEC_COLLECTOR_QUEUE_CAPACITY", value_name = "N")]
    pub queue_capacity: Option<usize>,
    /// Most events per store write [default: 10000].
    #[arg(long, env = "OSSEC_COLLECTOR_BATCH_SIZE", value_name = "N")]
    pub batch_size: Option<usize>,
    /// Batches written to the store at once [default: 3 for PostgreSQL, 1 for SQLite].
    #[arg(long, env = "OSSEC_COLLECTOR_STORE_WRITERS", value_name = "N")]
    pub store_writers: Option<usize>,
    /// Longest an event waits for its batch to fill, in milliseconds (at most 200) [default: 200].
    #[arg(long, env = "OSSEC_COLLECTOR_FLUSH_INTERVAL_MS", value_name = "MS")]
    pub flush_interval_ms: Option<u64>,
    /// UDP sockets (SO_REUSEPORT) reading in parallel [default: number of CPUs].
    #[arg(long, env = "OSSEC_COLLECTOR_UDP_WORKERS", value_name = "N")]
    pub udp_workers: Option<usize>,
    /// HTTP address for the status page `/`, `/api/agents`, `/api/stats`, Prometheus
    /// `/metrics` and `/health`, or `off` [default: 127.0.0.1:9514].
    #[arg(long, env = "OSSEC_COLLECTOR_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// File whose first line is a token: every route of the metrics listener except `/health` (`/metrics`, the status page, `/api/…`) then requires `Authorization: Bearer <token>` [default: none: open to whoever reaches the listener, warned unless on loopback].
    #[arg(long, env = "OSSEC_COLLECTOR_HTTP_TOKEN_FILE", value_name = "FILE")]
    pub http_token_file: Option<PathBuf>,
    /// `text` or `json` [default: text].
    #[arg(
        long,
        env = "OSSEC_COLLECTOR_LOG_FORMAT",
        value_enum,
        value_name = "FORMAT"
    )]
    pub log_format: Option<LogFormat>,
    /// Seconds to flush queued events on SIGTERM/SIGINT before exiting [default: 30].
    #[arg(long, env = "OSSEC_COLLECTOR_SHUTDOWN_TIMEOUT", value_name = "SECONDS")]
    pub shutdown_timeout: Option<u64>,
    /// Seconds between checks of the keys file for changes [default: 10].
    #[arg(
        long,
        env = "OSSEC_COLLECTOR_KEYS_POLL_INTERVAL",
        value_name = "SECONDS"
    )]
    pub keys_poll_interval: Option<u64>,
    /// This collector's name in `agents.collector` (which collector last heard each agent) and in logs [default: the host name].
    #[arg(long, env = "OSSEC_COLLECTOR_INSTANCE_NAME", value_name = "NAME")]
    pub instance_name: Option<String>,
    /// With several collectors on one PostgreSQL store: an agent not heard by this collector within this many milliseconds has its receive counters read from the store before its message is accepted, so a message another collector accepted is a replay here too; counters are written for the others every half of it. 0: off (one collector) [default: 1000; always off with SQLite].
    #[arg(long, env = "OSSEC_COLLECTOR_COUNTER_SYNC_MS", value_name = "MS")]
    pub counter_sync_ms: Option<u64>,
    /// Directory of the disk spool between ingest and the store: a received event is kept there until the store has committed it, so a store outage or a crash loses nothing; `off` keeps events in memory only (lost on a crash or a long outage) [default: `spool/` next to the SQLite file, or in the working directory for PostgreSQL].
    #[arg(long, env = "OSSEC_COLLECTOR_SPOOL_DIR", value_name = "DIR|off")]
    pub spool_dir: Option<String>,
    /// Milliseconds between fsyncs of the spool (group commit): the most a power cut can lose [default: 200].
    #[arg(long, env = "OSSEC_COLLECTOR_SPOOL_FSYNC_MS", value_name = "MS")]
    pub spool_fsync_ms: Option<u64>,
    /// Most bytes the spool may hold [default: 1073741824 (1 GiB)].
    #[arg(long, env = "OSSEC_COLLECTOR_SPOOL_MAX_BYTES", value_name = "BYTES")]
    pub spool_max_bytes: Option<u64>,
    /// When the spool is full: `block` (TCP reads pause, UDP datagrams are dropped and counted) or `drop-newest` (new events are dropped and counted) [default: block].
    #[arg(
        long,
        env = "OSSEC_COLLECTOR_SPOOL_WHEN_FULL",
        value_name = "block|drop-newest"
    )]
    pub spool_when_full: Option<WhenFull>,
    /// Keep events this many days: older daily partitions are dropped (PostgreSQL, no DELETE) or old rows deleted in small batches (SQLite), checked at start and every 10 minutes by one collector of the store; 0 keeps everything [default: 0].
    #[arg(long, env = "OSSEC_COLLECTOR_RETENTION_DAYS", value_name = "DAYS")]
    pub retention_days: Option<u32>,
    /// PostgreSQL: daily partitions of `events` are created this many days ahead of today (2..=90) [default: 2].
    #[arg(long, env = "OSSEC_COLLECTOR_PARTITIONS_AHEAD", value_name = "DAYS")]
    pub partitions_ahead: Option<u32>,
    /// Fill `events.data` with each message's structured fields (JSON payloads, Windows eventchannel fields, syslog header); `false` stores it NULL and skips the parsing [default: true].
    #[arg(long, env = "OSSEC_COLLECTOR_EVENT_DATA", value_name = "BOOL")]
    pub event_data: Option<bool>,
    /// A PROXY protocol header (HAProxy `send-proxy`/`send-proxy-v2`, AWS NLB proxy protocol v2) starts every TCP connection (1514 and 1515): `off`, `v1`, `v2` or `any`; its address is the agent's [default: off].
    #[arg(
        long,
        env = "OSSEC_COLLECTOR_PROXY_PROTOCOL",
        value_name = "off|v1|v2|any"
    )]
    pub proxy_protocol: Option<String>,
    /// Peers that may send a PROXY header, comma-separated addresses or CIDRs; connections from others are refused and counted [default: loopback and private ranges].
    #[arg(long, env = "OSSEC_COLLECTOR_PROXY_FROM", value_name = "CIDR[,CIDR…]")]
    pub proxy_from: Option<String>,
    /// Enrollment listener (TLS, like Wazuh's authd on 1515), e.g. `0.0.0.0:1515`, or `off` [default: off].
    #[arg(long, env = "OSSEC_COLLECTOR_ENROLL_LISTEN", value_name = "ADDR")]
    pub enroll_listen: Option<String>,
    /// File whose first line is the enrollment password; requests must then start with `OSSEC PASS: <password> ` [default: none: anyone who reaches the port can enroll].
    #[arg(
        long,
        env = "OSSEC_COLLECTOR_ENROLL_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub enroll_password_file: Option<PathBuf>,
    /// PEM certificate (chain) of the enrollment listener [default: a self-signed one made at first start and kept next to the store].
    #[arg(long, env = "OSSEC_COLLECTOR_ENROLL_CERT", value_name = "FILE")]
    pub enroll_cert: Option<PathBuf>,
    /// PEM private key for --enroll-cert.
    #[arg(long, env = "OSSEC_COLLECTOR_ENROLL_KEY", value_name = "FILE")]
    pub enroll_key: Option<PathBuf>,
    /// The enrollment TLS key stays in an HSM: an RFC 7512 URI, e.g. `pkcs11:token=collector;object=enroll?module-path=/usr/lib/softhsm/libsofthsm2.so` (PIN from --enroll-pin-file).
    #[arg(long, env = "OSSEC_COLLECTOR_ENROLL_KEY_PKCS11", value_name = "URI")]
    pub enroll_key_pkcs11: Option<String>,
    /// File holding the HSM user PIN for --enroll-key-pkcs11.
    #[arg(long, env = "OSSEC_COLLECTOR_ENROLL_PIN_FILE", value_name = "FILE")]
    pub enroll_pin_file: Option<PathBuf>,
    /// Require agent certificates signed by this PEM CA (Wazuh `ssl_agent_ca`) [default: none].
    #[arg(long, env = "OSSEC_COLLECTOR_ENROLL_CA", value_name = "FILE")]
    pub enroll_ca: Option<PathBuf>,
    /// Register the agent's TLS peer address instead of `any` when it sends no `IP:` (Wazuh `use_source_ip`) [default: false].
    #[arg(long, env = "OSSEC_COLLECTOR_ENROLL_USE_SOURCE_IP", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub enroll_use_source_ip: Option<bool>,
    /// Replace an existing agent with the same name or IP when the rules below allow it (Wazuh `force.enabled`) [default: true].
    #[arg(long, env = "OSSEC_COLLECTOR_ENROLL_FORCE", value_name = "BOOL")]
    pub enroll_force: Option<bool>,
    /// Replace only agents disconnected (or never connected) for at least this many seconds; 0 turns the check off (Wazuh `force.disconnected_time`) [default: 3600].
    #[arg(
        long,
        env = "OSSEC_COLLECTOR_ENROLL_FORCE_DISCONNECTED_TIME",
        value_name = "SECONDS"
    )]
    pub enroll_force_disconnected_time: Option<u64>,
    /// Replace only agents registered at least this many seconds ago (Wazuh `force.after_registration_time`) [default: 3600].
    #[arg(
        long,
        env = "OSSEC_COLLECTOR_ENROLL_FORCE_AFTER_REGISTRATION_TIME",
        value_name = "SECONDS"
    )]
    pub enroll_force_after_registration_time: Option<u64>,
    /// Do not replace an agent whose key the request's `K:` hash matches (Wazuh `force.key_mismatch`) [default: true].
    #[arg(
        long,
        env = "OSSEC_COLLECTOR_ENROLL_FORCE_KEY_MISMATCH",
        value_name = "BOOL"
    )]
    pub enroll_force_key_mismatch: Option<bool>,
    /// Most enrollments handled at once; more connections are closed [default: 64].
    #[arg(long, env = "OSSEC_COLLECTOR_ENROLL_MAX_CONCURRENT", value_name = "N")]
    pub enroll_max_concurrent: Option<usize>,
    /// Most enrollment connections per source IP per minute; 0 = no limit [default: 60].
    #[arg(long, env = "OSSEC_COLLECTOR_ENROLL_RATE_PER_IP", value_name = "N")]
    pub enroll_rate_per_ip: Option<u32>,
    /// Seconds for the TLS handshake and the request line [default: 10].
    #[arg(long, env = "OSSEC_COLLECTOR_ENROLL_TIMEOUT", value_name = "SECONDS")]
    pub enroll_timeout: Option<u64>,
}

/// Resolved `serve` settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub udp: bool,
    pub tcp: bool,
    /// The keys file to import, if any.
    pub keys: Option<PathBuf>,
    pub database_url: String,
    pub verify_counters: bool,
    pub disconnect_after: Duration,
    pub max_connections: usize,
    pub tcp_idle_timeout: Duration,
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub store_writers: usize,
    pub flush_interval: Duration,
    pub udp_workers: usize,
    pub metrics_listen: Option<SocketAddr>,
    /// `--http-token-file`.
    pub http_token_file: Option<PathBuf>,
    pub log_format: LogFormat,
    pub shutdown_timeout: Duration,
    pub keys_poll_interval: Duration,
    /// The enrollment listener, when on.
    pub enroll: Option<EnrollSettings>,
    /// PROXY protocol on the TCP listeners, when on.
    pub proxy: Option<crate::proxy::ProxySettings>,
    /// `--instance-name`.
    pub instance_name: String,
    /// `--counter-sync-ms` (`None`: 0).
    pub counter_sync: Option<Duration>,
    /// The disk spool, unless `--spool-dir off`.
    pub spool: Option<SpoolSettings>,
    /// `--retention-days` (0: keep everything).
    pub retention_days: u32,
    /// `--partitions-ahead`.
    pub partitions_ahead: u32,
    /// `--event-data`.
    pub event_data: bool,
}

impl Settings {
    /// The spool's defaults (its directory: `spool` in the working directory).
    pub fn default_spool() -> SpoolSettings {
        SpoolSettings {
            dir: PathBuf::from("spool"),
            fsync: Duration::from_millis(200),
            max_bytes: 1 << 30,
            when_full: WhenFull::Block,
        }
    }
}

/// `--spool-dir` and its companions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub fsync: Duration,
    pub max_bytes: u64,
    pub when_full: WhenFull,
}

/// Replacement of an agent whose name or IP a new enrollment asks for
/// (Wazuh 4.14's `<force>` block and its defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForcePolicy {
    pub enabled: bool,
    /// `None`: any status may be replaced.
    pub disconnected_time: Option<Duration>,
    pub after_registration_time: Duration,
    pub key_mismatch: bool,
}

impl Default for ForcePolicy {
    fn default() -> Self {
        ForcePolicy {
            enabled: true,
            disconnected_time: Some(Duration::from_secs(3600)),
            after_registration_time: Duration::from_secs(3600),
            key_mismatch: true,
        }
    }
}

/// Resolved enrollment settings.
#[derive(Debug, Clone)]
pub struct EnrollSettings {
    pub listen: SocketAddr,
    pub password_file: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub key_pkcs11: Option<String>,
    pub pin_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub use_source_ip: bool,
    pub force: ForcePolicy,
    pub max_concurrent: usize,
    pub rate_per_ip: u32,
    pub timeout: Duration,
    /// Where the self-signed certificate is kept (next to the store).
    pub cert_dir: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([0, 0, 0, 0], 1514)),
            udp: true,
            tcp: true,
            keys: None,
            database_url: "sqlite://ossec-collector.db".into(),
            verify_counters: true,
            disconnect_after: Duration::from_secs(900),
            max_connections: 65000,
            tcp_idle_timeout: Duration::from_secs(900),
            queue_capacity: 200_000,
            batch_size: 10_000,
            store_writers: 1,
            flush_interval: Duration::from_millis(200),
            udp_workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9514))),
            http_token_file: None,
            log_format: LogFormat::Text,
            shutdown_timeout: Duration::from_secs(30),
            keys_poll_interval: Duration::from_secs(10),
            enroll: None,
            proxy: None,
            instance_name: hostname(),
            counter_sync: Some(Duration::from_millis(1000)),
            spool: Some(Settings::default_spool()),
            retention_days: 0,
            partitions_ahead: 2,
            event_data: true,
        }
    }
}

/// The host name (`gethostname`), or `ossec-collector` if it has none.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(h) if rc == 0 && !h.is_empty() => h.to_owned(),
        _ => "ossec-collector".to_owned(),
    }
}

/// The directory "next to the store": the SQLite file's directory, else
/// the working directory.
pub fn store_dir(database_url: &str) -> PathBuf {
    match ossec_store::sqlite_file(database_url)
        .as_deref()
        .and_then(Path::parent)
    {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// A configuration problem, naming the setting or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Replaces `${VAR}` and `${VAR:-default}` with environment values; `$$`
/// is a literal `$`. Comment lines are left alone. An unset variable
/// without default is an error naming it and its line.
pub fn interpolate(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(a) = after.strip_prefix('$') {
                out.push('$');
                rest = a;
            } else if let Some(body) = after.strip_prefix('{') {
                let end = body
                    .find('}')
                    .ok_or_else(|| format!("line {}: `${{` without closing `}}`", n + 1))?;
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                match (env(name).filter(|v| !v.is_empty()), default) {
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => {
                        return Err(format!(
                            "line {}: environment variable {name} is not set and has no default (write ${{{name}:-default}})",
                            n + 1
                        ))
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Reads a TOML config file (interpolated) into the same shape as the flags.
pub fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text =
        interpolate(&text, |v| std::env::var(v).ok()).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

impl ServeArgs {
    /// Resolves flags/env (self) over the `--config` file over defaults.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(p) => read_file(p)?,
            None => ServeArgs::default(),
        };
        let d = Settings::default();
        macro_rules! pick {
            ($f:ident) => {
                self.$f.clone().or(file.$f.clone())
            };
        }
        let secs = |v: Option<u64>, def: Duration| v.map(Duration::from_secs).unwrap_or(def);
        // The URL and the URL file are one setting: whichever comes from the
        // strongest source wins (a flag/env URL file beats a URL in the file).
        let read_url = |p: &Path| -> Result<String, ConfigError> {
            Ok(std::fs::read_to_string(p)
                .map_err(|e| {
                    ConfigError::Invalid(format!(
                        "cannot read database URL file {}: {e}",
                        p.display()
                    ))
                })?
                .trim()
                .to_owned())
        };
        let database_url = match (
            &self.database_url,
            &self.database_url_file,
            &file.database_url,
            &file.database_url_file,
        ) {
            (Some(u), _, _, _) => u.clone(),
            (None, Some(p), _, _) => read_url(p)?,
            (None, None, Some(u), _) => u.clone(),
            (None, None, None, Some(p)) => read_url(p)?,
            (None, None, None, None) => d.database_url,
        };
        let metrics_listen = match pick!(metrics_listen) {
            None => d.metrics_listen,
            Some(s) if s == "off" || s.is_empty() => None,
            Some(s) => Some(s.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "metrics_listen `{s}` is not an address (ip:port) or `off`"
                ))
            })?),
        };
        let flush = pick!(flush_interval_ms).unwrap_or(200);
        if flush == 0 || flush > 200 {
            return Err(ConfigError::Invalid(format!(
                "flush_interval_ms {flush} must be within 1..=200"
            )));
        }
        let store_writers = pick!(store_writers)
            .unwrap_or(if database_url.starts_with("postgres") {
                // While one COPY waits on WAL writes, the others keep the
                // server busy: 3 beat 2 and 4 by 5-25 % in the benchmark
                // (docs/benchmarks.md).
                3
            } else {
                1
            })
            .clamp(1, 16);
        let s = Settings {
            listen: pick!(listen).unwrap_or(d.listen),
            udp: !pick!(no_udp).unwrap_or(false),
            tcp: !pick!(no_tcp).unwrap_or(false),
            keys: self.keys_file.clone().or(pick!(keys)).or_else(|| {
                let default = PathBuf::from("client.keys");
                default.exists().then_some(default)
            }),
            database_url,
            verify_counters: pick!(verify_counters).unwrap_or(d.verify_counters),
            disconnect_after: secs(pick!(disconnect_after), d.disconnect_after),
            max_connections: pick!(max_connections).unwrap_or(d.max_connections),
            tcp_idle_timeout: secs(pick!(tcp_idle_timeout), d.tcp_idle_timeout),
            queue_capacity: pick!(queue_capacity).unwrap_or(d.queue_capacity).max(1),
            batch_size: pick!(batch_size).unwrap_or(d.batch_size).max(1),
            store_writers,
            flush_interval: Duration::from_millis(flush),
            udp_workers: pick!(udp_workers).unwrap_or(d.udp_workers).clamp(1, 64),
            metrics_listen,
            http_token_file: pick!(http_token_file).filter(|p| !p.as_os_str().is_empty()),
            log_format: pick!(log_format).unwrap_or_default(),
            shutdown_timeout: secs(pick!(shutdown_timeout), d.shutdown_timeout),
            keys_poll_interval: secs(pick!(keys_poll_interval), d.keys_poll_interval),
            enroll: None,
            proxy: None,
            instance_name: pick!(instance_name)
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(hostname),
            counter_sync: match pick!(counter_sync_ms) {
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
                None => d.counter_sync,
            },
            spool: None,
            retention_days: pick!(retention_days).unwrap_or(d.retention_days),
            partitions_ahead: pick!(partitions_ahead).unwrap_or(d.partitions_ahead),
            event_data: pick!(event_data).unwrap_or(d.event_data),
        };
        if !(2..=90).contains(&s.partitions_ahead) {
            return Err(ConfigError::Invalid(format!(
                "--partitions-ahead {} must be within 2..=90 (today and at least two days ahead always exist)",
                s.partitions_ahead
            )));
        }
        let mut s = s;
        let spool_default = Settings::default_spool();
        s.spool = match pick!(spool_dir).as_deref().map(str::trim) {
            Some("off") => None,
            Some("") => {
                return Err(ConfigError::Invalid(
                    "--spool-dir: give a directory, or `off` for the memory-only queue".into(),
                ))
            }
            dir => Some(SpoolSettings {
                dir: match dir {
                    Some(d) => PathBuf::from(d),
                    // Next to the SQLite file; the working directory for PostgreSQL.
                    None => store_dir(&s.database_url).join("spool"),
                },
                fsync: Duration::from_millis(
                    pick!(spool_fsync_ms)
                        .unwrap_or(spool_default.fsync.as_millis() as u64)
                        .clamp(1, 60_000),
                ),
                max_bytes: pick!(spool_max_bytes).unwrap_or(spool_default.max_bytes),
                when_full: pick!(spool_when_full).unwrap_or(spool_default.when_full),
            }),
        };
        use ossec_proto::proxy::Versions;
        let versions = match pick!(proxy_protocol).as_deref() {
            None | Some("off") | Some("") => None,
            Some("v1") => Some(Versions::V1),
            Some("v2") => Some(Versions::V2),
            Some("any") => Some(Versions::Any),
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "proxy_protocol `{other}` is not one of off, v1, v2, any"
                )))
            }
        };
        s.proxy = match versions {
            None => None,
            Some(versions) => Some(crate::proxy::ProxySettings {
                versions,
                from: crate::proxy::ProxySettings::parse_from(
                    pick!(proxy_from)
                        .as_deref()
                        .unwrap_or(crate::proxy::DEFAULT_FROM),
                )
                .map_err(ConfigError::Invalid)?,
            }),
        };
        s.enroll = match pick!(enroll_listen).as_deref() {
            None | Some("off") | Some("") => None,
            Some(a) => {
                let listen: SocketAddr = a.parse().map_err(|_| {
                    ConfigError::Invalid(format!(
                        "enroll_listen `{a}` is not an address (ip:port) or `off`"
                    ))
                })?;
                let fd = ForcePolicy::default();
                let e = EnrollSettings {
                    listen,
                    password_file: pick!(enroll_password_file)
                        .filter(|p| !p.as_os_str().is_empty()),
                    cert: pick!(enroll_cert).filter(|p| !p.as_os_str().is_empty()),
                    key: pick!(enroll_key).filter(|p| !p.as_os_str().is_empty()),
                    key_pkcs11: pick!(enroll_key_pkcs11).filter(|u| !u.is_empty()),
                    pin_file: pick!(enroll_pin_file).filter(|p| !p.as_os_str().is_empty()),
                    ca: pick!(enroll_ca).filter(|p| !p.as_os_str().is_empty()),
                    use_source_ip: pick!(enroll_use_source_ip).unwrap_or(false),
                    force: ForcePolicy {
                        enabled: pick!(enroll_force).unwrap_or(fd.enabled),
                        disconnected_time: match pick!(enroll_force_disconnected_time) {
                            Some(0) => None,
                            Some(n) => Some(Duration::from_secs(n)),
                            None => fd.disconnected_time,
                        },
                        after_registration_time: secs(
                            pick!(enroll_force_after_registration_time),
                            fd.after_registration_time,
                        ),
                        key_mismatch: pick!(enroll_force_key_mismatch).unwrap_or(fd.key_mismatch),
                    },
                    max_concurrent: pick!(enroll_max_concurrent).unwrap_or(64).max(1),
                    rate_per_ip: pick!(enroll_rate_per_ip).unwrap_or(60),
                    timeout: secs(pick!(enroll_timeout), Duration::from_secs(10)),
                    cert_dir: store_dir(&s.database_url),
                };
                if e.key_pkcs11.is_none() && e.cert.is_some() != e.key.is_some() {
                    return Err(ConfigError::Invalid(
                        "enroll_cert and enroll_key go together: give both, or neither for a self-signed certificate".into(),
                    ));
                }
                if e.key.is_some() && e.key_pkcs11.is_some() {
                    return Err(ConfigError::Invalid(
                        "enroll_key and enroll_key_pkcs11 both name the private key: give one"
                            .into(),
                    ));
                }
                if e.key_pkcs11.is_some() && e.pin_file.is_none() {
                    return Err(ConfigError::Invalid(
                        "enroll_key_pkcs11 needs enroll_pin_file (the PIN is never taken from a flag or the environment)".into(),
                    ));
                }
                Some(e)
            }
        };
        if !s.udp && !s.tcp {
            return Err(ConfigError::Invalid(
                "both UDP and TCP are turned off: nothing to listen on".into(),
            ));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation() {
        let env = |v: &str| match v {
            "A" => Some("x".to_owned()),
            _ => None,
        };
        assert_eq!(interpolate("k = \"${A}\"\n", env).unwrap(), "k = \"x\"\n");
        assert_eq!(interpolate("k = \"${B:-d}\"", env).unwrap(), "k = \"d\"");
        assert_eq!(interpolate("k = \"$$A\"", env).unwrap(), "k = \"$A\"");
        assert_eq!(interpolate("# ${B}\n", env).unwrap(), "# ${B}\n");
        let e = interpolate("a = 1\nk = \"${B}\"", env).unwrap_err();
        assert!(e.contains("line 2") && e.contains("B"), "{e}");
    }

    #[test]
    fn precedence_flag_over_file_over_default() {
        let dir = std::env::temp_dir().join(format!("occfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:2000\"\nbatch_size = 7\nno_udp = true\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(f.clone()),
            batch_size: Some(9),
            ..Default::default()
        };
        let s = args.resolve().unwrap();
        assert_eq!(s.listen, "127.0.0.1:2000".parse().unwrap());
        assert_eq!(s.batch_size, 9);
        assert!(!s.udp && s.tcp);
        assert_eq!(s.disconnect_after, Duration::from_secs(900));
        // A URL file from flags/env beats a URL written in the file.
        let url_file = dir.join("url");
        std::fs::write(&url_file, "postgres://from-secret/db\n").unwrap();
        std::fs::write(&f, "database_url = \"sqlite://from-config.db\"\n").unwrap();
        let with_secret = ServeArgs {
            config: Some(f.clone()),
            database_url_file: Some(url_file),
            ..Default::default()
        };
        assert_eq!(
            with_secret.resolve().unwrap().database_url,
            "postgres://from-secret/db"
        );
        std::fs::write(&f, "listen = \"127.0.0.1:2000\"\nbogus_key = 1\n").unwrap();
        let e = args.resolve().unwrap_err().to_string();
        assert!(e.contains("bogus_key"), "{e}");
    }
}
