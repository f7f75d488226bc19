//! Two collectors on one PostgreSQL store behave as one manager:
//! `agents reset-counters` reaches both (the request is not taken by the
//! first one that sees it); a message one accepted is a replay for the
//! other; an agent that moves between them (and across a restart) accepts
//! every reply, as an OSSEC agent that verifies the manager's counters; the
//! once-per-cluster jobs run on one of them and move when it stops.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use ossec_collector::config::ServeArgs;
use ossec_proto::{encode, Header, Sealing};

const KEY: &str =
    "003 moving any 2801fb64625a4ca5523395d8ab7370dbed275a227688542493c6577c3d9fdf2c\n";

fn sealed(local: u32, payload: &[u8]) -> Vec<u8> {
    let key = agent_key(KEY, "003");
    let h = Header {
        rand: 1,
        global_counter: 0,
        local_counter: local,
    };
    encode(&key, Sealing::AesFixed, Some("003"), h, payload).unwrap()
}

/// Sends `wire` over UDP and says whether a reply came.
async fn replied(addr: std::net::SocketAddr, wire: &[u8]) -> bool {
    let sock = udp_from("127.0.0.1".parse::<IpAddr>().unwrap()).await;
    sock.send_to(wire, addr).await.unwrap();
    udp_reply(&sock, Duration::from_millis(600)).await.is_some()
}

async fn acked(addr: std::net::SocketAddr, local: u32) -> bool {
    replied(addr, &sealed(local, b"#!-agent startup ")).await
}

