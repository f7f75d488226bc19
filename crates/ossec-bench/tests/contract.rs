//! The JSON contract of `ossec-bench`: each scenario's `--smoke` run
//! succeeds and its last line is one JSON object with the fields issue #17
//! names (other tools read them), with values that say the run measured
//! something. Runs the debug build of the collector and the simulator next
//! to `ossec-bench` (built here first when missing).

use std::process::Command;

use serde_json::Value;

fn bench() -> &'static str {
    env!("CARGO_BIN_EXE_ossec-bench")
}

/// Builds the collector and the simulator into the same target directory
/// as this `ossec-bench` (a no-op when `cargo nextest run --workspace` has
/// built them already).
fn build_siblings() {
    let profile_dir = std::path::Path::new(bench())
        .parent()
        .expect("ossec-bench has a directory");
    if profile_dir.join("ossec-collector").exists() && profile_dir.join("ossec-agent-sim").exists()
    {
        return;
    }
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "ossec-collector",
            "-p",
            "ossec-agent-sim",
            "--bins",
        ])
        .status()
        .expect("running cargo build");
    assert!(
        status.success(),
        "cargo build of the collector and the simulator failed"
    );
}

/// Runs `ossec-bench <args>` into a temporary directory; the last stdout line as JSON.
fn run(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = Command::new(bench())
        .args(args)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .expect("running ossec-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ossec-bench {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("`{k}` is missing or not a number in {v}"))
}

#[test]
fn decode_smoke_prints_the_contract() {
    let v = run(&["decode", "--smoke"]);
    for k in ["rust_msgs_per_s", "c_reference_msgs_per_s", "decode_ratio"] {
        assert!(num(&v, k) > 0.0, "{k} in {v}");
    }
    for case in ["aes_170", "aes_2k", "blowfish_170", "blowfish_2k"] {
        let c = &v["cases"][case];
        for k in ["rust_msgs_per_s", "c_reference_msgs_per_s", "decode_ratio"] {
            assert!(num(c, k) > 0.0, "cases.{case}.{k} in {v}");
        }
    }
    // The top level repeats the AES 170 B case.
    assert_eq!(v["decode_ratio"], v["cases"]["aes_170"]["decode_ratio"]);
}

#[test]
fn e2e_smoke_prints_the_contract_and_loses_nothing() {
    build_siblings();
    let v = run(&["e2e", "--smoke"]);
    for k in [
        "events_per_s",
        "events_sent",
        "events_stored",
        "pg_alone_rows_per_s",
        "e2e_ratio",
        "collector_cpu_us_per_event",
        "ack_p99_ms",
    ] {
        assert!(num(&v, k) > 0.0, "{k} in {v}");
    }
    assert_eq!(num(&v, "events_lost"), 0.0, "{v}");
    assert_eq!(v["events_sent"], v["events_stored"], "{v}");
    let ratio = num(&v, "events_per_s") / num(&v, "pg_alone_rows_per_s");
    assert!((ratio - num(&v, "e2e_ratio")).abs() < 0.01, "{v}");
}

#[test]
fn fleet_smoke_prints_the_contract() {
    build_siblings();
    let v = run(&["fleet", "--smoke"]);
    let requested = num(&v, "agents_requested");
    assert_eq!(num(&v, "agents_connected"), requested, "{v}");
    assert!(num(&v, "rss_kb_per_agent").is_finite(), "{v}");
    assert!(num(&v, "ack_max_ms") >= 0.0, "{v}");
}
