//! Windows eventchannel events (queue `f`): owns reading the agent's JSON
//! envelope `{"Message":"…","Event":"<Event …>…</Event>"}`, walking the
//! event XML with quick-xml, and mapping it to the `{"win":{"system":{…},
//! "eventdata":{…}}}` fields that Wazuh's own decoder produces
//! (`src/analysisd/decoders/winevtchannel.c`, `DecodeWinevt`, Wazuh 4.14).
//!
//! The field names, which elements are read, which values are dropped,
//! `severityValue`, `category`/`subcategory`, `auditPolicyChanges`, the
//! joined unnamed `data` and the `<UserData>`-style extra object follow that
//! function rule by rule. Values differ from Wazuh's where Wazuh's are an
//! artefact of printing the XML string back as JSON before parsing it (it
//! stores `C:\\Windows` with two backslashes and the message wrapped in
//! quotes) or of its XML reader not unescaping entities: here every value is
//! the text the event really holds. `docs/fields.md` lists each rule and
//! each difference.
//!
//! Hostile XML is refused (`XmlInvalid`), in time linear in its size: a
//! DTD (so no entity is ever defined or expanded), nesting deeper than
//! [`MAX_XML_DEPTH`], a text or the attributes of one element longer than
//! [`MAX_XML_TEXT`], more than [`MAX_XML_ATTRIBUTES`] attributes on one
//! element, an entity other than the five predefined ones and character
//! references, unclosed or mismatched tags, text outside the root, a second
//! root.

use std::borrow::Cow;
use std::collections::HashSet;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::json;
use crate::Outcome;

/// Deepest element nesting accepted (the root element is depth 1).
pub const MAX_XML_DEPTH: usize = 64;
/// Longest text of one element, and longest attribute list of one element
/// (names, quotes and values together), in bytes: 64 KiB, the largest
/// message a Wazuh agent sends (`OS_MAXSTR`).
pub const MAX_XML_TEXT: usize = 64 * 1024;
/// Most attributes on one element (Wazuh's XML reader: `XML_MAX_ATTR_DEPTH`
/// 48).
pub const MAX_XML_ATTRIBUTES: usize = 48;

/// The XML was refused.
#[derive(Debug)]
struct XmlInvalid;

/// Derives the fields of an eventchannel message. An envelope that is valid
/// JSON but holds no string `Event` is stored as plain JSON (`Outcome::Json`).
pub(crate) fn derive(message: &[u8], out: &mut Vec<u8>) -> Outcome {
    let mut members = Vec::with_capacity(4);
    let Ok(text) = std::str::from_utf8(message) else {
        return Outcome::JsonInvalid;
    };
    let Ok(checked) = json::check_str(text, Some(&mut members)) else {
        return Outcome::JsonInvalid;
    };
    // cJSON_GetObjectItem: the first member whose key matches ignoring
    // ASCII case.
    let mut event = None;
    let mut msg = None;
    for m in &members {
        let Some(key) = text.get(m.key.0..m.key.1).and_then(json::decode_string) else {
            continue;
        };
        let Some(value) = text.get(m.value.0..m.value.1) else {
            continue;
        };
        if event.is_none() && key.eq_ignore_ascii_case("event") {
            event = Some(value);
        } else if msg.is_none() && key.eq_ignore_ascii_case("message") {
            msg = Some(value);
        }
    }
    let Some(xml) = event
        .filter(|v| v.starts_with('"'))
        .and_then(json::decode_string)
    else {
        checked.write(message, out);
        return Outcome::Json;
    };
    // Message: a string is decoded; any other JSON value is kept as its
    // text, as Wazuh prints it (cJSON_PrintUnformatted). A string whose
    // escapes are those the output would use is copied as it is, trimmed.
    let msg: Option<Message> = msg.map(|v| {
        if v.starts_with('"') {
            match json::escaped_trim_end_keep_first(v) {
                Some(escaped) => Message::Escaped(escaped),
                None => Message::Text(json::decode_string(v).unwrap_or(Cow::Borrowed(""))),
            }
        } else {
            Message::Text(Cow::Borrowed(v))
        }
    });
    let Ok(mut win) = walk(&xml) else {
        return Outcome::XmlInvalid;
    };
    win.finish(msg.as_ref());
    win.write(out);
    Outcome::EventChannel
}

