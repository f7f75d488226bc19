//! The status page, `GET /`: one server-rendered HTML document (maud) with
//! the fleet's totals, events and rejects per second with sparklines of the
//! last hour (inline SVG), store, queue and spool figures, and the agents
//! table (silent agents first; filter by status and text, sort by any
//! column and page through with plain links; no script at all).
//!
//! Self-contained so that it works air-gapped: no external asset, a
//! Content-Security-Policy that forbids loading anything, a `data:` icon so
//! the browser does not ask for `/favicon.ico`; it reloads itself every
//! [`REFRESH_SECS`] with `<meta http-equiv=refresh>`. The figures are the
//! same structs `/api/stats` and `/api/agents` serve ([`super::api`]).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use ossec_store::AgentStatus;

use super::api::{
    list_agents, stats, AgentPage, AgentQuery, AgentRow, Listing, SortKey, Stats, StatusFilter,
    Windows,
};
use super::HttpState;

/// Seconds between two reloads of the page.
pub const REFRESH_SECS: u32 = 10;

/// Nothing may be loaded from anywhere: styles are inline, images are
/// inline SVG, forms go back here.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const STYLE: &str = r#"
:root { color-scheme: light dark; --fg:#1b1f24; --muted:#5c6670; --bg:#f6f7f9; --card:#fff; --line:#dde1e6; --accent:#1f6feb; --bad:#c62828; --warn:#b26a00; --good:#2e7d32; }
@media (prefers-color-scheme: dark) { :root { --fg:#e6e8eb; --muted:#9aa4ae; --bg:#0f1216; --card:#171b21; --line:#2a3039; --accent:#58a6ff; --bad:#ff6b6b; --warn:#e3a008; --good:#56d364; } }
* { box-sizing: border-box; }
body { margin:0; padding:16px 20px 32px; font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; flex-wrap:wrap; align-items:baseline; gap:4px 16px; margin-bottom:14px; }
h1 { font-size:20px; margin:0; } h1 small { color:var(--muted); font-weight:normal; font-size:15px; }
h2 { font-size:13px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); margin:0 0 8px; }
.meta { color:var(--muted); margin:0; }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(250px,1fr)); gap:12px; margin-bottom:16px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.big { font-size:24px; font-weight:600; font-variant-numeric:tabular-nums; }
.kv { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
.kv td { padding:1px 0; } .kv td.n { text-align:right; }
.kv th { text-align:right; font-weight:normal; color:var(--muted); font-size:12px; } .kv th:first-child { text-align:left; }
.windows { display:flex; gap:14px; margin-bottom:6px; } .windows div { display:flex; flex-direction:column; } .windows span { color:var(--muted); font-size:12px; }
svg.spark { display:block; width:100%; height:44px; margin-top:6px; }
svg.spark polyline { fill:none; stroke-width:1.5; vector-effect:non-scaling-stroke; }
svg.spark polygon { opacity:.15; }
.spark-ev polyline { stroke:var(--accent); } .spark-ev polygon { fill:var(--accent); }
.spark-rj polyline { stroke:var(--bad); } .spark-rj polygon { fill:var(--bad); }
.axis { display:flex; justify-content:space-between; color:var(--muted); font-size:11px; }
.bad { color:var(--bad); } .warn { color:var(--warn); } .good { color:var(--good); } .muted { color:var(--muted); }
.filters { display:flex; flex-wrap:wrap; align-items:center; gap:6px 10px; margin:0 0 8px; }
.filters a { padding:2px 8px; border:1px solid var(--line); border-radius:12px; background:var(--card); }
.filters a.on { background:var(--accent); color:#fff; border-color:var(--accent); } .filters a.on span { color:inherit; opacity:.8; }
.filters form { margin-left:auto; display:flex; gap:6px; }
input[type=search] { padding:4px 8px; border:1px solid var(--line); border-radius:6px; background:var(--card); color:var(--fg); min-width:220px; }
button { padding:4px 10px; border:1px solid var(--line); border-radius:6px; background:var(--card); color:var(--fg); cursor:pointer; }
.table-wrap { overflow-x:auto; background:var(--card); border:1px solid var(--line); border-radius:8px; }
table.agents { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
table.agents th, table.agents td { padding:5px 10px; border-bottom:1px solid var(--line); text-align:left; white-space:nowrap; }
table.agents th { font-size:12px; color:var(--muted); font-weight:600; background:var(--card); position:sticky; top:0; }
table.agents td.n, table.agents th.n { text-align:right; }
table.agents tr.silent td { background:color-mix(in srgb, var(--bad) 9%, transparent); }
.badge { display:inline-block; padding:0 7px; border-radius:9px; font-size:12px; border:1px solid currentColor; }
.st-active { color:var(--good); } .st-pending { color:var(--warn); } .st-disconnected { color:var(--bad); } .st-never_connected { color:var(--muted); }
.pages { display:flex; gap:12px; align-items:center; margin-top:8px; color:var(--muted); }
.empty { padding:18px; text-align:center; color:var(--muted); }
"#;

/// `GET /?status=&q=&sort=&order=&limit=&offset=`.
pub async fn page(State(state): State<Arc<HttpState>>, Query(q): Query<AgentQuery>) -> Response {
    let l = match Listing::parse(&q) {
        Ok(l) => l,
        Err(e) => {
            let doc = html! {
                (DOCTYPE) html lang="en" { head { meta charset="utf-8"; title { "bad request" } link rel="icon" href="data:,"; }
                body { p { "Bad request: " (e) } p { a href="/" { "back to the status page" } } } }
            };
            return with_headers(StatusCode::BAD_REQUEST, doc.into_string());
        }
    };
    let now = ossec_store::now_micros();
    // The walk over the agents takes each one's lock: off the async workers.
    match tokio::task::spawn_blocking(move || render(&state, &l, now)).await {
        Ok(html) => with_headers(StatusCode::OK, html),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn with_headers(code: StatusCode, body: String) -> Response {
    let mut r = (code, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// The page for `l` at `now` (Unix µs).
pub fn render(state: &HttpState, l: &Listing, now: i64) -> String {
    let agents = list_agents(state, l, now);
    let stats = stats(state, agents.totals, now);
    document(&stats, &agents, l).into_string()
}

/// The query string of a link: `l` with `change` applied; defaults left out.
fn href(l: &Listing, change: impl FnOnce(&mut Listing)) -> String {
    let mut l = l.clone();
    change(&mut l);
    let mut parts: Vec<String> = Vec::new();
    if l.status != StatusFilter::All {
        parts.push(format!("status={}", l.status.as_str()));
    }
    if !l.q.is_empty() {
        parts.push(format!("q={}", enc(&l.q)));
    }
    if l.sort != SortKey::Default {
        parts.push(format!("sort={}", l.sort.as_str()));
    }
    if l.desc != l.sort.natural_desc() {
        parts.push(format!("order={}", if l.desc { "desc" } else { "asc" }));
    }
    if l.limit != super::api::DEFAULT_LIMIT {
        parts.push(format!("limit={}", l.limit));
    }
    if l.offset > 0 {
        parts.push(format!("offset={}", l.offset));
    }
    if parts.is_empty() {
        "/".to_owned()
    } else {
        format!("/?{}", parts.join("&"))
    }
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
pub fn ago(secs: i64) -> String {
    match secs.max(0) {
        s if s < 5 => "just now".to_owned(),
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s if s < 172_800 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86_400),
    }
}

fn uptime(secs: i64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// A rate with the digits that matter.
pub fn rate(v: f64) -> String {
    if v == 0.0 {
        "0".to_owned()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(s) if s < 1.0 => format!("{:.1} ms", s * 1000.0),
        Some(s) => format!("{s:.2} s"),
    }
}

/// An inline SVG sparkline of `values` (one per step, oldest first) that
/// span `span_s` seconds up to now: the last hour, or since the start.
fn sparkline(values: &[f64], span_s: i64, class: &str, label: &str) -> Markup {
    const W: f64 = 360.0;
    const H: f64 = 40.0;
    // One step so far: a level line.
    let one;
    let values = match values {
        [v] => {
            one = [*v, *v];
            &one[..]
        }
        v => v,
    };
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let n = values.len();
    let dx = W / (n.max(2) - 1) as f64;
    let mut line = String::with_capacity(n * 12);
    for (i, v) in values.iter().enumerate() {
        let x = i as f64 * dx;
        let y = if max > 0.0 {
            H - v / max * (H - 2.0) - 1.0
        } else {
            H - 1.0
        };
        let _ = write!(line, "{x:.1},{y:.1} ");
    }
    let area = format!("0,{H} {line}{:.1},{H}", (n.max(1) - 1) as f64 * dx);
    html! {
        svg class={ "spark " (class) } viewBox={ "0 0 " (W) " " (H) } preserveAspectRatio="none" role="img" aria-label=(label) {
            title { (label) }
            @if n >= 2 {
                polygon points=(area) {}
                polyline points=(line.trim_end()) {}
            }
        }
        div.axis {
            span { @if span_s >= 3600 { "1 h ago" } @else { (ago(span_s)) } }
            span { "peak " (rate(max)) "/s" }
            span { "now" }
        }
    }
}

fn windows(w: &Windows, id: &str) -> Markup {
    html! {
        div.windows id=(id) {
            div { b.big data-window="1m" { (rate(w.m1)) } span { "1 min" } }
            div { b.big data-window="5m" { (rate(w.m5)) } span { "5 min" } }
            div { b.big data-window="15m" { (rate(w.m15)) } span { "15 min" } }
        }
    }
}

fn status_label(s: StatusFilter) -> &'static str {
    match s {
        StatusFilter::All => "All",
        StatusFilter::Silent => "Silent",
        StatusFilter::Is(AgentStatus::Active) => "Active",
        StatusFilter::Is(AgentStatus::Pending) => "Pending",
        StatusFilter::Is(AgentStatus::Disconnected) => "Disconnected",
        StatusFilter::Is(AgentStatus::NeverConnected) => "Never connected",
    }
}

const FILTERS: [StatusFilter; 6] = [
    StatusFilter::All,
    StatusFilter::Silent,
    StatusFilter::Is(AgentStatus::Active),
    StatusFilter::Is(AgentStatus::Pending),
    StatusFilter::Is(AgentStatus::Disconnected),
    StatusFilter::Is(AgentStatus::NeverConnected),
];

/// The whole document.
pub fn document(s: &Stats, page: &AgentPage, l: &Listing) -> Markup {
    let t = &s.agents;
    let rejecting: Vec<_> = s.rejects.iter().filter(|r| r.total > 0).collect();
    // What the sparklines cover: from the start of their first step.
    let span = match (s.history.at.first(), s.history.at.last()) {
        (Some(a), Some(b)) => (b - a + s.history.step_s as i64).min(s.uptime_s),
        _ => 0,
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(REFRESH_SECS);
                title { "ossec-collector · " (s.instance) }
                link rel="icon" href="data:,";
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "ossec-collector " small { (s.instance) } }
                    p.meta {
                        "version " span #version { (s.version) }
                        " · up " span #uptime title={ "since " (s.started_at) } { (uptime(s.uptime_s)) }
                        " · " time datetime=(s.now) { (s.now) }
                        " · reloads every " (REFRESH_SECS) " s"
                    }
                }
                section.cards {
                    div.card #card-agents {
                        h2 { "Agents" }
                        div.big #agents-total data-count=(t.total) { (t.total) }
                        table.kv {
                            @for f in &FILTERS[1..] {
                                @let n = t.of(*f);
                                tr {
                                    td { a href=(href(l, |x| { x.status = *f; x.offset = 0; })) { (status_label(*f)) } }
                                    td.n.bad[*f == StatusFilter::Silent && n > 0] id={ "agents-" (f.as_str()) } data-count=(n) { (n) }
                                }
                            }
                        }
                    }
                    div.card #card-events {
                        h2 { "Events per second" }
                        (windows(&s.events_per_s, "events-rate"))
                        (sparkline(&s.history.events_per_s, span, "spark-ev", "events per second, last hour"))
                        p.meta { span #events-total data-count=(s.events_total) { (s.events_total) } " accepted since start" }
                    }
                    div.card #card-rejects {
                        h2 { "Rejects per second" }
                        (windows(&s.rejects_per_s, "rejects-rate"))
                        (sparkline(&s.history.rejects_per_s, span, "spark-rj", "rejected messages per second, last hour"))
                        @if rejecting.is_empty() {
                            p.meta #rejects-none { "no message rejected since start" }
                        } @else {
                            table.kv #rejects {
                                tr { th { "reason" } th { "1 min" } th { "5 min" } th { "15 min" } th { "total" } }
                                @for r in &rejecting {
                                    tr data-kind=(r.kind) {
                                        td.bad { (r.kind) }
                                        td.n { (rate(r.per_s.m1)) }
                                        td.n { (rate(r.per_s.m5)) }
                                        td.n { (rate(r.per_s.m15)) }
                                        td.n data-count=(r.total) { (r.total) }
                                    }
                                }
                            }
                        }
                    }
                    div.card #card-store {
                        h2 { "Store" }
                        table.kv {
                            tr { td { "writes" } td.n #store-up {
                                @if s.store.up { span.good { "up" } } @else { span.bad { "failing" } }
                            } }
                            tr { td { "batch commit p50" } td.n #commit-p50 { (secs(s.store.commit_p50_s)) } }
                            tr { td { "batch commit p99" } td.n #commit-p99 { (secs(s.store.commit_p99_s)) } }
                            tr { td { "commits, last " (s.store.window_s / 60) " min" } td.n { (s.store.commits) } }
                            tr { td { "events stored" } td.n { (s.store.events_stored_total) } }
                            tr { td { "queue" } td.n #queue-depth data-count=(s.queue.depth) { (s.queue.depth) " / " (s.queue.capacity) } }
                            @if let Some(sp) = &s.spool {
                                tr { td { "spool" } td.n.bad[sp.full] #spool-bytes {
                                    (bytes(sp.bytes)) " in " (sp.segments) " segment" @if sp.segments != 1 { "s" }
                                    @if sp.full { " · full" }
                                } }
                                tr { td { "oldest not stored" } td.n #spool-age {
                                    @if sp.oldest_age_s > 0.0 { (format!("{:.1} s", sp.oldest_age_s)) } @else { "none" }
                                } }
                            } @else {
                                tr { td { "spool" } td.n.muted { "off (memory queue)" } }
                            }
                        }
                    }
                }
                section #agents-section {
                    nav.filters {
                        @for f in FILTERS {
                            a class=[(l.status == f).then_some("on")] href=(href(l, |x| { x.status = f; x.offset = 0; })) {
                                (status_label(f)) " " span.muted { (t.of(f)) }
                            }
                        }
                        form method="get" action="/" {
                            @if l.status != StatusFilter::All { input type="hidden" name="status" value=(l.status.as_str()); }
                            @if l.sort != SortKey::Default { input type="hidden" name="sort" value=(l.sort.as_str()); }
                            input type="search" name="q" value=(l.q) placeholder="ID, name or IP" aria-label="filter agents by ID, name or IP";
                            button type="submit" { "Filter" }
                        }
                    }
                    div.table-wrap {
                        table.agents #agents {
                            thead { tr {
                                (th(l, SortKey::Id, "ID", false))
                                (th(l, SortKey::Name, "Name", false))
                                (th(l, SortKey::Status, "Status", false))
                                (th(l, SortKey::LastSeen, "Last seen", false))
                                (th(l, SortKey::Ip, "IP", false))
                                (th(l, SortKey::Version, "Version", false))
                                (th(l, SortKey::Os, "OS", false))
                                (th(l, SortKey::Events, "Events (1 h)", true))
                                (th(l, SortKey::Reject, "Last reject", false))
                            } }
                            tbody {
                                @for a in &page.agents { (row(a, s)) }
                            }
                        }
                        @if page.agents.is_empty() {
                            p.empty { "No agent matches." }
                        }
                    }
                    nav.pages {
                        @if l.offset > 0 {
                            a #prev href=(href(l, |x| x.offset = x.offset.saturating_sub(x.limit))) { "← previous" }
                        }
                        span #page-range {
                            @if page.agents.is_empty() { "0" } @else { (page.offset + 1) "–" (page.offset + page.agents.len()) }
                            " of " (page.matched)
                        }
                        @if (page.offset + page.agents.len()) < page.matched as usize {
                            a #next href=(href(l, |x| x.offset = x.offset.saturating_add(x.limit))) { "next →" }
                        }
                        span { "· silent: no keepalive for more than " (s.disconnect_after_s) " s" }
                    }
                }
            }
        }
    }
}

