//! What a decrypted payload means (PROTOCOL.md §5): control messages and events.
//!
//! Owns the exact control headers (`#!-agent startup `, `#!-agent shutdown `,
//! `#!-agent ack `, `#!-req `), the keepalive parser for the Wazuh and the
//! OSSEC forms, and the event split `Q:location:message` with Wazuh's `|`
//! escaping and the queue-character names.

use std::borrow::Cow;

use crate::error::{Reject, RejectKind};

pub const CONTROL_HEADER: &[u8] = b"#!-";
pub const STARTUP: &[u8] = b"#!-agent startup ";
pub const SHUTDOWN: &[u8] = b"#!-agent shutdown ";
pub const ACK: &[u8] = b"#!-agent ack ";
pub const REQ: &[u8] = b"#!-req ";

/// A classified payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<'a> {
    Event(Event<'a>),
    Control(Control<'a>),
}

/// An event `Q:location:message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// The queue character.
    pub queue: u8,
    /// Location with Wazuh's `|` escaping removed.
    pub location: Cow<'a, [u8]>,
    /// The log itself, exactly as sent.
    pub message: &'a [u8],
}

impl Event<'_> {
    pub fn queue_name(&self) -> &'static str {
        queue_name(self.queue)
    }
}

/// A control message (`#!-…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control<'a> {
    /// `#!-agent startup ` with the optional JSON of Wazuh ≥ 4.6.
    Startup { version: Option<String> },
    /// `#!-agent shutdown ` (Wazuh only): no ACK.
    Shutdown,
    /// `#!-agent ack ` (manager → agent).
    Ack,
    /// `#!-req <counter> <data>`: a reply to a manager request; no ACK.
    Request { data: &'a [u8] },
    /// A keepalive: answered with an ACK.
    Keepalive(Box<Keepalive>),
    /// Any other `#!-` text without a newline (manager commands such as
    /// `#!-execd …`, or a keepalive that Wazuh would call invalid): no ACK.
    Other { text: &'a [u8] },
}

impl Control<'_> {
    /// Whether a manager answers this message with `#!-agent ack `.
    pub fn wants_ack(&self) -> bool {
        matches!(self, Control::Startup { .. } | Control::Keepalive(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Control::Startup { .. } => "startup",
            Control::Shutdown => "shutdown",
            Control::Ack => "ack",
            Control::Request { .. } => "request",
            Control::Keepalive(_) => "keepalive",
            Control::Other { .. } => "other",
        }
    }
}

/// One label line of a Wazuh keepalive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Label {
    pub key: String,
    pub value: String,
    /// `!`-prefixed.
    pub hidden: bool,
    /// `#`-prefixed.
    pub system: bool,
}

/// A parsed keepalive (§5.1), Wazuh or OSSEC form.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Keepalive {
    /// The uname part of the first line, as sent.
    pub uname: String,
    pub hostname: Option<String>,
    pub os_name: Option<String>,
    pub os_platform: Option<String>,
    pub os_version: Option<String>,
    pub arch: Option<String>,
    /// e.g. `Wazuh v4.14.7` or `OSSEC HIDS v3.7.0`.
    pub agent_version: Option<String>,
    /// MD5 of the agent's `agent.conf`, when it has one.
    pub config_sum: Option<String>,
    /// MD5 of `merged.mg`, or `x`.
    pub merged_sum: Option<String>,
    pub labels: Vec<Label>,
    /// The `#"_agent_ip":` line of Wazuh agents.
    pub agent_ip: Option<String>,
}

/// Classifies a payload. Fails only for an event that is not `Q:location:message`.
pub fn classify(payload: &[u8]) -> Result<Payload<'_>, Reject> {
    if payload.starts_with(CONTROL_HEADER) {
        return Ok(Payload::Control(control(payload)));
    }
    event(payload).map(Payload::Event)
}

