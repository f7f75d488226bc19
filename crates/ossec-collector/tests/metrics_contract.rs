//! The metric names, types, labels and HELP texts of `/metrics` are a
//! contract with dashboards and alerts. `tests/fixtures/metrics-contract.txt`
//! was made from the hand-written renderer this crate had before it moved
//! to `prometheus-client` (`BLESS=1` rewrites it): every series in it must
//! still be exported with the same type, HELP text and value, and anything
//! else exported must be one of the metrics added since (named below).
//!
//! A series is keyed by its sample name (e.g. `ossec_acks_sent_total`, not
//! the OpenMetrics family `ossec_acks_sent`) and its sorted labels; `le`
//! bounds are compared as numbers (`10` and `10.0` are one bucket).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use ossec_collector::metrics::{CloseReason, Metrics, Transport};
use ossec_collector::spool::SpoolStats;
use ossec_proto::RejectKind;

/// Metrics added after the contract was recorded.
const ADDED: &[&str] = &[
    "ossec_build_info",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
    "ossec_events_data_refused_total",
];

/// A Metrics with every family holding at least one series.
// `..Default::default()` on DataCounts: the store may add outcomes.
#[allow(clippy::needless_update)]
fn populated() -> Arc<Metrics> {
    let m = Metrics::new();
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    m.received(Transport::Udp, 100);
    m.received(Transport::Tcp, 200);
    m.received(Transport::Tcp, 50);
    m.sent(Transport::Tcp, 30);
    let a: Arc<str> = "001".into();
    let b: Arc<str> = "002 \"quoted\"".into();
    for _ in 0..3 {
        m.rejected(RejectKind::Decrypt, Some(&a), peer, Transport::Udp, "x");
    }
    m.rejected(RejectKind::Replay, Some(&b), peer, Transport::Tcp, "y");
    m.rejected(RejectKind::Format, None, peer, Transport::Tcp, "z");
    m.control("keepalive");
    m.control("startup");
    m.acks_sent.fetch_add(2, Relaxed);
    m.pongs_sent.fetch_add(1, Relaxed);
    m.events_queued.fetch_add(9, Relaxed);
    m.batch_written(5, 0.003);
    m.batch_written(4, 0.7);
    m.dropped_queue_full(peer);
    m.dropped_spool_full(peer.ip());
    m.store_errors.fetch_add(1, Relaxed);
    m.tcp_accepted.fetch_add(3, Relaxed);
    m.tcp_open.fetch_add(3, Relaxed);
    m.tcp_refused.fetch_add(1, Relaxed);
    m.tcp_closed(CloseReason::Eof);
    m.key_reloads.fetch_add(1, Relaxed);
    m.key_reload_errors.fetch_add(1, Relaxed);
    m.key_sync_errors.fetch_add(1, Relaxed);
    m.counter_syncs.fetch_add(4, Relaxed);
    m.counter_sync_errors.fetch_add(1, Relaxed);
    m.jobs_leader.store(true, Relaxed);
    m.enrollment("enrolled", peer);
    m.enrollment("invalid_password", peer);
    m.proxy_rejected("missing", peer);
    m.data_written(&ossec_store::DataCounts {
        json: 1,
        eventchannel: 2,
        syslog: 3,
        json_invalid: 4,
        xml_invalid: 5,
        ..Default::default()
    });
    m.partitions_created.fetch_add(2, Relaxed);
    m.partition_rows_moved.fetch_add(10, Relaxed);
    m.retention_partitions_dropped.fetch_add(1, Relaxed);
    m.retention_rows_deleted.fetch_add(7, Relaxed);
    m.retention_rows_dropped_estimate.fetch_add(70, Relaxed);
    let sp = SpoolStats::default();
    sp.bytes.store(4096, Relaxed);
    sp.segments.store(2, Relaxed);
    sp.replayed.store(6, Relaxed);
    sp.corrupt.store(1, Relaxed);
    sp.write_errors.store(1, Relaxed);
    *m.spool.write() = Some(Arc::new(sp));
    m
}

/// One series: (type, HELP, value), by `name{sorted labels}`.
type Series = BTreeMap<String, (String, String, f64)>;

