//! One simulated agent, sans IO: the messages it sends and how it checks
//! what the manager answers.
//!
//! Owns the agent's protocol state (its `client.keys` entry, cipher, AES
//! variant, `!ID!` rule, sender counter, the manager's last reply counters)
//! and the builders of its messages: startup, keepalive (Wazuh 4.x or OSSEC
//! form), shutdown and events, each sealed with `ossec_proto::encode` under
//! a fresh counter and `rand`. Replies are opened with `Decoder::open` and
//! must be exactly `#!-agent ack `. The runtime ([`crate::sim`]) does the
//! sockets and timing around it.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use ossec_proto::payload::{ACK, STARTUP};
use ossec_proto::{
    parse_wire, replay_verdict, AllowedAddr, Cipher, ClientKeys, Decoder, Header, KeyEntry, Reject,
    RejectKind, ReplayVerdict, Sealing, SenderCounter, Wire,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::events::{self, EventCtx, EventKind, Mix};
use crate::seal::{self, SealKey};

/// Version the Wazuh flavor announces in its startup and keepalives.
pub const WAZUH_VERSION: &str = "v4.14.7";

/// Which agent software is simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// Wazuh 4.x: TCP or UDP, startup with `{"version":…}`, Wazuh keepalive,
    /// fixed-IV AES or Blowfish, `#!-agent shutdown ` on exit.
    Wazuh,
    /// OSSEC 3.x (Blowfish) / 4.x (AES with a random IV in front): UDP only,
    /// bare startup, keepalive with a random tail, checks reply counters.
    Ossec,
}

impl Flavor {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Wazuh => "wazuh",
            Flavor::Ossec => "ossec",
        }
    }
}

thread_local! {
    /// Inflate state and buffers for replies: one per runtime thread, never
    /// one per agent (a decoder holds ~130 KB).
    static DECODER: RefCell<Decoder> = RefCell::new(Decoder::new());
    /// Scratch text for building payloads.
    static SCRATCH: RefCell<String> = RefCell::new(String::with_capacity(8192));
}

/// A reply from the manager, opened and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The payload is exactly `#!-agent ack `.
    pub ack: bool,
    /// The manager's counters were newer than those of its previous reply
    /// (PROTOCOL.md §3.5). OSSEC agents drop replies where this is false.
    pub in_order: bool,
    /// Whether the agent acts on the reply: always for Wazuh (which does
    /// not verify counters by default), only in order for OSSEC.
    pub accepted: bool,
    /// The first bytes of the payload, for diagnostics.
    pub payload_start: String,
}

/// The protocol side of one agent.
pub struct Agent {
    keys: Arc<ClientKeys>,
    index: usize,
    flavor: Flavor,
    cipher: Cipher,
    id_prefix: bool,
    counter: SenderCounter,
    last_reply: Option<(u32, u32)>,
    rng: SmallRng,
    seal_key: SealKey,
    zlib_level: u32,
}

impl Agent {
    /// The agent of entry `index` of `keys` (shared, keys derived once).
    /// Its sender counter starts at 0:0 like a fresh install.
    pub fn new(
        keys: Arc<ClientKeys>,
        index: usize,
        flavor: Flavor,
        cipher: Cipher,
        seed: u64,
    ) -> Self {
        let entry = &keys.entries()[index];
        // Wazuh: `!ID!` unless the entry is a single IPv4 host; OSSEC: unless
        // it is a single host (§4.2).
        let id_prefix = !matches!(
            (flavor, entry.allowed),
            (Flavor::Wazuh, AllowedAddr::Host(IpAddr::V4(_)))
                | (Flavor::Ossec, AllowedAddr::Host(_))
        );
        let seal_key = SealKey::new(&entry.agent_key, cipher == Cipher::Blowfish);
        Agent {
            keys,
            index,
            flavor,
            cipher,
            id_prefix,
            counter: SenderCounter::new(0, 0),
            last_reply: None,
            rng: SmallRng::seed_from_u64(seed),
            seal_key,
            zlib_level: 9,
        }
    }