fn control(p: &[u8]) -> Control<'_> {
    if let Some(rest) = p.strip_prefix(STARTUP) {
        let version = serde_json::from_slice::<serde_json::Value>(rest)
            .ok()
            .and_then(|v| v.get("version")?.as_str().map(str::to_owned));
        return Control::Startup { version };
    }
    if p == SHUTDOWN {
        return Control::Shutdown;
    }
    if p == ACK {
        return Control::Ack;
    }
    if let Some(data) = p.strip_prefix(REQ) {
        return Control::Request { data };
    }
    match p.iter().rposition(|&b| b == b'\n') {
        Some(last_nl) => Control::Keepalive(Box::new(keepalive(&p[3..last_nl]))),
        None => Control::Other { text: &p[3..] },
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Parses a keepalive body (after `#!-`, up to the last newline).
pub fn keepalive(body: &[u8]) -> Keepalive {
    let mut k = Keepalive::default();
    let mut lines = body.split(|&b| b == b'\n');
    let first = text(lines.next().unwrap_or_default());
    // `<uname> - <agent version>[ / <config sum>]`
    let (uname, version_part) = match first.rfind(" - ") {
        Some(i) => (&first[..i], Some(&first[i + 3..])),
        None => (first.as_str(), None),
    };
    if let Some(v) = version_part {
        match v.split_once(" / ") {
            Some((ver, sum)) => {
                k.agent_version = non_empty(ver);
                k.config_sum = non_empty(sum);
            }
            None => k.agent_version = non_empty(v),
        }
    }
    k.uname = uname.to_owned();
    parse_uname(uname, &mut k);
    for line in lines {
        let line = text(line);
        if line.is_empty() {
            continue;
        }
        if let Some(sum) = line.strip_suffix(" merged.mg") {
            k.merged_sum = non_empty(sum);
            continue;
        }
        let (system, hidden, rest) = match line.as_bytes().first() {
            Some(b'#') => (true, false, &line[1..]),
            Some(b'!') => (false, true, &line[1..]),
            _ => (false, false, line.as_str()),
        };
        if let Some(rest) = rest.strip_prefix('"') {
            if let Some((key, value)) = rest.split_once("\":") {
                if system && key == "_agent_ip" {
                    k.agent_ip = non_empty(value);
                } else {
                    k.labels.push(Label {
                        key: key.to_owned(),
                        value: value.to_owned(),
                        hidden,
                        system,
                    });
                }
            }
        }
    }
    k
}

/// Fills host and OS fields from the uname text.
///
/// * Wazuh Unix: `sysname |hostname |release |version |machine [os_name|platform: os_version]`
/// * Wazuh Windows: `os_name [Ver: os_version] |hostname |arch`
/// * OSSEC and the Wazuh fallback: `sysname hostname release version… machine`
fn parse_uname(uname: &str, k: &mut Keepalive) {
    let parts: Vec<&str> = uname.split(" |").collect();
    if parts.len() >= 3 && parts[0].contains(" [Ver: ") {
        if let Some((name, ver)) = parts[0].split_once(" [Ver: ") {
            k.os_name = non_empty(name);
            k.os_version = non_empty(ver.trim_end_matches(']'));
        }
        k.os_platform = Some("windows".to_owned());
        k.hostname = non_empty(parts[1]);
        k.arch = non_empty(parts[2]);
        return;
    }
    if parts.len() >= 5 {
        k.hostname = non_empty(parts[1]);
        let last = parts[parts.len() - 1];
        let (machine, os) = match last.split_once(" [") {
            Some((m, os)) => (m, Some(os.trim_end_matches(']'))),
            None => (last, None),
        };
        k.arch = non_empty(machine);
        if let Some(os) = os {
            // `os_name|os_platform: os_version`
            let (name, rest) = os.split_once('|').unwrap_or((os, ""));
            k.os_name = non_empty(name);
            match rest.split_once(": ") {
                Some((platform, version)) => {
                    k.os_platform = non_empty(platform);
                    k.os_version = non_empty(version);
                }
                None => k.os_platform = non_empty(rest),
            }
        } else {
            k.os_name = non_empty(parts[0]);
        }
        return;
    }
    let words: Vec<&str> = uname.split(' ').filter(|w| !w.is_empty()).collect();
    if words.len() >= 3 {
        k.os_name = non_empty(words[0]);
        k.hostname = non_empty(words[1]);
        k.arch = words.last().and_then(|w| non_empty(w));
    }
}

/// Splits `Q:location:message`, undoing Wazuh's escaping of the location:
/// a `|` escapes the next byte, the first unescaped `:` ends the location.
pub fn event(p: &[u8]) -> Result<Event<'_>, Reject> {
    let (&queue, rest) = match p.split_first() {
        Some(x) => x,
        None => return Err(Reject::new(RejectKind::Format, "empty event")),
    };
    let rest = match rest.split_first() {
        Some((b':', r)) => r,
        _ => {
            return Err(Reject::new(
                RejectKind::Format,
                "event is not `Q:location:message` (no `:` after the queue character)",
            ))
        }
    };
    let mut i = 0;
    let mut escaped = false;
    let end = loop {
        match rest.get(i) {
            None => {
                return Err(Reject::new(
                    RejectKind::Format,
                    "event is not `Q:location:message` (no `:` after the location)",
                ))
            }
            Some(b'|') => {
                escaped = true;
                i += 2;
            }
            Some(b':') => break i,
            Some(_) => i += 1,
        }
    };
    let raw_location = &rest[..end];
    let location = if escaped {
        Cow::Owned(unescape(raw_location))
    } else {
        Cow::Borrowed(raw_location)
    };
    Ok(Event {
        queue,
        location,
        message: &rest[end + 1..],
    })
}

