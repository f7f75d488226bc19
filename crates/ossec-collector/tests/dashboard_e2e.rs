//! The Grafana dashboard and the monitoring deployment files checked against
//! the code:
//!
//! * `deploy/grafana/ossec-collector.json` is importable by hand (every panel
//!   and query on the `${DS_PROMETHEUS}` input of `__inputs`) and
//!   provisionable (a data source variable of that name resolves it), and
//!   every query selects the `job` and `instance` variables;
//! * every metric that a panel or variable query uses is exported by a
//!   running collector: a real `serve` (SQLite, loopback, simulated agents,
//!   a bad message of a known agent, one failed enrollment connection) is
//!   scraped over HTTP and each name is looked up in the exposition (a
//!   histogram's `_bucket`/`_sum`/`_count` series must be there as such);
//! * the Grafana provisioning files, `deploy/prometheus.yml` and the compose
//!   profile `monitoring` parse and agree with each other and with the
//!   collector services of `docker-compose.yml` (and `promtool check config`
//!   passes where promtool is installed).
//!
//! No Docker, Grafana or Prometheus is needed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ossec_agent_sim::agent::generate_keys;
use ossec_agent_sim::sim::{SimConfig, TransportChoice};
use ossec_proto::ClientKeys;
use rand::SeedableRng;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yaml_rust2::{Yaml, YamlLoader};

const DASHBOARD: &str = "deploy/grafana/ossec-collector.json";
const DS_PROVISIONING: &str = "deploy/grafana/provisioning/datasources/prometheus.yml";
const DASH_PROVISIONING: &str = "deploy/grafana/provisioning/dashboards/ossec-collector.yml";
const PROMETHEUS: &str = "deploy/prometheus.yml";
const COMPOSE: &str = "docker-compose.yml";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

fn yaml(rel: &str) -> Yaml {
    let mut docs =
        YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "{rel}: one YAML document");
    docs.remove(0)
}

// ------------------------------------------------------------------ PromQL

/// A label matcher: (label, operator, value).
type Matcher = (String, String, String);

/// One vector selector of a PromQL expression: the metric name and its
/// label matchers.
#[derive(Debug, Clone, PartialEq)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
}

/// PromQL functions (Prometheus 3), lower case.
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "double_exponential_smoothing",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "info",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// Aggregation operators (may be followed by `by (…)` before their
/// parenthesis).
const AGGREGATIONS: &[&str] = &[
    "avg",
    "bottomk",
    "count",
    "count_values",
    "group",
    "limit_ratio",
    "limitk",
    "max",
    "min",
    "quantile",
    "stddev",
    "stdvar",
    "sum",
    "topk",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other keywords and literals that look like identifiers.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end",
];

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// Skips a quoted string starting at `i` (`"`, `'` or `` ` ``); returns the
/// index after it and its raw content.
fn skip_string(b: &[u8], i: usize) -> Result<(usize, String), String> {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == b'\\' && q != b'`' {
            j += 2;
            continue;
        }
        if b[j] == q {
            return Ok((j + 1, String::from_utf8_lossy(&b[i + 1..j]).into_owned()));
        }
        j += 1;
    }
    Err(format!("unterminated string at byte {i}"))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Index after the `close` that matches the `open` at `i`, skipping strings.
fn skip_group(b: &[u8], i: usize, open: u8, close: u8) -> Result<usize, String> {
    let mut depth = 0;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'"' | b'\'' | b'`' => {
                j = skip_string(b, j)?.0;
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    Err(format!("unbalanced `{}` at byte {i}", open as char))
}

/// Label matchers between `{` at `i` and its `}`; returns the index after it.
fn parse_matchers(b: &[u8], i: usize) -> Result<(usize, Vec<Matcher>), String> {
    let mut out = Vec::new();
    let mut j = i + 1;
    loop {
        j = skip_ws(b, j);
        while j < b.len() && b[j] == b',' {
            j = skip_ws(b, j + 1);
        }
        if j >= b.len() {
            return Err(format!("unterminated label matchers at byte {i}"));
        }
        if b[j] == b'}' {
            return Ok((j + 1, out));
        }
        if !is_ident_start(b[j]) {
            return Err(format!(
                "expected a label name at byte {j}, found `{}`",
                b[j] as char
            ));
        }
        let s = j;
        while j < b.len() && is_ident(b[j]) {
            j += 1;
        }
        let label = String::from_utf8_lossy(&b[s..j]).into_owned();
        j = skip_ws(b, j);
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| b[j..].starts_with(op.as_bytes()))
            .ok_or_else(|| format!("expected a matcher operator after `{label}`"))?;
        j = skip_ws(b, j + op.len());
        if j >= b.len() || !matches!(b[j], b'"' | b'\'' | b'`') {
            return Err(format!("expected a quoted value for `{label}{op}`"));
        }
        let (next, value) = skip_string(b, j)?;
        out.push((label, op.to_owned(), value));
        j = next;
    }
}

