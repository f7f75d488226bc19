//! The offline tools through the real executable: every shared vector
//! through `decode` (agent→manager by prefix or --source-ip, manager→agent
//! with --agent), negatives as error objects with exit 1, TCP streams,
//! `keys derive` and `keys check`.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn run(args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn keys_path() -> String {
    repo("testdata/vectors/client.keys").display().to_string()
}

#[test]
fn decode_prints_every_vector_exactly() {
    for v in jsonl("testdata/vectors/vectors.jsonl") {
        let name = v["name"].as_str().unwrap();
        let hex = v["wire_hex"].as_str().unwrap();
        let kp = keys_path();
        let mut args = vec!["decode", "--keys", kp.as_str(), "--hex", hex];
        let agent = v["agent_id"].as_str().unwrap().to_owned();
        if v["direction"] == "manager->agent" {
            args.extend(["--agent", agent.as_str()]);
        }
        if let Some(ip) = v["source_ip"].as_str() {
            args.extend(["--source-ip", ip]);
        }
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{name}: {err} {out:?}");
        let o = &out[0];
        let e = &v["expect"];
        assert_eq!(o["agent_id"], v["agent_id"], "{name}");
        assert_eq!(o["agent_name"], v["agent_name"], "{name}");
        assert_eq!(o["cipher"], v["cipher"], "{name}");
        assert_eq!(o["aes_iv"], v["aes_iv"], "{name}");
        assert_eq!(o["payload"], e["payload"], "{name}");
        assert_eq!(o["rand"], e["rand"], "{name}");
        assert_eq!(o["global_counter"], e["global_counter"], "{name}");
        assert_eq!(o["local_counter"], e["local_counter"], "{name}");
        let payload = e["payload"].as_str().unwrap();
        if payload.starts_with("#!-") {
            assert_eq!(o["kind"], "control", "{name}");
        } else {
            assert_eq!(o["kind"], "event", "{name}");
            let (q, loc, msg) = split_event(payload);
            assert_eq!(o["queue"], q.as_str(), "{name}");
            assert_eq!(o["location"], loc.as_str(), "{name}");
            assert_eq!(o["message"], msg.as_str(), "{name}");
            assert!(o["queue_name"].is_string());
        }
        if name.ends_with("/keepalive") {
            assert_eq!(o["control"], "keepalive");
            assert!(
                o["hostname"].is_string() && o["arch"] == "x86_64",
                "{name}: {o}"
            );
            assert!(o["merged_sum"].is_string(), "{name}");
        }
        if name.ends_with("/startup") && v["producer"] == "wazuh-4.14.7-agent" {
            assert_eq!(o["version"], "v4.14.7");
        }
    }
}

