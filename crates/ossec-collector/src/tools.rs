//! The offline tools: `decode`, `keys derive`, `keys check`.
//!
//! Owns turning raw bytes into one JSON line per message for people
//! debugging an integration. They run the same protocol code as `serve`.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use base64::Engine;
use ossec_proto::codec::{identify, parse_wire, Identified, Wire};
use ossec_proto::frame::FrameReader;
use ossec_proto::keys::{self, Severity};
use ossec_proto::payload::{classify, Control, Payload};
use ossec_proto::{ClientKeys, Decoder, Opened, Reject};
use serde_json::{json, Map, Value};

/// Transport of the input bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputTransport {
    /// One datagram per input.
    Udp,
    /// A stream of length-prefixed frames per input.
    Tcp,
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("input").required(true).multiple(false))]
pub struct DecodeArgs {
    /// The client.keys file with the agents' keys.
    #[arg(long, value_name = "FILE")]
    pub keys: PathBuf,
    /// Address the message came from: finds agents that send no `!ID!`
    /// prefix, and checks the address of those that do. Without it the
    /// address check is skipped.
    #[arg(long, value_name = "IP")]
    pub source_ip: Option<IpAddr>,
    /// Decode with this agent's key, whatever the prefix (for
    /// manager→agent replies, which carry none).
    #[arg(long, value_name = "ID")]
    pub agent: Option<String>,
    /// `udp`: each input is one message; `tcp`: each input is a stream of frames.
    #[arg(long, value_enum, default_value = "udp")]
    pub transport: InputTransport,
    /// The input as hex, instead of FILE arguments.
    #[arg(long, value_name = "HEX", conflicts_with = "files", group = "input")]
    pub hex: Option<String>,
    /// Files holding raw bytes (one message each with --transport udp), or give --hex.
    #[arg(value_name = "FILE", group = "input")]
    pub files: Vec<PathBuf>,
}

/// Exit status of a tool: 0 all good, 1 some input failed, 2 bad usage.
pub type Status = i32;

fn usage(msg: impl std::fmt::Display) -> Status {
    eprintln!("error: {msg}");
    2
}

fn read_keys(path: &PathBuf) -> Result<ClientKeys, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    ClientKeys::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs `decode`, printing one JSON object per message on stdout.
pub fn decode(args: &DecodeArgs) -> Status {
    let keys = match read_keys(&args.keys) {
        Ok(k) => k,
        Err(e) => return usage(e),
    };
    let forced = match &args.agent {
        Some(id) => match keys.index_of_id(id) {
            Some(i) => Some(i),
            None => {
                return usage(format!(
                    "--agent {id}: no such agent in {}",
                    args.keys.display()
                ))
            }
        },
        None => None,
    };
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(h) = &args.hex {
        let clean: String = h.chars().filter(|c| !c.is_whitespace()).collect();
        match hex::decode(&clean) {
            Ok(b) => inputs.push(("--hex".into(), b)),
            Err(e) => return usage(format!("--hex is not valid hex: {e}")),
        }
    }
    for f in &args.files {
        match std::fs::read(f) {
            Ok(b) => inputs.push((f.display().to_string(), b)),
            Err(e) => return usage(format!("cannot read {}: {e}", f.display())),
        }
    }
    let mut decoder = Decoder::new();
    let mut failed = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (name, bytes) in &inputs {
        let mut emit = |v: Value| {
            failed |= v.get("error").is_some();
            let _ = writeln!(out, "{v}");
        };
        match args.transport {
            InputTransport::Udp => {
                let mut v = decode_one(&keys, &mut decoder, bytes, args.source_ip, forced);
                v["input"] = json!(name);
                emit(v);
            }
            InputTransport::Tcp => {
                let mut reader = FrameReader::new();
                reader.feed(bytes);
                let mut n = 0;
                loop {
                    match reader.next_frame() {
                        Ok(Some(frame)) => {
                            n += 1;
                            let mut v =
                                decode_one(&keys, &mut decoder, frame, args.source_ip, forced);
                            v["input"] = json!(name);
                            v["frame"] = json!(n);
                            emit(v);
                        }
                        Ok(None) => {
                            if reader.pending() > 0 || n == 0 {
                                let mut v = error_json(&Reject::new(
                                    ossec_proto::RejectKind::Format,
                                    format!(
                                        "stream ends inside a frame ({} bytes left over)",
                                        reader.pending()
                                    ),
                                ));
                                v["input"] = json!(name);
                                emit(v);
                            }
                            break;
                        }
                        Err(e) => {
                            let mut v = error_json(&e);
                            v["input"] = json!(name);
                            v["frame"] = json!(n + 1);
                            emit(v);
                            break;
                        }
                    }
                }
            }
        }
    }
    i32::from(failed)
}