/// Parses the Prometheus text format (0.0.4) or OpenMetrics.
fn parse(text: &str) -> Series {
    let mut out = Series::new();
    let (mut family, mut kind, mut help) = (String::new(), String::new(), String::new());
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').unwrap_or((rest, ""));
            helps.insert(name.to_owned(), h.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, k) = rest.split_once(' ').unwrap();
            family = name.to_owned();
            kind = k.to_owned();
            help = helps.get(name).cloned().unwrap_or_default();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        assert!(
            name.starts_with(&family),
            "sample {name} outside its family {family}"
        );
        // The 0.0.4 text format names counters' HELP and TYPE lines with
        // `_total`, as the hand-written renderer did (OpenMetrics would not).
        if kind != "histogram" {
            assert_eq!(name, family, "# TYPE line of {name}");
        }
        assert!(helps.contains_key(&family), "no # HELP line for {family}");
        let mut labels: Vec<String> = split_labels(labels)
            .into_iter()
            .map(|(k, v)| {
                if k == "le" && v != "+Inf" {
                    format!("le=\"{}\"", v.parse::<f64>().unwrap())
                } else {
                    format!("{k}=\"{v}\"")
                }
            })
            .collect();
        labels.sort();
        let key = format!("{name}{{{}}}", labels.join(","));
        let value: f64 = value.parse().unwrap();
        out.insert(key, (kind.clone(), help.clone(), value));
    }
    out
}

/// `a="x",b="y\"z"` → pairs (values still escaped).
fn split_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut end = 0;
        let bytes = after.as_bytes();
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        out.push((
            k.trim_start_matches(',').to_owned(),
            after[..end].to_owned(),
        ));
        rest = &after[(end + 1).min(after.len())..];
    }
    out
}

fn fixture_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics-contract.txt")
}

fn write_fixture(s: &Series) -> String {
    let mut text = String::from(
        "# The /metrics contract: sample{labels}<TAB>type<TAB>value<TAB>HELP (tests/metrics_contract.rs)\n",
    );
    for (k, (kind, help, v)) in s {
        text.push_str(&format!("{k}\t{kind}\t{v}\t{help}\n"));
    }
    text
}

fn read_fixture() -> Series {
    let text = std::fs::read_to_string(fixture_path()).expect("the fixture (BLESS=1 makes it)");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut f = l.splitn(4, '\t');
            let (k, kind, v, help) = (
                f.next().unwrap(),
                f.next().unwrap(),
                f.next().unwrap(),
                f.next().unwrap_or(""),
            );
            (
                k.to_owned(),
                (kind.to_owned(), help.to_owned(), v.parse().unwrap()),
            )
        })
        .collect()
}

#[test]
fn metrics_keep_their_names_types_labels_and_help() {
    let m = populated();
    let text = m.render(
        7,
        100,
        &[
            ("never_connected", 1),
            ("pending", 2),
            ("active", 3),
            ("disconnected", 4),
        ],
    );
    let now = parse(&text);
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(fixture_path().parent().unwrap()).unwrap();
        std::fs::write(fixture_path(), write_fixture(&now)).unwrap();
        return;
    }
    let want = read_fixture();
    let mut problems = Vec::new();
    for (k, (kind, help, v)) in &want {
        match now.get(k) {
            None => problems.push(format!("missing: {k}")),
            Some((k2, h2, v2)) => {
                if k2 != kind {
                    problems.push(format!("{k}: type {k2}, was {kind}"));
                }
                if h2 != help {
                    problems.push(format!("{k}: HELP {h2:?}, was {help:?}"));
                }
                if (v2 - v).abs() > 1e-9 {
                    problems.push(format!("{k}: value {v2}, expected {v}"));
                }
            }
        }
    }
    for k in now.keys().filter(|k| !want.contains_key(*k)) {
        let name = k.split('{').next().unwrap();
        if !ADDED.contains(&name) {
            problems.push(format!("not in the contract nor added on purpose: {k}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nrendered:\n{text}",
        problems.join("\n")
    );
}
