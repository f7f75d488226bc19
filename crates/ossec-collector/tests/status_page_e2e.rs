//! The status page and its JSON, end to end.
//!
//! * In a real browser: headless Chromium (driven through chromedriver by
//!   fantoccini; both started here on free ports) loads `/` of a running
//!   collector whose agents are real protocol traffic — three active
//!   agents from the simulator, one that connected and then fell silent,
//!   one sending messages sealed with a wrong key, one that never
//!   connected. The rendered DOM must show the counts, the silent agent
//!   first and the reject reason; the browser must log no console error
//!   and request nothing but the collector. A screenshot goes to
//!   `target/status-page.png`.
//! * Over plain HTTP: the token (`--http-token-file`), the request limits,
//!   `/api/agents` paging and filters, `/api/stats` fields.
//! * 50,000 agents: the page renders well under a second.

mod common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ossec_agent_sim::agent::{Agent, Flavor};
use ossec_collector::agents::AgentTable;
use ossec_collector::history::{History, Sample};
use ossec_collector::http::api::Listing;
use ossec_collector::http::{self, HttpState};
use ossec_collector::metrics::Metrics;
use ossec_proto::{Cipher, ClientKeys};
use ossec_store::AgentStatus;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

// ---------------------------------------------------------------------------
// HTTP helpers

/// Sends `raw` and reads the answer to EOF: (status, head, body).
async fn raw_http(addr: SocketAddr, raw: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("an answer within 20 s")
        .expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    (code, head.to_owned(), body.to_owned())
}

async fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String, String) {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    raw_http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}\r\n").as_bytes(),
    )
    .await
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (code, _, body) = get(addr, path, None).await;
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

// ---------------------------------------------------------------------------
// Agents

/// A `client.keys` line with a random key.
fn key_line(id: &str, name: &str, rng: &mut impl Rng) -> String {
    let hex: String = (0..64)
        .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
        .collect();
    format!("{id} {name} any {hex}\n")
}

/// One agent over TCP that connects, says startup and a keepalive, sends a
/// few events, and then stays silent.
async fn fall_silent(keys: Arc<ClientKeys>, index: usize, server: SocketAddr) -> TcpAgent {
    let mut a = Agent::new(keys, index, Flavor::Wazuh, Cipher::Aes, 7);
    let mut t = TcpAgent::connect("127.0.0.1".parse().unwrap(), server).await;
    t.send(&a.startup().unwrap()).await;
    assert!(
        t.reply(Duration::from_secs(5)).await.is_some(),
        "startup ACK"
    );
    t.send(&a.keepalive(None).unwrap()).await;
    assert!(
        t.reply(Duration::from_secs(5)).await.is_some(),
        "keepalive ACK"
    );
    for _ in 0..3 {
        let now = ossec_store::now_micros();
        t.send(
            &a.event(ossec_agent_sim::EventKind::Syslog, now, false)
                .unwrap(),
        )
        .await;
    }
    t
}

/// The fleet of the browser test: 001–003 active (the simulator), 004
/// silent, 005 sends with a wrong key, 006 never connects.
struct Fleet {
    keys: String,
    active: Arc<ClientKeys>,
    all: Arc<ClientKeys>,
    wrong_005: Arc<ClientKeys>,
}

fn fleet() -> Fleet {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5747);
    let names = [
        ("001", "web-01"),
        ("002", "web-02"),
        ("003", "db-01"),
        ("004", "mail-01"),
        ("005", "build-01"),
        ("006", "printer-01"),
    ];
    let lines: Vec<String> = names
        .iter()
        .map(|(id, n)| key_line(id, n, &mut rng))
        .collect();
    let keys = lines.concat();
    let parse = |t: &str| Arc::new(ClientKeys::parse(t.as_bytes()).unwrap());
    Fleet {
        active: parse(&lines[..3].concat()),
        all: parse(&keys),
        wrong_005: parse(&key_line("005", "build-01", &mut rng)),
        keys,
    }
}

