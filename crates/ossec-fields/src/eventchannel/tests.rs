//! Tests of the eventchannel mapping, on real-shaped events (the files in
//! `testdata/` are the agent's JSON envelope byte for byte) and on each of
//! Wazuh's rules.

use super::*;
use serde_json::{json, Value};

fn run(message: &[u8]) -> (Outcome, Option<Value>) {
    let mut out = Vec::new();
    let outcome = derive(message, &mut out);
    if out.is_empty() {
        return (outcome, None);
    }
    let v = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
    (outcome, Some(v))
}

fn envelope(message: Option<&str>, event: &str) -> Vec<u8> {
    let v = match message {
        Some(m) => json!({"Message": m, "Event": event}),
        None => json!({"Event": event}),
    };
    serde_json::to_vec(&v).expect("json")
}

/// The `win` object of an event made of this XML.
fn win(event: &str) -> Value {
    match run(&envelope(None, event)) {
        (Outcome::EventChannel, Some(v)) => v["win"].clone(),
        other => panic!("{other:?} for {event}"),
    }
}

fn event(system: &str, rest: &str) -> String {
    format!("<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>{system}</System>{rest}</Event>")
}

#[test]
fn project_vector() {
    let m = br#"{"Message":"An account failed to log on.","Event":"<Event><System><EventID>4625</EventID></System></Event>"}"#;
    let mut out = Vec::new();
    assert_eq!(derive(m, &mut out), Outcome::EventChannel);
    assert_eq!(
        String::from_utf8(out).expect("utf8"),
        r#"{"win":{"system":{"eventID":"4625","message":"An account failed to log on."}}}"#
    );
}

#[test]
fn event_4625() {
    let (outcome, v) = run(include_bytes!("../../testdata/eventchannel-4625.json"));
    assert_eq!(outcome, Outcome::EventChannel);
    let v = v.expect("data");
    let system = &v["win"]["system"];
    let expected_system = json!({
        "providerName": "Microsoft-Windows-Security-Auditing",
        "providerGuid": "{54849625-5478-4994-a5ba-3e3b0328c30d}",
        "eventID": "4625",
        "version": "0",
        "level": "0",
        "task": "12544",
        "opcode": "0",
        "keywords": "0x8010000000000000",
        "systemTime": "2021-05-07T21:36:19.887424400Z",
        "eventRecordID": "1718493",
        "processID": "536",
        "threadID": "1776",
        "channel": "Security",
        "computer": "bankdc.ExchangeTest.com",
        "severityValue": "AUDIT_FAILURE",
        "message": system["message"].clone(),
    });
    assert_eq!(system, &expected_system);
    let msg = system["message"].as_str().expect("message");
    assert!(
        msg.starts_with(
            "An account failed to log on.\r\n\r\nSubject:\r\n\tSecurity ID:\t\tS-1-5-18"
        ),
        "{msg}"
    );
    assert!(msg.contains(r"Caller Process Name:	C:\Windows\System32\svchost.exe"));
    assert_eq!(
        v["win"]["eventdata"],
        json!({
            "subjectUserSid": "S-1-5-18",
            "subjectUserName": "BANKDC$",
            "subjectDomainName": "EXCHANGETEST",
            "subjectLogonId": "0x3e7",
            "targetUserSid": "S-1-0-0",
            "targetUserName": "bob",
            "targetDomainName": "EXCHANGETEST",
            "status": "0xc000006d",
            "failureReason": "%%2313",
            "subStatus": "0xc000006a",
            "logonType": "2",
            "logonProcessName": "User32",
            "authenticationPackageName": "Negotiate",
            "workstationName": "BANKDC",
            "keyLength": "0",
            "processId": "0x1c4",
            "processName": r"C:\Windows\System32\svchost.exe",
            "ipAddress": "127.0.0.1",
            "ipPort": "0"
        })
    );
}

#[test]
fn event_4624_matches_wazuh_ruleset_test_fields() {
    // ruleset/testing/tests/win_event_channel.ini, "User logged with RDP":
    // the same names and values, except Wazuh's doubled backslashes and
    // quoted message.
    let (_, v) = run(include_bytes!("../../testdata/eventchannel-4624.json"));
    let v = v.expect("data");
    let e = &v["win"]["eventdata"];
    for (k, want) in [
        ("targetUserName", "Administrator"),
        ("logonType", "10"),
        ("processName", r"C:\Windows\System32\svchost.exe"),
        ("ipAddress", "192.168.0.1"),
        ("logonProcessName", "User32"),
        ("elevatedToken", "%%1842"),
        ("targetLinkedLogonId", "0x0"),
        ("restrictedAdminMode", "%%1843"),
    ] {
        assert_eq!(e[k], want, "{k}");
    }
    // "-" values are dropped.
    assert!(e.get("transmittedServices").is_none());
    assert!(e.get("targetOutboundUserName").is_none());
    let s = &v["win"]["system"];
    assert_eq!(s["severityValue"], "AUDIT_SUCCESS");
    assert_eq!(s["version"], "2");
    assert_eq!(s["providerGuid"], "{54849625-5478-4994-A5BA-3E3B0328C30D}");
}

