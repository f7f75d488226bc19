//! What happens to one received message, whatever the transport.
//!
//! Owns the decision chain: identify the agent, decrypt and verify, apply the
//! replay check, classify, update the agent's state, and build the event row
//! and the reply (`#!-agent ack `, `#pong`) in the agent's cipher, with the
//! manager's persisted sender counter. The listeners do the I/O around it.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ossec_proto::codec::{identify, Identified, PONG};
use ossec_proto::payload::{classify, Control, Payload, ACK};
use ossec_proto::{
    encode, AesIv, Cipher, Decoder, Header, Opened, RejectKind, ReplayVerdict, Sealing,
    SenderCounter,
};
use ossec_store::{AgentStatus, EventRow};
use parking_lot::Mutex;
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
}

/// Shared state of the ingest path.
pub struct Ingest {
    pub table: Arc<AgentTable>,
    pub metrics: Arc<Metrics>,
    pub verify_counters: bool,
    sender: Mutex<SenderCounter>,
    sender_dirty: AtomicBool,
    /// `--instance-name`, recorded as the agent's `collector`.
    pub instance: Arc<str>,
}

impl Ingest {
    pub fn new(
        table: Arc<AgentTable>,
        metrics: Arc<Metrics>,
        verify_counters: bool,
        sender: SenderCounter,
        instance: Arc<str>,
    ) -> Self {
        Ingest {
            table,
            metrics,
            verify_counters,
            sender: Mutex::new(sender),
            sender_dirty: AtomicBool::new(true),
            instance,
        }
    }

    /// The sender counter, if it changed since the last call (for persisting).
    pub fn take_sender_counter(&self) -> Option<(u32, u32)> {
        if self.sender_dirty.swap(false, Ordering::AcqRel) {
            let c = *self.sender.lock();
            Some((c.global, c.local))
        } else {
            None
        }
    }

    /// Handles one datagram or TCP frame payload received at `now` (µs).
    pub fn handle(&self, wire: &[u8], origin: &Origin, now: i64) -> Outcome {
        DECODER.with(|d| match d.try_borrow_mut() {
            Ok(mut d) => self.handle_with(&mut d, wire, origin, now),
            // Not reachable (no re-entrancy), but never panic on the hot path.
            Err(_) => self.handle_with(&mut Decoder::new(), wire, origin, now),
        })
    }

    fn handle_with(
        &self,
        decoder: &mut Decoder,
        wire: &[u8],
        origin: &Origin,
        now: i64,
    ) -> Outcome {
        let m = &self.metrics;
        let t = origin.transport;
        m.received(t, wire.len());
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
                drop(st);
                if c.wants_ack() {
                    out.reply = Some(self.reply(&entry.agent_key, &opened, ACK));
                    m.acks_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(r) => {
                drop(st);
                m.rejected(r.kind, Some(&agent.id), origin.peer, t, &r.detail);
            }
        }
        if dirty {
            agent.mark_dirty();
        } else {
            agent.mark_touched();
        }
        out
    }

    /// Seals a manager→agent message in the cipher and AES variant the agent used.
    fn reply(&self, key: &ossec_proto::AgentKey, to: &Opened<'_>, payload: &[u8]) -> Vec<u8> {
        let mut rng = rand::thread_rng();
        let sealing = match (to.cipher, to.aes_iv) {
            (Cipher::Blowfish, _) => Sealing::Blowfish,
            (Cipher::Aes, Some(AesIv::RandomPrefix)) => Sealing::AesRandom(rng.gen()),
            (Cipher::Aes, _) => Sealing::AesFixed,
        };
        let (global, local) = self.sender.lock().advance();
        self.sender_dirty.store(true, Ordering::Release);
        let header = Header {
            rand: rng.gen(),
            global_counter: global,
            local_counter: local,
        };
        // `payload` is a short constant: encoding cannot fail.
        encode(key, sealing, None, header, payload).unwrap_or_default()
    }
}
