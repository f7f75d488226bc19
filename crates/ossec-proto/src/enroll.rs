//! Enrollment on port 1515 (PROTOCOL.md §7): the one request line an agent
//! sends over TLS and the one answer it gets, in both directions.
//!
//! The manager side parses a request ([`parse_request`]) the way Wazuh's
//! `w_auth_parse_data` does — fields strictly in the order
//! `OSSEC A:'…'[ V:'…'][ G:'…'][ IP:'…'][ K:'…']`, each after one space — and
//! formats answers ([`Answer`]) in the Wazuh or the OSSEC form. The agent
//! side formats requests ([`format_request`]) and reads answers
//! ([`parse_answer`]). Name, group and address rules and the `K:` key hash
//! live here too. No I/O, no clock, no randomness: choosing IDs and making
//! keys belongs to the caller.

use std::fmt;

use sha1::{Digest, Sha1};

use crate::keys::AllowedAddr;

/// Longest request line accepted, newline excluded (Wazuh: 65536 + 4096).
pub const MAX_REQUEST: usize = 65536 + 4096;
/// Most groups in one `G:` field (Wazuh's `MAX_GROUPS_PER_MULTIGROUP`).
pub const MAX_GROUPS: usize = 128;
/// Longest group name (Wazuh refuses longer ones).
pub const MAX_GROUP_NAME: usize = 255;

/// Why an enrollment was refused. `Display` gives the reason exactly as the
/// Wazuh manager words it, without the `ERROR: ` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollError {
    InvalidPassword,
    InvalidRequest,
    InvalidName(String),
    /// `version`, `group`, `IP` or `key`.
    Unterminated(&'static str),
    InvalidGroup(String),
    InvalidIp(String),
    DuplicateName(String),
    DuplicateIp(String),
    /// Something on the manager's side (the store) failed.
    Internal(String),
}

impl EnrollError {
    /// A short stable label for metrics (`enroll_total{outcome=…}`).
    pub fn label(&self) -> &'static str {
        match self {
            EnrollError::InvalidPassword => "invalid_password",
            EnrollError::InvalidRequest => "invalid_request",
            EnrollError::InvalidName(_) => "invalid_name",
            EnrollError::Unterminated(_) => "unterminated_field",
            EnrollError::InvalidGroup(_) => "invalid_group",
            EnrollError::InvalidIp(_) => "invalid_ip",
            EnrollError::DuplicateName(_) => "duplicate_name",
            EnrollError::DuplicateIp(_) => "duplicate_ip",
            EnrollError::Internal(_) => "internal_error",
        }
    }
}

impl fmt::Display for EnrollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnrollError::InvalidPassword => f.write_str("Invalid password"),
            EnrollError::InvalidRequest => f.write_str("Invalid request for new agent"),
            EnrollError::InvalidName(n) => write!(f, "Invalid agent name: {n}"),
            EnrollError::Unterminated(what) => write!(f, "Unterminated {what} field"),
            EnrollError::InvalidGroup(g) => write!(f, "Invalid group name: {g}"),
            EnrollError::InvalidIp(ip) => write!(f, "Invalid IP: {ip}"),
            EnrollError::DuplicateName(n) => write!(f, "Duplicate agent name: {n}"),
            EnrollError::DuplicateIp(ip) => write!(f, "Duplicate IP: {ip}"),
            EnrollError::Internal(n) => write!(f, "Internal manager error adding agent: {n}"),
        }
    }
}

impl std::error::Error for EnrollError {}

/// The `IP:` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestedIp {
    /// `IP:'src'`: the TLS peer's address.
    Source,
    /// An address or network, as normalised for `client.keys`.
    Addr(String),
}

