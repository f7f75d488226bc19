//! What the status page shows, as data: the agents listing (filter by
//! status and text, sort, page) and the collector's figures, built from
//! memory only (the agent table, the counters, the [`History`] ring), and
//! served as JSON by `GET /api/agents` and `GET /api/stats`. The page
//! (`page.rs`) renders the same structs, so the two cannot drift; the JSON
//! names are a contract (docs/http.md).
//!
//! One listing walks every agent once (a lock and a few copies each) and
//! sorts what matched; rows are built for the requested page only.

use std::cmp::Ordering as Cmp;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use ossec_proto::RejectKind;
use ossec_store::AgentStatus;
use serde::{Deserialize, Serialize};

use super::HttpState;
use crate::agents::Agent;
use crate::history::{Rates, Sample, STEP};

/// Most agents in one page or answer.
pub const MAX_LIMIT: usize = 1000;
/// Agents per page by default.
pub const DEFAULT_LIMIT: usize = 100;
/// Longest `q`, in characters.
pub const MAX_QUERY_CHARS: usize = 128;

/// The query string of `/` and `/api/agents`, as given.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct AgentQuery {
    pub status: Option<String>,
    pub q: Option<String>,
    pub sort: Option<String>,
    pub order: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
}

/// Which agents a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    All,
    Silent,
    Is(AgentStatus),
}

impl StatusFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusFilter::All => "",
            StatusFilter::Silent => "silent",
            StatusFilter::Is(s) => s.as_str(),
        }
    }
}

/// The column a listing is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Silent agents first (the most recently silent first), then by ID.
    Default,
    Id,
    Name,
    Status,
    LastSeen,
    Ip,
    Version,
    Os,
    Events,
    Reject,
}

impl SortKey {
    pub const ALL: [(SortKey, &'static str); 10] = [
        (SortKey::Default, "default"),
        (SortKey::Id, "id"),
        (SortKey::Name, "name"),
        (SortKey::Status, "status"),
        (SortKey::LastSeen, "last_seen"),
        (SortKey::Ip, "ip"),
        (SortKey::Version, "version"),
        (SortKey::Os, "os"),
        (SortKey::Events, "events"),
        (SortKey::Reject, "reject"),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("default", |(_, n)| n)
    }

    /// The order a first click on the column gives (newest, busiest first).
    pub fn natural_desc(self) -> bool {
        matches!(self, SortKey::LastSeen | SortKey::Events | SortKey::Reject)
    }
}

/// A checked [`AgentQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub status: StatusFilter,
    /// Lower-cased; matched against ID, name and IP.
    pub q: String,
    pub sort: SortKey,
    pub desc: bool,
    pub limit: usize,
    pub offset: usize,
}

