//! Pre-sealed event streams (`--preseal`): an agent's events built and
//! sealed before the clock starts, then only written to the socket.
//!
//! Sealing an event costs the simulator more CPU than opening it costs the
//! server (zlib level 9 deflate is several times slower than inflate), so
//! on one machine a live simulator takes cores away from the server it
//! measures. A pre-sealed stream holds real messages of the agent (its key,
//! cipher, `!ID!` rule, the event mix, zlib at the chosen level), already
//! TCP-framed, under counters reserved in advance: event `i` of the stream
//! gets the sequence number `first + i * STRIDE`, so that between two
//! events there are `STRIDE - 1` unused counter values for the messages
//! that are still sealed live (startup, keepalives, shutdown, "agent
//! started", and stamped events). A live message that runs past the next
//! reserved value makes the stream skip that event (counted, never sent), so
//! the server always sees increasing counters, as from a real agent.
//!
//! Owns the stream, the counter arithmetic (`global:local` ↔ sequence
//! number) and building streams for many agents on every core.

use ossec_proto::frame::LEN_PREFIX;
use ossec_proto::SenderCounter;

use crate::agent::Agent;
use crate::events::{EventKind, Mix};

/// Counter values per pre-sealed event: the event's own and three free.
pub const STRIDE: u64 = 4;
/// With `--stamp`, one live stamped event after every this many pre-sealed
/// (the default of `--stamp-every`).
pub const STAMP_EVERY: usize = 64;
/// Largest local counter (§3.4): local runs 1..=9997.
const LOCAL_MAX: u64 = 9997;

/// The position of a counter in the agent's sequence: `0:0` (nothing sent
/// yet) is 0, `0:1` is 1, `0:9997` is 9997, `1:1` is 9998.
pub fn seq_of(c: SenderCounter) -> u64 {
    if c.local == 0 {
        u64::from(c.global) * LOCAL_MAX
    } else {
        u64::from(c.global) * LOCAL_MAX + u64::from(c.local)
    }
}

/// The counter at a position of the sequence (inverse of [`seq_of`] for
/// every counter `advance` produces).
pub fn counter_at(seq: u64) -> SenderCounter {
    if seq == 0 {
        return SenderCounter::new(0, 0);
    }
    let g = (seq - 1) / LOCAL_MAX;
    let l = (seq - 1) % LOCAL_MAX + 1;
    SenderCounter::new(g.min(u64::from(u32::MAX)) as u32, l as u32)
}

/// One agent's pre-sealed events.
pub struct Presealed {
    /// The frames, back to back: 4-byte little-endian length, then the
    /// message (the TCP framing; UDP sends each message alone).
    bytes: Vec<u8>,
    /// Where each frame ends in `bytes`.
    ends: Vec<usize>,
    kinds: Vec<EventKind>,
    /// Sequence number of event 0.
    first_seq: u64,
    /// Next event to send.
    next: usize,
    /// Events dropped because a live message used their counter.
    skipped: u64,
}

impl Presealed {
    /// Seals `n` events of `mix` for `agent` (without stamps) under counters
    /// after the agent's current one, and leaves the agent's counter where it
    /// was: the values in between are for its live messages.
    pub fn build(agent: &mut Agent, n: usize, mix: &Mix) -> Self {
        let start = agent.counter();
        let first_seq = seq_of(start) + STRIDE;
        let mut p = Presealed {
            bytes: Vec::with_capacity(n * 512),
            ends: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            first_seq,
            next: 0,
            skipped: 0,
        };
        for i in 0..n {
            // The event is sealed with the counter after this one.
            agent.set_counter(counter_at(first_seq + i as u64 * STRIDE - 1));
            let Ok((kind, wire)) = agent.next_event(mix, 0, false) else {
                // Events of the mix always seal; if one did not, the stream
                // ends here and the agent seals live from then on.
                break;
            };
            p.bytes
                .extend_from_slice(&(wire.len() as u32).to_le_bytes());
            p.bytes.extend_from_slice(&wire);
            p.ends.push(p.bytes.len());
            p.kinds.push(kind);
        }
        agent.set_counter(start);
        p.bytes.shrink_to_fit();
        p
    }

    /// Events not yet sent or skipped.
    pub fn remaining(&self) -> usize {
        self.ends.len() - self.next
    }

    /// Events sent or skipped so far.
    pub fn position(&self) -> usize {
        self.next
    }