/// A parsed enrollment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    /// `V:` (Wazuh ≥ 4.6), e.g. `v4.14.7`. Recorded, never refused: a
    /// collector is no Wazuh version to be newer than (PROTOCOL.md §8).
    pub version: Option<String>,
    /// `G:`, repeated groups removed, order kept.
    pub groups: Vec<String>,
    pub ip: Option<RequestedIp>,
    /// `K:`: sha1hex(ID‖NAME‖KEY) of the key the agent already has.
    pub key_hash: Option<String>,
    /// Whether any field only Wazuh agents send is present. OSSEC agents
    /// send `OSSEC A:'name'` alone and get the OSSEC answer form.
    pub wazuh_fields: bool,
}

impl Request {
    /// The answer form for this agent: Wazuh when it sent a Wazuh-only field.
    pub fn form(&self) -> Form {
        if self.wazuh_fields {
            Form::Wazuh
        } else {
            Form::Ossec
        }
    }
}

/// Which manager's answer format to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `OSSEC K:'…'` / `ERROR: reason. Unable to add agent`, no newline.
    Wazuh,
    /// `OSSEC K:'…'\n\n` / `ERROR: reason\n\nERROR: Unable to add agent.\n\n`.
    Ossec,
}

/// Name rules of Wazuh and OSSEC (`OS_IsValidName`): 2–128 characters of
/// `[A-Za-z0-9._-]`, not starting with `.`.
pub fn valid_name(name: &str) -> bool {
    (2..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One group name: `[A-Za-z0-9._-]+`, at most 255 characters, not `.`/`..`.
pub fn valid_group(g: &str) -> bool {
    !g.is_empty()
        && g.len() <= MAX_GROUP_NAME
        && g != "."
        && g != ".."
        && g.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Splits a `G:` value on `,`, checks every group and drops repeats.
pub fn parse_groups(value: &str) -> Result<Vec<String>, EnrollError> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for g in value.split(',') {
        if !valid_group(g) {
            return Err(EnrollError::InvalidGroup(shorten(g)));
        }
        if seen.insert(g) {
            if out.len() == MAX_GROUPS {
                return Err(EnrollError::InvalidGroup(format!(
                    "more than {MAX_GROUPS} groups"
                )));
            }
            out.push(g.to_owned());
        }
    }
    Ok(out)
}

/// The `K:` hash Wazuh agents send: sha1hex of ID, name and key written
/// one after the other.
pub fn key_hash(id: &str, name: &str, key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(id.as_bytes());
    h.update(name.as_bytes());
    h.update(key);
    hex::encode(h.finalize())
}

/// At most 255 characters of hostile input go into an answer or a log.
fn shorten(s: &str) -> String {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Reads ` X:'value'` at the start of `rest`. `None` when the field is not
/// there; an error when it has no closing quote.
fn field<'a>(
    rest: &mut &'a str,
    tag: &str,
    what: &'static str,
) -> Result<Option<&'a str>, EnrollError> {
    let Some(after) = rest.strip_prefix(tag) else {
        return Ok(None);
    };
    let end = after.find('\'').ok_or(EnrollError::Unterminated(what))?;
    *rest = &after[end + 1..];
    Ok(Some(&after[..end]))
}

/// Parses one request line (without its `\n`). With `password` set, the
/// line must start with `OSSEC PASS: <password> ` (compared in constant
/// time). Without one, a password the agent sends anyway is ignored.
pub fn parse_request(line: &[u8], password: Option<&[u8]>) -> Result<Request, EnrollError> {
    if line.len() > MAX_REQUEST {
        return Err(EnrollError::InvalidRequest);
    }
    let mut rest = line;
    const PASS: &[u8] = b"OSSEC PASS: ";
    match password {
        Some(p) => {
            let given = rest
                .strip_prefix(PASS)
                .filter(|r| r.len() > p.len() && r[p.len()] == b' ')
                .map(|r| &r[..p.len()]);
            let ok = given.is_some_and(|g| subtle::ConstantTimeEq::ct_eq(g, p).into());
            if !ok {
                return Err(EnrollError::InvalidPassword);
            }
            rest = &rest[PASS.len() + p.len() + 1..];
        }
        None => {
            if let Some(r) = rest.strip_prefix(PASS) {
                // The password ends at the space before `OSSEC A:`.
                let at = r
                    .windows(10)
                    .position(|w| w == b" OSSEC A:'")
                    .ok_or(EnrollError::InvalidRequest)?;
                rest = &r[at + 1..];
            }
        }
    }
    let rest = std::str::from_utf8(rest).map_err(|_| EnrollError::InvalidRequest)?;
    let after = rest
        .strip_prefix("OSSEC A:'")
        .ok_or(EnrollError::InvalidRequest)?;
    let end = after.find('\'').ok_or(EnrollError::InvalidRequest)?;
    let name = &after[..end];
    if !valid_name(name) {
        return Err(EnrollError::InvalidName(shorten(name)));
    }
    let mut rest = &after[end + 1..];
    let version = field(&mut rest, " V:'", "version")?;
    let groups = field(&mut rest, " G:'", "group")?;
    let ip = field(&mut rest, " IP:'", "IP")?;
    let key_hash = field(&mut rest, " K:'", "key")?;
    let groups = match groups {
        Some(g) => parse_groups(g)?,
        None => Vec::new(),
    };
    let ip = match ip {
        None => None,
        Some("src") => Some(RequestedIp::Source),
        Some(a) => Some(RequestedIp::Addr(normalise_ip(a)?)),
    };
    Ok(Request {
        name: name.to_owned(),
        wazuh_fields: version.is_some() || !groups.is_empty() || ip.is_some() || key_hash.is_some(),
        version: version.map(str::to_owned),
        groups,
        ip,
        key_hash: key_hash.map(str::to_owned),
    })
}

/// Checks an address or network for a key entry and returns it in the form
/// `client.keys` keeps (`any`, an address, or `address/prefix`).
pub fn normalise_ip(a: &str) -> Result<String, EnrollError> {
    match AllowedAddr::parse(a) {
        Ok(AllowedAddr::Any) => Ok("any".into()),
        Ok(AllowedAddr::Host(ip)) => Ok(ip.to_string()),
        Ok(AllowedAddr::Network(..)) => Ok(a.to_owned()),
        Err(_) => Err(EnrollError::InvalidIp(shorten(a))),
    }
}

/// The manager's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Key {
        id: String,
        name: String,
        ip: String,
        key: String,
    },
    Refused(EnrollError),
}

