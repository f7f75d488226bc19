//! Per-event cost of the simulator's default event mix on both sides of the
//! wire: building the text, sealing it (zlib level 9 like real agents, and
//! level 1), and the collector's decoder opening it. The events are those
//! the benchmarks send (`docs/benchmarks.md`), so these figures explain the
//! end-to-end CPU per event.
//!
//! ```text
//! cargo bench -p ossec-agent-sim --bench mix -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Throughput is one event per iteration (criterion's `elem/s`), averaged
//! over 1,000 events of the mix.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ossec_agent_sim::{generate_keys, Agent, Flavor, Mix};
use ossec_proto::{Cipher, ClientKeys, Decoded, Decoder};
use rand::SeedableRng;

const EVENTS: usize = 1000;
const NOW_US: i64 = 1_795_995_692_315_517;

fn agent(level: u32) -> (Arc<ClientKeys>, Agent) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let keys = Arc::new(ClientKeys::parse(generate_keys(1, &mut rng).as_bytes()).expect("keys"));
    let mut a = Agent::new(keys.clone(), 0, Flavor::Wazuh, Cipher::Aes, 1);
    a.set_zlib_level(level);
    (keys, a)
}

fn bench(c: &mut Criterion) {
    let mix = Mix::default();
    let source: IpAddr = "127.0.0.1".parse().unwrap();
    let mut g = c.benchmark_group("mix");
    g.throughput(Throughput::Elements(EVENTS as u64));
    for level in [9u32, 1] {
        let (keys, mut a) = agent(level);
        let wires: Vec<Vec<u8>> = (0..EVENTS)
            .map(|_| a.next_event(&mix, NOW_US, true).expect("seal").1)
            .collect();
        let plain: usize = {
            let mut d = Decoder::new();
            wires
                .iter()
                .map(|w| match d.decode(&keys, w, source) {
                    Ok(Decoded::Message { opened, .. }) => opened.payload.len(),
                    other => panic!("does not decode: {other:?}"),
                })
                .sum()
        };
        let wire: usize = wires.iter().map(Vec::len).sum();
        eprintln!(
            "level {level}: {EVENTS} events, {} B plaintext and {} B on the wire on average",
            plain / EVENTS,
            wire / EVENTS
        );
        g.bench_function(format!("build_and_seal_level{level}"), |b| {
            b.iter(|| {
                for _ in 0..EVENTS {
                    black_box(a.next_event(&mix, NOW_US, true).expect("seal"));
                }
            })
        });
        let mut d = Decoder::new();
        g.bench_function(format!("decode_level{level}"), |b| {
            b.iter(|| {
                for w in &wires {
                    match d.decode(&keys, black_box(w), source) {
                        Ok(Decoded::Message { opened, .. }) => {
                            black_box(opened.payload.len());
                        }
                        _ => unreachable!(),
                    }
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
