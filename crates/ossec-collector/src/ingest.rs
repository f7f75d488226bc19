//! What happens to one received message, whatever the transport.
//!
//! Owns the decision chain: identify the agent, decrypt and verify, apply the
//! replay check, classify, update the agent's state, and build the event row
//! and the reply (`#!-agent ack `, `#pong`) in the agent's cipher, with a
//! sender counter that never goes back for that agent, across restarts and
//! collectors (clocked, `SenderCounter::advance_at`). With several
//! collectors on one store, an agent not heard here lately has its receive
//! counters read from the store first ([`Ingest::receive`]), so a message
//! another collector accepted is a replay here too. The listeners do the
//! I/O around it.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ossec_proto::codec::{identify, Identified, PONG};
use ossec_proto::payload::{classify, Control, Payload, ACK};
use ossec_proto::{
    encode, AesIv, Cipher, Decoder, Header, Opened, RejectKind, ReplayVerdict, Sealing,
    SenderCounter,
};
use ossec_store::{AgentStatus, EventRow, Store};
use rand::Rng;
use tokio::sync::Notify;

use crate::agents::{apply_contact, apply_keepalive, Agent, AgentTable};
use crate::metrics::{Metrics, Transport};

thread_local! {
    /// One decoder (inflate state and buffers) per worker thread.
    static DECODER: RefCell<Decoder> = RefCell::new(Decoder::new());
}

/// Where a message came from.
pub struct Origin {
    pub transport: Transport,
    pub peer: SocketAddr,
    /// TCP: the connection's id and its "close now" signal.
    pub conn: Option<(u64, Arc<Notify>)>,
}

/// The result of handling one message.
#[derive(Default)]
pub struct Outcome {
    /// An event to store.
    pub event: Option<EventRow>,
    /// Bytes to send back (not yet TCP-framed).
    pub reply: Option<Vec<u8>>,
    /// TCP: close the connection (the message did not decrypt).
    pub close: bool,
    /// TCP: the agent that bound itself to this connection.
    pub bound: Option<Arc<Agent>>,
    /// The agent's counters must be read from the store before its
    /// message is checked (handled inside [`Ingest::receive`]).
    sync: Option<Arc<Agent>>,
}

/// Reading receive counters from the store before accepting a message from
/// an agent this collector has not heard lately (`--counter-sync-ms`).
pub struct CounterSync {
    pub store: Store,
    /// `--counter-sync-ms` in µs; `None`: only after a new key or a
    /// counter reset (one collector on the store).
    pub window_us: Option<i64>,
}

/// How long a counter read may take before the message is checked against
/// this collector's own counters.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a failed read for an unknown epoch is retried.
const EPOCH_RETRY_US: i64 = 1_000_000;

/// Shared state of the ingest path.
pub struct Ingest {
    pub table: Arc<AgentTable>,
    pub metrics: Arc<Metrics>,
    pub verify_counters: bool,
    /// The sender counter's floor after a restart (above any persisted).
    floor: SenderCounter,
    /// The highest sender counter used (`global << 32 | local`), and the
    /// one last persisted.
    sent_max: AtomicU64,
    sent_saved: AtomicU64,
    /// `--instance-name`, recorded as the agent's `collector`.
    pub instance: Arc<str>,
    pub sync: Option<CounterSync>,
}

impl Ingest {
    pub fn new(
        table: Arc<AgentTable>,
        metrics: Arc<Metrics>,
        verify_counters: bool,
        floor: SenderCounter,
        instance: Arc<str>,
        sync: Option<CounterSync>,
    ) -> Self {
        Ingest {
            table,
            metrics,
            verify_counters,
            floor,
            sent_max: AtomicU64::new(0),
            sent_saved: AtomicU64::new(0),
            instance,
            sync,
        }
    }

    /// The highest sender counter used, if it rose since the last call
    /// (for persisting: after a restart no reply goes below it even if the
    /// clock went back).
    pub fn take_sender_counter(&self) -> Option<(u32, u32)> {
        let max = self.sent_max.load(Ordering::Acquire);
        (self.sent_saved.fetch_max(max, Ordering::AcqRel) < max)
            .then_some(((max >> 32) as u32, max as u32))
    }

    /// Handles one datagram or TCP frame payload received now: reads the
    /// agent's counters from the store first when it needs to.
    ///
    /// The store read is rare (once per agent and epoch) and its future is
    /// large: it is boxed there, so that the common path allocates nothing
    /// and the future every TCP connection holds stays small.
    pub async fn receive(&self, wire: &[u8], origin: &Origin) -> Outcome {
        let now = ossec_store::now_micros();
        let agent = {
            let mut out = self.handle(wire, origin, now, false);
            match out.sync.take() {
                Some(agent) => agent,
                None => return out,
            }
        };
        Box::pin(self.sync_counters(&agent, now)).await;
        self.handle(wire, origin, now, true)
    }