// ---------------------------------------------------------------------------
// The browser

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver and the browser it started (its own process group),
        // also when the test failed before closing the session.
        // SAFETY: kill(2) on the process group this test made.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

async fn chromedriver() -> Driver {
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
        "this test needs Chromium: apt-get install chromium chromium-driver (.ci/run does)"
    );
    for _ in 0..5 {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut d = Driver {
            child,
            url: format!("http://127.0.0.1:{port}/"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = d.child.try_wait() {
                break; // lost the port to someone else: try another
            }
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = d.child.kill();
    }
    panic!("chromedriver did not start");
}

async fn browser(driver: &Driver) -> fantoccini::Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1440,780", "--hide-scrollbars", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-default-apps",
                // Air-gapped: any name but the collector's address fails.
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--force-device-scale-factor=1",
            ],
        },
        "goog:loggingPrefs": { "browser": "ALL", "performance": "ALL" },
    });
    let caps = match caps {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// chromedriver's log endpoint (`browser`: the console; `performance`:
/// DevTools events, network requests among them).
#[derive(Debug)]
struct GetLog(&'static str);

impl fantoccini::wd::WebDriverCompatibleCommand for GetLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(serde_json::json!({ "type": self.0 }).to_string()),
        )
    }
}

async fn log(c: &fantoccini::Client, kind: &'static str) -> Vec<Value> {
    match c.issue_cmd(GetLog(kind)).await.expect("se/log") {
        Value::Array(v) => v,
        other => panic!("log {kind}: {other}"),
    }
}