fn error_json(e: &Reject) -> Value {
    json!({"error": {"kind": e.kind.as_str(), "detail": e.detail}})
}

/// Decodes one message into its JSON description.
pub fn decode_one(
    keys: &ClientKeys,
    decoder: &mut Decoder,
    wire: &[u8],
    source: Option<IpAddr>,
    forced: Option<usize>,
) -> Value {
    let identified = match forced {
        Some(agent) => match parse_wire(wire) {
            Ok(Wire::Ping) => Ok(Identified::Ping),
            Ok(Wire::Sealed { id, sealed }) => Ok(Identified::Sealed {
                agent,
                id_prefix: id.is_some(),
                sealed,
            }),
            Err(e) => Err(e),
        },
        None => identify(keys, wire, source).map_err(|mut e| {
            // Manager→agent replies carry no prefix: say how to decode them.
            if e.detail.starts_with("no `!ID!` prefix") {
                e.detail.to_mut().push_str(" (for a manager→agent reply, pass --agent ID; for an agent message without prefix, --source-ip IP)");
            }
            e
        }),
    };
    let (agent, id_prefix, sealed) = match identified {
        Ok(Identified::Ping) => return json!({"kind": "ping", "payload": "#ping"}),
        Ok(Identified::Sealed {
            agent,
            id_prefix,
            sealed,
        }) => (agent, id_prefix, sealed),
        Err(e) => return error_json(&e),
    };
    let entry = &keys.entries()[agent];
    match decoder.open(&entry.agent_key, sealed) {
        Ok(opened) => describe(&entry.id, &entry.name, id_prefix, &opened),
        Err(e) => {
            let mut v = error_json(&e);
            v["error"]["agent_id"] = json!(entry.id);
            v
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The JSON description of an opened message. `payload` is the payload as a
/// string; when it is not valid UTF-8, invalid bytes show as U+FFFD there
/// and `payload_base64` holds the exact bytes.
pub fn describe(agent_id: &str, agent_name: &str, id_prefix: bool, o: &Opened<'_>) -> Value {
    let mut m = Map::new();
    m.insert("agent_id".into(), json!(agent_id));
    m.insert("agent_name".into(), json!(agent_name));
    m.insert("id_prefix".into(), json!(id_prefix));
    m.insert("cipher".into(), json!(o.cipher.as_str()));
    m.insert("aes_iv".into(), json!(o.aes_iv.map(|i| i.as_str())));
    m.insert("rand".into(), json!(o.header.rand));
    m.insert("global_counter".into(), json!(o.header.global_counter));
    m.insert("local_counter".into(), json!(o.header.local_counter));
    m.insert("payload".into(), json!(text(o.payload)));
    if std::str::from_utf8(o.payload).is_err() {
        m.insert(
            "payload_base64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(o.payload)),
        );
    }
    match classify(o.payload) {
        Ok(Payload::Event(e)) => {
            m.insert("kind".into(), json!("event"));
            m.insert("queue".into(), json!(text(&[e.queue])));
            m.insert("queue_name".into(), json!(e.queue_name()));
            m.insert("location".into(), json!(text(&e.location)));
            m.insert("message".into(), json!(text(e.message)));
        }
        Ok(Payload::Control(c)) => {
            m.insert("kind".into(), json!("control"));
            m.insert("control".into(), json!(c.name()));
            m.insert("wants_ack".into(), json!(c.wants_ack()));
            match c {
                Control::Startup { version } => {
                    m.insert("version".into(), json!(version));
                }
                Control::Keepalive(k) => {
                    if let Value::Object(fields) = json!(*k) {
                        m.extend(fields);
                    }
                }
                Control::Request { data } => {
                    m.insert("data".into(), json!(text(data)));
                }
                Control::Other { text: t } => {
                    m.insert("text".into(), json!(text(t)));
                }
                Control::Shutdown | Control::Ack => {}
            }
        }
        Err(e) => {
            m.insert("kind".into(), json!("event"));
            m.insert("event_error".into(), error_json(&e)["error"].clone());
        }
    }
    Value::Object(m)
}

/// `keys derive`: every step of the derivation as JSON.
pub fn keys_derive(id: &str, name: &str, key: &str) -> Status {
    let steps =
        ossec_proto::derive::derivation_steps(id.as_bytes(), name.as_bytes(), key.as_bytes());
    let mut v = json!(steps);
    v["id"] = json!(id);
    v["name"] = json!(name);
    v["key"] = json!(key);
    v["note"] = json!("keys are ASCII hex strings: AES-256 uses the 32 ASCII bytes of aes_key, Blowfish the 47 ASCII bytes of blowfish_key; the AES IV is the 16 ASCII bytes FEDCBA0987654321, the Blowfish IV the 8 bytes fe dc ba 98 76 54 32 10");
    match serde_json::to_string_pretty(&v) {
        Ok(s) => println!("{s}"),
        Err(e) => return usage(e),
    }
    0
}

/// `keys check`: one line per finding; exit 1 if any.
pub fn keys_check(path: &PathBuf) -> Status {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) => return usage(format!("cannot read {}: {e}", path.display())),
    };
    let findings = keys::check(&text);
    let agents = ClientKeys::parse(&text).map(|k| k.len());
    for f in &findings {
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        println!("{}:{}: {sev}: {}", path.display(), f.line, f.problem);
    }
    match agents {
        Ok(n) if findings.is_empty() => {
            println!("{}: {n} agents, no problems found", path.display());
            0
        }
        Ok(n) => {
            println!(
                "{}: {n} agents, {} problems found",
                path.display(),
                findings.len()
            );
            1
        }
        Err(e) => {
            println!("{}: serve would refuse this file: {e}", path.display());
            1
        }
    }
}

/// The /health URL of a collector whose metrics listen on `metrics_listen`
/// (an unspecified address means this host).
pub fn health_url(metrics_listen: Option<&str>) -> String {
    let addr = metrics_listen
        .and_then(|m| m.parse::<std::net::SocketAddr>().ok())
        .map(|mut a| {
            if a.ip().is_unspecified() {
                a.set_ip(if a.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            a
        })
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 9514)));
    format!("http://{addr}/health")
}