/// The envelope's `Message`.
enum Message<'a> {
    /// The body of its JSON literal, trimmed, exactly as it is written.
    Escaped(&'a str),
    /// Its text (trimmed when it is added).
    Text(Cow<'a, str>),
}

/// Fields of one object, in insertion order; the first value of a key wins
/// (as cJSON_GetObjectItem finds the first of duplicated keys). Keys and
/// values live in one text buffer, so a field costs no allocation of its
/// own.
#[derive(Default)]
struct Fields {
    text: String,
    /// (key start, key end = value start, value end) in `text`.
    list: Vec<(usize, usize, usize)>,
    /// Built once the object is large, so that hostile events with
    /// thousands of names stay linear.
    index: Option<HashSet<String>>,
    /// The entry of `list` whose value is held already JSON-escaped.
    escaped: Option<usize>,
}

impl Fields {
    fn with_capacity(text: usize, fields: usize) -> Fields {
        Fields {
            text: String::with_capacity(text),
            list: Vec::with_capacity(fields),
            ..Fields::default()
        }
    }

    fn key(&self, f: (usize, usize, usize)) -> &str {
        self.text.get(f.0..f.1).unwrap_or_default()
    }

    fn value(&self, f: (usize, usize, usize)) -> &str {
        self.text.get(f.1..f.2).unwrap_or_default()
    }

    /// Adds `key: value` unless `key` is there already.
    fn insert(&mut self, key: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(key);
        self.commit(start, value);
    }

    /// Adds `lower-first(name): value` unless that key is there already.
    fn insert_lower_first(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(name);
        if let Some(first) = self.text.get_mut(start..start + 1) {
            first.make_ascii_lowercase();
        }
        self.commit(start, value);
    }

    /// Adds `key: value` unless `key` is there already, `value` being the
    /// body of a JSON string literal, written as it is.
    fn insert_escaped(&mut self, key: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(key);
        if self.commit(start, value) {
            self.escaped = Some(self.list.len() - 1);
        }
    }

    /// The key was just pushed at `start..`: keep it with `value`, or drop
    /// it if it is a duplicate. Whether it was kept.
    fn commit(&mut self, start: usize, value: &str) -> bool {
        let key_end = self.text.len();
        let key = self.text.get(start..key_end).unwrap_or_default();
        let duplicate = match &self.index {
            Some(set) => set.contains(key),
            None => self
                .list
                .iter()
                .any(|&f| self.text.get(f.0..f.1) == Some(key)),
        };
        if duplicate {
            self.text.truncate(start);
            return false;
        }
        if self.index.is_none() && self.list.len() >= 32 {
            let set = self.list.iter().map(|&f| self.key(f).to_owned()).collect();
            self.index = Some(set);
        }
        if let Some(set) = &mut self.index {
            set.insert(self.text.get(start..key_end).unwrap_or_default().to_owned());
        }
        self.text.push_str(value);
        self.list.push((start, key_end, self.text.len()));
        true
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (n, &f) in self.list.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            json::write_str(out, self.key(f));
            out.push(b':');
            if self.escaped == Some(n) {
                out.push(b'"');
                out.extend_from_slice(self.value(f).as_bytes());
                out.push(b'"');
            } else {
                json::write_str(out, self.value(f));
            }
        }
        out.push(b'}');
    }
}

/// What the walk collected.
#[derive(Default)]
struct Win {
    system: Fields,
    eventdata: Fields,
    /// Children of the children of `<UserData>` (or any other section).
    extra: Fields,
    /// Name of the last element directly under such a section.
    extra_name: Option<String>,
    level: Option<String>,
    keywords: Option<String>,
    category_id: Option<String>,
    subcategory_id: Option<String>,
    audit_policy_changes: Option<String>,
    /// Unnamed `<Data>` values, joined with ", ".
    data: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    System,
    EventData,
    Other,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Root,
    Section(Section),
    /// A child of a section: its text and attributes are read.
    Item(Section),
    /// A child of a child of a non-System/EventData section.
    ExtraItem,
    Ignored,
}

