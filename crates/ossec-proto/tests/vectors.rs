//! Every vector of `testdata/vectors` (made by the real Wazuh/OSSEC C code)
//! through the library: positives decode to exactly their `expect`,
//! negatives are rejected with their kind, the replay pair is accepted once.

use std::net::IpAddr;

use ossec_proto::codec::{parse_wire, replay_verdict, ReplayVerdict, Wire};
use ossec_proto::frame::FrameReader;
use ossec_proto::{classify, AllowedAddr, ClientKeys, Decoded, Decoder, Payload, RejectKind};
use serde_json::Value;

fn testdata(p: &str) -> String {
    format!("{}/../../testdata/vectors/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn jsonl(name: &str) -> Vec<Value> {
    std::fs::read_to_string(testdata(name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn keys() -> ClientKeys {
    ClientKeys::parse(&std::fs::read(testdata("client.keys")).unwrap()).unwrap()
}

/// The vector's `source_ip`, or an address its agent's entry allows.
fn source(keys: &ClientKeys, v: &Value) -> IpAddr {
    if let Some(ip) = v["source_ip"].as_str() {
        return ip.parse().unwrap();
    }
    match v["agent_id"]
        .as_str()
        .and_then(|id| keys.by_id(id))
        .map(|e| e.allowed)
    {
        Some(AllowedAddr::Host(a)) => a,
        Some(AllowedAddr::Network(IpAddr::V4(n), _)) => IpAddr::V4((u32::from(n) + 1).into()),
        _ => "203.0.113.9".parse().unwrap(),
    }
}

#[test]
fn every_positive_vector_decodes_to_its_expectation() {
    let keys = keys();
    let mut d = Decoder::new();
    let vectors = jsonl("vectors.jsonl");
    assert_eq!(vectors.len(), 73);
    for v in &vectors {
        let name = v["name"].as_str().unwrap();
        let wire = hex::decode(v["wire_hex"].as_str().unwrap()).unwrap();
        let expect = &v["expect"];
        let (agent, opened) = if v["direction"] == "agent->manager" {
            match d.decode(&keys, &wire, source(&keys, v)) {
                Ok(Decoded::Message {
                    agent,
                    opened,
                    id_prefix,
                }) => {
                    assert_eq!(id_prefix, v["id_prefix"].as_bool().unwrap(), "{name}");
                    (keys.entries()[agent].id.clone(), opened)
                }
                other => panic!("{name}: {other:?}"),
            }
        } else {
            let entry = keys.by_id(v["agent_id"].as_str().unwrap()).unwrap();
            let Ok(Wire::Sealed { id: None, sealed }) = parse_wire(&wire) else {
                panic!("{name}")
            };
            (
                entry.id.clone(),
                d.open(&entry.agent_key, sealed)
                    .unwrap_or_else(|e| panic!("{name}: {e}")),
            )
        };
        assert_eq!(agent, v["agent_id"].as_str().unwrap(), "{name}");
        assert_eq!(
            opened.payload,
            expect["payload"].as_str().unwrap().as_bytes(),
            "{name}"
        );
        assert_eq!(
            u64::from(opened.header.rand),
            expect["rand"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            u64::from(opened.header.global_counter),
            expect["global_counter"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            u64::from(opened.header.local_counter),
            expect["local_counter"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            opened.cipher.as_str(),
            v["cipher"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            opened.aes_iv.map(|i| i.as_str()),
            v["aes_iv"].as_str(),
            "{name}"
        );
        // Every payload classifies: events split, control messages parse.
        let p = classify(opened.payload).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name.ends_with("/keepalive") {
            let Payload::Control(c) = p else {
                panic!("{name}")
            };
            assert!(c.wants_ack(), "{name}");
        }
    }
}

#[test]
fn every_negative_vector_is_rejected_with_its_kind() {
    let keys = keys();
    let mut d = Decoder::new();
    for v in jsonl("negative.jsonl") {
        let name = v["name"].as_str().unwrap();
        let wire = hex::decode(v["wire_hex"].as_str().unwrap()).unwrap();
        let kind = if v["transport"] == "tcp" {
            let mut r = FrameReader::new();
            r.feed(&wire);
            match r.next_frame() {
                Err(e) => e.kind,
                Ok(f) => panic!("{name}: framing accepted {f:?}"),
            }
        } else {
            match d.decode(&keys, &wire, source(&keys, &v)) {
                Err(e) => e.kind,
                Ok(m) => panic!("{name}: accepted {m:?}"),
            }
        };
        assert_eq!(kind.as_str(), v["reject"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn replay_pair_is_accepted_once() {
    let keys = keys();
    let mut d = Decoder::new();
    let v = &jsonl("replay.jsonl")[0];
    let wire = hex::decode(v["wire_hex"].as_str().unwrap()).unwrap();
    let mut stored = None;
    let mut verdicts = Vec::new();
    for _ in 0..2 {
        let Decoded::Message { opened, .. } = d.decode(&keys, &wire, source(&keys, v)).unwrap()
        else {
            panic!()
        };
        let c = (opened.header.global_counter, opened.header.local_counter);
        let verdict = replay_verdict(stored, c);
        if verdict == ReplayVerdict::Accept {
            stored = Some(c);
        }
        verdicts.push(verdict);
    }
    assert_eq!(verdicts, [ReplayVerdict::Accept, ReplayVerdict::Duplicate]);
    let _ = RejectKind::Replay;
}
