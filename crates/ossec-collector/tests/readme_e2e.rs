//! Follows README.md as a new user would: a fresh clone, the README's first
//! command exactly as written (ports moved to free ones through the
//! environment, as the README's configuration reference allows), the ready
//! line, an agent added with `agents add` sending one event that lands in
//! the SQLite file next to it, then Ctrl-C (SIGINT) and exit 0.
//!
//! The clone builds into this workspace's target directory
//! (`CARGO_TARGET_DIR`), so the release build is shared with the
//! benchmark smoke run of `.ci/run` instead of made twice.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ossec_proto::{encode, ClientKeys, Header, Sealing};

/// The first `cargo run` line of the README's first ```sh block.
fn first_command(readme: &str) -> String {
    let block = readme
        .split("```sh\n")
        .nth(1)
        .expect("README has a ```sh block");
    block
        .lines()
        .find(|l| l.starts_with("cargo run"))
        .expect("the first ```sh block starts with a cargo run command")
        .split(" #")
        .next()
        .unwrap()
        .trim()
        .to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_first_command_on_a_fresh_clone() {
    let root = repo("");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let cmd = first_command(&readme);
    assert!(
        !cmd.contains("--keys"),
        "the first command must run on a machine without a Wazuh manager: {cmd}"
    );
    let dir = tempfile::tempdir().unwrap();
    let clone = dir.path().join("ossec-collector");
    let st = Command::new("git")
        .args(["clone", "-q", "--no-hardlinks"])
        .arg(&root)
        .arg(&clone)
        .status()
        .unwrap();
    assert!(st.success(), "git clone of the repository");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let port = free_port();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {cmd}"))
        .current_dir(&clone)
        .env("CARGO_TARGET_DIR", &target)
        .env("OSSEC_COLLECTOR_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "OSSEC_COLLECTOR_METRICS_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env_remove("OSSEC_COLLECTOR_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    // The first build of a fresh clone may take minutes (shared target dir).
    let deadline = Instant::now() + Duration::from_secs(1500);
    let mut seen = Vec::new();
    loop {
        let l = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no ready line; saw:\n{}", seen.join("\n")));
        let ready = l.contains("ossec-collector ready");
        seen.push(l);
        if ready {
            break;
        }
    }
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("ERROR") || l.starts_with("error:")),
        "{}",
        seen.join("\n")
    );
    let db = clone.join("ossec-collector.db");
    assert!(db.exists(), "the SQLite store is made next to the command");
    // An agent, as the README shows after the first command.
    let bin = target.join("release/ossec-collector");
    let out = Command::new(&bin)
        .args(["agents", "add", "readme-agent"])
        .current_dir(&clone)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let keys = ClientKeys::parse(line.as_bytes()).unwrap();
    let e = &keys.entries()[0];
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let sock = udp_from("127.0.0.1".parse::<IpAddr>().unwrap()).await;
    let started = Instant::now();
    let mut local = 0;
    let url = format!("sqlite://{}", db.display());
    let store = ossec_store::Store::connect(&url).await.unwrap();
    loop {
        local += 1;
        let h = Header {
            rand: 1,
            global_counter: 0,
            local_counter: local,
        };
        let wire = encode(
            &e.agent_key,
            Sealing::AesFixed,
            Some(&e.id),
            h,
            b"1:/var/log/readme:hello from the README",
        )
        .unwrap();
        sock.send_to(&wire, server).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        if count(
            &store,
            "SELECT COUNT(*) FROM events WHERE message = 'hello from the README'",
        )
        .await
            > 0
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the event is stored within the 2 s a key takes to apply"
        );
    }
    store.close().await;
    // Ctrl-C.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "no exit after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}
