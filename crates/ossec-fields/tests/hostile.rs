//! Hostile inputs: each gives the expected outcome, appends nothing when
//! refused, and takes less than 50 ms (in the unoptimised test build).

use std::time::{Duration, Instant};

use ossec_fields::{derive, Outcome, MAX_XML_DEPTH};

const BUDGET: Duration = Duration::from_millis(50);

fn timed(queue: u8, message: &[u8]) -> (Outcome, Vec<u8>, Duration) {
    let mut out = Vec::new();
    let start = Instant::now();
    let outcome = derive(queue, b"loc", message, &mut out);
    (outcome, out, start.elapsed())
}

fn refused(queue: u8, message: &[u8], want: Outcome) {
    let (outcome, out, took) = timed(queue, message);
    assert_eq!(
        outcome,
        want,
        "{}",
        String::from_utf8_lossy(&message[..message.len().min(80)])
    );
    assert!(out.is_empty());
    eprintln!("{want:?} in {took:?}");
    assert!(took < BUDGET, "{want:?} took {took:?}");
}

fn envelope(xml: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"Message": "m", "Event": xml})).expect("json")
}

#[test]
fn deep_json() {
    refused(b'8', "[".repeat(100_000).as_bytes(), Outcome::JsonInvalid);
    let closed = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    refused(b'8', closed.as_bytes(), Outcome::JsonInvalid);
    refused(
        b'8',
        "{\"a\":".repeat(100_000).as_bytes(),
        Outcome::JsonInvalid,
    );
    // The same inside an eventchannel envelope.
    refused(
        b'f',
        format!("{{\"Event\":{}}}", "[".repeat(100_000)).as_bytes(),
        Outcome::JsonInvalid,
    );
    refused(b'1', "[".repeat(100_000).as_bytes(), Outcome::JsonInvalid);
    // A '['-text that is not meant as JSON goes to the predecoder: no header.
    refused(
        b'1',
        format!("[x{}", "[".repeat(100_000)).as_bytes(),
        Outcome::None,
    );
}

#[test]
fn huge_json_numbers_are_stored_as_strings() {
    let (outcome, out, took) = timed(b'8', br#"{"size":1e999999,"n":-1e-999999}"#);
    assert_eq!(outcome, Outcome::Json);
    assert_eq!(out, br#"{"size":"1e999999","n":"-1e-999999"}"#);
    assert!(took < BUDGET);
    let digits = format!("[{}]", "7".repeat(1_000_000));
    let (outcome, out, took) = timed(b'8', digits.as_bytes());
    assert_eq!(outcome, Outcome::Json);
    assert_eq!(out.len(), digits.len() + 2);
    assert!(took < BUDGET, "{took:?}");
}

#[test]
fn large_json_string_with_escapes() {
    let s = format!("{{\"a\":\"{}\"}}", "\\u0000\\ud800x".repeat(5_000));
    let (outcome, out, took) = timed(b'8', s.as_bytes());
    assert_eq!(outcome, Outcome::Json);
    assert!(!String::from_utf8(out).expect("utf8").contains("\\u0000"));
    assert!(took < BUDGET, "{took:?}");
}

#[test]
fn deep_xml() {
    let deep = format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000));
    refused(b'f', &envelope(&deep), Outcome::XmlInvalid);
    refused(b'f', &envelope(&"<a>".repeat(100_000)), Outcome::XmlInvalid);
    let just_too_deep = format!(
        "{}{}",
        "<a>".repeat(MAX_XML_DEPTH + 1),
        "</a>".repeat(MAX_XML_DEPTH + 1)
    );
    refused(b'f', &envelope(&just_too_deep), Outcome::XmlInvalid);
}

#[test]
fn megabyte_attribute_and_text() {
    let attr = format!(
        "<Event><System><Provider Name='{}'/></System></Event>",
        "A".repeat(1 << 20)
    );
    refused(b'f', &envelope(&attr), Outcome::XmlInvalid);
    let text = format!(
        "<Event><System><Computer>{}</Computer></System></Event>",
        "A".repeat(1 << 20)
    );
    refused(b'f', &envelope(&text), Outcome::XmlInvalid);
    let unclosed = format!("<Event><System><Provider Name='{}", "A".repeat(1 << 20));
    refused(b'f', &envelope(&unclosed), Outcome::XmlInvalid);
    let elem_name = format!("<{}/>", "A".repeat(1 << 20));
    let (outcome, _, took) = timed(b'f', &envelope(&elem_name));
    assert!(matches!(
        outcome,
        Outcome::XmlInvalid | Outcome::EventChannel
    ));
    assert!(took < BUDGET, "{took:?}");
}

#[test]
fn billion_laughs_and_doctype() {
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Event><System><Computer>&lol9;</Computer></System></Event>"#;
    refused(b'f', &envelope(laughs), Outcome::XmlInvalid);
    // Without the DTD the entity is unknown: refused, not expanded.
    refused(
        b'f',
        &envelope("<Event><System><Computer>&lol9;</Computer></System></Event>"),
        Outcome::XmlInvalid,
    );
    refused(
        b'f',
        &envelope("<!DOCTYPE Event SYSTEM 'file:///etc/passwd'><Event/>"),
        Outcome::XmlInvalid,
    );
    refused(
        b'f',
        &envelope("<Event><!ENTITY x 'y'></Event>"),
        Outcome::XmlInvalid,
    );
}

#[test]
fn many_elements_and_attributes() {
    // 64 KiB (the largest agent message) of small elements: accepted.
    let many = format!(
        "<Event><EventData>{}</EventData></Event>",
        "<Data Name='x'>v</Data>".repeat(2_800)
    );
    let (outcome, _, took) = timed(b'f', &envelope(&many));
    assert_eq!(outcome, Outcome::EventChannel);
    assert!(took < BUDGET, "{took:?}");
    // Thousands of attributes on one element.
    let attrs: String = (0..20_000).map(|i| format!(" a{i}='v'")).collect();
    refused(
        b'f',
        &envelope(&format!("<Event{attrs}/>")),
        Outcome::XmlInvalid,
    );
}

#[test]
fn garbage() {
    refused(b'f', &envelope("<<<<>>>>&&&&;;;;"), Outcome::XmlInvalid);
    refused(
        b'f',
        &envelope("<Event><System></Event></System>"),
        Outcome::XmlInvalid,
    );
    refused(
        b'f',
        &envelope(&"<a></b>".repeat(100_000)),
        Outcome::XmlInvalid,
    );
    refused(b'f', b"\xff\xfe{\"Event\":1}", Outcome::JsonInvalid);
    refused(b'8', &[0u8; 100_000], Outcome::None);
    let noise: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for q in [b'1', b'8', b'f'] {
        let (outcome, out, took) = timed(q, &noise);
        assert!(!outcome.has_data() || !out.is_empty());
        assert!(took < BUDGET, "{q}: {took:?}");
    }
}

#[test]
fn long_text_lines() {
    let long = format!("Nov 29 10:00:01 web-01 sshd[1234]: {}", "x".repeat(1 << 20));
    let (outcome, out, took) = timed(b'1', long.as_bytes());
    assert_eq!(outcome, Outcome::Syslog);
    assert!(out.len() < 200);
    assert!(took < BUDGET);
    let asl = format!(
        "[Time 2006.12.28 15:53:55 UTC] {}",
        "[Facility auth] ".repeat(60_000)
    );
    let (outcome, _, took) = timed(b'1', asl.as_bytes());
    assert_eq!(outcome, Outcome::None);
    assert!(took < BUDGET, "{took:?}");
}
