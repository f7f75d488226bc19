//! Two collectors on one PostgreSQL store: `agents reset-counters` reaches
//! both (the request is not taken by the first one that sees it), and a key
//! added through one store connection works on both.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use ossec_proto::{encode, Header, Sealing};

const KEY: &str =
    "003 moving any 2801fb64625a4ca5523395d8ab7370dbed275a227688542493c6577c3d9fdf2c\n";

async fn acked(addr: std::net::SocketAddr, local: u32) -> bool {
    let key = agent_key(KEY, "003");
    let h = Header {
        rand: 1,
        global_counter: 0,
        local_counter: local,
    };
    let wire = encode(
        &key,
        Sealing::AesFixed,
        Some("003"),
        h,
        b"#!-agent startup ",
    )
    .unwrap();
    let sock = udp_from("127.0.0.1".parse::<IpAddr>().unwrap()).await;
    sock.send_to(&wire, addr).await.unwrap();
    udp_reply(&sock, Duration::from_millis(600)).await.is_some()
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
