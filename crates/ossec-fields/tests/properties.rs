//! Properties of `derive` on generated input: it never panics; whatever it
//! appends is JSON that serde_json reads, holds no NUL, nests at most
//! `MAX_JSON_DEPTH`, and is a fixed point (stored again as JSON it comes
//! back byte for byte, so no rewrite is left to do); the NULL outcomes
//! append nothing. And the JSON validator agrees with serde_json.

use ossec_fields::{derive, Outcome, MAX_JSON_DEPTH};
use proptest::prelude::*;
use serde_json::Value;

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn no_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => !s.contains('\0'),
        Value::Array(a) => a.iter().all(no_nul),
        Value::Object(o) => o.iter().all(|(k, v)| !k.contains('\0') && no_nul(v)),
        _ => true,
    }
}

/// Whether the JSON text holds a `\u0000` escape (an escaped backslash
/// followed by "u0000" is not one).
fn has_nul_escape(text: &[u8]) -> bool {
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' {
            if text[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// Runs `derive` and checks every output invariant; returns the outcome
/// and the output.
fn checked(queue: u8, message: &[u8]) -> (Outcome, Vec<u8>) {
    let mut out = b"prefix".to_vec();
    let outcome = derive(queue, b"loc", message, &mut out);
    assert!(out.starts_with(b"prefix"), "derive must only append");
    let out = out.split_off(6);
    if !outcome.has_data() {
        assert!(
            out.is_empty(),
            "{outcome:?} appended {}",
            String::from_utf8_lossy(&out)
        );
        return (outcome, out);
    }
    let v: Value = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{outcome:?}: {e}: {}", String::from_utf8_lossy(&out)));
    assert!(v.is_object() || v.is_array());
    assert!(!out.contains(&0), "raw NUL");
    assert!(
        !has_nul_escape(&out),
        "\\u0000 in {}",
        String::from_utf8_lossy(&out)
    );
    assert!(no_nul(&v));
    assert!(depth(&v) <= MAX_JSON_DEPTH);
    // A fixed point: what we store is stored unchanged.
    let mut again = Vec::new();
    assert_eq!(derive(b'1', b"loc", &out, &mut again), Outcome::Json);
    assert_eq!(again, out, "output is not a fixed point");
    (outcome, out)
}

fn queue() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(b'1'),
        Just(b'8'),
        Just(b'f'),
        Just(b'd'),
        Just(b'5'),
        Just(b'p'),
        Just(b'9'),
        any::<u8>()
    ]
}

/// Pieces that steer random messages into every path.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ -~]{0,8}",
        1 => any::<char>().prop_map(String::from),
        2 => prop::sample::select(vec![
            "{", "}", "[", "]", "\"", ":", ",", " ", "\\", "\\u0000", "\\ud800", "\\udc00", "\\ud83d\\ude00", "\\n",
            "1e999999", "-0.5e-3", "1e308", "0", "true", "null", "\u{0}", "\u{fffd}", "é",
            "\"Event\":", "\"Message\":", "<Event>", "</Event>", "<System>", "</System>", "<EventData>",
            "</EventData>", "<Data Name='TargetUserName'>", "<Data>", "</Data>", "<UserData>", "<X>", "</X>",
            "<Level>0</Level>", "<Keywords>0x8010000000000000</Keywords>", "&lt;", "&#x41;", "&bad;", "&", "(NULL)",
            "-", "<![CDATA[", "]]>", "<!--", "-->", "<!DOCTYPE x>", "<?xml version='1.0'?>", "<a/>", "'", "=",
            "Nov 29 10:00:01 ", "web-01 ", "sshd[1234]: ", "2003-10-11T22:14:15.003Z ", "<34>1 ", "<13>",
            "[Fri Feb 11 18:06:35 2004] ", "[Sender sshd] ", "[Host h] ", "AUTH|security:info ",
        ])
        .prop_map(String::from),
    ]
}

fn fragments() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..40).prop_map(|v| v.concat())
}

/// XML text for an element's content or attribute value: any characters
/// (NUL included: the envelope carries it as `\u0000`), escaped.
fn xml_text() -> BoxedStrategy<String> {
    let piece = prop_oneof![
        4 => any::<char>().prop_map(String::from),
        1 => prop::sample::select(vec!["(NULL)", "-", " ", "  ", "\r\n", "%%8274", "%%12801", "%%8449, %%8451", "0x8010000000000000", "0"]).prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..6)
        .prop_map(|v| {
            v.concat()
                .chars()
                .map(|c| match c {
                    '&' => "&amp;".to_string(),
                    '<' => "&lt;".to_string(),
                    '>' => "&gt;".to_string(),
                    '\'' => "&apos;".to_string(),
                    '"' => "&quot;".to_string(),
                    'A' => "&#x41;".to_string(),
                    c => c.to_string(),
                })
                .collect()
        })
        .boxed()
}

