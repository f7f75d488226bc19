//! Enrollment with the TLS key in an HSM (SoftHSM2 through PKCS#11): the
//! handshake is signed on the token, agents enroll and are ACKed, and no
//! private key file exists anywhere. Also measures enrollments/s with the
//! HSM key against a PEM key file, in one run.

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use common::*;
use ossec_agent_sim::enroll::{enroll_many, EnrollClient};
use ossec_hsm::softhsm::{Curve, TestToken};

/// Enrolls `n` agents, `parallel` at a time, over TLS 1.3; returns per second.
async fn rate(addr: SocketAddr, prefix: &str, n: usize, parallel: usize) -> f64 {
    let client = EnrollClient::new(addr, None, None, &[&rustls::version::TLS13]).unwrap();
    let names = (0..n).map(|i| format!("{prefix}-{i:04}")).collect();
    let t = Instant::now();
    let keys = enroll_many(&client, names, parallel).await.unwrap();
    assert_eq!(keys.len(), n);
    n as f64 / t.elapsed().as_secs_f64()
}

fn no_private_key_file(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            no_private_key_file(&p);
        } else {
            let text = std::fs::read(&p).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&text).contains("PRIVATE KEY"),
                "{} holds a private key",
                p.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_key_signs_enrollment_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let token = TestToken::create(dir.path(), "collector", "1234").unwrap();
    token.generate_ec_key("enroll", Curve::P256).unwrap();
    let pin = dir.path().join("pin");
    token.write_pin_file(&pin).unwrap();
    let db = TestDb::new(Backend::Sqlite).await;
    let c = start("", &db, |a| {
        a.enroll_listen = Some("127.0.0.1:0".into());
        a.enroll_key_pkcs11 = Some(token.uri("enroll"));
        a.enroll_pin_file = Some(pin.clone());
        a.enroll_rate_per_ip = Some(0);
    })
    .await;
    let addr = c.running.enroll_addr.unwrap();
    // TLS 1.2 and 1.3 both complete with the token's signature.
    for v in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = EnrollClient::new(addr, None, None, &[v]).unwrap();
        let k = client
            .enroll(
                &format!("hsm-{:?}", v.version).replace(['(', ')'], ""),
                &[],
                None,
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("{v:?}: {e:#}"));
        assert_eq!(k.key.len(), 64);
    }
    let hsm_rate = rate(addr, "hsm-rate", 200, 16).await;
    // The store's directory and the token's hold no private key file.
    let store_dir = std::path::Path::new(db.url.trim_start_matches("sqlite://"))
        .parent()
        .unwrap()
        .to_owned();
    assert!(!store_dir.join("sslmanager.key").exists());
    no_private_key_file(&store_dir);
    no_private_key_file(dir.path());
    c.running.shutdown().await.unwrap();

    // The same with a PEM key file, for the ratio.
    let db2 = TestDb::new(Backend::Sqlite).await;
    let c2 = start("", &db2, |a| {
        a.enroll_listen = Some("127.0.0.1:0".into());
        a.enroll_rate_per_ip = Some(0);
    })
    .await;
    let file_rate = rate(c2.running.enroll_addr.unwrap(), "file-rate", 200, 16).await;
    c2.running.shutdown().await.unwrap();
    eprintln!(
        "enrollments/s, TLS 1.3, 200 agents 16 at a time, SQLite: HSM (SoftHSM2 P-256) {hsm_rate:.0}, PEM file key {file_rate:.0}"
    );
}