impl Answer {
    /// The bytes sent back over TLS.
    pub fn to_bytes(&self, form: Form) -> Vec<u8> {
        match (self, form) {
            (Answer::Key { id, name, ip, key }, Form::Wazuh) => {
                format!("OSSEC K:'{id} {name} {ip} {key}'").into_bytes()
            }
            (Answer::Key { id, name, ip, key }, Form::Ossec) => {
                format!("OSSEC K:'{id} {name} {ip} {key}'\n\n").into_bytes()
            }
            (Answer::Refused(e), Form::Wazuh) => {
                format!("ERROR: {e}. Unable to add agent").into_bytes()
            }
            (Answer::Refused(e), Form::Ossec) => {
                format!("ERROR: {e}\n\nERROR: Unable to add agent.\n\n").into_bytes()
            }
        }
    }
}

/// Agent side: the request line, `\n` included.
pub fn format_request(
    password: Option<&str>,
    name: &str,
    version: Option<&str>,
    groups: &[&str],
    ip: Option<&str>,
    key_hash: Option<&str>,
) -> Vec<u8> {
    let mut s = String::new();
    if let Some(p) = password {
        s.push_str("OSSEC PASS: ");
        s.push_str(p);
        s.push(' ');
    }
    s.push_str("OSSEC A:'");
    s.push_str(name);
    s.push('\'');
    if let Some(v) = version {
        s.push_str(&format!(" V:'{v}'"));
    }
    if !groups.is_empty() {
        s.push_str(&format!(" G:'{}'", groups.join(",")));
    }
    if let Some(ip) = ip {
        s.push_str(&format!(" IP:'{ip}'"));
    }
    if let Some(k) = key_hash {
        s.push_str(&format!(" K:'{k}'"));
    }
    s.push('\n');
    s.into_bytes()
}