#[test]
fn decode_reports_negatives_with_their_kind() {
    for v in jsonl("testdata/vectors/negative.jsonl") {
        let name = v["name"].as_str().unwrap();
        let hex = v["wire_hex"].as_str().unwrap();
        let transport = v["transport"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.bin");
        std::fs::write(&f, hex::decode(hex).unwrap()).unwrap();
        let kp = keys_path();
        let fs = f.display().to_string();
        let src = v["source_ip"].as_str().unwrap_or("192.0.2.1");
        let (code, out, err) = run(&[
            "decode",
            "--keys",
            &kp,
            "--transport",
            transport,
            "--source-ip",
            src,
            &fs,
        ]);
        assert_eq!(code, 1, "{name}: {err}");
        assert_eq!(out[0]["error"]["kind"], v["reject"], "{name}: {out:?}");
        assert!(out[0]["error"]["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
    }
    let (code, _, err) = run(&["decode", "--keys", "/nonexistent", "--hex", "00"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run(&["decode", "--keys", &keys_path()]);
    assert_eq!(code, 2, "no input is bad usage");
}

#[test]
fn decode_reads_a_captured_tcp_stream() {
    let kp = repo("testdata/captures/wazuh-agent/client.keys")
        .display()
        .to_string();
    let f = repo(
        "testdata/captures/wazuh-agent/wazuh-v3.4.0-5ee8eb62/02-blowfish-tcp-ack/tcp/conn001.bin",
    );
    let (code, out, err) = run(&[
        "decode",
        "--keys",
        &kp,
        "--transport",
        "tcp",
        &f.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let expected: Vec<_> = jsonl(
        "testdata/captures/wazuh-agent/wazuh-v3.4.0-5ee8eb62/02-blowfish-tcp-ack/decoded.jsonl",
    )
    .into_iter()
    .filter(|d| d["direction"] == "agent->server")
    .collect();
    assert_eq!(out.len(), expected.len());
    for (o, d) in out.iter().zip(&expected) {
        assert_eq!(o["payload"], d["message"]);
        assert_eq!(o["frame"], d["frame"]);
        assert_eq!(
            o["global_counter"].as_u64().unwrap(),
            d["global_counter"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        );
    }
}

#[test]
fn keys_derive_shows_every_step() {
    let out = Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .args([
            "keys",
            "derive",
            "--id",
            "001",
            "--name",
            "agent1",
            "--key",
            "a5f3c0b4d9e6a7f8c1b2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["md5_key"], "0726a4287f023ec64a67f4e9107a496d");
    assert_eq!(v["md5_name"], "83a87fd756ab57199c0bb6d5e11168cb");
    assert_eq!(v["md5_id"], "dc5c7986daef50c1e02ab09b442ee34f");
    assert_eq!(v["md5_name_id_first15"], "fda4af11475abae");
    assert_eq!(
        v["material"],
        "0726a4287f023ec64a67f4e9107a496dfda4af11475abae"
    );
    assert_eq!(v["aes_key"], "0726a4287f023ec64a67f4e9107a496d");
    assert_eq!(v["blowfish_key"], v["material"]);
}

#[test]
fn keys_check_flags_what_breaks_agents() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("client.keys");
    std::fs::write(
        &f,
        "001 web any k1\r\n002 web 10.0.0.1 k2 \n002 db 10.0.0.400 k3\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .args(["keys", "check"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        ":1: warning: the key contains a CR",
        ":2: warning: duplicate agent name web",
        ":2: warning: the key has trailing spaces",
        ":3: error: unparsable address",
        ":3: error: duplicate agent ID 002",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let good = Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .args(["keys", "check"])
        .arg(repo("testdata/vectors/client.keys"))
        .output()
        .unwrap();
    assert_eq!(good.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&good.stdout).contains("8 agents, no problems found"));
}

/// A store that cannot be opened stops `serve` with ONE error line that
/// names the cause, within 3 s for a refused connection.
#[test]
fn store_errors_are_one_line_naming_the_cause() {
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = admin_url();
    let (base, _) = admin.rsplit_once('/').unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("postgres://postgres@127.0.0.1:{free_port}/x"),
            "connection refused",
        ),
        (
            format!("{base}/oc_no_such_database"),
            "\"oc_no_such_database\" does not exist",
        ),
        (
            format!("sqlite://{}/missing-dir/x.db", dir.path().display()),
            "missing-dir does not exist",
        ),
    ];
    for (url, cause) in cases {
        let t = std::time::Instant::now();
        let (code, _, stderr) = run(&serve_args(&url));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(3),
            "{url}: took {:?}",
            t.elapsed()
        );
        assert_eq!(code, 1, "{url}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{url}: one line, got {stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(cause),
            "{url}: {stderr}"
        );
        assert_eq!(
            lines[0].matches(cause).count(),
            1,
            "cause not repeated: {stderr}"
        );
    }
}

/// `decode` says that files OR --hex are needed, and a manager reply
/// decoded without --agent names the flag that decodes it.
#[test]
fn decode_usage_and_reply_hint() {
    let kp = keys_path();
    let (code, _, stderr) = run(&["decode", "--keys", &kp]);
    assert_eq!(code, 2);
    assert!(stderr.contains("<--hex <HEX>|FILE>"), "{stderr}");
    // PROTOCOL.md §10's Blowfish ACK, a manager→agent reply without prefix.
    let reply = "3a4196e4aa256e16dbe2069b5526241f4264c99ce03cb5507266b6dd642a24ae1ffe2dadd2893cdbaab623d086af1d3bb345dc07bd985deca9d2322d4123b63edcf33d47989507a4cd";
    let (code, out, _) = run(&["decode", "--keys", &kp, "--hex", reply]);
    assert_eq!(code, 1);
    let detail = out[0]["error"]["detail"].as_str().unwrap();
    assert!(detail.contains("pass --agent ID"), "{detail}");
}

/// `serve` on the store `url`, loopback and a free port, no metrics.
fn serve_args(url: &str) -> [&str; 7] {
    [
        "serve",
        "--database-url",
        url,
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
    ]
}

/// `serve` on `url` (loopback, free port), once it logged its ready line.
fn serve_ready(url: &str) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .args(serve_args(url))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    assert!(lines.any(|l| l.unwrap().contains("ready")), "serve ready");
    // Keep reading, so that its later log lines have somewhere to go.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn terminate(mut child: std::process::Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success(), "exit 0 after SIGTERM");
}

/// A second `serve` on the same SQLite file is refused with a clear error,
/// while the `agents` commands still work on it.
#[test]
fn one_serve_per_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("one.db").display());
    let first = serve_ready(&url);
    let (code, _, stderr) = run(&serve_args(&url));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("already uses") && stderr.contains("one.db"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["agents", "add", "while-running", "--database-url", &url]);
    assert_eq!(code, 0, "{stderr}");
    terminate(first);
    // After the first one stopped, a new one starts.
    terminate(serve_ready(&url));
}

/// A closed stderr (its reader went away, as with `serve 2>&1 | head`)
/// does not crash `serve`: log lines are dropped, shutdown still exits 0.
#[test]
fn closed_stderr_does_not_crash_serve() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("pipe.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .args(serve_args(&url))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
        assert!(lines.any(|l| l.unwrap().contains("ready")));
        // Dropped here: the pipe's read end closes.
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
