//! Golden test: `derive` gives byte-for-byte the output (and outcome) of the
//! implementation as committed before the eventchannel performance work,
//! kept verbatim in `tests/golden_orig/`. Compared on every fixture in
//! `testdata/`, on the messages the crate's unit and hostile tests pass
//! (`tests/golden_inputs.txt`: queue byte, space, hex of the message, one a
//! line; captured from those tests, the multi-megabyte hostile inputs left
//! out), and on thousands of generated variants: random JSON escapes
//! (`\r\n\t\"\\\u00e9\u0000\ud800`…) in `Message` and in XML text and
//! attributes, entities, CDATA, comments, whitespace, mutations.

#[path = "golden_orig/mod.rs"]
mod golden_orig;

use ossec_fields::{derive, Outcome};

fn compare(queue: u8, message: &[u8]) {
    let mut ours = b"prefix".to_vec();
    let mut theirs = b"prefix".to_vec();
    let a = derive(queue, b"loc", message, &mut ours);
    let b = golden_orig::derive(queue, b"loc", message, &mut theirs);
    if a != b || ours != theirs {
        panic!(
            "differs for queue {:?} message {:?}:\n ours   {a:?} {}\n theirs {b:?} {}",
            queue as char,
            String::from_utf8_lossy(message),
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
        );
    }
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("testdata")
        .map(|e| {
            let p = e.expect("entry").path();
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read"))
        })
        .collect();
    v.sort();
    assert!(v.len() >= 8, "fixtures missing");
    v
}

#[test]
fn fixtures_are_identical() {
    for (name, bytes) in fixtures() {
        for q in [b'f', b'8', b'1'] {
            compare(q, &bytes);
        }
        // Surrounding whitespace.
        let mut padded = b" \r\n\t".to_vec();
        padded.extend_from_slice(&bytes);
        padded.extend_from_slice(b"\n ");
        compare(b'f', &padded);
        let _ = name;
    }
}

#[test]
fn captured_test_messages_are_identical() {
    let text = include_str!("golden_inputs.txt");
    let mut n = 0;
    for line in text.lines() {
        let (q, hex) = line.split_once(' ').expect("queue and hex");
        let q = q.as_bytes()[0];
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        compare(q, &bytes);
        if q != b'f' {
            compare(b'f', &bytes);
        }
        n += 1;
    }
    assert!(n > 90, "{n} captured messages");
}

/// xorshift64*: a fixed seed, so every run checks the same variants.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Pieces of a JSON string body (already JSON-escaped).
const JSON_PIECES: &[&str] = &[
    "a",
    "Logon",
    "C:\\\\Windows\\\\System32",
    " ",
    "  ",
    "\\r\\n",
    "\\n",
    "\\r",
    "\\t",
    "\\\"",
    "\\\\",
    "\\/",
    "\\b",
    "\\f",
    "\\u00e9",
    "\\u00E9",
    "é",
    "😀",
    "\\ud83d\\ude00",
    "\\u0000",
    "\\ud800",
    "\\udc00",
    "\\ud800\\u0041",
    "\\u000b",
    "\\u000c",
    "\\u001f",
    "\\u0020",
    "\\u0009",
    "\\u2028",
    "\\u007f",
    "%%2313",
    "-",
    "(NULL)",
    "0x8010000000000000",
    "x",
];

/// Pieces of XML text (JSON-escaped, as they sit in the `Event` string).
const XML_TEXT_PIECES: &[&str] = &[
    "&amp;",
    "&lt;",
    "&gt;",
    "&quot;",
    "&apos;",
    "&#233;",
    "&#x41;",
    "&#xe9;",
    "&#10;",
    "&#13;",
    "&#9;",
    "&#32;",
    "<![CDATA[a<b>&amp;\\\\]]>",
    "<!-- c -->",
    "<?pi x?>",
    "\\u0026amp;",
];

/// XML text pieces that are (or may be) refused: rare, so that most events
/// decode.
const XML_BAD_PIECES: &[&str] = &[
    "&#0;", "&#xD800;", "&bogus;", "&", "]]>", "<", "\\u0000", "\\u003c",
];

fn json_body(r: &mut Rng, max: usize) -> String {
    let mut s = String::new();
    for _ in 0..r.below(max + 1) {
        s.push_str(r.pick(JSON_PIECES));
    }
    s
}

