//! The syslog predecoder for text events: owns recognising the header of a
//! log line the way Wazuh's `OS_CleanMSG` (`src/analysisd/cleanevent.c`)
//! does, and writing `{"predecoder":{"timestamp","hostname","program_name",
//! "pid"}}` with the keys found.
//!
//! Wazuh's forms, tried in its order: RFC 3164 `Nov 29 10:00:01 host
//! prog[pid]: msg` (also `Mär`), `2015 Dec 29 10:00:01 host …`, ISO 8601
//! `2007-06-14T15:48:55-04:00 host …` (with or without fraction and zone),
//! proftpd `2015-04-16 21:51:02,805 host …`, macOS `2021-04-21
//! 10:16:09.404756-0700 host …`, then the timestamp-only forms (xferlog,
//! snort, suricata, apache, squid) and the macOS ASL `[Sender …] [Host …]`
//! form. Beyond Wazuh: an RFC 5424 header `<PRI>1 TIMESTAMP HOST APP PROCID
//! MSGID …` and a leading `<PRI>` on the other forms, and `pid` (Wazuh
//! reads past it without storing it). The position rules work on bytes, as
//! Wazuh's do; the text is cut at the first NUL, as Wazuh's C strings are;
//! the timestamp is converted to UTF-8 lossily.

use std::borrow::Cow;

use super::json;

/// The header fields found in one line.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Header<'a> {
    pub timestamp: Option<&'a [u8]>,
    pub hostname: Option<&'a [u8]>,
    pub program_name: Option<&'a [u8]>,
    pub pid: Option<&'a [u8]>,
}

impl Header<'_> {
    fn is_empty(&self) -> bool {
        self.timestamp.is_none()
            && self.hostname.is_none()
            && self.program_name.is_none()
            && self.pid.is_none()
    }
}

/// Appends the predecoder object if the line has a header; says whether it
/// did.
pub(crate) fn derive(message: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(h) = parse(message) else {
        return false;
    };
    out.extend_from_slice(br#"{"predecoder":{"#);
    let mut first = true;
    for (key, value) in [
        ("timestamp", h.timestamp),
        ("hostname", h.hostname),
        ("program_name", h.program_name),
        ("pid", h.pid),
    ] {
        let Some(value) = value else { continue };
        if !first {
            out.push(b',');
        }
        first = false;
        json::write_str(out, key);
        out.push(b':');
        let text: Cow<str> = String::from_utf8_lossy(value);
        json::write_str(out, &text);
    }
    out.extend_from_slice(b"}}");
    true
}

/// Wazuh's `isValidChar` (`hostname_map` in `os_regex_maps.c`):
/// `a-z A-Z 0-9 ( ) - . / @ _`.
fn valid(c: Option<&u8>) -> bool {
    matches!(
        c,
        Some(
            b'a'..=b'z'
            | b'A'..=b'Z'
            | b'0'..=b'9'
            | b'('
            | b')'
            | b'-'
            | b'.'
            | b'/'
            | b'@'
            | b'_',
        )
    )
}

/// `b[i] == c`, false past the end.
fn at(b: &[u8], i: usize, c: u8) -> bool {
    b.get(i) == Some(&c)
}

fn digit(b: &[u8], i: usize) -> bool {
    matches!(b.get(i), Some(b'0'..=b'9'))
}

/// The header of `line`, if it has one; `None` leaves `data` NULL. Keys
/// whose value would be empty are left out.
pub(crate) fn parse(line: &[u8]) -> Option<Header<'_>> {
    // C strings end at the first NUL.
    let line = match line.iter().position(|&c| c == 0) {
        Some(n) => line.get(..n)?,
        None => line,
    };
    let mut h = match strip_pri(line) {
        Some((rest, true)) => rfc5424(rest).or_else(|| wazuh(rest))?,
        Some((rest, false)) => wazuh(rest)?,
        None => wazuh(line)?,
    };
    for v in [
        &mut h.timestamp,
        &mut h.hostname,
        &mut h.program_name,
        &mut h.pid,
    ] {
        if v.is_some_and(<[u8]>::is_empty) {
            *v = None;
        }
    }
    (!h.is_empty()).then_some(h)
}

