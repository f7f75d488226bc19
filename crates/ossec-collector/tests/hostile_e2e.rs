//! Hostile and broken input against a running collector: every negative
//! vector is rejected and counted by kind while a good agent keeps working;
//! a replayed message is stored once; an agent whose counters went
//! backwards is accepted again after `agents reset-counters`.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use common::*;
use ossec_proto::{encode, Header, RejectKind, Sealing};

/// A good agent (001 web-01, AES) that builds messages with rising counters.
struct Good {
    key: ossec_proto::AgentKey,
    local: u32,
}

impl Good {
    fn msg(&mut self, payload: &str) -> Vec<u8> {
        self.local += 1;
        let h = Header {
            rand: 1,
            global_counter: 50_000,
            local_counter: self.local,
        };
        encode(
            &self.key,
            Sealing::AesFixed,
            Some("001"),
            h,
            payload.as_bytes(),
        )
        .unwrap()
    }
}

async fn negatives(backend: Backend) {
    let db = TestDb::new(backend).await;
    let keys = loopback_vector_keys();
    let c = start(&keys, &db, |_| {}).await;
    let mut good = Good {
        key: agent_key(&keys, "001"),
        local: 0,
    };
    let agent = udp_from("127.0.0.1".parse().unwrap()).await;
    agent
        .send_to(&good.msg("#!-agent startup "), c.addr)
        .await
        .unwrap();
    assert!(
        udp_reply(&agent, Duration::from_secs(3)).await.is_some(),
        "good agent ACKed"
    );
    let hostile_ip: IpAddr = "127.0.0.77".parse().unwrap();
    let hostile = udp_from(hostile_ip).await;
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let negs = jsonl("testdata/vectors/negative.jsonl");
    for (i, v) in negs.iter().enumerate() {
        let name = v["name"].as_str().unwrap();
        let wire = hex::decode(v["wire_hex"].as_str().unwrap()).unwrap();
        *expected
            .entry(v["reject"].as_str().unwrap().to_owned())
            .or_default() += 1;
        if v["transport"] == "tcp" {
            let mut t = TcpAgent::connect(hostile_ip, c.addr).await;
            let _ = t.send_raw(&wire).await;
            assert!(
                t.closed(Duration::from_secs(3)).await,
                "{name}: connection must be closed"
            );
        } else {
            hostile.send_to(&wire, c.addr).await.unwrap();
            // A bad message that came over TCP closes the connection too.
            if !wire.is_empty() {
                let mut t = TcpAgent::connect(hostile_ip, c.addr).await;
                t.send(&wire).await;
                assert!(
                    t.closed(Duration::from_secs(3)).await,
                    "{name}: TCP connection must be closed"
                );
                *expected.get_mut(v["reject"].as_str().unwrap()).unwrap() += 1;
            }
        }
        // The good agent is not disturbed.
        agent
            .send_to(
                &good.msg(&format!("1:/var/log/app.log:good event {i}")),
                c.addr,
            )
            .await
            .unwrap();
    }
    assert_eq!(
        udp_reply(&hostile, Duration::from_millis(300)).await,
        None,
        "no reply to garbage"
    );
    let rows = wait_events(&c.running.store, negs.len() as i64).await;
    assert_eq!(
        rows.len(),
        negs.len(),
        "every good event stored, nothing else"
    );
    // Batches may commit in any order: compare as sets.
    let mut got: Vec<String> = rows.iter().map(|r| r.5.clone()).collect();
    let mut want: Vec<String> = (0..negs.len()).map(|i| format!("good event {i}")).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let m = &c.running.metrics;
    for k in RejectKind::ALL {
        let want = expected.get(k.as_str()).copied().unwrap_or(0);
        assert_eq!(m.rejected_total(k), want, "rejected as {k}");
    }
    c.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negatives_are_rejected_and_counted_sqlite() {
    negatives(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negatives_are_rejected_and_counted_postgres() {
    negatives(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_pair_is_stored_once() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let c = start(&loopback_vector_keys(), &db, |_| {}).await;
        let v = &jsonl("testdata/vectors/replay.jsonl")[0];
        let wire = hex::decode(v["wire_hex"].as_str().unwrap()).unwrap();
        // The pair is a startup message: accepted (ACKed, agent pending) once.
        let s = udp_from("127.0.0.1".parse().unwrap()).await;
        s.send_to(&wire, c.addr).await.unwrap();
        assert!(
            udp_reply(&s, Duration::from_secs(3)).await.is_some(),
            "first copy ACKed"
        );
        s.send_to(&wire, c.addr).await.unwrap();
        assert_eq!(
            udp_reply(&s, Duration::from_millis(500)).await,
            None,
            "replay not ACKed"
        );
        let mut t = TcpAgent::connect("127.0.0.1".parse().unwrap(), c.addr).await;
        t.send(&wire).await;
        assert_eq!(
            t.reply(Duration::from_millis(500)).await,
            None,
            "replay over TCP not ACKed"
        );
        assert_eq!(
            c.running
                .metrics
                .acks_sent
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            c.running.metrics.rejected_total(RejectKind::Replay),
            2,
            "{backend:?}"
        );
        assert!(wait_status(&c.running.store, "001", "pending").await);
        c.running.shutdown().await.unwrap();
    }
}

/// Counters persist across a restart, and `agents reset-counters` (the real
/// command, against the running collector's database) reopens an agent
/// whose counters went backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_persist_and_reset_counters_reopens_the_agent() {
    let db = TestDb::new(Backend::Postgres).await;
    let keys = loopback_vector_keys();
    let key = agent_key(&keys, "001");
    let msg = |g: u32, l: u32, text: &str| {
        let h = Header {
            rand: 7,
            global_counter: g,
            local_counter: l,
        };
        encode(
            &key,
            Sealing::Blowfish,
            Some("001"),
            h,
            format!("1:test:{text}").as_bytes(),
        )
        .unwrap()
    };
    let s = udp_from("127.0.0.1".parse().unwrap()).await;
    let c = start(&keys, &db, |_| {}).await;
    s.send_to(&msg(100, 5, "first"), c.addr).await.unwrap();
    wait_events(&c.running.store, 1).await;
    c.running.shutdown().await.unwrap();

    // After a restart the window stays closed: an older message is a replay.
    let c = start(&keys, &db, |_| {}).await;
    s.send_to(&msg(100, 5, "replayed after restart"), c.addr)
        .await
        .unwrap();
    s.send_to(&msg(3, 1, "reinstalled agent"), c.addr)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.running.metrics.rejected_total(RejectKind::Replay), 2);
    assert_eq!(
        count(&c.running.store, "SELECT COUNT(*) FROM events").await,
        1
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .args(["agents", "reset-counters", "001", "--database-url", &db.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("001"));
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .args(["agents", "reset-counters", "999", "--database-url", &db.url])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));

    // The running collector picks the request up within a couple of seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut l = 2;
    while count(&c.running.store, "SELECT COUNT(*) FROM events").await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reset-counters was not applied"
        );
        s.send_to(&msg(3, l, "after reset"), c.addr).await.unwrap();
        l += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    c.running.shutdown().await.unwrap();
}