/// The vector selectors of a PromQL expression (with Grafana's `$variables`):
/// identifiers that are not functions, aggregations, keywords or label names
/// (in `{…}`, `by (…)`, `on (…)`, …), with their matchers. Strings, numbers,
/// durations, ranges (`[…]`) and Grafana variables are skipped. An unknown
/// identifier before `(` is an error (a misspelt function).
fn selectors(expr: &str) -> Result<Vec<Selector>, String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if matches!(c, b'"' | b'\'' | b'`') {
            i = skip_string(b, i)?.0;
        } else if c == b'[' {
            i = skip_group(b, i, b'[', b']')?;
        } else if c == b'{' {
            return Err(format!("a selector without a metric name at byte {i}"));
        } else if c == b'$' {
            // Grafana: $var, ${var}, ${var:format}, $__rate_interval.
            i += 1;
            if i < b.len() && b[i] == b'{' {
                i = skip_group(b, i, b'{', b'}')?;
            } else {
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            // 0.99, 1e-6, 0x1f, 5m (after offset).
            i += 1;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric()
                    || b[i] == b'.'
                    || b[i] == b'_'
                    || (matches!(b[i], b'+' | b'-') && matches!(b[i - 1], b'e' | b'E')))
            {
                i += 1;
            }
        } else if is_ident_start(c) {
            let s = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            let word = &expr[s..i];
            let lower = word.to_ascii_lowercase();
            let next = skip_ws(b, i);
            let paren = b.get(next) == Some(&b'(');
            if LABEL_LISTS.contains(&lower.as_str()) {
                if paren {
                    i = skip_group(b, next, b'(', b')')?;
                } else if !lower.starts_with("group_") {
                    return Err(format!("`{word}` without a label list"));
                }
            } else if AGGREGATIONS.contains(&lower.as_str())
                || FUNCTIONS.contains(&lower.as_str())
                || KEYWORDS.contains(&lower.as_str())
            {
                // Arguments are scanned like the rest of the expression.
            } else if paren {
                return Err(format!("unknown PromQL function `{word}`"));
            } else {
                let mut sel = Selector {
                    metric: word.to_owned(),
                    matchers: Vec::new(),
                };
                if b.get(next) == Some(&b'{') {
                    let (after, m) = parse_matchers(b, next)?;
                    sel.matchers = m;
                    i = after;
                }
                out.push(sel);
            }
        } else {
            // Operators, parentheses, commas.
            i += 1;
        }
    }
    Ok(out)
}

/// A Grafana Prometheus variable query: `label_values(selector, label)`,
/// `label_values(label)`, `query_result(expr)`, `metrics(regex)` or plain
/// PromQL. Returns the PromQL part whose metrics must exist, if any.
fn variable_promql(q: &str) -> Option<String> {
    let q = q.trim();
    if let Some(args) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        // The selector is everything before the last top-level comma.
        let b = args.as_bytes();
        let mut depth = 0;
        let mut last = None;
        let mut j = 0;
        while j < b.len() {
            match b[j] {
                b'"' | b'\'' | b'`' => {
                    j = skip_string(b, j).map(|x| x.0).unwrap_or(b.len());
                    continue;
                }
                b'(' | b'{' | b'[' => depth += 1,
                b')' | b'}' | b']' => depth -= 1,
                b',' if depth == 0 => last = Some(j),
                _ => {}
            }
            j += 1;
        }
        return last.map(|k| args[..k].to_owned());
    }
    if let Some(e) = q
        .strip_prefix("query_result(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return Some(e.to_owned());
    }
    if q.starts_with("metrics(") {
        return None;
    }
    Some(q.to_owned())
}