#[test]
fn event_4688_entities_are_unescaped() {
    let (_, v) = run(include_bytes!("../../testdata/eventchannel-4688.json"));
    let v = v.expect("data");
    let e = &v["win"]["eventdata"];
    assert_eq!(
        e["commandLine"],
        r#"cmd.exe /c "whoami /all & net user" > C:\Temp\o.txt"#
    );
    assert_eq!(e["newProcessName"], r"C:\Windows\System32\cmd.exe");
    assert_eq!(e["parentProcessName"], r"C:\Windows\explorer.exe");
    assert!(e.get("targetUserName").is_none());
    assert_eq!(e["targetLogonId"], "0x0");
    assert_eq!(v["win"]["system"]["eventID"], "4688");
}

#[test]
fn event_7045() {
    let (_, v) = run(include_bytes!("../../testdata/eventchannel-7045.json"));
    let v = v.expect("data");
    assert_eq!(
        v["win"],
        json!({
            "system": {
                "providerName": "Service Control Manager",
                "providerGuid": "{555908d1-a6d7-4695-8e1e-26931d2012f4}",
                "eventSourceName": "Service Control Manager",
                "eventID": "7045",
                "version": "0",
                "level": "4",
                "task": "0",
                "opcode": "0",
                "keywords": "0x8080000000000000",
                "systemTime": "2021-06-25T18:33:57.953556700Z",
                "eventRecordID": "171981",
                "processID": "544",
                "threadID": "9104",
                "channel": "System",
                "computer": "bankdc.ExchangeTest.com",
                "securityUserID": "S-1-5-21-887924094-598891991-956377308-500",
                "severityValue": "INFORMATION",
                "message": "A service was installed in the system.\r\n\r\nService Name:  uxoN\r\nService File Name:  %systemroot%\\TQkHeboM.exe\r\nService Type:  user mode service\r\nService Start Type:  demand start\r\nService Account:  LocalSystem"
            },
            "eventdata": {
                "serviceName": "uxoN",
                "imagePath": "%systemroot%\\TQkHeboM.exe",
                "serviceType": "user mode service",
                "startType": "demand start",
                "accountName": "LocalSystem"
            }
        })
    );
}

#[test]
fn key_order_follows_wazuh() {
    let mut out = Vec::new();
    derive(
        include_bytes!("../../testdata/eventchannel-7045.json"),
        &mut out,
    );
    let s = String::from_utf8(out).expect("utf8");
    let pos = |k: &str| s.find(&format!("\"{k}\"")).unwrap_or_else(|| panic!("{k}"));
    let order = [
        "providerName",
        "eventID",
        "systemTime",
        "channel",
        "securityUserID",
        "severityValue",
        "message",
        "eventdata",
        "serviceName",
        "accountName",
    ];
    for w in order.windows(2) {
        assert!(pos(w[0]) < pos(w[1]), "{} before {}", w[0], w[1]);
    }
}

#[test]
fn event_4719_category_and_audit_policy_changes() {
    let (_, v) = run(include_bytes!("../../testdata/eventchannel-4719.json"));
    let e = &v.expect("data")["win"]["eventdata"];
    assert_eq!(e["categoryId"], "%%8274");
    assert_eq!(e["subcategoryId"], "%%12801");
    assert_eq!(e["category"], "Object Access");
    assert_eq!(e["subcategory"], "Registry");
    assert_eq!(e["auditPolicyChangesId"], "%%8449, %%8451");
    assert_eq!(e["auditPolicyChanges"], "Success added, Failure added");
}

