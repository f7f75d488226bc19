//! `client.keys`: parsing, validation and agent lookup (PROTOCOL.md §1.1, §4.3).
//!
//! Owns the rules of the file format exactly as the C code reads it (comment
//! lines, removed entries, `any`, IPv4/IPv6 hosts and networks, the key being
//! the rest of the line verbatim), the lint behind `keys check`, and the two
//! lookups the receiver needs: by the `!ID!` prefix and by source address.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::derive::AgentKey;

/// NAME, IP and KEY are truncated to this many bytes by the C reader (`KEYSIZE - 1`).
pub const FIELD_MAX: usize = 127;

/// Which source addresses an entry accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedAddr {
    /// `any`: every source address.
    Any,
    /// A single host (IPv4 `/32`, IPv6 `/128` or no mask).
    Host(IpAddr),
    /// A network: address and prefix length.
    Network(IpAddr, u8),
}

impl AllowedAddr {
    /// Parses the IP field of a `client.keys` line.
    pub fn parse(field: &str) -> Result<Self, String> {
        if field == "any" {
            return Ok(AllowedAddr::Any);
        }
        let (addr_s, mask_s) = match field.split_once('/') {
            Some((a, m)) => (a, Some(m)),
            None => (field, None),
        };
        let raw: IpAddr = addr_s
            .parse::<IpAddr>()
            .map_err(|_| format!("`{field}` is not `any`, an IP address or a network"))?;
        let raw_max: u8 = if raw.is_ipv4() { 32 } else { 128 };
        let prefix = match mask_s {
            None => raw_max,
            Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) => {
                match m.parse::<u8>() {
                    Ok(p) if p <= raw_max => p,
                    _ => {
                        return Err(format!(
                            "`{field}`: prefix length `{m}` is larger than {raw_max}"
                        ))
                    }
                }
            }
            Some(m) => {
                let mask: Ipv4Addr = m
                    .parse()
                    .map_err(|_| format!("`{field}`: netmask `{m}` is not /NN or a dotted mask"))?;
                if !raw.is_ipv4() {
                    return Err(format!("`{field}`: a dotted netmask needs an IPv4 address"));
                }
                let bits = u32::from(mask);
                let ones = bits.leading_ones();
                if bits.checked_shl(ones).unwrap_or(0) != 0 {
                    return Err(format!("`{field}`: netmask `{m}` is not contiguous"));
                }
                ones as u8
            }
        };
        // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is treated as IPv4.
        let addr = raw.to_canonical();
        let (prefix, max) = if raw.is_ipv6() && addr.is_ipv4() {
            (prefix.saturating_sub(96), 32)
        } else {
            (prefix, raw_max)
        };
        if prefix == max {
            Ok(AllowedAddr::Host(addr))
        } else {
            Ok(AllowedAddr::Network(addr, prefix))
        }
    }

    /// Whether a message from `source` may use this entry.
    pub fn allows(&self, source: IpAddr) -> bool {
        let source = source.to_canonical();
        match *self {
            AllowedAddr::Any => true,
            AllowedAddr::Host(a) => a == source,
            AllowedAddr::Network(net, prefix) => contains(net, prefix, source),
        }
    }
}

fn contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix as u32)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix as u32)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// One active agent of `client.keys`.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub id: String,
    pub name: String,
    /// The IP field as written in the file.
    pub ip: String,
    pub allowed: AllowedAddr,
    /// The key: the rest of the line, verbatim (a CR or trailing spaces included).
    pub key: Vec<u8>,
    /// 1-based line number in the file.
    pub line: usize,
    pub agent_key: AgentKey,
}

impl KeyEntry {
    /// An entry held elsewhere (the store), checked as a `client.keys` line
    /// would be: non-empty ID, name and IP without spaces or newlines, a
    /// key without newline, an address that parses. Derives the key.
    pub fn new(
        id: String,
        name: String,
        ip: String,
        key: Vec<u8>,
        line: usize,
    ) -> Result<KeyEntry, String> {
        let bad_field = |f: &str| f.is_empty() || f.contains([' ', '\n', '\r']);
        if bad_field(&id) || bad_field(&name) || bad_field(&ip) {
            return Err(format!(
                "agent `{id}`: the ID, name and IP must be non-empty and hold no spaces"
            ));
        }
        if key.is_empty() || key.contains(&b'\n') {
            return Err(format!("agent {id}: the key is empty or holds a newline"));
        }
        let allowed = AllowedAddr::parse(&ip).map_err(|p| format!("agent {id}: {p}"))?;
        Ok(Self::derived(id, name, ip, allowed, &key, line))
    }