/// The element being read at depth 3 or 4 (only one of each is open at a
/// time, so their buffers are reused).
#[derive(Default)]
struct Open {
    name: String,
    /// Attribute names and values, in `attr_text`.
    attr_text: String,
    attrs: Vec<(usize, usize, usize)>,
    text: String,
}

impl Open {
    fn start(&mut self, name: &str) {
        self.name.clear();
        self.name.push_str(name);
        self.attr_text.clear();
        self.attrs.clear();
        self.text.clear();
    }

    fn push_attr(&mut self, key: &str, value: &str) {
        let start = self.attr_text.len();
        self.attr_text.push_str(key);
        let mid = self.attr_text.len();
        self.attr_text.push_str(value);
        self.attrs.push((start, mid, self.attr_text.len()));
    }

    fn has_attrs(&self) -> bool {
        !self.attrs.is_empty()
    }

    /// The attributes, in document order.
    fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|&(a, b, c)| {
            let t = &self.attr_text;
            (
                t.get(a..b).unwrap_or_default(),
                t.get(b..c).unwrap_or_default(),
            )
        })
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    fn push_text(&mut self, t: &str) -> Result<(), XmlInvalid> {
        if self.text.len() + t.len() > MAX_XML_TEXT {
            return Err(XmlInvalid);
        }
        self.text.push_str(t);
        Ok(())
    }
}

fn name_of<'e>(e: &'e BytesStart<'_>) -> Result<&'e str, XmlInvalid> {
    std::str::from_utf8(e.name().into_inner()).map_err(|_| XmlInvalid)
}

/// Reads every attribute (so that a malformed one is refused even where it
/// is not used), keeping them in `keep` when given.
fn attributes(e: &BytesStart<'_>, mut keep: Option<&mut Open>) -> Result<(), XmlInvalid> {
    // All attributes of one element together: refused before they are
    // parsed, so a huge tag costs one scan.
    if e.attributes_raw().len() > MAX_XML_TEXT {
        return Err(XmlInvalid);
    }
    for (n, attr) in e.attributes().enumerate() {
        if n >= MAX_XML_ATTRIBUTES {
            return Err(XmlInvalid);
        }
        let attr = attr.map_err(|_| XmlInvalid)?;
        if attr.value.len() > MAX_XML_TEXT {
            return Err(XmlInvalid);
        }
        let value = attr.unescape_value().map_err(|_| XmlInvalid)?;
        if let Some(keep) = keep.as_deref_mut() {
            let key = std::str::from_utf8(attr.key.into_inner()).map_err(|_| XmlInvalid)?;
            keep.push_attr(key, &value);
        }
    }
    Ok(())
}