#[test]
fn event_808_user_data() {
    let (_, v) = run(include_bytes!("../../testdata/eventchannel-808.json"));
    let w = &v.expect("data")["win"];
    // ruleset/testing/tests/win_event_channel.ini "Printer driver failed to load".
    assert_eq!(
        w["loadPluginFailed"],
        json!({"pluginDllName": r"C:\Windows\system32\spool\DRIVERS\x64\3\mimispool.dll", "errorCode": "0x45a", "context": "112"})
    );
    assert_eq!(w["system"]["severityValue"], "ERROR");
    assert_eq!(w["system"]["opcode"], "12");
    assert!(w.get("eventdata").is_none());
}

#[test]
fn event_800_unnamed_data_and_binary() {
    let (_, v) = run(include_bytes!("../../testdata/eventchannel-800.json"));
    let w = &v.expect("data")["win"];
    assert_eq!(
        w["eventdata"],
        json!({
            "binary": "0A000000",
            "data": r"DetailSequence=1 DetailTotal=1 SequenceNumber=143 UserId=VAGRANT\vagrant HostName=ConsoleHost HostVersion=5.1.17763.1007 CommandLine=, CommandInvocation(Out-Default): 'Out-Default'"
        })
    );
    assert_eq!(w["system"]["eventID"], "800");
    assert_eq!(w["system"]["providerName"], "PowerShell");
    // Message: trailing whitespace removed.
    assert_eq!(w["system"]["message"], "Pipeline execution details for command line: .\r\n\r\nContext Information: \r\n\tDetailSequence=1");
}

#[test]
fn severity_from_level_and_keywords() {
    let sev = |level: &str, keywords: &str| {
        win(&event(
            &format!("<Level>{level}</Level><Keywords>{keywords}</Keywords>"),
            "",
        ))["system"]["severityValue"]
            .clone()
    };
    assert_eq!(sev("0", "0x8010000000000000"), "AUDIT_FAILURE");
    assert_eq!(sev("0", "0x8020000000000000"), "AUDIT_SUCCESS");
    assert_eq!(sev("0", "0x8000000000000000"), "UNKNOWN");
    assert_eq!(sev("1", "0x0"), "CRITICAL");
    assert_eq!(sev("2", "0x0"), "ERROR");
    assert_eq!(sev("3", "0x0"), "WARNING");
    assert_eq!(sev("4", "0x8080000000000000"), "INFORMATION");
    assert_eq!(sev("5", ""), "VERBOSE");
    assert_eq!(sev("6", "0x0"), "UNKNOWN");
    assert_eq!(sev("", "0x8010000000000000"), "AUDIT_FAILURE"); // strtol("") == 0
    assert_eq!(sev(" 4x", "zz"), "INFORMATION");
    assert_eq!(sev("0", "-1"), "AUDIT_FAILURE"); // strtoull wraps
    assert_eq!(sev("0", "0xFFFFFFFFFFFFFFFFFF"), "AUDIT_FAILURE"); // overflow → ULLONG_MAX
                                                                   // Without both Level and Keywords, no severity.
    assert!(win(&event("<Level>4</Level>", ""))["system"]
        .get("severityValue")
        .is_none());
    assert!(win(&event("<Keywords>0x0</Keywords>", ""))["system"]
        .get("severityValue")
        .is_none());
}

#[test]
fn system_rules() {
    // Empty elements: only Channel, Level and Keywords are kept empty.
    let w = win(&event(
        "<EventID></EventID><Task/><Channel/><Level/><Keywords></Keywords><Computer>c</Computer>",
        "",
    ));
    assert_eq!(
        w["system"],
        json!({"channel": "", "level": "", "keywords": "", "computer": "c", "severityValue": "UNKNOWN"})
    );
    // Wazuh's own input tests (test_decoder_winevtchannel_input.c).
    assert_eq!(
        win("<Event><System><TimeCreated></TimeCreated></System></Event>"),
        json!({"system": {}})
    );
    assert_eq!(
        win("<Event><System><Execution></Execution></System></Event>"),
        json!({"system": {}})
    );
    assert_eq!(
        win("<Event><System><Execution ProcessID='1'></Execution></System></Event>"),
        json!({"system": {"processID": "1"}})
    );
    assert_eq!(
        win("<Event><System><Provider></Provider></System></Event>"),
        json!({"system": {}})
    );
    assert_eq!(
        win("<Event><System><Provider First='1' Second='2' Third='3'></Provider><Provider Fourth='4'></Provider></System></Event>"),
        json!({"system": {}})
    );
    // TimeCreated: only a first attribute named SystemTime.
    assert_eq!(
        win(&event("<TimeCreated Other='x' SystemTime='t'/>", ""))["system"],
        json!({})
    );
    // Correlation is skipped; Execution reads ProcessID and ThreadID only.
    assert_eq!(
        win(&event("<Correlation ActivityID='{A}' RelatedActivityID='{B}'/><Execution ProcessID='4' ThreadID='8' ProcessorID='1' SessionID='0'/>", ""))["system"],
        json!({"processID": "4", "threadID": "8"})
    );
    // A Provider without attributes but with text: the generic rule.
    assert_eq!(
        win(&event("<Provider>p</Provider>", ""))["system"],
        json!({"provider": "p"})
    );
    // EventID Qualifiers is not read; unknown children keep their name.
    assert_eq!(
        win(&event(
            "<EventID Qualifiers='16384'>7045</EventID><Foo>bar</Foo>",
            ""
        ))["system"],
        json!({"eventID": "7045", "foo": "bar"})
    );
    // Security UserID, Channel UserID.
    assert_eq!(
        win(&event(
            "<Channel UserID='u'>Security</Channel><Security UserID='S-1-5-18'/>",
            ""
        ))["system"],
        json!({"channel": "Security", "userID": "u", "securityUserID": "S-1-5-18"})
    );
    assert_eq!(win(&event("<Security/>", ""))["system"], json!({}));
    // System values are not trimmed; duplicates: the first wins.
    assert_eq!(
        win(&event("<Computer>a  </Computer><Computer>b</Computer>", ""))["system"],
        json!({"computer": "a  "})
    );
}