fn replays(c: &Collector) -> u64 {
    c.running
        .metrics
        .rejected_total(ossec_proto::RejectKind::Replay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_reset_reaches_every_collector() {
    let db = TestDb::new(Backend::Postgres).await;
    let a = start(KEY, &db, |s| s.instance_name = Some("a".into())).await;
    let b = start(KEY, &db, |s| s.instance_name = Some("b".into())).await;
    // Both have accepted counter 500: 1 is a replay on both.
    assert!(acked(a.addr, 500).await && acked(b.addr, 500).await);
    assert!(!acked(a.addr, 1).await && !acked(b.addr, 1).await);
    // The agent is reinstalled; its counters start again.
    assert!(a.running.store.reset_counters("003").await.unwrap());
    let start = Instant::now();
    for (name, c) in [("a", &a), ("b", &b)] {
        let mut local = 1;
        while !acked(c.addr, local).await {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "collector {name} never applied the reset"
            );
            local += 1;
        }
    }
    a.running.shutdown().await.unwrap();
    b.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_accepted_by_one_collector_is_a_replay_for_the_other() {
    let db = TestDb::new(Backend::Postgres).await;
    let a = start(KEY, &db, |s| s.instance_name = Some("a".into())).await;
    let b = start(KEY, &db, |s| s.instance_name = Some("b".into())).await;
    // A control message accepted by a, captured and sent to b later.
    let startup = sealed(10, b"#!-agent startup ");
    assert!(replied(a.addr, &startup).await);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        !replied(b.addr, &startup).await,
        "b accepted a's message again"
    );
    assert_eq!(replays(&b), 1);
    // An event accepted by b, sent to a later: stored once.
    let event = sealed(11, b"1:/var/log/auth.log:replayed once");
    let sock = udp_from("127.0.0.1".parse::<IpAddr>().unwrap()).await;
    sock.send_to(&event, b.addr).await.unwrap();
    wait_events(&b.running.store, 1).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    sock.send_to(&event, a.addr).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while replays(&a) == 0 {
        assert!(Instant::now() < deadline, "a never rejected b's event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        count(&a.running.store, "SELECT count(*) FROM events").await,
        1
    );
    // The agent itself goes on, on either collector.
    assert!(acked(a.addr, 12).await && acked(b.addr, 13).await);
    assert_eq!((replays(&a), replays(&b)), (1, 1));
    a.running.shutdown().await.unwrap();
    b.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_moving_between_collectors_and_restarts_accepts_every_reply() {
    use ossec_agent_sim::agent::{Agent, Flavor};
    let db = TestDb::new(Backend::Postgres).await;
    let keys = std::sync::Arc::new(ossec_proto::ClientKeys::parse(KEY.as_bytes()).unwrap());
    let mut agent = Agent::new(keys, 0, Flavor::Ossec, ossec_proto::Cipher::Aes, 7);
    let mut a = start(KEY, &db, |s| s.instance_name = Some("a".into())).await;
    let b = start(KEY, &db, |s| s.instance_name = Some("b".into())).await;
    let sock = udp_from("127.0.0.1".parse::<IpAddr>().unwrap()).await;
    let mut replies = 0;
    // a, b, a, b, … with a restart of a half way; each hop is shorter than
    // a second, so the collectors' sender counters interleave closely.
    for hop in 0..12 {
        if hop == 6 {
            a.running.shutdown().await.unwrap();
            a = start(KEY, &db, |s| s.instance_name = Some("a".into())).await;
        }
        let to = if hop % 2 == 0 { a.addr } else { b.addr };
        for _ in 0..3 {
            let wire = if replies == 0 {
                agent.startup().unwrap()
            } else {
                agent.keepalive(None).unwrap()
            };
            sock.send_to(&wire, to).await.unwrap();
            let reply = udp_reply(&sock, Duration::from_secs(3))
                .await
                .unwrap_or_else(|| panic!("no ACK on hop {hop}"));
            let r = agent.check_reply(&reply).unwrap();
            assert!(r.ack, "hop {hop}: {r:?}");
            assert!(
                r.in_order,
                "hop {hop}: the reply's counters went back; an OSSEC agent drops it"
            );
            replies += 1;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(replies, 36);
    assert_eq!((replays(&a), replays(&b)), (0, 0));
    a.running.shutdown().await.unwrap();
    b.running.shutdown().await.unwrap();
}

async fn wait_metric(c: &Collector, f: impl Fn(&Collector) -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f(c) {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_jobs_run_on_one_collector_and_move_when_it_stops() {
    use std::sync::atomic::Ordering::Relaxed;
    let db = TestDb::new(Backend::Postgres).await;
    let tweak = |name: &'static str| {
        move |s: &mut ServeArgs| {
            s.instance_name = Some(name.into());
            s.disconnect_after = Some(1);
        }
    };
    let a = start(KEY, &db, tweak("a")).await;
    let leader = |c: &Collector| c.running.metrics.jobs_leader.load(Relaxed);
    wait_metric(&a, leader, "a never took the jobs lock").await;
    let b = start(KEY, &db, tweak("b")).await;
    // The agent talks to a only.
    assert!(acked(a.addr, 1).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!leader(&b), "both collectors run the jobs");
    a.running.shutdown().await.unwrap();
    let stopped = Instant::now();
    wait_metric(&b, leader, "b never took over the jobs").await;
    eprintln!("jobs moved to b {:?} after a stopped", stopped.elapsed());
    // The sweep, now on b, marks a's silent agent, which b never heard.
    // (a may have swept it already before it stopped.)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: String = sqlx::query_scalar("SELECT status FROM agents WHERE id = '003'")
            .fetch_one(match &b.running.store {
                ossec_store::Store::Postgres(p) => p,
                _ => unreachable!(),
            })
            .await
            .unwrap();
        if status == "disconnected" {
            break;
        }
        assert!(Instant::now() < deadline, "status stays {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_counters_only_move_forward_within_an_epoch() {
    use ossec_store::{AgentRecord, CounterRow, Store};
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let db = TestDb::new(backend).await;
        let store = Store::connect(&db.url).await.unwrap();
        store
            .import_file_keys(&[ossec_store::FileKey {
                id: "003".into(),
                name: "moving".into(),
                ip: "any".into(),
                key: "2801fb64625a4ca5523395d8ab7370dbed275a227688542493c6577c3d9fdf2c".into(),
                line: 1,
            }])
            .await
            .unwrap();
        let row = |epoch, recv| CounterRow {
            id: "003".into(),
            epoch,
            recv,
        };
        let stored = |s: &Store| {
            let s = s.clone();
            async move { s.load_counters("003").await.unwrap().unwrap() }
        };
        let epoch = stored(&store).await.epoch;
        store
            .save_counters(&[row(epoch, Some((5, 9)))])
            .await
            .unwrap();
        // Lower or equal counters (another collector's older news) are ignored.
        store
            .save_counters(&[row(epoch, Some((5, 8)))])
            .await
            .unwrap();
        store
            .save_counters(&[row(epoch, Some((4, 99)))])
            .await
            .unwrap();
        store.save_counters(&[row(epoch, None)]).await.unwrap();
        assert_eq!(stored(&store).await.recv, Some((5, 9)), "{backend:?}");
        // A full agent record with older counters does not lower them either.
        let rec = AgentRecord {
            id: "003".into(),
            recv: Some((1, 1)),
            recv_epoch: epoch,
            ..Default::default()
        };
        store.save_agents(&[rec]).await.unwrap();
        assert_eq!(stored(&store).await.recv, Some((5, 9)), "{backend:?}");
        store
            .save_counters(&[row(epoch, Some((5, 10)))])
            .await
            .unwrap();
        assert_eq!(stored(&store).await.recv, Some((5, 10)));
        // A reset starts a new epoch: the old epoch's writes no longer land,
        // the new epoch's low counters do.
        assert!(store.reset_counters("003").await.unwrap());
        let after = stored(&store).await;
        assert_eq!((after.epoch, after.recv), (epoch + 1, None));
        store
            .save_counters(&[row(epoch, Some((9, 9)))])
            .await
            .unwrap();
        assert_eq!(stored(&store).await.recv, None, "{backend:?}");
        store
            .save_counters(&[row(epoch + 1, Some((0, 1)))])
            .await
            .unwrap();
        assert_eq!(stored(&store).await.recv, Some((0, 1)));
        // So does a new key for the ID.
        store
            .import_file_keys(&[ossec_store::FileKey {
                id: "003".into(),
                name: "moving".into(),
                ip: "any".into(),
                key: "1111111111111111111111111111111111111111111111111111111111111111".into(),
                line: 1,
            }])
            .await
            .unwrap();
        let rekeyed = stored(&store).await;
        assert_eq!(
            (rekeyed.epoch, rekeyed.recv),
            (epoch + 2, None),
            "{backend:?}"
        );
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_added_or_removed_in_the_store_reaches_every_collector_within_2s() {
    use ossec_store::{AddOutcome, KeyOrigin, NewKey, Store};
    let db = TestDb::new(Backend::Postgres).await;
    let a = start(KEY, &db, |s| s.instance_name = Some("a".into())).await;
    let b = start(KEY, &db, |s| s.instance_name = Some("b".into())).await;
    // `agents add` from an operator's shell: its own store connection.
    let admin = Store::connect(&db.url).await.unwrap();
    let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let added = match admin
        .add_key(
            &NewKey {
                name: "newcomer".into(),
                ip: "any".into(),
                key: hex.into(),
                groups: Vec::new(),
                origin: KeyOrigin::Cli,
            },
            |_, _| false,
        )
        .await
        .unwrap()
    {
        AddOutcome::Added { key, .. } => key,
        AddOutcome::Refused(c) => panic!("refused: {c:?}"),
    };
    let line = format!("{} newcomer any {hex}\n", added.id);
    let mut local = 0;
    let startup = |local: u32| {
        encode(
            &agent_key(&line, &added.id),
            Sealing::AesFixed,
            Some(&added.id),
            Header {
                rand: 1,
                global_counter: 0,
                local_counter: local,
            },
            b"#!-agent startup ",
        )
        .unwrap()
    };
    let t0 = Instant::now();
    for (name, c) in [("a", &a), ("b", &b)] {
        loop {
            local += 1;
            if replied(c.addr, &startup(local)).await {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "{name} never saw the new key"
            );
        }
    }
    eprintln!(
        "new key ACKed by both collectors {:?} after it was added",
        t0.elapsed()
    );
    assert!(admin.remove_key(&added.id).await.unwrap().is_some());
    let t1 = Instant::now();
    for (name, c) in [("a", &a), ("b", &b)] {
        loop {
            local += 1;
            if !replied(c.addr, &startup(local)).await {
                break;
            }
            assert!(
                t1.elapsed() < Duration::from_secs(2),
                "{name} still accepts a removed key"
            );
        }
    }
    admin.close().await;
    a.running.shutdown().await.unwrap();
    b.running.shutdown().await.unwrap();
}
