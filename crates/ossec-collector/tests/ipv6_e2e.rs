//! IPv6: `--listen [::]:PORT` serves IPv6 agents and, dual-stack, IPv4
//! agents, whose `::ffff:a.b.c.d` source addresses still match IPv4
//! client.keys entries (by prefix check and by source lookup).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_and_dual_stack() {
    let db = TestDb::new(Backend::Sqlite).await;
    // 002 db-02 is bound to 127.0.0.12 and sends no prefix.
    let keys = format!(
        "{}007 v6-host ::1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
        loopback_vector_keys()
    );
    let c = start(&keys, &db, |a| {
        a.listen = Some("[::]:0".parse().unwrap());
        a.verify_counters = Some(false);
    })
    .await;
    let port = c.addr.port();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let vectors = jsonl("testdata/vectors/vectors.jsonl");
    let wire = |name: &str| {
        hex::decode(
            vectors.iter().find(|v| v["name"] == name).unwrap()["wire_hex"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    };

    // IPv6 over UDP and TCP, with the `!ID!` prefix (agent 001, `any`).
    let s6 = UdpSocket::bind("[::1]:0").await.unwrap();
    s6.send_to(&wire("w-aes-any/startup"), v6).await.unwrap();
    let r = udp_reply(&s6, Duration::from_secs(3))
        .await
        .expect("ACK over IPv6 UDP");
    assert_eq!(
        open_reply(&agent_key(&keys, "001"), &r).unwrap().0,
        b"#!-agent ack "
    );
    let mut t6 = TcpAgent::from_stream(tokio::net::TcpStream::connect(v6).await.unwrap());
    t6.send(&wire("w-bf-any/startup")).await;
    assert!(
        t6.reply(Duration::from_secs(3)).await.is_some(),
        "ACK over IPv6 TCP"
    );
    t6.send(&wire("w-bf-any/syslog")).await;

    // Dual stack: an IPv4 agent found by its source address (no prefix).
    let s4 = udp_from("127.0.0.12".parse().unwrap()).await;
    s4.send_to(&wire("w-aes-ip/startup"), v4).await.unwrap();
    assert!(
        udp_reply(&s4, Duration::from_secs(3)).await.is_some(),
        "IPv4 agent via dual-stack socket"
    );
    s4.send_to(&wire("w-aes-ip/syslog"), v4).await.unwrap();

    let rows = wait_events(&c.running.store, 2).await;
    let mut got: Vec<(String, String)> = rows.iter().map(|r| (r.0.clone(), r.8.clone())).collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("002".to_owned(), "127.0.0.12".to_owned()),
            ("005".to_owned(), "::1".to_owned())
        ]
    );
    c.running.shutdown().await.unwrap();
}