    /// Reads the agent's stored counters and merges them with ours: the
    /// newer epoch wins, within one epoch the newer counters.
    async fn sync_counters(&self, agent: &Agent, now: i64) {
        let Some(sync) = &self.sync else {
            let mut st = agent.state.lock();
            st.epoch_known = true;
            st.fresh_at = now;
            return;
        };
        let loaded = tokio::time::timeout(SYNC_TIMEOUT, sync.store.load_counters(&agent.id)).await;
        let mut st = agent.state.lock();
        st.sync_tried_at = now;
        st.fresh_at = now;
        match loaded {
            Ok(Ok(row)) => {
                self.metrics.counter_syncs.fetch_add(1, Ordering::Relaxed);
                st.epoch_known = true;
                let Some(row) = row else { return };
                let r = &mut st.record;
                if row.epoch > r.recv_epoch {
                    r.recv_epoch = row.epoch;
                    r.recv = row.recv;
                } else if row.epoch == r.recv_epoch
                    && ossec_proto::replay_verdict(r.recv, row.recv.unwrap_or_default())
                        == ReplayVerdict::Accept
                    && row.recv.is_some()
                {
                    r.recv = row.recv;
                }
            }
            Ok(Err(e)) => {
                drop(st);
                self.metrics.counter_sync_error(&agent.id, &e);
            }
            Err(_) => {
                drop(st);
                self.metrics
                    .counter_sync_error(&agent.id, &"no answer within 2 s");
            }
        }
    }

    /// Handles one message received at `now` (µs); `synced`: the agent's
    /// counters were just read, do not ask again.
    pub fn handle(&self, wire: &[u8], origin: &Origin, now: i64, synced: bool) -> Outcome {
        DECODER.with(|d| match d.try_borrow_mut() {
            Ok(mut d) => self.handle_with(&mut d, wire, origin, now, synced),
            // Not reachable (no re-entrancy), but never panic on the hot path.
            Err(_) => self.handle_with(&mut Decoder::new(), wire, origin, now, synced),
        })
    }

    /// Whether the agent's counters must be read before its message is
    /// checked: its epoch is unknown (new key, counter reset), or another
    /// collector may have heard it since this one last did.
    fn needs_sync(&self, st: &crate::agents::AgentState, now: i64) -> bool {
        (!st.epoch_known && now - st.sync_tried_at >= EPOCH_RETRY_US)
            || self
                .sync
                .as_ref()
                .and_then(|s| s.window_us)
                .is_some_and(|w| now - st.fresh_at > w)
    }