/// A leading `<PRI>` (1–3 digits, at most 191): the rest, and whether an
/// RFC 5424 version `1 ` follows.
fn strip_pri(line: &[u8]) -> Option<(&[u8], bool)> {
    if !at(line, 0, b'<') {
        return None;
    }
    let close = line.iter().take(5).position(|&c| c == b'>')?;
    let digits = line.get(1..close)?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pri: u32 = digits.iter().fold(0, |v, &c| v * 10 + u32::from(c - b'0'));
    if pri > 191 {
        return None;
    }
    let rest = line.get(close + 1..)?;
    Some((rest, rest.starts_with(b"1 ")))
}

/// RFC 5424 after `<PRI>`: `1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID`,
/// each a token or the NILVALUE `-`.
fn rfc5424(rest: &[u8]) -> Option<Header<'_>> {
    let rest = rest.get(2..)?;
    let mut fields = rest.splitn(6, |&c| c == b' ');
    let timestamp = fields.next()?;
    let hostname = fields.next()?;
    let app = fields.next()?;
    let procid = fields.next()?;
    let msgid = fields.next()?;
    if [timestamp, hostname, app, procid, msgid]
        .iter()
        .any(|f| f.is_empty())
    {
        return None;
    }
    let nil = |f: &'_ [u8]| -> bool { f == b"-" };
    if !nil(timestamp) && iso8601(timestamp) != Some(timestamp.len()) {
        return None;
    }
    Some(Header {
        timestamp: (!nil(timestamp)).then_some(timestamp),
        hostname: (!nil(hostname)).then_some(hostname),
        program_name: (!nil(app)).then_some(app),
        pid: (!nil(procid)).then_some(procid),
    })
}

/// Length of an ISO 8601 timestamp at the start of `b`:
/// `YYYY-MM-DDTHH:MM:SS`, an optional `.fraction` (1–9 digits), an
/// optional `Z`, `±HH:MM` or `±HHMM`.
fn iso8601(b: &[u8]) -> Option<usize> {
    let shape = b"dddd-dd-ddTdd:dd:dd";
    for (i, &s) in shape.iter().enumerate() {
        let ok = match s {
            b'd' => digit(b, i),
            c => at(b, i, c),
        };
        if !ok {
            return None;
        }
    }
    let mut i = shape.len();
    if at(b, i, b'.') {
        let s = i + 1;
        i = s;
        while digit(b, i) && i - s < 9 {
            i += 1;
        }
        if i == s {
            return None;
        }
    }
    if at(b, i, b'Z') {
        i += 1;
    } else if at(b, i, b'+') || at(b, i, b'-') {
        if digit(b, i + 1)
            && digit(b, i + 2)
            && at(b, i + 3, b':')
            && digit(b, i + 4)
            && digit(b, i + 5)
        {
            i += 6;
        } else if digit(b, i + 1) && digit(b, i + 2) && digit(b, i + 3) && digit(b, i + 4) {
            i += 5;
        } else {
            return None;
        }
    }
    Some(i)
}

