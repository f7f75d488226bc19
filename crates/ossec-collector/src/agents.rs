//! Per-agent state: receive counters, status, what the agent told us, and
//! which TCP connection it is bound to; plus the current key set.
//!
//! Owns the [`AgentTable`]: the loaded `client.keys` together with one
//! [`Agent`] per entry, swapped atomically on key reload (unchanged agents
//! keep their state). The state is written to the store by the writer from
//! two flags: `dirty` (status, what a control message told, address or
//! cipher changed: written within a second) and `touched` (only the
//! receive counters and `last_seen` moved, as on every event: written every
//! few seconds, so that a busy fleet does not rewrite its `agents` rows on
//! every event). Nothing here does I/O.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use ossec_proto::payload::Keepalive;
use ossec_proto::{AesIv, Cipher, ClientKeys, RejectKind};
use ossec_store::{AgentRecord, AgentStatus, CounterRow};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// What the collector knows about one agent.
#[derive(Debug, Default)]
pub struct AgentState {
    pub record: AgentRecord,
    /// The TCP connection the agent is bound to (by its last control
    /// message), and how to tell that connection to close.
    pub tcp_conn: Option<(u64, Arc<Notify>)>,
    /// Whether "counters went backwards" was already logged.
    pub backwards_logged: bool,
    /// `record.last_ip` as an address, to compare without formatting.
    pub last_ip: Option<IpAddr>,
    /// When this process last accepted a message from the agent or read
    /// its counters from the store (Unix µs; 0: never). Older than
    /// `--counter-sync-ms`: the counters are read again before the next
    /// message is accepted, since another collector may have heard it.
    pub fresh_at: i64,
    /// Whether `record.recv_epoch` is the store's (false after a new key
    /// or a counter reset, until the counters are read again).
    pub epoch_known: bool,
    /// When the counters were last read (or tried) for `epoch_known`.
    pub sync_tried_at: i64,
    /// The manager's counter of the last reply sent to this agent.
    pub sent: Option<ossec_proto::SenderCounter>,
    /// Events accepted in the last hour, for the status page.
    pub activity: Activity,
}

/// Events accepted from one agent over the last hour, in twelve 5-minute
/// slots (a ring indexed by the slot number). Counting is a division and an
/// add under the agent's lock, which the ingest path holds anyway; the sum
/// covers the current slot and the 11 before it (55 to 60 minutes).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Activity {
    /// The slot (Unix time / [`Activity::SLOT_US`]) of the newest count.
    slot: i64,
    counts: [u32; Activity::SLOTS],
}

impl Activity {
    pub const SLOTS: usize = 12;
    pub const SLOT_US: i64 = 300_000_000;

    /// One event accepted at `now` (Unix µs). A clock that went back
    /// counts into the newest slot.
    #[inline]
    pub fn event(&mut self, now: i64) {
        let slot = now.div_euclid(Self::SLOT_US);
        if slot > self.slot {
            self.advance(slot);
        }
        let c = &mut self.counts[self.slot.rem_euclid(Self::SLOTS as i64) as usize];
        *c = c.saturating_add(1);
    }

    #[cold]
    fn advance(&mut self, slot: i64) {
        if slot - self.slot >= Self::SLOTS as i64 {
            self.counts = [0; Self::SLOTS];
        } else {
            for s in self.slot + 1..=slot {
                self.counts[s.rem_euclid(Self::SLOTS as i64) as usize] = 0;
            }
        }
        self.slot = slot;
    }

    /// Events in the hour up to `now`.
    pub fn last_hour(&self, now: i64) -> u64 {
        let slot = now.div_euclid(Self::SLOT_US).max(self.slot);
        let oldest = slot - (Self::SLOTS as i64 - 1);
        (oldest.max(self.slot - (Self::SLOTS as i64 - 1))..=self.slot)
            .map(|s| u64::from(self.counts[s.rem_euclid(Self::SLOTS as i64) as usize]))
            .sum()
    }
}