/// Walks the event XML, collecting the fields.
fn walk(xml: &str) -> Result<Win, XmlInvalid> {
    let mut reader = Reader::from_str(xml);
    {
        let config = reader.config_mut();
        config.check_end_names = true;
        config.allow_unmatched_ends = false;
        config.expand_empty_elements = false;
        config.trim_text(false);
    }
    // Room for what a common event holds, so the buffers seldom grow.
    let mut win = Win {
        system: Fields::with_capacity(512, 24),
        eventdata: Fields::with_capacity(xml.len() / 2, 32),
        ..Win::default()
    };
    let mut stack: Vec<Role> = Vec::with_capacity(8);
    let mut item = Open::default();
    let mut extra_item = Open::default();
    let mut seen_root = false;

    loop {
        let event = reader.read_event().map_err(|_| XmlInvalid)?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                if stack.len() >= MAX_XML_DEPTH {
                    return Err(XmlInvalid);
                }
                let name = name_of(e)?;
                let role = match stack.last().copied() {
                    None if seen_root => return Err(XmlInvalid),
                    None => {
                        seen_root = true;
                        Role::Root
                    }
                    Some(Role::Root) => Role::Section(match name {
                        "System" => Section::System,
                        "EventData" => Section::EventData,
                        _ => Section::Other,
                    }),
                    Some(Role::Section(s)) => Role::Item(s),
                    Some(Role::Item(Section::Other)) => Role::ExtraItem,
                    Some(_) => Role::Ignored,
                };
                match role {
                    Role::Item(s) => {
                        item.start(name);
                        if s == Section::Other {
                            win.extra_name = Some(name.to_owned());
                            attributes(e, None)?;
                        } else {
                            attributes(e, Some(&mut item))?;
                        }
                    }
                    Role::ExtraItem => {
                        extra_item.start(name);
                        attributes(e, None)?;
                    }
                    _ => attributes(e, None)?,
                }
                if empty {
                    end(&mut win, role, &item, &extra_item);
                } else {
                    stack.push(role);
                }
            }
            Event::End(_) => {
                // quick-xml has checked that the name matches.
                let role = stack.pop().ok_or(XmlInvalid)?;
                end(&mut win, role, &item, &extra_item);
            }
            Event::Text(ref t) => {
                if t.len() > MAX_XML_TEXT {
                    return Err(XmlInvalid);
                }
                let text = t.unescape().map_err(|_| XmlInvalid)?;
                match stack.last() {
                    None => {
                        if !text
                            .bytes()
                            .all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
                        {
                            return Err(XmlInvalid);
                        }
                    }
                    Some(Role::Item(_)) => item.push_text(&text)?,
                    Some(Role::ExtraItem) => extra_item.push_text(&text)?,
                    Some(_) => {}
                }
            }
            Event::CData(ref t) => {
                if t.len() > MAX_XML_TEXT {
                    return Err(XmlInvalid);
                }
                let text = std::str::from_utf8(t).map_err(|_| XmlInvalid)?;
                match stack.last() {
                    None => return Err(XmlInvalid),
                    Some(Role::Item(_)) => item.push_text(text)?,
                    Some(Role::ExtraItem) => extra_item.push_text(text)?,
                    Some(_) => {}
                }
            }
            // Never read a DTD: no entity is defined, none expanded.
            Event::DocType(_) => return Err(XmlInvalid),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => {
                if !stack.is_empty() || !seen_root {
                    return Err(XmlInvalid);
                }
                return Ok(win);
            }
        }
    }
}

/// An element closed: apply Wazuh's rule for its role.
fn end(win: &mut Win, role: Role, item: &Open, extra_item: &Open) {
    match role {
        Role::Item(Section::System) => win.system_item(item),
        Role::Item(Section::EventData) => win.eventdata_item(item),
        Role::ExtraItem => {
            let t = extra_item.text.as_str();
            if !t.is_empty() && t != "(NULL)" && t != "-" {
                win.extra
                    .insert_lower_first(&extra_item.name, trim_end_keep_first(t));
            }
        }
        _ => {}
    }
}

impl Win {
    /// A child of `<System>` (DecodeWinevt, the `"System"` branch).
    fn system_item(&mut self, e: &Open) {
        let text = e.text.as_str();
        let has_attrs = e.has_attrs();
        match e.name.as_str() {
            "Provider" if has_attrs => {
                for (k, v) in e.attrs() {
                    let key = match k {
                        "Name" => "providerName",
                        "Guid" => "providerGuid",
                        "EventSourceName" => "eventSourceName",
                        _ => continue,
                    };
                    self.system.insert(key, v);
                }
            }
            "TimeCreated" if has_attrs => {
                // Wazuh reads only the first attribute.
                if let Some((k, v)) = e.attrs().next() {
                    if k == "SystemTime" {
                        self.system.insert("systemTime", v);
                    }
                }
            }
            "Execution" if has_attrs => {
                for (k, v) in e.attrs() {
                    let key = match k {
                        "ProcessID" => "processID",
                        "ThreadID" => "threadID",
                        _ => continue,
                    };
                    self.system.insert(key, v);
                }
            }
            "Channel" => {
                self.system.insert("channel", text);
                if let Some(v) = e.attr("UserID") {
                    self.system.insert("userID", v);
                }
            }
            "Security" => {
                if let Some(v) = e.attr("UserID") {
                    self.system.insert("securityUserID", v);
                }
            }
            "Level" => {
                self.level.get_or_insert_with(|| text.to_owned());
                self.system.insert("level", text);
            }
            "Keywords" => {
                self.keywords.get_or_insert_with(|| text.to_owned());
                self.system.insert("keywords", text);
            }
            "Correlation" => {}
            name => {
                if !text.is_empty() {
                    self.system.insert_lower_first(name, text);
                }
            }
        }
    }