    /// The entry with its key derived; the key field is cut to what agents
    /// and managers use.
    fn derived(
        id: String,
        name: String,
        ip: String,
        allowed: AllowedAddr,
        key: &[u8],
        line: usize,
    ) -> KeyEntry {
        let key = key[..key.len().min(FIELD_MAX)].to_vec();
        KeyEntry {
            agent_key: AgentKey::derive(id.as_bytes(), name.as_bytes(), &key),
            id,
            name,
            ip,
            allowed,
            key,
            line,
        }
    }
}

/// A problem with one line of `client.keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysError {
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for KeysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client.keys line {}: {}", self.line, self.problem)
    }
}

impl std::error::Error for KeysError {}

/// How serious a `keys check` finding is. Every finding makes `keys check` fail;
/// the severity says whether `serve` would refuse the file (`error`) or load it
/// and silently misbehave (`warning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding of `keys check`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub line: usize,
    pub severity: Severity,
    pub problem: String,
}

/// A line split the way the C reader splits it.
struct RawLine<'a> {
    line: usize,
    id: &'a [u8],
    name: &'a [u8],
    ip: &'a [u8],
    key: &'a [u8],
}

enum LineKind<'a> {
    Skip,
    Removed,
    Active(RawLine<'a>),
    Malformed(String),
}

fn split_line(line_no: usize, raw: &[u8]) -> LineKind<'_> {
    if raw.is_empty() || raw == b"\r" || raw[0] == b'#' || raw[0] == b' ' {
        return LineKind::Skip;
    }
    let mut parts = raw.splitn(2, |&b| b == b' ');
    let id = parts.next().unwrap_or_default();
    let rest = match parts.next() {
        Some(r) => r,
        None => return LineKind::Malformed("expected `ID NAME IP KEY`, found one field".into()),
    };
    if matches!(rest.first(), Some(b'#') | Some(b'!')) {
        return LineKind::Removed;
    }
    let mut parts = rest.splitn(3, |&b| b == b' ');
    let name = parts.next().unwrap_or_default();
    let ip = parts.next();
    let key = parts.next();
    match (ip, key) {
        (Some(ip), Some(key)) if !name.is_empty() && !ip.is_empty() && !key.is_empty() => {
            LineKind::Active(RawLine {
                line: line_no,
                id,
                name: &name[..name.len().min(FIELD_MAX)],
                ip: &ip[..ip.len().min(FIELD_MAX)],
                key,
            })
        }
        _ => LineKind::Malformed("expected `ID NAME IP KEY` separated by single spaces".into()),
    }
}

fn lines(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let empty = text.is_empty();
    body.split(|&b| b == b'\n')
        .enumerate()
        .filter(move |_| !empty)
        .map(|(i, l)| (i + 1, l))
}

fn utf8<'a>(line: usize, what: &str, b: &'a [u8]) -> Result<&'a str, KeysError> {
    std::str::from_utf8(b).map_err(|_| KeysError {
        line,
        problem: format!("{what} is not valid UTF-8"),
    })
}

/// The parsed agents of a `client.keys` file, indexed for lookups.
#[derive(Debug, Clone, Default)]
pub struct ClientKeys {
    entries: Vec<KeyEntry>,
    by_id: HashMap<String, usize>,
    hosts: HashMap<IpAddr, usize>,
    /// Indices of network entries (not `any`), most specific first.
    networks: Vec<usize>,
}

