//! What one event costs on the ingest path, and what the status page adds
//! to it: `Ingest::handle` on an event of the simulator's mix (AES, zlib 9:
//! open, check, classify, build the row), and alone the per-agent
//! bookkeeping the page needs (`Activity::event`, counted under the agent
//! lock the path already holds; `Agent::note_reject` on a reject).
//!
//! `cargo bench -p ossec-collector --bench ingest`

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ossec_agent_sim::agent::{Agent as SimAgent, Flavor};
use ossec_agent_sim::EventKind;
use ossec_collector::agents::{Activity, AgentTable};
use ossec_collector::ingest::{Ingest, Origin};
use ossec_collector::metrics::{Metrics, Transport};
use ossec_proto::{Cipher, ClientKeys, RejectKind, SenderCounter};
use ossec_store::AgentRecord;
use rand::SeedableRng;

fn bench(c: &mut Criterion) {
    let text = ossec_agent_sim::generate_keys(1, &mut rand::rngs::SmallRng::seed_from_u64(1));
    let keys = Arc::new(ClientKeys::parse(text.as_bytes()).unwrap());
    let stored = vec![AgentRecord {
        id: "001".into(),
        ..Default::default()
    }];
    let table = Arc::new(AgentTable::new((*keys).clone(), stored));
    // Counters not checked: the same message can be handled again and again.
    let ingest = Ingest::new(
        table.clone(),
        Metrics::new(),
        false,
        SenderCounter::new(0, 0),
        "bench".into(),
        None,
    );
    let now = ossec_store::now_micros();
    let mut sim = SimAgent::new(keys, 0, Flavor::Wazuh, Cipher::Aes, 3);
    let wire = sim.event(EventKind::Syslog, now, false).unwrap();
    let origin = Origin {
        transport: Transport::Udp,
        peer: "127.0.0.1:40000".parse().unwrap(),
        conn: None,
    };
    assert!(ingest.handle(&wire, &origin, now, false).event.is_some());
    c.bench_function("ingest/handle_event", |b| {
        b.iter(|| black_box(ingest.handle(black_box(&wire), &origin, now, false)))
    });
    let mut a = Activity::default();
    let mut t = now;
    c.bench_function("status/activity_event", |b| {
        b.iter(|| {
            t += 1_000;
            a.event(black_box(t))
        })
    });
    let agent = table.snapshot().agents[0].clone();
    c.bench_function("status/note_reject", |b| {
        b.iter(|| agent.note_reject(black_box(RejectKind::Decrypt), black_box(now)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
