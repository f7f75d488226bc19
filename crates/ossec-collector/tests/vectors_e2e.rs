//! Every vector made by the real Wazuh/OSSEC code, sent over real UDP and
//! TCP sockets to a running collector, ends as exactly one correct row in
//! SQLite and in PostgreSQL; every startup and keepalive is answered with a
//! reply that decodes, with the agent's own key, to `#!-agent ack ` in the
//! cipher and AES variant the agent used. IP-bound agents send from
//! 127.0.0.x addresses (their client.keys entries rewritten to match).

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use ossec_proto::RejectKind;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Udp,
    Tcp,
}

fn queue_name(q: &str) -> &'static str {
    match q {
        "1" => "localfile",
        "8" => "syscheck",
        "9" => "rootcheck",
        "d" => "syscollector",
        "f" => "eventchannel",
        other => panic!("queue {other} not in the vectors"),
    }
}

async fn run(backend: Backend, via: Via) {
    let db = TestDb::new(backend).await;
    let keys = loopback_vector_keys();
    let c = start(&keys, &db, |a| a.verify_counters = Some(false)).await;
    let transport = match via {
        Via::Udp => "udp",
        Via::Tcp => "tcp",
    };
    let mut udp: HashMap<IpAddr, tokio::net::UdpSocket> = HashMap::new();
    let mut tcp: HashMap<IpAddr, TcpAgent> = HashMap::new();
    let mut expected: Vec<Row> = Vec::new();
    let mut acks = 0u64;
    for v in jsonl("testdata/vectors/vectors.jsonl") {
        if v["direction"] != "agent->manager" {
            continue;
        }
        let name = v["name"].as_str().unwrap().to_owned();
        let id = v["agent_id"].as_str().unwrap();
        let wire = hex::decode(v["wire_hex"].as_str().unwrap()).unwrap();
        let payload = v["expect"]["payload"].as_str().unwrap();
        let wants_ack = payload.starts_with("#!-agent startup") || name.ends_with("/keepalive");
        let src = vector_source(&v);
        let reply = match via {
            Via::Udp => {
                if let std::collections::hash_map::Entry::Vacant(e) = udp.entry(src) {
                    e.insert(udp_from(src).await);
                }
                let s = &udp[&src];
                s.send_to(&wire, c.addr).await.unwrap();
                if wants_ack {
                    udp_reply(s, Duration::from_secs(3)).await
                } else {
                    None
                }
            }
            Via::Tcp => {
                if let std::collections::hash_map::Entry::Vacant(e) = tcp.entry(src) {
                    e.insert(TcpAgent::connect(src, c.addr).await);
                }
                let t = tcp.get_mut(&src).unwrap();
                t.send(&wire).await;
                if wants_ack {
                    t.reply(Duration::from_secs(3)).await
                } else {
                    None
                }
            }
        };
        if wants_ack {
            let reply = reply.unwrap_or_else(|| panic!("{name}: no ACK over {transport}"));
            let (text, cipher, iv) =
                open_reply(&agent_key(&keys, id), &reply).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(text, b"#!-agent ack ", "{name}");
            assert_eq!(
                cipher.as_str(),
                v["cipher"].as_str().unwrap(),
                "{name}: reply cipher"
            );
            assert_eq!(
                iv.map(|i| i.as_str()),
                v["aes_iv"].as_str(),
                "{name}: reply AES variant"
            );
            acks += 1;
        }
        if !payload.starts_with("#!-") {
            let (q, loc, msg) = split_event(payload);
            expected.push((
                id.to_owned(),
                transport.to_owned(),
                q.clone(),
                queue_name(&q).to_owned(),
                loc,
                msg,
                v["expect"]["global_counter"].as_i64().unwrap(),
                v["expect"]["local_counter"].as_i64().unwrap(),
                src.to_string(),
            ));
        }
    }
    let mut rows = wait_events(&c.running.store, expected.len() as i64).await;
    rows.sort();
    expected.sort();
    assert_eq!(rows.len(), expected.len(), "one row per event vector");
    assert_eq!(rows, expected);
    // Shutdown and events get no reply: nothing more is waiting.
    for s in udp.values() {
        assert_eq!(udp_reply(s, Duration::from_millis(200)).await, None);
    }
    for t in tcp.values_mut() {
        assert_eq!(t.reply(Duration::from_millis(200)).await, None);
    }
    let m = &c.running.metrics;
    assert_eq!(m.acks_sent.load(Ordering::Relaxed), acks);
    assert_eq!(
        acks,
        8 * 2,
        "each of the 8 agents has a startup and a keepalive vector"
    );
    for k in RejectKind::ALL {
        assert_eq!(m.rejected_total(k), 0, "{k}");
    }
    c.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_over_udp_into_sqlite() {
    run(Backend::Sqlite, Via::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_over_tcp_into_sqlite() {
    run(Backend::Sqlite, Via::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_over_udp_into_postgres() {
    run(Backend::Postgres, Via::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_over_tcp_into_postgres() {
    run(Backend::Postgres, Via::Tcp).await;
}