/// `healthcheck`: GET the URL (plain HTTP), exit 0 on a 200 answer.
pub fn healthcheck(url: &str) -> Status {
    use std::io::Read;
    use std::net::ToSocketAddrs;
    use std::time::Duration;
    let Some(rest) = url.strip_prefix("http://") else {
        return usage(format!("{url}: only http:// URLs are supported"));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = match hostport.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(a) => a,
        None => return usage(format!("{url}: cannot resolve {hostport}")),
    };
    let result = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
        )?;
        let mut body = String::new();
        s.take(64 * 1024).read_to_string(&mut body)?;
        Ok(body)
    })();
    match result {
        Ok(resp) if resp.starts_with("HTTP/1.1 200") => {
            println!("healthy");
            0
        }
        Ok(resp) => {
            let line = resp.lines().next().unwrap_or("");
            let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").trim();
            eprintln!("unhealthy: {line}: {body}");
            1
        }
        Err(e) => {
            eprintln!("unhealthy: {url}: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_url_follows_the_metrics_address() {
        assert_eq!(health_url(None), "http://127.0.0.1:9514/health");
        assert_eq!(
            health_url(Some("0.0.0.0:9600")),
            "http://127.0.0.1:9600/health"
        );
        assert_eq!(health_url(Some("[::]:9600")), "http://[::1]:9600/health");
        assert_eq!(
            health_url(Some("10.1.2.3:9514")),
            "http://10.1.2.3:9514/health"
        );
        assert_eq!(health_url(Some("off")), "http://127.0.0.1:9514/health");
    }
}

/// Writes a file only its owner may read (mode 0600, also when it existed
/// with a wider mode): keys and private keys.
pub fn write_secret_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}

/// `agents …` commands: they work on the store (the same one `serve`
/// uses), also while collectors run; those apply changes within 2 s.
pub mod agents_cli {
    use anyhow::{anyhow, bail};
    use ossec_proto::enroll;
    use ossec_store::{AddOutcome, AgentStatus, Conflict, KeyOrigin, NewKey, Store, StoredKey};
    use serde_json::json;

