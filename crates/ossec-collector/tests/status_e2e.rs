//! Agent status in the `agents` table follows Wazuh's meaning:
//! never_connected → pending (startup) → active (keepalive) →
//! disconnected (no keepalive for --disconnect-after, or a shutdown).

mod common;

use std::time::Duration;

use common::*;
use ossec_proto::{encode, Header, Sealing};

async fn lifecycle(backend: Backend) {
    let db = TestDb::new(backend).await;
    let keys = loopback_vector_keys();
    let c = start(&keys, &db, |a| a.disconnect_after = Some(2)).await;
    let store = &c.running.store;
    let key = agent_key(&keys, "003");
    let mut local = 0;
    let mut msg = |p: &str| {
        local += 1;
        let h = Header {
            rand: 1,
            global_counter: 1,
            local_counter: local,
        };
        encode(&key, Sealing::AesFixed, Some("003"), h, p.as_bytes()).unwrap()
    };
    assert_eq!(agent_row(store, "003").await.0, "never_connected");
    let mut t = TcpAgent::connect("127.0.0.1".parse().unwrap(), c.addr).await;
    t.send(&msg("#!-agent startup {\"version\":\"v4.14.7\"}"))
        .await;
    assert!(t.reply(Duration::from_secs(3)).await.is_some());
    assert!(
        wait_status(store, "003", "pending").await,
        "pending after startup"
    );
    let keepalive = "#!-Linux |myagent |5.15.0 |#1 SMP |x86_64 [Ubuntu|ubuntu: 22.04.3 LTS] - Wazuh v4.14.7 / ab73af41699f13fdd81903b5f23d8d00\n\"team\":blue\nx merged.mg\n#\"_agent_ip\":10.0.0.9\n";
    t.send(&msg(keepalive)).await;
    assert!(t.reply(Duration::from_secs(3)).await.is_some());
    assert!(
        wait_status(store, "003", "active").await,
        "active after keepalive"
    );
    let (_, version, hostname, cipher) = agent_row(store, "003").await;
    assert_eq!(version.as_deref(), Some("Wazuh v4.14.7"));
    assert_eq!(hostname.as_deref(), Some("myagent"));
    assert_eq!(cipher.as_deref(), Some("aes"));
    // No keepalive for longer than --disconnect-after.
    assert!(
        wait_status(store, "003", "disconnected").await,
        "disconnected after silence"
    );
    // Back again, then a clean shutdown.
    t.send(&msg(keepalive)).await;
    assert!(t.reply(Duration::from_secs(3)).await.is_some());
    assert!(wait_status(store, "003", "active").await);
    t.send(&msg("#!-agent shutdown ")).await;
    assert_eq!(
        t.reply(Duration::from_millis(500)).await,
        None,
        "no ACK to shutdown"
    );
    assert!(
        wait_status(store, "003", "disconnected").await,
        "disconnected after shutdown"
    );
    // Other agents never spoke.
    assert_eq!(agent_row(store, "001").await.0, "never_connected");
    c.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lifecycle_sqlite() {
    lifecycle(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lifecycle_postgres() {
    lifecycle(Backend::Postgres).await;
}

/// With several collectors on one store, the disconnect sweep only marks an
/// agent whose stored last control message is old too: one that another
/// collector heard since (here: its row refreshed as that collector would)
/// stays `active`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_leaves_agents_another_collector_hears() {
    let db = TestDb::new(Backend::Postgres).await;
    let keys = loopback_vector_keys();
    let c = start(&keys, &db, |a| a.disconnect_after = Some(2)).await;
    let store = &c.running.store;
    let key = agent_key(&keys, "003");
    let mut t = TcpAgent::connect("127.0.0.1".parse().unwrap(), c.addr).await;
    for (local, p) in [
        (1, "#!-agent startup "),
        (
            2,
            "#!-Linux |myagent |5.15.0 |#1 SMP |x86_64 - Wazuh v4.14.7 / ab\n",
        ),
    ] {
        let h = Header {
            rand: 1,
            global_counter: 1,
            local_counter: local,
        };
        t.send(&encode(&key, Sealing::AesFixed, Some("003"), h, p.as_bytes()).unwrap())
            .await;
        assert!(t.reply(Duration::from_secs(3)).await.is_some());
    }
    assert!(wait_status(store, "003", "active").await);
    // "Collector B" hears the agent every half second from now on.
    let ossec_store::Store::Postgres(pool) = store else {
        unreachable!()
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        sqlx::query(
            "UPDATE agents SET last_control = now(), collector = 'collector-b' WHERE id = '003'",
        )
        .execute(pool)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        agent_row(store, "003").await.0,
        "active",
        "not swept: collector B hears it"
    );
    // From now on B, which hears it, is the one to sweep it.
    c.running.shutdown().await.unwrap();
}