/// A well-formed event tree, with Wazuh's element and attribute names.
fn xml_tree() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "System",
        "EventData",
        "UserData",
        "Data",
        "Provider",
        "TimeCreated",
        "Execution",
        "Channel",
        "Security",
        "Level",
        "Keywords",
        "Correlation",
        "EventID",
        "Binary",
        "X",
        "ns:Y",
    ]);
    let attr_name = prop::sample::select(vec![
        "Name",
        "Guid",
        "EventSourceName",
        "SystemTime",
        "ProcessID",
        "ThreadID",
        "UserID",
        "Other",
    ]);
    let attrs = prop::collection::vec((attr_name, xml_text(), prop::bool::ANY), 0..3)
        .prop_map(|v| {
            let mut seen = Vec::new();
            let mut s = String::new();
            for (k, val, dq) in v {
                if seen.contains(&k) {
                    continue;
                }
                seen.push(k);
                let val = if dq {
                    format!("\"{val}\"")
                } else {
                    format!("'{val}'")
                };
                s.push_str(&format!(" {k}={val}"));
            }
            s
        })
        .boxed();
    let leaf =
        (name.clone(), attrs.clone(), xml_text(), prop::bool::ANY).prop_map(|(n, a, t, empty)| {
            if empty && t.is_empty() {
                format!("<{n}{a}/>")
            } else {
                format!("<{n}{a}>{t}</{n}>")
            }
        });
    let tree = leaf.prop_recursive(5, 48, 6, move |inner| {
        (
            name.clone(),
            attrs.clone(),
            prop::collection::vec(inner, 0..6),
            xml_text(),
        )
            .prop_map(|(n, a, kids, t)| format!("<{n}{a}>{}{t}</{n}>", kids.concat()))
    });
    prop::collection::vec(tree, 0..5).prop_map(|kids| {
        format!(
            "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'>{}</Event>",
            kids.concat()
        )
    })
}

/// JSON text: a generated document, sometimes mutated.
fn json_number() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,5})(\\.[0-9]{1,4})?([eE][+-]?[0-9]{1,4})?",
        prop::sample::select(vec![
            "1e308", "1.8e308", "1e-400", "0e1001", "1e1001", "9e307", "-0", "1e-16384"
        ])
        .prop_map(String::from),
        (1usize..400).prop_map(|n| "9".repeat(n)),
    ]
}

fn json_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => any::<char>()
            .prop_map(|c| if c == '"' || c == '\\' || c < ' ' { 'x' } else { c })
            .prop_map(String::from),
        1 => prop::sample::select(vec![
            "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0000", "\\u00e9", "\\ud800", "\\udbff",
            "\\udc00", "\\ud83d\\ude00", "\\uD834\\uDD1E", "\\ud800\\u0041", "\\\\u0000",
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| format!("\"{}\"", v.concat()))
}

fn json_doc() -> impl Strategy<Value = String> {
    let ws = prop::sample::select(vec!["", "", "", " ", "\n", "\t", "\r\n "]);
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        json_number(),
        json_string(),
    ];
    let value = leaf.prop_recursive(8, 128, 6, move |inner| {
        let ws = ws.clone();
        prop_oneof![
            (prop::collection::vec(inner.clone(), 0..6), ws.clone())
                .prop_map(|(v, w)| format!("[{w}{}{w}]", v.join(","))),
            (prop::collection::vec((json_string(), inner), 0..6), ws).prop_map(|(v, w)| {
                let members: Vec<String> = v
                    .into_iter()
                    .map(|(k, v)| format!("{k}{w}:{w}{v}"))
                    .collect();
                format!("{{{w}{}{w}}}", members.join(","))
            }),
        ]
    });
    (value, prop::bool::ANY).prop_map(|(v, obj)| {
        if obj {
            format!(" {{\"k\":{v}}} ")
        } else {
            format!("[{v}]\n")
        }
    })
}

fn mutated_json() -> impl Strategy<Value = Vec<u8>> {
    (
        json_doc(),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 0..3),
    )
        .prop_map(|(doc, edits)| {
            let mut b = doc.into_bytes();
            for (at, op, byte) in edits {
                if b.is_empty() {
                    break;
                }
                let i = at.index(b.len());
                const BYTES: &[u8] = b"{}[]\",:\\0e-. \x00";
                let byte = BYTES[usize::from(byte) % BYTES.len()];
                match op {
                    0 => {
                        b.remove(i);
                    }
                    1 => b.insert(i, byte),
                    _ => b[i] = byte,
                }
            }
            b
        })
}