/// XML text content (JSON-escaped): JSON pieces, entities, CDATA…
fn xml_text(r: &mut Rng) -> String {
    match r.below(10) {
        0 => String::new(),
        1 => r
            .pick(&["-", "(NULL)", " ", "0", "4", "0x8020000000000000"])
            .to_owned(),
        _ => {
            let mut s = String::new();
            for _ in 0..r.below(6) {
                if r.chance(1) {
                    s.push_str(r.pick(XML_BAD_PIECES));
                } else if r.chance(30) {
                    s.push_str(r.pick(XML_TEXT_PIECES));
                } else {
                    let p = r.pick(JSON_PIECES);
                    // `<` never appears in these pieces; keep text as text.
                    s.push_str(p);
                }
            }
            if r.chance(20) {
                s.push_str(r.pick(&[" ", "\\r\\n", "\\t", "\\u000b", "  \\n"]));
            }
            s
        }
    }
}

/// An attribute value (JSON-escaped; no raw quote of the delimiter).
fn attr_value(r: &mut Rng, quote: &str) -> String {
    let mut s = String::new();
    for _ in 0..r.below(5) {
        let p = if r.chance(25) {
            r.pick(&[
                "&amp;", "&lt;", "&quot;", "&apos;", "&#233;", "&#x9;", "&#10;",
            ])
        } else {
            r.pick(JSON_PIECES)
        };
        if p == "\\\"" && quote == "\\\"" {
            continue;
        }
        s.push_str(p);
    }
    if quote == "'" {
        if r.chance(10) {
            s.push_str("\\\"");
        }
    } else if r.chance(10) {
        s.push('\'');
    }
    s
}

fn attrs(r: &mut Rng, names: &[&str]) -> String {
    let mut s = String::new();
    let mut used = Vec::new();
    for _ in 0..r.below(4) {
        let quote = if r.chance(50) { "'" } else { "\\\"" };
        let name = r.pick(names);
        // A duplicated attribute is refused: rarely.
        if used.contains(&name) && !r.chance(3) {
            continue;
        }
        used.push(name);
        let ws = r.pick(&[" ", "  ", "\\n", "\\t", "\\r\\n"]);
        let value = attr_value(r, quote);
        s.push_str(&format!("{ws}{name}={quote}{value}{quote}"));
    }
    s
}

fn element(r: &mut Rng, name: &str, attr_names: &[&str]) -> String {
    let a = attrs(r, attr_names);
    if r.chance(15) {
        format!("<{name}{a}/>")
    } else {
        let t = xml_text(r);
        let sp = if r.chance(10) { " " } else { "" };
        format!("<{name}{a}>{t}</{name}{sp}>")
    }
}

const SYSTEM_NAMES: &[&str] = &[
    "Provider",
    "EventID",
    "Version",
    "Level",
    "Task",
    "Opcode",
    "Keywords",
    "TimeCreated",
    "EventRecordID",
    "Correlation",
    "Execution",
    "Channel",
    "Computer",
    "Security",
    "level",
    "X",
    "eventID",
];

const ATTR_NAMES: &[&str] = &[
    "Name",
    "Guid",
    "EventSourceName",
    "SystemTime",
    "ProcessID",
    "ThreadID",
    "UserID",
    "Qualifiers",
    "Other",
    "xmlns",
];

const DATA_NAMES: &[&str] = &[
    "SubjectUserSid",
    "CategoryId",
    "categoryId",
    "SubcategoryId",
    "AuditPolicyChanges",
    "auditPolicyChanges",
    "ProcessName",
    "Data",
    "x",
    "",
];

fn system(r: &mut Rng) -> String {
    let mut s = String::from("<System>");
    for _ in 0..r.below(14) {
        let name = r.pick(SYSTEM_NAMES);
        let mut e = element(r, name, ATTR_NAMES);
        match name {
            "Level" if r.chance(60) => {
                e = format!(
                    "<Level>{}</Level>",
                    r.pick(&["0", "1", "2", "3", "4", "5", " 4", "9"])
                )
            }
            "Keywords" if r.chance(60) => {
                e = format!(
                    "<Keywords>{}</Keywords>",
                    r.pick(&[
                        "0x8010000000000000",
                        "0x8020000000000000",
                        "0x0",
                        "-0x1",
                        "zz"
                    ])
                )
            }
            _ => {}
        }
        s.push_str(&e);
        if r.chance(10) {
            s.push_str(r.pick(&["\\r\\n  ", " ", "\\t", "<!-- x -->"]));
        }
    }
    s.push_str("</System>");
    s
}

