//! The simulator against the real collector (`ossec_collector::server`, in
//! process, SQLite store): every event the simulator counts as sent is a row,
//! every startup and keepalive is ACKed, nothing reconnects or fails.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ossec_agent_sim::{
    generate_keys, run, CipherChoice, Flavor, SimConfig, Summary, TransportChoice,
};
use ossec_collector::config::ServeArgs;
use ossec_proto::ClientKeys;
use rand::SeedableRng;
use sqlx::Connection;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!(
        "ossec-agent-sim-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

/// Runs `tune(cfg)` against a fresh collector; returns the summary, the
/// stored events per transport and how many carry a stamp (after the
/// collector's graceful shutdown).
/// The collector gets its own runtime (two threads), as in production, so
/// that busy simulated agents cannot starve it.
fn against_serve(
    name: &str,
    agents: usize,
    tune: impl FnOnce(&mut SimConfig),
) -> (Summary, i64, i64, i64) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let d = dir(name);
    let keys_path = d.0.join("client.keys");
    let text = generate_keys(agents, &mut rand::rngs::StdRng::seed_from_u64(11));
    std::fs::write(&keys_path, &text).unwrap();
    let db = d.0.join("events.db");
    let url = format!("sqlite://{}", db.display());
    let settings = ServeArgs {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        keys: Some(keys_path),
        database_url: Some(url.clone()),
        metrics_listen: Some("off".into()),
        verify_counters: Some(true),
        flush_interval_ms: Some(20),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let server_rt = runtime(2);
    let running = server_rt
        .block_on(ossec_collector::server::start(settings))
        .unwrap();
    let tcp = running.tcp_addr.unwrap();
    assert_eq!(Some(tcp), running.udp_addr, "TCP and UDP share the port");

    let keys = Arc::new(ClientKeys::parse(text.as_bytes()).unwrap());
    let mut cfg = SimConfig::new(tcp, keys);
    cfg.duration = Duration::from_secs(3);
    cfg.keepalive = Duration::from_secs(1);
    cfg.ack_timeout = Duration::from_secs(10);
    cfg.ack_grace = Duration::from_secs(3);
    cfg.stamp = true;
    cfg.seed = 5;
    tune(&mut cfg);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let summary = runtime(2).block_on(run(cfg, stop_rx)).unwrap();

    server_rt.block_on(running.shutdown()).unwrap();
    server_rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let count = |t: &'static str| {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE transport = ?")
                .bind(t)
        };
        let tcp_rows = count("tcp").fetch_one(&mut c).await.unwrap();
        let udp_rows = count("udp").fetch_one(&mut c).await.unwrap();
        let stamped: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE message LIKE '%stamp=1%' OR message LIKE '%\"stamp\":1%'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
        (summary, tcp_rows, udp_rows, stamped)
    })
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}

/// Every event is a row; live events carry their stamp.
fn check_live(s: &Summary, tcp_rows: i64, udp_rows: i64, stamped: i64) {
    check(s, tcp_rows, udp_rows);
    assert_eq!(
        stamped,
        tcp_rows + udp_rows,
        "every event carries its stamp"
    );
    assert_eq!(s.presealed + s.presealed_sent, 0);
}

fn check(s: &Summary, tcp_rows: i64, udp_rows: i64) {
    let json = serde_json::to_string_pretty(s).unwrap();
    assert!(s.sent > 0, "{json}");
    assert_eq!(s.sent_tcp as i64, tcp_rows, "TCP: rows == sent\n{json}");
    assert_eq!(s.sent_udp as i64, udp_rows, "UDP: rows == sent\n{json}");
    assert_eq!(s.sent, s.sent_tcp + s.sent_udp);
    assert_eq!(s.agents_handshaken as usize, s.agents, "{json}");
    // One startup per agent, then at least the first keepalive and one per second.
    assert!(s.keepalives_sent >= 2 * s.agents as u64, "{json}");
    assert_eq!(
        s.acked, s.control_sent,
        "every startup/keepalive ACKed\n{json}"
    );
    assert_eq!(s.missing_acks, 0, "{json}");
    assert_eq!(s.reconnects, 0, "{json}");
    assert_eq!(s.errors, 0, "{json}");
    assert_eq!(s.replies_not_ack + s.replies_out_of_order, 0, "{json}");
}

#[test]
fn wazuh_agents_over_tcp_and_udp() {
    let (s, tcp_rows, udp_rows, stamped) = against_serve("wazuh", 8, |c| {
        c.transport = TransportChoice::Mixed;
        c.cipher = CipherChoice::Mixed;
        c.eps = 400.0;
    });
    check_live(&s, tcp_rows, udp_rows, stamped);
    assert!(tcp_rows > 0 && udp_rows > 0);
    assert_eq!(s.shutdowns_sent, 8);
}

#[test]
fn ossec_agents_over_udp() {
    let (s, tcp_rows, udp_rows, stamped) = against_serve("ossec", 4, |c| {
        c.flavor = Flavor::Ossec;
        c.transport = TransportChoice::Udp;
        c.cipher = CipherChoice::Mixed;
        c.eps = 200.0;
    });
    check_live(&s, tcp_rows, udp_rows, stamped);
    assert_eq!(tcp_rows, 0);
    assert_eq!(s.shutdowns_sent, 0, "OSSEC agents never send shutdown");
}

