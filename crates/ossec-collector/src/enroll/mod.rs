//! Enrollment on port 1515 (what Wazuh's `authd` does): one TLS connection,
//! one request line, one answer; the new key goes into the store.
//!
//! Owns the listener, the per-connection limits (concurrency, per-IP rate,
//! handshake + request timeout, line length), the replacement policy for a
//! name or IP that an agent already holds ([`may_replace`], Wazuh 4.14's
//! `force` rules), key making (64 hex characters from the OS CSPRNG), and the
//! outcome counters and logs (name, IP, ID — never the key). Parsing and
//! answer formats are in `ossec_proto::enroll`; TLS setup in [`tls`].

pub mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ossec_proto::enroll::{self, Answer, EnrollError, Form, RequestedIp};
use ossec_store::{AddOutcome, AgentStatus, Conflict, Holder, KeyOrigin, NewKey, Store};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};

use crate::config::{EnrollSettings, ForcePolicy};
use crate::metrics::Metrics;

/// Whether an existing agent may be replaced by a new enrollment, by
/// Wazuh 4.14's `force` rules: force on; not pending/active, and if
/// disconnected then for at least `disconnected_time` (measured from its
/// last message); registered at least `after_registration_time` ago; and
/// with `key_mismatch`, not when the request's `K:` hash matches the key
/// the agent holds (that agent already has its key).
pub fn may_replace(p: &ForcePolicy, h: &Holder, key_hash: Option<&str>, now_us: i64) -> bool {
    if !p.enabled {
        return false;
    }
    let older = |since: i64, d: Duration| now_us.saturating_sub(since) >= d.as_micros() as i64;
    if let Some(d) = p.disconnected_time {
        match h.status {
            AgentStatus::NeverConnected => {}
            AgentStatus::Disconnected => {
                if h.last_seen.is_some_and(|t| !older(t, d)) {
                    return false;
                }
            }
            AgentStatus::Pending | AgentStatus::Active => return false,
        }
    }
    if !p.after_registration_time.is_zero() && !older(h.key.created_at, p.after_registration_time) {
        return false;
    }
    if p.key_mismatch {
        if let Some(k) = key_hash {
            if enroll::key_hash(&h.key.id, &h.key.name, h.key.key.as_bytes()) == k {
                return false;
            }
        }
    }
    true
}

/// A new agent key: 32 random bytes from the OS, as 64 hex characters.
pub fn new_key() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Sources remembered by the rate limit at most.
const MAX_TRACKED_SOURCES: usize = 100_000;

/// Connections per source IP (IPv6: per /64) per minute.
struct RateLimit {
    per_minute: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimit {
    fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        // One IPv6 host usually holds a whole /64: count it as one source.
        let ip = match ip {
            IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
            v4 => v4,
        };
        let mut m = self.seen.lock();
        if m.len() >= MAX_TRACKED_SOURCES {
            m.retain(|_, (t, _)| now.duration_since(*t) < Duration::from_secs(60));
            if m.len() >= MAX_TRACKED_SOURCES {
                // Bounded memory over exact limits when that many sources
                // enroll within a minute.
                m.clear();
            }
        }
        let e = m.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(60) {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= self.per_minute
    }
}

/// What a connection handler needs.
pub struct Enroller {
    pub settings: EnrollSettings,
    pub password: Option<Vec<u8>>,
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Tells the key sync to apply a change at once…
    pub keys_changed: Arc<Notify>,
    /// …and the key revision it has applied, so that an agent is answered
    /// only once its key works on this collector's 1514.
    pub keys_applied: watch::Receiver<i64>,
    /// PROXY protocol before TLS, as on 1514.
    pub proxy: Option<crate::proxy::ProxySettings>,
}

/// Binds the enrollment listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts enrollment connections until shutdown.
pub async fn serve(l: TcpListener, e: Arc<Enroller>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(e.settings.max_concurrent));
    let rate = Arc::new(RateLimit {
        per_minute: e.settings.rate_per_ip,
        seen: Mutex::new(HashMap::new()),
    });
    loop {
        let Some((sock, peer)) = crate::tcp::accept(&l, "enrollment", &mut shutdown).await else {
            return;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            e.metrics.enrollment("too_many_connections", peer);
            continue;
        };
        let (e, rate) = (e.clone(), rate.clone());
        tokio::spawn(async move {
            let mut sock = sock;
            // Behind a load balancer the agent is the PROXY header's
            // address: for the rate limit, `IP:'src'`,
            // `--enroll-use-source-ip` and the logs.
            let agent = match crate::proxy::agent_addr(&mut sock, peer, e.proxy.as_ref()).await {
                Ok(a) => a,
                Err(reason) => {
                    e.metrics.proxy_rejected(reason, peer);
                    e.metrics.enrollment("proxy_header_rejected", peer);
                    return;
                }
            };
            let outcome = if rate.allow(agent.ip().to_canonical(), Instant::now()) {
                handle(&e, sock, agent).await
            } else {
                "rate_limited"
            };
            e.metrics.enrollment(outcome, agent);
            drop(permit);
        });
    }
}