    /// Opens an existing store; never creates one (a typo in the URL must
    /// not make an empty database).
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        if ossec_store::sqlite_file(url).is_some_and(|f| !f.exists()) {
            bail!("no store at {url}: run `ossec-collector serve` first, or pass --database-url");
        }
        Ok(Store::connect(url).await?)
    }

    /// `agents add NAME [--ip IP] [--group G]`: the client.keys line.
    pub async fn add(
        store: &Store,
        name: &str,
        ip: Option<&str>,
        group: Option<&str>,
    ) -> anyhow::Result<StoredKey> {
        if !enroll::valid_name(name) {
            bail!("invalid agent name `{name}`: 2 to 128 characters of A-Z a-z 0-9 . _ -, not starting with `.`");
        }
        let ip = enroll::normalise_ip(ip.unwrap_or("any")).map_err(|e| {
            anyhow!("{e}: give an IPv4/IPv6 address, a network (10.0.0.0/8) or `any`")
        })?;
        let groups = match group {
            Some(g) => enroll::parse_groups(g).map_err(|e| anyhow!("{e}"))?,
            None => Vec::new(),
        };
        let new = NewKey {
            name: name.to_owned(),
            ip: ip.clone(),
            key: crate::enroll::new_key(),
            groups,
            origin: KeyOrigin::Cli,
        };
        match store.add_key(&new, |_, _| false).await? {
            AddOutcome::Added { key, .. } => Ok(key),
            AddOutcome::Refused(Conflict::Name) => {
                bail!("an agent named `{name}` already exists: remove it first (`agents list` shows its ID)")
            }
            AddOutcome::Refused(Conflict::Ip) => {
                bail!("an agent with IP {ip} already exists: remove it first, or use another IP or `any`")
            }
        }
    }

    /// `agents remove ID`.
    pub async fn remove(store: &Store, id: &str, force: bool) -> anyhow::Result<StoredKey> {
        if !force {
            let keys = store.all_keys().await?;
            if let Some(k) = keys.iter().find(|k| k.id == id && k.is_active()) {
                if k.origin == KeyOrigin::File {
                    bail!("agent {id} comes from the --keys file of `serve`: remove its line there (with --force it is removed now, but the file brings it back when it changes or a collector starts)");
                }
            }
        }
        store
            .remove_key(id)
            .await?
            .ok_or_else(|| anyhow!("no agent {id} in the store (removed already?)"))
    }

    /// `agents export-keys`: a client.keys of every current key.
    pub async fn export(store: &Store) -> anyhow::Result<String> {
        let mut out = String::new();
        for k in store.all_keys().await?.iter().filter(|k| k.is_active()) {
            out.push_str(&format!("{} {} {} {}\n", k.id, k.name, k.ip, k.key));
        }
        Ok(out)
    }

    /// `agents list`: one row per current agent, with what the collector
    /// learnt of it.
    pub async fn list(
        store: &Store,
        status: Option<AgentStatus>,
        json_out: bool,
    ) -> anyhow::Result<String> {
        let records: std::collections::HashMap<String, ossec_store::AgentRecord> = store
            .load_agents()
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let ts = |t: Option<i64>| t.map(ossec_store::format_micros);
        let mut rows = Vec::new();
        for k in store
            .all_keys()
            .await?
            .into_iter()
            .filter(|k| k.is_active())
        {
            let r = records.get(&k.id).cloned().unwrap_or_default();
            if status.is_some_and(|s| s != r.status) {
                continue;
            }
            rows.push(json!({
                "id": k.id, "name": k.name, "ip": k.ip, "status": r.status.as_str(),
                "origin": k.origin.as_str(), "groups": k.groups,
                "created_at": ossec_store::format_micros(k.created_at),
                "last_seen": ts(r.last_seen), "last_ip": r.last_ip, "version": r.version,
                "os": r.os_name, "collector": r.collector,
            }));
        }
        if json_out {
            return Ok(serde_json::to_string_pretty(&rows)? + "\n");
        }
        let mut out = format!(
            "{:<8} {:<24} {:<16} {:<16} {:<11} {:<26} {}\n",
            "ID", "NAME", "IP", "STATUS", "ORIGIN", "LAST SEEN (UTC)", "VERSION"
        );
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
        for r in &rows {
            out.push_str(&format!(
                "{:<8} {:<24} {:<16} {:<16} {:<11} {:<26} {}\n",
                s(&r["id"]),
                s(&r["name"]),
                s(&r["ip"]),
                s(&r["status"]),
                s(&r["origin"]),
                s(&r["last_seen"]),
                s(&r["version"])
            ));
        }
        Ok(out)
    }
}