impl ClientKeys {
    /// Parses a whole file. A malformed line, an unparsable address or a
    /// duplicate ID is an error naming the line.
    pub fn parse(text: &[u8]) -> Result<Self, KeysError> {
        let mut keys = ClientKeys::default();
        for (line_no, raw) in lines(text) {
            let raw_line = match split_line(line_no, raw) {
                LineKind::Skip | LineKind::Removed => continue,
                LineKind::Malformed(problem) => {
                    return Err(KeysError {
                        line: line_no,
                        problem,
                    })
                }
                LineKind::Active(l) => l,
            };
            let id = utf8(line_no, "the ID", raw_line.id)?.to_owned();
            let name = utf8(line_no, "the name", raw_line.name)?.to_owned();
            let ip = utf8(line_no, "the IP field", raw_line.ip)?.to_owned();
            let allowed = AllowedAddr::parse(&ip).map_err(|problem| KeysError {
                line: line_no,
                problem,
            })?;
            if let Some(&prev) = keys.by_id.get(&id) {
                return Err(KeysError {
                    line: line_no,
                    problem: format!(
                        "duplicate agent ID {id} (already used on line {})",
                        keys.entries[prev].line
                    ),
                });
            }
            keys.push(KeyEntry::derived(
                id,
                name,
                ip,
                allowed,
                raw_line.key,
                raw_line.line,
            ));
        }
        keys.finish();
        Ok(keys)
    }

    /// Builds a key set from entries made in code (the simulator, tests).
    pub fn from_entries(
        entries: impl IntoIterator<Item = (String, String, String, Vec<u8>)>,
    ) -> Result<Self, KeysError> {
        let mut text = Vec::new();
        for (id, name, ip, key) in entries {
            text.extend_from_slice(format!("{id} {name} {ip} ").as_bytes());
            text.extend_from_slice(&key);
            text.push(b'\n');
        }
        Self::parse(&text)
    }

    /// Builds a key set from entries made with [`KeyEntry::new`] (the
    /// store's keys, derived once and reused). A repeated ID is left out
    /// and returned as a problem.
    pub fn from_key_entries(entries: impl IntoIterator<Item = KeyEntry>) -> (Self, Vec<KeysError>) {
        let mut keys = ClientKeys::default();
        let mut problems = Vec::new();
        for e in entries {
            if keys.by_id.contains_key(&e.id) {
                problems.push(KeysError {
                    line: e.line,
                    problem: format!("agent {}: the ID is repeated", e.id),
                });
                continue;
            }
            keys.push(e);
        }
        keys.finish();
        (keys, problems)
    }

    /// Builds a key set from (id, name, ip, key) held elsewhere. An entry
    /// that could not be a `client.keys` line is left out and returned as
    /// a problem; `line` is then the entry's 1-based position.
    pub fn from_entries_checked(
        entries: impl IntoIterator<Item = (String, String, String, Vec<u8>)>,
    ) -> (Self, Vec<KeysError>) {
        let mut problems = Vec::new();
        let mut good = Vec::new();
        for (n, (id, name, ip, key)) in entries.into_iter().enumerate() {
            match KeyEntry::new(id, name, ip, key, n + 1) {
                Ok(e) => good.push(e),
                Err(problem) => problems.push(KeysError {
                    line: n + 1,
                    problem,
                }),
            }
        }
        let (keys, more) = Self::from_key_entries(good);
        problems.extend(more);
        (keys, problems)
    }

    /// Ends a build: networks most specific first (the sort is stable, so
    /// the entries' order breaks ties), and no spare capacity kept (a
    /// collector holds the set for its lifetime, and growing by doubling
    /// leaves up to half of it unused).
    fn finish(&mut self) {
        self.entries.shrink_to_fit();
        self.networks.shrink_to_fit();
        let entries = &self.entries;
        self.networks.sort_by_key(|&i| match entries[i].allowed {
            AllowedAddr::Network(_, p) => std::cmp::Reverse(p),
            _ => std::cmp::Reverse(0),
        });
    }

    fn push(&mut self, entry: KeyEntry) {
        let idx = self.entries.len();
        self.by_id.insert(entry.id.clone(), idx);
        match entry.allowed {
            AllowedAddr::Host(a) => {
                self.hosts.entry(a).or_insert(idx);
            }
            AllowedAddr::Network(..) => self.networks.push(idx),
            AllowedAddr::Any => {}
        }
        self.entries.push(entry);
    }