    /// A child of `<EventData>` (DecodeWinevt, the `"EventData"` branch).
    fn eventdata_item(&mut self, e: &Open) {
        let text = e.text.as_str();
        if text.is_empty() {
            return;
        }
        let dropped = text == "(NULL)" || text == "-";
        if e.name == "Data" && e.has_attrs() {
            if dropped {
                return;
            }
            let value = trim_end_keep_first(text);
            for (k, v) in e.attrs() {
                if k == "Name" {
                    if is_lower_first(v, "categoryId") {
                        self.category_id.get_or_insert_with(|| value.to_owned());
                    } else if is_lower_first(v, "subcategoryId") {
                        self.subcategory_id.get_or_insert_with(|| value.to_owned());
                    }
                    if is_lower_first(v, "auditPolicyChanges") {
                        self.audit_policy_changes
                            .get_or_insert_with(|| value.to_owned());
                        self.eventdata.insert("auditPolicyChangesId", value);
                    } else {
                        self.eventdata.insert_lower_first(v, value);
                    }
                    break;
                }
                // Another attribute than Name: Wazuh names the field after
                // that attribute's value.
                self.eventdata.insert_lower_first(v, value);
            }
        } else if !dropped {
            let value = trim_end_keep_first(text);
            if e.name == "Data" {
                if !self.data.is_empty() {
                    self.data.push_str(", ");
                }
                self.data.push_str(value);
            } else {
                self.eventdata.insert_lower_first(&e.name, value);
            }
        }
    }