/// One agent of client.keys.
#[derive(Debug)]
pub struct Agent {
    pub id: Arc<str>,
    pub name: Arc<str>,
    pub state: Mutex<AgentState>,
    /// Set when `state.record` changed in a way worth storing at once.
    pub dirty: AtomicBool,
    /// Set when only the counters and `last_seen` changed.
    pub touched: AtomicBool,
    /// Set when the receive counters moved since the last counter write
    /// (written every half `--counter-sync-ms` for the other collectors).
    pub counters_moved: AtomicBool,
    /// Set when a control message moved the counters since the last spool
    /// sync (events carry their counters into the spool themselves).
    pub spool_moved: AtomicBool,
    /// The last message of this agent that was rejected: `(Unix seconds
    /// << 8) | (RejectKind index + 1)`, 0 for none. One store per reject,
    /// no lock (a flood of bad messages must not contend with good ones).
    last_reject: AtomicU64,
}

impl Agent {
    fn new(id: &str, name: &str, record: AgentRecord, epoch_known: bool) -> Self {
        Agent {
            id: id.into(),
            name: name.into(),
            state: Mutex::new(AgentState {
                record,
                epoch_known,
                ..Default::default()
            }),
            dirty: AtomicBool::new(false),
            touched: AtomicBool::new(false),
            counters_moved: AtomicBool::new(false),
            spool_moved: AtomicBool::new(false),
            last_reject: AtomicU64::new(0),
        }
    }

    /// A message of this agent was rejected at `now` (Unix µs).
    pub fn note_reject(&self, kind: RejectKind, now: i64) {
        let secs = (now.max(0) / 1_000_000) as u64;
        self.last_reject
            .store(secs << 8 | (kind.index() as u64 + 1), Ordering::Relaxed);
    }

    /// The kind and time (Unix seconds) of the last rejected message.
    pub fn last_reject(&self) -> Option<(RejectKind, i64)> {
        let v = self.last_reject.load(Ordering::Relaxed);
        let i = (v & 0xff) as usize;
        let kind = *RejectKind::ALL.get(i.checked_sub(1)?)?;
        Some((kind, (v >> 8) as i64))
    }

    /// An agent with no stored record: counters read from the store
    /// before its first message is accepted.
    fn unknown(id: &str, name: &str) -> Self {
        let record = AgentRecord {
            id: id.to_owned(),
            ..Default::default()
        };
        Agent::new(id, name, record, false)
    }

    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Counters / `last_seen` moved. Checked before storing: on every event
    /// the flag is usually set already, and a load is cheaper than a store
    /// to a cache line other threads read.
    pub fn mark_touched(&self) {
        if !self.touched.load(Ordering::Relaxed) {
            self.touched.store(true, Ordering::Release);
        }
    }

    /// The receive counters moved (as `mark_touched`, load before store).
    pub fn mark_counters_moved(&self) {
        if !self.counters_moved.load(Ordering::Relaxed) {
            self.counters_moved.store(true, Ordering::Release);
        }
    }
}

/// `client.keys` and the agents, index-aligned with `keys.entries()`.
pub struct KeySet {
    pub keys: ClientKeys,
    pub agents: Vec<Arc<Agent>>,
}

/// The current key set, replaced as a whole on reload.
pub struct AgentTable {
    current: ArcSwap<KeySet>,
}

impl AgentTable {
    /// Builds the table, restoring each agent's stored record.
    pub fn new(keys: ClientKeys, stored: Vec<AgentRecord>) -> Self {
        let mut by_id: std::collections::HashMap<String, AgentRecord> =
            stored.into_iter().map(|r| (r.id.clone(), r)).collect();
        let agents = keys
            .entries()
            .iter()
            .map(|e| match by_id.remove(&e.id) {
                Some(record) => Arc::new(Agent::new(&e.id, &e.name, record, true)),
                None => Arc::new(Agent::unknown(&e.id, &e.name)),
            })
            .collect();
        AgentTable {
            current: ArcSwap::from_pointee(KeySet { keys, agents }),
        }
    }