#[test]
fn eventdata_rules() {
    let ed = |data: &str| {
        win(&event("", &format!("<EventData>{data}</EventData>")))
            .get("eventdata")
            .cloned()
    };
    // Empty, "-" and "(NULL)" values are dropped.
    assert_eq!(ed("<Data Name='A'></Data><Data Name='B'/><Data Name='C'>-</Data><Data Name='D'>(NULL)</Data>"), None);
    // Trailing whitespace trimmed, never the first character.
    assert_eq!(
        ed("<Data Name='A'>x \t\r\n</Data><Data Name='B'>   </Data>"),
        Some(json!({"a": "x", "b": " "}))
    );
    // Only the first letter is lower-cased; non-ASCII first letters stay.
    assert_eq!(
        ed("<Data Name='IPAddress'>1</Data><Data Name='Épée'>2</Data>"),
        Some(json!({"iPAddress": "1", "Épée": "2"}))
    );
    // Unnamed data joined with ", "; empty ones skipped.
    assert_eq!(
        ed("<Data/><Data>a</Data><Data></Data><Data>-</Data><Data>b</Data>"),
        Some(json!({"data": "a, b"}))
    );
    // Other elements under EventData: their own name.
    assert_eq!(
        ed("<Binary>00FF</Binary><Other>o</Other>"),
        Some(json!({"binary": "00FF", "other": "o"}))
    );
    // An attribute other than Name: Wazuh names the field after its value.
    assert_eq!(ed("<Data Type='Kind'>v</Data>"), Some(json!({"kind": "v"})));
    assert_eq!(
        ed("<Data Foo='first' Name='second'>v</Data>"),
        Some(json!({"first": "v", "second": "v"}))
    );
    // Duplicated names: the first wins.
    assert_eq!(
        ed("<Data Name='Type'>0</Data><Data Name='Type'>1</Data>"),
        Some(json!({"type": "0"}))
    );
    // An empty Name is a key like any other.
    assert_eq!(ed("<Data Name=''>0</Data>"), Some(json!({"": "0"})));
    // Category needs Level and Keywords (Wazuh computes it with severity).
    assert_eq!(
        ed("<Data Name='CategoryId'>%%8280</Data><Data Name='SubcategoryId'>%%14339</Data>"),
        Some(json!({"categoryId": "%%8280", "subcategoryId": "%%14339"}))
    );
    let w = win(&event(
        "<Level>0</Level><Keywords>0x8020000000000000</Keywords>",
        "<EventData><Data Name='CategoryId'>%%8280</Data><Data Name='SubcategoryId'>%%99</Data></EventData>",
    ));
    assert_eq!(w["eventdata"]["category"], "Account Logon");
    assert!(w["eventdata"].get("subcategory").is_none());
    // auditPolicyChanges: at most four codes, unknown ones skipped.
    assert_eq!(
        ed("<Data Name='AuditPolicyChanges'>%%8448, %%8450,%%1, %%8451, %%8449</Data>"),
        Some(
            json!({"auditPolicyChangesId": "%%8448, %%8450,%%1, %%8451, %%8449", "auditPolicyChanges": "Success removed, Failure removed, Failure added"})
        )
    );
    assert_eq!(
        ed("<Data Name='AuditPolicyChanges'>%%1</Data>"),
        Some(json!({"auditPolicyChangesId": "%%1"}))
    );
}