    /// zlib level of the messages (real agents: 9, the default here).
    /// Receivers must accept any level (PROTOCOL.md §13); a lower one makes
    /// the simulator cheaper when it has to produce a lot.
    pub fn set_zlib_level(&mut self, level: u32) {
        self.zlib_level = level.clamp(0, 9);
    }

    pub fn entry(&self) -> &KeyEntry {
        &self.keys.entries()[self.index]
    }

    pub fn id(&self) -> &str {
        &self.entry().id
    }

    pub fn name(&self) -> &str {
        &self.entry().name
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    pub fn id_prefix(&self) -> bool {
        self.id_prefix
    }

    /// Seals with `ossec_proto::encode` (the reference; slower), for tests.
    pub fn seal_reference(&mut self, payload: &[u8]) -> Result<Vec<u8>, Reject> {
        let sealing = self.sealing();
        let (global, local) = self.counter.advance();
        let header = Header {
            rand: self.rng.gen(),
            global_counter: global,
            local_counter: local,
        };
        let prefix = self.id_prefix.then(|| self.entry().id.clone());
        ossec_proto::encode(
            &self.entry().agent_key,
            sealing,
            prefix.as_deref(),
            header,
            payload,
        )
    }

    /// The counters of the last message sealed.
    pub fn counter(&self) -> SenderCounter {
        self.counter
    }

    /// Sets the counters of the last message sealed (the next message gets
    /// the following ones); used to keep live messages between pre-sealed
    /// ones ([`crate::preseal`]).
    pub fn set_counter(&mut self, c: SenderCounter) {
        self.counter = c;
    }

    pub fn rng(&mut self) -> &mut SmallRng {
        &mut self.rng
    }

    fn sealing(&mut self) -> Sealing {
        match (self.cipher, self.flavor) {
            (Cipher::Blowfish, _) => Sealing::Blowfish,
            (Cipher::Aes, Flavor::Wazuh) => Sealing::AesFixed,
            (Cipher::Aes, Flavor::Ossec) => Sealing::AesRandom(self.rng.gen()),
        }
    }

    /// Seals a payload the way `CreateSecMSG` does, with the next counter
    /// and a random `rand`. Returns the datagram / frame payload (not framed).
    pub fn seal(&mut self, payload: &[u8]) -> Result<Vec<u8>, Reject> {
        let sealing = self.sealing();
        let (global, local) = self.counter.advance();
        let header = Header {
            rand: self.rng.gen(),
            global_counter: global,
            local_counter: local,
        };
        let prefix = if self.id_prefix {
            Some(self.entry().id.as_str())
        } else {
            None
        };
        seal::seal(
            &self.seal_key,
            sealing,
            prefix,
            header,
            payload,
            self.zlib_level,
        )
    }

    /// The startup payload: `#!-agent startup {"version":"v4.14.7"}` (Wazuh
    /// ≥ 4.6) or `#!-agent startup ` (OSSEC).
    pub fn startup_payload(&self) -> Vec<u8> {
        let mut p = STARTUP.to_vec();
        if self.flavor == Flavor::Wazuh {
            p.extend_from_slice(format!("{{\"version\":\"{WAZUH_VERSION}\"}}").as_bytes());
        }
        p
    }

    pub fn startup(&mut self) -> Result<Vec<u8>, Reject> {
        let p = self.startup_payload();
        self.seal(&p)
    }

    /// The keepalive payload (§5.1): Wazuh's uname/labels/merged.mg/agent IP
    /// lines, or OSSEC's with a random printable tail after `\n\n` (≤ 1024 B).
    pub fn keepalive_payload(&mut self, local_ip: Option<IpAddr>) -> Vec<u8> {
        let name = self.entry().name.clone();
        let mut s = String::with_capacity(1024);
        match self.flavor {
            Flavor::Wazuh => {
                let _ = write!(
                    s,
                    "#!-Linux |{name} |5.15.0-91-generic |#101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023 |x86_64 [Ubuntu|ubuntu: 22.04.3 LTS (Jammy Jellyfish)] - Wazuh {WAZUH_VERSION} / ab73af41699f13fdd81903b5f23d8d00\n\"env\":sim\nfd756ba04d9c32c8848d4608bec41251 merged.mg\n"
                );
                if let Some(ip) = local_ip {
                    let _ = writeln!(s, "#\"_agent_ip\":{ip}");
                }
            }
            Flavor::Ossec => {
                let version = match self.cipher {
                    Cipher::Aes => "v4.2.0",
                    Cipher::Blowfish => "v3.7.0",
                };
                let _ = write!(
                    s,
                    "#!-Linux {name} 5.15.0-91-generic #101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023 x86_64 - OSSEC HIDS {version} / 1ae52da6a4f2f4ac7ef7d6f4e5b1e1c0\n6b8d9d9f1f2e3a4b5c6d7e8f9a0b1c2d merged.mg\n\n"
                );
                let tail = self.rng.gen_range(0..=698usize).min(1024 - s.len());
                for _ in 0..tail {
                    s.push(self.rng.gen_range(b'!'..=b'~') as char);
                }
            }
        }
        s.into_bytes()
    }

    pub fn keepalive(&mut self, local_ip: Option<IpAddr>) -> Result<Vec<u8>, Reject> {
        let p = self.keepalive_payload(local_ip);
        self.seal(&p)
    }

    /// `#!-agent shutdown ` (Wazuh only; OSSEC agents never send it).
    pub fn shutdown(&mut self) -> Option<Result<Vec<u8>, Reject>> {
        match self.flavor {
            Flavor::Wazuh => Some(self.seal(ossec_proto::payload::SHUTDOWN)),
            Flavor::Ossec => None,
        }
    }

    /// An event of `kind`, built at `now_us` (Unix µs), sealed.
    pub fn event(&mut self, kind: EventKind, now_us: i64, stamp: bool) -> Result<Vec<u8>, Reject> {
        SCRATCH.with(|s| {
            let mut text = s.borrow_mut();
            let entry = &self.keys.entries()[self.index];
            let ctx = EventCtx {
                name: &entry.name,
                key_ip: &entry.ip,
                flavor: self.flavor,
                now_us,
                stamp,
            };
            events::build(kind, &ctx, &mut self.rng, &mut text);
            self.seal(text.as_bytes())
        })
    }

    /// The next event of the mix.
    pub fn next_event(
        &mut self,
        mix: &Mix,
        now_us: i64,
        stamp: bool,
    ) -> Result<(EventKind, Vec<u8>), Reject> {
        let kind = mix.pick(&mut self.rng, self.flavor);
        Ok((kind, self.event(kind, now_us, stamp)?))
    }

    /// Opens a manager reply (a datagram or a TCP frame payload) with the
    /// agent's key and checks it: `ack` only for exactly `#!-agent ack `.
    pub fn check_reply(&mut self, wire: &[u8]) -> Result<Reply, Reject> {
        let sealed = match parse_wire(wire)? {
            Wire::Sealed { sealed, .. } => sealed,
            Wire::Ping => {
                return Err(Reject::new(
                    RejectKind::Format,
                    "the manager sent a plaintext #ping",
                ))
            }
        };
        let key = &self.keys.entries()[self.index].agent_key;
        let (ack, counters, payload_start) = DECODER.with(|d| {
            let mut d = d.borrow_mut();
            d.open(key, sealed).map(|o| {
                let start = &o.payload[..o.payload.len().min(64)];
                (
                    o.payload == ACK,
                    (o.header.global_counter, o.header.local_counter),
                    String::from_utf8_lossy(start).into_owned(),
                )
            })
        })?;
        let in_order = replay_verdict(self.last_reply, counters) == ReplayVerdict::Accept;
        if in_order {
            self.last_reply = Some(counters);
        }
        Ok(Reply {
            ack,
            in_order,
            accepted: in_order || self.flavor == Flavor::Wazuh,
            payload_start,
        })
    }
}

/// Writes a `client.keys` for `n` agents: IDs `001`, `002`, … (`%03d`),
/// names `sim-NNN`, IP `any`, 64 random lower-case hex characters.
pub fn generate_keys(n: usize, rng: &mut impl Rng) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(n * 90);
    for i in 1..=n {
        let _ = write!(out, "{i:03} sim-{i:03} any ");
        for _ in 0..64 {
            out.push(HEX[rng.gen_range(0..16)] as char);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossec_proto::payload::{classify, Control, Payload};
    use ossec_proto::{encode, AesIv, Decoded};

    fn keys(n: usize) -> Arc<ClientKeys> {
        let text = generate_keys(n, &mut SmallRng::seed_from_u64(3));
        Arc::new(ClientKeys::parse(text.as_bytes()).unwrap())
    }

    fn src() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    /// Every message an agent builds decodes with the collector's decoder,
    /// with counters 0:1, 0:2, … and the right cipher and AES variant.
    #[test]
    fn messages_decode_with_the_collector_decoder() {
        let keys = keys(4);
        let mix = Mix::default();
        let mut d = Decoder::new();
        for (i, (flavor, cipher, iv)) in [
            (Flavor::Wazuh, Cipher::Aes, Some(AesIv::Fixed)),
            (Flavor::Wazuh, Cipher::Blowfish, None),
            (Flavor::Ossec, Cipher::Aes, Some(AesIv::RandomPrefix)),
            (Flavor::Ossec, Cipher::Blowfish, None),
        ]
        .into_iter()
        .enumerate()
        {
            let mut a = Agent::new(keys.clone(), i, flavor, cipher, i as u64);
            assert!(a.id_prefix());
            let mut msgs = vec![a.startup().unwrap(), a.keepalive(Some(src())).unwrap()];
            for _ in 0..50 {
                msgs.push(a.next_event(&mix, 1_764_410_401_000_000, true).unwrap().1);
            }
            msgs.push(a.event(EventKind::AgentStarted, 1, false).unwrap());
            if let Some(s) = a.shutdown() {
                msgs.push(s.unwrap());
            }
            for (n, wire) in msgs.iter().enumerate() {
                let prefix = format!("!{:03}!", i + 1);
                assert!(wire.starts_with(prefix.as_bytes()));
                let Decoded::Message {
                    agent,
                    id_prefix,
                    opened,
                } = d.decode(&keys, wire, src()).unwrap()
                else {
                    panic!("not a message")
                };
                assert_eq!(agent, i);
                assert!(id_prefix);
                assert_eq!(opened.cipher, cipher);
                assert_eq!(opened.aes_iv, iv);
                assert_eq!(opened.header.global_counter, 0);
                assert_eq!(opened.header.local_counter, n as u32 + 1);
                let payload = classify(opened.payload).unwrap();
                match n {
                    0 => {
                        let Payload::Control(Control::Startup { version }) = payload else {
                            panic!("{payload:?}")
                        };
                        assert_eq!(
                            version.as_deref(),
                            (flavor == Flavor::Wazuh).then_some(WAZUH_VERSION)
                        );
                    }
                    1 => {
                        let Payload::Control(Control::Keepalive(k)) = payload else {
                            panic!("{payload:?}")
                        };
                        assert_eq!(k.hostname.as_deref(), Some(a.name()));
                        assert_eq!(k.arch.as_deref(), Some("x86_64"));
                        if flavor == Flavor::Wazuh {
                            assert_eq!(k.agent_version.as_deref(), Some("Wazuh v4.14.7"));
                            assert_eq!(k.agent_ip.as_deref(), Some("127.0.0.1"));
                        } else {
                            assert!(k.agent_version.unwrap().starts_with("OSSEC HIDS v"));
                            assert!(opened.payload.len() <= 1024);
                        }
                    }
                    n if n == msgs.len() - 1 && flavor == Flavor::Wazuh => {
                        assert_eq!(payload, Payload::Control(Control::Shutdown));
                    }
                    _ => assert!(matches!(payload, Payload::Event(_)), "{payload:?}"),
                }
            }
        }
    }

    /// A single-IPv4-host entry sends no `!ID!`, and the collector finds the
    /// agent by source address.
    #[test]
    fn single_host_entry_has_no_prefix() {
        let keys = Arc::new(
            ClientKeys::parse(b"007 host-7 127.0.0.7 0123456789abcdef0123456789abcdef\n").unwrap(),
        );
        let mut a = Agent::new(keys.clone(), 0, Flavor::Wazuh, Cipher::Aes, 1);
        let wire = a.startup().unwrap();
        assert!(wire.starts_with(b"#AES:"));
        let mut d = Decoder::new();
        assert!(matches!(
            d.decode(&keys, &wire, "127.0.0.7".parse().unwrap()),
            Ok(Decoded::Message { agent: 0, .. })
        ));
    }

    /// Replies sealed like the collector seals them (no prefix, the agent's
    /// cipher and AES variant, the manager's counter) are recognised; others
    /// are not.
    #[test]
    fn reply_checking() {
        let keys = keys(2);
        let key = keys.entries()[0].agent_key.clone();
        let h = |g, l| Header {
            rand: 9,
            global_counter: g,
            local_counter: l,
        };
        for (flavor, cipher, sealing) in [
            (Flavor::Wazuh, Cipher::Aes, Sealing::AesFixed),
            (Flavor::Wazuh, Cipher::Blowfish, Sealing::Blowfish),
            (Flavor::Ossec, Cipher::Aes, Sealing::AesRandom([5; 16])),
        ] {
            let mut a = Agent::new(keys.clone(), 0, flavor, cipher, 2);
            let ack = encode(&key, sealing, None, h(1_800_000_000, 1), ACK).unwrap();
            let r = a.check_reply(&ack).unwrap();
            assert!(r.ack && r.in_order && r.accepted, "{r:?}");
            // Same counters again: a replay.
            let r = a.check_reply(&ack).unwrap();
            assert!(r.ack && !r.in_order);
            assert_eq!(r.accepted, flavor == Flavor::Wazuh);
            // Not exactly the ACK (no trailing space).
            let near = encode(&key, sealing, None, h(1_800_000_000, 2), b"#!-agent ack").unwrap();
            let r = a.check_reply(&near).unwrap();
            assert!(!r.ack && r.in_order);
            let err = encode(
                &key,
                sealing,
                None,
                h(1_800_000_000, 3),
                b"#!-err {\"message\":\"x\"}",
            )
            .unwrap();
            assert!(!a.check_reply(&err).unwrap().ack);
        }
        // Another agent's key does not open it.
        let mut b = Agent::new(keys.clone(), 1, Flavor::Wazuh, Cipher::Aes, 3);
        let ack = encode(&key, Sealing::AesFixed, None, h(1, 1), ACK).unwrap();
        assert!(b.check_reply(&ack).is_err());
        assert!(b.check_reply(b"garbage").is_err());
    }

    #[test]
    fn generated_keys_parse() {
        let text = generate_keys(1200, &mut SmallRng::seed_from_u64(1));
        let k = ClientKeys::parse(text.as_bytes()).unwrap();
        assert_eq!(k.len(), 1200);
        assert_eq!(k.entries()[0].id, "001");
        assert_eq!(k.entries()[0].name, "sim-001");
        assert_eq!(k.entries()[1199].id, "1200");
        assert_eq!(k.entries()[0].ip, "any");
        assert_eq!(k.entries()[0].key.len(), 64);
        assert!(ossec_proto::keys::check(text.as_bytes()).is_empty());
    }
}