    fn handle_with(
        &self,
        decoder: &mut Decoder,
        wire: &[u8],
        origin: &Origin,
        now: i64,
        synced: bool,
    ) -> Outcome {
        let m = &self.metrics;
        let t = origin.transport;
        if !synced {
            // Counted once, not again when handled after a counter read.
            m.received(t, wire.len());
        }
        let set = self.table.current();
        let (index, sealed) = match identify(&set.keys, wire, Some(origin.peer.ip())) {
            Ok(Identified::Ping) => {
                m.pongs_sent.fetch_add(1, Ordering::Relaxed);
                return Outcome {
                    reply: Some(PONG.to_vec()),
                    ..Default::default()
                };
            }
            Ok(Identified::Sealed { agent, sealed, .. }) => (agent, sealed),
            Err(r) => {
                m.rejected(r.kind, None, origin.peer, t, &r.detail);
                return Outcome {
                    close: true,
                    ..Default::default()
                };
            }
        };
        let agent = &set.agents[index];
        let entry = &set.keys.entries()[index];
        let opened = match decoder.open(&entry.agent_key, sealed) {
            Ok(o) => o,
            Err(r) => {
                agent.note_reject(r.kind, now);
                match ossec_proto::keys::key_problem(&entry.key) {
                    Some(hint) => {
                        let detail = format!("{} ({hint})", r.detail);
                        m.rejected(r.kind, Some(&agent.id), origin.peer, t, &detail)
                    }
                    None => m.rejected(r.kind, Some(&agent.id), origin.peer, t, &r.detail),
                }
                return Outcome {
                    close: true,
                    ..Default::default()
                };
            }
        };
        let counters = (opened.header.global_counter, opened.header.local_counter);
        let mut st = agent.state.lock();
        if !synced && self.needs_sync(&st, now) {
            drop(st);
            return Outcome {
                sync: Some(agent.clone()),
                ..Default::default()
            };
        }
        let verdict = ossec_proto::replay_verdict(st.record.recv, counters);
        if self.verify_counters && verdict != ReplayVerdict::Accept {
            let stored = st.record.recv.unwrap_or_default();
            if verdict == ReplayVerdict::Backwards && !st.backwards_logged {
                st.backwards_logged = true;
                tracing::warn!(
                    agent = %agent.id,
                    name = %agent.name,
                    received = %format!("{}:{}", counters.0, counters.1),
                    stored = %format!("{}:{}", stored.0, stored.1),
                    "agent counters went backwards (agent reinstalled or its queue/rids reset?): its messages are rejected as replays until you run `ossec-collector agents reset-counters {}`",
                    agent.id
                );
            }
            drop(st);
            agent.note_reject(RejectKind::Replay, now);
            m.rejected(
                RejectKind::Replay,
                Some(&agent.id),
                origin.peer,
                t,
                "counters not newer than the last accepted message",
            );
            return Outcome::default();
        }
        st.record.recv = Some(counters);
        let contact_changed = apply_contact(
            &mut st,
            now,
            origin.peer.ip(),
            t.as_str(),
            opened.cipher,
            opened.aes_iv,
            &self.instance,
        );
        let mut out = Outcome::default();
        let mut dirty = contact_changed;
        match classify(opened.payload) {
            Ok(Payload::Event(e)) => {
                st.activity.event(now);
                drop(st);
                out.event = Some(EventRow {
                    received_at: now,
                    agent_id: agent.id.clone(),
                    agent_name: agent.name.clone(),
                    source_ip: origin.peer.ip().to_canonical(),
                    transport: t.as_str(),
                    queue: e.queue,
                    queue_name: e.queue_name(),
                    location: e.location.into_owned(),
                    message: e.message.to_vec(),
                    global_counter: counters.0,
                    local_counter: counters.1,
                });
            }
            Ok(Payload::Control(c)) => {
                dirty = true;
                agent.spool_moved.store(true, Ordering::Release);
                m.control(c.name());
                let r = &mut st.record;
                r.last_control = Some(now);
                match &c {
                    Control::Startup { version } => {
                        r.status = AgentStatus::Pending;
                        // The startup JSON (Wazuh >= 4.6) says `v4.14.7`; keepalives
                        // say `Wazuh v4.14.7`: keep one form.
                        if let Some(v) = version {
                            r.version = Some(format!("Wazuh {v}"));
                        }
                    }
                    Control::Keepalive(k) => {
                        r.status = AgentStatus::Active;
                        r.last_keepalive = Some(now);
                        apply_keepalive(r, k);
                    }
                    Control::Shutdown => r.status = AgentStatus::Disconnected,
                    Control::Request { .. } | Control::Ack | Control::Other { .. } => {}
                }
                if t == Transport::Tcp {
                    if let Some((id, notify)) = &origin.conn {
                        match &st.tcp_conn {
                            Some((old, _)) if old == id => {}
                            _ => {
                                if let Some((_, old)) = st.tcp_conn.replace((*id, notify.clone())) {
                                    old.notify_one();
                                }
                                out.bound = Some(agent.clone());
                            }
                        }
                    }
                }
                let sent = c.wants_ack().then(|| self.next_sent(&mut st, now));
                drop(st);
                if let Some(sent) = sent {
                    out.reply = Some(self.reply(&entry.agent_key, &opened, sent, ACK));
                    m.acks_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(r) => {
                drop(st);
                agent.note_reject(r.kind, now);
                m.rejected(r.kind, Some(&agent.id), origin.peer, t, &r.detail);
            }
        }
        agent.mark_counters_moved();
        if dirty {
            agent.mark_dirty();
        } else {
            agent.mark_touched();
        }
        out
    }

    /// The sender counter of the next reply to this agent: after the last
    /// one it got from us, and not below the clock and the restart floor.
    fn next_sent(&self, st: &mut crate::agents::AgentState, now: i64) -> (u32, u32) {
        let c = st.sent.get_or_insert(self.floor);
        let (g, l) = c.advance_at(now);
        self.sent_max
            .fetch_max(u64::from(g) << 32 | u64::from(l), Ordering::AcqRel);
        (g, l)
    }

    /// Seals a manager→agent message in the cipher and AES variant the agent used.
    fn reply(
        &self,
        key: &ossec_proto::AgentKey,
        to: &Opened<'_>,
        (global, local): (u32, u32),
        payload: &[u8],
    ) -> Vec<u8> {
        let mut rng = rand::thread_rng();
        let sealing = match (to.cipher, to.aes_iv) {
            (Cipher::Blowfish, _) => Sealing::Blowfish,
            (Cipher::Aes, Some(AesIv::RandomPrefix)) => Sealing::AesRandom(rng.gen()),
            (Cipher::Aes, _) => Sealing::AesFixed,
        };
        let header = Header {
            rand: rng.gen(),
            global_counter: global,
            local_counter: local,
        };
        // `payload` is a short constant: encoding cannot fail.
        encode(key, sealing, None, header, payload).unwrap_or_default()
    }
}