#[test]
fn xml_entities_and_quotes() {
    let w = win(&event(
        "<Computer>a&lt;b&gt;c&amp;d&quot;e&apos;f&#x41;&#66;</Computer><Provider Name=\"dq &amp; 'x'\" Guid='sq \"y\"'/>",
        "<EventData><Data Name='CDATA'><![CDATA[<raw & text>]]></Data></EventData>",
    ));
    assert_eq!(w["system"]["computer"], "a<b>c&d\"e'fAB");
    assert_eq!(w["system"]["providerName"], "dq & 'x'");
    assert_eq!(w["system"]["providerGuid"], "sq \"y\"");
    assert_eq!(w["eventdata"]["cDATA"], "<raw & text>");
}

#[test]
fn other_sections_become_an_extra_object() {
    let w = win(&event(
        "<EventID>1102</EventID>",
        "<UserData><LogFileCleared xmlns='http://manifests.microsoft.com/win/2004/08/windows/eventlog'><SubjectUserSid>S-1-5-21-1</SubjectUserSid><SubjectUserName>admin</SubjectUserName><SubjectDomainName>-</SubjectDomainName><Deeper><X>ignored</X></Deeper></LogFileCleared></UserData>",
    ));
    assert_eq!(
        w["logFileCleared"],
        json!({"subjectUserSid": "S-1-5-21-1", "subjectUserName": "admin"})
    );
    // The name is the last element of the section; an empty one still shows.
    let w = win(&event("", "<UserData><A><X>1</X></A><B/></UserData>"));
    assert_eq!(w["b"], json!({"x": "1"}));
    // A section named like a Wazuh object does not replace it.
    let w = win(&event(
        "<EventID>1</EventID>",
        "<Other><System><EventID>2</EventID></System></Other>",
    ));
    assert_eq!(w["system"]["eventID"], "1");
}