    pub fn entries(&self) -> &[KeyEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&KeyEntry> {
        self.entries.get(index)
    }

    /// Index of the entry with this ID.
    pub fn index_of_id(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    pub fn by_id(&self, id: &str) -> Option<&KeyEntry> {
        self.index_of_id(id).and_then(|i| self.entries.get(i))
    }

    /// Index of the entry a message without `!ID!` from `source` belongs to:
    /// a single-host entry with exactly that address, else the most specific
    /// network entry containing it. `any` entries are never found this way.
    pub fn index_of_source(&self, source: IpAddr) -> Option<usize> {
        let source = source.to_canonical();
        if let Some(&i) = self.hosts.get(&source) {
            return Some(i);
        }
        self.networks
            .iter()
            .copied()
            .find(|&i| self.entries[i].allowed.allows(source))
    }
}

/// Everything in a `client.keys` file that would stop `serve` or silently
/// break agents: malformed lines, unparsable addresses, duplicate IDs or names,
/// a CR or trailing spaces inside a key, keys that would be truncated, IDs
/// that the `!ID!` prefix cannot carry.
pub fn check(text: &[u8]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut ids: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut names: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut f = |line, severity, problem: String| {
        findings.push(Finding {
            line,
            severity,
            problem,
        })
    };
    for (line_no, raw) in lines(text) {
        let l = match split_line(line_no, raw) {
            LineKind::Skip | LineKind::Removed => continue,
            LineKind::Malformed(p) => {
                f(line_no, Severity::Error, p);
                continue;
            }
            LineKind::Active(l) => l,
        };
        let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        for (what, b) in [
            ("the ID", l.id),
            ("the name", l.name),
            ("the IP field", l.ip),
        ] {
            if std::str::from_utf8(b).is_err() {
                f(
                    line_no,
                    Severity::Error,
                    format!("{what} is not valid UTF-8"),
                );
            }
        }
        if let Err(p) = AllowedAddr::parse(&show(l.ip)) {
            f(line_no, Severity::Error, format!("unparsable address: {p}"));
        }
        if let Some(prev) = ids.insert(l.id.to_vec(), line_no) {
            f(
                line_no,
                Severity::Error,
                format!("duplicate agent ID {} (also on line {prev})", show(l.id)),
            );
        }
        if let Some(prev) = names.insert(l.name.to_vec(), line_no) {
            f(
                line_no,
                Severity::Warning,
                format!(
                    "duplicate agent name {} (also on line {prev})",
                    show(l.name)
                ),
            );
        }
        if !l.id.iter().all(u8::is_ascii_digit) {
            f(
                line_no,
                Severity::Warning,
                format!(
                    "agent ID {} is not all digits: agents that send the `!ID!` prefix cannot use it",
                    show(l.id)
                ),
            );
        }
        if l.key.contains(&b'\r') {
            f(
                line_no,
                Severity::Warning,
                "the key contains a CR (CRLF line ending?): it becomes part of the key and agents will not decrypt".into(),
            );
        }
        if l.key.ends_with(b" ") || l.key.ends_with(b" \r") || l.key.contains(&b'\t') {
            f(
                line_no,
                Severity::Warning,
                "the key has trailing spaces or tabs: they become part of the key".into(),
            );
        }
        if l.key.len() > FIELD_MAX {
            f(
                line_no,
                Severity::Warning,
                format!(
                    "the key is {} bytes; agents and managers use only the first {FIELD_MAX}",
                    l.key.len()
                ),
            );
        }
    }
    findings
}

/// What is wrong with a key field that makes every message of its agent
/// fail to decrypt, said with the fix (for reject logs). `None` when the
/// key looks like what managers write.
pub fn key_problem(key: &[u8]) -> Option<&'static str> {
    if key.contains(&b'\r') {
        Some("its key in the keys file ends with a CR: the file has Windows (CRLF) line ends; convert it (dos2unix) so that the key matches the agent's")
    } else if key.ends_with(b" ") || key.contains(&b'\t') {
        Some("its key in the keys file has trailing spaces or tabs, which become part of the key; remove them")
    } else if key.len() > FIELD_MAX {
        Some("its key in the keys file is longer than agents use; copy the agent's key exactly")
    } else {
        None
    }
}

/// Formats an IPv6 address the way Wazuh stores it (8 upper-case groups), for display.
pub fn wazuh_ipv6_form(a: Ipv6Addr) -> String {
    a.segments()
        .iter()
        .map(|s| format!("{s:04X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comment
 indented comment
001 web-01 any aaaa
002 db-02 10.0.0.12 bbbb
003 !removed any cccc
004 edge-04 192.168.10.0/24 dddd
005 net-05 10.1.0.0/255.255.0.0 eeee
006 v6 2001:db8::1 ffff
007 v6net 2001:db8::/32 gggg
008 #*#*#*#*#*#*#*#*#*#*#
009 mapped ::ffff:10.9.9.9 hhhh
010 crkey any iiii\r
";

    #[test]
    fn parses_every_address_form() {
        let k = ClientKeys::parse(FILE.as_bytes()).unwrap();
        let ids: Vec<_> = k.entries().iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            ["001", "002", "004", "005", "006", "007", "009", "010"]
        );
        assert_eq!(k.by_id("001").unwrap().allowed, AllowedAddr::Any);
        assert_eq!(
            k.by_id("005").unwrap().allowed,
            AllowedAddr::Network("10.1.0.0".parse().unwrap(), 16)
        );
        assert_eq!(
            k.by_id("009").unwrap().allowed,
            AllowedAddr::Host("10.9.9.9".parse().unwrap())
        );
        assert_eq!(k.by_id("010").unwrap().key, b"iiii\r");
        assert_eq!(k.by_id("004").unwrap().line, 6);
    }

    #[test]
    fn source_lookup_exact_then_containment() {
        let k = ClientKeys::parse(FILE.as_bytes()).unwrap();
        let find = |ip: &str| {
            k.index_of_source(ip.parse().unwrap())
                .map(|i| k.entries()[i].id.clone())
        };
        assert_eq!(find("10.0.0.12").as_deref(), Some("002"));
        assert_eq!(find("::ffff:10.0.0.12").as_deref(), Some("002"));
        assert_eq!(find("192.168.10.77").as_deref(), Some("004"));
        assert_eq!(find("10.1.200.3").as_deref(), Some("005"));
        assert_eq!(find("2001:db8::1").as_deref(), Some("006"));
        assert_eq!(find("2001:db8::5").as_deref(), Some("007"));
        assert_eq!(find("8.8.8.8"), None);
    }

    #[test]
    fn errors_name_the_line() {
        let e = ClientKeys::parse(b"001 a any k\n002 b\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = ClientKeys::parse(b"001 a any k\n001 b any k\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.problem.contains("duplicate agent ID 001"), "{e}");
        let e = ClientKeys::parse(b"001 a 10.0.0.300 k\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = ClientKeys::parse(b"001 a 10.0.0.0/255.0.255.0 k\n").unwrap_err();
        assert!(e.problem.contains("not contiguous"), "{e}");
    }

    #[test]
    fn check_reports_silent_breakers() {
        let text = b"001 a any k1\r\n002 a any k2 \n002 c 1.2.3.x k3\nab7 d any k4\n";
        let found = check(text);
        let problems: Vec<_> = found.iter().map(|f| (f.line, f.problem.clone())).collect();
        assert!(
            problems.iter().any(|(l, p)| *l == 1 && p.contains("CR")),
            "{problems:?}"
        );
        assert!(problems
            .iter()
            .any(|(l, p)| *l == 2 && p.contains("duplicate agent name a")));
        assert!(problems
            .iter()
            .any(|(l, p)| *l == 2 && p.contains("trailing")));
        assert!(problems
            .iter()
            .any(|(l, p)| *l == 3 && p.contains("duplicate agent ID 002")));
        assert!(problems
            .iter()
            .any(|(l, p)| *l == 3 && p.contains("unparsable address")));
        assert!(problems
            .iter()
            .any(|(l, p)| *l == 4 && p.contains("not all digits")));
        assert!(check(b"001 a any k\n002 b 10.0.0.1 k\n").is_empty());
    }
}
