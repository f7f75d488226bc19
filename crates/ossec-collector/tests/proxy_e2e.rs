//! PROXY protocol on the TCP listener, as behind HAProxy `send-proxy-v2`:
//! the header's address is the agent's (key lookup by IP, `source_ip`,
//! `agents.last_ip`); a peer outside `--proxy-from`, a missing, malformed
//! or slow header each close that connection only, counted by reason.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use ossec_proto::proxy::V2_SIGNATURE;
use ossec_proto::{encode, Header, Sealing};

const KEYS: &str =
    "001 lb-agent 127.0.0.77 7d0c2b7e6a1f49c3a9e8d5b4c3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4\n";

fn v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 only here")
    };
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    h.extend_from_slice(&s.octets());
    h.extend_from_slice(&d.octets());
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

fn wire(id: Option<&str>, local: u32, payload: &str) -> Vec<u8> {
    let key = agent_key(KEYS, "001");
    let h = Header {
        rand: 5,
        global_counter: 0,
        local_counter: local,
    };
    encode(&key, Sealing::AesFixed, id, h, payload.as_bytes()).unwrap()
}

fn rejects(c: &Collector, reason: &str) -> u64 {
    c.running
        .metrics
        .proxy_rejects()
        .iter()
        .find(|(r, _)| *r == reason)
        .map(|(_, n)| *n)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_address_is_the_agents_everywhere() {
    let db = TestDb::new(Backend::Postgres).await;
    let c = start(KEYS, &db, |a| {
        a.no_udp = Some(true);
        a.proxy_protocol = Some("v2".into());
        a.proxy_from = Some("127.0.0.1/32".into());
        a.instance_name = Some("replica-a".into());
    })
    .await;
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let agent: SocketAddr = "127.0.0.77:40000".parse().unwrap();
    let mut a = TcpAgent::connect(lo, c.addr).await;
    let mut first = v2_header(agent, c.addr);
    // The header and the first frame in one write, as HAProxy sends them.
    ossec_proto::frame::encode_frame(&wire(Some("001"), 1, "#!-agent startup "), &mut first)
        .unwrap();
    a.send_raw(&first).await.unwrap();
    assert!(
        a.reply(Duration::from_secs(3)).await.is_some(),
        "startup ACKed"
    );
    // Without `!ID!` the key is found by the header's address (127.0.0.77),
    // not the proxy's (127.0.0.1).
    a.send(&wire(None, 2, "1:/var/log/app:behind the proxy"))
        .await;
    let rows = wait_events(&c.running.store, 1).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].8, "127.0.0.77", "events.source_ip");
    assert!(wait_status(&c.running.store, "001", "pending").await);
    const Q: &str = "SELECT last_ip, collector FROM agents WHERE id = '001'";
    let (last_ip, collector): (Option<String>, Option<String>) = match &c.running.store {
        ossec_store::Store::Postgres(p) => sqlx::query_as(Q).fetch_one(p).await.unwrap(),
        ossec_store::Store::Sqlite(p) => sqlx::query_as(Q).fetch_one(p).await.unwrap(),
    };
    assert_eq!(collector.as_deref(), Some("replica-a"), "agents.collector");
    assert_eq!(last_ip.as_deref(), Some("127.0.0.77"));
    c.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_headers_close_only_their_connection() {
    let db = TestDb::new(Backend::Sqlite).await;
    let c = start(KEYS, &db, |a| {
        a.no_udp = Some(true);
        a.proxy_protocol = Some("any".into());
        a.proxy_from = Some("127.0.0.1".into());
    })
    .await;
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    // A peer that may not send headers.
    let mut stranger = TcpAgent::connect("127.0.0.2".parse().unwrap(), c.addr).await;
    stranger
        .send_raw(b"PROXY TCP4 127.0.0.77 127.0.0.1 40000 1514\r\n")
        .await
        .unwrap();
    assert!(stranger.closed(Duration::from_secs(3)).await);
    // No header: agent data straight away.
    let mut plain = TcpAgent::connect(lo, c.addr).await;
    plain.send(&wire(Some("001"), 1, "#!-agent startup ")).await;
    assert!(plain.closed(Duration::from_secs(3)).await);
    // Broken v1 line.
    let mut broken = TcpAgent::connect(lo, c.addr).await;
    broken
        .send_raw(b"PROXY TCP4 127.0.0.77 nonsense 40000 1514\r\n")
        .await
        .unwrap();
    assert!(broken.closed(Duration::from_secs(3)).await);
    // Too slow: half a header and then nothing.
    let mut slow = TcpAgent::connect(lo, c.addr).await;
    slow.send_raw(&V2_SIGNATURE[..6]).await.unwrap();
    assert!(!slow.closed(Duration::from_secs(3)).await, "still waiting");
    assert!(
        slow.closed(Duration::from_secs(4)).await,
        "closed after the header timeout"
    );
    // A good v1 header on another connection still works meanwhile.
    let mut good = TcpAgent::connect(lo, c.addr).await;
    let mut first = b"PROXY TCP4 127.0.0.77 127.0.0.1 40000 1514\r\n".to_vec();
    ossec_proto::frame::encode_frame(&wire(None, 2, "#!-agent startup "), &mut first).unwrap();
    good.send_raw(&first).await.unwrap();
    assert!(good.reply(Duration::from_secs(3)).await.is_some());
    for (reason, n) in [
        ("untrusted_peer", 1),
        ("missing", 1),
        ("malformed", 1),
        ("timeout", 1),
    ] {
        assert_eq!(
            rejects(&c, reason),
            n,
            "{reason}: {:?}",
            c.running.metrics.proxy_rejects()
        );
    }
    c.running.shutdown().await.unwrap();
}