/// A sortable column header.
fn th(l: &Listing, key: SortKey, label: &str, numeric: bool) -> Markup {
    let on = l.sort == key;
    let link = href(l, |x| {
        x.desc = if on { !x.desc } else { key.natural_desc() };
        x.sort = key;
        x.offset = 0;
    });
    html! {
        th class=[numeric.then_some("n")] aria-sort=[on.then_some(if l.desc { "descending" } else { "ascending" })] {
            a href=(link) { (label) @if on { @if l.desc { " ▼" } @else { " ▲" } } }
        }
    }
}

fn row(a: &AgentRow, s: &Stats) -> Markup {
    let dash = || html! { span.muted { "–" } };
    html! {
        tr.silent[a.silent] data-agent=(a.id) data-status=(a.status) data-silent=(a.silent) {
            td { (a.id) }
            td { (a.name) }
            td {
                span class={ "badge st-" (a.status) } { (a.status.replace('_', " ")) }
                @if a.silent { " " span.badge.bad title="no keepalive for longer than --disconnect-after" { "silent" } }
            }
            td.seen title=[a.last_seen.as_deref()] {
                @match a.last_seen_ago_s { Some(secs) => (ago(secs)), None => span.muted { "never" } }
            }
            td { @match &a.ip { Some(ip) => (ip), None => (dash()) } }
            td { @match &a.version { Some(v) => (v), None => (dash()) } }
            td { @match &a.os { Some(v) => (v), None => (dash()) } }
            td.n.events { (a.events_last_hour) }
            td.reject {
                @match &a.last_reject {
                    Some(r) => {
                        span.bad data-kind=(r.kind) { (r.kind) }
                        " " span.muted title=(r.at) { (ago(s.now_us / 1_000_000 - r.at_s)) }
                    }
                    None => (dash()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_listing_and_leave_out_defaults() {
        let l = Listing::default();
        assert_eq!(href(&l, |_| {}), "/");
        let l = Listing {
            status: StatusFilter::Silent,
            q: "web 01&x".into(),
            sort: SortKey::Events,
            desc: true,
            limit: 100,
            offset: 200,
        };
        assert_eq!(
            href(&l, |_| {}),
            "/?status=silent&q=web%2001%26x&sort=events&offset=200"
        );
        assert_eq!(
            href(&l, |x| x.desc = false),
            "/?status=silent&q=web%2001%26x&sort=events&order=asc&offset=200"
        );
    }

    #[test]
    fn human_figures() {
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(42), "42 s ago");
        assert_eq!(ago(600), "10 min ago");
        assert_eq!(ago(3 * 3600), "3 h ago");
        assert_eq!(ago(5 * 86_400), "5 d ago");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(0.123), "0.12");
        assert_eq!(rate(12.34), "12.3");
        assert_eq!(rate(1234.5), "1234");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(uptime(3725), "1 h 2 min");
        assert_eq!(secs(Some(0.0042)), "4.2 ms");
    }

    #[test]
    fn sparkline_is_inline_svg() {
        let m = sparkline(&[0.0, 1.0, 4.0], 30, "spark-ev", "x").into_string();
        assert!(m.starts_with("<svg"), "{m}");
        assert!(m.contains("<polyline points=\""), "{m}");
        assert!(m.contains("peak 4.00/s"), "{m}");
        let empty = sparkline(&[], 0, "spark-ev", "x").into_string();
        assert!(!empty.contains("polyline"));
        let one = sparkline(&[2.0], 5, "spark-ev", "x").into_string();
        assert!(one.contains("points=\"0.0,1.0 360.0,1.0\""), "{one}");
    }
}