    /// Events skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.bytes.capacity() + self.ends.capacity() * 8 + self.kinds.capacity()
    }

    fn seq(&self, i: usize) -> u64 {
        self.first_seq + i as u64 * STRIDE
    }

    /// Skips the events whose counters are not above `used`, the sequence
    /// number of a message just sealed live.
    pub fn skip_used(&mut self, used: u64) {
        while self.next < self.ends.len() && self.seq(self.next) <= used {
            self.next += 1;
            self.skipped += 1;
        }
    }

    /// The next (up to) `n` events: their frames, back to back, and kinds.
    /// Call [`Presealed::advance`] once they are sent.
    pub fn peek(&self, n: usize) -> (&[u8], &[EventKind]) {
        let end = self.next.saturating_add(n).min(self.ends.len());
        if end == self.next {
            return (&[], &[]);
        }
        let from = if self.next == 0 {
            0
        } else {
            self.ends[self.next - 1]
        };
        (
            &self.bytes[from..self.ends[end - 1]],
            &self.kinds[self.next..end],
        )
    }

    /// Counts `n` events as skipped (taken past with [`Presealed::advance`]
    /// but not sent).
    pub fn count_skipped(&mut self, n: usize) {
        self.skipped += n as u64;
    }

    /// Marks `n` events sent; returns the counter of the last one.
    pub fn advance(&mut self, n: usize) -> SenderCounter {
        self.next = self.next.saturating_add(n).min(self.ends.len());
        counter_at(self.seq(self.next.max(1) - 1))
    }

    /// Whether stream event number `n` (counting from 1) is followed by a
    /// live stamped event, with one after every `every`.
    pub fn stamp_after(n: usize, every: usize) -> bool {
        n.is_multiple_of(every.max(1))
    }
}

/// Splits a run of frames into the messages (for UDP).
pub fn messages(frames: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = frames;
    std::iter::from_fn(move || {
        let len = u32::from_le_bytes(rest.get(..LEN_PREFIX)?.try_into().ok()?) as usize;
        let m = rest.get(LEN_PREFIX..LEN_PREFIX + len)?;
        rest = &rest[LEN_PREFIX + len..];
        Some(m)
    })
}

/// Builds `per_agent` events for each agent, on every core.
pub fn build_all(agents: &mut [Agent], per_agent: usize, mix: &Mix) -> Vec<Presealed> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(agents.len().max(1));
    let chunk = agents.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = agents
            .chunks_mut(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter_mut()
                        .map(|a| Presealed::build(a, per_agent, mix))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use ossec_proto::{Cipher, ClientKeys, Decoded, Decoder};
    use rand::SeedableRng;

    use crate::agent::{generate_keys, Flavor};

    #[test]
    fn sequence_numbers_follow_the_counter() {
        let mut c = SenderCounter::new(0, 0);
        for want in 0..30_000u64 {
            assert_eq!(seq_of(c), want);
            assert_eq!(counter_at(want), c);
            c.advance();
        }
    }

    #[test]
    fn stream_counters_leave_room_for_live_messages() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let keys = Arc::new(ClientKeys::parse(generate_keys(2, &mut rng).as_bytes()).unwrap());
        let mut agent = Agent::new(keys.clone(), 1, Flavor::Wazuh, Cipher::Aes, 9);
        agent.set_zlib_level(1);
        let mut p = Presealed::build(&mut agent, 5000, &Mix::default());
        assert_eq!(p.remaining(), 5000);
        assert_eq!(
            seq_of(agent.counter()),
            0,
            "the agent's counter is untouched"
        );

        // Live startup (0:1), then 10 events, a live keepalive, the rest.
        let mut d = Decoder::new();
        let src = "127.0.0.1".parse().unwrap();
        let mut last = None;
        let mut check = |wire: &[u8], last: &mut Option<(u32, u32)>| {
            let Ok(Decoded::Message { opened, .. }) = d.decode(&keys, wire, src) else {
                panic!("does not decode");
            };
            let c = (opened.header.global_counter, opened.header.local_counter);
            assert!(Some(c) > *last, "{c:?} after {last:?}");
            *last = Some(c);
            opened.payload.len()
        };
        check(&agent.startup().unwrap(), &mut last);
        p.skip_used(seq_of(agent.counter()));
        let (frames, kinds) = p.peek(10);
        assert_eq!(kinds.len(), 10);
        assert_eq!(messages(frames).count(), 10);
        for m in messages(frames) {
            check(m, &mut last);
        }
        agent.set_counter(p.advance(10));
        // Four live messages in a row: three fit, the fourth takes the next
        // event's counter, which is then skipped.
        for _ in 0..4 {
            check(&agent.keepalive(None).unwrap(), &mut last);
            p.skip_used(seq_of(agent.counter()));
        }
        assert_eq!(p.skipped(), 1);
        let rest = p.remaining();
        let (frames, _) = p.peek(usize::MAX);
        let n = messages(frames).map(|m| check(m, &mut last)).count();
        assert_eq!(n, rest);
        assert_eq!(rest, 5000 - 10 - 1);
        p.advance(n);
        assert_eq!(p.remaining(), 0);
        assert!(p.peek(5).0.is_empty());
    }

    #[test]
    fn builds_for_many_agents_in_parallel() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(2);
        let keys = Arc::new(ClientKeys::parse(generate_keys(5, &mut rng).as_bytes()).unwrap());
        let mut agents: Vec<Agent> = (0..5)
            .map(|i| Agent::new(keys.clone(), i, Flavor::Wazuh, Cipher::Blowfish, i as u64))
            .collect();
        let streams = build_all(&mut agents, 20, &Mix::default());
        assert_eq!(streams.len(), 5);
        let mut d = Decoder::new();
        for (i, s) in streams.iter().enumerate() {
            assert_eq!(s.remaining(), 20);
            for m in messages(s.peek(20).0) {
                match d.decode(&keys, m, "127.0.0.1".parse().unwrap()) {
                    Ok(Decoded::Message { agent, .. }) => assert_eq!(agent, i),
                    other => panic!("{other:?}"),
                }
            }
        }
    }
}