impl Default for Listing {
    fn default() -> Self {
        Listing {
            status: StatusFilter::All,
            q: String::new(),
            sort: SortKey::Default,
            desc: false,
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

impl Listing {
    /// Checks the query: an unknown status or sort key, or a number that
    /// is not one, is an error naming it; `limit` is capped at
    /// [`MAX_LIMIT`], `q` at [`MAX_QUERY_CHARS`].
    pub fn parse(q: &AgentQuery) -> Result<Listing, String> {
        fn some(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let status = match some(&q.status) {
            None | Some("all") => StatusFilter::All,
            Some("silent") => StatusFilter::Silent,
            Some(s) => StatusFilter::Is(
                AgentStatus::ALL
                    .into_iter()
                    .find(|x| x.as_str() == s)
                    .ok_or_else(|| {
                        format!("status `{}`: not one of never_connected, pending, active, disconnected, silent", clip(s))
                    })?,
            ),
        };
        let sort = match some(&q.sort) {
            None => SortKey::Default,
            Some(s) => SortKey::ALL
                .iter()
                .find(|(_, n)| *n == s)
                .map(|(k, _)| *k)
                .ok_or_else(|| {
                    let names: Vec<&str> = SortKey::ALL.iter().map(|(_, n)| *n).collect();
                    format!("sort `{}`: not one of {}", clip(s), names.join(", "))
                })?,
        };
        let desc = match some(&q.order) {
            None => sort.natural_desc(),
            Some("asc") => false,
            Some("desc") => true,
            Some(o) => return Err(format!("order `{}`: asc or desc", clip(o))),
        };
        let number = |v: &Option<String>, name: &str| -> Result<Option<usize>, String> {
            some(v)
                .map(|s| {
                    s.parse::<u32>()
                        .map(|n| n as usize)
                        .map_err(|_| format!("{name} `{}`: not a number", clip(s)))
                })
                .transpose()
        };
        let limit = number(&q.limit, "limit")?
            .unwrap_or(DEFAULT_LIMIT)
            .clamp(1, MAX_LIMIT);
        let offset = number(&q.offset, "offset")?.unwrap_or(0);
        let text = some(&q.q).unwrap_or("");
        Ok(Listing {
            status,
            q: text
                .chars()
                .take(MAX_QUERY_CHARS)
                .collect::<String>()
                .to_lowercase(),
            sort,
            desc,
            limit,
            offset,
        })
    }
}

/// At most 40 characters of a bad value, for an error message.
fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The last rejected message of an agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastReject {
    pub kind: &'static str,
    /// RFC 3339, UTC.
    pub at: String,
    #[serde(skip)]
    pub at_s: i64,
}

/// One row of the agents table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentRow {
    pub id: String,
    pub name: String,
    pub status: &'static str,
    /// Connected once, and no keepalive for longer than `--disconnect-after`.
    pub silent: bool,
    /// RFC 3339, UTC: the last message accepted (any kind).
    pub last_seen: Option<String>,
    pub last_seen_ago_s: Option<i64>,
    pub last_keepalive: Option<String>,
    pub ip: Option<String>,
    pub version: Option<String>,
    pub os: Option<String>,
    pub events_last_hour: u64,
    pub last_reject: Option<LastReject>,
}

/// Agents by status, over every agent (whatever the filter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AgentTotals {
    pub total: u64,
    pub never_connected: u64,
    pub pending: u64,
    pub active: u64,
    pub disconnected: u64,
    /// Connected once and without a keepalive beyond `--disconnect-after`
    /// (whatever their status says).
    pub silent: u64,
}

impl AgentTotals {
    /// Counts one agent; returns whether it is silent.
    fn add(&mut self, r: &ossec_store::AgentRecord, now: i64, disconnect_after: Duration) -> bool {
        let silent = is_silent(r, now, disconnect_after);
        self.total += 1;
        self.silent += u64::from(silent);
        match r.status {
            AgentStatus::NeverConnected => self.never_connected += 1,
            AgentStatus::Pending => self.pending += 1,
            AgentStatus::Active => self.active += 1,
            AgentStatus::Disconnected => self.disconnected += 1,
        }
        silent
    }

    pub fn of(&self, f: StatusFilter) -> u64 {
        match f {
            StatusFilter::All => self.total,
            StatusFilter::Silent => self.silent,
            StatusFilter::Is(AgentStatus::NeverConnected) => self.never_connected,
            StatusFilter::Is(AgentStatus::Pending) => self.pending,
            StatusFilter::Is(AgentStatus::Active) => self.active,
            StatusFilter::Is(AgentStatus::Disconnected) => self.disconnected,
        }
    }
}

/// `GET /api/agents`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentPage {
    /// Agents that match the filter (all pages).
    pub matched: u64,
    pub offset: usize,
    pub limit: usize,
    pub totals: AgentTotals,
    pub agents: Vec<AgentRow>,
}

/// What one walk over the table keeps of an agent that matched.
struct Entry {
    agent: Arc<Agent>,
    status: AgentStatus,
    silent: bool,
    /// Unix µs.
    last_seen: i64,
    last_keepalive: i64,
    events: u64,
    reject_at: i64,
    /// The text column sorted by, when the sort is by one.
    key: Option<String>,
}

/// Whether the agent is silent at `now`: it connected once, and its last
/// keepalive (or, before its first, its first contact) is older than
/// `disconnect_after`.
pub fn is_silent(r: &ossec_store::AgentRecord, now: i64, disconnect_after: Duration) -> bool {
    if r.status == AgentStatus::NeverConnected {
        return false;
    }
    match r.last_keepalive.or(r.first_seen) {
        Some(t) => now - t > disconnect_after.as_micros() as i64,
        None => false,
    }
}

/// The OS as one line: `Ubuntu 22.04.3 LTS`, or the platform.
fn os_of(r: &ossec_store::AgentRecord) -> Option<String> {
    match (&r.os_name, &r.os_version) {
        (Some(n), Some(v)) if !v.is_empty() && !n.contains(v.as_str()) => Some(format!("{n} {v}")),
        (Some(n), _) => Some(n.clone()),
        (None, Some(v)) => Some(v.clone()),
        (None, None) => r.os_platform.clone(),
    }
}

fn contains_ci(hay: &str, needle_lower: &str) -> bool {
    if hay.is_ascii() && needle_lower.is_ascii() {
        hay.as_bytes()
            .windows(needle_lower.len())
            .any(|w| w.eq_ignore_ascii_case(needle_lower.as_bytes()))
    } else {
        hay.to_lowercase().contains(needle_lower)
    }
}

/// IDs sort as numbers when they are (`2` before `10`), else as text.
fn cmp_id(a: &str, b: &str) -> Cmp {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Lists the agents for `l` at `now` (Unix µs).
pub fn list_agents(state: &HttpState, l: &Listing, now: i64) -> AgentPage {
    let set = state.table.snapshot();
    let mut totals = AgentTotals::default();
    let mut entries: Vec<Entry> = Vec::new();
    for a in &set.agents {
        let st = a.state.lock();
        let r = &st.record;
        let silent = totals.add(r, now, state.disconnect_after);
        let wanted = match l.status {
            StatusFilter::All => true,
            StatusFilter::Silent => silent,
            StatusFilter::Is(s) => r.status == s,
        };
        if !wanted {
            continue;
        }
        if !l.q.is_empty()
            && !contains_ci(&a.id, &l.q)
            && !contains_ci(&a.name, &l.q)
            && !r.last_ip.as_deref().is_some_and(|ip| contains_ci(ip, &l.q))
        {
            continue;
        }
        let key = match l.sort {
            SortKey::Ip => r.last_ip.clone(),
            SortKey::Version => r.version.clone(),
            SortKey::Os => os_of(r),
            _ => None,
        };
        let events = if l.sort == SortKey::Events {
            st.activity.last_hour(now)
        } else {
            0
        };
        entries.push(Entry {
            agent: a.clone(),
            status: r.status,
            silent,
            last_seen: r.last_seen.unwrap_or(0),
            last_keepalive: r.last_keepalive.or(r.first_seen).unwrap_or(0),
            events,
            reject_at: 0,
            key,
        });
    }
    if l.sort == SortKey::Reject {
        for e in &mut entries {
            e.reject_at = e.agent.last_reject().map_or(0, |(_, at)| at);
        }
    }
    let by_id = |a: &Entry, b: &Entry| cmp_id(&a.agent.id, &b.agent.id);
    let status_rank = |s: AgentStatus| AgentStatus::ALL.iter().position(|x| *x == s);
    let cmp = |a: &Entry, b: &Entry| -> Cmp {
        let c = match l.sort {
            SortKey::Default => {
                // Silent first, the most recently silent first; then by ID.
                return b
                    .silent
                    .cmp(&a.silent)
                    .then_with(|| match a.silent {
                        true => b.last_keepalive.cmp(&a.last_keepalive),
                        false => Cmp::Equal,
                    })
                    .then_with(|| by_id(a, b));
            }
            SortKey::Id => by_id(a, b),
            SortKey::Name => a.agent.name.cmp(&b.agent.name),
            SortKey::Status => status_rank(a.status).cmp(&status_rank(b.status)),
            SortKey::LastSeen => a.last_seen.cmp(&b.last_seen),
            SortKey::Events => a.events.cmp(&b.events),
            SortKey::Reject => a.reject_at.cmp(&b.reject_at),
            SortKey::Ip | SortKey::Version | SortKey::Os => a.key.cmp(&b.key),
        };
        let c = if l.desc { c.reverse() } else { c };
        c.then_with(|| by_id(a, b))
    };
    let matched = entries.len();
    let end = l.offset.saturating_add(l.limit).min(matched);
    if l.offset < matched {
        // Only the page needs to be in order.
        if end < matched {
            entries.select_nth_unstable_by(end - 1, &cmp);
            entries.truncate(end);
        }
        entries.sort_unstable_by(&cmp);
    }
    let agents = entries
        .get(l.offset.min(matched)..end)
        .unwrap_or_default()
        .iter()
        .map(|e| row(&e.agent, now, state.disconnect_after))
        .collect();
    AgentPage {
        matched: matched as u64,
        offset: l.offset,
        limit: l.limit,
        totals,
        agents,
    }
}

fn row(a: &Agent, now: i64, disconnect_after: Duration) -> AgentRow {
    let st = a.state.lock();
    let r = &st.record;
    AgentRow {
        id: a.id.to_string(),
        name: a.name.to_string(),
        status: r.status.as_str(),
        silent: is_silent(r, now, disconnect_after),
        last_seen: r.last_seen.map(rfc3339),
        last_seen_ago_s: r.last_seen.map(|t| ((now - t) / 1_000_000).max(0)),
        last_keepalive: r.last_keepalive.map(rfc3339),
        ip: r.last_ip.clone(),
        version: r.version.clone(),
        os: os_of(r),
        events_last_hour: st.activity.last_hour(now),
        last_reject: a.last_reject().map(|(k, at)| LastReject {
            kind: k.as_str(),
            at: rfc3339(at * 1_000_000),
            at_s: at,
        }),
    }
}

/// `2026-11-29T23:41:32Z`.
pub fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Rates over the last 1, 5 and 15 minutes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Windows {
    #[serde(rename = "1m")]
    pub m1: f64,
    #[serde(rename = "5m")]
    pub m5: f64,
    #[serde(rename = "15m")]
    pub m15: f64,
}

/// One reject reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectStat {
    pub kind: &'static str,
    pub total: u64,
    pub per_s: Windows,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreStat {
    /// Whether the last store write succeeded.
    pub up: bool,
    /// Batch commit time, seconds, over the commits of the last `window_s`.
    pub commit_p50_s: Option<f64>,
    pub commit_p99_s: Option<f64>,
    pub commits: usize,
    pub window_s: i64,
    pub events_stored_total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStat {
    pub depth: usize,
    pub capacity: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpoolStat {
    pub bytes: u64,
    pub segments: u64,
    /// Age of the oldest event not yet in the store (0: none).
    pub oldest_age_s: f64,
    pub full: bool,
}

/// The sparkline data: one value per [`STEP`] over the last hour, oldest
/// first, the last for the step under way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub step_s: u64,
    /// Unix seconds at the end of each step.
    pub at: Vec<i64>,
    pub events_per_s: Vec<f64>,
    pub rejects_per_s: Vec<f64>,
}

/// `GET /api/stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub version: &'static str,
    pub instance: String,
    /// RFC 3339.
    pub started_at: String,
    pub uptime_s: i64,
    /// RFC 3339: when these figures were taken.
    pub now: String,
    #[serde(skip)]
    pub now_us: i64,
    pub disconnect_after_s: u64,
    pub agents: AgentTotals,
    pub events_per_s: Windows,
    pub events_total: u64,
    pub rejects_per_s: Windows,
    pub rejects: Vec<RejectStat>,
    pub store: StoreStat,
    pub queue: QueueStat,
    /// `null` with `--spool-dir off`.
    pub spool: Option<SpoolStat>,
    pub history: Series,
}

/// Round to 4 significant decimals, so that the JSON stays short.
fn r4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// The collector's figures at `now`; `agents` from a listing walk.
pub fn stats(state: &HttpState, agents: AgentTotals, now: i64) -> Stats {
    let m = &state.metrics;
    let sample = Sample {
        at_us: now,
        ..Sample::now(m)
    };
    let h = &state.history;
    let w = |secs: u64| h.rates(&sample, Duration::from_secs(secs));
    let (r1, r5, r15): (Rates, Rates, Rates) = (w(60), w(300), w(900));
    let windows = |f: &dyn Fn(&Rates) -> f64| Windows {
        m1: r4(f(&r1)),
        m5: r4(f(&r5)),
        m15: r4(f(&r15)),
    };
    let rejects = RejectKind::ALL
        .iter()
        .map(|k| RejectStat {
            kind: k.as_str(),
            total: sample.rejects[k.index()],
            per_s: windows(&|r: &Rates| r.rejects[k.index()]),
        })
        .collect();
    let (p50, p99, commits) = m.recent_batch_latency(now);
    let spool = m.spool.read().clone().map(|sp| {
        use std::sync::atomic::Ordering::Relaxed;
        let oldest = sp.oldest_us.load(Relaxed);
        SpoolStat {
            bytes: sp.bytes.load(Relaxed),
            segments: sp.segments.load(Relaxed),
            oldest_age_s: if oldest > 0 {
                r4((now - oldest).max(0) as f64 / 1e6)
            } else {
                0.0
            },
            full: sp.full.load(Relaxed),
        }
    });
    let points = h.series(&sample);
    Stats {
        version: env!("CARGO_PKG_VERSION"),
        instance: state.instance.clone(),
        started_at: rfc3339(state.started_at_us),
        uptime_s: ((now - state.started_at_us) / 1_000_000).max(0),
        now: rfc3339(now),
        now_us: now,
        disconnect_after_s: state.disconnect_after.as_secs(),
        agents,
        events_per_s: windows(&|r: &Rates| r.events),
        events_total: sample.events,
        rejects_per_s: windows(&|r: &Rates| r.rejects_total()),
        rejects,
        store: StoreStat {
            up: m.store_up(),
            commit_p50_s: p50.map(r4),
            commit_p99_s: p99.map(r4),
            commits,
            window_s: crate::metrics::RECENT_BATCH_SECS,
            events_stored_total: m.events_stored.load(std::sync::atomic::Ordering::Relaxed),
        },
        queue: QueueStat {
            depth: state.queue_depth(),
            capacity: state.queue_capacity,
        },
        spool,
        history: Series {
            step_s: STEP.as_secs(),
            at: points.iter().map(|p| p.at_us / 1_000_000).collect(),
            events_per_s: points.iter().map(|p| r4(p.rates.events)).collect(),
            rejects_per_s: points.iter().map(|p| r4(p.rates.rejects_total())).collect(),
        },
    }
}

/// A JSON answer (pretty enough to read with curl).
pub fn json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(mut body) => {
            body.push(b'\n');
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A 400 with a JSON error.
pub fn bad_request(msg: String) -> Response {
    let mut r = json(&serde_json::json!({ "error": msg }));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r
}

/// `GET /api/agents?status=&q=&sort=&order=&limit=&offset=`.
pub async fn agents(State(state): State<Arc<HttpState>>, Query(q): Query<AgentQuery>) -> Response {
    let l = match Listing::parse(&q) {
        Ok(l) => l,
        Err(e) => return bad_request(e),
    };
    let now = ossec_store::now_micros();
    // The walk takes every agent's lock in turn: off the async workers.
    let page = tokio::task::spawn_blocking(move || list_agents(&state, &l, now)).await;
    match page {
        Ok(p) => json(&p),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /api/stats`.
pub async fn stats_route(State(state): State<Arc<HttpState>>) -> Response {
    let now = ossec_store::now_micros();
    let s = tokio::task::spawn_blocking(move || {
        let totals = totals(&state, now);
        stats(&state, totals, now)
    })
    .await;
    match s {
        Ok(s) => json(&s),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Agents by status (and silent), without listing them.
pub fn totals(state: &HttpState, now: i64) -> AgentTotals {
    let mut t = AgentTotals::default();
    for a in &state.table.snapshot().agents {
        let st = a.state.lock();
        t.add(&st.record, now, state.disconnect_after);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> AgentQuery {
        let mut a = AgentQuery::default();
        for (k, v) in pairs {
            let v = Some((*v).to_owned());
            match *k {
                "status" => a.status = v,
                "q" => a.q = v,
                "sort" => a.sort = v,
                "order" => a.order = v,
                "limit" => a.limit = v,
                "offset" => a.offset = v,
                _ => unreachable!(),
            }
        }
        a
    }

    #[test]
    fn listing_is_checked_and_bounded() {
        assert_eq!(Listing::parse(&q(&[])).unwrap(), Listing::default());
        let l = Listing::parse(&q(&[
            ("status", "active"),
            ("q", "WEB"),
            ("sort", "events"),
            ("limit", "5000"),
            ("offset", "10"),
        ]))
        .unwrap();
        assert_eq!(l.status, StatusFilter::Is(AgentStatus::Active));
        assert_eq!(l.q, "web");
        assert!(l.desc, "events sort busiest first");
        assert_eq!((l.limit, l.offset), (MAX_LIMIT, 10));
        assert_eq!(Listing::parse(&q(&[("limit", "0")])).unwrap().limit, 1);
        for bad in [
            ("status", "zombie"),
            ("sort", "color"),
            ("order", "up"),
            ("limit", "-1"),
            ("offset", "1e9"),
            ("limit", "99999999999"),
        ] {
            let e = Listing::parse(&q(&[bad])).unwrap_err();
            assert!(e.starts_with(bad.0), "{e}");
        }
        let long = "x".repeat(10_000);
        assert_eq!(
            Listing::parse(&q(&[("q", &long)])).unwrap().q.len(),
            MAX_QUERY_CHARS
        );
    }

    #[test]
    fn text_match_ignores_case() {
        assert!(contains_ci("Web-01", "web"));
        assert!(contains_ci("10.0.0.12", "0.12"));
        assert!(!contains_ci("db", "web"));
        assert!(contains_ci("Ünïcode", "ünï"));
        assert_eq!(cmp_id("2", "10"), Cmp::Less);
        assert_eq!(cmp_id("010", "002"), Cmp::Greater);
    }
}
