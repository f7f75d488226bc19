//! Per-message cost of the codec, the way the server runs it: one reused
//! [`Decoder`] per thread, a realistic ~200-byte syslog event, a Wazuh 4.x
//! keepalive from `testdata/vectors`.
//!
//! ```text
//! cargo bench -p ossec-proto --bench decode -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Throughput is one message per iteration, so criterion's `elem/s` is
//! decodes (or encodes, classifications) per second on one core.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ossec_proto::{classify, encode, ClientKeys, Decoded, Decoder, Header, Sealing};
use serde_json::Value;

const SYSLOG: &str = "1:/var/log/auth.log:Nov 29 10:00:01 web-01 sshd[1234]: Failed password for invalid user admin from 203.0.113.5 port 52311 ssh2";
const PAYLOAD_LEN: usize = 200;

fn testdata(p: &str) -> String {
    format!("{}/../../testdata/vectors/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn keys() -> ClientKeys {
    ClientKeys::parse(&std::fs::read(testdata("client.keys")).expect("client.keys"))
        .expect("client.keys parses")
}

/// The syslog event, padded to 200 bytes with the kind of text PAM adds.
fn syslog_200() -> Vec<u8> {
    let tail = " [preauth] pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5";
    let mut p = format!("{SYSLOG}{tail}").into_bytes();
    p.resize(PAYLOAD_LEN, b' ');
    p
}

/// A vector of `vectors.jsonl` by name: its wire and expected payload.
fn vector(name: &str) -> (Vec<u8>, Vec<u8>) {
    let text = std::fs::read_to_string(testdata("vectors.jsonl")).expect("vectors.jsonl");
    let v: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"));
    (
        hex::decode(v["wire_hex"].as_str().expect("wire_hex")).expect("hex"),
        v["expect"]["payload"]
            .as_str()
            .expect("payload")
            .as_bytes()
            .to_vec(),
    )
}

fn header() -> Header {
    Header {
        rand: 51639,
        global_counter: 184,
        local_counter: 4910,
    }
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let source: IpAddr = "203.0.113.9".parse().unwrap();
    let payload = syslog_200();
    let web01 = &keys.by_id("001").expect("agent 001").agent_key;
    let legacy05 = &keys.by_id("005").expect("agent 005").agent_key;
    let aes_wire = encode(web01, Sealing::AesFixed, Some("001"), header(), &payload).unwrap();
    let bf_wire = encode(legacy05, Sealing::Blowfish, Some("005"), header(), &payload).unwrap();
    let (keepalive_wire, keepalive_payload) = vector("w-aes-any/keepalive");

    let mut d = Decoder::new();
    // Every wire decodes to what it should before it is timed.
    for (wire, want) in [
        (&aes_wire, &payload),
        (&bf_wire, &payload),
        (&keepalive_wire, &keepalive_payload),
    ] {
        match d.decode(&keys, wire, source) {
            Ok(Decoded::Message { opened, .. }) => assert_eq!(opened.payload, &want[..]),
            other => panic!("bench input does not decode: {other:?}"),
        }
    }
    classify(&keepalive_payload).expect("keepalive classifies");

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    for (name, wire) in [
        ("aes_syslog_200B", &aes_wire),
        ("blowfish_syslog_200B", &bf_wire),
        ("keepalive", &keepalive_wire),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| match d.decode(&keys, black_box(wire), source) {
                Ok(Decoded::Message { opened, .. }) => opened.payload.len(),
                _ => unreachable!(),
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("aes_syslog_200B", |b| {
        b.iter(|| {
            encode(
                web01,
                Sealing::AesFixed,
                Some("001"),
                header(),
                black_box(&payload),
            )
            .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("keepalive", |b| {
        b.iter(|| classify(black_box(&keepalive_payload)).unwrap())
    });
    g.finish();

    // The MD5 check every message needs, alone: the part of decode that
    // costs the same in Wazuh's C (OpenSSL's assembly) and here (md-5's).
    let mut g = c.benchmark_group("md5");
    for len in [170usize, 2048] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{len}B"), |b| {
            b.iter(|| ossec_proto::derive::md5_hex(black_box(&data)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