/// `OS_CleanMSG`'s date formats, in its order.
fn wazuh(p: &[u8]) -> Option<Header<'_>> {
    let len = p.len();
    // "Mär": Wazuh rewrites the two-byte ä so that the positions below hold.
    let off = usize::from(len >= 3 && at(p, 1, 0xC3) && at(p, 2, 0xA4));

    // RFC 3164: "Dec 29 10:00:01 "
    let ts_rest = if len >= 17 + off
        && at(p, 3 + off, b' ')
        && at(p, 6 + off, b' ')
        && at(p, 9 + off, b':')
        && at(p, 12 + off, b':')
        && at(p, 15 + off, b' ')
    {
        Some((15 + off, 16 + off))
    }
    // proftpd: "2015-04-16 21:51:02,805 "
    else if len >= 24
        && at(p, 4, b'-')
        && at(p, 7, b'-')
        && at(p, 10, b' ')
        && at(p, 13, b':')
        && at(p, 16, b':')
        && at(p, 19, b',')
    {
        Some((23, 24))
    }
    // ISO 8601 with 'T' followed by a space (Wazuh: fixed offsets for
    // "-04:00", ".288+00:00", ".214994-07:00", ".214994-0700").
    else if let Some(n) = iso8601(p).filter(|&n| at(p, n, b' ')) {
        Some((n, n + 1))
    }
    // "2015 Dec 29 10:00:01 "
    else if len >= 21
        && digit(p, 0)
        && at(p, 4, b' ')
        && at(p, 8, b' ')
        && at(p, 11, b' ')
        && at(p, 14, b':')
        && at(p, 17, b':')
        && at(p, 20, b' ')
    {
        Some((20, 21))
    }
    // macOS ULS: "2021-04-21 10:16:09.404756-0700 "
    else if len >= 33
        && digit(p, 0)
        && at(p, 4, b'-')
        && at(p, 7, b'-')
        && at(p, 10, b' ')
        && at(p, 13, b':')
        && at(p, 16, b':')
        && at(p, 19, b'.')
        && (at(p, 26, b'-') || at(p, 26, b'+'))
        && at(p, 31, b' ')
    {
        Some((31, 32))
    } else {
        None
    };
    if let Some((ts_end, rest)) = ts_rest {
        let mut h = host_and_program(p.get(rest..)?);
        h.timestamp = p.get(..ts_end);
        return Some(h);
    }
    timestamp_only(p)
}

/// After a syslog timestamp: `host prog[pid]: `, `host prog: `, a Solaris
/// `prog: ` without host, or AIX `host auth|security:info prog: `.
fn host_and_program(b: &[u8]) -> Header<'_> {
    let mut h = Header::default();
    // One extra space is allowed.
    let b = if at(b, 0, b' ') {
        b.get(1..).unwrap_or_default()
    } else {
        b
    };
    let mut i = 0;
    while valid(b.get(i)) {
        i += 1;
    }
    if at(b, i, b':') && at(b, i + 1, b' ') {
        // Solaris: no hostname.
        h.program_name = b.get(..i);
        return h;
    }
    if !at(b, i, b' ') {
        return h;
    }
    h.hostname = b.get(..i);
    let b = b.get(i + 1..).unwrap_or_default();
    let mut i = 0;
    while valid(b.get(i)) {
        i += 1;
    }
    let name = b.get(..i);
    match b.get(i) {
        Some(b':') => h.program_name = name,
        Some(b'[') if digit(b, i + 1) => {
            let s = i + 1;
            let mut j = s;
            while digit(b, j) {
                j += 1;
            }
            if at(b, j, b']') && (at(b, j + 1, b':') || at(b, j + 1, b' ')) {
                h.program_name = name;
                h.pid = b.get(s..j);
            }
        }
        Some(b'|') if matches!(b.get(i + 1), Some(b'a'..=b'z')) => {
            aix(b.get(i + 2..).unwrap_or_default(), &mut h)
        }
        _ => {}
    }
    h
}

/// AIX: after `facility|`: `facility:severity prog: ` or
/// `facility:severity prog[pid]: `.
fn aix<'a>(b: &'a [u8], h: &mut Header<'a>) {
    let mut i = 0;
    while b.get(i).is_some_and(u8::is_ascii_alphanumeric) {
        i += 1;
    }
    if !at(b, i, b':') {
        return;
    }
    i += 1;
    while b.get(i).is_some_and(u8::is_ascii_alphanumeric) {
        i += 1;
    }
    if !at(b, i, b' ') {
        return;
    }
    let b = b.get(i + 1..).unwrap_or_default();
    let mut i = 0;
    while valid(b.get(i)) {
        i += 1;
    }
    let name = b.get(..i);
    if at(b, i, b':') && at(b, i + 1, b' ') {
        h.program_name = name;
    } else if at(b, i, b'[') && digit(b, i + 1) {
        let s = i + 1;
        let mut j = s;
        while digit(b, j) {
            j += 1;
        }
        h.program_name = name;
        if at(b, j, b']') && at(b, j + 1, b':') && at(b, j + 2, b' ') {
            h.pid = b.get(s..j);
        }
    }
}

