//! Per-message cost of `derive` on the four common shapes: a syscheck JSON
//! event (pass-through), a real-size Windows 4625 eventchannel event, a
//! syslog line and a plain text line without a header.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ossec_fields::{derive, Outcome};

/// One benchmarked message: name, queue, location, message, expected outcome.
struct Case<'a>(&'a str, u8, &'a [u8], &'a [u8], Outcome);

fn bench(c: &mut Criterion) {
    let syscheck: &[u8] = include_bytes!("../testdata/syscheck.json");
    let ev4625: &[u8] = include_bytes!("../testdata/eventchannel-4625.json");
    let syslog: &[u8] = b"Nov 29 10:00:01 web-01 sshd[1234]: Failed password for root from 203.0.113.9 port 4242 ssh2";
    let plain: &[u8] = b"ossec: Agent started: 'web-01->any'. Starting rootcheck scan with the default policy files.";
    let cases = [
        Case("syscheck_json", b'8', b"syscheck", syscheck, Outcome::Json),
        Case(
            "eventchannel_4625",
            b'f',
            b"EventChannel",
            ev4625,
            Outcome::EventChannel,
        ),
        Case(
            "syslog_line",
            b'1',
            b"/var/log/auth.log",
            syslog,
            Outcome::Syslog,
        ),
        Case(
            "plain_text",
            b'1',
            b"/var/ossec/logs/active-responses.log",
            plain,
            Outcome::None,
        ),
    ];
    let mut group = c.benchmark_group("derive");
    for Case(name, queue, location, message, want) in cases {
        let mut out = Vec::with_capacity(8192);
        assert_eq!(derive(queue, location, message, &mut out), want, "{name}");
        group.throughput(Throughput::Bytes(message.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                black_box(derive(queue, location, black_box(message), &mut out));
            })
        });
    }
    // Baseline for the JSON design: what parse + reserialize would cost.
    group.throughput(Throughput::Bytes(syscheck.len() as u64));
    group.bench_function("syscheck_json_serde_roundtrip_baseline", |b| {
        let mut out = Vec::with_capacity(8192);
        b.iter(|| {
            out.clear();
            let v: serde_json::Value = serde_json::from_slice(black_box(syscheck)).expect("json");
            serde_json::to_writer(&mut out, &v).expect("write");
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