/// Reads the request line: up to `\n`, at most [`enroll::MAX_REQUEST`]
/// bytes. `Err` with the outcome label when there is no complete line.
async fn read_line<R: AsyncReadExt + Unpin>(r: &mut R) -> Result<Vec<u8>, &'static str> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) => return Err("no_newline"),
            Ok(n) => n,
            Err(_) => return Err("read_error"),
        };
        let take = &chunk[..n];
        if let Some(i) = take.iter().position(|&b| b == b'\n') {
            if buf.len() + i > enroll::MAX_REQUEST {
                return Err("oversize");
            }
            buf.extend_from_slice(&take[..i]);
            return Ok(buf);
        }
        if buf.len() + n > enroll::MAX_REQUEST {
            return Err("oversize");
        }
        buf.extend_from_slice(take);
    }
}

/// How long the answer may take to write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One enrollment. Returns the outcome label for the metrics. The
/// `--enroll-timeout` covers the TLS handshake and the request line; the
/// store work after it is not cut short (a key committed but never sent
/// would hold the agent's name), and the answer has its own timeout.
async fn handle(e: &Enroller, sock: TcpStream, peer: SocketAddr) -> &'static str {
    let _ = sock.set_nodelay(true);
    let received = tokio::time::timeout(e.settings.timeout, async {
        let mut tls = match e.acceptor.accept(sock).await {
            Ok(t) => t,
            Err(err) => {
                tracing::debug!(peer = %peer, "enrollment TLS handshake failed: {err}");
                return Err("tls_error");
            }
        };
        let line = read_line(&mut tls).await;
        Ok((tls, line))
    })
    .await;
    let (mut tls, line) = match received {
        Err(_) => return "timeout",
        Ok(Err(label)) => return label,
        Ok(Ok(x)) => x,
    };
    let (answer, form, outcome) = match line {
        // An answer is still due: the agent waits for one (Wazuh logs
        // "Newline terminator not found" and answers nothing; an agent then
        // only sees the connection close).
        Err(label @ ("oversize" | "no_newline")) => (
            Answer::Refused(EnrollError::InvalidRequest),
            Form::Wazuh,
            label,
        ),
        Err(label) => return label,
        Ok(line) => match enroll::parse_request(&line, e.password.as_deref()) {
            Err(err) => {
                // Only a request that looks like an OSSEC agent's (a name
                // and no Wazuh-only field) gets the OSSEC form.
                let has = |needle: &[u8]| line.windows(needle.len()).any(|w| w == needle);
                let ossec = has(b"OSSEC A:'")
                    && ![&b" V:'"[..], b" G:'", b" IP:'", b" K:'"]
                        .iter()
                        .any(|n| has(n));
                let form = if ossec { Form::Ossec } else { Form::Wazuh };
                let label = err.label();
                (Answer::Refused(err), form, label)
            }
            Ok(req) => {
                let form = req.form();
                let (answer, label) = enroll_agent(e, &req, peer).await;
                (answer, form, label)
            }
        },
    };
    if let Answer::Refused(err) = &answer {
        e.metrics.enrollment_refused(peer, outcome, err);
    }
    let bytes = answer.to_bytes(form);
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        tls.write_all(&bytes).await?;
        tls.flush().await
    })
    .await
    .unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timed out",
        ))
    });
    if let (Err(err), Answer::Key { id, name, .. }) = (&written, &answer) {
        // The agent never got its key: take it back, as Wazuh does. In a
        // task of its own, so that nothing cancels the removal.
        tracing::warn!(peer = %peer, agent = %id, name = %name, "the key could not be sent ({err}); the agent is removed again");
        let (store, metrics, changed, id) = (
            e.store.clone(),
            e.metrics.clone(),
            e.keys_changed.clone(),
            id.clone(),
        );
        tokio::spawn(async move {
            if let Err(err) = store.remove_key(&id).await {
                metrics.store_error(&err);
            }
            changed.notify_one();
        });
        return "write_error";
    }
    // The key was delivered; a failed close_notify changes nothing.
    let _ = tokio::time::timeout(WRITE_TIMEOUT, tls.shutdown()).await;
    outcome
}