fn data(r: &mut Rng) -> String {
    let mut a = String::new();
    if r.chance(75) {
        let quote = if r.chance(50) { "'" } else { "\\\"" };
        let attr = if r.chance(85) {
            "Name"
        } else {
            r.pick(ATTR_NAMES)
        };
        let name = if r.chance(70) {
            r.pick(DATA_NAMES).to_owned()
        } else {
            attr_value(r, quote)
        };
        a = format!(" {attr}={quote}{name}{quote}");
        if r.chance(10) {
            let second = if attr == "Name" && !r.chance(10) {
                "Other"
            } else {
                "Name"
            };
            a.push_str(&format!(" {second}={quote}{}{quote}", r.pick(DATA_NAMES)));
        }
    }
    let text = match r.below(6) {
        0 => r
            .pick(&["%%8448", "%%8449, %%8451", "%%12544", "%%8273", "8274"])
            .to_owned(),
        _ => xml_text(r),
    };
    if r.chance(5) {
        format!("<Data{a}/>")
    } else {
        format!("<Data{a}>{text}</Data>")
    }
}

fn event_data(r: &mut Rng) -> String {
    let name = r.pick(&[
        "EventData",
        "EventData",
        "EventData",
        "UserData",
        "ProcessingErrorData",
    ]);
    let mut s = format!("<{name}>");
    for _ in 0..r.below(10) {
        if name == "UserData" && r.chance(70) {
            let inner: String = (0..r.below(4))
                .map(|_| {
                    let n = r_name(r);
                    element(r, n, &["Name", "a"])
                })
                .collect();
            let child = r.pick(&["RuleAndFileData", "EventXML", "System", "eventData", "X"]);
            s.push_str(&format!("<{child} xmlns='u'>{inner}</{child}>"));
        } else if r.chance(80) {
            s.push_str(&data(r));
        } else {
            let n = r.pick(&["Binary", "Data", "Other"]);
            s.push_str(&element(r, n, ATTR_NAMES));
        }
    }
    s.push_str(&format!("</{name}>"));
    s
}

fn r_name(r: &mut Rng) -> &'static str {
    r.pick(&["FileName", "PolicyName", "Data", "q", "Name"])
}

fn event(r: &mut Rng) -> String {
    let mut s = String::new();
    if r.chance(10) {
        s.push_str("<?xml version='1.0'?>");
    }
    if r.chance(10) {
        s.push_str("\\r\\n ");
    }
    s.push_str("<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'>");
    if r.chance(95) {
        s.push_str(&system(r));
    }
    for _ in 0..r.below(3) {
        s.push_str(&event_data(r));
    }
    if r.chance(5) {
        s.push_str(&system(r));
    }
    s.push_str("</Event>");
    if r.chance(10) {
        s.push_str(r.pick(&["\\n", " ", "<!--t-->", "x", "<a/>"]));
    }
    s
}

fn message_value(r: &mut Rng) -> String {
    match r.below(20) {
        0 => "null".to_owned(),
        1 => "12".to_owned(),
        2 => "{\"a\": [1, \"\\u0000\"]}".to_owned(),
        3 => "true".to_owned(),
        4 => "1e999999".to_owned(),
        _ => format!("\"{}\"", json_body(r, 20)),
    }
}