/// The forms that carry a timestamp only (or, for macOS ASL, a sender and
/// host but no timestamp).
fn timestamp_only(p: &[u8]) -> Option<Header<'_>> {
    let len = p.len();
    let ts = |s: usize, e: usize| {
        Some(Header {
            timestamp: p.get(s..e),
            ..Header::default()
        })
    };
    // xferlog: "Mon Apr 17 18:27:14 2006 1 64.160.42.130"
    if len >= 28
        && at(p, 3, b' ')
        && at(p, 7, b' ')
        && at(p, 10, b' ')
        && at(p, 13, b':')
        && at(p, 16, b':')
        && at(p, 19, b' ')
        && at(p, 24, b' ')
        && at(p, 26, b' ')
    {
        return ts(0, 24);
    }
    // snort: "01/28-09:13:16.240702  [**]"
    if len >= 24
        && at(p, 2, b'/')
        && at(p, 5, b'-')
        && at(p, 8, b':')
        && at(p, 11, b':')
        && at(p, 14, b'.')
        && at(p, 21, b' ')
    {
        return ts(0, 21);
    }
    // suricata: "01/28/1979-09:13:16.240702  [**]"
    if len >= 28
        && at(p, 2, b'/')
        && at(p, 5, b'/')
        && at(p, 10, b'-')
        && at(p, 13, b':')
        && at(p, 16, b':')
        && at(p, 19, b'.')
        && at(p, 26, b' ')
    {
        return ts(0, 26);
    }
    // apache: "[Fri Feb 11 18:06:35 2004] [warn]"
    if len >= 27
        && at(p, 0, b'[')
        && at(p, 4, b' ')
        && at(p, 8, b' ')
        && at(p, 11, b' ')
        && at(p, 14, b':')
        && at(p, 17, b':')
        && at(p, 20, b' ')
        && at(p, 25, b']')
    {
        return ts(1, 25);
    }
    // macOS ASL: "[Time 2006.12.28 15:53:55 UTC] [Facility auth] [Sender sshd] …"
    if len >= 26
        && at(p, 0, b'[')
        && at(p, 1, b'T')
        && at(p, 5, b' ')
        && at(p, 10, b'.')
        && at(p, 13, b'.')
        && at(p, 16, b' ')
        && at(p, 19, b':')
    {
        return asl(p.get(25..)?);
    }
    // squid: "1140804070.368  11623"
    if len >= 32
        && at(p, 0, b'1')
        && digit(p, 1)
        && digit(p, 2)
        && digit(p, 3)
        && at(p, 10, b'.')
        && digit(p, 13)
        && at(p, 14, b' ')
        && (at(p, 21, b' ') || at(p, 22, b' '))
    {
        return ts(0, 14);
    }
    None
}

/// macOS ASL entries `[Sender x]` (program), `[PID n]`, `[Host h]` (the
/// last one read, as in Wazuh); one `[Message …]` is skipped whole so that
/// its text cannot fake an entry.
fn asl(b: &[u8]) -> Option<Header<'_>> {
    let mut h = Header::default();
    let mut message_done = false;
    let mut i = b.iter().position(|&c| c == b'[')?;
    loop {
        i += 1;
        let rest = b.get(i..)?;
        let close = |from: usize| {
            rest.get(from..)?
                .iter()
                .position(|&c| c == b']')
                .map(|p| from + p)
        };
        if h.program_name.is_none() && rest.starts_with(b"Sender ") {
            let e = close(7)?;
            h.program_name = rest.get(7..e);
            i += e + 1;
        } else if h.pid.is_none() && rest.starts_with(b"PID ") {
            if let Some(e) = close(4) {
                let pid = rest
                    .get(4..e)
                    .filter(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
                h.pid = pid;
                i += e + 1;
            }
        } else if !message_done && rest.starts_with(b"Message ") {
            message_done = true;
            match close(8) {
                Some(e) => i += e + 1,
                None => break,
            }
        } else if rest.starts_with(b"Host ") {
            h.hostname = close(5).and_then(|e| rest.get(5..e));
            break;
        }
        match b.get(i..)?.iter().position(|&c| c == b'[') {
            Some(p) => i += p,
            None => break,
        }
    }
    (!h.is_empty()).then_some(h)
}