#[test]
fn promql_tokenizer_finds_metrics_not_functions_or_labels() {
    let names = |e: &str| -> Vec<String> {
        selectors(e)
            .unwrap_or_else(|err| panic!("{e}: {err}"))
            .into_iter()
            .map(|s| s.metric)
            .collect()
    };
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (instance, le) (rate(ossec_batch_write_seconds_bucket{job=~"$job", instance=~"$instance"}[$__rate_interval])))"#
        ),
        ["ossec_batch_write_seconds_bucket"]
    );
    assert_eq!(
        names(
            r#"sum by (instance) (rate(a_sum{x="}{ by(y)"}[5m])) / on (instance) group_left(job) sum without (kind) (rate(b_count[1m:15s] offset 5m))"#
        ),
        ["a_sum", "b_count"]
    );
    assert_eq!(
        names(
            r#"60 * SUM BY (outcome) (increase(ossec_enrollments_total[${__range}])) > bool 1e-3 and topk(10, x) or vector(0)"#
        ),
        ["ossec_enrollments_total", "x"]
    );
    assert_eq!(
        names(
            r#"label_replace(up{job="a"}, "dst", "$1", "instance", "(.*):\\d+") unless absent(ossec_store_up)"#
        ),
        ["up", "ossec_store_up"]
    );
    assert_eq!(
        names("max(a:recorded:rate5m / ignoring(le) b)"),
        ["a:recorded:rate5m", "b"]
    );
    let s = selectors(r#"m{job=~"$job",instance!="x\"y", le='0.5'}"#).unwrap();
    assert_eq!(
        s[0].matchers,
        [
            ("job".into(), "=~".into(), "$job".into()),
            ("instance".into(), "!=".into(), "x\\\"y".into()),
            ("le".into(), "=".into(), "0.5".into()),
        ]
    );
    assert!(selectors("rates(x[5m])").unwrap_err().contains("rates"));
    assert!(selectors(r#"{__name__="x"}"#).is_err());
    assert!(selectors(r#"x{a="b"#).is_err());
    assert_eq!(
        variable_promql(r#"label_values(ossec_store_up{job=~"$job"}, instance)"#).as_deref(),
        Some(r#"ossec_store_up{job=~"$job"}"#)
    );
    assert_eq!(variable_promql("label_values(job)"), None);
}

// ------------------------------------------------------------------ the exposition

/// The Prometheus text (or OpenMetrics) exposition: sample names with their
/// label text, and `# TYPE` declarations.
struct Exposition {
    samples: BTreeMap<String, Vec<String>>,
    types: BTreeMap<String, String>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut samples: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(n), Some(k)) = (it.next(), it.next()) {
                types.insert(n.to_owned(), k.to_owned());
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..end];
        let labels = if line[end..].starts_with('{') {
            let close = line.rfind('}').unwrap_or(line.len());
            line[end + 1..close].to_owned()
        } else {
            String::new()
        };
        samples.entry(name.to_owned()).or_default().push(labels);
    }
    Exposition { samples, types }
}

fn has_label(labels: &str, name: &str) -> bool {
    let key = format!("{name}=\"");
    labels.starts_with(&key) || labels.contains(&format!(",{key}"))
}

/// Whether `name` is a series of the scrape, and if not, why.
fn check_metric(name: &str, x: &Exposition) -> Result<(), String> {
    let histogram = |base: &str| {
        x.types
            .get(base)
            .is_some_and(|k| k == "histogram" || k == "gaugehistogram")
    };
    if let Some(series) = x.samples.get(name) {
        if let Some(base) = name.strip_suffix("_bucket") {
            if histogram(base) && !series.iter().any(|l| has_label(l, "le")) {
                return Err(format!(
                    "`{name}` has no `le` label in the scrape: {series:?}"
                ));
            }
        }
        return Ok(());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(kind) = x.types.get(base) {
                return Err(format!(
                    "`{name}` is not in the scrape (`{base}` is a {kind}, exported as {:?})",
                    x.samples
                        .keys()
                        .filter(|k| k.starts_with(base) && k.len() > base.len())
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    let family = x.types.get_key_value(name).or_else(|| {
        x.types
            .get_key_value(name.strip_suffix("_total").unwrap_or(name))
    });
    Err(match family {
        Some((_, k)) if k == "histogram" || k == "summary" => format!(
            "`{name}` is a {k}: there is no series of that name, query `{name}_bucket`, `{name}_sum` or `{name}_count`"
        ),
        Some((f, k)) => format!(
            "`{name}` is declared (# TYPE {f} {k}) but has no sample in the scrape"
        ),
        None => format!("`{name}` is not in the scrape"),
    })
}

// ------------------------------------------------------------------ the dashboard

/// Every panel, also those inside collapsed rows.
fn all_panels(d: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// (where, PromQL) of every panel query and every query variable.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            out.push((
                format!(
                    "panel {:?} (id {}) query {}",
                    p["title"].as_str().unwrap_or("?"),
                    p["id"],
                    t["refId"].as_str().unwrap_or("?")
                ),
                expr.to_owned(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = match &v["query"] {
            Value::String(s) => s.clone(),
            q => q["query"].as_str().unwrap_or_default().to_owned(),
        };
        if let Some(promql) = variable_promql(&q) {
            out.push((
                format!("variable {:?}", v["name"].as_str().unwrap_or("?")),
                promql,
            ));
        }
    }
    out
}

const DS_INPUT: &str = "${DS_PROMETHEUS}";

fn is_input_ds(v: &Value) -> bool {
    v["type"] == "prometheus" && v["uid"] == DS_INPUT
}

#[test]
fn dashboard_is_importable_and_provisionable() {
    let d = dashboard();
    // Importable by hand: one data source input, Prometheus.
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert_eq!(inputs.len(), 1, "one input: {inputs:?}");
    let input = &inputs[0];
    assert_eq!(input["name"], "DS_PROMETHEUS");
    assert_eq!(input["type"], "datasource");
    assert_eq!(input["pluginId"], "prometheus");
    let requires: BTreeSet<(String, String)> = d["__requires"]
        .as_array()
        .expect("__requires")
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap().to_owned(),
                r["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(requires.contains(&("datasource".into(), "prometheus".into())));
    assert!(requires.contains(&("grafana".into(), "grafana".into())));
    // The schema of Grafana 10.x/11.x (36: 10.0, 39: 10.4/11.0, 41: 11.x).
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(
        (36..=41).contains(&schema),
        "schemaVersion {schema}: one that Grafana 10 and 11 load"
    );
    assert!(d["id"].is_null(), "no database id in a shared dashboard");
    let uid = d["uid"].as_str().expect("a fixed uid (stable URLs)");
    assert!(!uid.is_empty() && uid.len() <= 40, "uid {uid:?}");
    assert!(!d["title"].as_str().unwrap_or_default().is_empty());

    // Only the declared input is referenced as ${DS_…}.
    let text = read(DASHBOARD);
    for (i, _) in text.match_indices("${DS_") {
        assert!(
            text[i..].starts_with(DS_INPUT),
            "an undeclared input at byte {i}: {}",
            &text[i..(i + 40).min(text.len())]
        );
    }

    // Provisionable: a data source variable DS_PROMETHEUS (no import form
    // replaces the input there), before every variable that uses it.
    let vars = d["templating"]["list"].as_array().expect("templating");
    let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    let ds_var = vars
        .iter()
        .position(|v| v["name"] == "DS_PROMETHEUS")
        .expect("a templating variable DS_PROMETHEUS");
    assert_eq!(vars[ds_var]["type"], "datasource");
    assert_eq!(vars[ds_var]["query"], "prometheus");
    for name in ["job", "instance"] {
        let i = names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("a variable `{name}`: {names:?}"));
        let v = &vars[i];
        assert!(i > ds_var, "`{name}` comes after DS_PROMETHEUS");
        assert_eq!(v["type"], "query", "{name}");
        assert!(is_input_ds(&v["datasource"]), "{name}: {}", v["datasource"]);
        assert_eq!(v["multi"], true, "{name}: several collectors at once");
        assert_eq!(v["includeAll"], true, "{name}: all collectors together");
        let all = v["allValue"].as_str().unwrap_or_default();
        assert!(all == ".+" || all == ".*", "{name} allValue {all:?}");
    }

    // Panels: unique ids, on the 24-column grid without overlaps, each on
    // the input data source, each query too.
    let panels = all_panels(&d);
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?").to_owned();
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "panel id {id} twice");
        let g = &p["gridPos"];
        let r = ["x", "y", "w", "h"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        });
        assert!(r[0] + r[2] <= 24 && r[2] > 0 && r[3] > 0, "{title}: {g}");
        for (other, o) in &boxes {
            let apart = r[0] + r[2] <= o[0]
                || o[0] + o[2] <= r[0]
                || r[1] + r[3] <= o[1]
                || o[1] + o[3] <= r[1];
            assert!(apart, "panels {title:?} and {other:?} overlap");
        }
        boxes.push((title.clone(), r));
        if p["type"] == "row" {
            continue;
        }
        assert!(
            is_input_ds(&p["datasource"]),
            "panel {title:?}: datasource must be {{type: prometheus, uid: {DS_INPUT}}}, is {}",
            p["datasource"]
        );
        let targets = p["targets"].as_array().filter(|t| !t.is_empty());
        let targets = targets.unwrap_or_else(|| panic!("panel {title:?} has no query"));
        let mut refs = BTreeSet::new();
        for t in targets {
            let r = t["refId"].as_str().unwrap_or_default();
            assert!(
                !r.is_empty() && refs.insert(r),
                "panel {title:?}: refId {r:?}"
            );
            assert!(
                t["datasource"].is_null() || is_input_ds(&t["datasource"]),
                "panel {title:?} query {r}: datasource {}",
                t["datasource"]
            );
            assert!(
                !t["expr"].as_str().unwrap_or_default().trim().is_empty(),
                "panel {title:?} query {r}: no expr"
            );
        }
    }

    // Every selector of every panel follows the job and instance
    // variables, so that replicas can be viewed together or apart.
    let mut problems = Vec::new();
    for (at, expr) in queries(&d) {
        let sels = selectors(&expr).unwrap_or_else(|e| panic!("{at}: {e}: {expr}"));
        assert!(!sels.is_empty(), "{at}: no metric in {expr}");
        if !at.starts_with("panel") {
            continue;
        }
        for s in sels {
            for (label, var) in [("job", "$job"), ("instance", "$instance")] {
                if !s
                    .matchers
                    .iter()
                    .any(|(l, op, v)| l == label && op == "=~" && v == var)
                {
                    problems.push(format!("{at}: `{}` lacks {label}=~\"{var}\"", s.metric));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The subjects the dashboard is for are all there.
    let used: BTreeSet<String> = queries(&d)
        .iter()
        .flat_map(|(_, e)| selectors(e).unwrap())
        .map(|s| s.metric)
        .collect();
    for m in [
        "ossec_messages_received_total",
        "ossec_events_stored_total",
        "ossec_messages_rejected_total",
        "ossec_queue_depth",
        "ossec_queue_capacity",
        "ossec_spool_bytes",
        "ossec_spool_oldest_event_age_seconds",
        "ossec_events_dropped_total",
        "ossec_batch_write_seconds_bucket",
        "ossec_store_up",
        "ossec_store_errors_total",
        "ossec_agents",
        "ossec_tcp_connections_open",
        "ossec_enrollments_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(m), "no panel shows {m}");
    }
}

// ------------------------------------------------------------------ the running collector

/// GET `path` over HTTP/1.1 (Connection: close): status and body, with a
/// chunked body decoded.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("no answer to GET {path} within 20 s"))
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head:?}"));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return (code, body.to_owned());
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    (code, out)
}

async fn scrape(addr: SocketAddr) -> String {
    let (code, body) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200, "GET /metrics: {body}");
    body
}

/// A running collector with real traffic; then every metric that the
/// dashboard uses must be in its `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_metrics_exist_in_a_running_collector() {
    let db = TestDb::new(Backend::Sqlite).await;
    let keys = generate_keys(3, &mut rand::rngs::StdRng::seed_from_u64(15));
    let c = start(&keys, &db, |a| {
        a.metrics_listen = Some("127.0.0.1:0".into());
        a.enroll_listen = Some("127.0.0.1:0".into());
    })
    .await;
    let metrics = c.running.metrics_addr.expect("metrics listener");

    // Agents 001 (TCP) and 002 (UDP) send events for a few seconds.
    let mut cfg = SimConfig::new(
        c.addr,
        Arc::new(ClientKeys::parse(keys.as_bytes()).unwrap()),
    );
    cfg.agents = 2;
    cfg.transport = TransportChoice::Mixed;
    cfg.eps = 40.0;
    cfg.duration = Duration::from_secs(3);
    cfg.ack_grace = Duration::from_secs(1);
    cfg.zlib_level = 6;
    cfg.seed = 15;
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let summary = ossec_agent_sim::sim::run(cfg, stop_rx)
        .await
        .expect("simulated agents");
    assert!(summary.sent > 0, "the simulator sent events: {summary:?}");

    // Agent 003 sends a message that does not decrypt (a reject counted
    // for that agent), and a client that does not speak TLS connects to the
    // enrollment port (an enrollment outcome).
    let udp = c.running.udp_addr.expect("UDP listener");
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut bad = b"!003!#AES:".to_vec();
    bad.extend([0x41u8; 64]);
    sock.send_to(&bad, udp).await.unwrap();
    let enroll = c.running.enroll_addr.expect("enrollment listener");
    let mut s = tokio::net::TcpStream::connect(enroll).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
    drop(s);

    // Wait until those show in the scrape (and events are stored).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = scrape(metrics).await;
        let x = parse_exposition(&text);
        let ready = [
            "ossec_agent_messages_rejected_total",
            "ossec_enrollments_total",
        ]
        .iter()
        .all(|n| x.samples.contains_key(*n))
            && c.running
                .metrics
                .events_stored
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0;
        if ready || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let x = parse_exposition(&text);

    let d = dashboard();
    let mut problems = Vec::new();
    let mut missing = BTreeSet::new();
    let mut checked = BTreeSet::new();
    for (at, expr) in queries(&d) {
        let sels = match selectors(&expr) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{at}: {e}: {expr}"));
                continue;
            }
        };
        let quantile = expr.contains("histogram_quantile");
        for s in sels {
            checked.insert(s.metric.clone());
            if let Err(why) = check_metric(&s.metric, &x) {
                problems.push(format!("{at}: {why}"));
                missing.insert(s.metric.clone());
                continue;
            }
            if quantile {
                let base = s.metric.strip_suffix("_bucket");
                let is_hist = base.is_some_and(|b| {
                    x.types
                        .get(b)
                        .is_some_and(|k| k == "histogram" || k == "gaugehistogram")
                });
                if !is_hist {
                    problems.push(format!(
                        "{at}: histogram_quantile over `{}`, which is not the _bucket series of a histogram",
                        s.metric
                    ));
                }
            }
        }
    }
    println!(
        "checked {} metrics against the scrape: {checked:?}",
        checked.len()
    );
    c.running.shutdown().await.unwrap();
    assert!(
        problems.is_empty(),
        "{DASHBOARD} uses metrics that a running collector does not export:\n  {}\nmissing: {}\n\nthe scrape:\n{text}",
        problems.join("\n  "),
        missing.into_iter().collect::<Vec<_>>().join(", ")
    );
}

// ------------------------------------------------------------------ deployment files

fn scalar(y: &Yaml) -> String {
    match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("expected a list, got {y:?}"))
        .iter()
        .map(scalar)
        .collect()
}

fn env_map(service: &Yaml) -> BTreeMap<String, String> {
    match &service["environment"] {
        Yaml::Hash(h) => h.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Yaml::Array(a) => a
            .iter()
            .map(|e| {
                let e = scalar(e);
                let (k, v) = e.split_once('=').unwrap_or((&e, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A service's bind mounts of repository paths: (repository path, target).
fn bind_mounts(service: &Yaml) -> Vec<(String, String)> {
    strings(&service["volumes"])
        .into_iter()
        .filter_map(|v| {
            let mut parts = v.splitn(3, ':');
            let src = parts.next()?;
            let dst = parts.next()?;
            let src = src.strip_prefix("./")?;
            Some((src.trim_end_matches('/').to_owned(), dst.to_owned()))
        })
        .collect()
}

/// The repository file that a container path comes from, through `mounts`.
fn host_path(mounts: &[(String, String)], container: &str) -> Option<PathBuf> {
    // The most specific mount wins, as in Docker.
    mounts
        .iter()
        .filter_map(|(src, dst)| {
            let rest = container.strip_prefix(dst.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then(|| {
                (
                    dst.len(),
                    root().join(src).join(rest.trim_start_matches('/')),
                )
            })
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, p)| p)
}

/// The collector services of the compose file (built from the Dockerfile
/// or running its image) and the port of their metrics listener.
fn compose_collectors(compose: &Yaml) -> BTreeMap<String, u16> {
    let mut out = BTreeMap::new();
    for (name, s) in compose["services"].as_hash().expect("services") {
        let image = s["image"].as_str().unwrap_or_default();
        if s["build"].is_badvalue() && !image.starts_with("ossec-collector") {
            continue;
        }
        let listen = env_map(s)
            .get("OSSEC_COLLECTOR_METRICS_LISTEN")
            .cloned()
            .unwrap_or_else(|| panic!("{name:?}: OSSEC_COLLECTOR_METRICS_LISTEN"));
        let addr: SocketAddr = listen.parse().unwrap();
        assert!(
            addr.ip().is_unspecified(),
            "{name:?}: the metrics listener must be reachable from Prometheus' container: {listen}"
        );
        out.insert(scalar(name), addr.port());
    }
    assert!(out.contains_key("collector"), "collector services: {out:?}");
    out
}

#[test]
fn prometheus_scrapes_the_compose_collectors() {
    let p = yaml(PROMETHEUS);
    let compose = yaml(COMPOSE);
    let collectors = compose_collectors(&compose);
    let jobs = p["scrape_configs"].as_vec().expect("scrape_configs");
    let job = jobs
        .iter()
        .find(|j| j["job_name"].as_str() == Some("ossec-collector"))
        .expect("a job ossec-collector");
    assert!(
        matches!(job["metrics_path"].as_str(), None | Some("/metrics")),
        "metrics_path"
    );
    // Targets: the compose collector services, on their metrics port.
    let mut targets = BTreeMap::new();
    for sd in job["dns_sd_configs"].as_vec().into_iter().flatten() {
        assert_eq!(sd["type"].as_str(), Some("A"), "dns_sd_configs type");
        let port = sd["port"].as_i64().expect("dns_sd_configs port") as u16;
        for n in strings(&sd["names"]) {
            targets.insert(n, port);
        }
    }
    for sc in job["static_configs"].as_vec().into_iter().flatten() {
        for t in strings(&sc["targets"]) {
            let (h, port) = t.rsplit_once(':').unwrap();
            targets.insert(h.to_owned(), port.parse().unwrap());
        }
    }
    assert_eq!(
        targets, collectors,
        "{PROMETHEUS} must scrape exactly the collector services of {COMPOSE} on their metrics port"
    );
    // instance = the service name, which the dashboard's variable lists.
    let relabels = job["relabel_configs"].as_vec().expect("relabel_configs");
    assert!(
        relabels
            .iter()
            .any(|r| r["target_label"].as_str() == Some("instance")),
        "instance relabelled to the service name"
    );
    // The Grafana data source's interval is the scrape interval.
    let interval = p["global"]["scrape_interval"]
        .as_str()
        .expect("scrape_interval");
    let ds = yaml(DS_PROVISIONING);
    assert_eq!(
        ds["datasources"][0]["jsonData"]["timeInterval"].as_str(),
        Some(interval),
        "{DS_PROVISIONING} timeInterval = the scrape interval"
    );

    // promtool, where installed (Debian: apt-get install prometheus).
    match std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(root().join(PROMETHEUS))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check config {PROMETHEUS}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => println!("promtool not run ({e}); YAML checks only"),
    }
}

#[test]
fn grafana_provisioning_files() {
    let compose = yaml(COMPOSE);
    let grafana = &compose["services"]["grafana"];
    let prometheus = &compose["services"]["prometheus"];
    assert!(!grafana.is_badvalue() && !prometheus.is_badvalue());
    let mounts = bind_mounts(grafana);

    // The data source: Prometheus of the compose file, fixed uid, default.
    let ds = yaml(DS_PROVISIONING);
    assert_eq!(ds["apiVersion"].as_i64(), Some(1));
    let list = ds["datasources"].as_vec().expect("datasources");
    assert_eq!(list.len(), 1);
    let d = &list[0];
    assert_eq!(d["type"].as_str(), Some("prometheus"));
    assert_eq!(d["access"].as_str(), Some("proxy"));
    assert_eq!(d["isDefault"].as_bool(), Some(true));
    let uid = d["uid"].as_str().expect("a fixed uid");
    assert!(!uid.is_empty() && uid.len() <= 40, "uid {uid:?}");
    assert!(!d["name"].as_str().unwrap_or_default().is_empty());
    let url = d["url"].as_str().expect("url");
    let port = strings(&prometheus["ports"])
        .iter()
        .find_map(|p| {
            p.rsplit(':')
                .next()
                .map(|c| c.trim_end_matches("/tcp").to_owned())
        })
        .expect("prometheus port");
    assert_eq!(
        url,
        format!("http://prometheus:{port}"),
        "the data source reaches the compose service `prometheus`"
    );
    assert_eq!(
        host_path(
            &mounts,
            "/etc/grafana/provisioning/datasources/prometheus.yml"
        ),
        Some(root().join(DS_PROVISIONING)),
        "compose mounts the data source file where Grafana reads it"
    );

    // The dashboard provider: a file provider whose path holds the JSON.
    let dp = yaml(DASH_PROVISIONING);
    assert_eq!(dp["apiVersion"].as_i64(), Some(1));
    let providers = dp["providers"].as_vec().expect("providers");
    assert_eq!(providers.len(), 1);
    let pr = &providers[0];
    assert!(matches!(pr["type"].as_str(), None | Some("file")));
    assert!(!pr["name"].as_str().unwrap_or_default().is_empty());
    let path = pr["options"]["path"].as_str().expect("options.path");
    assert_eq!(
        host_path(
            &mounts,
            "/etc/grafana/provisioning/dashboards/ossec-collector.yml"
        ),
        Some(root().join(DASH_PROVISIONING)),
        "compose mounts the provider file where Grafana reads it"
    );
    let dir = host_path(&mounts, path)
        .unwrap_or_else(|| panic!("compose mounts nothing on the provider path {path}"));
    let json = dir.join("ossec-collector.json");
    assert_eq!(
        json.canonicalize().ok(),
        root().join(DASHBOARD).canonicalize().ok(),
        "the provider path {path} holds {DASHBOARD}"
    );
    // The only dashboard Grafana finds there.
    let jsons: Vec<PathBuf> = walk_files(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(
        jsons.len(),
        1,
        "dashboards under {}: {jsons:?}",
        dir.display()
    );
    // The home dashboard is that file.
    if let Some(home) = env_map(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH") {
        assert_eq!(
            host_path(&mounts, home).and_then(|p| p.canonicalize().ok()),
            root().join(DASHBOARD).canonicalize().ok(),
            "home dashboard {home}"
        );
    }
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn compose_monitoring_profile() {
    let compose = yaml(COMPOSE);
    let services = &compose["services"];
    for (name, image_prefix) in [
        ("prometheus", "prom/prometheus:v"),
        ("grafana", "grafana/grafana:"),
    ] {
        let s = &services[name];
        assert!(!s.is_badvalue(), "service {name}");
        assert_eq!(
            strings(&s["profiles"]),
            ["monitoring"],
            "{name}: profile monitoring only"
        );
        let image = scalar(&s["image"]);
        let version = image
            .strip_prefix(image_prefix)
            .unwrap_or_else(|| panic!("{name}: the official image {image_prefix}…, not {image}"));
        assert!(
            version
                .split('.')
                .next()
                .is_some_and(|m| m.parse::<u32>().is_ok()),
            "{name}: a pinned version, not {image}"
        );
        let r = scalar(&s["restart"]);
        assert!(
            r == "unless-stopped" || r == "always",
            "{name} restart: {r}"
        );
        for p in strings(&s["ports"]) {
            assert!(
                p.starts_with("127.0.0.1:"),
                "{name}: published on 127.0.0.1 only: {p}"
            );
        }
        for (src, dst) in bind_mounts(s) {
            assert!(
                root().join(&src).exists(),
                "{name}: {src} (mounted on {dst}) exists"
            );
        }
        // Named volumes are declared.
        for v in strings(&s["volumes"]) {
            let src = v.split(':').next().unwrap();
            if !src.starts_with('.') && !src.starts_with('/') {
                assert!(
                    !compose["volumes"][src].is_badvalue(),
                    "volume {src} declared"
                );
            }
        }
    }
    let prom_mounts = bind_mounts(&services["prometheus"]);
    assert!(
        prom_mounts
            .iter()
            .any(|(src, dst)| src == PROMETHEUS && dst == "/etc/prometheus/prometheus.yml"),
        "Prometheus reads {PROMETHEUS}: {prom_mounts:?}"
    );
    let command = strings(&services["prometheus"]["command"]);
    assert!(
        command.contains(&"--config.file=/etc/prometheus/prometheus.yml".to_owned()),
        "{command:?}"
    );
    // Grafana's admin password comes from a secret file, never the file.
    let grafana = &services["grafana"];
    let env = env_map(grafana);
    assert!(!env.contains_key("GF_SECURITY_ADMIN_PASSWORD"));
    let file = env
        .get("GF_SECURITY_ADMIN_PASSWORD__FILE")
        .expect("GF_SECURITY_ADMIN_PASSWORD__FILE");
    let secret = file
        .strip_prefix("/run/secrets/")
        .expect("a compose secret");
    assert!(strings(&grafana["secrets"]).contains(&secret.to_owned()));
    let src = scalar(&compose["secrets"][secret]["file"]);
    assert!(src.starts_with("./secrets/"), "secret {secret}: {src}");
    // The monitoring services are not started without the profile.
    for (name, s) in services.as_hash().unwrap() {
        let profiles = if s["profiles"].is_badvalue() {
            Vec::new()
        } else {
            strings(&s["profiles"])
        };
        let name = scalar(name);
        if name == "prometheus" || name == "grafana" {
            continue;
        }
        assert!(
            !profiles.contains(&"monitoring".to_owned()),
            "{name} in profile monitoring"
        );
    }
}