/// Validates, applies the duplicate policy and adds the key.
async fn enroll_agent(
    e: &Enroller,
    req: &enroll::Request,
    peer: SocketAddr,
) -> (Answer, &'static str) {
    let peer_ip = peer.ip().to_canonical().to_string();
    let ip = match &req.ip {
        Some(RequestedIp::Source) => peer_ip,
        Some(RequestedIp::Addr(a)) => a.clone(),
        None if e.settings.use_source_ip => peer_ip,
        None => "any".to_owned(),
    };
    let new = NewKey {
        name: req.name.clone(),
        ip: ip.clone(),
        key: new_key(),
        groups: req.groups.clone(),
        origin: KeyOrigin::Enrollment,
    };
    let now = ossec_store::now_micros();
    let policy = e.settings.force;
    let hash = req.key_hash.as_deref();
    let outcome = e
        .store
        .add_key(&new, |_, h| may_replace(&policy, h, hash, now))
        .await;
    match outcome {
        Ok(AddOutcome::Added { key, replaced }) => {
            e.keys_changed.notify_one();
            let mut applied = e.keys_applied.clone();
            let rev = key.rev;
            if tokio::time::timeout(Duration::from_secs(2), applied.wait_for(|r| *r >= rev))
                .await
                .is_err()
            {
                tracing::warn!(agent = %key.id, "the new key was not applied within 2 s; the agent may be refused on 1514 for a moment");
            }
            for old in &replaced {
                tracing::info!(agent = %old, name = %req.name, "enrollment replaced agent {old} (force rules allow it)");
            }
            tracing::info!(
                agent = %key.id,
                name = %key.name,
                ip = %key.ip,
                peer = %peer,
                version = %req.version.as_deref().unwrap_or("-").chars().take(32).collect::<String>(),
                groups = %key.groups.join(","),
                "agent enrolled"
            );
            let answer = Answer::Key {
                id: key.id,
                name: key.name,
                ip: key.ip,
                key: key.key,
            };
            (
                answer,
                if replaced.is_empty() {
                    "enrolled"
                } else {
                    "replaced"
                },
            )
        }
        Ok(AddOutcome::Refused(Conflict::Ip)) => {
            let err = EnrollError::DuplicateIp(ip);
            let l = err.label();
            (Answer::Refused(err), l)
        }
        Ok(AddOutcome::Refused(Conflict::Name)) => {
            let err = EnrollError::DuplicateName(req.name.clone());
            let l = err.label();
            (Answer::Refused(err), l)
        }
        Err(err) => {
            e.metrics.store_error(&err);
            let err = EnrollError::Internal(req.name.clone());
            let l = err.label();
            (Answer::Refused(err), l)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossec_store::StoredKey;

    const H: i64 = 3_600_000_000;

    fn holder(status: AgentStatus, last_seen: Option<i64>, created_at: i64) -> Holder {
        Holder {
            key: StoredKey {
                id: "001".into(),
                name: "web".into(),
                ip: "any".into(),
                key: "k".into(),
                groups: vec![],
                origin: KeyOrigin::Enrollment,
                created_at,
                removed_at: None,
                rev: 1,
            },
            status,
            last_seen,
        }
    }

    #[test]
    fn force_rules_follow_wazuh_defaults() {
        let p = ForcePolicy::default();
        let now = 10 * H;
        let old = now - 2 * H;
        // (status, last_seen, created_at, K: hash matches?) -> replace?
        let cases = [
            (AgentStatus::NeverConnected, None, old, false, true),
            (
                AgentStatus::Disconnected,
                Some(now - 2 * H),
                old,
                false,
                true,
            ),
            (
                AgentStatus::Disconnected,
                Some(now - H / 2),
                old,
                false,
                false,
            ),
            (AgentStatus::Active, Some(now), old, false, false),
            (AgentStatus::Pending, Some(now - 2 * H), old, false, false),
            (AgentStatus::NeverConnected, None, now - H / 2, false, false),
            (AgentStatus::NeverConnected, None, old, true, false),
        ];
        for (status, seen, created, same_key, want) in cases {
            let h = holder(status, seen, created);
            let hash = same_key.then(|| enroll::key_hash("001", "web", b"k"));
            assert_eq!(
                may_replace(&p, &h, hash.as_deref(), now),
                want,
                "{status:?} seen {seen:?} created {created} same key {same_key}"
            );
        }
        // A different K: hash does not stop the replacement.
        let h = holder(AgentStatus::NeverConnected, None, old);
        assert!(may_replace(&p, &h, Some("0000"), now));
        let off = ForcePolicy {
            enabled: false,
            ..p
        };
        assert!(!may_replace(&off, &h, None, now));
        let any_status = ForcePolicy {
            disconnected_time: None,
            after_registration_time: Duration::ZERO,
            ..p
        };
        assert!(may_replace(
            &any_status,
            &holder(AgentStatus::Active, Some(now), now),
            None,
            now
        ));
    }

    #[test]
    fn keys_are_64_hex_and_differ() {
        let (a, b) = (new_key(), new_key());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn rate_limit_per_ip_per_minute() {
        let r = RateLimit {
            per_minute: 2,
            seen: Mutex::new(HashMap::new()),
        };
        let t = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(r.allow(a, t) && r.allow(a, t));
        assert!(!r.allow(a, t));
        assert!(r.allow(b, t));
        assert!(r.allow(a, t + Duration::from_secs(61)));
    }
}
