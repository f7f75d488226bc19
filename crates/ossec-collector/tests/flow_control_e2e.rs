//! Flow control and connection bounds: when the store stalls, TCP agents are
//! slowed (backpressure) and lose nothing, UDP events are dropped and
//! counted; connection count and idle time are bounded; a new connection of
//! an agent takes over from its old one.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use ossec_proto::{encode, Header, Sealing};
use sqlx::Connection;
use tokio::io::AsyncWriteExt;

fn event(key: &ossec_proto::AgentKey, id: &str, local: u32, text: &str) -> Vec<u8> {
    let h = Header {
        rand: 9,
        global_counter: local / 9000,
        local_counter: local % 9000 + 1,
    };
    encode(
        key,
        Sealing::AesFixed,
        Some(id),
        h,
        format!("1:/var/log/flow.log:{text}").as_bytes(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_store_slows_tcp_without_loss_and_counts_udp_drops() {
    let db = TestDb::new(Backend::Postgres).await;
    let keys = loopback_vector_keys();
    let c = start(&keys, &db, |a| {
        // The memory-only queue: what it does when the store stalls.
        a.spool_dir = Some("off".into());
        a.queue_capacity = Some(100);
        a.batch_size = Some(50);
        // Shorter than the stall: a connection waiting for queue room is
        // not idle, and must not be closed as such when the room comes.
        a.tcp_idle_timeout = Some(1);
    })
    .await;
    // Stall the store: hold an exclusive lock on `events`.
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();

    let tcp_n = 3000u32;
    let key1 = agent_key(&keys, "001");
    let mut bytes = Vec::new();
    for i in 0..tcp_n {
        ossec_proto::frame::encode_frame(&event(&key1, "001", i, &format!("tcp {i}")), &mut bytes)
            .unwrap();
    }
    let mut t = TcpAgent::connect("127.0.0.1".parse().unwrap(), c.addr).await;
    let writer = tokio::spawn(async move {
        t.stream.write_all(&bytes).await.unwrap();
        t
    });
    let key3 = agent_key(&keys, "003");
    let udp = udp_from("127.0.0.1".parse().unwrap()).await;
    let udp_n = 400u32;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..udp_n {
        udp.send_to(&event(&key3, "003", i, &format!("udp {i}")), c.addr)
            .await
            .unwrap();
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = &c.running.metrics;
    let dropped = m.dropped_total();
    assert!(
        dropped > 0,
        "UDP events are dropped (and counted) while the queue is full"
    );
    // TCP is held back: far fewer frames read than sent.
    let read_tcp = m.received_total(ossec_collector::metrics::Transport::Tcp);
    assert!(
        read_tcp < u64::from(tcp_n),
        "TCP reading stops under backpressure ({read_tcp} of {tcp_n})"
    );
    assert_eq!(m.events_stored.load(Ordering::Relaxed), 0);
    // Stalled for well over the idle timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // The store comes back: everything TCP sent is stored, UDP minus drops.
    tx.commit().await.unwrap();
    let _t = writer.await.unwrap();
    let want = i64::from(tcp_n) + i64::from(udp_n) - dropped as i64;
    let rows = wait_events(&c.running.store, want).await;
    assert_eq!(rows.len() as i64, want);
    let tcp_rows = rows.iter().filter(|r| r.1 == "tcp").count();
    assert_eq!(tcp_rows, tcp_n as usize, "no TCP event lost");
    assert_eq!(m.dropped_total(), dropped, "no further drops");
    c.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_bounded_and_idle_ones_closed() {
    let db = TestDb::new(Backend::Sqlite).await;
    let c = start(&loopback_vector_keys(), &db, |a| {
        a.max_connections = Some(2);
        a.tcp_idle_timeout = Some(1);
    })
    .await;
    let lo = "127.0.0.1".parse().unwrap();
    let mut a = TcpAgent::connect(lo, c.addr).await;
    let mut b = TcpAgent::connect(lo, c.addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpAgent::connect(lo, c.addr).await;
    assert!(
        third.closed(Duration::from_millis(800)).await,
        "third connection refused"
    );
    assert_eq!(c.running.metrics.tcp_refused.load(Ordering::Relaxed), 1);
    // Silent for longer than --tcp-idle-timeout: closed.
    assert!(
        a.closed(Duration::from_secs(3)).await,
        "idle connection closed"
    );
    assert!(
        b.closed(Duration::from_secs(3)).await,
        "idle connection closed"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut d = TcpAgent::connect(lo, c.addr).await;
    let key = agent_key(&loopback_vector_keys(), "001");
    d.send(
        &encode(
            &key,
            Sealing::Blowfish,
            Some("001"),
            Header::default(),
            b"#!-agent startup ",
        )
        .unwrap(),
    )
    .await;
    assert!(
        d.reply(Duration::from_secs(3)).await.is_some(),
        "room again after idle connections closed"
    );
    c.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connection_takes_over_from_the_old_one() {
    let db = TestDb::new(Backend::Sqlite).await;
    let keys = loopback_vector_keys();
    let c = start(&keys, &db, |_| {}).await;
    let key = agent_key(&keys, "001");
    let msg = |l: u32, p: &str| {
        let h = Header {
            rand: 1,
            global_counter: 1,
            local_counter: l,
        };
        encode(&key, Sealing::AesFixed, Some("001"), h, p.as_bytes()).unwrap()
    };
    let lo = "127.0.0.1".parse().unwrap();
    let mut old = TcpAgent::connect(lo, c.addr).await;
    old.send(&msg(1, "#!-agent startup ")).await;
    assert!(old.reply(Duration::from_secs(3)).await.is_some());
    let mut new = TcpAgent::connect(lo, c.addr).await;
    new.send(&msg(2, "#!-agent startup ")).await;
    assert!(new.reply(Duration::from_secs(3)).await.is_some());
    assert!(
        old.closed(Duration::from_secs(3)).await,
        "old connection closed on takeover"
    );
    new.send(&msg(3, "1:/var/log/x.log:still here")).await;
    let rows = wait_events(&c.running.store, 1).await;
    assert_eq!(rows[0].5, "still here");
    assert!(!new.closed(Duration::from_millis(300)).await);
    c.running.shutdown().await.unwrap();
}
