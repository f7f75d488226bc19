//! Traffic captured from real agents (OSSEC 3.7 over UDP, Wazuh 3.4 over
//! TCP) and from Wazuh's Python agent simulator, replayed in file order into
//! a running collector: every event is stored exactly as `decoded.jsonl`
//! says, and every startup and keepalive gets a valid `#!-agent ack `.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use rand::Rng;

/// (agent_id, transport, queue, location, message).
type Event = (String, String, String, String, String);

/// (agent_id, transport, queue, location, message) of every event, and the agent IDs of the
/// messages that must be ACKed, in capture order.
fn expectations(dir: &str) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut acks = 0;
    for d in jsonl(&format!("{dir}/decoded.jsonl")) {
        if d["direction"] != "agent->server" {
            continue;
        }
        let msg = d["message"].as_str().unwrap();
        if msg.starts_with("#!-agent startup") || (msg.starts_with("#!-") && msg.contains('\n')) {
            acks += 1;
        } else if !msg.starts_with("#!-") {
            let (q, loc, text) = split_event(msg);
            events.push((
                d["agent_id"].as_str().unwrap().to_owned(),
                d["transport"].as_str().unwrap().to_owned(),
                q,
                loc,
                text,
            ));
        }
    }
    (events, acks)
}

/// Sends a run's UDP datagrams in file order, answering nothing itself,
/// and its TCP streams in random-sized chunks; returns the ACK count,
/// checking each ACK decodes with the key of the agent that sent the message.
async fn replay(dir: &str, keys: &str, c: &Collector) -> usize {
    let base = repo(dir);
    let decoded: HashMap<String, serde_json::Value> = jsonl(&format!("{dir}/decoded.jsonl"))
        .into_iter()
        .filter(|d| d["direction"] == "agent->server")
        .map(|d| {
            (
                format!(
                    "{}#{}",
                    d["file"].as_str().unwrap(),
                    d["frame"].as_u64().unwrap_or(0)
                ),
                d,
            )
        })
        .collect();
    let mut acks = 0;
    let udp_dir = base.join("udp");
    if udp_dir.exists() {
        let sock = udp_from("127.0.0.1".parse().unwrap()).await;
        let mut files: Vec<_> = std::fs::read_dir(&udp_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let rel = format!("udp/{}", f.file_name().unwrap().to_string_lossy());
            let d = &decoded[&format!("{rel}#0")];
            sock.send_to(&std::fs::read(&f).unwrap(), c.addr)
                .await
                .unwrap();
            let msg = d["message"].as_str().unwrap();
            if msg.starts_with("#!-agent startup") || (msg.starts_with("#!-") && msg.contains('\n'))
            {
                let r = udp_reply(&sock, Duration::from_secs(3))
                    .await
                    .unwrap_or_else(|| panic!("{rel}: no ACK"));
                let (text, cipher, _) =
                    open_reply(&agent_key(keys, d["agent_id"].as_str().unwrap()), &r).unwrap();
                assert_eq!(text, b"#!-agent ack ", "{rel}");
                assert_eq!(cipher.as_str(), d["cipher"].as_str().unwrap());
                acks += 1;
            }
        }
    }
    let tcp_dir = base.join("tcp");
    if tcp_dir.exists() {
        let mut files: Vec<_> = std::fs::read_dir(&tcp_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let rel = format!("tcp/{}", f.file_name().unwrap().to_string_lossy());
            let stream = std::fs::read(&f).unwrap();
            let agent = decoded[&format!("{rel}#1")]["agent_id"]
                .as_str()
                .unwrap()
                .to_owned();
            let n_acks = decoded
                .iter()
                .filter(|(k, d)| {
                    let m = d["message"].as_str().unwrap();
                    k.starts_with(&format!("{rel}#"))
                        && (m.starts_with("#!-agent startup")
                            || (m.starts_with("#!-") && m.contains('\n')))
                })
                .count();
            let mut t = TcpAgent::connect("127.0.0.1".parse().unwrap(), c.addr).await;
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let n = rand::thread_rng().gen_range(1..=rest.len().min(3000));
                t.send_raw(&rest[..n]).await.unwrap();
                rest = &rest[n..];
            }
            for i in 0..n_acks {
                let r = t
                    .reply(Duration::from_secs(3))
                    .await
                    .unwrap_or_else(|| panic!("{rel}: ACK {i} missing"));
                let (text, _, _) = open_reply(&agent_key(keys, &agent), &r).unwrap();
                assert_eq!(text, b"#!-agent ack ", "{rel}");
                acks += 1;
            }
        }
    }
    acks
}

async fn check_run(dir: &str, keys_file: &str, verify: bool, backend: Backend) {
    let keys = std::fs::read_to_string(repo(keys_file)).unwrap();
    let db = TestDb::new(backend).await;
    let c = start(&keys, &db, |a| a.verify_counters = Some(verify)).await;
    let (expected, want_acks) = expectations(dir);
    let acks = replay(dir, &keys, &c).await;
    assert_eq!(acks, want_acks, "{dir}: every startup and keepalive ACKed");
    let rows = wait_events(&c.running.store, expected.len() as i64).await;
    let mut got: Vec<Event> = rows
        .iter()
        .map(|r| {
            (
                r.0.clone(),
                r.1.clone(),
                r.2.clone(),
                r.4.clone(),
                r.5.clone(),
            )
        })
        .collect();
    let mut expected = expected;
    got.sort();
    expected.sort();
    assert_eq!(got.len(), expected.len(), "{dir}: one row per event");
    assert_eq!(got, expected, "{dir}");
    c.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ossec_3_7_agent_over_udp_with_counter_checking() {
    check_run(
        "testdata/captures/ossec-agent/ossec-hids-3.7.0-1ecffb1b/01-blowfish-udp-ack",
        "testdata/captures/ossec-agent/client.keys",
        true,
        Backend::Postgres,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ossec_3_7_agent_retrying_startup_gets_every_ack() {
    check_run(
        "testdata/captures/ossec-agent/ossec-hids-3.7.0-1ecffb1b/02-blowfish-udp-noack",
        "testdata/captures/ossec-agent/client.keys",
        true,
        Backend::Sqlite,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wazuh_3_4_agent_over_tcp_with_counter_checking() {
    check_run(
        "testdata/captures/wazuh-agent/wazuh-v3.4.0-5ee8eb62/02-blowfish-tcp-ack",
        "testdata/captures/wazuh-agent/client.keys",
        true,
        Backend::Sqlite,
    )
    .await;
    check_run(
        "testdata/captures/wazuh-agent/wazuh-v3.4.0-5ee8eb62/02-blowfish-tcp-ack",
        "testdata/captures/wazuh-agent/client.keys",
        true,
        Backend::Postgres,
    )
    .await;
}

/// The Python simulator sends constant counters: replayed with checking off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wazuh_qa_simulator_udp_and_tcp_aes_and_blowfish() {
    check_run(
        "testdata/captures/wazuh-qa-simulator/explicit",
        "testdata/captures/wazuh-qa-simulator/client.keys",
        false,
        Backend::Postgres,
    )
    .await;
}