/// `{…`, or `[` followed by `{`, `[`, `"` or `]`: the documented rule for
/// "invalid means JsonInvalid".
fn meant_as_json(doc: &[u8]) -> bool {
    let mut rest = doc.iter().skip_while(|c| c.is_ascii_whitespace());
    match rest.next() {
        Some(b'{') => true,
        Some(b'[') => matches!(
            rest.find(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r')),
            Some(b'{' | b'[' | b'"' | b']')
        ),
        _ => false,
    }
}

/// Whether serde's view of a document and ours agree: strings equal once
/// NUL is replaced, numbers equal or ours their text as a string.
fn equivalent(ours: &Value, theirs: &Value) -> bool {
    match (ours, theirs) {
        (Value::String(a), Value::String(b)) => *a == b.replace('\0', "\u{FFFD}"),
        (Value::String(a), Value::Number(n)) => serde_json::from_str::<f64>(a).ok() == n.as_f64(),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| equivalent(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter().all(|(k, v)| {
                    match b.get(k).or_else(|| b.get(&k.replace('\u{FFFD}', "\0"))) {
                        Some(w) => equivalent(v, w),
                        None => b
                            .iter()
                            .any(|(bk, w)| bk.replace('\0', "\u{FFFD}") == *k && equivalent(v, w)),
                    }
                })
        }
        (a, b) => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_bytes(q in queue(), m in prop::collection::vec(any::<u8>(), 0..2048)) {
        checked(q, &m);
    }

    #[test]
    fn never_panics_on_fragments(q in queue(), m in fragments()) {
        checked(q, m.as_bytes());
    }

    #[test]
    fn eventchannel_envelopes(msg in fragments(), xml in fragments(), wrap in prop::bool::ANY) {
        let xml = if wrap { format!("<Event><System>{xml}</System><EventData>{xml}</EventData></Event>") } else { xml };
        let m = serde_json::to_vec(&serde_json::json!({"Message": msg, "Event": xml})).expect("json");
        let (outcome, _) = checked(b'f', &m);
        prop_assert!(matches!(outcome, Outcome::EventChannel | Outcome::XmlInvalid), "{:?}", outcome);
    }

    #[test]
    fn well_formed_events_are_decoded(xml in xml_tree(), msg in prop::option::of(xml_text())) {
        let v = match msg {
            Some(m) => serde_json::json!({"Message": m, "Event": xml}),
            None => serde_json::json!({"Event": xml}),
        };
        let m = serde_json::to_vec(&v).expect("json");
        let (outcome, out) = checked(b'f', &m);
        prop_assert_eq!(outcome, Outcome::EventChannel, "{}", xml);
        let v: Value = serde_json::from_slice(&out).expect("checked");
        prop_assert!(v["win"]["system"].is_object());
        // Every value Wazuh emits is a string.
        for section in v["win"].as_object().expect("win").values() {
            for value in section.as_object().expect("object").values() {
                prop_assert!(value.is_string());
            }
        }
    }

    #[test]
    fn json_agrees_with_serde(doc in mutated_json()) {
        let (outcome, out) = checked(b'8', &doc);
        let serde: Result<Value, _> = serde_json::from_slice(&doc);
        let shaped = doc.iter().find(|c| !c.is_ascii_whitespace()).is_some_and(|c| *c == b'{' || *c == b'[');
        match serde {
            Ok(theirs) if shaped && depth(&theirs) <= MAX_JSON_DEPTH && (theirs.is_object() || theirs.is_array()) => {
                prop_assert_eq!(outcome, Outcome::Json);
                let ours: Value = serde_json::from_slice(&out).expect("checked");
                prop_assert!(equivalent(&ours, &theirs), "{} vs {}", ours, theirs);
                // Unless something had to be rewritten (a NUL escape keeps
                // the length, a number becoming a string adds its quotes),
                // the bytes are the input's.
                let trimmed = std::str::from_utf8(&doc).expect("utf8").trim_matches([' ', '\t', '\n', '\r']);
                let s = std::str::from_utf8(&out).expect("utf8");
                if s != trimmed {
                    prop_assert!(trimmed.contains("\\u0000") || s.len() > trimmed.len(), "{} became {}", trimmed, s);
                }
            }
            Ok(theirs) if depth(&theirs) > MAX_JSON_DEPTH => prop_assert!(outcome != Outcome::Json),
            Ok(_) => {}
            Err(e) => {
                let msg = e.to_string();
                // What serde refuses but we store after a rewrite.
                let storable_after_rewrite = ["surrogate", "hex escape", "code point", "out of range"].iter().any(|w| msg.contains(w));
                if !storable_after_rewrite {
                    prop_assert!(outcome != Outcome::Json, "accepted what serde rejects ({}): {}", msg, String::from_utf8_lossy(&doc));
                    if meant_as_json(&doc) {
                        prop_assert_eq!(outcome, Outcome::JsonInvalid);
                    }
                }
            }
        }
    }
}