/// Agent side, as the Wazuh agent reads an answer: an `ERROR: ` line is the
/// refusal; otherwise the text between `OSSEC K:'` and the next `'` must be
/// four space-separated fields (ID of at most 8 digits, valid name, address,
/// key of name-class characters). Returns (id, name, ip, key).
pub fn parse_answer(bytes: &[u8]) -> Result<(String, String, String, String), String> {
    let text = String::from_utf8_lossy(bytes);
    if let Some(err) = text.lines().find(|l| l.starts_with("ERROR: ")) {
        return Err(err.to_owned());
    }
    let start = text
        .find("OSSEC K:'")
        .ok_or_else(|| format!("no key in the answer: {:?}", shorten(&text)))?;
    let body = &text[start + 9..];
    let end = body
        .find('\'')
        .ok_or_else(|| "the key in the answer has no closing quote".to_owned())?;
    let parts: Vec<&str> = body[..end].split(' ').collect();
    let [id, name, ip, key] = parts.as_slice() else {
        return Err(format!(
            "expected `ID NAME IP KEY` in the answer, found {} fields",
            parts.len()
        ));
    };
    if id.is_empty() || id.len() > 8 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid agent ID in the answer: {id}"));
    }
    if !valid_name(name) {
        return Err(format!("invalid agent name in the answer: {name}"));
    }
    normalise_ip(ip).map_err(|e| e.to_string())?;
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("invalid key in the answer".into());
    }
    Ok((
        (*id).to_owned(),
        (*name).to_owned(),
        (*ip).to_owned(),
        (*key).to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(line: &str) -> Result<Request, EnrollError> {
        parse_request(line.as_bytes(), None)
    }

    #[test]
    fn parses_every_field_in_order() {
        let r = req("OSSEC A:'web-01' V:'v4.14.7' G:'default,linux,default' IP:'10.0.0.5' K:'abc'")
            .unwrap();
        assert_eq!(r.name, "web-01");
        assert_eq!(r.version.as_deref(), Some("v4.14.7"));
        assert_eq!(r.groups, vec!["default", "linux"]);
        assert_eq!(r.ip, Some(RequestedIp::Addr("10.0.0.5".into())));
        assert_eq!(r.key_hash.as_deref(), Some("abc"));
        assert_eq!(r.form(), Form::Wazuh);
        let o = req("OSSEC A:'old'").unwrap();
        assert_eq!(o.form(), Form::Ossec);
        assert_eq!(o.ip, None);
        assert_eq!(
            req("OSSEC A:'a1' IP:'src'").unwrap().ip,
            Some(RequestedIp::Source)
        );
        assert_eq!(
            req("OSSEC A:'a1' IP:'10.1.0.0/16'").unwrap().ip,
            Some(RequestedIp::Addr("10.1.0.0/16".into()))
        );
    }

    #[test]
    fn errors_are_worded_like_wazuh() {
        let cases = [
            ("OSSEC X:'a1'", "Invalid request for new agent"),
            ("OSSEC A:'a1", "Invalid request for new agent"),
            ("OSSEC A:'a'", "Invalid agent name: a"),
            ("OSSEC A:'.hidden'", "Invalid agent name: .hidden"),
            ("OSSEC A:'bad name'", "Invalid agent name: bad name"),
            ("OSSEC A:'a1' V:'v4", "Unterminated version field"),
            ("OSSEC A:'a1' G:'x", "Unterminated group field"),
            ("OSSEC A:'a1' IP:'1.2.3.4", "Unterminated IP field"),
            ("OSSEC A:'a1' K:'ab", "Unterminated key field"),
            ("OSSEC A:'a1' G:'ok,../etc'", "Invalid group name: ../etc"),
            ("OSSEC A:'a1' G:'..'", "Invalid group name: .."),
            ("OSSEC A:'a1' G:''", "Invalid group name: "),
            ("OSSEC A:'a1' IP:'999.1.1.1'", "Invalid IP: 999.1.1.1"),
        ];
        for (line, want) in cases {
            assert_eq!(req(line).unwrap_err().to_string(), want, "{line}");
        }
        let long = format!("OSSEC A:'{}'", "a".repeat(129));
        assert!(matches!(req(&long), Err(EnrollError::InvalidName(_))));
        // Many distinct groups are refused at the limit, not after them all.
        let many: Vec<String> = (0..20_000).map(|i| format!("g{i}")).collect();
        let t = std::time::Instant::now();
        assert!(matches!(
            parse_groups(&many.join(",")),
            Err(EnrollError::InvalidGroup(_))
        ));
        assert!(t.elapsed() < std::time::Duration::from_millis(200));
        assert_eq!(
            parse_groups(&many[..MAX_GROUPS].join(",")).unwrap().len(),
            MAX_GROUPS
        );
        let huge = vec![b'a'; MAX_REQUEST + 1];
        assert_eq!(parse_request(&huge, None), Err(EnrollError::InvalidRequest));
    }

    #[test]
    fn password_must_match_exactly() {
        let p = Some(&b"s3cret"[..]);
        assert!(parse_request(b"OSSEC PASS: s3cret OSSEC A:'a1'", p).is_ok());
        for bad in [
            &b"OSSEC A:'a1'"[..],
            b"OSSEC PASS: s3cre OSSEC A:'a1'",
            b"OSSEC PASS: s3cretx OSSEC A:'a1'",
            b"OSSEC PASS: s3cret",
            b"OSSEC PASS:s3cret OSSEC A:'a1'",
        ] {
            assert_eq!(
                parse_request(bad, p),
                Err(EnrollError::InvalidPassword),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // No password configured: one sent anyway is skipped.
        assert_eq!(
            parse_request(b"OSSEC PASS: x y OSSEC A:'a1'", None)
                .unwrap()
                .name,
            "a1"
        );
    }

    #[test]
    fn answers_in_both_forms_and_agent_reads_them() {
        let ok = Answer::Key {
            id: "001".into(),
            name: "a1".into(),
            ip: "any".into(),
            key: "ab".repeat(32),
        };
        let w = ok.to_bytes(Form::Wazuh);
        assert!(w.starts_with(b"OSSEC K:'001 a1 any ab") && w.ends_with(b"'"));
        let o = ok.to_bytes(Form::Ossec);
        assert!(o.ends_with(b"'\n\n"));
        for b in [w, o] {
            let (id, name, ip, key) = parse_answer(&b).unwrap();
            assert_eq!(
                (id.as_str(), name.as_str(), ip.as_str()),
                ("001", "a1", "any")
            );
            assert_eq!(key.len(), 64);
        }
        let e = Answer::Refused(EnrollError::DuplicateName("a1".into()));
        assert_eq!(
            e.to_bytes(Form::Wazuh),
            b"ERROR: Duplicate agent name: a1. Unable to add agent"
        );
        assert_eq!(
            e.to_bytes(Form::Ossec),
            b"ERROR: Duplicate agent name: a1\n\nERROR: Unable to add agent.\n\n"
        );
        assert_eq!(
            parse_answer(&e.to_bytes(Form::Wazuh)).unwrap_err(),
            "ERROR: Duplicate agent name: a1. Unable to add agent"
        );
    }

    #[test]
    fn request_round_trip_and_key_hash() {
        let line = format_request(
            Some("pw"),
            "db-2",
            Some("v4.14.7"),
            &["default"],
            Some("src"),
            Some("k"),
        );
        assert!(line.ends_with(b"\n"));
        let r = parse_request(&line[..line.len() - 1], Some(b"pw")).unwrap();
        assert_eq!(r.name, "db-2");
        assert_eq!(r.ip, Some(RequestedIp::Source));
        // hashlib.sha1(b"001agent1key").hexdigest()
        assert_eq!(
            key_hash("001", "agent1", b"key"),
            "4b5396eb616e2128ba2e23b87141da4bf0fe5ca5"
        );
    }
}