/// Every URL the page requested (from the DevTools network events).
fn requested_urls(perf: &[Value]) -> Vec<String> {
    perf.iter()
        .filter_map(|e| e["message"].as_str())
        .filter_map(|m| serde_json::from_str::<Value>(m).ok())
        .filter(|m| m["message"]["method"] == "Network.requestWillBeSent")
        .filter_map(|m| {
            m["message"]["params"]["request"]["url"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

async fn attr(c: &fantoccini::Client, css: &str, name: &str) -> String {
    c.find(fantoccini::Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .attr(name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{css} has no {name}"))
}

async fn text(c: &fantoccini::Client, css: &str) -> String {
    c.find(fantoccini::Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_a_browser() {
    let f = fleet();
    let db = TestDb::new(Backend::Sqlite).await;
    let c = start(&f.keys, &db, |a| {
        a.metrics_listen = Some("127.0.0.1:0".into());
        a.disconnect_after = Some(3);
    })
    .await;
    let http_addr = c.running.metrics_addr.unwrap();

    // 004 connects, then says nothing more.
    let _silent = fall_silent(f.all.clone(), 3, c.addr).await;
    // 001–003: the simulator, keepalives every second.
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut cfg = ossec_agent_sim::SimConfig::new(c.addr, f.active.clone());
    cfg.eps = 30.0;
    cfg.duration = Duration::from_secs(120);
    cfg.keepalive = Duration::from_secs(1);
    cfg.zlib_level = 1;
    let sim = tokio::spawn(ossec_agent_sim::run(cfg, stop_rx));
    // 005: the right ID with the wrong key, over UDP.
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut bad = Agent::new(f.wrong_005.clone(), 0, Flavor::Wazuh, Cipher::Aes, 9);
    for _ in 0..3 {
        udp.send_to(&bad.keepalive(None).unwrap(), c.addr)
            .await
            .unwrap();
    }

    // Until 004 is silent (and swept to disconnected) and the others active.
    let table = c.running.table.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let set = table.snapshot();
        let st = |i: usize| set.agents[i].state.lock().record.status;
        let rejected = set.agents[4].last_reject().is_some();
        if (0..3).all(|i| st(i) == AgentStatus::Active)
            && st(3) == AgentStatus::Disconnected
            && rejected
        {
            break;
        }
        assert!(Instant::now() < deadline, "fleet never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A few more seconds of traffic, for the rates and the sparkline.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let driver = chromedriver().await;
    let b = browser(&driver).await;
    let base = format!("http://{http_addr}/");
    b.goto(&base).await.unwrap();
    b.wait()
        .for_element(fantoccini::Locator::Css("table#agents tbody tr"))
        .await
        .unwrap();

    // Totals.
    let count = |id: &'static str| {
        let b = &b;
        async move { attr(b, &format!("#{id}"), "data-count").await }
    };
    assert_eq!(count("agents-total").await, "6");
    assert_eq!(count("agents-active").await, "3");
    assert_eq!(count("agents-disconnected").await, "1");
    assert_eq!(count("agents-never_connected").await, "2");
    assert_eq!(count("agents-pending").await, "0");
    assert_eq!(count("agents-silent").await, "1");
    // The silent agent first.
    let rows = b
        .find_all(fantoccini::Locator::Css("table#agents tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 6);
    assert_eq!(
        rows[0].attr("data-agent").await.unwrap().as_deref(),
        Some("004")
    );
    assert_eq!(
        rows[0].attr("data-silent").await.unwrap().as_deref(),
        Some("true")
    );
    assert!(rows[0].text().await.unwrap().contains("mail-01"));
    // The others by ID, none silent.
    let mut ids = Vec::new();
    for r in &rows[1..] {
        ids.push(r.attr("data-agent").await.unwrap().unwrap());
        assert_eq!(
            r.attr("data-silent").await.unwrap().as_deref(),
            Some("false")
        );
    }
    assert_eq!(ids, ["001", "002", "003", "005", "006"]);
    // The reject reason of 005, and in the totals.
    assert!(
        text(&b, "tr[data-agent='005'] td.reject")
            .await
            .contains("decrypt"),
        "reject reason shown"
    );
    let decrypts: u64 = attr(
        &b,
        "#rejects tr[data-kind='decrypt'] td[data-count]",
        "data-count",
    )
    .await
    .parse()
    .unwrap();
    assert!(decrypts >= 3, "{decrypts}");
    // Active agents sent events: counted per agent and in the rates.
    let events_001: u64 = text(&b, "tr[data-agent='001'] td.events")
        .await
        .parse()
        .unwrap();
    assert!(events_001 > 0);
    assert_eq!(text(&b, "tr[data-agent='006'] td.events").await, "0");
    let rate_1m: f64 = text(&b, "#events-rate [data-window='1m']")
        .await
        .parse()
        .unwrap();
    assert!(rate_1m > 0.0, "events/s over 1 min");
    assert!(
        text(&b, "tr[data-agent='001']").await.contains("Wazuh"),
        "version shown"
    );
    assert!(
        b.find(fantoccini::Locator::Css("#card-events svg polyline"))
            .await
            .is_ok(),
        "sparkline drawn"
    );

    // A filter by status and one by name are plain links/forms.
    b.goto(&format!("{base}?status=silent")).await.unwrap();
    let rows = b
        .find_all(fantoccini::Locator::Css("table#agents tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    b.goto(&base).await.unwrap();
    let q = b
        .find(fantoccini::Locator::Css("input[name=q]"))
        .await
        .unwrap();
    q.send_keys("web").await.unwrap();
    b.find(fantoccini::Locator::Css("form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait()
        .for_url(&url::Url::parse(&format!("{base}?q=web")).unwrap())
        .await
        .unwrap();
    let rows = b
        .find_all(fantoccini::Locator::Css("table#agents tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "web-01 and web-02");
    // Sorting by a column header.
    b.goto(&base).await.unwrap();
    b.find(fantoccini::Locator::LinkText("Name"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait()
        .for_element(fantoccini::Locator::Css("th[aria-sort=ascending]"))
        .await
        .unwrap();
    let first = b
        .find(fantoccini::Locator::Css("table#agents tbody tr"))
        .await
        .unwrap();
    assert_eq!(
        first.attr("data-agent").await.unwrap().as_deref(),
        Some("005"),
        "build-01 first by name"
    );

    // The screenshot of the default view. For the README's
    // (UPDATE_SCREENSHOT=1), 70 s more of traffic first, with a few
    // bursts of bad messages, so that the sparklines have a shape.
    let for_docs = std::env::var_os("UPDATE_SCREENSHOT").is_some();
    if for_docs {
        for burst in [0, 12, 3, 20, 0, 8, 15] {
            for _ in 0..burst {
                udp.send_to(&bad.keepalive(None).unwrap(), c.addr)
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }
    b.goto(&base).await.unwrap();
    b.wait()
        .for_element(fantoccini::Locator::Css("table#agents tbody tr"))
        .await
        .unwrap();
    let png = b.screenshot().await.unwrap();
    let target = repo("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("status-page.png"), &png).unwrap();
    if for_docs {
        std::fs::write(repo("docs/status-page.png"), &png).unwrap();
    }

    // No console errors, nothing requested from anywhere but the collector.
    let console = log(&b, "browser").await;
    let errors: Vec<&Value> = console.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    let urls = requested_urls(&log(&b, "performance").await);
    assert!(!urls.is_empty(), "the performance log saw the page load");
    let foreign: Vec<&String> = urls.iter().filter(|u| !u.starts_with(&base)).collect();
    assert!(foreign.is_empty(), "requests to other hosts: {foreign:?}");

    b.close().await.unwrap();
    drop(driver);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), sim).await;
    c.running.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------
// Plain HTTP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guards_everything_but_health() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "t0k3n-secret\n").unwrap();
    let keys = loopback_vector_keys();
    let c = start(&keys, &db, |a| {
        a.metrics_listen = Some("127.0.0.1:0".into());
        a.http_token_file = Some(token_file.clone());
    })
    .await;
    let addr = c.running.metrics_addr.unwrap();
    for path in ["/", "/metrics", "/api/agents", "/api/stats"] {
        let (code, head, _) = get(addr, path, None).await;
        assert_eq!(code, 401, "{path} without a token");
        assert!(
            head.to_lowercase().contains("www-authenticate: bearer"),
            "{head}"
        );
        let (code, _, _) = get(addr, path, Some("Bearer wrong")).await;
        assert_eq!(code, 401, "{path} with a wrong token");
        let (code, _, body) = get(addr, path, Some("Bearer t0k3n-secret")).await;
        assert_eq!(code, 200, "{path} with the token: {body}");
        // A browser: Basic, any user, the token as the password.
        let (code, _, _) = get(addr, path, Some("Basic b3A6dDBrM24tc2VjcmV0")).await;
        assert_eq!(code, 200, "{path} with Basic op:token");
    }
    let (code, _, body) = get(addr, "/health", None).await;
    assert_eq!(code, 200, "/health needs no token: {body}");
    // Unknown routes say nothing more with or without the token.
    assert_eq!(get(addr, "/nope", None).await.0, 404);
    c.running.shutdown().await.unwrap();

    // An empty token file is refused at start.
    std::fs::write(&token_file, "\n").unwrap();
    let mut args = ossec_collector::config::ServeArgs {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        database_url: Some(db.url.clone()),
        metrics_listen: Some("127.0.0.1:0".into()),
        http_token_file: Some(token_file.clone()),
        spool_dir: Some("off".into()),
        ..Default::default()
    };
    args.keys = None;
    let e = match ossec_collector::server::start(args.resolve().unwrap()).await {
        Ok(_) => panic!("started with an empty token"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("token file") && e.contains("empty"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_bounded_in_size_and_time() {
    let db = TestDb::new(Backend::Sqlite).await;
    let c = start(&loopback_vector_keys(), &db, |a| {
        a.metrics_listen = Some("127.0.0.1:0".into());
    })
    .await;
    let addr = c.running.metrics_addr.unwrap();
    // Headers beyond 16 KiB.
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let (code, _, _) = raw_http(addr, big.as_bytes()).await;
    assert_eq!(code, 431, "oversized head");
    // A body beyond 1 KiB.
    let (code, _, _) = raw_http(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nxx",
    )
    .await;
    assert_eq!(code, 413, "oversized body");
    // Methods and routes.
    let (code, _, _) = raw_http(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(code, 405);
    let (code, _, _) = raw_http(addr, b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(code, 404);
    // Garbage.
    let (code, _, _) = raw_http(addr, b"\x16\x03\x01 not http at all\r\n\r\n").await;
    assert_eq!(code, 400);
    // A client that never finishes its headers is cut off after 5 s.
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "slow client not cut off");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // One request per connection: the server closes after answering.
    let (code, head, _) = get(addr, "/health", None).await;
    assert_eq!(code, 200);
    assert!(head.to_lowercase().contains("connection: close"), "{head}");
    // Bad query values are named.
    let (code, _, body) = get(addr, "/api/agents?limit=lots", None).await;
    assert_eq!(code, 400);
    assert!(body.contains("limit"), "{body}");
    let (code, _, body) = get(addr, "/?status=zombie", None).await;
    assert_eq!(code, 400);
    assert!(body.contains("status"), "{body}");
    // The page forbids loading anything from elsewhere.
    let (code, head, _) = get(addr, "/", None).await;
    assert_eq!(code, 200);
    assert!(
        head.to_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    c.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_agents_pages_and_filters_and_api_stats_fields() {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let keys: String = (1..=250)
        .map(|i| {
            let name = if i % 10 == 0 {
                format!("web-{i:03}")
            } else {
                format!("host-{i:03}")
            };
            key_line(&format!("{i:03}"), &name, &mut rng)
        })
        .collect();
    let all = Arc::new(ClientKeys::parse(keys.as_bytes()).unwrap());
    let db = TestDb::new(Backend::Sqlite).await;
    let c = start(&keys, &db, |a| {
        a.metrics_listen = Some("127.0.0.1:0".into());
    })
    .await;
    let addr = c.running.metrics_addr.unwrap();
    // Agents 001–004 connect (startup + keepalive) and send events.
    let mut conns = Vec::new();
    for i in 0..4 {
        conns.push(fall_silent(all.clone(), i, c.addr).await);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = get_json(addr, "/api/agents?status=active").await;
        let s = get_json(addr, "/api/stats").await;
        if v["matched"] == 4 && s["events_total"] == 12 {
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Paging: 250 agents, 100 by default, then the rest.
    let p1 = get_json(addr, "/api/agents").await;
    assert_eq!(p1["matched"], 250);
    assert_eq!(p1["limit"], 100);
    assert_eq!(p1["agents"].as_array().unwrap().len(), 100);
    assert_eq!(p1["totals"]["total"], 250);
    assert_eq!(p1["totals"]["active"], 4);
    assert_eq!(p1["totals"]["never_connected"], 246);
    let p3 = get_json(addr, "/api/agents?offset=200&limit=100").await;
    assert_eq!(p3["agents"].as_array().unwrap().len(), 50);
    assert_eq!(p3["agents"][0]["id"], "201");
    let past = get_json(addr, "/api/agents?offset=1000").await;
    assert_eq!(past["agents"].as_array().unwrap().len(), 0);
    let capped = get_json(addr, "/api/agents?limit=100000").await;
    assert_eq!(capped["limit"], 1000);
    assert_eq!(capped["agents"].as_array().unwrap().len(), 250);
    // Every field of a row.
    let a = &get_json(addr, "/api/agents?q=host-001").await["agents"][0];
    for field in [
        "id",
        "name",
        "status",
        "silent",
        "last_seen",
        "last_seen_ago_s",
        "last_keepalive",
        "ip",
        "version",
        "os",
        "events_last_hour",
        "last_reject",
    ] {
        assert!(a.get(field).is_some(), "agent field {field}: {a}");
    }
    assert_eq!(a["id"], "001");
    assert_eq!(a["status"], "active");
    assert_eq!(a["events_last_hour"], 3);
    assert_eq!(a["ip"], "127.0.0.1");
    assert!(a["version"].as_str().unwrap().contains("Wazuh"), "{a}");
    // Filters: status, text (case-insensitive, ID, name or IP).
    let web = get_json(addr, "/api/agents?q=WEB&limit=1000").await;
    assert_eq!(web["matched"], 25);
    assert!(web["agents"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["name"].as_str().unwrap().starts_with("web-")));
    let never = get_json(addr, "/api/agents?status=never_connected&q=web").await;
    assert_eq!(never["matched"], 25);
    let by_ip = get_json(addr, "/api/agents?q=127.0.0.1").await;
    assert_eq!(by_ip["matched"], 4);
    // Sorting: by name descending; by events, busiest first.
    let desc = get_json(addr, "/api/agents?sort=name&order=desc&limit=1").await;
    assert_eq!(desc["agents"][0]["name"], "web-250");
    let busy = get_json(addr, "/api/agents?sort=events&limit=4").await;
    assert!(busy["agents"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["events_last_hour"] == 3));

    // /api/stats.
    let s = get_json(addr, "/api/stats").await;
    for field in [
        "version",
        "instance",
        "started_at",
        "uptime_s",
        "now",
        "disconnect_after_s",
        "agents",
        "events_per_s",
        "events_total",
        "rejects_per_s",
        "rejects",
        "store",
        "queue",
        "spool",
        "history",
    ] {
        assert!(s.get(field).is_some(), "stats field {field}: {s}");
    }
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["agents"]["total"], 250);
    assert_eq!(s["agents"]["active"], 4);
    assert_eq!(s["events_total"], 12);
    for w in ["1m", "5m", "15m"] {
        assert!(s["events_per_s"][w].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["rejects_per_s"][w].as_f64().is_some());
    }
    let kinds: Vec<&str> = s["rejects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 8, "{kinds:?}");
    assert!(kinds.contains(&"decrypt") && kinds.contains(&"replay"));
    for f in [
        "up",
        "commit_p50_s",
        "commit_p99_s",
        "commits",
        "window_s",
        "events_stored_total",
    ] {
        assert!(s["store"].get(f).is_some(), "store.{f}");
    }
    assert_eq!(s["store"]["up"], true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_json(addr, "/api/stats").await["store"]["events_stored_total"] != 12 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = get_json(addr, "/api/stats").await;
    assert!(s["store"]["commit_p50_s"].as_f64().unwrap() > 0.0, "{s}");
    assert!(s["store"]["commits"].as_u64().unwrap() >= 1);
    assert_eq!(s["queue"]["capacity"], 200_000);
    for f in ["bytes", "segments", "oldest_age_s", "full"] {
        assert!(s["spool"].get(f).is_some(), "spool.{f}: {s}");
    }
    assert_eq!(s["history"]["step_s"], 10);
    let n = s["history"]["at"].as_array().unwrap().len();
    assert!(n >= 1);
    assert_eq!(s["history"]["events_per_s"].as_array().unwrap().len(), n);
    assert_eq!(s["history"]["rejects_per_s"].as_array().unwrap().len(), n);
    // /metrics exports the process and build metrics the dashboard uses.
    let (_, _, m) = get(addr, "/metrics", None).await;
    for name in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_start_time_seconds ",
        "process_open_fds ",
        "ossec_build_info{version=",
        "ossec_events_queued_total 12",
    ] {
        assert!(m.lines().any(|l| l.starts_with(name)), "{name} in /metrics");
    }
    drop(conns);
    c.running.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------
// 50,000 agents

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_of_50k_agents_renders_well_under_a_second() {
    const N: usize = 50_000;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(50_000);
    let text: String = (1..=N)
        .map(|i| key_line(&format!("{i:05}"), &format!("host-{i:05}"), &mut rng))
        .collect();
    let keys = ClientKeys::parse(text.as_bytes()).unwrap();
    let table = Arc::new(AgentTable::new(keys, Vec::new()));
    // A lived-in fleet: most active, some silent, some rejected.
    let now = ossec_store::now_micros();
    for (i, a) in table.snapshot().agents.iter().enumerate() {
        let mut st = a.state.lock();
        let r = &mut st.record;
        r.status = match i % 10 {
            0 => AgentStatus::NeverConnected,
            1 => AgentStatus::Disconnected,
            2 => AgentStatus::Pending,
            _ => AgentStatus::Active,
        };
        if r.status != AgentStatus::NeverConnected {
            let seen = now - (i as i64 % 3600) * 1_000_000;
            r.first_seen = Some(seen - 86_400_000_000);
            r.last_seen = Some(seen);
            r.last_keepalive = Some(seen);
            r.last_ip = Some(format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255));
            r.version = Some("Wazuh v4.14.7".into());
            r.os_name = Some("Ubuntu".into());
            r.os_version = Some("22.04.3 LTS".into());
            for k in 0..(i % 50) {
                st.activity.event(now - k as i64 * 1_000_000);
            }
        }
        drop(st);
        if i % 97 == 0 {
            a.note_reject(ossec_proto::RejectKind::Decrypt, now);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store =
        ossec_store::Store::connect(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .unwrap();
    let metrics = Metrics::new();
    let (tx, _rx) = tokio::sync::mpsc::channel(10);
    let state = Arc::new(HttpState {
        metrics: metrics.clone(),
        table,
        store,
        queue: tx.downgrade(),
        queue_capacity: 10,
        ready: true.into(),
        token: None,
        history: History::new(Sample::now(&metrics)),
        disconnect_after: Duration::from_secs(900),
        instance: "bench".into(),
        started_at_us: now,
    });

    // The render itself, for a few listings.
    let mut report = Vec::new();
    for (label, q) in [
        ("default (silent first)", ""),
        ("filter by name", "q=host-4"),
        ("silent only", "status=silent"),
        ("sort by events", "sort=events"),
        ("sort by IP, page 100", "sort=ip&offset=9900"),
    ] {
        let query: ossec_collector::http::api::AgentQuery =
            serde_json::from_value(parse_query(q)).unwrap();
        let l = Listing::parse(&query).unwrap();
        let mut best = Duration::MAX;
        let mut html = String::new();
        for _ in 0..3 {
            let t = Instant::now();
            html = ossec_collector::http::page::render(&state, &l, ossec_store::now_micros());
            best = best.min(t.elapsed());
        }
        assert_eq!(html.matches(" data-agent=").count(), 100, "{label}");
        report.push(format!("{label}: {best:?} ({} KB)", html.len() / 1024));
        assert!(best < Duration::from_millis(500), "{label}: {best:?}");
    }
    // Over HTTP, as a browser gets it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(http::serve(listener, state.clone(), stop_rx));
    let t = Instant::now();
    let (code, _, body) = get(addr, "/", None).await;
    let over_http = t.elapsed();
    assert_eq!(code, 200);
    assert_eq!(body.matches(" data-agent=").count(), 100);
    assert!(body.contains("data-count=\"50000\""));
    report.push(format!("GET / over HTTP: {over_http:?}"));
    assert!(over_http < Duration::from_millis(500), "{over_http:?}");
    let t = Instant::now();
    let v = get_json(addr, "/api/agents?status=active&limit=1000").await;
    report.push(format!("GET /api/agents (1000 rows): {:?}", t.elapsed()));
    assert_eq!(v["matched"], 35_000);
    eprintln!("50,000 agents:\n  {}", report.join("\n  "));
    let _ = stop.send(true);
    let _ = server.await;
}

/// `a=1&b=2` → a JSON object of strings (what the Query extractor gives).
fn parse_query(q: &str) -> Value {
    let mut m = serde_json::Map::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Value::Object(m)
}