/// `|x` → `x`; a trailing lone `|` is kept (`wstr_unescape`).
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.iter().copied();
    while let Some(b) = it.next() {
        if b == b'|' {
            match it.next() {
                Some(n) => out.push(n),
                None => out.push(b'|'),
            }
        } else {
            out.push(b);
        }
    }
    out
}

/// The name of a queue character (§5.2).
pub fn queue_name(q: u8) -> &'static str {
    match q {
        b'1' => "localfile",
        b'2' => "syslog",
        b'3' => "hostinfo",
        b'4' => "secure",
        b'5' => "dbsync",
        b'8' => "syscheck",
        b'9' => "rootcheck",
        b'a' => "mysql",
        b'b' => "postgresql",
        b'c' => "auth",
        b'd' => "syscollector",
        b'e' => "ciscat",
        b'f' => "eventchannel",
        b'p' => "sca",
        b'u' => "upgrade",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wazuh_keepalive() {
        let p = b"#!-Linux |web-01 |5.15.0-91-generic |#101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023 |x86_64 [Ubuntu|ubuntu: 22.04.3 LTS (Jammy Jellyfish)] - Wazuh v4.14.7 / ab73af41699f13fdd81903b5f23d8d00\n\"env\":prod\n!\"secret\":s\nfd756ba04d9c32c8848d4608bec41251 merged.mg\n#\"_agent_ip\":10.0.0.38\n";
        let Payload::Control(Control::Keepalive(k)) = classify(p).unwrap() else {
            panic!()
        };
        assert_eq!(k.hostname.as_deref(), Some("web-01"));
        assert_eq!(k.os_name.as_deref(), Some("Ubuntu"));
        assert_eq!(k.os_platform.as_deref(), Some("ubuntu"));
        assert_eq!(
            k.os_version.as_deref(),
            Some("22.04.3 LTS (Jammy Jellyfish)")
        );
        assert_eq!(k.arch.as_deref(), Some("x86_64"));
        assert_eq!(k.agent_version.as_deref(), Some("Wazuh v4.14.7"));
        assert_eq!(
            k.config_sum.as_deref(),
            Some("ab73af41699f13fdd81903b5f23d8d00")
        );
        assert_eq!(
            k.merged_sum.as_deref(),
            Some("fd756ba04d9c32c8848d4608bec41251")
        );
        assert_eq!(k.agent_ip.as_deref(), Some("10.0.0.38"));
        assert_eq!(k.labels.len(), 2);
        assert!(k.labels[1].hidden && k.labels[1].key == "secret");
    }

    #[test]
    fn ossec_keepalive_drops_random_tail() {
        let p = b"#!-Linux ossec-old 4.19.0-18-amd64 #1 SMP Debian 4.19.208-1 x86_64 - OSSEC HIDS v3.7.0\nx merged.mg\n\nq8Zk3jd92kdm2l1kd02msl1";
        let Payload::Control(Control::Keepalive(k)) = classify(p).unwrap() else {
            panic!()
        };
        assert_eq!(k.hostname.as_deref(), Some("ossec-old"));
        assert_eq!(k.os_name.as_deref(), Some("Linux"));
        assert_eq!(k.arch.as_deref(), Some("x86_64"));
        assert_eq!(k.agent_version.as_deref(), Some("OSSEC HIDS v3.7.0"));
        assert_eq!(k.merged_sum.as_deref(), Some("x"));
        assert_eq!(k.config_sum, None);
    }

    #[test]
    fn windows_keepalive() {
        let p = b"#!-Microsoft Windows 10 Pro [Ver: 10.0.19045] |DESKTOP-1 |x86_64 - Wazuh v4.7.0\nx merged.mg\n";
        let Payload::Control(Control::Keepalive(k)) = classify(p).unwrap() else {
            panic!()
        };
        assert_eq!(k.os_name.as_deref(), Some("Microsoft Windows 10 Pro"));
        assert_eq!(k.os_version.as_deref(), Some("10.0.19045"));
        assert_eq!(k.hostname.as_deref(), Some("DESKTOP-1"));
        assert_eq!(k.arch.as_deref(), Some("x86_64"));
    }

    #[test]
    fn control_headers_are_exact() {
        assert_eq!(
            classify(b"#!-agent startup {\"version\":\"v4.14.7\"}").unwrap(),
            Payload::Control(Control::Startup {
                version: Some("v4.14.7".into())
            })
        );
        assert_eq!(
            classify(b"#!-agent startup ").unwrap(),
            Payload::Control(Control::Startup { version: None })
        );
        assert_eq!(
            classify(b"#!-agent shutdown ").unwrap(),
            Payload::Control(Control::Shutdown)
        );
        assert_eq!(
            classify(b"#!-agent ack ").unwrap(),
            Payload::Control(Control::Ack)
        );
        assert!(matches!(
            classify(b"#!-req 1a2b ack").unwrap(),
            Payload::Control(Control::Request { .. })
        ));
        assert!(matches!(
            classify(b"#!-no newline").unwrap(),
            Payload::Control(Control::Other { .. })
        ));
    }

    #[test]
    fn event_location_unescaping() {
        let e =
            event(b"1:C|:\\Program Files (x86)\\app\\log||old.txt:2026-11-29 10:00: x").unwrap();
        assert_eq!(&*e.location, b"C:\\Program Files (x86)\\app\\log|old.txt");
        assert_eq!(e.message, b"2026-11-29 10:00: x");
        assert_eq!(e.queue_name(), "localfile");
        let e = event(b"8:(001) any->syscheck:{}").unwrap();
        assert_eq!(&*e.location, b"(001) any->syscheck");
        let e = event(b"1:a|:").unwrap_err();
        assert_eq!(e.kind, RejectKind::Format);
        assert!(event(b"1").is_err());
        assert!(event(b"1x").is_err());
        assert_eq!(unescape(b"abc|"), b"abc|");
    }
}