    pub fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    pub fn snapshot(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Replaces the keys. An agent whose ID, name and key are unchanged
    /// keeps its state; an agent whose name or key changed starts with
    /// fresh counters (a re-registered agent starts counting again), read
    /// from the store before its first message is accepted (the new key
    /// started a new counter epoch there).
    /// Returns (added, removed, changed) counts.
    pub fn reload(&self, keys: ClientKeys) -> (usize, usize, usize) {
        let old = self.current.load_full();
        let (mut added, mut changed) = (0, 0);
        let agents: Vec<Arc<Agent>> = keys
            .entries()
            .iter()
            .map(|e| match old.keys.index_of_id(&e.id) {
                Some(i) => {
                    let oe = &old.keys.entries()[i];
                    let oa = &old.agents[i];
                    if oe.name == e.name && oe.key == e.key {
                        oa.clone()
                    } else {
                        changed += 1;
                        let st = oa.state.lock();
                        let mut record = st.record.clone();
                        record.recv = None;
                        let a = Arc::new(Agent::new(&e.id, &e.name, record, false));
                        a.mark_dirty();
                        a
                    }
                }
                None => {
                    added += 1;
                    Arc::new(Agent::unknown(&e.id, &e.name))
                }
            })
            .collect();
        let removed = old
            .keys
            .entries()
            .iter()
            .filter(|e| keys.index_of_id(&e.id).is_none())
            .count();
        // Connections bound to removed or re-keyed agents are closed.
        for (i, e) in old.keys.entries().iter().enumerate() {
            let keep = keys
                .index_of_id(&e.id)
                .map(|j| Arc::ptr_eq(&agents[j], &old.agents[i]))
                .unwrap_or(false);
            if !keep {
                if let Some((_, n)) = old.agents[i].state.lock().tcp_conn.take() {
                    n.notify_one();
                }
            }
        }
        self.current.store(Arc::new(KeySet { keys, agents }));
        (added, removed, changed)
    }

    /// Counts agents by status.
    pub fn by_status(&self) -> Vec<(&'static str, u64)> {
        let set = self.current.load();
        let mut counts = [0u64; 4];
        for a in &set.agents {
            let s = a.state.lock().record.status;
            counts[AgentStatus::ALL.iter().position(|x| *x == s).unwrap_or(0)] += 1;
        }
        AgentStatus::ALL
            .iter()
            .zip(counts)
            .map(|(s, n)| (s.as_str(), n))
            .collect()
    }

    /// Applies the disconnect sweep (run by whichever collector holds the
    /// cluster jobs' lock) to the agents this process knows.
    pub fn mark_disconnected(&self, marked: &[String]) {
        let set = self.current.load();
        for id in marked {
            let Some(i) = set.keys.index_of_id(id) else {
                continue;
            };
            let a = &set.agents[i];
            a.state.lock().record.status = AgentStatus::Disconnected;
            tracing::info!(agent = %a.id, name = %a.name, "agent disconnected: no keepalive within --disconnect-after");
        }
    }

    /// The counters that control messages moved since the last call, for
    /// the spool.
    pub fn take_spool_counters(&self) -> Vec<(Arc<str>, (u32, u32))> {
        let set = self.current.load();
        set.agents
            .iter()
            .filter(|a| a.spool_moved.swap(false, Ordering::AcqRel))
            .filter_map(|a| a.state.lock().record.recv.map(|c| (a.id.clone(), c)))
            .collect()
    }

    /// Raises receive counters to those recovered from the spool (what was
    /// accepted before a crash but may not be in the store). Returns how
    /// many agents moved.
    pub fn raise_counters(
        &self,
        recovered: &std::collections::HashMap<String, (u32, u32)>,
    ) -> usize {
        let set = self.current.load();
        let mut n = 0;
        for (id, c) in recovered {
            let Some(i) = set.keys.index_of_id(id) else {
                continue;
            };
            let a = &set.agents[i];
            let mut st = a.state.lock();
            if ossec_proto::replay_verdict(st.record.recv, *c) == ossec_proto::ReplayVerdict::Accept
            {
                st.record.recv = Some(*c);
                drop(st);
                a.mark_counters_moved();
                a.mark_touched();
                n += 1;
            }
        }
        n
    }

    /// Takes the receive counters that moved since the last call (of
    /// agents whose counter epoch is the store's).
    pub fn take_counters(&self) -> Vec<CounterRow> {
        let set = self.current.load();
        set.agents
            .iter()
            .filter(|a| a.counters_moved.swap(false, Ordering::AcqRel))
            .filter_map(|a| {
                let st = a.state.lock();
                st.epoch_known.then(|| CounterRow {
                    id: a.id.to_string(),
                    epoch: st.record.recv_epoch,
                    recv: st.record.recv,
                })
            })
            .collect()
    }

    /// Takes the records of agents marked dirty since the last call, and
    /// with `touched_too` also of those whose counters merely moved.
    pub fn take_dirty(&self, touched_too: bool) -> Vec<AgentRecord> {
        let set = self.current.load();
        set.agents
            .iter()
            .filter(|a| {
                let dirty = a.dirty.swap(false, Ordering::AcqRel);
                // The record taken now carries the counters too.
                let touched = (dirty || touched_too) && a.touched.swap(false, Ordering::AcqRel);
                dirty || touched
            })
            .map(|a| a.state.lock().record.clone())
            .collect()
    }

    /// Forgets an agent's receive counters (`agents reset-counters`).
    pub fn reset_counters(&self, id: &str) -> bool {
        let set = self.current.load();
        match set.keys.index_of_id(id) {
            Some(i) => {
                let a = &set.agents[i];
                let mut st = a.state.lock();
                st.record.recv = None;
                st.backwards_logged = false;
                // The reset started a new epoch in the store: read it (and
                // whatever another collector accepted since) first.
                st.epoch_known = false;
                st.sync_tried_at = 0;
                drop(st);
                a.mark_dirty();
                true
            }
            None => false,
        }
    }
}

/// Applies a keepalive to an agent record.
pub fn apply_keepalive(r: &mut AgentRecord, k: &Keepalive) {
    let set = |dst: &mut Option<String>, v: &Option<String>| {
        if v.is_some() {
            dst.clone_from(v);
        }
    };
    set(&mut r.version, &k.agent_version);
    set(&mut r.os_name, &k.os_name);
    set(&mut r.os_platform, &k.os_platform);
    set(&mut r.os_version, &k.os_version);
    set(&mut r.arch, &k.arch);
    set(&mut r.hostname, &k.hostname);
    r.uname = Some(k.uname.clone());
    r.config_sum.clone_from(&k.config_sum);
    r.merged_sum.clone_from(&k.merged_sum);
    let labels: serde_json::Map<String, serde_json::Value> = k
        .labels
        .iter()
        .map(|l| (l.key.clone(), serde_json::Value::String(l.value.clone())))
        .collect();
    r.labels = Some(serde_json::Value::Object(labels));
}

/// Records how the agent last talked to us. Called for every message, so it
/// only allocates when something changed. Returns whether anything besides
/// `last_seen` changed (first contact, address, transport, cipher, the
/// collector that hears it).
pub fn apply_contact(
    st: &mut AgentState,
    now: i64,
    ip: IpAddr,
    transport: &'static str,
    cipher: Cipher,
    aes_iv: Option<AesIv>,
    collector: &str,
) -> bool {
    st.fresh_at = now;
    let r = &mut st.record;
    let mut changed = r.first_seen.is_none();
    r.first_seen.get_or_insert(now);
    r.last_seen = Some(now);
    let ip = ip.to_canonical();
    if st.last_ip != Some(ip) {
        st.last_ip = Some(ip);
        r.last_ip = Some(ip.to_string());
        changed = true;
    }
    if r.transport.as_deref() != Some(transport) {
        r.transport = Some(transport.to_owned());
        changed = true;
    }
    if r.cipher.as_deref() != Some(cipher.as_str()) {
        r.cipher = Some(cipher.as_str().to_owned());
        changed = true;
    }
    let iv = aes_iv.map(|i| i.as_str());
    if r.aes_iv.as_deref() != iv {
        r.aes_iv = iv.map(str::to_owned);
        changed = true;
    }
    if r.collector.as_deref() != Some(collector) {
        r.collector = Some(collector.to_owned());
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> AgentTable {
        let keys = ClientKeys::parse(
            b"001 a any 0000000000000000000000000000000000000000000000000000000000000001\n\
              002 b any 0000000000000000000000000000000000000000000000000000000000000002\n",
        )
        .unwrap();
        AgentTable::new(keys, Vec::new())
    }

    #[test]
    fn events_are_stored_with_the_slow_flush_control_changes_at_once() {
        let t = table();
        let set = t.snapshot();
        let (a, b) = (&set.agents[0], &set.agents[1]);
        // Counters moved on agent a only: not in a regular flush, in the slow one.
        a.state.lock().record.recv = Some((1, 1));
        a.mark_touched();
        assert!(t.take_dirty(false).is_empty());
        let slow = t.take_dirty(true);
        assert_eq!(slow.len(), 1);
        assert_eq!(slow[0].recv, Some((1, 1)));
        assert!(t.take_dirty(true).is_empty(), "taken once");
        // A control message on b: in the next regular flush, with its counters,
        // and not again in the slow one.
        b.state.lock().record.status = AgentStatus::Active;
        b.mark_touched();
        b.mark_dirty();
        let fast = t.take_dirty(false);
        assert_eq!(fast.len(), 1);
        assert_eq!(fast[0].id, "002");
        assert_eq!(fast[0].status, AgentStatus::Active);
        assert!(t.take_dirty(true).is_empty());
    }

    #[test]
    fn activity_counts_the_last_hour() {
        let slot = Activity::SLOT_US;
        let t0 = 1_800_000_000 * 1_000_000;
        let mut a = Activity::default();
        a.event(t0);
        a.event(t0 + 1);
        assert_eq!(a.last_hour(t0 + 2), 2);
        a.event(t0 + 11 * slot);
        assert_eq!(a.last_hour(t0 + 11 * slot), 3);
        // The first slot leaves the hour.
        assert_eq!(a.last_hour(t0 + 12 * slot), 1);
        a.event(t0 + 13 * slot);
        assert_eq!(a.last_hour(t0 + 13 * slot), 2);
        // A clock that went back counts in the newest slot.
        a.event(t0);
        assert_eq!(a.last_hour(t0 + 13 * slot), 3);
        // Long silence: nothing left.
        assert_eq!(a.last_hour(t0 + 40 * slot), 0);
        a.event(t0 + 40 * slot);
        assert_eq!(a.last_hour(t0 + 40 * slot), 1);
    }

    #[test]
    fn last_reject_is_kept_per_agent() {
        let t = table();
        let a = &t.snapshot().agents[0];
        assert_eq!(a.last_reject(), None);
        a.note_reject(RejectKind::Decrypt, 1_800_000_000_500_000);
        assert_eq!(a.last_reject(), Some((RejectKind::Decrypt, 1_800_000_000)));
        a.note_reject(RejectKind::Replay, 1_800_000_001_000_000);
        assert_eq!(a.last_reject(), Some((RejectKind::Replay, 1_800_000_001)));
    }

    #[test]
    fn contact_reports_changes_other_than_last_seen() {
        let mut st = AgentState::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let fixed = Some(AesIv::Fixed);
        // (time, address, transport, cipher, AES variant) -> changed?
        let steps = [
            (1, a, "tcp", Cipher::Aes, fixed, true),
            (2, a, "tcp", Cipher::Aes, fixed, false),
            (3, b, "tcp", Cipher::Aes, fixed, true),
            (4, b, "udp", Cipher::Aes, fixed, true),
            (5, b, "udp", Cipher::Blowfish, None, true),
            (6, b, "udp", Cipher::Blowfish, None, false),
        ];
        for (now, ip, transport, cipher, iv, changed) in steps {
            assert_eq!(
                apply_contact(&mut st, now, ip, transport, cipher, iv, "c1"),
                changed,
                "at {now}"
            );
            assert_eq!(st.record.last_seen, Some(now));
        }
        assert_eq!(st.record.first_seen, Some(1));
    }
}