/// As fast as possible over TCP: the collector applies backpressure and
/// still stores every event.
#[test]
fn tcp_as_fast_as_possible_loses_nothing() {
    let (s, tcp_rows, udp_rows, stamped) = against_serve("fast", 4, |c| {
        c.transport = TransportChoice::Tcp;
        c.eps = 0.0;
        c.duration = Duration::from_secs(2);
    });
    check_live(&s, tcp_rows, udp_rows, stamped);
    assert!(s.sent > 1000, "{}", s.sent);
}

/// `--preseal`, as fast as possible over TCP: every pre-sealed event the
/// simulator sends is stored (the collector verifies counters, so counters
/// of live messages between pre-sealed ones must fit), agents whose share
/// runs out stop sending events but stay connected, and every 64th
/// pre-sealed event is followed by a live stamped one.
#[test]
fn presealed_events_are_stored_like_live_ones() {
    let (s, tcp_rows, udp_rows, stamped) = against_serve("preseal-tcp", 4, |c| {
        c.transport = TransportChoice::Tcp;
        c.cipher = CipherChoice::Mixed;
        c.eps = 0.0;
        c.duration = Duration::from_secs(3);
        c.preseal = 4 * 400;
        c.zlib_level = 1;
    });
    check(&s, tcp_rows, udp_rows);
    let json = serde_json::to_string_pretty(&s).unwrap();
    assert_eq!(s.presealed, 1600, "{json}");
    assert_eq!(
        s.presealed_exhausted_agents, 4,
        "a 3 s run uses 400 events up\n{json}"
    );
    assert_eq!(s.presealed_sent + s.presealed_skipped, 1600, "{json}");
    // Live, and stamped: one "agent started" per agent and one event after
    // every 64 pre-sealed ones of an agent; pre-sealed events carry no stamp.
    let live = s.sent - s.presealed_sent;
    assert_eq!(live as i64, stamped, "{json}");
    assert_eq!(live, 4 + 4 * (400 / 64), "{json}");
    assert!(
        s.keepalives_sent >= 3 * 4,
        "keepalives continue after the events ran out\n{json}"
    );
}

/// `--preseal` at a rate over UDP and TCP with both ciphers and OSSEC's
/// random-IV AES: the same guarantees as live sealing.
#[test]
fn presealed_mixed_transports_and_flavors() {
    for flavor in [Flavor::Wazuh, Flavor::Ossec] {
        let (s, tcp_rows, udp_rows, _) = against_serve("preseal-mixed", 6, |c| {
            c.flavor = flavor;
            c.transport = match flavor {
                Flavor::Wazuh => TransportChoice::Mixed,
                Flavor::Ossec => TransportChoice::Udp,
            };
            c.cipher = CipherChoice::Mixed;
            c.eps = 600.0;
            c.preseal = 600 * 3;
        });
        check(&s, tcp_rows, udp_rows);
        let json = serde_json::to_string_pretty(&s).unwrap();
        assert!(s.presealed_sent >= 1500, "{json}");
        assert_eq!(s.presealed_skipped, 0, "{json}");
    }
}

/// `--enroll`: the simulator binary enrolls its agents over TLS (with the
/// password) as Wazuh 4.x agents do, then sends on 1514 with the returned
/// keys; every event is a row under an enrolled ID.
#[test]
fn enrolls_then_sends() {
    let d = dir("enroll");
    let pass = d.0.join("pass");
    std::fs::write(&pass, "sim-secret\n").unwrap();
    let db = d.0.join("events.db");
    let url = format!("sqlite://{}", db.display());
    let settings = ServeArgs {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        database_url: Some(url.clone()),
        metrics_listen: Some("off".into()),
        flush_interval_ms: Some(20),
        enroll_listen: Some("127.0.0.1:0".into()),
        enroll_password_file: Some(pass.clone()),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let server_rt = runtime(2);
    let running = server_rt
        .block_on(ossec_collector::server::start(settings))
        .unwrap();
    let keys_out = d.0.join("enrolled.keys");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ossec-agent-sim"))
        .args(["--enroll", &running.enroll_addr.unwrap().to_string()])
        .args(["--enroll-password-file", pass.to_str().unwrap()])
        .args(["--enroll-prefix", "simtest", "--agents", "5"])
        .args(["--server", &running.tcp_addr.unwrap().to_string()])
        .args(["--duration", "2", "--eps", "20", "--keepalive", "1"])
        .args(["--write-keys", keys_out.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("enrolled 5 agents"), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let keys = std::fs::read_to_string(&keys_out).unwrap();
    assert_eq!(keys.lines().count(), 5);
    assert!(keys.lines().all(|l| l.contains(" simtest-0")), "{keys}");
    server_rt.block_on(running.shutdown()).unwrap();
    let (rows, agents): (i64, i64) = server_rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let r = sqlx::query_as(
            "SELECT count(*), count(DISTINCT e.agent_id) FROM events e JOIN agent_keys k ON k.id = e.agent_id WHERE k.origin = 'enrollment'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
        r
    });
    assert!(summary["sent"].as_i64().unwrap() > 0, "{summary}");
    assert_eq!(rows, summary["sent"].as_i64().unwrap(), "{summary}");
    assert_eq!(agents, 5);
    assert_eq!(summary["missing_acks"], 0, "{summary}");
}