fn envelope(r: &mut Rng) -> Vec<u8> {
    let ev = format!("\"{}\"", event(r));
    let msg = message_value(r);
    let mkey = r.pick(&["Message", "message", "MESSAGE", "Me\\u0073sage", "Msg"]);
    let ekey = r.pick(&["Event", "Event", "event", "EVENT", "\\u0045vent"]);
    let ws = |r: &mut Rng| r.pick(&["", "", " ", "\\n"]).replace("\\n", "\n");
    let mut s = String::from("{");
    let mut parts = Vec::new();
    if r.chance(90) {
        parts.push(format!("\"{mkey}\"{}:{}{msg}", ws(r), ws(r)));
    }
    parts.push(format!("\"{ekey}\":{}{ev}", ws(r)));
    if r.chance(10) {
        parts.push(format!("\"Message\":\"{}\"", json_body(r, 5)));
    }
    if r.chance(10) {
        parts.push("\"Event\":\"<E/>\"".to_owned());
    }
    if r.chance(10) {
        parts.push("\"other\":[1,2,{\"x\":\"\\ud800\"}]".to_owned());
    }
    if r.chance(50) {
        parts.reverse();
    }
    s.push_str(&parts.join(","));
    s.push('}');
    let mut b = s.into_bytes();
    // Occasionally break something.
    if r.chance(5) && !b.is_empty() {
        let at = r.below(b.len());
        match r.below(3) {
            0 => {
                b.remove(at);
            }
            1 => b.insert(at, *b"<>&\"\\'x\n".get(r.below(8)).unwrap_or(&b'x')),
            _ => b.truncate(at),
        }
    }
    b
}

#[test]
fn generated_envelopes_are_identical() {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut outcomes = std::collections::HashMap::new();
    for _ in 0..6000 {
        let m = envelope(&mut r);
        compare(b'f', &m);
        let mut out = Vec::new();
        let o = derive(b'f', b"", &m, &mut out);
        *outcomes.entry(format!("{o:?}")).or_insert(0usize) += 1;
    }
    // The generator must mostly produce decodable events.
    let decoded = outcomes.get("EventChannel").copied().unwrap_or(0);
    assert!(decoded > 3000, "{outcomes:?}");
}

#[test]
fn mutated_fixtures_are_identical() {
    let mut r = Rng(0x0123_4567_89AB_CDEF);
    for (_, bytes) in fixtures() {
        let text = String::from_utf8(bytes).expect("utf8 fixture");
        for _ in 0..300 {
            let mut s = text.clone();
            for _ in 0..1 + r.below(4) {
                // Insert a piece at a random char boundary.
                let mut at = r.below(s.len() + 1);
                while !s.is_char_boundary(at) {
                    at -= 1;
                }
                let piece = if r.chance(50) {
                    r.pick(JSON_PIECES)
                } else {
                    r.pick(XML_TEXT_PIECES)
                };
                s.insert_str(at, piece);
            }
            compare(b'f', s.as_bytes());
        }
        // The Message replaced by generated ones (trailing whitespace
        // included).
        if let Some(end) = text.find("\",\"Event\"") {
            if text.starts_with("{\"Message\":\"") {
                for _ in 0..200 {
                    let body = json_body(&mut r, 30);
                    let s = format!("{{\"Message\":\"{body}{}", &text[end..]);
                    compare(b'f', s.as_bytes());
                }
            }
        }
    }
}

/// Relative cost, current against the original, interleaved (so machine
/// load affects both alike): `cargo test --release -p ossec-fields --test
/// golden -- --ignored --nocapture`.
#[test]
#[ignore]
fn speed_against_original() {
    use std::time::Instant;
    for (name, bytes) in fixtures() {
        let mut out = Vec::with_capacity(8192);
        let q = if name.starts_with("eventchannel") {
            b'f'
        } else {
            b'8'
        };
        // The fastest of many short rounds of each, alternated: the least
        // disturbed by other load.
        let (rounds, per_round) = (40, 500);
        let (mut ours, mut theirs) = (u128::MAX, u128::MAX);
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..per_round {
                out.clear();
                std::hint::black_box(derive(q, b"", std::hint::black_box(&bytes), &mut out));
            }
            ours = ours.min(t.elapsed().as_nanos());
            let t = Instant::now();
            for _ in 0..per_round {
                out.clear();
                std::hint::black_box(golden_orig::derive(
                    q,
                    b"",
                    std::hint::black_box(&bytes),
                    &mut out,
                ));
            }
            theirs = theirs.min(t.elapsed().as_nanos());
        }
        let per = |t: u128| t as f64 / per_round as f64;
        println!(
            "{name:24} ours {:8.0} ns  original {:8.0} ns  ratio {:.2}",
            per(ours),
            per(theirs),
            ours as f64 / theirs as f64
        );
    }
    let _ = Outcome::None;
}