    /// The fields Wazuh adds after the walk, in its order.
    fn finish(&mut self, message: Option<&Message>) {
        if let (Some(level), Some(keywords)) = (&self.level, &self.keywords) {
            let severity = severity(level, keywords);
            self.system.insert("severityValue", severity);
            if let (Some(c), Some(s)) = (&self.category_id, &self.subcategory_id) {
                let (category, subcategory) =
                    category(strtol(&c.replace("%%", "")), strtol(&s.replace("%%", "")));
                if let Some(c) = category {
                    self.eventdata.insert("category", c);
                }
                if let Some(s) = subcategory {
                    self.eventdata.insert("subcategory", s);
                }
            }
        }
        if let Some(changes) = &self.audit_policy_changes {
            if let Some(text) = audit_policy_changes(changes) {
                self.eventdata.insert("auditPolicyChanges", &text);
            }
        }
        match message {
            Some(Message::Escaped(m)) => self.system.insert_escaped("message", m),
            Some(Message::Text(m)) => self.system.insert("message", trim_end_keep_first(m)),
            None => {}
        }
        if !self.data.is_empty() {
            let data = std::mem::take(&mut self.data);
            self.eventdata.insert("data", &data);
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"win":{"system":"#);
        self.system.write(out);
        if !self.eventdata.is_empty() {
            out.extend_from_slice(br#","eventdata":"#);
            self.eventdata.write(out);
        }
        if let Some(name) = &self.extra_name {
            let key = lower_first(name);
            if key != "system" && (key != "eventdata" || self.eventdata.is_empty()) {
                out.push(b',');
                json::write_str(out, &key);
                out.push(b':');
                self.extra.write(out);
            }
        }
        out.extend_from_slice(b"}}");
    }
}

/// The name with its first character lower-cased (ASCII, as C's `tolower`
/// in the C locale).
fn lower_first(name: &str) -> String {
    let mut s = name.to_owned();
    if let Some(first) = s.get_mut(0..1) {
        first.make_ascii_lowercase();
    }
    s
}

/// Whether `lower_first(name) == key`, without building it.
fn is_lower_first(name: &str, key: &str) -> bool {
    let (n, k) = (name.as_bytes(), key.as_bytes());
    match (n.split_first(), k.split_first()) {
        (Some((a, n_rest)), Some((b, k_rest))) => a.to_ascii_lowercase() == *b && n_rest == k_rest,
        (None, None) => true,
        _ => false,
    }
}

/// `replace_win_format`: trailing whitespace (C `isspace`) removed, but
/// never the first character.
fn trim_end_keep_first(s: &str) -> &str {
    let b = s.as_bytes();
    let mut end = b.len();
    while end > 1
        && matches!(
            b.get(end - 1),
            Some(b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
        )
    {
        end -= 1;
    }
    s.get(..end).unwrap_or(s)
}

/// C `strtol(s, NULL, 10)`, saturating.
fn strtol(s: &str) -> i64 {
    let b = s
        .trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r'])
        .as_bytes();
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, b.get(1..).unwrap_or_default()),
        Some(b'+') => (false, b.get(1..).unwrap_or_default()),
        _ => (false, b),
    };
    let mut v: i64 = 0;
    for &c in digits.iter().take_while(|c| c.is_ascii_digit()) {
        v = v.saturating_mul(10).saturating_add(i64::from(c - b'0'));
    }
    if neg {
        -v
    } else {
        v
    }
}

/// C `strtoull(s, NULL, 16)`: optional sign and `0x`; overflow gives
/// `u64::MAX`; a minus sign negates (wrapping), as C does.
fn strtoull_hex(s: &str) -> u64 {
    let b = s
        .trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r'])
        .as_bytes();
    let (neg, mut rest) = match b.first() {
        Some(b'-') => (true, b.get(1..).unwrap_or_default()),
        Some(b'+') => (false, b.get(1..).unwrap_or_default()),
        _ => (false, b),
    };
    if matches!(rest, [b'0', b'x' | b'X', h, ..] if h.is_ascii_hexdigit()) {
        rest = rest.get(2..).unwrap_or_default();
    }
    let mut v: u64 = 0;
    for &c in rest.iter().take_while(|c| c.is_ascii_hexdigit()) {
        let d = u64::from((c as char).to_digit(16).unwrap_or(0));
        v = match v.checked_mul(16).and_then(|v| v.checked_add(d)) {
            Some(v) => v,
            None => return u64::MAX,
        };
    }
    if neg {
        v.wrapping_neg()
    } else {
        v
    }
}

/// `severityValue` from `<Level>` and `<Keywords>` (DecodeWinevt).
fn severity(level: &str, keywords: &str) -> &'static str {
    const AUDIT_FAILURE: u64 = 0x10000000000000;
    const AUDIT_SUCCESS: u64 = 0x20000000000000;
    match strtol(level) {
        1 => "CRITICAL",
        2 => "ERROR",
        3 => "WARNING",
        4 => "INFORMATION",
        5 => "VERBOSE",
        0 => {
            let k = strtoull_hex(keywords);
            if k & AUDIT_FAILURE != 0 {
                "AUDIT_FAILURE"
            } else if k & AUDIT_SUCCESS != 0 {
                "AUDIT_SUCCESS"
            } else {
                "UNKNOWN"
            }
        }
        _ => "UNKNOWN",
    }
}

/// `auditPolicyChanges` from the `AuditPolicyChanges` data: `%%` removed,
/// at most four comma-separated codes (`OS_StrBreak(',', …, 4)`), each
/// mapped, joined with ", "; `None` when no code is known.
fn audit_policy_changes(raw: &str) -> Option<String> {
    let filtered = raw.replace("%%", "");
    let mut out = String::new();
    for piece in filtered.splitn(4, ',') {
        let text = match strtol(piece) {
            8448 => "Success removed",
            8449 => "Success added",
            8450 => "Failure removed",
            8451 => "Failure added",
            _ => continue,
        };
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(text);
    }
    (!out.is_empty()).then_some(out)
}

/// `category` and `subcategory` from the `CategoryId`/`SubcategoryId` data
/// (DecodeWinevt's table of audit policy categories).
fn category(category: i64, subcategory: i64) -> (Option<&'static str>, Option<&'static str>) {
    let (name, subs): (&str, &[(i64, &str)]) = match category {
        8272 => (
            "System",
            &[
                (12288, "Security State Change"),
                (12289, "Security System Extension"),
                (12290, "System Integrity"),
                (12291, "IPsec Driver"),
                (12292, "Other System Events"),
            ],
        ),
        8273 => (
            "Logon/Logoff",
            &[
                (12544, "Logon"),
                (12545, "Logoff"),
                (12546, "Account Lockout"),
                (12547, "IPsec Main Mode"),
                (12548, "Special Logon"),
                (12549, "IPSec Extended Mode"),
                (12550, "IPSec Quick Mode"),
                (12551, "Other Logon/Logoff Events"),
                (12552, "Network Policy Server"),
                (12553, "User/Device Claims"),
                (12554, "Group Membership"),
            ],
        ),
        8274 => (
            "Object Access",
            &[
                (12800, "File System"),
                (12801, "Registry"),
                (12802, "Kernel Object"),
                (12803, "SAM"),
                (12804, "Other Object Access Events"),
                (12805, "Certification Services"),
                (12806, "Application Generated"),
                (12807, "Handle Manipulation"),
                (12808, "File Share"),
                (12809, "Filtering Platform Packet Drop"),
                (12810, "Filtering Platform Connection"),
                (12811, "Detailed File Share"),
                (12812, "Removable Storage"),
                (12813, "Central Policy Staging"),
            ],
        ),
        8275 => (
            "Privilege Use",
            &[
                (13056, "Sensitive Privilege Use"),
                (13057, "Non Sensitive Privilege Use"),
                (13058, "Other Privilege Use Events"),
            ],
        ),
        8276 => (
            "Detailed Tracking",
            &[
                (13312, "Process Creation"),
                (13313, "Process Termination"),
                (13314, "DPAPI Activity"),
                (13315, "RPC Events"),
                (13316, "Plug and Play Events"),
                (13317, "Token Right Adjusted Events"),
            ],
        ),
        8277 => (
            "Policy Change",
            &[
                (13568, "Audit Policy Change"),
                (13569, "Authentication Policy Change"),
                (13570, "Authorization Policy Change"),
                (13571, "MPSSVC Rule-Level Policy Change"),
                (13572, "Filtering Platform Policy Change"),
                (13573, "Other Policy Change Events"),
            ],
        ),
        8278 => (
            "Account Management",
            &[
                (13824, "User Account Management"),
                (13825, "Computer Account Management"),
                (13826, "Security Group Management"),
                (13827, "Distribution Group Management"),
                (13828, "Application Group Management"),
                (13829, "Other Account Management Events"),
            ],
        ),
        8279 => (
            "DS Access",
            &[
                (14080, "Directory Service Access"),
                (14081, "Directory Service Changes"),
                (14082, "Directory Service Replication"),
                (14083, "Detailed Directory Service Replication"),
            ],
        ),
        8280 => (
            "Account Logon",
            &[
                (14336, "Credential Validation"),
                (14337, "Kerberos Service Ticket Operations"),
                (14338, "Other Account Logon Events"),
                (14339, "Kerberos Authentication Service"),
            ],
        ),
        _ => return (None, None),
    };
    (
        Some(name),
        subs.iter()
            .find(|(id, _)| *id == subcategory)
            .map(|(_, s)| *s),
    )
}

#[cfg(test)]
mod tests;