#[test]
fn message_rules() {
    // Absent: no key. A string: decoded, trailing whitespace removed.
    assert!(win("<Event/>")["system"].get("message").is_none());
    let one = |m: &[u8]| run(m).1.expect("data")["win"]["system"]["message"].clone();
    assert_eq!(
        one(br#"{"Message":"a\u0000b\r\n","Event":"<Event/>"}"#),
        "a\u{FFFD}b"
    );
    assert_eq!(one(br#"{"Message":"","Event":"<Event/>"}"#), "");
    // Not a string: its JSON text.
    assert_eq!(
        one(br#"{"Message":{"a":[1,2]},"Event":"<Event/>"}"#),
        r#"{"a":[1,2]}"#
    );
    assert_eq!(one(br#"{"Message":12,"Event":"<Event/>"}"#), "12");
    // Keys are matched ignoring case (cJSON_GetObjectItem), the first one wins.
    assert_eq!(
        one(br#"{"MESSAGE":"x","message":"y","event":"<Event/>","Event":"<bad"}"#),
        "x"
    );
}

#[test]
fn envelope_without_event_is_plain_json() {
    for m in [
        &br#"{"Message":"m"}"#[..],
        br#"{"Event":12}"#,
        br#"[1,2]"#,
        br#"{}"#,
    ] {
        let mut out = Vec::new();
        assert_eq!(
            derive(m, &mut out),
            Outcome::Json,
            "{}",
            String::from_utf8_lossy(m)
        );
        assert_eq!(out, m);
    }
}

#[test]
fn invalid_envelope() {
    for m in [
        &b"not json"[..],
        b"{\"Event\":\"<a/>\"",
        b"{\"Event\":\"\xff\"}",
        b"",
        b"  ",
    ] {
        let mut out = Vec::new();
        assert_eq!(
            derive(m, &mut out),
            Outcome::JsonInvalid,
            "{}",
            String::from_utf8_lossy(m)
        );
        assert!(out.is_empty());
    }
}

#[test]
fn invalid_xml() {
    for x in [
        "",
        "   ",
        "plain text",
        "<Event>",
        "<Event><System></Event>",
        "<Event></Other>",
        "</Event>",
        "<Event/><Event/>",
        "garbage<Event/>",
        "<Event/>trailing",
        "<Event a=1/>",
        "<Event a='1' a='2'/>",
        "<Event a='1/>",
        "<Event><System><Computer>&unknown;</Computer></System></Event>",
        "<Event><System><Computer>&#0;</Computer></System></Event>",
        "<Event><System><Computer>&#xD800;</Computer></System></Event>",
        "<Event><System><Computer>a & b</Computer></System></Event>",
        "<!DOCTYPE Event><Event/>",
        "<?xml version='1.0'?><!DOCTYPE e [<!ENTITY x 'y'>]><Event>&x;</Event>",
        "<Event><![CDATA[x]]></Event><![CDATA[y]]>",
        "<Event><!-- unclosed comment </Event>",
    ] {
        let mut out = Vec::new();
        assert_eq!(
            derive(&envelope(Some("m"), x), &mut out),
            Outcome::XmlInvalid,
            "{x:?}"
        );
        assert!(out.is_empty());
    }
    // Comments, processing instructions and a declaration are fine.
    assert_eq!(win("<?xml version='1.0'?><!-- c --><Event><?pi x?><System><!-- c --><EventID>1</EventID></System></Event>\n"), json!({"system": {"eventID": "1"}}));
}

#[test]
fn limits() {
    let nest = |n: usize| format!("{}{}", "<a>".repeat(n), "</a>".repeat(n));
    assert_eq!(
        run(&envelope(None, &nest(MAX_XML_DEPTH))).0,
        Outcome::EventChannel
    );
    assert_eq!(
        run(&envelope(None, &nest(MAX_XML_DEPTH + 1))).0,
        Outcome::XmlInvalid
    );
    let attrs = |n: usize| {
        format!(
            "<Event{}/>",
            (0..n).map(|i| format!(" a{i}='x'")).collect::<String>()
        )
    };
    assert_eq!(
        run(&envelope(None, &attrs(MAX_XML_ATTRIBUTES))).0,
        Outcome::EventChannel
    );
    assert_eq!(
        run(&envelope(None, &attrs(MAX_XML_ATTRIBUTES + 1))).0,
        Outcome::XmlInvalid
    );
    let text = |n: usize| event(&format!("<Computer>{}</Computer>", "x".repeat(n)), "");
    assert_eq!(
        run(&envelope(None, &text(MAX_XML_TEXT))).0,
        Outcome::EventChannel
    );
    assert_eq!(
        run(&envelope(None, &text(MAX_XML_TEXT + 1))).0,
        Outcome::XmlInvalid
    );
    // Text split by comments counts as one.
    let split = event(
        &format!(
            "<Computer>{0}<!---->{0}</Computer>",
            "x".repeat(MAX_XML_TEXT / 2 + 1)
        ),
        "",
    );
    assert_eq!(run(&envelope(None, &split)).0, Outcome::XmlInvalid);
}

#[test]
fn many_names_stay_linear() {
    let data: String = (0..6000)
        .map(|i| format!("<Data Name='N{i}'>v</Data><Data Name='N{i}'>w</Data>"))
        .collect();
    let start = std::time::Instant::now();
    let w = win(&event("", &format!("<EventData>{data}</EventData>")));
    assert!(start.elapsed().as_millis() < 200);
    assert_eq!(w["eventdata"].as_object().map(|o| o.len()), Some(6000));
    assert_eq!(w["eventdata"]["n5999"], "v");
}

#[test]
fn helpers() {
    assert_eq!(strtol("  -12abc"), -12);
    assert_eq!(strtol("+7"), 7);
    assert_eq!(strtol("x1"), 0);
    assert_eq!(strtol("99999999999999999999999"), i64::MAX);
    assert_eq!(strtoull_hex("0x8020000000000000"), 0x8020000000000000);
    assert_eq!(strtoull_hex("ff"), 255);
    assert_eq!(strtoull_hex("0x"), 0);
    assert_eq!(strtoull_hex("-1"), u64::MAX);
    assert_eq!(trim_end_keep_first(""), "");
    assert_eq!(trim_end_keep_first(" "), " ");
    assert_eq!(trim_end_keep_first("a \x0b\x0c"), "a");
    assert_eq!(lower_first("EventID"), "eventID");
    assert_eq!(lower_first("été"), "été");
    assert_eq!(lower_first(""), "");
    assert!(is_lower_first("CategoryId", "categoryId"));
    assert!(is_lower_first("categoryId", "categoryId"));
    assert!(!is_lower_first("CategoryID", "categoryId"));
    assert!(!is_lower_first("", "c"));
    assert_eq!(
        category(8276, 13312),
        (Some("Detailed Tracking"), Some("Process Creation"))
    );
    assert_eq!(category(1, 13312), (None, None));
}
